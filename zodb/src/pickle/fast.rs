//! Fast path for the commonest record shape: a class and one byte string.
//!
//! Every ZData chunk (512 per 2 MiB ZBlk1 block) and every ZBlk0 is a record
//! whose class pickle is a bare `GLOBAL` and whose state pickle is a single
//! byte string. The general [`Unpickler`](super::Unpickler) handles them with
//! an arena, a memo table, a stack and a `Value` tree: a dozen small
//! allocations per record, several times the cost of reading the header and
//! finding the bytes. [`bytes_record`] recognises exactly this opcode
//! sequence and nothing else:
//!
//! ```text
//! class: [PROTO p] GLOBAL module\n name\n [BINPUT i | LONG_BINPUT i | MEMOIZE] STOP
//! state: [PROTO p] (SHORT_BINSTRING | BINSTRING | SHORT_BINBYTES | BINBYTES | BINBYTES8) n <n bytes>
//!        [BINPUT i | LONG_BINPUT i | MEMOIZE] STOP
//! ```
//!
//! It returns what the general decoder returns for the same input, or `None`
//! for anything else (other opcodes, a protocol above 5, a module or name that
//! is not UTF-8, a negative `BINSTRING` length, truncation), and the caller
//! then runs the general decoder, which gives the value or the error. So the
//! fast path can only be wrong by accepting something the general decoder
//! decodes differently; `pickle/tests.rs` checks it against the general
//! decoder on the fixtures' records and on random and mutated inputs.
//!
//! Bytes after the state's `STOP` are ignored, as [`decode_record`](super::decode_record) ignores them.

use super::decode::{op, HIGHEST_PROTOCOL};
use super::Value;
use bytes::Bytes;

/// A record made of a `GLOBAL module name` class pickle and a byte-string state.
#[derive(Debug, Clone, PartialEq)]
pub struct BytesRecord<'a> {
    /// The class's module, e.g. `wendelin.bigfile.file_zodb`.
    pub module: &'a str,
    /// The class's name, e.g. `ZData`.
    pub name: &'a str,
    /// The state: [`Value::Str8`] (Python 2 `str`) or [`Value::Bytes`], a
    /// slice of the input.
    pub state: Value,
}

/// A cursor over the record; every method returns `None` past the end.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn u8(&mut self) -> Option<u8> {
        let x = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(x)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let a = self
            .b
            .get(self.pos..self.pos.checked_add(N)?)?
            .try_into()
            .ok()?;
        self.pos += N;
        Some(a)
    }

    /// The next `n` bytes, as a range of the input.
    fn take(&mut self, n: u64) -> Option<std::ops::Range<usize>> {
        let n = usize::try_from(n).ok()?;
        if self.b.len() - self.pos < n {
            return None;
        }
        let r = self.pos..self.pos + n;
        self.pos += n;
        Some(r)
    }

    /// A `GLOBAL` argument: text up to `\n`, which is consumed.
    fn line(&mut self) -> Option<&'a str> {
        let rest = &self.b[self.pos..];
        let n = rest.iter().position(|&c| c == b'\n')?;
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).ok()
    }

    /// An optional `PROTO p` with a protocol the general decoder accepts.
    fn proto(&mut self) -> Option<()> {
        if self.peek() == Some(op::PROTO) {
            self.pos += 1;
            if self.u8()? > HIGHEST_PROTOCOL {
                return None;
            }
        }
        Some(())
    }

    /// An optional memo store of the top of the stack, then `STOP`.
    fn put_stop(&mut self) -> Option<()> {
        match self.u8()? {
            op::BINPUT => {
                self.array::<1>()?;
            }
            op::LONG_BINPUT => {
                self.array::<4>()?;
            }
            op::MEMOIZE => {}
            op::STOP => return Some(()),
            _ => return None,
        }
        (self.u8()? == op::STOP).then_some(())
    }
}

/// Recognise a class + byte-string record (see the module docs); `None`
/// means "not this shape, use the general decoder".
pub fn bytes_record(data: &Bytes) -> Option<BytesRecord<'_>> {
    let mut c = Cur { b: data, pos: 0 };
    // class pickle
    c.proto()?;
    if c.u8()? != op::GLOBAL {
        return None;
    }
    let module = c.line()?;
    let name = c.line()?;
    c.put_stop()?;
    // state pickle
    c.proto()?;
    let (str8, n) = match c.u8()? {
        op::SHORT_BINSTRING => (true, u64::from(c.u8()?)),
        op::BINSTRING => (true, u64::try_from(i32::from_le_bytes(c.array()?)).ok()?),
        op::SHORT_BINBYTES => (false, u64::from(c.u8()?)),
        op::BINBYTES => (false, u64::from(u32::from_le_bytes(c.array()?))),
        op::BINBYTES8 => (false, u64::from_le_bytes(c.array()?)),
        _ => return None,
    };
    let r = c.take(n)?;
    c.put_stop()?;
    let b = data.slice(r);
    Some(BytesRecord {
        module,
        name,
        state: if str8 {
            Value::Str8(b)
        } else {
            Value::Bytes(b)
        },
    })
}

/// A BTree bucket record whose values are all persistent references
/// (`IOBucket` of a ZBlk1 chunktab, `LOBucket` of a blktab), decoded
/// straight to keys and oids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefBucket<'a> {
    /// The record's class: (module, name).
    pub class: (&'a str, &'a str),
    /// The keys, in pickle order (not checked: the caller checks order and range).
    pub keys: Vec<i64>,
    /// `refs[i]` is the value of `keys[i]`.
    pub refs: Vec<PRef<'a>>,
    /// The next bucket's oid, if the state has one.
    pub next: Option<u64>,
}

/// A persistent reference as [`ref_bucket`] found it: enough to give back
/// the exact [`Value`] the general decoder makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PRef<'a> {
    /// The oid (8 bytes, big-endian in the pickle).
    pub oid: u64,
    /// The oid was pickled as a Python 2 `str` (else as `bytes`).
    pub str8: bool,
    /// The class of the `(oid, klass)` form, `None` for a bare oid.
    pub class: Option<(&'a str, &'a str)>,
}

impl PRef<'_> {
    /// The value the general decoder gives for this reference.
    pub fn to_value(&self) -> Value {
        let b = Bytes::copy_from_slice(&self.oid.to_be_bytes());
        let oid = if self.str8 {
            Value::Str8(b)
        } else {
            Value::Bytes(b)
        };
        Value::PersId(Box::new(match self.class {
            None => oid,
            Some((module, name)) => Value::Tuple(vec![
                oid,
                Value::Global {
                    module: module.to_owned(),
                    name: name.to_owned(),
                },
            ]),
        }))
    }
}

/// An item of [`ref_bucket`]'s stack.
#[derive(Debug, Clone, Copy)]
enum Item<'a> {
    Int(i64),
    /// A short byte string (an oid, if 8 bytes long); true if a Python 2 `str`.
    Bytes(&'a [u8], bool),
    /// `GLOBAL module name`.
    Global(&'a str, &'a str),
    /// `(oid bytes, GLOBAL)`, the id of a persistent reference.
    OidClass(&'a [u8], bool, &'a str, &'a str),
    /// A persistent reference.
    Ref(PRef<'a>),
    /// The items tuple `(k0, ref0, k1, ref1, ...)`, whose pairs went to
    /// `RefBucket::keys`/`oids`.
    Items,
    /// The bucket state `(items,)` or `(items, next)`.
    State(Option<PRef<'a>>),
}

/// Recognise a bucket record whose values are all persistent references:
/// the class pickle a bare `GLOBAL`, the state `((k, ref, k, ref, ...),)` or
/// `(..., next_ref)`, keys by `BININT*`/`LONG1`, references as
/// `BINPERSID` of an 8-byte oid or of `(oid, GLOBAL)`, tuples by
/// `MARK ... TUPLE` or `TUPLE1/2`, memo `PUT`s anywhere and `GET`s of
/// globals. `None` for anything else (the caller then uses the general
/// decoder); when it answers, it answers what the general decoder and
/// `record::decode_ref_oid` make of the same record.
pub fn ref_bucket(data: &[u8]) -> Option<RefBucket<'_>> {
    let mut c = Cur { b: data, pos: 0 };
    let mut stack: Vec<Item<'_>> = Vec::with_capacity(16);
    // memo index -> global, for the memo slots that hold a global; a GET
    // of any other slot gives up.
    let mut globals: Vec<(u64, &str, &str)> = Vec::new();
    let mut keys = Vec::new();
    let mut refs = Vec::new();
    let mut class = None;
    // Whether the items tuple was made (a record has one).
    let mut have_items = false;
    // Stack lengths at each open MARK, innermost last (as the general
    // decoder keeps them): nothing may pop below the innermost one.
    let mut marks: Vec<usize> = Vec::new();
    loop {
        let code = c.u8()?;
        match code {
            op::PROTO => {
                if c.u8()? > HIGHEST_PROTOCOL {
                    return None;
                }
            }
            op::GLOBAL => {
                let module = c.line()?;
                let name = c.line()?;
                stack.push(Item::Global(module, name));
            }
            op::BINPUT | op::LONG_BINPUT | op::MEMOIZE => {
                let idx = match code {
                    op::BINPUT => u64::from(c.u8()?),
                    op::LONG_BINPUT => u64::from(u32::from_le_bytes(c.array()?)),
                    // MEMOIZE numbers slots by how many the memo has;
                    // that count is not tracked here.
                    _ => return None,
                };
                globals.retain(|g| g.0 != idx);
                if stack.len() <= marks.last().copied().unwrap_or(0) {
                    return None;
                }
                if let Some(&Item::Global(m, n)) = stack.last() {
                    globals.push((idx, m, n));
                }
            }
            op::BINGET | op::LONG_BINGET => {
                let idx = match code {
                    op::BINGET => u64::from(c.u8()?),
                    _ => u64::from(u32::from_le_bytes(c.array()?)),
                };
                let &(_, m, n) = globals.iter().rev().find(|g| g.0 == idx)?;
                stack.push(Item::Global(m, n));
            }
            op::MARK => marks.push(stack.len()),
            op::BININT => stack.push(Item::Int(i32::from_le_bytes(c.array()?).into())),
            op::BININT1 => stack.push(Item::Int(c.u8()?.into())),
            op::BININT2 => stack.push(Item::Int(u16::from_le_bytes(c.array()?).into())),
            op::LONG1 => {
                let n = c.u8()?;
                if n > 8 {
                    return None;
                }
                let r = c.take(n.into())?;
                let b = &data[r];
                let mut v = [if b.last().is_some_and(|&x| x & 0x80 != 0) {
                    0xff
                } else {
                    0
                }; 8];
                v[..b.len()].copy_from_slice(b);
                stack.push(Item::Int(i64::from_le_bytes(v)));
            }
            op::SHORT_BINSTRING | op::SHORT_BINBYTES => {
                let n = c.u8()?;
                let r = c.take(n.into())?;
                stack.push(Item::Bytes(&data[r], code == op::SHORT_BINSTRING));
            }
            op::BINPERSID => {
                if stack.len() <= marks.last().copied().unwrap_or(0) {
                    return None;
                }
                let (b, str8, class) = match stack.pop()? {
                    Item::Bytes(b, str8) => (b, str8, None),
                    Item::OidClass(b, str8, m, n) => (b, str8, Some((m, n))),
                    _ => return None,
                };
                let oid = u64::from_be_bytes(b.try_into().ok()?);
                stack.push(Item::Ref(PRef { oid, str8, class }));
            }
            op::EMPTY_TUPLE => {
                if std::mem::replace(&mut have_items, true) {
                    return None;
                }
                stack.push(Item::Items);
            }
            op::TUPLE | op::TUPLE1 | op::TUPLE2 => {
                let start = match code {
                    op::TUPLE => marks.pop()?,
                    op::TUPLE1 => stack.len().checked_sub(1)?,
                    _ => stack.len().checked_sub(2)?,
                };
                if start < marks.last().copied().unwrap_or(0) {
                    return None; // TUPLE1/2 reaching below the mark
                }
                let t = tuple(&stack[start..], &mut have_items, &mut keys, &mut refs)?;
                stack.truncate(start);
                stack.push(t);
            }
            op::STOP => {
                let ([top], true) = (&stack[..], marks.is_empty()) else {
                    return None;
                };
                let top = *top;
                stack.clear();
                match (class, top) {
                    (None, Item::Global(m, n)) => class = Some((m, n)),
                    (Some(class), Item::State(next)) => {
                        return Some(RefBucket {
                            class,
                            keys,
                            refs,
                            next: next.map(|r| r.oid),
                        });
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

/// The tuple of `items` (just popped from the stack) as an [`Item`]; the
/// items tuple's pairs go to `keys`/`refs` (only one items tuple per record).
fn tuple<'a>(
    items: &[Item<'a>],
    have_items: &mut bool,
    keys: &mut Vec<i64>,
    refs: &mut Vec<PRef<'a>>,
) -> Option<Item<'a>> {
    Some(match items {
        [Item::Bytes(b, str8), Item::Global(m, n)] => Item::OidClass(b, *str8, m, n),
        [Item::Items] => Item::State(None),
        [Item::Items, Item::Ref(next)] => Item::State(Some(*next)),
        _ if items.len() % 2 == 0 && !std::mem::replace(have_items, true) => {
            for pair in items.chunks_exact(2) {
                let [Item::Int(k), Item::Ref(r)] = pair else {
                    return None;
                };
                keys.push(*k);
                refs.push(*r);
            }
            Item::Items
        }
        _ => return None,
    })
}

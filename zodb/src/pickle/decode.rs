//! Pickle decoder: a stack machine over the opcodes of protocols 0 to 5.
//!
//! # How it works
//!
//! Python's unpickler pushes *object references* on its stack and into its
//! memo, so an object that is memoized and mutated afterwards (the pickler
//! writes `EMPTY_LIST BINPUT 1 MARK ... APPENDS`, `NEWOBJ BINPUT 3 ... BUILD`)
//! is seen mutated by every later `BINGET 1`. To get the same aliasing
//! without reference counting, decoding happens in two steps:
//!
//! 1. Every opcode works on an *arena* of [`Node`]s: the stack, the memo and
//!    the containers hold arena ids, never values. `DUP`, `PUT` and `GET`
//!    copy ids, and `APPEND(S)`, `SETITEM(S)`, `ADDITEMS` and `BUILD` mutate
//!    the node in place, so every alias sees the change, exactly as in
//!    Python. Cycles (`x = []; x.append(x)`) are representable here and cost
//!    nothing: the arena is freed as one vector.
//! 2. `STOP` converts the node on top of the stack into a [`Value`] tree.
//!
//! The memo and the arena live as long as the [`Unpickler`], so a second
//! [`Unpickler::load`] can `GET` what the first one `PUT` (ZODB records are
//! two pickles, class and state, sharing one memo). Each `load` starts with an
//! empty stack and no marks, as Python's does.
//!
//! # Representation choices
//!
//! - `STRING`, `BINSTRING`, `SHORT_BINSTRING` → [`Value::Str8`] (raw bytes;
//!   the text `STRING` form has its quotes removed and escapes decoded).
//! - `BINBYTES*`, `SHORT_BINBYTES`, `BYTEARRAY8` → [`Value::Bytes`]. Binary
//!   byte strings are sliced out of the input without a copy, so a record
//!   holding a 2 MiB block decodes in time independent of the block size.
//! - Sets (`EMPTY_SET` + `ADDITEMS`) and `FROZENSET` → [`Value::List`] of the
//!   items in pickle order (nothing in ZODB data needs set semantics).
//! - A dict keeps every `SETITEM` pair in pickle order; duplicate keys are not
//!   merged (Python pickles never contain them).
//! - `INT`/`LONG`/`LONG1`/`LONG4` → [`Value::Int`] whenever the value fits in
//!   i64; otherwise [`Value::BigInt`] in minimal two's complement form. `I01\n`
//!   and `I00\n` are `True`/`False`.
//! - `INST module name` / `OBJ` → [`Value::Reduce`] with the class (a
//!   [`Value::Global`] for `INST`) and the tuple of the marked items.
//! - `NEWOBJ_EX` with an empty kwargs dict → [`Value::NewObj`]; with kwargs →
//!   `Reduce(copyreg.__newobj_ex__, (cls, args, kwargs))`, which is what
//!   Python writes for the same object under protocols 2 and 3.
//! - `BUILD` replaces the object in place by [`Value::Build`] of the object and
//!   the state (whatever the object is).
//! - `PERSID` (protocol 0) → [`Value::PersId`] of the id as
//!   [`Value::Unicode`], as Python 3 gives it to `persistent_load`.
//! - `GLOBAL`/`STACK_GLOBAL` names are kept as written (no Python 2 → 3
//!   renaming such as `copy_reg` → `copyreg`).
//!
//! Not supported, with an error: `APPEND(S)`/`SETITEM(S)`/`ADDITEMS` on
//! anything but a list/dict/set made by the pickle itself (Python would call
//! the object's own `append`/`__setitem__`, e.g. for list subclasses and
//! `OrderedDict`; [`Value`] has no way to say that), `EXT1/2/4` (no extension
//! registry), `NEXT_BUFFER` (no out-of-band buffers), and text whose UTF-8 or
//! escapes encode lone surrogates (a Rust [`String`] cannot hold them).
//! `READONLY_BUFFER` is accepted and does nothing (values are immutable).
//!
//! # Limits
//!
//! No input makes the decoder panic, recurse without bound, or allocate more
//! than a fixed multiple of the input size:
//! - every read is bounds-checked and every length is checked against the
//!   remaining input before anything is allocated or sliced; step 1 makes at
//!   most three arena nodes per opcode (so per input byte);
//! - decoding is a loop, and the conversion of step 2 recurses at most
//!   [`MAX_DEPTH`] containers deep (deeper or cyclic values are an error);
//! - memo `GET`s can make a small pickle stand for a huge tree (a DAG of
//!   shared tuples, one long string referenced many times); step 2 pays one
//!   unit per node plus one per 16 bytes of copied text, and stops with an
//!   error past `64 Ki + 16 × input length` units over the unpickler's life
//!   (so at most ~16 nodes or ~256 bytes of text per input byte; unshared
//!   data costs about one unit per input byte);
//! - text integers longer than [`MAX_INT_DIGITS`] digits are refused, as
//!   Python 3.11 does by default.

use super::Value;
use bytes::Bytes;
use hashbrown::HashMap;
use std::fmt;
use std::ops::Range;

/// Pickle opcodes (`Lib/pickletools.py` names), shared with the encoder.
pub(super) mod op {
    pub(crate) const MARK: u8 = b'(';
    pub(crate) const STOP: u8 = b'.';
    pub(crate) const POP: u8 = b'0';
    pub(crate) const POP_MARK: u8 = b'1';
    pub(crate) const DUP: u8 = b'2';
    pub(crate) const FLOAT: u8 = b'F';
    pub(crate) const INT: u8 = b'I';
    pub(crate) const BININT: u8 = b'J';
    pub(crate) const BININT1: u8 = b'K';
    pub(crate) const LONG: u8 = b'L';
    pub(crate) const BININT2: u8 = b'M';
    pub(crate) const NONE: u8 = b'N';
    pub(crate) const PERSID: u8 = b'P';
    pub(crate) const BINPERSID: u8 = b'Q';
    pub(crate) const REDUCE: u8 = b'R';
    pub(crate) const STRING: u8 = b'S';
    pub(crate) const BINSTRING: u8 = b'T';
    pub(crate) const SHORT_BINSTRING: u8 = b'U';
    pub(crate) const UNICODE: u8 = b'V';
    pub(crate) const BINUNICODE: u8 = b'X';
    pub(crate) const APPEND: u8 = b'a';
    pub(crate) const BUILD: u8 = b'b';
    pub(crate) const GLOBAL: u8 = b'c';
    pub(crate) const DICT: u8 = b'd';
    pub(crate) const EMPTY_DICT: u8 = b'}';
    pub(crate) const APPENDS: u8 = b'e';
    pub(crate) const GET: u8 = b'g';
    pub(crate) const BINGET: u8 = b'h';
    pub(crate) const INST: u8 = b'i';
    pub(crate) const LONG_BINGET: u8 = b'j';
    pub(crate) const LIST: u8 = b'l';
    pub(crate) const EMPTY_LIST: u8 = b']';
    pub(crate) const OBJ: u8 = b'o';
    pub(crate) const PUT: u8 = b'p';
    pub(crate) const BINPUT: u8 = b'q';
    pub(crate) const LONG_BINPUT: u8 = b'r';
    pub(crate) const SETITEM: u8 = b's';
    pub(crate) const TUPLE: u8 = b't';
    pub(crate) const EMPTY_TUPLE: u8 = b')';
    pub(crate) const SETITEMS: u8 = b'u';
    pub(crate) const BINFLOAT: u8 = b'G';
    // protocol 2
    pub(crate) const PROTO: u8 = 0x80;
    pub(crate) const NEWOBJ: u8 = 0x81;
    pub(crate) const EXT1: u8 = 0x82;
    pub(crate) const EXT2: u8 = 0x83;
    pub(crate) const EXT4: u8 = 0x84;
    pub(crate) const TUPLE1: u8 = 0x85;
    pub(crate) const TUPLE2: u8 = 0x86;
    pub(crate) const TUPLE3: u8 = 0x87;
    pub(crate) const NEWTRUE: u8 = 0x88;
    pub(crate) const NEWFALSE: u8 = 0x89;
    pub(crate) const LONG1: u8 = 0x8a;
    pub(crate) const LONG4: u8 = 0x8b;
    // protocol 3
    pub(crate) const BINBYTES: u8 = b'B';
    pub(crate) const SHORT_BINBYTES: u8 = b'C';
    // protocol 4
    pub(crate) const SHORT_BINUNICODE: u8 = 0x8c;
    pub(crate) const BINUNICODE8: u8 = 0x8d;
    pub(crate) const BINBYTES8: u8 = 0x8e;
    pub(crate) const EMPTY_SET: u8 = 0x8f;
    pub(crate) const ADDITEMS: u8 = 0x90;
    pub(crate) const FROZENSET: u8 = 0x91;
    pub(crate) const NEWOBJ_EX: u8 = 0x92;
    pub(crate) const STACK_GLOBAL: u8 = 0x93;
    pub(crate) const MEMOIZE: u8 = 0x94;
    pub(crate) const FRAME: u8 = 0x95;
    // protocol 5
    pub(crate) const BYTEARRAY8: u8 = 0x96;
    pub(crate) const NEXT_BUFFER: u8 = 0x97;
    pub(crate) const READONLY_BUFFER: u8 = 0x98;
}

/// Highest pickle protocol the decoder accepts in `PROTO`.
pub(super) const HIGHEST_PROTOCOL: u8 = 5;

/// Deepest container nesting a decoded [`Value`] may have (Python's own
/// pickler stops near its recursion limit of 1000; ZODB states nest a few
/// levels). Deeper — or cyclic — values are refused with
/// [`PickleErrorKind::Limit`]. Keep in sync with that variant's doc.
pub(super) const MAX_DEPTH: usize = 512;

/// Most digits a text `INT`/`LONG` may have (Python 3.11's default
/// `sys.get_int_max_str_digits()`).
pub(super) const MAX_INT_DIGITS: usize = 4300;

/// What went wrong while decoding a pickle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pickle: at byte {pos}: {kind}")]
pub struct PickleError {
    /// Offset of the offending opcode in the input.
    pub pos: usize,
    /// What is wrong there.
    pub kind: PickleErrorKind,
}

/// The kinds of [`PickleError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleErrorKind {
    /// The input ended inside an opcode or before `STOP`.
    #[error("truncated")]
    Truncated,
    /// An opcode byte we do not know.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// An opcode needed more items than the stack holds.
    #[error("stack underflow")]
    StackUnderflow,
    /// An opcode that needs a MARK found none.
    #[error("no mark")]
    NoMark,
    /// `GET` of a memo slot never `PUT`.
    #[error("memo slot {0} not set")]
    BadMemo(u64),
    /// A well-formed opcode with an argument we refuse (bad text int, bad
    /// UTF-8, negative length, protocol too new, ...).
    #[error("{0}")]
    Invalid(String),
    /// The input is well-formed but exceeds a resource limit of the decoder:
    /// containers nested more than 512 deep (or a cycle), a value expanding
    /// to too many nodes through shared memo references, a text int longer
    /// than 4300 digits.
    #[error("limit exceeded: {0}")]
    Limit(&'static str),
}

use PickleErrorKind as Kind;

fn invalid(msg: impl Into<String>) -> Kind {
    Kind::Invalid(msg.into())
}

/// Index of a [`Node`] in the arena.
type Id = u32;

/// An object under construction (see the module docs, step 1). Children are
/// arena ids, so aliases share mutations.
#[derive(Debug)]
enum Node {
    /// Anything without children.
    Leaf(Value),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    /// `EMPTY_SET`: the only target `ADDITEMS` accepts; becomes a list.
    Set(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    PersId(Id),
    Reduce(Id, Id),
    NewObj(Id, Id),
    Build(Id, Id),
}

/// Decodes a sequence of pickles from one buffer, with one memo shared by
/// all of them (as ZODB's `ObjectReader` does).
pub struct Unpickler {
    data: Bytes,
    pos: usize,
    /// All objects made so far; freed with the unpickler.
    arena: Vec<Node>,
    /// The pickle stack (arena ids).
    stack: Vec<Id>,
    /// Stack lengths at each open `MARK`, innermost last.
    marks: Vec<usize>,
    /// memo index -> object.
    memo: HashMap<u64, Id>,
    /// Nodes step 2 may still produce (see "Limits" in the module docs).
    budget: u64,
}

impl fmt::Debug for Unpickler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unpickler")
            .field("len", &self.data.len())
            .field("pos", &self.pos)
            .field("objects", &self.arena.len())
            .field("stack", &self.stack.len())
            .field("marks", &self.marks.len())
            .field("memo", &self.memo.len())
            .finish()
    }
}

impl Unpickler {
    /// An unpickler reading `data` from its start.
    pub fn new(data: Bytes) -> Self {
        let budget = (data.len() as u64)
            .saturating_mul(16)
            .saturating_add(1 << 16);
        Unpickler {
            data,
            pos: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            budget,
        }
    }

    /// Decode the next pickle (up to and including its `STOP`).
    ///
    /// On error the position is left at the offending opcode.
    pub fn load(&mut self) -> Result<Value, PickleError> {
        self.stack.clear();
        self.marks.clear();
        loop {
            let at = self.pos;
            let result = match self.data.get(at) {
                None => Err(Kind::Truncated),
                Some(&code) => {
                    self.pos = at + 1;
                    self.step(code)
                }
            };
            match result {
                Ok(None) => {}
                Ok(Some(top)) => {
                    return build(&self.arena, top, 0, &mut self.budget)
                        .map_err(|kind| PickleError { pos: at, kind })
                }
                Err(kind) => {
                    self.pos = at;
                    return Err(PickleError { pos: at, kind });
                }
            }
        }
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte of the input has been read.
    pub fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }

    // ---- input ----

    /// The next `n` bytes, as a range of `self.data`.
    fn take(&mut self, n: usize) -> Result<Range<usize>, Kind> {
        if self.data.len() - self.pos < n {
            return Err(Kind::Truncated);
        }
        let r = self.pos..self.pos + n;
        self.pos += n;
        Ok(r)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], Kind> {
        let r = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.data[r]);
        Ok(a)
    }

    fn take_u8(&mut self) -> Result<u8, Kind> {
        Ok(self.take_array::<1>()?[0])
    }

    fn take_u16(&mut self) -> Result<u16, Kind> {
        Ok(u16::from_le_bytes(self.take_array()?))
    }

    fn take_u32(&mut self) -> Result<u32, Kind> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn take_i32(&mut self) -> Result<i32, Kind> {
        Ok(i32::from_le_bytes(self.take_array()?))
    }

    fn take_u64(&mut self) -> Result<u64, Kind> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// A length-prefixed payload: checks the length against the input first.
    fn take_len(&mut self, len: u64) -> Result<Range<usize>, Kind> {
        let len = usize::try_from(len).map_err(|_| Kind::Truncated)?;
        self.take(len)
    }

    /// A signed 4-byte length (`BINSTRING`, `LONG4`); negative is invalid.
    fn take_len_i32(&mut self, what: &str) -> Result<Range<usize>, Kind> {
        let n = self.take_i32()?;
        let n = u64::try_from(n).map_err(|_| invalid(format!("{what}: negative length {n}")))?;
        self.take_len(n)
    }

    /// A text argument up to `\n` (the newline is consumed, not returned).
    fn line(&mut self) -> Result<Range<usize>, Kind> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Kind::Truncated)?;
        let r = self.pos..self.pos + n;
        self.pos += n + 1;
        Ok(r)
    }

    fn line_utf8(&mut self, what: &str) -> Result<String, Kind> {
        let r = self.line()?;
        std::str::from_utf8(&self.data[r])
            .map(str::to_owned)
            .map_err(|_| invalid(format!("{what}: not UTF-8")))
    }

    fn utf8(&self, r: Range<usize>) -> Result<Value, Kind> {
        std::str::from_utf8(&self.data[r])
            .map(|s| Value::Unicode(s.to_owned()))
            .map_err(|_| invalid("unicode string: not UTF-8"))
    }

    // ---- stack ----

    fn alloc(&mut self, node: Node) -> Result<Id, Kind> {
        let id = Id::try_from(self.arena.len()).map_err(|_| Kind::Limit("too many objects"))?;
        self.arena.push(node);
        Ok(id)
    }

    fn push(&mut self, node: Node) -> Result<(), Kind> {
        let id = self.alloc(node)?;
        self.stack.push(id);
        Ok(())
    }

    fn push_leaf(&mut self, v: Value) -> Result<(), Kind> {
        self.push(Node::Leaf(v))
    }

    /// Stack length below which the current opcode may not reach.
    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id, Kind> {
        if self.stack.len() <= self.fence() {
            return Err(Kind::StackUnderflow);
        }
        self.stack.pop().ok_or(Kind::StackUnderflow)
    }

    fn top(&self) -> Result<Id, Kind> {
        if self.stack.len() <= self.fence() {
            return Err(Kind::StackUnderflow);
        }
        self.stack.last().copied().ok_or(Kind::StackUnderflow)
    }

    /// Remove the innermost mark and the items above it.
    fn pop_mark(&mut self) -> Result<Vec<Id>, Kind> {
        let m = self.marks.pop().ok_or(Kind::NoMark)?;
        Ok(self.stack.split_off(m))
    }

    /// Remove the innermost mark; the items above it stay on the stack and
    /// their start is returned. The object below the mark must exist: it is
    /// the target of `APPENDS`/`SETITEMS`/`ADDITEMS`, returned too.
    fn pop_mark_target(&mut self) -> Result<(usize, Id), Kind> {
        let m = self.marks.pop().ok_or(Kind::NoMark)?;
        if m <= self.fence() || m > self.stack.len() {
            return Err(Kind::StackUnderflow);
        }
        Ok((m, self.stack[m - 1]))
    }

    fn tuple_n(&mut self, n: usize) -> Result<(), Kind> {
        if self.stack.len() < self.fence() + n {
            return Err(Kind::StackUnderflow);
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.push(Node::Tuple(items))
    }

    fn memo_put(&mut self, idx: u64) -> Result<(), Kind> {
        let top = self.top()?;
        self.memo.insert(idx, top);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Result<(), Kind> {
        let id = *self.memo.get(&idx).ok_or(Kind::BadMemo(idx))?;
        self.stack.push(id);
        Ok(())
    }

    /// The text memo index of `PUT`/`GET`.
    fn line_index(&mut self, what: &str) -> Result<u64, Kind> {
        let r = self.line()?;
        let s = std::str::from_utf8(&self.data[r]).unwrap_or("");
        s.trim()
            .parse::<u64>()
            .map_err(|_| invalid(format!("{what}: bad memo index")))
    }

    // ---- opcodes ----

    /// Execute one opcode whose byte has been consumed. `Some(top)` at `STOP`.
    fn step(&mut self, code: u8) -> Result<Option<Id>, Kind> {
        match code {
            op::MARK => self.marks.push(self.stack.len()),
            op::STOP => return self.pop().map(Some),
            op::POP => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.top()?;
                self.stack.push(top);
            }
            op::PROTO => {
                let p = self.take_u8()?;
                if p > HIGHEST_PROTOCOL {
                    return Err(invalid(format!("unsupported pickle protocol {p}")));
                }
            }
            op::FRAME => {
                // Frames only group opcodes for buffered reading; the data is
                // all here, so check the length and go on.
                let n = self.take_u64()?;
                if usize::try_from(n).map_or(true, |n| n > self.data.len() - self.pos) {
                    return Err(Kind::Truncated);
                }
            }

            // -- scalars --
            op::NONE => self.push_leaf(Value::None)?,
            op::NEWTRUE => self.push_leaf(Value::Bool(true))?,
            op::NEWFALSE => self.push_leaf(Value::Bool(false))?,
            op::BININT => {
                let v = self.take_i32()?;
                self.push_leaf(Value::Int(v.into()))?;
            }
            op::BININT1 => {
                let v = self.take_u8()?;
                self.push_leaf(Value::Int(v.into()))?;
            }
            op::BININT2 => {
                let v = self.take_u16()?;
                self.push_leaf(Value::Int(v.into()))?;
            }
            op::INT => {
                let r = self.line()?;
                let v = match &self.data[r] {
                    b"01" => Value::Bool(true),
                    b"00" => Value::Bool(false),
                    text => parse_int_text(text)?,
                };
                self.push_leaf(v)?;
            }
            op::LONG => {
                let r = self.line()?;
                let text = &self.data[r];
                let text = text.strip_suffix(b"L").unwrap_or(text);
                let v = parse_int_text(text)?;
                self.push_leaf(v)?;
            }
            op::LONG1 => {
                let n = self.take_u8()?;
                let r = self.take(n.into())?;
                let v = long_from_le(&self.data[r]);
                self.push_leaf(v)?;
            }
            op::LONG4 => {
                let r = self.take_len_i32("LONG4")?;
                let v = long_from_le(&self.data[r]);
                self.push_leaf(v)?;
            }
            op::FLOAT => {
                let r = self.line()?;
                let v = std::str::from_utf8(&self.data[r])
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .ok_or_else(|| invalid("FLOAT: bad float"))?;
                self.push_leaf(Value::Float(v))?;
            }
            op::BINFLOAT => {
                let v = f64::from_be_bytes(self.take_array()?);
                self.push_leaf(Value::Float(v))?;
            }

            // -- byte strings (sliced, not copied) --
            op::STRING => {
                let r = self.line()?;
                let v = unrepr_string(&self.data, r)?;
                self.push_leaf(Value::Str8(v))?;
            }
            op::BINSTRING => {
                let r = self.take_len_i32("BINSTRING")?;
                self.push_leaf(Value::Str8(self.data.slice(r)))?;
            }
            op::SHORT_BINSTRING => {
                let n = self.take_u8()?;
                let r = self.take(n.into())?;
                self.push_leaf(Value::Str8(self.data.slice(r)))?;
            }
            op::BINBYTES => {
                let n = self.take_u32()?;
                let r = self.take_len(n.into())?;
                self.push_leaf(Value::Bytes(self.data.slice(r)))?;
            }
            op::SHORT_BINBYTES => {
                let n = self.take_u8()?;
                let r = self.take(n.into())?;
                self.push_leaf(Value::Bytes(self.data.slice(r)))?;
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let n = self.take_u64()?;
                let r = self.take_len(n)?;
                self.push_leaf(Value::Bytes(self.data.slice(r)))?;
            }

            // -- text --
            op::UNICODE => {
                let r = self.line()?;
                let s = raw_unicode_unescape(&self.data[r])?;
                self.push_leaf(Value::Unicode(s))?;
            }
            op::BINUNICODE => {
                let n = self.take_u32()?;
                let r = self.take_len(n.into())?;
                let v = self.utf8(r)?;
                self.push_leaf(v)?;
            }
            op::SHORT_BINUNICODE => {
                let n = self.take_u8()?;
                let r = self.take(n.into())?;
                let v = self.utf8(r)?;
                self.push_leaf(v)?;
            }
            op::BINUNICODE8 => {
                let n = self.take_u64()?;
                let r = self.take_len(n)?;
                let v = self.utf8(r)?;
                self.push_leaf(v)?;
            }

            // -- tuples --
            op::EMPTY_TUPLE => self.push(Node::Tuple(Vec::new()))?,
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items))?;
            }
            op::TUPLE1 => self.tuple_n(1)?,
            op::TUPLE2 => self.tuple_n(2)?,
            op::TUPLE3 => self.tuple_n(3)?,

            // -- lists and sets --
            op::EMPTY_LIST => self.push(Node::List(Vec::new()))?,
            op::LIST => {
                let items = self.pop_mark()?;
                self.push(Node::List(items))?;
            }
            op::APPEND => {
                let v = self.pop()?;
                let target = self.top()?;
                match &mut self.arena[target as usize] {
                    Node::List(items) => items.push(v),
                    _ => return Err(invalid("APPEND to an object that is not a list")),
                }
            }
            op::APPENDS => {
                let (m, target) = self.pop_mark_target()?;
                match &mut self.arena[target as usize] {
                    Node::List(items) => items.extend(self.stack.drain(m..)),
                    _ => return Err(invalid("APPENDS to an object that is not a list")),
                }
            }
            op::EMPTY_SET => self.push(Node::Set(Vec::new()))?,
            op::ADDITEMS => {
                let (m, target) = self.pop_mark_target()?;
                match &mut self.arena[target as usize] {
                    Node::Set(items) => items.extend(self.stack.drain(m..)),
                    _ => return Err(invalid("ADDITEMS to an object that is not a set")),
                }
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                self.push(Node::List(items))?;
            }

            // -- dicts --
            op::EMPTY_DICT => self.push(Node::Dict(Vec::new()))?,
            op::DICT => {
                let items = self.pop_mark()?;
                let pairs = pairs(&items).ok_or_else(|| invalid("DICT: odd number of items"))?;
                self.push(Node::Dict(pairs))?;
            }
            op::SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.top()?;
                match &mut self.arena[target as usize] {
                    Node::Dict(items) => items.push((k, v)),
                    _ => return Err(invalid("SETITEM on an object that is not a dict")),
                }
            }
            op::SETITEMS => {
                let (m, target) = self.pop_mark_target()?;
                let kv = pairs(&self.stack[m..])
                    .ok_or_else(|| invalid("SETITEMS: odd number of items"))?;
                match &mut self.arena[target as usize] {
                    Node::Dict(items) => items.extend(kv),
                    _ => return Err(invalid("SETITEMS on an object that is not a dict")),
                }
                self.stack.truncate(m);
            }

            // -- memo --
            op::PUT => {
                let idx = self.line_index("PUT")?;
                self.memo_put(idx)?;
            }
            op::BINPUT => {
                let idx = self.take_u8()?;
                self.memo_put(idx.into())?;
            }
            op::LONG_BINPUT => {
                let idx = self.take_u32()?;
                self.memo_put(idx.into())?;
            }
            op::MEMOIZE => self.memo_put(self.memo.len() as u64)?,
            op::GET => {
                let idx = self.line_index("GET")?;
                self.memo_get(idx)?;
            }
            op::BINGET => {
                let idx = self.take_u8()?;
                self.memo_get(idx.into())?;
            }
            op::LONG_BINGET => {
                let idx = self.take_u32()?;
                self.memo_get(idx.into())?;
            }

            // -- classes, persistent ids, objects --
            op::GLOBAL => {
                let module = self.line_utf8("GLOBAL module")?;
                let name = self.line_utf8("GLOBAL name")?;
                self.push_leaf(Value::Global { module, name })?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Node::Leaf(Value::Unicode(module)), Node::Leaf(Value::Unicode(name))) =
                    (&self.arena[module as usize], &self.arena[name as usize])
                else {
                    return Err(invalid("STACK_GLOBAL requires str module and name"));
                };
                let v = Value::Global {
                    module: module.clone(),
                    name: name.clone(),
                };
                self.push_leaf(v)?;
            }
            op::PERSID => {
                let r = self.line()?;
                let pid = &self.data[r];
                if !pid.is_ascii() {
                    return Err(invalid("PERSID: persistent id is not ASCII"));
                }
                let pid = String::from_utf8_lossy(pid).into_owned();
                let id = self.alloc(Node::Leaf(Value::Unicode(pid)))?;
                self.push(Node::PersId(id))?;
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                self.push(Node::PersId(pid))?;
            }
            op::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.push(Node::Reduce(callable, args))?;
            }
            op::NEWOBJ => {
                let args = self.pop()?;
                let cls = self.pop()?;
                self.push(Node::NewObj(cls, args))?;
            }
            op::NEWOBJ_EX => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                if matches!(&self.arena[kwargs as usize], Node::Dict(kv) if kv.is_empty()) {
                    self.push(Node::NewObj(cls, args))?;
                } else {
                    let f = self.alloc(Node::Leaf(Value::Global {
                        module: "copyreg".into(),
                        name: "__newobj_ex__".into(),
                    }))?;
                    let a = self.alloc(Node::Tuple(vec![cls, args, kwargs]))?;
                    self.push(Node::Reduce(f, a))?;
                }
            }
            op::OBJ => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(Kind::StackUnderflow);
                }
                let cls = items.remove(0);
                let args = self.alloc(Node::Tuple(items))?;
                self.push(Node::Reduce(cls, args))?;
            }
            op::INST => {
                let module = self.line_utf8("INST module")?;
                let name = self.line_utf8("INST name")?;
                let items = self.pop_mark()?;
                let cls = self.alloc(Node::Leaf(Value::Global { module, name }))?;
                let args = self.alloc(Node::Tuple(items))?;
                self.push(Node::Reduce(cls, args))?;
            }
            op::BUILD => {
                let state = self.pop()?;
                let obj = self.top()?;
                // In place, so that every alias of obj sees it built: the
                // old object moves to a fresh slot and obj becomes the Build.
                let moved = self.alloc(Node::Leaf(Value::None))?;
                self.arena.swap(obj as usize, moved as usize);
                self.arena[obj as usize] = Node::Build(moved, state);
            }

            // -- refused --
            op::EXT1 | op::EXT2 | op::EXT4 => {
                return Err(invalid(
                    "EXT opcodes need an extension registry; there is none",
                ))
            }
            op::NEXT_BUFFER => return Err(invalid("out-of-band buffers are not supported")),
            op::READONLY_BUFFER => {
                // In-band data is immutable here already.
                self.top()?;
            }
            _ => return Err(Kind::UnknownOpcode(code)),
        }
        Ok(None)
    }
}

/// Items `k0 v0 k1 v1 ...` as pairs; `None` for an odd count.
fn pairs(items: &[Id]) -> Option<Vec<(Id, Id)>> {
    if items.len() % 2 != 0 {
        return None;
    }
    Some(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

/// Step 2: the value of node `id`, at nesting `depth`, paid from `budget`.
fn build(arena: &[Node], id: Id, depth: usize, budget: &mut u64) -> Result<Value, Kind> {
    if depth > MAX_DEPTH {
        return Err(Kind::Limit("value nested too deeply (or recursive)"));
    }
    let node = &arena[id as usize];
    let heavy = match node {
        Node::Leaf(Value::Unicode(s)) => s.len(),
        Node::Leaf(Value::BigInt(b)) => b.len(),
        Node::Leaf(Value::Global { module, name }) => module.len() + name.len(),
        _ => 0,
    };
    let cost = 1 + (heavy / 16) as u64;
    if *budget < cost {
        return Err(Kind::Limit("value expands to too many objects"));
    }
    *budget -= cost;

    let d = depth + 1;
    let all = |items: &[Id], budget: &mut u64| -> Result<Vec<Value>, Kind> {
        items.iter().map(|&i| build(arena, i, d, budget)).collect()
    };
    let boxed = |i: Id, budget: &mut u64| build(arena, i, d, budget).map(Box::new);
    Ok(match node {
        Node::Leaf(v) => v.clone(),
        Node::Tuple(items) => Value::Tuple(all(items, budget)?),
        Node::List(items) | Node::Set(items) => Value::List(all(items, budget)?),
        Node::Dict(kv) => Value::Dict(
            kv.iter()
                .map(|&(k, v)| Ok((build(arena, k, d, budget)?, build(arena, v, d, budget)?)))
                .collect::<Result<_, Kind>>()?,
        ),
        Node::PersId(p) => Value::PersId(boxed(*p, budget)?),
        Node::Reduce(c, a) => Value::Reduce {
            callable: boxed(*c, budget)?,
            args: boxed(*a, budget)?,
        },
        Node::NewObj(c, a) => Value::NewObj {
            cls: boxed(*c, budget)?,
            args: boxed(*a, budget)?,
        },
        Node::Build(o, s) => Value::Build {
            obj: boxed(*o, budget)?,
            state: boxed(*s, budget)?,
        },
    })
}

// ---- integers ----

/// An int from little-endian two's complement bytes (`LONG1`/`LONG4`),
/// normalized: [`Value::Int`] if it fits in i64, else a minimal
/// [`Value::BigInt`].
pub(super) fn long_from_le(b: &[u8]) -> Value {
    let mut n = b.len();
    // Drop sign-extension bytes that repeat the sign of the byte below.
    while n > 1 {
        let (hi, below) = (b[n - 1], b[n - 2]);
        if (hi == 0x00 && below & 0x80 == 0) || (hi == 0xff && below & 0x80 != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    let b = &b[..n];
    if b.len() <= 8 {
        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(b);
        Value::Int(i64::from_le_bytes(a))
    } else {
        Value::BigInt(b.to_vec())
    }
}

/// A decimal text int (`INT`, `LONG`), with optional sign and surrounding
/// whitespace.
fn parse_int_text(text: &[u8]) -> Result<Value, Kind> {
    let bad = || invalid("bad text int");
    let text = text.trim_ascii();
    let (neg, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if digits.len() > MAX_INT_DIGITS {
        return Err(Kind::Limit("text int has too many digits"));
    }
    // Fast path; the text is ASCII so this cannot fail to be UTF-8.
    if let Some(v) = std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        return Ok(Value::Int(v));
    }
    // Magnitude in base 2^32, little-endian, 9 decimal digits at a time.
    let mut limbs: Vec<u32> = Vec::with_capacity(digits.len() / 9 + 1);
    let head = digits.len() % 9;
    let chunks = std::iter::once(&digits[..head])
        .filter(|c| !c.is_empty())
        .chain(digits[head..].chunks(9));
    for chunk in chunks {
        let mul = 10u64.pow(chunk.len() as u32);
        let mut carry = chunk
            .iter()
            .fold(0u64, |acc, &c| acc * 10 + u64::from(c - b'0'));
        for l in limbs.iter_mut() {
            let t = u64::from(*l) * mul + carry;
            *l = t as u32;
            carry = t >> 32;
        }
        if carry != 0 {
            limbs.push(carry as u32);
        }
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    bytes.push(0); // room for the sign bit
    if neg {
        negate_le(&mut bytes);
    }
    Ok(long_from_le(&bytes))
}

/// Two's complement negation in place of little-endian bytes.
pub(super) fn negate_le(b: &mut [u8]) {
    let mut carry = true;
    for x in b.iter_mut() {
        let (v, c) = (!*x).overflowing_add(u8::from(carry));
        *x = v;
        carry = c;
    }
}

// ---- text string forms ----

/// `STRING`: a Python repr, quoted, with backslash escapes
/// (`codecs.escape_decode`). Without escapes the result is a slice of the input.
fn unrepr_string(data: &Bytes, r: Range<usize>) -> Result<Bytes, Kind> {
    let s = &data[r.clone()];
    let quoted = s.len() >= 2 && s[0] == s[s.len() - 1] && (s[0] == b'\'' || s[0] == b'"');
    if !quoted {
        return Err(invalid("STRING argument must be quoted"));
    }
    let inner = &s[1..s.len() - 1];
    if !inner.contains(&b'\\') {
        return Ok(data.slice(r.start + 1..r.end - 1));
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            return Err(invalid("STRING: trailing \\"));
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8); // Python truncates \400..\777 the same way
            }
            b'x' => {
                let hex = inner
                    .get(i..i + 2)
                    .and_then(|h| Some(hex_digit(h[0])? * 16 + hex_digit(h[1])?));
                let v = hex.ok_or_else(|| invalid("STRING: invalid \\x escape"))?;
                out.push(v as u8);
                i += 2;
            }
            _ => {
                // Unknown escapes stay as they are.
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    Ok(Bytes::from(out))
}

fn hex_digit(c: u8) -> Option<u32> {
    char::from(c).to_digit(16)
}

/// `UNICODE`: raw-unicode-escape, as Python 3 decodes it: bytes are Latin-1
/// code points, `\uXXXX` and `\UXXXXXXXX` are escapes, and a backslash
/// before anything else stands for itself together with that next byte (so
/// `\\u0041` is the six characters as written).
fn raw_unicode_unescape(s: &[u8]) -> Result<String, Kind> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != b'\\' {
            out.push(char::from(c));
            continue;
        }
        let n = match s.get(i) {
            Some(b'u') => 4,
            Some(b'U') => 8,
            Some(&other) => {
                out.push('\\');
                out.push(char::from(other));
                i += 1;
                continue;
            }
            None => {
                out.push('\\');
                continue;
            }
        };
        i += 1;
        let digits = s
            .get(i..i + n)
            .ok_or_else(|| invalid("UNICODE: truncated \\u escape"))?;
        let mut v: u32 = 0;
        for &d in digits {
            let d = hex_digit(d).ok_or_else(|| invalid("UNICODE: bad \\u escape"))?;
            v = v
                .checked_mul(16)
                .and_then(|v| v.checked_add(d))
                .unwrap_or(u32::MAX);
        }
        i += n;
        let ch = char::from_u32(v)
            .ok_or_else(|| invalid("UNICODE: escape is a surrogate or out of range"))?;
        out.push(ch);
    }
    Ok(out)
}

/// Decode a ZODB object record: the class pickle and then the state pickle.
pub fn decode_record(data: &Bytes) -> Result<(Value, Value), PickleError> {
    let mut u = Unpickler::new(data.clone());
    let class = u.load()?;
    let state = u.load()?;
    Ok((class, state))
}

#[cfg(test)]
mod tests {
    //! Opcode-level tests: each opcode family, the memo aliasing rules, the
    //! limits, and error positions. Whole-value round trips and the Python
    //! cross-checks are in `pickle/tests.rs`.

    use super::*;
    use proptest::prelude::*;

    fn load(data: &[u8]) -> Result<Value, PickleError> {
        Unpickler::new(Bytes::copy_from_slice(data)).load()
    }

    fn ok(data: &[u8]) -> Value {
        load(data).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(data: &[u8]) -> PickleError {
        load(data).expect_err("must not decode")
    }

    fn at(pos: usize, kind: Kind) -> PickleError {
        PickleError { pos, kind }
    }

    fn int(i: i64) -> Value {
        Value::Int(i)
    }

    fn g(module: &str, name: &str) -> Value {
        Value::Global {
            module: module.into(),
            name: name.into(),
        }
    }

    fn is_invalid(e: &PickleError) -> bool {
        matches!(e.kind, Kind::Invalid(_))
    }

    fn is_limit(e: &PickleError) -> bool {
        matches!(e.kind, Kind::Limit(_))
    }

    #[test]
    fn text_int() {
        assert_eq!(ok(b"I01\n."), Value::Bool(true));
        assert_eq!(ok(b"I00\n."), Value::Bool(false));
        assert_eq!(ok(b"I1\n."), int(1));
        assert_eq!(ok(b"I0\n."), int(0));
        assert_eq!(ok(b"I-5\n."), int(-5));
        assert_eq!(ok(b"I 42 \n."), int(42));
        assert_eq!(ok(b"I9223372036854775807\n."), int(i64::MAX));
        assert_eq!(ok(b"I-9223372036854775808\n."), int(i64::MIN));
        assert_eq!(
            ok(b"I9223372036854775808\n."),
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])
        );
        assert_eq!(
            ok(b"I-9223372036854775809\n."),
            Value::BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff])
        );
        for bad in [&b"I12a\n."[..], b"I\n.", b"I-\n.", b"I0x10\n.", b"I1.5\n."] {
            assert!(is_invalid(&err(bad)), "{bad:?}");
        }
        assert_eq!(err(b"I12"), at(0, Kind::Truncated));
    }

    #[test]
    fn text_long() {
        assert_eq!(ok(b"L123L\n."), int(123));
        assert_eq!(ok(b"L123\n."), int(123));
        assert_eq!(ok(b"L-18446744073709551616L\n."), {
            let mut b = vec![0u8; 8];
            b.push(0xff);
            Value::BigInt(b)
        });
        let digits = "9".repeat(MAX_INT_DIGITS);
        assert!(matches!(
            ok(format!("L{digits}L\n.").as_bytes()),
            Value::BigInt(_)
        ));
        let e = err(format!("L{digits}9L\n.").as_bytes());
        assert!(is_limit(&e), "{e}");
        assert!(is_invalid(&err(b"LL\n.")));
    }

    proptest! {
        /// Decimal text agrees with i128 arithmetic, in and out of i64.
        #[test]
        fn text_int_matches_i128(x in any::<i128>()) {
            let want = long_from_le(&x.to_le_bytes());
            prop_assert_eq!(parse_int_text(x.to_string().as_bytes()).unwrap(), want.clone());
            let pickled = format!("L{x}L\n.");
            prop_assert_eq!(ok(pickled.as_bytes()), want);
        }
    }

    #[test]
    fn binary_ints() {
        assert_eq!(ok(b"K\xff."), int(255));
        assert_eq!(ok(b"M\xff\xff."), int(65535));
        assert_eq!(ok(b"J\xff\xff\xff\xff."), int(-1));
        assert_eq!(ok(b"\x8a\x00."), int(0));
        assert_eq!(ok(b"\x8a\x02\xff\x00."), int(255));
        assert_eq!(ok(b"\x8a\x01\xff."), int(-1));
        // Redundant sign bytes are dropped, then it fits in i64.
        assert_eq!(
            ok(b"\x8a\x0a\xfe\xff\xff\xff\xff\xff\xff\xff\xff\xff."),
            int(-2)
        );
        assert_eq!(
            ok(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."),
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(ok(b"\x8b\x01\x00\x00\x00\x05."), int(5));
        // LONG4 with a negative length.
        assert!(is_invalid(&err(b"\x8b\xff\xff\xff\xff.")));
        assert_eq!(err(b"\x8b\xff\xff\xff\x7f."), at(0, Kind::Truncated));
    }

    #[test]
    fn floats() {
        assert_eq!(ok(b"F1.5\n."), Value::Float(1.5));
        assert_eq!(ok(b"F-2.25e+300\n."), Value::Float(-2.25e300));
        assert_eq!(ok(b"Finf\n."), Value::Float(f64::INFINITY));
        assert!(matches!(ok(b"Fnan\n."), Value::Float(f) if f.is_nan()));
        assert!(is_invalid(&err(b"Fx\n.")));
        assert_eq!(ok(b"G\x3f\xf8\x00\x00\x00\x00\x00\x00."), Value::Float(1.5));
    }

    #[test]
    fn huge_lengths_are_checked_before_use() {
        for data in [
            &b"B\xff\xff\xff\xff"[..],
            b"X\xff\xff\xff\xff",
            b"T\xff\xff\xff\x7f",
            b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x96\x00\x00\x00\x00\x00\x00\x00\x80",
            b"\x95\xff\xff\xff\xff\xff\xff\xff\xff",
            b"C\x05abc",
            b"U\x05abc",
            b"\x8c\x05abc",
        ] {
            assert_eq!(err(data), at(0, Kind::Truncated), "{data:?}");
        }
        assert!(is_invalid(&err(b"T\xff\xff\xff\xffabc")));
    }

    #[test]
    fn byte_strings_are_slices_of_the_input() {
        let mut data = vec![op::PROTO, 3, op::BINBYTES];
        data.extend(2_097_152u32.to_le_bytes());
        data.resize(data.len() + 2_097_152, 0xab);
        data.push(op::STOP);
        let data = Bytes::from(data);
        let mut up = Unpickler::new(data.clone());
        let Value::Bytes(b) = up.load().unwrap() else {
            panic!()
        };
        assert_eq!(b.len(), 2_097_152);
        assert_eq!(b.as_ptr(), data[7..].as_ptr());
        assert!(up.at_end());

        for data in [&b"U\x03abc."[..], b"T\x03\x00\x00\x00abc.", b"S'abc'\n."] {
            let data = Bytes::copy_from_slice(data);
            let v = Unpickler::new(data.clone()).load().unwrap();
            let Value::Str8(b) = v else { panic!() };
            assert_eq!(&b[..], b"abc");
            assert!(data.as_ptr_range().contains(&b.as_ptr()));
        }
        assert_eq!(ok(b"C\x02ab."), Value::Bytes(Bytes::from_static(b"ab")));
        assert_eq!(
            ok(b"\x96\x02\x00\x00\x00\x00\x00\x00\x00ab."),
            Value::Bytes(Bytes::from_static(b"ab"))
        );
    }

    #[test]
    fn text_string_escapes() {
        let s = |data: &[u8]| match ok(data) {
            Value::Str8(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(s(b"S'a\\x41\\n\\\\\\''\n."), b"aA\n\\'");
        assert_eq!(s(b"S\"q\\\"\"\n."), b"q\"");
        assert_eq!(s(b"S'\\101\\0\\7\\777'\n."), b"A\x00\x07\xff");
        assert_eq!(s(b"S'\\q'\n."), b"\\q");
        for bad in [
            &b"Sabc\n."[..],
            b"S'abc\"\n.",
            b"S'\n.",
            b"S'\\x4'\n.",
            b"S'\\'\n.",
        ] {
            assert!(is_invalid(&err(bad)), "{bad:?}");
        }
    }

    #[test]
    fn text_unicode_escapes() {
        let u = |data: &[u8]| match ok(data) {
            Value::Unicode(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(u(b"V\\u0041\\U0001d11e\xe9\n."), "A\u{1d11e}\u{e9}");
        assert_eq!(u(b"V\\x\\\\u0041\n."), "\\x\\\\u0041");
        assert_eq!(u(b"Vend\\\n."), "end\\");
        for bad in [
            &b"V\\ud800\n."[..],
            b"V\\U00110000\n.",
            b"V\\u12\n.",
            b"V\\uzzzz\n.",
        ] {
            assert!(is_invalid(&err(bad)), "{bad:?}");
        }
        assert_eq!(
            ok(b"X\x02\x00\x00\x00\xc3\xa9."),
            Value::Unicode("\u{e9}".into())
        );
        assert_eq!(ok(b"\x8c\x01a."), Value::Unicode("a".into()));
        assert!(is_invalid(&err(b"X\x01\x00\x00\x00\xff.")));
        // Surrogates, which Python writes with 'surrogatepass', cannot be a String.
        assert!(is_invalid(&err(b"X\x03\x00\x00\x00\xed\xa0\x80.")));
    }

    #[test]
    fn containers() {
        assert_eq!(ok(b")."), Value::Tuple(vec![]));
        assert_eq!(ok(b"(K\x01K\x02t."), Value::Tuple(vec![int(1), int(2)]));
        assert_eq!(ok(b"K\x01\x85."), Value::Tuple(vec![int(1)]));
        assert_eq!(
            ok(b"K\x01K\x02K\x03\x87."),
            Value::Tuple(vec![int(1), int(2), int(3)])
        );
        assert_eq!(ok(b"(K\x01l."), Value::List(vec![int(1)]));
        assert_eq!(ok(b"]K\x01a."), Value::List(vec![int(1)]));
        assert_eq!(ok(b"](K\x01K\x02e."), Value::List(vec![int(1), int(2)]));
        assert_eq!(ok(b"(K\x01K\x02d."), Value::Dict(vec![(int(1), int(2))]));
        assert_eq!(ok(b"}K\x01K\x02s."), Value::Dict(vec![(int(1), int(2))]));
        assert_eq!(
            ok(b"}(K\x01K\x02K\x03K\x04u."),
            Value::Dict(vec![(int(1), int(2)), (int(3), int(4))])
        );
        // Sets are lists.
        assert_eq!(
            ok(b"\x8f(K\x01K\x02\x90."),
            Value::List(vec![int(1), int(2)])
        );
        assert_eq!(ok(b"(K\x01\x91."), Value::List(vec![int(1)]));

        assert!(is_invalid(&err(b"(K\x01d.")));
        assert!(is_invalid(&err(b"}(K\x01u.")));
        assert!(is_invalid(&err(b")K\x01a.")));
        assert!(is_invalid(&err(b"](K\x01\x90.")));
        assert!(is_invalid(&err(b"]K\x01K\x02s.")));
        assert!(is_invalid(&err(b"\x8f(K\x01e.")));
    }

    #[test]
    fn marks_and_stack() {
        // POP of a mark on top pops the mark, as in Python.
        assert_eq!(ok(b"N(0."), Value::None);
        assert_eq!(ok(b"N(K\x011."), Value::None);
        assert_eq!(ok(b"K\x012\x86."), Value::Tuple(vec![int(1), int(1)]));
        assert_eq!(err(b"(."), at(1, Kind::StackUnderflow));
        assert_eq!(err(b"."), at(0, Kind::StackUnderflow));
        assert_eq!(err(b"N(\x85."), at(2, Kind::StackUnderflow));
        assert_eq!(err(b"N(K\x01a."), at(4, Kind::StackUnderflow));
        assert_eq!(err(b"(K\x01e."), at(3, Kind::StackUnderflow));
        assert_eq!(err(b"Nt."), at(1, Kind::NoMark));
        assert_eq!(err(b"N1."), at(1, Kind::NoMark));
        assert_eq!(err(b"]e."), at(1, Kind::NoMark));
        assert_eq!(err(b"0"), at(0, Kind::StackUnderflow));
        assert_eq!(err(b"2"), at(0, Kind::StackUnderflow));
        // Leftover items and marks are dropped at STOP, as Python does.
        assert_eq!(ok(b"K\x01(K\x02."), int(2));
    }

    #[test]
    fn memo_forms() {
        assert_eq!(
            ok(b"K\x07p5\ng5\n\x86."),
            Value::Tuple(vec![int(7), int(7)])
        );
        assert_eq!(
            ok(b"K\x07q\x09h\x09\x86."),
            Value::Tuple(vec![int(7), int(7)])
        );
        assert_eq!(
            ok(b"K\x07r\xff\xff\xff\xffj\xff\xff\xff\xff\x86."),
            Value::Tuple(vec![int(7), int(7)])
        );
        // MEMOIZE numbers slots by the memo's size.
        assert_eq!(
            ok(b"\x80\x04K\x01\x94K\x02\x94h\x00h\x01\x86\x86."),
            Value::Tuple(vec![int(2), Value::Tuple(vec![int(1), int(2)])])
        );
        assert_eq!(err(b"h\x07."), at(0, Kind::BadMemo(7)));
        assert_eq!(err(b"g12\n."), at(0, Kind::BadMemo(12)));
        assert_eq!(err(b"q\x00."), at(0, Kind::StackUnderflow));
        assert!(is_invalid(&err(b"Np-1\n.")));
    }

    /// A container memoized while empty and filled afterwards is seen full
    /// through the memo, as Python's object references make it.
    #[test]
    fn memo_aliases_mutated_containers() {
        let l12 = Value::List(vec![int(1), int(2)]);
        // EMPTY_LIST BINPUT 1 MARK 1 2 APPENDS POP BINGET 1
        assert_eq!(ok(b"]q\x01(K\x01K\x02e0h\x01."), l12);
        // The same through DUP, APPEND, SETITEM(S), ADDITEMS.
        assert_eq!(ok(b"]2K\x05a0."), Value::List(vec![int(5)]));
        assert_eq!(
            ok(b"}q\x00K\x01K\x02s0h\x00."),
            Value::Dict(vec![(int(1), int(2))])
        );
        assert_eq!(
            ok(b"}q\x00(K\x01K\x02u0h\x00."),
            Value::Dict(vec![(int(1), int(2))])
        );
        assert_eq!(ok(b"\x8fq\x00(K\x01\x900h\x00."), Value::List(vec![int(1)]));
        // x = []; y = [x]; x.append(5) afterwards: y sees it.
        assert_eq!(
            ok(b"]q\x00(h\x00lh\x00K\x05a0."),
            Value::List(vec![Value::List(vec![int(5)])])
        );
        // Two memo slots for one object, mutated through the second.
        assert_eq!(
            ok(b"]q\x00q\x010h\x01K\x09a0h\x00."),
            Value::List(vec![int(9)])
        );
    }

    /// BUILD replaces the object in place: its memo aliases see it built.
    #[test]
    fn build_is_seen_through_the_memo() {
        let data = b"cm\nC\n)\x81q\x00}K\x01K\x02sbh\x00h\x00\x86.";
        let built = Value::Build {
            obj: Box::new(Value::NewObj {
                cls: Box::new(g("m", "C")),
                args: Box::new(Value::Tuple(vec![])),
            }),
            state: Box::new(Value::Dict(vec![(int(1), int(2))])),
        };
        // Stack after BUILD: [built]; then BINGET 0 twice and TUPLE2.
        let mut up = Unpickler::new(Bytes::from_static(data));
        assert_eq!(up.load().unwrap(), Value::Tuple(vec![built.clone(), built]));
    }

    /// The memo outlives `load`: ZODB's state pickle GETs the class pickle's PUTs.
    #[test]
    fn memo_is_shared_across_loads() {
        let data = Bytes::from_static(b"\x80\x03cm\nC\nq\x00.\x80\x03h\x00K\x01\x86.");
        let (class, state) = decode_record(&data).unwrap();
        assert_eq!(class, g("m", "C"));
        assert_eq!(state, Value::Tuple(vec![g("m", "C"), int(1)]));
        let mut up = Unpickler::new(data.clone());
        up.load().unwrap();
        assert_eq!(up.position(), 10);
        up.load().unwrap();
        assert!(up.at_end());
        // The stack is not: the second pickle cannot see the first one's items.
        let mut up = Unpickler::new(Bytes::from_static(b"K\x01.0."));
        up.load().unwrap();
        assert_eq!(up.load(), Err(at(3, Kind::StackUnderflow)));
    }

    #[test]
    fn cycles_and_depth_are_limited() {
        // x = []; x.append(x)
        assert!(is_limit(&err(b"]q\x00h\x00a.")));
        assert!(is_limit(&err(b"]2a.")));
        // BUILD with the object as its own state.
        assert!(is_limit(&err(b"N2b.")));
        let nest = |n: usize| {
            let mut d = vec![b']'];
            d.extend(std::iter::repeat_n(op::TUPLE1, n));
            d.push(op::STOP);
            d
        };
        assert!(load(&nest(MAX_DEPTH)).is_ok());
        assert!(is_limit(&err(&nest(MAX_DEPTH + 1))));
        // A million levels: no recursion anywhere, just the limit.
        assert!(is_limit(&err(&nest(1_000_000))));
    }

    /// `x = (x, x)` 64 times is 2^64 nodes; the budget stops it early.
    #[test]
    fn memo_expansion_is_limited() {
        let mut d = vec![b'N'];
        for _ in 0..64 {
            d.extend(b"q\x00h\x00\x86");
        }
        d.push(b'.');
        let t = std::time::Instant::now();
        assert!(is_limit(&err(&d)));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // 2^12 nodes from 61 bytes fit in the budget.
        assert!(load(
            &d[..1 + 12 * 5]
                .iter()
                .chain(b".")
                .copied()
                .collect::<Vec<_>>()
        )
        .is_ok());
    }

    #[test]
    fn globals_and_objects() {
        assert_eq!(
            ok(b"cBTrees.LOBTree\nLOBTree\n."),
            g("BTrees.LOBTree", "LOBTree")
        );
        assert_eq!(ok(b"\x8c\x01m\x8c\x01C\x93."), g("m", "C"));
        assert!(is_invalid(&err(b"K\x01\x8c\x01C\x93.")));
        assert!(is_invalid(&err(b"c\xff\nC\n.")));
        assert_eq!(err(b"cm\nC"), at(0, Kind::Truncated));

        let reduce = |c: Value, a: Vec<Value>| Value::Reduce {
            callable: Box::new(c),
            args: Box::new(Value::Tuple(a)),
        };
        assert_eq!(ok(b"cm\nC\nK\x01\x85R."), reduce(g("m", "C"), vec![int(1)]));
        assert_eq!(ok(b"(K\x01im\nC\n."), reduce(g("m", "C"), vec![int(1)]));
        assert_eq!(ok(b"(cm\nC\nK\x01o."), reduce(g("m", "C"), vec![int(1)]));
        assert_eq!(err(b"(o."), at(1, Kind::StackUnderflow));
        assert_eq!(
            ok(b"cm\nC\n)}\x92."),
            Value::NewObj {
                cls: Box::new(g("m", "C")),
                args: Box::new(Value::Tuple(vec![])),
            }
        );
        assert_eq!(
            ok(b"cm\nC\n)}K\x01K\x02s\x92."),
            reduce(
                g("copyreg", "__newobj_ex__"),
                vec![
                    g("m", "C"),
                    Value::Tuple(vec![]),
                    Value::Dict(vec![(int(1), int(2))])
                ]
            )
        );
        assert_eq!(ok(b"NQ."), Value::PersId(Box::new(Value::None)));
        assert_eq!(
            ok(b"Pabc\n."),
            Value::PersId(Box::new(Value::Unicode("abc".into())))
        );
        assert!(is_invalid(&err(b"P\xff\n.")));
    }

    #[test]
    fn protocol_frame_and_refused_opcodes() {
        for p in 0..=HIGHEST_PROTOCOL {
            assert_eq!(ok(&[op::PROTO, p, b'N', b'.']), Value::None);
        }
        assert!(is_invalid(&err(b"\x80\x06N.")));
        assert_eq!(
            ok(b"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00N."),
            Value::None
        );
        assert!(is_invalid(&err(b"\x82\x01.")));
        assert!(is_invalid(&err(b"\x83\x01\x00.")));
        assert!(is_invalid(&err(b"\x84\x01\x00\x00\x00.")));
        assert!(is_invalid(&err(b"\x97.")));
        assert_eq!(ok(b"C\x01a\x98."), Value::Bytes(Bytes::from_static(b"a")));
    }

    #[test]
    fn errors_carry_the_opcode_offset() {
        assert_eq!(err(b"\x80\x03N\xff"), at(3, Kind::UnknownOpcode(0xff)));
        assert_eq!(err(b"\x80\x03N"), at(3, Kind::Truncated));
        assert_eq!(err(b""), at(0, Kind::Truncated));
        assert_eq!(err(b"\x80\x03X\x05\x00\x00\x00ab"), at(2, Kind::Truncated));
        assert_eq!(err(b"NNh\x07"), at(2, Kind::BadMemo(7)));
        let mut up = Unpickler::new(Bytes::from_static(b"NN\xff"));
        let e = up.load().unwrap_err();
        assert_eq!(up.position(), e.pos);
        assert_eq!(e.to_string(), "pickle: at byte 2: unknown opcode 0xff");
    }
}

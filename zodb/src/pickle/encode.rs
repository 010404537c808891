//! Pickle encoder for protocols 1, 2 and 3: what ZODB writes.
//!
//! Each [`Pickler::dump`] writes one complete pickle: `PROTO n` (protocol
//! ≥ 2), the value, `STOP`. The memo is not used at all (no `PUT`/`GET`):
//! ZODB's writer only needs the memo for shared or recursive objects, which a
//! [`Value`] tree cannot express, so shared subtrees are simply written twice.
//!
//! Opcodes per value (the choices Python's own pickler makes):
//!
//! | value | protocol 1 | protocol 2 | protocol 3 |
//! |---|---|---|---|
//! | `None` | `NONE` | ← | ← |
//! | `Bool` | `I01\n` / `I00\n` | `NEWTRUE` / `NEWFALSE` | ← |
//! | `Int` in u8 / u16 / i32 | `BININT1` / `BININT2` / `BININT` | ← | ← |
//! | `Int` beyond i32 | `I<decimal>\n` (as Python 2) | `LONG1` | ← |
//! | `BigInt` | `L<decimal>L\n` | `LONG1` / `LONG4` | ← |
//! | `Float` | `BINFLOAT` | ← | ← |
//! | `Str8` | `SHORT_BINSTRING` / `BINSTRING` | ← | ← |
//! | `Bytes` | like `Str8` | like `Str8` | `SHORT_BINBYTES` / `BINBYTES` |
//! | `Unicode` | `BINUNICODE` | ← | ← |
//! | `Tuple` | `EMPTY_TUPLE`, `MARK … TUPLE` | `TUPLE1..3` up to 3 items | ← |
//! | `List` | `EMPTY_LIST` + `MARK … APPENDS` per 1000 items (`APPEND` for 1) | ← | ← |
//! | `Dict` | `EMPTY_DICT` + `MARK … SETITEMS` per 1000 pairs (`SETITEM` for 1) | ← | ← |
//! | `Global` | `GLOBAL` | ← | ← |
//! | `PersId` | id, `BINPERSID` | ← | ← |
//! | `Reduce` | callable, args, `REDUCE` | ← | ← |
//! | `NewObj` | `copy_reg.__newobj__`, `(cls, *args)`, `REDUCE` | cls, args, `NEWOBJ` | ← |
//! | `Build` | obj, state, `BUILD` | ← | ← |
//!
//! So decoding what we write gives the value back except for these
//! normalizations: `Bytes` under protocols 1 and 2 comes back as `Str8` (there
//! is no bytes type before protocol 3; Python 2 reads it as `str`), `NewObj`
//! under protocol 1 comes back as `Reduce(copy_reg.__newobj__, (cls, *args))`
//! (the same object for Python; if `args` is not a tuple the fallback is
//! `(cls, args)`), and a `BigInt` comes back normalized by the decoder: as
//! `Int` if it fits in i64, else in minimal form (its bytes are written as
//! given; the decoder only makes normalized ones). The protocol 1 form of
//! `NewObj` is one level deeper, so a value right at the decoder's nesting
//! limit (512) can come back as a `Limit` error under protocol 1.
//!
//! Limits that have no encoding in protocols 1-3 (none occurs in ZODB data):
//! `Global` names must not contain `\n`; a `Str8` longer than 2 GiB - 1 and a
//! `Bytes`/`Unicode` longer than 4 GiB - 1 are written with the protocol 4
//! opcodes `BINBYTES8`/`BINUNICODE8` (which Python reads whatever the protocol),
//! a `Str8` then coming back as `Bytes`.
//!
//! The encoder works from an explicit task stack, so a deeply nested value does
//! not overflow the call stack.

use super::decode::negate_le;
use super::decode::op;
use super::Value;

/// How many items go into one `APPENDS`/`SETITEMS` (Python's `_BATCHSIZE`).
const BATCH: usize = 1000;

/// Encodes values as pickles of a given protocol (1, 2 or 3).
#[derive(Debug)]
pub struct Pickler {
    out: Vec<u8>,
    protocol: u8,
}

/// A pending piece of output.
enum Task<'a> {
    Value(&'a Value),
    Op(u8),
}

impl Pickler {
    /// A pickler writing protocol `protocol` (clamped to 1..=3).
    pub fn new(protocol: u8) -> Self {
        Pickler {
            out: Vec::new(),
            protocol: protocol.clamp(1, 3),
        }
    }

    /// The protocol this pickler writes.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Append one complete pickle of `v` (with `PROTO` for protocol >= 2, and `STOP`).
    pub fn dump(&mut self, v: &Value) {
        if self.protocol >= 2 {
            self.out.extend([op::PROTO, self.protocol]);
        }
        let mut work = vec![Task::Value(v)];
        while let Some(task) = work.pop() {
            match task {
                Task::Op(code) => self.out.push(code),
                Task::Value(v) => self.save(v, &mut work),
            }
        }
        self.out.push(op::STOP);
    }

    /// The bytes written so far.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }

    /// Write `v` if it is a scalar, else push what it is made of onto `work`
    /// (last item first: `work` is a stack).
    fn save<'a>(&mut self, v: &'a Value, work: &mut Vec<Task<'a>>) {
        match v {
            Value::None => self.out.push(op::NONE),
            Value::Bool(b) => self.save_bool(*b),
            Value::Int(i) => self.save_int(*i),
            Value::BigInt(b) => self.save_bigint(b),
            Value::Float(f) => {
                self.out.push(op::BINFLOAT);
                self.out.extend(f.to_be_bytes());
            }
            Value::Str8(b) => self.save_str8(b),
            Value::Bytes(b) if self.protocol >= 3 => {
                self.save_sized(b, op::SHORT_BINBYTES, op::BINBYTES, op::BINBYTES8)
            }
            Value::Bytes(b) => self.save_str8(b),
            Value::Unicode(s) => {
                self.save_sized(s.as_bytes(), None, op::BINUNICODE, op::BINUNICODE8)
            }
            Value::Global { module, name } => self.save_global(module, name),

            Value::Tuple(items) => {
                if items.is_empty() {
                    self.out.push(op::EMPTY_TUPLE);
                    return;
                }
                match (self.protocol >= 2, items.len()) {
                    (true, 1) => work.push(Task::Op(op::TUPLE1)),
                    (true, 2) => work.push(Task::Op(op::TUPLE2)),
                    (true, 3) => work.push(Task::Op(op::TUPLE3)),
                    _ => {
                        self.out.push(op::MARK);
                        work.push(Task::Op(op::TUPLE));
                    }
                }
                work.extend(items.iter().rev().map(Task::Value));
            }
            Value::List(items) => {
                self.out.push(op::EMPTY_LIST);
                for batch in items.chunks(BATCH).rev() {
                    if let [item] = batch {
                        work.push(Task::Op(op::APPEND));
                        work.push(Task::Value(item));
                    } else {
                        work.push(Task::Op(op::APPENDS));
                        work.extend(batch.iter().rev().map(Task::Value));
                        work.push(Task::Op(op::MARK));
                    }
                }
            }
            Value::Dict(pairs) => {
                self.out.push(op::EMPTY_DICT);
                for batch in pairs.chunks(BATCH).rev() {
                    let kv = |(k, v): &'a (Value, Value)| [Task::Value(v), Task::Value(k)];
                    if let [pair] = batch {
                        work.push(Task::Op(op::SETITEM));
                        work.extend(kv(pair));
                    } else {
                        work.push(Task::Op(op::SETITEMS));
                        work.extend(batch.iter().rev().flat_map(kv));
                        work.push(Task::Op(op::MARK));
                    }
                }
            }
            Value::PersId(pid) => {
                work.push(Task::Op(op::BINPERSID));
                work.push(Task::Value(pid));
            }
            Value::Reduce { callable, args } => {
                work.push(Task::Op(op::REDUCE));
                work.push(Task::Value(args));
                work.push(Task::Value(callable));
            }
            Value::NewObj { cls, args } if self.protocol >= 2 => {
                work.push(Task::Op(op::NEWOBJ));
                work.push(Task::Value(args));
                work.push(Task::Value(cls));
            }
            Value::NewObj { cls, args } => {
                // copy_reg.__newobj__(cls, *args) is cls.__new__(cls, *args).
                self.save_global("copy_reg", "__newobj__");
                self.out.push(op::MARK);
                work.push(Task::Op(op::REDUCE));
                work.push(Task::Op(op::TUPLE));
                match &**args {
                    Value::Tuple(items) => work.extend(items.iter().rev().map(Task::Value)),
                    other => work.push(Task::Value(other)),
                }
                work.push(Task::Value(cls));
            }
            Value::Build { obj, state } => {
                work.push(Task::Op(op::BUILD));
                work.push(Task::Value(state));
                work.push(Task::Value(obj));
            }
        }
    }

    fn save_bool(&mut self, b: bool) {
        if self.protocol >= 2 {
            self.out.push(if b { op::NEWTRUE } else { op::NEWFALSE });
        } else {
            self.out.extend(if b { b"I01\n" } else { b"I00\n" });
        }
    }

    fn save_int(&mut self, i: i64) {
        if let Ok(b) = u8::try_from(i) {
            self.out.extend([op::BININT1, b]);
        } else if let Ok(h) = u16::try_from(i) {
            self.out.push(op::BININT2);
            self.out.extend(h.to_le_bytes());
        } else if let Ok(w) = i32::try_from(i) {
            self.out.push(op::BININT);
            self.out.extend(w.to_le_bytes());
        } else if self.protocol >= 2 {
            let b = i.to_le_bytes();
            // Minimal two's complement: drop bytes that only repeat the sign.
            let mut n = b.len();
            while n > 1
                && ((b[n - 1] == 0 && b[n - 2] < 0x80) || (b[n - 1] == 0xff && b[n - 2] >= 0x80))
            {
                n -= 1;
            }
            self.out.extend([op::LONG1, n as u8]);
            self.out.extend(&b[..n]);
        } else {
            self.out.push(op::INT);
            self.out.extend(i.to_string().as_bytes());
            self.out.push(b'\n');
        }
    }

    fn save_bigint(&mut self, b: &[u8]) {
        if self.protocol >= 2 {
            match u8::try_from(b.len()) {
                Ok(n) => self.out.extend([op::LONG1, n]),
                Err(_) => {
                    self.out.push(op::LONG4);
                    self.out.extend(len32(b.len()).to_le_bytes());
                }
            }
            self.out.extend(b);
        } else {
            self.out.push(op::LONG);
            self.out.extend(le_to_decimal(b).as_bytes());
            self.out.extend(b"L\n");
        }
    }

    fn save_str8(&mut self, b: &[u8]) {
        if b.len() <= i32::MAX as usize {
            self.save_sized(b, Some(op::SHORT_BINSTRING), op::BINSTRING, op::BINBYTES8);
        } else {
            self.save_sized(b, None, op::BINBYTES8, op::BINBYTES8);
        }
    }

    /// `short` (1-byte length) if it fits, else `long` (4-byte), else `huge` (8-byte).
    fn save_sized(&mut self, b: &[u8], short: impl Into<Option<u8>>, long: u8, huge: u8) {
        match (short.into(), u8::try_from(b.len()), u32::try_from(b.len())) {
            (Some(code), Ok(n), _) => self.out.extend([code, n]),
            (_, _, Ok(n)) => {
                self.out.push(long);
                self.out.extend(n.to_le_bytes());
            }
            _ => {
                self.out.push(huge);
                self.out.extend((b.len() as u64).to_le_bytes());
            }
        }
        self.out.extend(b);
    }

    fn save_global(&mut self, module: &str, name: &str) {
        self.out.push(op::GLOBAL);
        self.out.extend(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend(name.as_bytes());
        self.out.push(b'\n');
    }
}

/// A length for a 4-byte signed length field (`LONG4`); saturates, as no
/// int of 2 GiB exists in practice.
fn len32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Decimal text of a little-endian two's complement int (empty is 0).
pub(super) fn le_to_decimal(b: &[u8]) -> String {
    let neg = b.last().is_some_and(|&x| x & 0x80 != 0);
    let mut mag = b.to_vec();
    if neg {
        negate_le(&mut mag);
    }
    // Magnitude in base 2^32, most significant limb first.
    let mut limbs: Vec<u32> = mag
        .chunks(4)
        .rev()
        .map(|c| {
            let mut a = [0u8; 4];
            a[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(a)
        })
        .collect();
    // Repeatedly divide by 10^9, collecting 9-digit groups, least significant first.
    let mut groups = Vec::new();
    let mut start = 0;
    loop {
        while limbs.get(start) == Some(&0) {
            start += 1;
        }
        if start == limbs.len() {
            break;
        }
        let mut rem = 0u64;
        for l in limbs[start..].iter_mut() {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        groups.push(rem as u32);
    }
    let mut s = String::from(if neg { "-" } else { "" });
    match groups.split_last() {
        None => s.push('0'),
        Some((top, rest)) => {
            s.push_str(&top.to_string());
            for g in rest.iter().rev() {
                s.push_str(&format!("{g:09}"));
            }
        }
    }
    s
}

/// Encode a ZODB object record: class pickle, then state pickle.
pub fn encode_record(class: &Value, state: &Value, protocol: u8) -> Vec<u8> {
    let mut p = Pickler::new(protocol);
    p.dump(class);
    p.dump(state);
    p.finish()
}

#[cfg(test)]
mod tests {
    //! The exact opcodes the encoder picks. Round trips through the decoder
    //! and through Python are in `pickle/tests.rs`.

    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn enc(v: &Value, protocol: u8) -> Vec<u8> {
        let mut p = Pickler::new(protocol);
        p.dump(v);
        p.finish()
    }

    /// The pickle body: without `PROTO` and `STOP`.
    fn body(v: &Value, protocol: u8) -> Vec<u8> {
        let d = enc(v, protocol);
        let start = if protocol >= 2 { 2 } else { 0 };
        assert_eq!(d.last(), Some(&op::STOP));
        d[start..d.len() - 1].to_vec()
    }

    fn int(i: i64) -> Value {
        Value::Int(i)
    }

    #[test]
    fn header_and_protocol_clamp() {
        assert_eq!(enc(&Value::None, 1), b"N.");
        assert_eq!(enc(&Value::None, 2), b"\x80\x02N.");
        assert_eq!(enc(&Value::None, 3), b"\x80\x03N.");
        assert_eq!(Pickler::new(0).protocol(), 1);
        assert_eq!(Pickler::new(9).protocol(), 3);
    }

    #[test]
    fn scalars() {
        assert_eq!(body(&Value::Bool(true), 1), b"I01\n");
        assert_eq!(body(&Value::Bool(false), 1), b"I00\n");
        assert_eq!(body(&Value::Bool(true), 2), b"\x88");
        assert_eq!(body(&Value::Bool(false), 3), b"\x89");
        assert_eq!(body(&int(0), 3), b"K\x00");
        assert_eq!(body(&int(255), 3), b"K\xff");
        assert_eq!(body(&int(256), 3), b"M\x00\x01");
        assert_eq!(body(&int(65536), 3), b"J\x00\x00\x01\x00");
        assert_eq!(body(&int(-1), 3), b"J\xff\xff\xff\xff");
        assert_eq!(body(&int(1 << 31), 2), b"\x8a\x05\x00\x00\x00\x80\x00");
        assert_eq!(
            body(&int(-(1 << 31) - 1), 2),
            b"\x8a\x05\xff\xff\xff\x7f\xff"
        );
        assert_eq!(
            body(&int(i64::MIN), 3),
            b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80"
        );
        assert_eq!(body(&int(1 << 31), 1), b"I2147483648\n");
        assert_eq!(body(&int(i64::MIN), 1), b"I-9223372036854775808\n");
        let big = Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            body(&big, 2),
            b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01"
        );
        assert_eq!(body(&big, 1), b"L18446744073709551616L\n");
        let long4 = Value::BigInt(vec![1; 256]);
        assert_eq!(&body(&long4, 3)[..5], b"\x8b\x00\x01\x00\x00");
        assert_eq!(
            body(&Value::Float(1.5), 1),
            b"G\x3f\xf8\x00\x00\x00\x00\x00\x00"
        );
    }

    #[test]
    fn strings() {
        let b = |n: usize| Bytes::from(vec![b'x'; n]);
        assert_eq!(body(&Value::Str8(b(2)), 3), b"U\x02xx");
        assert_eq!(&body(&Value::Str8(b(256)), 3)[..5], b"T\x00\x01\x00\x00");
        assert_eq!(body(&Value::Bytes(b(2)), 3), b"C\x02xx");
        assert_eq!(&body(&Value::Bytes(b(256)), 3)[..5], b"B\x00\x01\x00\x00");
        // No bytes type before protocol 3: written as a Py2 str.
        assert_eq!(body(&Value::Bytes(b(2)), 2), b"U\x02xx");
        assert_eq!(
            body(&Value::Unicode("\u{e9}".into()), 1),
            b"X\x02\x00\x00\x00\xc3\xa9"
        );
        let global = Value::Global {
            module: "BTrees.LOBTree".into(),
            name: "LOBTree".into(),
        };
        assert_eq!(body(&global, 3), b"cBTrees.LOBTree\nLOBTree\n");
    }

    #[test]
    fn tuples() {
        let t = |n: i64| Value::Tuple((1..=n).map(int).collect());
        assert_eq!(body(&t(0), 1), b")");
        assert_eq!(body(&t(0), 3), b")");
        assert_eq!(body(&t(1), 1), b"(K\x01t");
        assert_eq!(body(&t(1), 2), b"K\x01\x85");
        assert_eq!(body(&t(2), 2), b"K\x01K\x02\x86");
        assert_eq!(body(&t(3), 3), b"K\x01K\x02K\x03\x87");
        assert_eq!(body(&t(4), 3), b"(K\x01K\x02K\x03K\x04t");
    }

    #[test]
    fn lists_and_dicts_in_batches() {
        assert_eq!(body(&Value::List(vec![]), 3), b"]");
        assert_eq!(body(&Value::List(vec![int(1)]), 3), b"]K\x01a");
        assert_eq!(
            body(&Value::List(vec![int(1), int(2)]), 3),
            b"](K\x01K\x02e"
        );
        let count = |d: &[u8], b: u8| d.iter().filter(|&&x| x == b).count();
        // 1001 items: one batch of 1000 and a single APPEND (items are all N).
        let d = body(&Value::List(vec![Value::None; 1001]), 3);
        assert_eq!(
            (
                count(&d, op::MARK),
                count(&d, op::APPENDS),
                count(&d, op::APPEND)
            ),
            (1, 1, 1)
        );
        assert!(d.ends_with(b"eNa"));
        let d = body(&Value::List(vec![Value::None; 2000]), 3);
        assert_eq!((count(&d, op::MARK), count(&d, op::APPENDS)), (2, 2));

        assert_eq!(body(&Value::Dict(vec![]), 3), b"}");
        assert_eq!(
            body(&Value::Dict(vec![(int(1), int(2))]), 3),
            b"}K\x01K\x02s"
        );
        let kv = vec![(Value::None, Value::None); 1002];
        let d = body(&Value::Dict(kv), 3);
        assert_eq!((count(&d, op::MARK), count(&d, op::SETITEMS)), (2, 2));
        assert!(d.starts_with(b"}(NN"));
    }

    #[test]
    fn objects() {
        let g = |n: &str| Value::Global {
            module: "m".into(),
            name: n.into(),
        };
        let pid = Value::PersId(Box::new(Value::Bytes(Bytes::from_static(b"\0"))));
        assert_eq!(body(&pid, 3), b"C\x01\x00Q");
        let reduce = Value::Reduce {
            callable: Box::new(g("f")),
            args: Box::new(Value::Tuple(vec![])),
        };
        assert_eq!(body(&reduce, 1), b"cm\nf\n)R");
        let newobj = Value::NewObj {
            cls: Box::new(g("C")),
            args: Box::new(Value::Tuple(vec![int(1)])),
        };
        assert_eq!(body(&newobj, 2), b"cm\nC\nK\x01\x85\x81");
        assert_eq!(body(&newobj, 1), b"ccopy_reg\n__newobj__\n(cm\nC\nK\x01tR");
        let odd = Value::NewObj {
            cls: Box::new(g("C")),
            args: Box::new(int(1)),
        };
        assert_eq!(body(&odd, 1), b"ccopy_reg\n__newobj__\n(cm\nC\nK\x01tR");
        let build = Value::Build {
            obj: Box::new(newobj),
            state: Box::new(Value::None),
        };
        assert_eq!(body(&build, 3), b"cm\nC\nK\x01\x85\x81Nb");
    }

    #[test]
    fn deep_values_do_not_overflow_the_stack() {
        let mut v = Value::None;
        for _ in 0..100_000 {
            v = Value::List(vec![v]);
        }
        let d = enc(&v, 3);
        assert_eq!(d.len(), 2 + 1 + 100_000 * 2 + 1);
        // Value's own drop is recursive; unwind it iteratively here.
        while let Value::List(mut items) = v {
            v = items.pop().unwrap_or(Value::None);
        }
    }

    proptest! {
        #[test]
        fn decimal_matches_i128(x in any::<i128>()) {
            prop_assert_eq!(le_to_decimal(&x.to_le_bytes()), x.to_string());
        }
    }

    #[test]
    fn decimal_edges() {
        assert_eq!(le_to_decimal(&[]), "0");
        assert_eq!(le_to_decimal(&[0]), "0");
        assert_eq!(le_to_decimal(&[0xff]), "-1");
        assert_eq!(le_to_decimal(&[0x80]), "-128");
        let mut two_pow_200 = vec![0u8; 25];
        two_pow_200.push(1);
        assert_eq!(
            le_to_decimal(&two_pow_200),
            "1606938044258990275541962092341162602522202993782792835301376"
        );
    }
}

//! Fuzz the pickle decoder: any input must decode or fail cleanly, never
//! panic, overflow the stack or allocate without bound.
//!
//! The input is decoded the way ZODB records are (up to three pickles
//! through one unpickler, sharing the memo). Every value that decodes is
//! encoded again under protocols 1 to 3 and decoded back: that must succeed,
//! and under protocol 3 give the same value (compared through `Debug`, so
//! that NaN equals NaN) unless it holds a global name with a newline, which
//! `STACK_GLOBAL` can carry but `GLOBAL` cannot. Under protocol 1 a value at
//! the decoder's depth limit may come back too deep (`NewObj` is written one
//! level deeper there), which is the one error allowed.
//!
//! The record fast paths (`bytes_record`, `ref_bucket`) must agree with the
//! general decoder whenever they answer.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zodb::pickle::{
    bytes_record, decode_record, ref_bucket, PickleErrorKind, Pickler, Unpickler, Value,
};
use zodb::record::{decode_ref, decode_ref_oid};
use zodb::Oid;

fn encode(v: &Value, protocol: u8) -> Bytes {
    let mut p = Pickler::new(protocol);
    p.dump(v);
    Bytes::from(p.finish())
}

/// False if `v` holds something the encoder cannot write back faithfully.
fn reencodable(v: &Value) -> bool {
    match v {
        Value::Global { module, name } => !module.contains('\n') && !name.contains('\n'),
        Value::Tuple(items) | Value::List(items) => items.iter().all(reencodable),
        Value::Dict(kv) => kv.iter().all(|(k, v)| reencodable(k) && reencodable(v)),
        Value::PersId(x) => reencodable(x),
        Value::Reduce {
            callable: a,
            args: b,
        }
        | Value::NewObj { cls: a, args: b }
        | Value::Build { obj: a, state: b } => reencodable(a) && reencodable(b),
        _ => true,
    }
}

fn check_reencode(v: &Value) {
    for protocol in 1..=3 {
        let data = encode(v, protocol);
        let mut up = Unpickler::new(data.clone());
        let again = match up.load() {
            Ok(again) => again,
            // Protocol 1 writes NewObj as copy_reg.__newobj__(cls, *args),
            // one level deeper: a value at the depth limit may then exceed it.
            Err(e) if protocol == 1 && matches!(e.kind, PickleErrorKind::Limit(_)) => continue,
            Err(e) => panic!("protocol {protocol} re-encoding of {v:?} does not decode: {e}"),
        };
        assert_eq!(up.position(), data.len());
        if protocol == 3 && reencodable(v) {
            assert_eq!(format!("{again:?}"), format!("{v:?}"));
        }
    }
}

/// The fast paths answer only what the general decoder says.
fn check_fast_paths(data: &Bytes) {
    let general = decode_record(data);
    if let Some(r) = bytes_record(data) {
        let (class, state) = general.clone().expect("bytes_record took a bad record");
        assert_eq!(class.as_global(), Some((r.module, r.name)));
        assert_eq!(state, r.state);
    }
    if let Some(b) = ref_bucket(data) {
        let (class, state) = general.expect("ref_bucket took a bad record");
        assert_eq!(class.as_global(), Some(b.class));
        let (items, next) = match state.as_tuple().expect("state tuple") {
            [items] => (items, None),
            [items, next] => (items, Some(next)),
            _ => panic!("state is not a 1- or 2-tuple"),
        };
        let items = items.as_tuple().expect("items tuple");
        assert_eq!(items.len(), 2 * b.keys.len());
        for (i, pair) in items.chunks(2).enumerate() {
            assert_eq!(pair[0], Value::Int(b.keys[i]));
            assert_eq!(decode_ref_oid(Oid(1), &pair[1]).ok(), Some(Oid(b.refs[i].oid)));
            assert_eq!(pair[1], b.refs[i].to_value());
        }
        let next = next.map(|n| decode_ref(Oid(1), n).expect("next ref").oid);
        assert_eq!(next, b.next.map(Oid));
    }
}

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    check_fast_paths(&data);
    let mut up = Unpickler::new(data.clone());
    for _ in 0..3 {
        match up.load() {
            Ok(v) => {
                assert!(up.position() <= data.len());
                check_reencode(&v);
            }
            Err(e) => {
                assert!(e.pos <= data.len());
                break;
            }
        }
    }
    if let Ok((class, state)) = decode_record(&data) {
        check_reencode(&class);
        check_reencode(&state);
    }
});

//! Object records: class + state, and persistent references.
//!
//! A ZODB data record is two pickles (zodb-formats §3): the class metadata
//! and the object's state. This module turns them into a class path and a
//! state [`Value`], and decodes/encodes the persistent references the state
//! holds.

use crate::error::{Error, Result};
use crate::pickle::{self, Value};
use crate::storage::Storage;
use crate::types::{Oid, Tid};
use bytes::Bytes;

/// A decoded object record.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The object.
    pub oid: Oid,
    /// The tid of the revision loaded (`_p_serial`).
    pub serial: Tid,
    /// Class path, `module.name` (e.g. `BTrees.LOBTree.LOBTree`).
    pub class: String,
    /// The object's state (what `__getstate__` returned).
    pub state: Value,
}

/// A persistent reference found in an object's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The referenced object.
    pub oid: Oid,
    /// Its class path, when the reference carries it (`(oid, klass)` form).
    pub class: Option<String>,
}

impl Ref {
    /// A reference of the common `(oid, klass)` form.
    pub fn new(oid: Oid, class: &str) -> Ref {
        Ref {
            oid,
            class: Some(class.to_owned()),
        }
    }

    /// The pickled form, as ZODB 5 writes it: `(oid bytes, GLOBAL klass)`
    /// wrapped in a persistent id, or the bare oid when the class is unknown.
    pub fn to_value(&self) -> Value {
        let oid = Value::Bytes(Bytes::copy_from_slice(&self.oid.to_bytes()));
        match &self.class {
            None => Value::PersId(Box::new(oid)),
            Some(c) => Value::PersId(Box::new(Value::Tuple(vec![oid, global(c)]))),
        }
    }
}

/// `GLOBAL` value for a class path `module.name`.
pub fn global(class: &str) -> Value {
    let (module, name) = class.rsplit_once('.').unwrap_or(("", class));
    Value::Global {
        module: module.to_owned(),
        name: name.to_owned(),
    }
}

fn oid_of(v: &Value) -> Option<Oid> {
    match v {
        Value::Str8(b) | Value::Bytes(b) => Oid::from_slice(b),
        _ => v.as_bytes().and_then(|b| Oid::from_slice(&b)),
    }
}

/// Class path of a class value: a `GLOBAL`, or a `(module, name)` tuple.
fn class_of(v: &Value) -> Option<String> {
    match v {
        Value::Global { module, name } => Some(format!("{module}.{name}")),
        Value::Tuple(t) if t.len() == 2 => {
            let m = t[0].as_bytes()?;
            let n = t[1].as_bytes()?;
            Some(format!(
                "{}.{}",
                String::from_utf8_lossy(&m),
                String::from_utf8_lossy(&n)
            ))
        }
        _ => None,
    }
}

/// Decode the class metadata pickle (all forms of zodb-formats §3.1).
pub fn decode_class(meta: &Value) -> Option<String> {
    if let Some(c) = class_of(meta) {
        return Some(c);
    }
    match meta {
        Value::Tuple(t) if t.len() == 2 => class_of(&t[0]),
        _ => None,
    }
}

/// Decode a persistent reference value (a [`Value::PersId`]).
///
/// Accepts the plain `oid` and `(oid, klass)` forms; the list forms (weak and
/// cross-database references) are rejected with an error naming the form,
/// since nothing WCFS follows uses them.
pub fn decode_ref(owner: Oid, v: &Value) -> Result<Ref> {
    let Value::PersId(pid) = v else {
        return Err(Error::bad_state(
            owner,
            format!("expected a persistent reference, got {}", v.kind()),
        ));
    };
    if let Some(oid) = oid_of(pid) {
        return Ok(Ref { oid, class: None });
    }
    match &**pid {
        Value::Tuple(t) if t.len() == 2 => {
            let oid = oid_of(&t[0])
                .ok_or_else(|| Error::bad_state(owner, format!("reference: bad oid {:?}", t[0])))?;
            let class = class_of(&t[1]).ok_or_else(|| {
                Error::bad_state(owner, format!("reference: bad class {:?}", t[1]))
            })?;
            Ok(Ref {
                oid,
                class: Some(class),
            })
        }
        Value::List(l) => {
            let form = match l.first().and_then(|f| f.as_bytes()) {
                Some(b) if &b[..] == b"w" => "weak reference",
                Some(b) if &b[..] == b"n" || &b[..] == b"m" => "cross-database reference",
                _ => "legacy weak reference",
            };
            Err(Error::bad_state(
                owner,
                format!("unsupported persistent reference form: {form}"),
            ))
        }
        other => Err(Error::bad_state(
            owner,
            format!("bad persistent reference {other:?}"),
        )),
    }
}

/// The oid of a persistent reference: [`decode_ref`] without making the
/// class path (one allocation less per reference, for the 512 chunk
/// references of every ZBlk1). Accepts and refuses exactly what
/// [`decode_ref`] does.
pub fn decode_ref_oid(owner: Oid, v: &Value) -> Result<Oid> {
    if let Value::PersId(pid) = v {
        if let Some(oid) = oid_of(pid) {
            return Ok(oid);
        }
        if let Value::Tuple(t) = &**pid {
            if let [o, Value::Global { .. }] = &t[..] {
                if let Some(oid) = oid_of(o) {
                    return Ok(oid);
                }
            }
        }
    }
    decode_ref(owner, v).map(|r| r.oid)
}

/// Whether `module` + `.` + `name` is the class path `class`, without
/// making the string.
pub fn class_is(module: &str, name: &str, class: &str) -> bool {
    class.len() == module.len() + 1 + name.len()
        && class.starts_with(module)
        && class[module.len()..].starts_with('.')
        && class.ends_with(name)
}

/// Decode a record's bytes into class path and state.
///
/// Records of a bare `GLOBAL` class and a byte-string state (ZData, ZBlk0)
/// take [`pickle::bytes_record`], which gives the same result without the
/// general decoder's allocations; everything else, and anything that path
/// does not recognise, goes through [`decode_general`].
pub fn decode(oid: Oid, serial: Tid, data: &Bytes) -> Result<Object> {
    if let Some(r) = pickle::bytes_record(data) {
        let mut class = String::with_capacity(r.module.len() + 1 + r.name.len());
        class.push_str(r.module);
        class.push('.');
        class.push_str(r.name);
        return Ok(Object {
            oid,
            serial,
            class,
            state: r.state,
        });
    }
    decode_general(oid, serial, data)
}

/// [`decode`] through the general pickle decoder only (what the fast path
/// is tested against).
pub fn decode_general(oid: Oid, serial: Tid, data: &Bytes) -> Result<Object> {
    let mut u = pickle::Unpickler::new(data.clone());
    let meta = u.load().map_err(|source| Error::Pickle { oid, source })?;
    let state = u.load().map_err(|source| Error::Pickle { oid, source })?;
    let class = decode_class(&meta)
        .ok_or_else(|| Error::bad_state(oid, format!("bad class metadata {meta:?}")))?;
    Ok(Object {
        oid,
        serial,
        class,
        state,
    })
}

/// Encode a record (class pickle + state pickle) the way Python 3 ZODB does:
/// protocol 3, class as a bare `GLOBAL`.
pub fn encode(class: &str, state: &Value) -> Vec<u8> {
    pickle::encode_record(&global(class), state, 3)
}

/// Load object `oid` as of `at` and decode it.
pub fn load(stor: &dyn Storage, oid: Oid, at: Tid) -> Result<Object> {
    let l = stor.load(oid, at)?;
    decode(oid, l.serial, &l.data)
}

/// Every persistent reference inside `v`, in pickle order.
pub fn refs_in(owner: Oid, v: &Value, out: &mut Vec<Ref>) {
    match v {
        Value::PersId(_) => {
            if let Ok(r) = decode_ref(owner, v) {
                out.push(r)
            }
        }
        Value::Tuple(items) | Value::List(items) => {
            items.iter().for_each(|i| refs_in(owner, i, out));
        }
        Value::Dict(kv) => kv.iter().for_each(|(k, v)| {
            refs_in(owner, k, out);
            refs_in(owner, v, out);
        }),
        Value::Reduce {
            callable: a,
            args: b,
        }
        | Value::NewObj { cls: a, args: b }
        | Value::Build { obj: a, state: b } => {
            refs_in(owner, a, out);
            refs_in(owner, b, out);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: &[u8]) -> Value {
        Value::Bytes(Bytes::copy_from_slice(x))
    }

    #[test]
    fn class_forms() {
        let g = global("wendelin.bigfile.file_zodb.ZBigFile");
        assert_eq!(
            decode_class(&g).as_deref(),
            Some("wendelin.bigfile.file_zodb.ZBigFile")
        );
        // (klass, newargs)
        let t = Value::Tuple(vec![g.clone(), Value::None]);
        assert_eq!(
            decode_class(&t).as_deref(),
            Some("wendelin.bigfile.file_zodb.ZBigFile")
        );
        // ((module, name), None)
        let mn = Value::Tuple(vec![
            Value::Tuple(vec![
                Value::Unicode("BTrees.LOBTree".into()),
                Value::Str8(Bytes::from_static(b"LOBTree")),
            ]),
            Value::None,
        ]);
        assert_eq!(decode_class(&mn).as_deref(), Some("BTrees.LOBTree.LOBTree"));
        assert_eq!(decode_class(&Value::Int(1)), None);
    }

    #[test]
    fn ref_forms() {
        let o = Oid(0x47).to_bytes();
        let r = decode_ref(Oid(1), &Value::PersId(Box::new(b(&o)))).unwrap();
        assert_eq!(
            r,
            Ref {
                oid: Oid(0x47),
                class: None
            }
        );
        let r = Ref::new(Oid(0x47), "BTrees.LOBTree.LOBTree");
        assert_eq!(decode_ref(Oid(1), &r.to_value()).unwrap(), r);
        // Py2 str oid
        let v = Value::PersId(Box::new(Value::Tuple(vec![
            Value::Str8(Bytes::copy_from_slice(&o)),
            global("BTrees.LOBTree.LOBTree"),
        ])));
        assert_eq!(decode_ref(Oid(1), &v).unwrap(), r);
        for bad in [
            Value::PersId(Box::new(Value::List(vec![
                b(b"w"),
                Value::Tuple(vec![b(&o)]),
            ]))),
            Value::PersId(Box::new(Value::List(vec![b(b"m"), Value::None]))),
            Value::PersId(Box::new(b(b"short"))),
            Value::Int(3),
        ] {
            assert!(
                matches!(decode_ref(Oid(1), &bad), Err(Error::BadState { .. })),
                "{bad:?}"
            );
        }
    }
}

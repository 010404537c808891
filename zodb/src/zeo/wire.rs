//! The ZEO 5 wire format: sized frames, the handshake string, and messages
//! `(msgid, flags, method, args)` pickled with protocol 3 (the `Z` encoding).
//!
//! Spec: `zeo-protocol.md` §1–§3. Everything here is pure (bytes in, values
//! out) except [`read_frame`] / [`write_frame`], so it is unit-tested without
//! a server.

use crate::pickle::{Pickler, Unpickler, Value};
use crate::types::{Oid, Tid};
use bytes::Bytes;
use std::io::{self, Read, Write};

/// The largest frame we accept (a ZEO reply carries one object record; 1 GiB
/// is far beyond any ZODB object and keeps a bogus length from allocating
/// the machine away).
pub(super) const MAX_FRAME: usize = 1 << 30;

/// The largest first frame (the server's protocol string, like `Z5`). A peer
/// that is not a ZEO server typically fails here.
pub(super) const MAX_HANDSHAKE: usize = 64;

/// `flags` bit: a one-way (async) message.
pub(super) const FLAG_ASYNC: i64 = 1;
/// `flags` bit: the reply carries an exception (ZEO 5).
pub(super) const FLAG_EXCEPTION: i64 = 2;

/// What went wrong speaking ZEO, beyond plain I/O errors. Reaches callers
/// inside [`crate::Error::Io`] (as the `io::Error`'s payload, so
/// `std::error::Error::source` leads to it); [`ZeoError::find`] digs it out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZeoError {
    /// The peer did not open with a ZEO protocol string.
    #[error("not a ZEO server: {0}")]
    NotZeo(String),
    /// The peer speaks ZEO, but a version or encoding we do not.
    #[error("unsupported ZEO protocol: {0}")]
    Unsupported(String),
    /// A message we cannot make sense of.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server raised an exception for our call.
    #[error("server raised {class}{args}")]
    Remote {
        /// The exception's class path, e.g. `ZODB.POSException.POSKeyError`.
        class: String,
        /// The exception's arguments (or `__dict__`), as Python-ish text.
        args: String,
    },
    /// The connection is gone (the server closed it, or a previous error
    /// broke it). The storage reconnects in the background.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// No connection to the server for as long as a call may wait
    /// ([`super::ZeoOptions::wait`]): the server is down or unreachable, or
    /// refuses us (`last` says why).
    #[error("no connection to the ZEO server within {waited:?}: {last}")]
    Unavailable {
        /// How long the call waited.
        waited: std::time::Duration,
        /// The last failure of the connection or of reconnecting.
        last: Box<ZeoError>,
    },
}

impl ZeoError {
    /// The [`ZeoError`] inside `err`, if it came from the ZEO driver.
    pub fn find(err: &crate::Error) -> Option<&ZeoError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(z) = e.downcast_ref::<ZeoError>() {
                return Some(z);
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if let Some(z) = io.get_ref().and_then(|i| i.downcast_ref::<ZeoError>()) {
                    return Some(z);
                }
            }
            cur = e.source();
        }
        None
    }

    /// The `io::ErrorKind` this error travels under.
    pub(super) fn io_kind(&self) -> io::ErrorKind {
        match self {
            ZeoError::NotZeo(_) | ZeoError::Protocol(_) => io::ErrorKind::InvalidData,
            ZeoError::Unsupported(_) => io::ErrorKind::Unsupported,
            ZeoError::Remote { .. } => io::ErrorKind::Other,
            ZeoError::Disconnected(_) => io::ErrorKind::ConnectionAborted,
            ZeoError::Unavailable { .. } => io::ErrorKind::TimedOut,
        }
    }
}

/// A remote exception as a reply carries it: class path and arguments.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Remote {
    pub(super) class: String,
    pub(super) args: Value,
}

impl Remote {
    pub(super) fn is(&self, class: &str) -> bool {
        self.class == class
    }

    pub(super) fn into_error(self) -> ZeoError {
        ZeoError::Remote {
            class: self.class,
            args: repr(&self.args),
        }
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Msg {
    /// Our call id for replies; 0 for server async calls; -1 heartbeat.
    pub(super) msgid: i64,
    pub(super) flags: i64,
    pub(super) method: String,
    pub(super) args: Value,
}

/// Read one frame. `Ok(None)` on a clean end of stream before a frame.
pub(super) fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            ZeoError::Protocol(format!("frame of {n} bytes (limit {max})")),
        ));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(Some(Bytes::from(buf)))
}

/// Write one frame (length prefix and body in one `write_all`).
pub(super) fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend(len.to_be_bytes());
    buf.extend(body);
    w.write_all(&buf)?;
    w.flush()
}

/// Check the server's protocol string and choose ours (spec §2).
pub(super) fn handshake_reply(server: &[u8]) -> Result<&'static [u8], ZeoError> {
    let shown = String::from_utf8_lossy(server);
    let (letter, version) = match server.split_first() {
        Some((l, v)) => (*l, v),
        None => return Err(ZeoError::NotZeo("empty protocol string".into())),
    };
    if !matches!(letter, b'Z' | b'M')
        || version.is_empty()
        || !version.iter().all(|b| b.is_ascii_digit())
    {
        return Err(ZeoError::NotZeo(format!(
            "first message {shown:?} is not a ZEO protocol string"
        )));
    }
    if letter == b'M' {
        return Err(ZeoError::Unsupported(format!(
            "server announced {shown:?} (msgpack encoding); only the pickle encoding (Z5) is \
             implemented: run the server without msgpack"
        )));
    }
    // ZEO's client takes min(server, own) comparing the byte strings; ours is "Z5".
    if version < &b"5"[..] {
        return Err(ZeoError::Unsupported(format!(
            "server speaks {shown:?}; only ZEO 5 (Z5) is implemented"
        )));
    }
    Ok(b"Z5")
}

/// Encode a message.
pub(super) fn encode(msgid: i64, flags: Value, method: &str, args: Value) -> Vec<u8> {
    let mut p = Pickler::new(3);
    p.dump(&Value::Tuple(vec![
        Value::Int(msgid),
        flags,
        Value::Unicode(method.to_owned()),
        args,
    ]));
    p.finish()
}

/// Encode a call (`flags = False`: a reply is expected; `True`: one-way).
pub(super) fn encode_call(msgid: i64, oneway: bool, method: &str, args: Vec<Value>) -> Vec<u8> {
    encode(msgid, Value::Bool(oneway), method, Value::Tuple(args))
}

/// Decode a message.
pub(super) fn decode(frame: Bytes) -> Result<Msg, ZeoError> {
    let mut u = Unpickler::new(frame);
    let v = u
        .load()
        .map_err(|e| ZeoError::Protocol(format!("undecodable message: {e}")))?;
    let Value::Tuple(items) = v else {
        return Err(ZeoError::Protocol(format!(
            "message is a {}, not a 4-tuple",
            v.kind()
        )));
    };
    let Ok::<[Value; 4], _>([msgid, flags, method, args]) = items.try_into() else {
        return Err(ZeoError::Protocol("message is not a 4-tuple".into()));
    };
    // msgids we see are ours (ints), 0 (async) or -1; anything else
    // (a tuple, as ZEO's own client uses for loadBefore) cannot be a reply to us.
    let msgid = msgid
        .as_i64()
        .ok_or_else(|| ZeoError::Protocol(format!("msgid is a {}", msgid.kind())))?;
    let flags = flags
        .as_i64()
        .ok_or_else(|| ZeoError::Protocol(format!("flags is a {}", flags.kind())))?;
    let method = text(&method)
        .ok_or_else(|| ZeoError::Protocol(format!("method is a {}", method.kind())))?;
    Ok(Msg {
        msgid,
        flags,
        method,
        args,
    })
}

/// The args of a reply with the exception flag: `(class_path, args_or_dict)`.
pub(super) fn remote(args: Value) -> Result<Remote, ZeoError> {
    let bad = |v: &Value| ZeoError::Protocol(format!("exception reply: {}", repr(v)));
    let Value::Tuple(items) = &args else {
        return Err(bad(&args));
    };
    match items.as_slice() {
        [class, exc_args] => Ok(Remote {
            class: text(class).ok_or_else(|| bad(&args))?,
            args: exc_args.clone(),
        }),
        _ => Err(bad(&args)),
    }
}

/// A str from a Python 3 (`Unicode`) or Python 2 (`Str8`/bytes) peer.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::Unicode(s) => Some(s.clone()),
        Value::Str8(b) | Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        _ => None,
    }
}

/// An 8-byte id (oid or tid) as the server sends it.
pub(super) fn id8(v: &Value, what: &str) -> Result<u64, ZeoError> {
    v.as_bytes()
        .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| ZeoError::Protocol(format!("{what}: want 8 bytes, got {}", repr(v))))
}

/// A tid from the wire.
pub(super) fn tid(v: &Value, what: &str) -> Result<Tid, ZeoError> {
    id8(v, what).map(Tid)
}

/// An oid from the wire.
pub(super) fn oid(v: &Value, what: &str) -> Result<Oid, ZeoError> {
    id8(v, what).map(Oid)
}

/// Bytes (data, user, description) from the wire.
pub(super) fn bytes(v: &Value, what: &str) -> Result<Bytes, ZeoError> {
    match v {
        Value::Str8(b) | Value::Bytes(b) => Ok(b.clone()),
        _ => v
            .as_bytes()
            .ok_or_else(|| ZeoError::Protocol(format!("{what}: want bytes, got {}", v.kind()))),
    }
}

/// The items of a tuple or list.
pub(super) fn seq<'a>(v: &'a Value, what: &str) -> Result<&'a [Value], ZeoError> {
    match v {
        Value::Tuple(t) | Value::List(t) => Ok(t),
        _ => Err(ZeoError::Protocol(format!(
            "{what}: want a sequence, got {}",
            v.kind()
        ))),
    }
}

/// An oid or tid for the wire: `SHORT_BINBYTES` (spec §3: never `str`).
pub(super) fn wire_id(x: u64) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&x.to_be_bytes()))
}

/// Short Python-ish text of a value, for error messages.
pub(super) fn repr(v: &Value) -> String {
    let mut s = String::new();
    repr_into(v, &mut s, 0);
    s
}

fn repr_into(v: &Value, s: &mut String, depth: usize) {
    use std::fmt::Write as _;
    if depth > 8 || s.len() > 400 {
        s.push('…');
        return;
    }
    let list = |s: &mut String, items: &[Value], open: &str, close: &str| {
        s.push_str(open);
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            repr_into(x, s, depth + 1);
        }
        if open == "(" && items.len() == 1 {
            s.push(',');
        }
        s.push_str(close);
    };
    match v {
        Value::None => s.push_str("None"),
        Value::Bool(b) => s.push_str(if *b { "True" } else { "False" }),
        Value::Int(i) => {
            let _ = write!(s, "{i}");
        }
        Value::Float(f) => {
            let _ = write!(s, "{f}");
        }
        Value::Unicode(t) => {
            let _ = write!(s, "{t:?}");
        }
        Value::Str8(b) | Value::Bytes(b) => {
            let _ = write!(s, "b{:?}", String::from_utf8_lossy(&b[..b.len().min(64)]));
        }
        Value::Tuple(t) => list(s, t, "(", ")"),
        Value::List(t) => list(s, t, "[", "]"),
        Value::Dict(kv) => {
            s.push('{');
            for (i, (k, x)) in kv.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                repr_into(k, s, depth + 1);
                s.push_str(": ");
                repr_into(x, s, depth + 1);
            }
            s.push('}');
        }
        other => s.push_str(other.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"Z5").unwrap();
        write_frame(&mut buf, b"").unwrap();
        assert_eq!(&buf[..6], b"\0\0\0\x02Z5");
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 10).unwrap().unwrap(), &b"Z5"[..]);
        assert_eq!(read_frame(&mut r, 10).unwrap().unwrap(), &b""[..]);
        assert!(read_frame(&mut r, 10).unwrap().is_none());
        // truncated length, truncated body, too long
        assert!(read_frame(&mut &b"\0\0"[..], 10).is_err());
        assert!(read_frame(&mut &b"\0\0\0\x05ab"[..], 10).is_err());
        assert!(read_frame(&mut &b"HTTP/1.1 400"[..], MAX_HANDSHAKE).is_err());
    }

    #[test]
    fn handshake() {
        assert_eq!(handshake_reply(b"Z5").unwrap(), b"Z5");
        assert_eq!(handshake_reply(b"Z51").unwrap(), b"Z5");
        assert!(matches!(
            handshake_reply(b"M5"),
            Err(ZeoError::Unsupported(_))
        ));
        assert!(matches!(
            handshake_reply(b"Z4"),
            Err(ZeoError::Unsupported(_))
        ));
        assert!(matches!(
            handshake_reply(b"Z3101"),
            Err(ZeoError::Unsupported(_))
        ));
        for bad in [&b""[..], b"Z", b"SSH-2.0", b"Zx", b"5"] {
            assert!(
                matches!(handshake_reply(bad), Err(ZeoError::NotZeo(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn messages_roundtrip() {
        let m = encode_call(7, false, "loadBefore", vec![wire_id(1), wire_id(2)]);
        let d = decode(Bytes::from(m)).unwrap();
        assert_eq!(d.msgid, 7);
        assert_eq!(d.flags, 0);
        assert_eq!(d.method, "loadBefore");
        let a = seq(&d.args, "args").unwrap();
        assert_eq!(oid(&a[0], "oid").unwrap(), Oid(1));
        assert_eq!(tid(&a[1], "tid").unwrap(), Tid(2));
        // Python 2 style: SHORT_BINSTRING ids, str method
        let mut p = Pickler::new(2);
        p.dump(&Value::Tuple(vec![
            Value::Int(0),
            Value::Bool(true),
            Value::Str8(Bytes::from_static(b"invalidateTransaction")),
            Value::Tuple(vec![
                Value::Str8(Bytes::from_static(b"\0\0\0\0\0\0\0\x09")),
                Value::List(vec![]),
            ]),
        ]));
        let d = decode(Bytes::from(p.finish())).unwrap();
        assert_eq!(d.flags, FLAG_ASYNC);
        assert_eq!(d.method, "invalidateTransaction");
        assert_eq!(tid(&seq(&d.args, "a").unwrap()[0], "tid").unwrap(), Tid(9));
    }

    #[test]
    fn bad_messages() {
        for v in [
            Value::None,
            Value::Tuple(vec![Value::Int(1)]),
            Value::Tuple(vec![
                Value::None,
                Value::Int(0),
                Value::Unicode("x".into()),
                Value::None,
            ]),
            Value::Tuple(vec![
                Value::Int(1),
                Value::Int(0),
                Value::Int(3),
                Value::None,
            ]),
        ] {
            let mut p = Pickler::new(3);
            p.dump(&v);
            assert!(
                matches!(decode(Bytes::from(p.finish())), Err(ZeoError::Protocol(_))),
                "{v:?}"
            );
        }
        assert!(matches!(
            decode(Bytes::from_static(b"garbage")),
            Err(ZeoError::Protocol(_))
        ));
        let r = remote(Value::Tuple(vec![
            Value::Unicode("ZODB.POSException.POSKeyError".into()),
            Value::Tuple(vec![wire_id(5)]),
        ]))
        .unwrap();
        assert!(r.is("ZODB.POSException.POSKeyError"));
        assert!(remote(Value::None).is_err());
    }

    #[test]
    fn find_in_error() {
        let e = crate::Error::io(
            "h:1",
            "register",
            io::Error::other(ZeoError::Protocol("x".into())),
        );
        assert_eq!(ZeoError::find(&e), Some(&ZeoError::Protocol("x".into())));
        assert_eq!(ZeoError::find(&crate::Error::Closed), None);
    }
}

//! Iterating over committed transactions with ZEO's `iterator_*` calls.
//!
//! `iterator_start(lo, hi)` gives an iterator id; each `iterator_next(iid)`
//! returns `(tid, status, user, description, extension)` or `None` at the
//! end (the server then forgets the id). The oids of the transaction just
//! returned come from `iterator_record_start(iid, tid)` and
//! `iterator_record_next(riid)` (`(oid, serial, data, data_txn)` each, until
//! `None`): the server only keeps the last transaction of an iterator, so we
//! read its records before asking for the next one. The records carry their
//! data, so iterating costs as much traffic as the data it spans.

use super::conn::Conn;
use super::wire::{self, wire_id, ZeoError};
use crate::error::Result;
use crate::pickle::{Pickler, Value};
use crate::storage::TxnInfo;
use crate::types::Tid;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;

/// The transactions `lo <= tid <= hi` of a ZEO storage; see
/// [`crate::Storage::iterate`].
#[derive(Debug)]
pub struct ZeoTxnIter {
    conn: Arc<Conn>,
    /// The server's iterator id while it is still open there.
    iid: Option<Value>,
}

impl ZeoTxnIter {
    pub(super) fn start(conn: Arc<Conn>, lo: Tid, hi: Tid) -> Result<ZeoTxnIter> {
        let reply = conn.call("iterator_start", vec![wire_id(lo.0), wire_id(hi.0)])?;
        let iid = reply.map_err(|r| conn.err("iterator_start", r.into_error()))?;
        Ok(ZeoTxnIter {
            conn,
            iid: Some(iid),
        })
    }

    /// The tid of the first transaction in `[lo, hi]`, without its records
    /// (`iterator_start`, one `iterator_next`, `iterator_gc`).
    pub(super) fn first_tid(conn: &Arc<Conn>, lo: Tid, hi: Tid) -> Result<Option<Tid>> {
        let reply = conn.call("iterator_start", vec![wire_id(lo.0), wire_id(hi.0)])?;
        let iid = reply.map_err(|r| conn.err("iterator_start", r.into_error()))?;
        let v = conn.call("iterator_next", vec![iid.clone()]);
        let v = match v {
            Ok(Ok(v)) => v,
            Ok(Err(r)) => return Err(conn.err("iterator_next", r.into_error())),
            Err(e) => return Err(e),
        };
        if v.is_none() {
            return Ok(None); // the server dropped the iterator
        }
        let _ = conn.call_oneway("iterator_gc", vec![Value::List(vec![iid])]);
        let t = wire::seq(&v, "iterator_next").map_err(|e| conn.err("iterator_next", e))?;
        let first = t.first().ok_or_else(|| {
            conn.err(
                "iterator_next",
                ZeoError::Protocol("empty iterator_next reply".into()),
            )
        })?;
        let tid = wire::tid(first, "tid").map_err(|e| conn.err("iterator_next", e))?;
        Ok(Some(tid))
    }

    fn fetch(&mut self, iid: Value) -> Result<Option<TxnInfo>> {
        let conn = &self.conn;
        let bad = |op, e| conn.err(op, e);
        let v = conn
            .call("iterator_next", vec![iid.clone()])?
            .map_err(|r| bad("iterator_next", r.into_error()))?;
        if v.is_none() {
            return Ok(None); // the server dropped the iterator
        }
        // Still open on the server from here on.
        self.iid = Some(iid.clone());
        let t = wire::seq(&v, "iterator_next").map_err(|e| bad("iterator_next", e))?;
        let [tid, status, user, description, extension] = t else {
            return Err(bad(
                "iterator_next",
                ZeoError::Protocol(format!("iterator_next reply has {} items", t.len())),
            ));
        };
        let p = |e| bad("iterator_next", e);
        let tid = wire::tid(tid, "tid").map_err(p)?;
        let status = match wire::bytes(status, "status") {
            Ok(b) if b.len() == 1 => b[0],
            _ => {
                return Err(p(ZeoError::Protocol(format!(
                    "transaction status {}",
                    wire::repr(status)
                ))))
            }
        };
        let user = wire::bytes(user, "user").map_err(p)?;
        let description = wire::bytes(description, "description").map_err(p)?;
        let extension = match extension {
            Value::Dict(kv) if kv.is_empty() => Bytes::new(),
            Value::Dict(_) => {
                let mut pk = Pickler::new(3);
                pk.dump(extension);
                Bytes::from(pk.finish())
            }
            other => wire::bytes(other, "extension").map_err(p)?,
        };

        let riid = conn
            .call("iterator_record_start", vec![iid, wire_id(tid.0)])?
            .map_err(|r| bad("iterator_record_start", r.into_error()))?;
        let mut seen = HashSet::new();
        let mut oids = Vec::new();
        loop {
            let r = conn
                .call("iterator_record_next", vec![riid.clone()])?
                .map_err(|r| bad("iterator_record_next", r.into_error()))?;
            if r.is_none() {
                break;
            }
            let rec = wire::seq(&r, "iterator_record_next")
                .map_err(|e| bad("iterator_record_next", e))?;
            let first = rec.first().ok_or_else(|| {
                bad(
                    "iterator_record_next",
                    ZeoError::Protocol("empty record".into()),
                )
            })?;
            let oid = wire::oid(first, "record oid").map_err(|e| bad("iterator_record_next", e))?;
            if seen.insert(oid) {
                oids.push(oid);
            }
        }
        Ok(Some(TxnInfo {
            tid,
            status,
            user,
            description,
            extension,
            oids,
        }))
    }
}

impl Iterator for ZeoTxnIter {
    type Item = Result<TxnInfo>;

    fn next(&mut self) -> Option<Result<TxnInfo>> {
        // Taken while a call is in flight: an error leaves the iterator done
        // (and the server's iterator for iterator_gc on drop, see below).
        let iid = self.iid.take()?;
        match self.fetch(iid.clone()) {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                self.iid = None;
                let _ = self
                    .conn
                    .call_oneway("iterator_gc", vec![Value::List(vec![iid])]);
                Some(Err(e))
            }
        }
    }
}

impl Drop for ZeoTxnIter {
    fn drop(&mut self) {
        if let Some(iid) = self.iid.take() {
            // Stopped early: let the server free it. A broken connection
            // frees it anyway.
            let _ = self
                .conn
                .call_oneway("iterator_gc", vec![Value::List(vec![iid])]);
        }
    }
}

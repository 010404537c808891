//! Committing through a ZEO server: the write half of the protocol, for
//! test and stress writers ([`crate::zwrite::ZWriter::open_zeo`]).
//!
//! A [`ZeoWriter`] has two connections: one registered read-write that
//! commits, and a read-only [`ZeoStorage`] that loads (the committing
//! connection gets no invalidation of its own commits, the reading one
//! does, so after a commit the reader's head catches up with it through
//! `sync`).
//!
//! A commit (ZEO 5's two-phase commit, as `ClientStorage` drives it):
//! `tpc_begin(id, user, description, extension, None, ' ')`, then per
//! record the one-way `storea(oid, old serial, data, id)` or
//! `deleteObject(oid, old serial, id)`, then `vote(id)` (a list; dicts in
//! it are conflicts) and `tpc_finish(id)`, whose reply is the new tid. On
//! any error after `tpc_begin`: `tpc_abort(id)`. The old serial is what a
//! load at the head says (zero for an oid from `new_oids` that was never
//! committed): the server rejects the store with a `ConflictError` if
//! someone else changed the object since.
//!
//! The writer does not reconnect: a lost connection fails the commit (a
//! test writer should see it). A commit whose `tpc_finish` succeeded but
//! whose reader could not catch up with it (its `sync` failed) returns
//! that error although the transaction is committed.

use super::conn::Conn;
use super::wire::{self, wire_id, ZeoError};
use super::ZeoStorage;
use crate::error::{Error, Result};
use crate::fs1::{NewData, NewTxn};
use crate::pickle::Value;
use crate::storage::{Loaded, Storage, TxnInfo, Watcher};
use crate::types::{Oid, Tid};
use bytes::Bytes;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// How many oids one `new_oids` call asks for (the server's maximum).
const OID_BATCH: i64 = 100;

/// Commits to a storage of a ZEO server.
#[derive(Debug)]
pub struct ZeoWriter {
    conn: Conn,
    reader: ZeoStorage,
    /// Oids from `new_oids` not handed out yet.
    oids: VecDeque<Oid>,
    /// Oids handed out and not committed yet (their old serial is zero).
    fresh: HashSet<Oid>,
    /// Why `new_oid` could not get oids: the next commit fails with it.
    oid_err: Option<ZeoError>,
    /// Placeholder oids handed out after a failure (never committed).
    bogus: u64,
    /// Transaction ids for `tpc_begin` (any value the server can compare).
    next_txn: i64,
    /// The oldest state a [`ZeoWriter::snapshot`] showed since the last
    /// commit: old serials are taken there. Protected by: itself.
    base: Mutex<Option<Tid>>,
}

/// The database as of one tid, for a writer to compute its next commit
/// from: loads go to the server, `last_tid` stays at that tid.
#[derive(Debug, Clone)]
pub struct ZeoSnapshot {
    stor: ZeoStorage,
    at: Tid,
}

impl Storage for ZeoSnapshot {
    fn url(&self) -> &str {
        self.stor.url()
    }
    fn last_tid(&self) -> Result<Tid> {
        Ok(self.at)
    }
    fn sync(&self) -> Result<Tid> {
        self.stor.sync()
    }
    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded> {
        self.stor.load(oid, at)
    }
    fn iterate(
        &self,
        lo: Tid,
        hi: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + Send + '_>> {
        self.stor.iterate(lo, hi)
    }
    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>> {
        self.stor.watch(after)
    }
}

impl ZeoWriter {
    /// Connect to storage `storage` of the ZEO server at `addr` twice: to
    /// commit (registered read-write) and to load.
    pub fn open(addr: &str, storage: &str) -> Result<ZeoWriter> {
        let reader = ZeoStorage::open(addr, storage)?;
        let (conn, _) = Conn::open(addr, storage, false)?;
        Ok(ZeoWriter {
            conn,
            reader,
            oids: VecDeque::new(),
            fresh: HashSet::new(),
            oid_err: None,
            bogus: 0,
            next_txn: 1,
            base: Mutex::new(None),
        })
    }

    /// The current state (after a `sync`, so that commits by others that
    /// the server already has are in it) to compute a commit from. The
    /// next commit's stores name the serials of this state (of the oldest
    /// such snapshot since the last commit): if another client changed one
    /// of those objects since, the server refuses the commit with a
    /// conflict instead of losing that change.
    pub fn snapshot(&self) -> ZeoSnapshot {
        if let Err(e) = self.reader.sync() {
            tracing::warn!("sync before a ZEO commit: {e}");
        }
        let at = self.last_tid();
        let mut base = self.base.lock().unwrap_or_else(|e| e.into_inner());
        if base.is_none_or(|b| at < b) {
            *base = Some(at);
        }
        ZeoSnapshot {
            stor: self.reader.clone(),
            at,
        }
    }

    /// The reading side: loads see every commit made through this writer.
    pub fn storage(&self) -> &ZeoStorage {
        &self.reader
    }

    /// The latest committed tid the reader knows.
    pub fn last_tid(&self) -> Tid {
        self.reader.last_tid().unwrap_or(Tid::ZERO)
    }

    /// A new oid from the server (`new_oids`, a batch at a time). If the
    /// server cannot give any, an oid that is never committed: the next
    /// [`ZeoWriter::commit`] fails with the reason.
    pub fn new_oid(&mut self) -> Oid {
        if self.oids.is_empty() && self.oid_err.is_none() {
            match self.fetch_oids() {
                Ok(v) => self.oids.extend(v),
                Err(e) => self.oid_err = Some(e),
            }
        }
        match self.oids.pop_front() {
            Some(o) => {
                self.fresh.insert(o);
                o
            }
            None => {
                self.bogus += 1;
                Oid(u64::MAX - self.bogus)
            }
        }
    }

    fn fetch_oids(&self) -> std::result::Result<Vec<Oid>, ZeoError> {
        let v = self
            .conn
            .call("new_oids", vec![Value::Int(OID_BATCH)])
            .map_err(|e| {
                ZeoError::find(&e)
                    .cloned()
                    .unwrap_or_else(|| ZeoError::Disconnected(e.to_string()))
            })?
            .map_err(|r| r.into_error())?;
        let list = wire::seq(&v, "new_oids reply")?;
        let oids = list
            .iter()
            .map(|o| wire::oid(o, "new oid"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if oids.is_empty() {
            return Err(ZeoError::Protocol("new_oids returned no oid".into()));
        }
        Ok(oids)
    }

    /// The serial `oid` has as of `base` (zero if it did not exist).
    fn old_serial(&self, oid: Oid, base: Tid) -> Result<Tid> {
        if self.fresh.contains(&oid) {
            return Ok(Tid::ZERO);
        }
        match self.reader.load(oid, base) {
            Ok(l) => Ok(l.serial),
            Err(Error::NoSuchObject { .. } | Error::NotYet { .. }) => Ok(Tid::ZERO),
            Err(Error::Deleted { deleted_at, .. }) => Ok(deleted_at),
            Err(e) => Err(e),
        }
    }

    /// Commit `txn` (its `tid` must be `None`: the server picks it; undo
    /// records are not supported). Returns the new tid once the reader saw
    /// it.
    pub fn commit(&mut self, txn: NewTxn) -> Result<Tid> {
        let err = |op, e| self.conn.err(op, e);
        if let Some(e) = self.oid_err.take() {
            return Err(err("new_oids", e));
        }
        if txn.tid.is_some() {
            return Err(Error::Unsupported(
                "a commit through ZEO cannot choose its tid".into(),
            ));
        }
        let base = self
            .base
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| self.last_tid());
        let mut stores = Vec::with_capacity(txn.records.len());
        for (oid, d) in &txn.records {
            let serial = self.old_serial(*oid, base)?;
            let (method, args) = match d {
                NewData::Data(data) => (
                    "storea",
                    vec![
                        wire_id(oid.0),
                        wire_id(serial.0),
                        Value::Bytes(Bytes::from(data.clone())),
                    ],
                ),
                NewData::Delete => ("deleteObject", vec![wire_id(oid.0), wire_id(serial.0)]),
                NewData::Undo(_) => {
                    return Err(Error::Unsupported(
                        "undo records through ZEO are not supported".into(),
                    ))
                }
            };
            stores.push((method, args));
        }
        let id = Value::Int(self.next_txn);
        self.next_txn += 1;
        let ext = if txn.extension.is_empty() {
            Value::Dict(vec![])
        } else {
            Value::Bytes(Bytes::from(txn.extension.clone()))
        };
        self.conn
            .call(
                "tpc_begin",
                vec![
                    id.clone(),
                    Value::Bytes(Bytes::from(txn.user.clone())),
                    Value::Bytes(Bytes::from(txn.description.clone())),
                    ext,
                    Value::None,
                    Value::Unicode(" ".into()),
                ],
            )?
            .map_err(|r| self.conn.err("tpc_begin", r.into_error()))?;
        let tid = match self.commit_begun(&id, stores) {
            Ok(t) => t,
            Err(e) => {
                // the server may still hold our transaction: free it
                let _ = self.conn.call("tpc_abort", vec![id]);
                return Err(e);
            }
        };
        for (oid, _) in &txn.records {
            self.fresh.remove(oid);
        }
        // the reader's head reaches our tid once its invalidation arrived
        let head = self.reader.sync()?;
        if head < tid {
            return Err(err(
                "tpc_finish",
                ZeoError::Protocol(format!("committed {tid}, but the server's head is {head}")),
            ));
        }
        tracing::debug!(%tid, records = txn.records.len(), "committed through ZEO");
        Ok(tid)
    }

    /// Stores, vote and finish of the transaction `id` already begun.
    fn commit_begun(&self, id: &Value, stores: Vec<(&'static str, Vec<Value>)>) -> Result<Tid> {
        for (method, mut args) in stores {
            args.push(id.clone());
            self.conn.call_oneway(method, args)?;
        }
        let voted = self
            .conn
            .call("vote", vec![id.clone()])?
            .map_err(|r| self.conn.err("vote", r.into_error()))?;
        if let Value::List(v) | Value::Tuple(v) = &voted {
            if v.iter().any(|x| matches!(x, Value::Dict(_))) {
                return Err(self.conn.err(
                    "vote",
                    ZeoError::Remote {
                        class: "ZODB.POSException.ConflictError".into(),
                        args: wire::repr(&voted),
                    },
                ));
            }
        }
        let t = self
            .conn
            .call("tpc_finish", vec![id.clone()])?
            .map_err(|r| self.conn.err("tpc_finish", r.into_error()))?;
        wire::tid(&t, "tpc_finish reply").map_err(|e| self.conn.err("tpc_finish", e))
    }
}

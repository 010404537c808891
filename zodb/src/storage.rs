//! The storage interface every driver implements.
//!
//! A storage is a sequence of committed transactions. Database state `at`
//! is the state right after transaction `at` committed (or the latest
//! transaction with tid <= `at`). All methods take `&self` and may be called
//! from any number of threads at once.

use crate::error::Result;
use crate::types::{Oid, Tid};
use bytes::Bytes;
use std::time::Duration;

/// An object's state as loaded from a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The object record: class pickle followed by state pickle.
    pub data: Bytes,
    /// The tid of the transaction that last changed the object as of the
    /// asked state (ZODB `_p_serial`).
    pub serial: Tid,
}

/// One committed transaction, as iteration and watching report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnInfo {
    /// The transaction id.
    pub tid: Tid,
    /// `' '` (committed) or `'p'` (committed, packed).
    pub status: u8,
    /// Transaction user name (raw bytes).
    pub user: Bytes,
    /// Transaction description (raw bytes).
    pub description: Bytes,
    /// Transaction extension (a pickled dict, or empty).
    pub extension: Bytes,
    /// Objects the transaction changed, in record order, each once.
    pub oids: Vec<Oid>,
}

/// A read-only view of a ZODB database.
///
/// Object safe and `Send + Sync`: the server holds it as `Arc<dyn Storage>`.
pub trait Storage: Send + Sync {
    /// The URL this storage was opened with.
    fn url(&self) -> &str;

    /// The tid of the latest committed transaction we know of (the head).
    /// [`Tid::ZERO`] for an empty database.
    fn last_tid(&self) -> Result<Tid>;

    /// Pick up transactions committed by others since the last call, and
    /// return the new head. Loads and iteration see a transaction only after
    /// a `sync` (or a watcher) found it.
    fn sync(&self) -> Result<Tid>;

    /// The object's state as of database state `at`: its latest revision
    /// with serial <= `at`.
    ///
    /// Errors: [`Error::NoSuchObject`](crate::Error::NoSuchObject) if the
    /// database never had the object, [`Error::NotYet`](crate::Error::NotYet)
    /// if it was created after `at`, [`Error::Deleted`](crate::Error::Deleted)
    /// if it was deleted as of `at`.
    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded>;

    /// The committed transactions with `lo <= tid <= hi`, in tid order.
    fn iterate(
        &self,
        lo: Tid,
        hi: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + Send + '_>>;

    /// A watcher that yields, in order and each exactly once, every
    /// transaction committed after `after`, including those already in the
    /// database and those committed later by other processes.
    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>>;
}

/// A shared storage is a storage (so that code generic over `S: Storage`
/// takes an `Arc<dyn Storage>`, e.g. a writer backend that may be either
/// FileStorage or ZEO).
impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    fn url(&self) -> &str {
        (**self).url()
    }
    fn last_tid(&self) -> Result<Tid> {
        (**self).last_tid()
    }
    fn sync(&self) -> Result<Tid> {
        (**self).sync()
    }
    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded> {
        (**self).load(oid, at)
    }
    fn iterate(
        &self,
        lo: Tid,
        hi: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + Send + '_>> {
        (**self).iterate(lo, hi)
    }
    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>> {
        (**self).watch(after)
    }
}

/// Reports newly committed transactions; see [`Storage::watch`].
pub trait Watcher: Send {
    /// The next transaction after the last one returned.
    ///
    /// Blocks until one is committed, or until `timeout` passes (then
    /// returns `Ok(None)`); `None` means wait without limit.
    fn next(&mut self, timeout: Option<Duration>) -> Result<Option<TxnInfo>>;
}

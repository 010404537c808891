//! ZEO client storage, read-only: a [`Storage`] served by a ZEO 5 server.
//!
//! WCFS can serve a database that lives behind a ZEO server (`zeo://`
//! zurls) instead of a local `Data.fs`. This driver speaks the read-only
//! subset of the ZEO 5 protocol (spec `zeo-protocol.md`): it loads object
//! revisions with `loadBefore`, learns about commits from the server's
//! `invalidateTransaction` pushes, and lists past transactions with the
//! `iterator_*` calls.
//!
//! # Organization
//!
//! 1. **Open** ([`ZeoStorage::open`], `conn.rs`): connect (TCP `host:port`
//!    or a UNIX socket path), read the server's protocol string, answer
//!    `Z5` (a msgpack `M` server is refused with [`Error::Unsupported`]),
//!    start the reader thread, `register(storage, read_only=True)`; its
//!    reply is the head `at₀`.
//! 2. **Calls** (`Conn::call`): a fresh msgid, the frame written whole under
//!    the writer lock, then the caller blocks on its own channel. The reader
//!    thread matches `.reply` messages to channels by msgid, so any number of
//!    threads may have calls in flight.
//! 3. **Invalidations**: `invalidateTransaction(tid, oids)` pushed by the
//!    server advance the head (strictly increasing, else the connection is
//!    broken as a protocol error) and go to every watcher's queue. Those
//!    received before the register reply are kept and replayed if
//!    `tid > at₀`.
//! 4. **Load** (`load(oid, at)` = `loadBefore(oid, at+1)`): a result is the
//!    revision; `None` means no revision `<= at` ([`Error::NotYet`]);
//!    `POSKeyError` means either "never existed" or "deleted as of `at`".
//!    Those error paths ask `history(oid)` to tell them apart and to find
//!    `created` / `deleted_at`, as FileStorage reports them.
//! 5. **Sync**: `lastTransaction`, then wait until its invalidation arrived,
//!    so that a watcher sees every transaction up to the returned head.
//! 6. **Iterate** (`iter.rs`): `iterator_start(lo, hi)`, then per
//!    transaction `iterator_next` and `iterator_record_start/next` for its
//!    oids.
//! 7. **Watch** (`watch.rs`): subscribe to the invalidation queue at head
//!    `H`, replay `(after, H]` with iterate, then follow the queue.
//!
//! # Differences from FileStorage
//!
//! - A watcher reads every transaction with iterate (one round trip per
//!   commit): the invalidation push carries only tid and the oids stored,
//!   not those deleted with `deleteObject`.
//! - Iteration's `extension` is the server's extension dict re-pickled
//!   (protocol 3), not the bytes stored in the database: it decodes to the
//!   same value, but need not be byte-equal.
//! - `NotYet`/`Deleted`/`NoSuchObject` cost a `history` call (a rare path).
//! - Loads see the server's current state, also past our head, and
//!   `last_tid` advances as invalidations arrive, without a `sync`.
//!
//! # Connection loss (`link.rs`)
//!
//! A supervisor thread replaces a broken connection: reconnect with
//! backoff (50 ms doubling to 2 s), handshake, register again. Meanwhile:
//!
//! - the head does not advance (`last_tid` stays; watchers report nothing);
//! - loads, `sync` and the start of an iteration wait for a connection up
//!   to [`ZeoOptions::wait`] (default 10 s, [`WAIT_ENV`] for zurls), then
//!   fail with [`ZeoError::Unavailable`] (an [`Error::Io`], EIO for the
//!   FUSE layer). A load the connection broke under is retried on the next
//!   one within the same bound (loads at a tid are idempotent). Nothing is
//!   served from anywhere but the server: no wrong data.
//! - a server that comes back with a head older than ours is refused (a
//!   different database) and retried: calls keep failing.
//! - watchers resubscribe on the new connection at its head `H'` and
//!   replay `(last reported, H']` with iterate before following its
//!   invalidations: every transaction committed during the outage is
//!   reported once and in order before anything newer. If that iteration
//!   fails on a working connection (a server that cannot iterate) the
//!   watcher returns the error: the [`Storage`] interface has no
//!   "everything may have changed" event, so the follower stops there
//!   (head/at frozen, never wrong).
//! - an iterator is bound to its connection and fails if it breaks.
//!
//! # Not done
//!
//! - msgpack (`M5`), SSL, ZEO 4 servers, blobs.
//!
//! # Concurrency
//!
//! | who | takes | for how long |
//! |---|---|---|
//! | a caller | `link::Inner::st` | to get the current connection |
//! | supervisor | `link::Inner::st` | to swap the connection |
//! | a caller | `Shared::st` | to insert its channel |
//! | a caller | `Shared::writer` | to write one frame |
//! | reader thread | `Shared::st`, then `WatchQ::q` | to dispatch one message |
//! | watcher | `WatchQ::q` | to pop or wait |
//!
//! Lock order: `link::Inner::st` > `Shared::st` > `WatchQ::q`;
//! `Shared::writer` is taken alone.
//!
//! # Errors
//!
//! Connection and protocol failures are [`Error::Io`] with the server
//! address as `path` and a [`ZeoError`] inside the `io::Error`
//! ([`ZeoError::find`] gets it back): not a ZEO server, a protocol error, an
//! exception the server raised (a wrong storage name is the server's
//! `ValueError`), a lost connection. An unsupported encoding or version is
//! [`Error::Unsupported`].

mod conn;
mod iter;
mod link;
mod watch;
mod wire;
mod write;

pub use iter::ZeoTxnIter;
pub use watch::ZeoWatcher;
pub use wire::ZeoError;
pub use write::{ZeoSnapshot, ZeoWriter};

use crate::error::{Error, Result};
use crate::pickle::Value;
use crate::storage::{Loaded, Storage, TxnInfo, Watcher};
use crate::types::{Oid, Tid};
use conn::Conn;
use link::Link;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::wire_id;

/// How long [`Storage::sync`] waits for the invalidation of the tid
/// `lastTransaction` reported.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of [`ZeoOptions::wait`].
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The environment variable that sets [`ZeoOptions::wait`] (seconds, may be
/// fractional) for storages opened by [`crate::zurl::open`].
pub const WAIT_ENV: &str = "WCFS_ZEO_WAIT";

/// The class of the exception FileStorage raises for a missing object or a
/// deletion record.
const POS_KEY_ERROR: &str = "ZODB.POSException.POSKeyError";

/// How many revisions `history` may return on the error paths of `load`.
const HISTORY_MAX: i64 = 1 << 30;

/// How a [`ZeoStorage`] connects and reconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZeoOptions {
    /// How long a call (load, sync, iterate start) waits for a connection
    /// while the server is unreachable before it fails with
    /// [`ZeoError::Unavailable`]. Default [`DEFAULT_WAIT`].
    pub wait: Duration,
    /// The first pause between reconnect attempts (doubling after each
    /// failure). Default 50 ms.
    pub backoff_min: Duration,
    /// The longest pause between reconnect attempts. Default 2 s.
    pub backoff_max: Duration,
    /// Register read-only (the default; the reading driver). False for a
    /// writer connection (`zwrite` through ZEO).
    pub read_only: bool,
}

impl Default for ZeoOptions {
    fn default() -> Self {
        ZeoOptions {
            wait: DEFAULT_WAIT,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            read_only: true,
        }
    }
}

impl ZeoOptions {
    /// The defaults, with `wait` from [`WAIT_ENV`] if it is set to a number
    /// of seconds (an unparsable value is ignored with a warning).
    pub fn from_env() -> ZeoOptions {
        let mut o = ZeoOptions::default();
        if let Ok(v) = std::env::var(WAIT_ENV) {
            match v.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => o.wait = Duration::from_secs_f64(s),
                _ => tracing::warn!("{WAIT_ENV}={v:?} is not a number of seconds: ignored"),
            }
        }
        o
    }
}

/// A storage of a ZEO server, opened read-only.
///
/// One connection at a time, replaced when it breaks; cheap to share
/// (`Arc`, or clones, which share the connection), all methods take `&self`. Dropping the last handle (storage and
/// watchers hold it) closes the connection and stops reconnecting.
#[derive(Debug, Clone)]
pub struct ZeoStorage {
    link: Arc<Link>,
    url: String,
}

impl ZeoStorage {
    /// Connect to the ZEO server at `addr` (`host:port`, `[v6]:port`, or a
    /// UNIX socket path) and register for its storage `storage_name`
    /// (ZEO's default is `"1"`) read-only, with default options.
    pub fn open(addr: &str, storage_name: &str) -> Result<ZeoStorage> {
        Self::open_with(addr, storage_name, ZeoOptions::default())
    }

    /// As [`ZeoStorage::open`], with options. The first connection must
    /// succeed (its errors are returned: a wrong address, a peer that is not
    /// a ZEO server, a wrong storage name); later losses are reconnected.
    pub fn open_with(addr: &str, storage_name: &str, opts: ZeoOptions) -> Result<ZeoStorage> {
        let (link, at0) = Link::open(addr, storage_name, opts)?;
        tracing::debug!(addr, storage = storage_name, head = %at0, "opened ZEO storage");
        let mut url = format!("zeo://{addr}");
        if storage_name != "1" {
            url.push_str("?storage=");
            url.push_str(storage_name);
        }
        Ok(ZeoStorage {
            link: Arc::new(link),
            url,
        })
    }

    /// How many connections this storage made so far: 1, plus one per
    /// reconnect.
    pub fn connections(&self) -> u64 {
        self.link.generation()
    }

    /// A watcher with the concrete type (see [`Storage::watch`]).
    pub fn watcher(&self, after: Tid) -> Result<ZeoWatcher> {
        ZeoWatcher::new(self.link.clone(), after)
    }

    /// Iterate with the concrete type (see [`Storage::iterate`]); the
    /// iterator holds the connection it started on, and fails if that
    /// connection breaks.
    pub fn txn_iter(&self, lo: Tid, hi: Tid) -> Result<ZeoTxnIter> {
        self.link.with_conn("iterator_start", |c, _| {
            ZeoTxnIter::start(c.clone(), lo, hi)
        })
    }

    /// The revisions of `oid`, newest first (`history`); `None` on
    /// `POSKeyError` (the server has no such object).
    fn revisions(&self, conn: &Conn, deadline: Instant, oid: Oid) -> Result<Option<Vec<Tid>>> {
        let reply = conn.call_until(
            "history",
            vec![wire_id(oid.0), Value::Int(HISTORY_MAX)],
            deadline,
        )?;
        let v = match reply {
            Ok(v) => v,
            Err(r) if r.is(POS_KEY_ERROR) => return Ok(None),
            Err(r) => return Err(conn.err("history", r.into_error())),
        };
        let bad = |e| conn.err("history", e);
        let mut tids = Vec::new();
        for d in wire::seq(&v, "history").map_err(bad)? {
            let Value::Dict(kv) = d else {
                return Err(bad(ZeoError::Protocol(format!(
                    "history entry is a {}",
                    d.kind()
                ))));
            };
            let t = kv
                .iter()
                .find(|(k, _)| wire::text(k).as_deref() == Some("tid"))
                .ok_or_else(|| bad(ZeoError::Protocol("history entry without tid".into())))?;
            tids.push(wire::tid(&t.1, "history tid").map_err(bad)?);
        }
        Ok(Some(tids))
    }

    /// The error for "no revision of `oid` visible at `at`".
    fn no_object(&self, conn: &Conn, deadline: Instant, oid: Oid, at: Tid) -> Result<Error> {
        let Some(revs) = self.revisions(conn, deadline, oid)? else {
            return Ok(Error::NoSuchObject { oid });
        };
        // newest first: the first one <= at is what `at` sees (a deletion
        // record when loadBefore said POSKeyError)
        Ok(match (revs.iter().find(|t| **t <= at), revs.last()) {
            (Some(&deleted_at), _) => Error::Deleted {
                oid,
                at,
                deleted_at,
            },
            (None, Some(&created)) => Error::NotYet { oid, at, created },
            (None, None) => Error::NoSuchObject { oid },
        })
    }

    /// One `loadBefore(oid, at+1)` on `conn`.
    fn load_on(&self, conn: &Conn, deadline: Instant, oid: Oid, at: Tid) -> Result<Loaded> {
        let before = Tid(at.0.saturating_add(1));
        let reply = conn.call_until(
            "loadBefore",
            vec![wire_id(oid.0), wire_id(before.0)],
            deadline,
        )?;
        let bad = |e| conn.err("loadBefore", e);
        match reply {
            Ok(Value::None) => Err(self.no_object(conn, deadline, oid, at)?),
            Ok(v) => {
                let t = wire::seq(&v, "loadBefore reply").map_err(bad)?;
                let [data, serial, _next] = t else {
                    return Err(bad(ZeoError::Protocol(format!(
                        "loadBefore reply has {} items",
                        t.len()
                    ))));
                };
                let data = wire::bytes(data, "loadBefore data").map_err(bad)?;
                let serial = wire::tid(serial, "loadBefore serial").map_err(bad)?;
                if serial > at {
                    return Err(bad(ZeoError::Protocol(format!(
                        "loadBefore({oid}, {before}) returned serial {serial}"
                    ))));
                }
                Ok(Loaded { data, serial })
            }
            Err(r) if r.is(POS_KEY_ERROR) => Err(self.no_object(conn, deadline, oid, at)?),
            Err(r) => Err(bad(r.into_error())),
        }
    }
}

impl Storage for ZeoStorage {
    fn url(&self) -> &str {
        &self.url
    }

    fn last_tid(&self) -> Result<Tid> {
        Ok(self.link.head())
    }

    fn sync(&self) -> Result<Tid> {
        self.link.with_conn("lastTransaction", |c, deadline| {
            let reply = c.call_until("lastTransaction", vec![], deadline)?;
            let v = reply.map_err(|r| c.err("lastTransaction", r.into_error()))?;
            let t =
                wire::tid(&v, "lastTransaction reply").map_err(|e| c.err("lastTransaction", e))?;
            c.wait_head(t, SYNC_TIMEOUT)
        })
    }

    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded> {
        self.link.with_conn("loadBefore", |c, deadline| {
            self.load_on(c, deadline, oid, at)
        })
    }

    fn iterate(
        &self,
        lo: Tid,
        hi: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + Send + '_>> {
        Ok(Box::new(self.txn_iter(lo, hi)?))
    }

    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>> {
        Ok(Box::new(self.watcher(after)?))
    }
}

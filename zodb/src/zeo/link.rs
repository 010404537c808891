//! The reconnecting link to a ZEO server: one [`Conn`] at a time, replaced
//! by a fresh one (with backoff) when it breaks.
//!
//! A supervisor thread waits for the current connection to break, then
//! tries `Conn::open` again and again, the pause doubling from
//! [`ZeoOptions::backoff_min`] to [`ZeoOptions::backoff_max`]. Callers get
//! the current connection with [`Link::conn`], which waits (up to a
//! deadline) while there is none: so a load during an outage either gets an
//! answer from the server once it is back, or fails with
//! [`ZeoError::Unavailable`] at its deadline, never with anything made up.
//!
//! Two guarantees are enforced here, the others by the watcher:
//!
//! - a new connection whose head (the `register` reply) is older than the
//!   head we already knew, or that has no transaction with that head's tid
//!   (`iterator_start(head, head)`), is refused: that server serves another
//!   database (or a truncated one), and answering from it could give wrong
//!   data. It is retried like a failed connect, and logged.
//! - the head ([`Link::head`]) never goes back and does not move while
//!   disconnected.
//!
//! # Locks
//!
//! `Inner::st` is held briefly, never across I/O or `Conn::open`; it is
//! taken before any lock of a [`Conn`] (`Conn::head` is called under it),
//! never after.

use super::conn::Conn;
use super::iter::ZeoTxnIter;
use super::wire::ZeoError;
use super::ZeoOptions;
use crate::error::{Error, Result};
use crate::types::Tid;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The state the supervisor and callers share. Protected by `Inner::st`.
#[derive(Debug)]
struct LinkSt {
    /// The connection in use; `None` while reconnecting.
    conn: Option<Arc<Conn>>,
    /// Why the last connection (or attempt) failed.
    last_err: Option<ZeoError>,
    /// The head as of the last connection that broke (the current one's
    /// head is `conn.head()`, never below this).
    head: Tid,
    /// How many connections were made (the first is 1).
    generation: u64,
    /// Set by `Link`'s drop: the supervisor exits, waiters fail.
    closed: bool,
}

#[derive(Debug)]
struct Inner {
    addr: String,
    storage: String,
    opts: ZeoOptions,
    st: Mutex<LinkSt>,
    /// Signalled when a connection is made or the link closes.
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent at each step.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `ZeoError` an open failure carries, or one made from its text.
fn zeo_error(e: &Error) -> ZeoError {
    ZeoError::find(e)
        .cloned()
        .unwrap_or_else(|| ZeoError::Disconnected(e.to_string()))
}

/// Check that the server has transaction `tid` (the last one we saw
/// before the connection broke): a server that answers for another
/// database must not serve our loads. `Ok` if it does (or `tid` is zero),
/// an error saying why not. (Only the transaction header is fetched, not
/// its records.)
fn has_txn(c: &Arc<Conn>, tid: Tid) -> std::result::Result<(), ZeoError> {
    if tid == Tid::ZERO {
        return Ok(());
    }
    match ZeoTxnIter::first_tid(c, tid, tid) {
        Ok(Some(t)) if t == tid => Ok(()),
        Err(e) => Err(zeo_error(&e)),
        _ => Err(ZeoError::Protocol(format!(
            "the server has no transaction {tid}, which it had committed: not the same database"
        ))),
    }
}

/// A reconnecting connection to one storage of a ZEO server.
///
/// Dropping it stops the supervisor and breaks the current connection.
#[derive(Debug)]
pub(super) struct Link {
    inner: Arc<Inner>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Link {
    /// Connect (once: the first connection's errors are the caller's, so
    /// that a wrong address or storage name is reported, not retried), then
    /// keep reconnecting in the background.
    pub(super) fn open(addr: &str, storage: &str, opts: ZeoOptions) -> Result<(Link, Tid)> {
        let (conn, at0) = Conn::open(addr, storage, opts.read_only)?;
        let inner = Arc::new(Inner {
            addr: addr.to_owned(),
            storage: storage.to_owned(),
            opts,
            st: Mutex::new(LinkSt {
                conn: Some(Arc::new(conn)),
                last_err: None,
                head: at0,
                generation: 1,
                closed: false,
            }),
            cv: Condvar::new(),
        });
        let i2 = inner.clone();
        let sup = std::thread::Builder::new()
            .name("zeo-link".into())
            .spawn(move || supervise(&i2))
            .map_err(|e| Error::io(addr, "spawn supervisor", e))?;
        Ok((
            Link {
                inner,
                supervisor: Mutex::new(Some(sup)),
            },
            at0,
        ))
    }

    /// The error for a failure of `op`.
    pub(super) fn err(&self, op: &'static str, e: ZeoError) -> Error {
        let kind = e.io_kind();
        Error::io(&self.inner.addr, op, io::Error::new(kind, e))
    }

    /// The last committed tid we know of: the current connection's head,
    /// or, while disconnected, the last one's.
    pub(super) fn head(&self) -> Tid {
        let st = lock(&self.inner.st);
        match &st.conn {
            Some(c) => c.head().max(st.head),
            None => st.head,
        }
    }

    /// How many connections were made so far (1 until the first reconnect).
    pub(super) fn generation(&self) -> u64 {
        lock(&self.inner.st).generation
    }

    /// True once the link is closed (its storage dropped).
    pub(super) fn is_closed(&self) -> bool {
        lock(&self.inner.st).closed
    }

    /// A working connection, waiting for one until `deadline` (`None`:
    /// without limit). At the deadline: [`ZeoError::Unavailable`] with the
    /// last failure.
    pub(super) fn conn(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<Arc<Conn>, ZeoError> {
        let start = Instant::now();
        let mut st = lock(&self.inner.st);
        loop {
            if st.closed {
                return Err(ZeoError::Disconnected("storage closed".into()));
            }
            if let Some(c) = &st.conn {
                if c.broken().is_none() {
                    return Ok(c.clone());
                }
            }
            let now = Instant::now();
            let wait = match deadline {
                Some(d) if now >= d => {
                    let last = st
                        .conn
                        .as_ref()
                        .and_then(|c| c.broken())
                        .or_else(|| st.last_err.clone())
                        .unwrap_or_else(|| ZeoError::Disconnected("connection lost".into()));
                    return Err(ZeoError::Unavailable {
                        waited: now - start,
                        last: Box::new(last),
                    });
                }
                Some(d) => d - now,
                // re-check now and then: a broken connection is noticed by
                // the supervisor, which signals only once it has a new one
                None => Duration::from_secs(1),
            };
            st = self
                .inner
                .cv
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Run `f` on a working connection; if the connection breaks under it,
    /// run it again on the next one, until [`ZeoOptions::wait`] from now.
    /// `f` gets the deadline to bound its own calls by. For idempotent
    /// reads only.
    pub(super) fn with_conn<T>(
        &self,
        op: &'static str,
        mut f: impl FnMut(&Arc<Conn>, Instant) -> Result<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.inner.opts.wait;
        loop {
            let c = self.conn(Some(deadline)).map_err(|e| self.err(op, e))?;
            match f(&c, deadline) {
                Err(e)
                    if c.broken().is_some()
                        && Instant::now() < deadline
                        && matches!(ZeoError::find(&e), Some(ZeoError::Disconnected(_))) =>
                {
                    tracing::debug!(addr = %self.inner.addr, op, "connection lost during the call: retrying");
                }
                r => return r,
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let conn = {
            let mut st = lock(&self.inner.st);
            st.closed = true;
            st.conn.take()
        };
        if let Some(c) = conn {
            // wakes the supervisor (waiting for it to break) and all callers
            c.close(ZeoError::Disconnected("storage closed".into()));
        }
        self.inner.cv.notify_all();
        if let Some(t) = lock(&self.supervisor).take() {
            let _ = t.join();
        }
    }
}

/// The supervisor: wait for the connection to break, reconnect with
/// backoff, until the link closes.
fn supervise(inner: &Inner) {
    let opts = &inner.opts;
    let mut backoff = opts.backoff_min;
    loop {
        let cur = {
            let st = lock(&inner.st);
            if st.closed {
                return;
            }
            st.conn.clone()
        };
        if let Some(c) = cur {
            let why = c.wait_broken();
            let mut st = lock(&inner.st);
            if st.closed {
                return;
            }
            st.head = st.head.max(c.head());
            tracing::warn!(addr = %inner.addr, error = %why, head = %st.head,
                "ZEO connection lost: reconnecting");
            st.conn = None;
            st.last_err = Some(why);
            backoff = opts.backoff_min;
            continue;
        }
        let failed = match Conn::open(&inner.addr, &inner.storage, opts.read_only) {
            Ok((c, at0)) => {
                let st = lock(&inner.st);
                let head = st.head;
                drop(st);
                let c = Arc::new(c);
                let same = if at0 < head {
                    Err(ZeoError::Protocol(format!(
                        "the server's last transaction {at0} is before {head} that it had \
                         committed: not the same database"
                    )))
                } else {
                    has_txn(&c, head)
                };
                let mut st = lock(&inner.st);
                if let Err(why) = same {
                    drop(st);
                    tracing::error!(addr = %inner.addr, error = %why, "ZEO server refused");
                    c.close(why.clone());
                    why
                } else if st.closed {
                    drop(st);
                    c.close(ZeoError::Disconnected("storage closed".into()));
                    return;
                } else {
                    st.generation += 1;
                    tracing::info!(addr = %inner.addr, head = %at0, was = %st.head,
                        generation = st.generation, "ZEO connection re-established");
                    st.conn = Some(c);
                    st.last_err = None;
                    drop(st);
                    inner.cv.notify_all();
                    continue;
                }
            }
            Err(e) => zeo_error(&e),
        };
        tracing::debug!(addr = %inner.addr, error = %failed, ?backoff, "ZEO reconnect failed");
        let mut st = lock(&inner.st);
        st.last_err = Some(failed);
        let (st, _) = inner
            .cv
            .wait_timeout_while(st, backoff, |s| !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        if st.closed {
            return;
        }
        drop(st);
        backoff = (backoff * 2).min(opts.backoff_max);
    }
}

//! Following commits through the server's invalidation pushes, across
//! reconnects.
//!
//! A [`ZeoWatcher`] subscribes to a connection's invalidation stream at head
//! `H` (atomically with the reader: every invalidation after `H` lands in
//! its queue). Transactions in `(last, H]` are already committed and will
//! never be pushed: it replays them with iterate first, then pops the
//! queue, skipping anything `<= last`. A pushed tid is only the news of a
//! commit: the transaction is read with iterate too (ZEO's invalidation
//! leaves out the objects a transaction deleted, which a watcher must
//! report; it also gives user, description and extension). If a working
//! server cannot iterate, `next` says so once with
//! [`Error::ChangesUnknown`](crate::Error::ChangesUnknown) at the head it
//! could not read up to, and goes on after it. When the connection breaks the queue
//! ends; the watcher then waits for the link's next connection and does
//! the same there from the last tid it reported. So each transaction after
//! `after` comes exactly once, in tid order, outage or not.

use super::conn::{Conn, WatchQ};
use super::iter::ZeoTxnIter;
use super::link::Link;
use super::wire::ZeoError;
use crate::error::Result;
use crate::storage::{TxnInfo, Watcher};
use crate::types::Tid;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connection a watcher follows and its queue there.
#[derive(Debug)]
struct Sub {
    conn: Arc<Conn>,
    q: Arc<WatchQ>,
    /// `(last, H]` still to replay: `Some(H)` until started.
    replay_to: Option<Tid>,
    /// `H` of the replay in progress.
    replay_hi: Tid,
    replay: Option<ZeoTxnIter>,
}

/// Reports every transaction committed after a given tid; see
/// [`crate::Storage::watch`].
#[derive(Debug)]
pub struct ZeoWatcher {
    link: Arc<Link>,
    /// The last tid reported (or the starting point).
    last: Tid,
    /// `None` until subscribed, and again after the connection broke.
    sub: Option<Sub>,
}

/// What the queue gave.
enum Popped {
    Txn(TxnInfo),
    TimedOut,
    Ended,
}

impl ZeoWatcher {
    /// Subscribes at once when connected (so that what is committed from
    /// now on is pushed to it), else at its first `next`.
    pub(super) fn new(link: Arc<Link>, after: Tid) -> Result<ZeoWatcher> {
        let mut w = ZeoWatcher {
            link,
            last: after,
            sub: None,
        };
        w.subscribe(Some(Instant::now()))?;
        Ok(w)
    }

    /// The last tid reported so far (initially the `after` given).
    pub fn last_reported(&self) -> Tid {
        self.last
    }

    /// Subscribe on the link's current connection, waiting for one until
    /// `deadline`. False if there was none by then.
    fn subscribe(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let conn = match self.link.conn(deadline) {
            Ok(c) => c,
            Err(ZeoError::Unavailable { .. }) => return Ok(false),
            Err(e) => return Err(self.link.err("watch", e)),
        };
        let Ok((q, head)) = conn.subscribe() else {
            return Ok(false); // broke just now: the next call waits for another
        };
        self.sub = Some(Sub {
            conn,
            q,
            replay_to: (self.last < head).then_some(head),
            replay_hi: head,
            replay: None,
        });
        Ok(true)
    }

    /// The next transaction from the replay of `(last, H]`, if any left.
    fn next_replayed(&mut self) -> Result<Option<TxnInfo>> {
        let last = self.last;
        let Some(sub) = &mut self.sub else {
            return Ok(None);
        };
        if let Some(h) = sub.replay_to.take() {
            sub.replay_hi = h;
            sub.replay = Some(ZeoTxnIter::start(sub.conn.clone(), Tid(last.0 + 1), h)?);
        }
        let Some(it) = &mut sub.replay else {
            return Ok(None);
        };
        match it.next() {
            Some(Ok(t)) => Ok(Some(t)),
            Some(Err(e)) => {
                sub.replay = None;
                Err(e)
            }
            None => {
                sub.replay = None;
                Ok(None)
            }
        }
    }

    /// Pop the next queued transaction after `last`, waiting until
    /// `deadline`.
    fn pop(&self, sub: &Sub, deadline: Option<Instant>) -> Popped {
        let mut q = sub.q.q.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            while let Some(t) = q.items.pop_front() {
                if t.tid > self.last {
                    return Popped::Txn(t);
                }
            }
            if q.end.is_some() {
                return Popped::Ended;
            }
            q = match deadline {
                None => sub.q.cv.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Popped::TimedOut;
                    }
                    sub.q
                        .cv
                        .wait_timeout(q, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl Watcher for ZeoWatcher {
    fn next(&mut self, timeout: Option<Duration>) -> Result<Option<TxnInfo>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.sub.is_none() && !self.subscribe(deadline)? {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                continue;
            }
            match self.next_replayed() {
                Ok(Some(t)) => {
                    self.last = t.tid;
                    return Ok(Some(t));
                }
                Ok(None) => {}
                Err(e) => {
                    let broke = self.sub.as_ref().is_some_and(|s| s.conn.broken().is_some());
                    if broke && !self.link.is_closed() {
                        // replay again from `last` on the next connection
                        self.sub = None;
                        continue;
                    }
                    if self.link.is_closed() {
                        return Err(e);
                    }
                    // A working server that cannot say what (last, H]
                    // changed: the user must assume everything did; we go
                    // on after H.
                    let Some(sub) = &mut self.sub else {
                        return Err(e);
                    };
                    sub.replay = None;
                    let head = sub.replay_hi;
                    tracing::warn!(last = %self.last, %head, "watch: cannot read the transactions: {e}");
                    self.last = head;
                    return Err(crate::Error::ChangesUnknown {
                        head,
                        why: e.to_string(),
                    });
                }
            }
            let Some(sub) = &self.sub else { continue };
            match self.pop(sub, deadline) {
                Popped::Txn(t) => {
                    // The push says a transaction committed, not all it
                    // stored: ZEO's server leaves objects deleted with
                    // deleteObject out of the invalidation. So the
                    // transaction itself is read with iterate (the replay
                    // path: `(last, t]`, which also covers a failure).
                    if let Some(sub) = &mut self.sub {
                        sub.replay_to = Some(t.tid);
                    }
                }
                Popped::TimedOut => return Ok(None),
                Popped::Ended => {
                    if self.link.is_closed() {
                        let why = sub
                            .conn
                            .broken()
                            .unwrap_or_else(|| ZeoError::Disconnected("storage closed".into()));
                        return Err(self.link.err("watch", why));
                    }
                    tracing::debug!(last = %self.last, "watch: connection lost, waiting for the next one");
                    self.sub = None;
                }
            }
        }
    }
}

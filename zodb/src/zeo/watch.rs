//! Following commits through the server's invalidation pushes.
//!
//! A [`ZeoWatcher`] subscribes to the connection's invalidation stream at
//! head `H` (atomically with the reader: every invalidation after `H` lands
//! in its queue). Transactions in `(after, H]` are already committed and
//! will never be pushed: it replays them with iterate first, then pops the
//! queue, skipping anything `<= after`. So each transaction after `after`
//! comes exactly once, in tid order.

use super::conn::{Conn, WatchQ};
use super::iter::ZeoTxnIter;
use crate::error::Result;
use crate::storage::{TxnInfo, Watcher};
use crate::types::Tid;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reports every transaction committed after a given tid; see
/// [`crate::Storage::watch`].
#[derive(Debug)]
pub struct ZeoWatcher {
    conn: Arc<Conn>,
    q: Arc<WatchQ>,
    /// The last tid reported (or the starting point).
    last: Tid,
    /// `(after, H]` still to replay: `Some(H)` until started.
    replay_to: Option<Tid>,
    replay: Option<ZeoTxnIter>,
}

impl ZeoWatcher {
    pub(super) fn new(conn: Arc<Conn>, after: Tid) -> Result<ZeoWatcher> {
        let (q, head) = conn.subscribe()?;
        Ok(ZeoWatcher {
            conn,
            q,
            last: after,
            replay_to: (after < head).then_some(head),
            replay: None,
        })
    }

    /// The last tid reported so far (initially the `after` given).
    pub fn last_reported(&self) -> Tid {
        self.last
    }

    /// The next transaction from the replay of `(after, H]`, if any left.
    fn next_replayed(&mut self) -> Result<Option<TxnInfo>> {
        if let Some(h) = self.replay_to.take() {
            let lo = Tid(self.last.0 + 1);
            self.replay = Some(ZeoTxnIter::start(self.conn.clone(), lo, h)?);
        }
        let Some(it) = &mut self.replay else {
            return Ok(None);
        };
        match it.next() {
            Some(Ok(t)) => Ok(Some(t)),
            Some(Err(e)) => {
                self.replay = None;
                Err(e)
            }
            None => {
                self.replay = None;
                Ok(None)
            }
        }
    }
}

impl Watcher for ZeoWatcher {
    fn next(&mut self, timeout: Option<Duration>) -> Result<Option<TxnInfo>> {
        if let Some(t) = self.next_replayed()? {
            self.last = t.tid;
            return Ok(Some(t));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut q = self.q.q.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            while let Some(t) = q.items.pop_front() {
                if t.tid > self.last {
                    self.last = t.tid;
                    return Ok(Some(t));
                }
            }
            if let Some(why) = &q.end {
                return Err(self.conn.err("watch", why.clone()));
            }
            q = match deadline {
                None => self.q.cv.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    self.q
                        .cv
                        .wait_timeout(q, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

//! Early pins: a commit pins the watches of clients that asked for it
//! (`option early-pins`) *before* its invalidation drops the changed
//! blocks from head/'s page cache, instead of leaving every pin to the
//! next READ of the block (spec §5's lazy pins, which the original's
//! clients and tests expect and still get by default).
//!
//! # Why
//!
//! A page fault on a head/ mapping may be retried: the first attempt
//! drops the process's mmap lock while the READ is in flight, but the
//! retry (`FAULT_FLAG_TRIED`) keeps it, and if the page is gone again it
//! reads it *holding the lock*. Lazy pins then deadlock:
//!
//! ```text
//! thread T of client X          commit C (changes block b)    wcfs
//! fault on head/b, 1st attempt
//!   READ b at head H (no pin:
//!   b unchanged since X.at) ──────────────────────────────────> reply
//!                               invalidate b (page dropped)
//! retry, holding X's mmap lock
//!   READ b at head C ─────────────────────────────────────────> b changed after X.at:
//!                                                               pin X, wait for the ack
//! X's pinner: mmap(MAP_FIXED) over b needs X's mmap lock, held by T: no ack,
//! until the pin timeout kills a client that did nothing wrong.
//! ```
//!
//! With 2 MiB blocks and 16 readers this stopped wcfs-stress's production
//! shape within a minute (stress/findings). The original has the same
//! window (its notes assume the kernel always drops the lock while a fault
//! waits).
//!
//! # The rule
//!
//! For a commit C and every watch `w` of an early-pins link on a file that
//! C changes, with `w.at < C`: each changed block b that is invalidated is
//! pinned on `w` to `BlkRevAt(b, w.at)` (shared with any pin to the same
//! rev already in force or in flight, exactly as a READ decides), and the
//! lane of that file sends C's invalidation only once those pins are
//! answered:
//!
//! ```text
//! b leaves head/'s cache at C  ⇒  every responsive early-pins watch behind C
//!                                 shows b from @rev (its pinner is done)
//! ```
//!
//! So a retried fault of X finds either the old page (still cached: it
//! completes and drops the lock, and X's pinner goes on) or, once the
//! block is dropped, a mapping already moved to `@rev`, whose READs never
//! wait for a pin. Blocks that are not in the cache need no early pin: the
//! first attempt of a fault on them drops the lock while its READ waits.
//!
//! # What a faulty client can delay
//!
//! A lane waits for an early pin at most [`EARLY_WAIT`] after it was sent,
//! and not at all for a link that has had a pin unanswered for longer than
//! that (a client stopped or stuck). So a client that stops answering
//! delays the head/at of commits changing blocks of its files once, by at
//! most `EARLY_WAIT`; after that it delays nothing but the READs that need
//! its pins, as before. A pin not answered within the wait stays in flight:
//! a READ that needs it waits for it as for any pin, and a thread settles
//! it at `--pintimeout` (spec §7: fatal frame, kill), as does any failed
//! reply the lane saw.
//!
//! # Locks
//!
//! Pins are decided under `ft_rw` R and queued under each watch's `st`,
//! by the same generation-checked loop as READs' (`Watch::pin_for_view`);
//! the wait holds nothing.

use super::fs::{lock, Wcfs};
use super::inval::Gate;
use super::isolation::{PinJob, Watch};
use super::pin::PinEnd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

/// How long a lane waits for an early pin's answer.
pub const EARLY_WAIT: Duration = Duration::from_secs(1);

impl Wcfs {
    /// Commit `head` changed `blks` of file `foid`: queue the early pins of
    /// every early-pins watch of the file whose view is older, and return
    /// them (for the file's lane to wait for). Called with `ft_rw` held for
    /// reading, ΔFtail at `head`.
    pub fn pin_early(&self, foid: Oid, head: Tid, blks: &[i64]) -> Vec<PinJob> {
        let ws: Vec<Arc<Watch>> = match self
            .iso
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&foid)
        {
            Some(ws) => ws
                .iter()
                .filter(|w| w.link.upgrade().is_some_and(|l| l.early_pins()))
                .cloned()
                .collect(),
            None => return Vec::new(),
        };
        let mut jobs = Vec::new();
        for w in &ws {
            if w.at() >= head {
                continue; // its view has this commit
            }
            let decide = |at: Tid| {
                if at >= head {
                    return Vec::new();
                }
                blks.iter()
                    .filter_map(|&b| match self.ft.blk_rev_at(foid, b, at) {
                        Ok((rev, _)) => Some((b, rev)),
                        Err(e) => {
                            tracing::error!(
                                oid = %foid, blk = b,
                                "early pin for a watch @{at}: BlkRevAt: {e}: left to READs"
                            );
                            None
                        }
                    })
                    .collect()
            };
            jobs.extend(w.pin_for_view(&self.stats, decide, || {}));
        }
        jobs
    }
}

/// The early pins of one commit and file: its lane's [`Gate`].
pub struct EarlyPins {
    fs: Arc<Wcfs>,
    /// Taken by the first wait.
    jobs: Mutex<Option<Vec<PinJob>>>,
}

impl EarlyPins {
    pub fn new(fs: Arc<Wcfs>, jobs: Vec<PinJob>) -> Arc<EarlyPins> {
        Arc::new(EarlyPins {
            fs,
            jobs: Mutex::new(Some(jobs)),
        })
    }
}

impl Gate for EarlyPins {
    fn wait(&self) {
        let Some(jobs) = lock(&self.jobs).take() else {
            return;
        };
        let mut unsettled = Vec::new();
        for j in jobs {
            let now = Instant::now();
            let late = j
                .link
                .oldest_pending()
                .is_some_and(|t| t + EARLY_WAIT <= now);
            let end = if late {
                j.pw.ended()
            } else {
                j.pw.wait(j.pw.sent + EARLY_WAIT)
            };
            if end != Some(PinEnd::Ack) {
                unsettled.push(j);
            }
        }
        if unsettled.is_empty() {
            return;
        }
        tracing::debug!(n = unsettled.len(), "early pins not answered in time");
        let fs = self.fs.clone();
        let r = std::thread::Builder::new()
            .name("wcfs-early-pin".into())
            .spawn(move || fs.settle_pins(unsettled));
        if let Err(e) = r {
            // the pins stay in flight: a READ that needs one deals with it
            tracing::warn!("start a thread for unanswered early pins: {e}");
        }
    }
}

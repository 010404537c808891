//! Kernel cache invalidations of processed commits, and head/at.
//!
//! A commit's invalidation of a block waits in the kernel for the page
//! locks of a READ of that block in flight, and such a READ may itself be
//! waiting for a faulty client's pin ack (up to `--pintimeout`). So the
//! invalidations are not sent from the commit thread: each inode has a
//! *lane*, a queue served by at most one thread at a time, so that a stuck
//! block holds up only later invalidations of its own file, while other
//! files' invalidations and the next commits' processing go on.
//!
//! head/at still moves in commit order and only past complete commits:
//!
//! ```text
//! head/at = T  ⇒  every invalidation of every commit ≤ T was done
//! ```
//!
//! (so once head/at reads T, no head/ page the kernel caches is older than
//! T). A commit stuck behind a READ of its own changed block therefore
//! holds head/at back (the invariant demands it), but not the invalidation
//! of other files, which the kernel may then serve at the new state.
//!
//! # Locks
//!
//! `st` is held to queue, take a lane's work and count completions; never
//! while an invalidation is sent. [`Invalidator::publish`] is called under
//! it, so head/at stores happen in commit order; it must not take `st`.

use super::fs::Inval;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zodb::Tid;

/// Where invalidations go (the FUSE notifier; a recorder in tests).
pub(crate) trait Sink: Send + Sync + 'static {
    /// Send one invalidation; blocks while the kernel waits for pages.
    fn inval(&self, i: &Inval);
}

/// Called with each new head/at, in order, and how long after its
/// submission.
pub(crate) type Publish = Box<dyn Fn(Tid, Duration) + Send + Sync>;

/// One lane's queued work: (commit, invalidation).
#[derive(Default)]
struct Lane {
    queue: Vec<(Tid, Inval)>,
    /// A thread serves this lane now.
    busy: bool,
}

#[derive(Default)]
struct State {
    lanes: HashMap<u64, Lane>,
    /// Submitted commits not yet published, tid↑: (tid, lane items left,
    /// when it was submitted).
    order: VecDeque<(Tid, usize, Instant)>,
}

/// The lanes; see the [module docs](self).
pub(crate) struct Invalidator {
    sink: Arc<dyn Sink>,
    publish: Publish,
    st: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Invalidator {
    pub(crate) fn new(sink: Arc<dyn Sink>, publish: Publish) -> Arc<Invalidator> {
        Arc::new(Invalidator {
            sink,
            publish,
            st: Mutex::new(State::default()),
        })
    }

    /// Queue commit `tid`'s invalidations (commits come in tid order);
    /// head/at reaches `tid` once they and those of every earlier commit
    /// are done. Never blocks on the kernel.
    pub(crate) fn submit(self: &Arc<Self>, tid: Tid, invals: Vec<Inval>) {
        let mut by_ino: HashMap<u64, Vec<Inval>> = HashMap::new();
        for i in invals {
            by_ino.entry(i.ino).or_default().push(i);
        }
        let mut start = Vec::new();
        {
            let mut st = lock(&self.st);
            let n: usize = by_ino.values().map(Vec::len).sum();
            st.order.push_back((tid, n, Instant::now()));
            for (ino, is) in by_ino {
                let lane = st.lanes.entry(ino).or_default();
                lane.queue.extend(is.into_iter().map(|i| (tid, i)));
                if !lane.busy {
                    lane.busy = true;
                    start.push(ino);
                }
            }
            self.advance(&mut st);
        }
        for ino in start {
            let me = self.clone();
            let r = std::thread::Builder::new()
                .name("wcfs-inval".into())
                .spawn(move || me.serve(ino));
            if let Err(e) = r {
                tracing::warn!("start an invalidation thread: {e}: invalidating inline");
                self.serve(ino);
            }
        }
    }

    /// Serve lane `ino` until it is empty.
    fn serve(&self, ino: u64) {
        loop {
            let work = {
                let mut st = lock(&self.st);
                let lane = st.lanes.get_mut(&ino).expect("a busy lane exists");
                if lane.queue.is_empty() {
                    st.lanes.remove(&ino);
                    return;
                }
                std::mem::take(&mut lane.queue)
            };
            // the same range twice in a batch (a lane that was stuck) is
            // sent once
            let mut sent: Vec<Inval> = Vec::new();
            for (_, i) in &work {
                if !sent.contains(i) {
                    self.sink.inval(i);
                    sent.push(*i);
                }
            }
            let mut st = lock(&self.st);
            for (tid, _) in &work {
                let k = st.order.partition_point(|(t, _, _)| t < tid);
                match st.order.get_mut(k) {
                    Some((t, left, _)) if t == tid => *left -= 1,
                    _ => unreachable!("a queued invalidation's commit is in `order`"),
                }
            }
            self.advance(&mut st);
        }
    }

    /// Publish the newest commit whose invalidations and all earlier ones
    /// are done.
    fn advance(&self, st: &mut State) {
        let mut last = None;
        while let Some(&(tid, 0, since)) = st.order.front() {
            st.order.pop_front();
            last = Some((tid, since.elapsed()));
        }
        if let Some((t, lag)) = last {
            (self.publish)(t, lag);
        }
    }

    /// Commits whose invalidations are not all done (for tests).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.st).order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Condvar;

    /// Records invalidations; blocks those of inode `stuck` until released.
    struct Rec {
        stuck: u64,
        released: (Mutex<bool>, Condvar),
        done: Mutex<Vec<Inval>>,
    }

    impl Sink for Rec {
        fn inval(&self, i: &Inval) {
            if i.ino == self.stuck {
                let mut g = self.released.0.lock().unwrap();
                while !*g {
                    g = self.released.1.wait(g).unwrap();
                }
            }
            self.done.lock().unwrap().push(*i);
        }
    }

    fn blk(ino: u64, off: i64) -> Inval {
        Inval { ino, off, len: 1 }
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < end, "{what}: not within 20 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A stuck inode holds back head/at at its commit, not the other
    /// files' invalidations; once it goes, head/at catches up in order.
    #[test]
    fn a_stuck_lane_holds_only_its_own_file() {
        let rec = Arc::new(Rec {
            stuck: 7,
            released: (Mutex::new(false), Condvar::new()),
            done: Mutex::new(Vec::new()),
        });
        let head = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h2, s2) = (head.clone(), seen.clone());
        let inv = Invalidator::new(
            rec.clone(),
            Box::new(move |t, _| {
                s2.lock().unwrap().push(t.0);
                h2.store(t.0, Ordering::SeqCst);
            }),
        );
        inv.submit(Tid(1), vec![blk(5, 0)]);
        wait_for("commit 1", || head.load(Ordering::SeqCst) == 1);
        inv.submit(Tid(2), vec![blk(7, 0), blk(5, 1)]); // 7 is stuck
        inv.submit(Tid(3), vec![blk(5, 2)]);
        inv.submit(Tid(4), vec![]);
        inv.submit(Tid(5), vec![blk(7, 3), blk(6, 0)]);
        // every invalidation of other inodes gets through
        wait_for("other files", || rec.done.lock().unwrap().len() == 4);
        assert_eq!(head.load(Ordering::SeqCst), 1, "head/at waits for commit 2");
        assert_eq!(inv.pending(), 4);
        *rec.released.0.lock().unwrap() = true;
        rec.released.1.notify_all();
        wait_for("all", || head.load(Ordering::SeqCst) == 5);
        assert_eq!(inv.pending(), 0);
        let s = seen.lock().unwrap().clone();
        assert!(s.windows(2).all(|w| w[0] < w[1]), "in order: {s:?}");
        let done = rec.done.lock().unwrap();
        assert_eq!(done.iter().filter(|i| i.ino == 7).count(), 2);
    }
}

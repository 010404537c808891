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
//! A commit may also give a lane *gates* (`serve::early`: pins that must
//! be answered before the kernel drops the blocks): a lane waits for the
//! gates of a batch before it sends the batch's invalidations.
//!
//! # Locks
//!
//! `st` is held to queue, take a lane's work and count completions; never
//! while an invalidation is sent or a gate is waited for. [`Invalidator::publish`] is called under
//! it, so head/at stores happen in commit order; it must not take `st`.

use super::fs::Inval;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zodb::Tid;

/// Where invalidations go (the FUSE notifier; a recorder in tests).
pub trait Sink: Send + Sync + 'static {
    /// Send one invalidation; blocks while the kernel waits for pages.
    fn inval(&self, i: &Inval);
}

/// What must happen before a lane sends a commit's invalidations of its
/// file; waited for with no lock held.
pub trait Gate: Send + Sync {
    /// Return once the invalidations may go (may block; called once).
    fn wait(&self);
}

/// Called with each commit that head/at may show, in order (each once),
/// and how long after its submission.
pub type Publish = Box<dyn Fn(Tid, Duration) + Send + Sync>;

/// One item of a lane.
enum Work {
    Inval(Inval),
    Gate(Arc<dyn Gate>),
}

/// One lane's queued work: (commit, item).
#[derive(Default)]
struct Lane {
    queue: Vec<(Tid, Work)>,
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
pub struct Invalidator {
    sink: Arc<dyn Sink>,
    publish: Publish,
    st: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Invalidator {
    pub fn new(sink: Arc<dyn Sink>, publish: Publish) -> Arc<Invalidator> {
        Arc::new(Invalidator {
            sink,
            publish,
            st: Mutex::new(State::default()),
        })
    }

    /// Queue commit `tid`'s invalidations (commits come in tid order),
    /// each inode's after that inode's `gates`; head/at reaches `tid` once
    /// they and those of every earlier commit are done. Never blocks on the
    /// kernel or a gate.
    pub fn submit(
        self: &Arc<Self>,
        tid: Tid,
        invals: Vec<Inval>,
        gates: Vec<(u64, Arc<dyn Gate>)>,
    ) {
        let mut by_ino: HashMap<u64, Vec<Work>> = HashMap::new();
        for (ino, g) in gates {
            by_ino.entry(ino).or_default().push(Work::Gate(g));
        }
        for i in invals {
            by_ino.entry(i.ino).or_default().push(Work::Inval(i));
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
            // every gate of the batch first: waiting longer is only later
            for (_, w) in &work {
                if let Work::Gate(g) = w {
                    g.wait();
                }
            }
            // the same range twice in a batch (a lane that was stuck) is
            // sent once
            let mut sent: Vec<Inval> = Vec::new();
            for (_, w) in &work {
                if let Work::Inval(i) = w {
                    if !sent.contains(i) {
                        self.sink.inval(i);
                        sent.push(*i);
                    }
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

    /// Publish, in order, every commit whose invalidations and all earlier
    /// ones are done (each once: `.wcfs/debug/zhead` shows every one).
    fn advance(&self, st: &mut State) {
        while let Some(&(tid, 0, since)) = st.order.front() {
            st.order.pop_front();
            (self.publish)(tid, since.elapsed());
        }
    }

    /// Commits whose invalidations are not all done (for tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn pending(&self) -> usize {
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
        Inval {
            ino,
            off,
            len: 1,
            keep: None,
        }
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
        inv.submit(Tid(1), vec![blk(5, 0)], vec![]);
        wait_for("commit 1", || head.load(Ordering::SeqCst) == 1);
        inv.submit(Tid(2), vec![blk(7, 0), blk(5, 1)], vec![]); // 7 is stuck
        inv.submit(Tid(3), vec![blk(5, 2)], vec![]);
        inv.submit(Tid(4), vec![], vec![]);
        inv.submit(Tid(5), vec![blk(7, 3), blk(6, 0)], vec![]);
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

    /// A gate that does not open holds its own lane's invalidations (and
    /// head/at at its commit), not other files'; it is waited for once.
    #[test]
    fn a_gate_holds_its_lane_until_it_opens() {
        struct G {
            open: (Mutex<bool>, Condvar),
            waits: AtomicU64,
        }
        impl Gate for G {
            fn wait(&self) {
                self.waits.fetch_add(1, Ordering::SeqCst);
                let mut g = self.open.0.lock().unwrap();
                while !*g {
                    g = self.open.1.wait(g).unwrap();
                }
            }
        }
        let rec = Arc::new(Rec {
            stuck: u64::MAX,
            released: (Mutex::new(true), Condvar::new()),
            done: Mutex::new(Vec::new()),
        });
        let head = Arc::new(AtomicU64::new(0));
        let h2 = head.clone();
        let inv = Invalidator::new(
            rec.clone(),
            Box::new(move |t, _| h2.store(t.0, Ordering::SeqCst)),
        );
        let g = Arc::new(G {
            open: (Mutex::new(false), Condvar::new()),
            waits: AtomicU64::new(0),
        });
        let gd: Arc<dyn Gate> = g.clone();
        inv.submit(Tid(1), vec![blk(5, 0), blk(6, 0)], vec![(5, gd)]);
        inv.submit(Tid(2), vec![blk(6, 1)], vec![]);
        wait_for("the other file", || rec.done.lock().unwrap().len() == 2);
        assert!(rec.done.lock().unwrap().iter().all(|i| i.ino == 6));
        assert_eq!(head.load(Ordering::SeqCst), 0, "head/at waits for the gate");
        *g.open.0.lock().unwrap() = true;
        g.open.1.notify_all();
        wait_for("all", || head.load(Ordering::SeqCst) == 2);
        assert_eq!(rec.done.lock().unwrap().len(), 3);
        assert_eq!(g.waits.load(Ordering::SeqCst), 1);
    }
}

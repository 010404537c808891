//! Loom models of the crate's protocols, run with
//! `RUSTFLAGS="--cfg loom" cargo test -p rcu --release --test loom`.
//!
//! Under `cfg(loom)` the crate's sync shim hands out loom's Mutex, Condvar
//! and Arc, and models arc-swap's pointer by a loom mutex (loom cannot see
//! inside arc-swap). So these models explore the shipped writer mutex,
//! publish sequence and version release of `RcuCell`, and the whole
//! `JobRegistry` (registry lock, per-job lock and condvar, abandon on drop).
//! Each model has two or three threads and a handful of steps, and the
//! preemption bound is 3, so that the whole file runs in seconds.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use rcu::{Abandoned, JobRegistry, KeyRange, RangedKeySet, RcuCell};

/// Runs `f` under loom with a bounded number of preemptions.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// Version `rev` of a cell's value; counts its own drop in `drops[rev]`.
struct Versioned {
    rev: usize,
    /// Always `rev * 10`: a torn or reused value would break it.
    check: usize,
    drops: Arc<[AtomicUsize; 3]>,
}

impl Versioned {
    fn new(rev: usize, drops: &Arc<[AtomicUsize; 3]>) -> Self {
        Versioned {
            rev,
            check: rev * 10,
            drops: drops.clone(),
        }
    }
}

impl Drop for Versioned {
    fn drop(&mut self) {
        self.drops[self.rev].fetch_add(1, Ordering::SeqCst);
    }
}

/// A reader holds a snapshot while the writer publishes twice: the reader
/// sees one complete version, unchanged for as long as it holds it, never
/// freed under it; every version is freed exactly once, after its last
/// holder lets go.
#[test]
fn publish_reclaim() {
    model(|| {
        let drops = Arc::new([
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ]);
        let cell = Arc::new(RcuCell::new(Versioned::new(0, &drops)));
        let reader = {
            let (cell, drops) = (cell.clone(), drops.clone());
            thread::spawn(move || {
                let s = cell.load();
                let rev = s.rev;
                assert_eq!(s.check, rev * 10);
                thread::yield_now();
                assert_eq!((s.rev, s.check), (rev, rev * 10));
                assert_eq!(drops[rev].load(Ordering::SeqCst), 0, "freed while held");
                drop(s);
                rev
            })
        };
        cell.store(Versioned::new(1, &drops));
        cell.store(Versioned::new(2, &drops));
        let rev = reader.join().unwrap();
        assert!(rev <= 2);
        let counts: Vec<usize> = drops.iter().map(|d| d.load(Ordering::SeqCst)).collect();
        assert_eq!(counts, [1, 1, 0], "old versions freed once, current alive");
        assert_eq!(cell.load().rev, 2);
        drop(cell);
        assert_eq!(drops[2].load(Ordering::SeqCst), 1);
    });
}

/// Two concurrent `update`s (and a reader): both increments land, each
/// update saw its predecessor, and the reader only sees complete versions in
/// order.
#[test]
fn updates_are_serialized() {
    model(|| {
        let cell = Arc::new(RcuCell::new(0usize));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let cell = cell.clone();
                thread::spawn(move || *cell.update(|v| v + 1))
            })
            .collect();
        let a = *cell.load();
        let b = *cell.load();
        assert!(a <= b && b <= 2);
        let mut got: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, [1, 2], "each update computed from its predecessor");
        assert_eq!(*cell.load(), 2);
    });
}

/// `update_with` racing `store`: the store is ordered like an update, so the
/// final value is one of the two serial orders.
#[test]
fn update_vs_store() {
    model(|| {
        let cell = Arc::new(RcuCell::new(1usize));
        let t = {
            let cell = cell.clone();
            thread::spawn(move || cell.update_with(|v| (v * 10, *v)))
        };
        cell.store(5);
        let seen = t.join().unwrap();
        let end = *cell.load();
        assert!(
            (seen, end) == (1, 5) || (seen, end) == (5, 50),
            "{seen} {end}"
        );
    });
}

fn ks(lo: i64, hi: i64) -> RangedKeySet {
    let mut s = RangedKeySet::new();
    s.add_range(KeyRange::new(lo, hi));
    s
}

/// Engine-like user state: keys to build, and keys built.
#[derive(Default)]
struct Track {
    pending: RangedKeySet,
    built: RangedKeySet,
}

/// A waiter that collected the job before it ends wakes with its result;
/// one that looks after it ended finds no job and sees the result in `S`
/// (finish_with updates `S` atomically with the job's removal).
#[test]
fn finish_wakes_waiter() {
    model(|| {
        let reg: JobRegistry<Track, usize> = JobRegistry::new(Track::default());
        let job = reg.lock().start(ks(0, 9)).unwrap();
        let waiter = {
            let reg = reg.clone();
            thread::spawn(move || {
                let (w, built) = {
                    let g = reg.lock();
                    (g.overlapping(&ks(5, 5)), g.built.has(5))
                };
                match w.as_slice() {
                    [w] => {
                        assert!(!built);
                        assert_eq!(w.clone().wait(), Ok(42));
                    }
                    [] => assert!(built, "no job and not built"),
                    _ => unreachable!(),
                }
            })
        };
        job.finish_with(|s| s.built.add_range(KeyRange::new(0, 9)), 42);
        waiter.join().unwrap();
        assert!(reg.lock().in_progress().is_empty());
    });
}

/// A waiter whose ticket was taken before the job ends, racing the finish
/// on another thread, never misses the wakeup (the model would deadlock).
#[test]
fn waiter_registered_before_finish_never_misses_wakeup() {
    model(|| {
        let reg: JobRegistry<(), usize> = JobRegistry::new(());
        let job = reg.lock().start(ks(0, 0)).unwrap();
        let w = reg.lock().overlapping(&ks(0, 0)).pop().unwrap();
        let w2 = w.clone();
        let worker = thread::spawn(move || job.finish(7));
        let other = thread::spawn(move || w2.wait());
        assert_eq!(w.wait(), Ok(7));
        assert_eq!(other.join().unwrap(), Ok(7));
        worker.join().unwrap();
    });
}

/// A worker that drops its handle wakes the waiter with `Abandoned`, and the
/// abandon hook has put the keys back into `pending` by the time anyone can
/// see the job gone.
#[test]
fn dropped_handle_abandons() {
    model(|| {
        let mut track = Track::default();
        track.pending.add_range(KeyRange::new(0, 9));
        let reg: JobRegistry<Track, ()> = JobRegistry::new(track);
        let mut job = {
            let mut g = reg.lock();
            let mine = g.pending.clone();
            g.pending.clear();
            g.start(mine).unwrap()
        };
        job.on_abandon(|s| s.pending.add_range(KeyRange::new(0, 9)));
        let w = reg.lock().overlapping(&ks(3, 3)).pop().unwrap();
        let worker = thread::spawn(move || drop(job));
        let looker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let g = reg.lock();
                let busy = !g.in_progress().is_empty();
                assert!(
                    busy != g.pending.has(3),
                    "keys both in progress and pending, or lost"
                );
            })
        };
        assert_eq!(w.wait(), Err(Abandoned));
        worker.join().unwrap();
        looker.join().unwrap();
        assert!(reg.lock().pending.has_range(KeyRange::new(0, 9)));
    });
}

/// The engine's query protocol on two threads wanting overlapping keys:
/// each takes the pending part it will build, starts a job for it, collects
/// the other's overlapping job, builds, finishes and waits. Both end with
/// all their keys built, and nothing is built twice.
#[test]
fn two_queries_share_the_work() {
    model(|| {
        let mut track = Track::default();
        track.pending.add_range(KeyRange::new(0, 9));
        let reg: JobRegistry<Track, ()> = JobRegistry::new(track);
        let builds = Arc::new(AtomicUsize::new(0));
        let query = |reg: JobRegistry<Track, ()>, builds: Arc<AtomicUsize>, want: RangedKeySet| {
            move || {
                let (job, others) = {
                    let mut g = reg.lock();
                    let mine = g.pending.intersection(&want);
                    g.pending.difference_in_place(&mine);
                    let others = g.overlapping(&want);
                    let job = if mine.is_empty() {
                        None
                    } else {
                        Some(g.start(mine).unwrap())
                    };
                    (job, others)
                };
                if let Some(job) = job {
                    builds.fetch_add(job.keys().ranges().count(), Ordering::SeqCst);
                    let mine = job.keys().clone();
                    job.finish_with(move |s| s.built.union_in_place(&mine), ());
                }
                for w in others {
                    w.wait().unwrap();
                }
                assert!(
                    reg.lock().built.intersection(&want) == want,
                    "not all built"
                );
            }
        };
        let t = thread::spawn(query(reg.clone(), builds.clone(), ks(0, 5)));
        query(reg.clone(), builds.clone(), ks(3, 9))();
        t.join().unwrap();
        let g = reg.lock();
        assert!(g.pending.is_empty() && g.in_progress().is_empty());
        assert!(g.built.has_range(KeyRange::new(0, 9)));
        assert!(builds.load(Ordering::SeqCst) <= 2);
    });
}

//! Snapshot load cost while one writer thread publishes new versions
//! continuously, with 1 and 2 reader threads, for every candidate backend
//! side by side in one run (same value type, same writer loop):
//!
//! - `rcu_load`: [`RcuCell::load`] (arc-swap `load_full`), the shipped path:
//!   a `Send` snapshot that can be kept.
//! - `rcu_with`: [`RcuCell::with`] (arc-swap guard, no refcount traffic).
//! - `epoch_load`: the rejected crossbeam-epoch cell, returning the same kind
//!   of keepable `Arc` snapshot (pin, load, clone the `Arc`).
//! - `epoch_pinned`: crossbeam-epoch read under a pin, no `Arc` (the
//!   cheapest it gets, but the result cannot outlive the pin or move).
//! - `rwlock_arc`: `std::sync::RwLock<Arc<T>>`, read-lock and clone the `Arc`.
//! - `rwlock_read`: `std::sync::RwLock<T>`, read-lock and read in place.
//!
//! Each iteration takes a snapshot and reads one field from it. With 2
//! readers both threads run the same number of loads and the reported time
//! is per load per thread. The writer's publish count is printed to stderr.

#![allow(missing_docs)] // criterion_group! defines an undocumented `pub fn benches`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_epoch as epoch;
use rcu::RcuCell;

/// The published value: a revision and a few words, like a small engine
/// state header.
struct Version {
    rev: u64,
    _pad: [u64; 7],
}

impl Version {
    fn new(rev: u64) -> Self {
        Version {
            rev,
            _pad: [rev; 7],
        }
    }
}

/// A crossbeam-epoch cell with the API `RcuCell` would have on it: the
/// pointee is an `Arc<T>` so that a load can hand out a keepable snapshot.
struct EpochCell<T> {
    ptr: epoch::Atomic<Arc<T>>,
}

impl<T> EpochCell<T> {
    fn new(v: T) -> Self {
        EpochCell {
            ptr: epoch::Atomic::new(Arc::new(v)),
        }
    }

    /// Pin, load, take a reference.
    fn load(&self) -> Arc<T> {
        let guard = epoch::pin();
        let p = self.ptr.load(Ordering::Acquire, &guard);
        // SAFETY: `ptr` is never null, and a pointee is destroyed only
        // through `defer_destroy` after it was unlinked, i.e. not before
        // every guard pinned before the unlink (this one included) is gone.
        unsafe { p.deref() }.clone()
    }

    /// Read in place under a pin, without a reference.
    fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let guard = epoch::pin();
        let p = self.ptr.load(Ordering::Acquire, &guard);
        // SAFETY: as in `load`; the reference does not outlive `guard`.
        f(unsafe { p.deref() })
    }

    /// Publish `v`; the old pointee is destroyed once no pin can see it.
    fn store(&self, v: T) {
        let guard = epoch::pin();
        let old = self
            .ptr
            .swap(epoch::Owned::new(Arc::new(v)), Ordering::AcqRel, &guard);
        // SAFETY: `old` was just unlinked, so only pins taken before the swap
        // can reach it, and destruction waits for them.
        unsafe { guard.defer_destroy(old) };
    }
}

impl<T> Drop for EpochCell<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no other thread can reach the pointee now.
        unsafe {
            drop(
                self.ptr
                    .load(Ordering::Relaxed, epoch::unprotected())
                    .into_owned(),
            )
        };
    }
}

/// One backend: how to publish a version and how a reader loads one.
trait Backend: Send + Sync + 'static {
    fn publish(&self, rev: u64);
    fn load_rev(&self) -> u64;
}

struct RcuLoad(RcuCell<Version>);
struct RcuWith(RcuCell<Version>);
struct EpochLoad(EpochCell<Version>);
struct EpochPinned(EpochCell<Version>);
struct RwLockArc(RwLock<Arc<Version>>);
struct RwLockRead(RwLock<Version>);

impl Backend for RcuLoad {
    fn publish(&self, rev: u64) {
        self.0.store(Version::new(rev));
    }
    fn load_rev(&self) -> u64 {
        self.0.load().rev
    }
}

impl Backend for RcuWith {
    fn publish(&self, rev: u64) {
        self.0.store(Version::new(rev));
    }
    fn load_rev(&self) -> u64 {
        self.0.with(|v| v.rev)
    }
}

impl Backend for EpochLoad {
    fn publish(&self, rev: u64) {
        self.0.store(Version::new(rev));
    }
    fn load_rev(&self) -> u64 {
        self.0.load().rev
    }
}

impl Backend for EpochPinned {
    fn publish(&self, rev: u64) {
        self.0.store(Version::new(rev));
    }
    fn load_rev(&self) -> u64 {
        self.0.with(|v| v.rev)
    }
}

impl Backend for RwLockArc {
    fn publish(&self, rev: u64) {
        let v = Arc::new(Version::new(rev));
        let old = std::mem::replace(&mut *self.0.write().unwrap(), v);
        drop(old);
    }
    fn load_rev(&self) -> u64 {
        let snap = self.0.read().unwrap().clone();
        snap.rev
    }
}

impl Backend for RwLockRead {
    fn publish(&self, rev: u64) {
        let v = Version::new(rev);
        *self.0.write().unwrap() = v;
    }
    fn load_rev(&self) -> u64 {
        self.0.read().unwrap().rev
    }
}

/// A writer thread publishing into `b` until dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    started: Instant,
    thread: Option<thread::JoinHandle<()>>,
    name: String,
}

impl Writer {
    /// `pace`: sleep this long after each publish (`None`: publish back to
    /// back).
    fn start<B: Backend>(b: Arc<B>, name: String, pace: Option<Duration>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, published) = (stop.clone(), published.clone());
            thread::spawn(move || {
                let mut rev = 0;
                while !stop.load(Ordering::Relaxed) {
                    rev += 1;
                    b.publish(rev);
                    published.store(rev, Ordering::Relaxed);
                    if let Some(p) = pace {
                        thread::sleep(p);
                    }
                }
            })
        };
        Writer {
            stop,
            published,
            started: Instant::now(),
            thread: Some(thread),
            name,
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let n = self.published.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "  {}: writer published {n} versions ({:.0}/s)",
            self.name,
            n as f64 / secs
        );
    }
}

/// `iters` loads on this thread and on `readers - 1` helpers, started
/// together; the mean elapsed time of the threads.
fn run_readers<B: Backend>(b: &Arc<B>, readers: usize, iters: u64) -> Duration {
    let start = Arc::new(Barrier::new(readers));
    let helpers: Vec<_> = (1..readers)
        .map(|_| {
            let (b, start) = (b.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                loads(&*b, iters)
            })
        })
        .collect();
    start.wait();
    let mut total = loads(&**b, iters);
    for h in helpers {
        total += h.join().unwrap();
    }
    total / readers as u32
}

/// Time `iters` loads.
fn loads<B: Backend>(b: &B, iters: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        black_box(b.load_rev());
    }
    t.elapsed()
}

fn bench_backend<B: Backend>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    readers: usize,
    pace: Option<Duration>,
    b: B,
) {
    let b = Arc::new(b);
    let _w = Writer::start(b.clone(), format!("{readers} reader(s)/{name}"), pace);
    g.bench_function(name, |bch| {
        bch.iter_custom(|iters| run_readers(&b, readers, iters))
    });
}

fn load_while_publishing(c: &mut Criterion) {
    let v = || Version::new(0);
    // The stress case: the writer publishes back to back.
    for readers in [1, 2] {
        let mut g = c.benchmark_group(format!("load_{readers}reader"));
        let p = None;
        bench_backend(&mut g, "rcu_load", readers, p, RcuLoad(RcuCell::new(v())));
        bench_backend(&mut g, "rcu_with", readers, p, RcuWith(RcuCell::new(v())));
        bench_backend(
            &mut g,
            "epoch_load",
            readers,
            p,
            EpochLoad(EpochCell::new(v())),
        );
        bench_backend(
            &mut g,
            "epoch_pinned",
            readers,
            p,
            EpochPinned(EpochCell::new(v())),
        );
        bench_backend(
            &mut g,
            "rwlock_arc",
            readers,
            p,
            RwLockArc(RwLock::new(Arc::new(v()))),
        );
        bench_backend(
            &mut g,
            "rwlock_read",
            readers,
            p,
            RwLockRead(RwLock::new(v())),
        );
        g.finish();
    }
    // Commit-like: one publish every ~50 µs (a commit rate far above a real
    // database's, still mostly quiet between publishes).
    for readers in [1, 2] {
        let mut g = c.benchmark_group(format!("load_{readers}reader_paced"));
        let p = Some(Duration::from_micros(50));
        bench_backend(&mut g, "rcu_load", readers, p, RcuLoad(RcuCell::new(v())));
        bench_backend(
            &mut g,
            "epoch_load",
            readers,
            p,
            EpochLoad(EpochCell::new(v())),
        );
        bench_backend(
            &mut g,
            "rwlock_arc",
            readers,
            p,
            RwLockArc(RwLock::new(Arc::new(v()))),
        );
        bench_backend(
            &mut g,
            "rwlock_read",
            readers,
            p,
            RwLockRead(RwLock::new(v())),
        );
        g.finish();
    }
}

criterion_group!(benches, load_while_publishing);
criterion_main!(benches);

//! [`RcuCell`]: a value that readers load as immutable snapshots while
//! writers clone, modify and publish new versions.

use std::fmt;
use std::ops::Deref;

use crate::sync::{lock, Arc, Mutex, SnapshotSlot};

/// A shared value with wait-free-ish reads of immutable versions and
/// serialized clone-modify-publish writes.
///
/// # Invariants
///
/// - Exactly one version is *current*. A published version is never
///   modified again: a [`Snapshot`] always shows the value exactly as it was
///   published.
/// - Versions are published one at a time, each [`update`](Self::update)
///   computed from the version current when it took the writer mutex, so the
///   sequence of published versions is the sequence of updates in the order
///   of the writer mutex: no update is lost.
/// - A version is dropped exactly once, when its last holder (the cell or a
///   snapshot) lets it go, and never while anyone can still reach it.
///
/// # Concurrency
///
/// | operation | takes | blocks on | may overlap with |
/// | --- | --- | --- | --- |
/// | [`load`](Self::load), [`with`](Self::with) | nothing | nothing | everything |
/// | [`update`](Self::update), [`update_with`](Self::update_with), [`store`](Self::store), [`replace`](Self::replace) | `writer_mu` | other writers only | any number of readers |
///
/// Readers never take `writer_mu` and never wait for a writer; a writer
/// waits only for another writer's closure. See the crate doc for the
/// backend ([`arc_swap`]) and the memory orders.
///
/// `RcuCell<T>` is `Send + Sync` when `T: Send + Sync`.
pub struct RcuCell<T> {
    /// The current version; replaced only with `writer_mu` held.
    slot: SnapshotSlot<T>,
    /// Serializes writers so that each one computes from the latest version.
    /// Protected by: nothing else (the data is `()`); it guards the
    /// "load current, compute, swap" sequence on `slot`. A leaf lock: only
    /// the user's update closure runs under it.
    writer_mu: Mutex<()>,
}

/// An immutable version of an [`RcuCell`]'s value, as it was published.
///
/// Invariant: the value it shows never changes and stays alive while this
/// snapshot (or a clone of it) exists, however many versions are published
/// meanwhile; keeping it only delays freeing that one version.
///
/// Concurrency: `Send + Sync` when `T: Send + Sync`; [`Clone`] is one
/// reference-count increment. Holding a snapshot blocks no one.
pub struct Snapshot<T> {
    /// Keeps the version alive.
    arc: Arc<T>,
}

impl<T> RcuCell<T> {
    /// A cell whose current version is `value`.
    pub fn new(value: T) -> Self {
        RcuCell {
            slot: SnapshotSlot::new(Arc::new(value)),
            writer_mu: Mutex::new(()),
        }
    }

    /// The current version, kept alive for as long as the snapshot is held.
    ///
    /// Takes no lock and never waits for writers (arc-swap's `load_full`:
    /// lock-free, wait-free on its fast path; one reference-count increment
    /// on the version). A load that overlaps a publish returns either the
    /// old or the new version, both complete.
    pub fn load(&self) -> Snapshot<T> {
        Snapshot {
            arc: self.slot.load_full(),
        }
    }

    /// Runs `f` on the current version without taking a snapshot.
    ///
    /// Cheaper than [`load`](Self::load) (no reference-count traffic on the
    /// version), for short reads. Like `load` it takes no lock. `f` should
    /// be short: while it runs, it occupies one of arc-swap's per-thread
    /// debt slots (a long `f` only makes later loads on this thread, or
    /// writers, take arc-swap's slower path; it never blocks them).
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        self.slot.with(f)
    }

    /// Clones-modifies-publishes: publishes `f(&current)` and returns it.
    ///
    /// Concurrent writers are serialized by the cell's writer mutex, which
    /// is held while `f` runs: `f` sees the latest version and no other
    /// update can slip in between. Readers never take that mutex and keep
    /// loading the old version until the new one is published. `f` must not
    /// write to this same cell (it would deadlock); it may read it.
    ///
    /// If `f` panics nothing is published and the cell stays usable. The
    /// replaced version is released after the mutex is dropped, so its
    /// `Drop` (if this was the last reference) never runs under the lock.
    pub fn update(&self, f: impl FnOnce(&T) -> T) -> Snapshot<T> {
        self.publish_with(|cur| (f(cur), ())).0
    }

    /// Like [`update`](Self::update), but `f` also returns a value that is
    /// handed back to the caller (e.g. what the update found).
    pub fn update_with<R>(&self, f: impl FnOnce(&T) -> (T, R)) -> R {
        self.publish_with(f).1
    }

    /// Publishes `value` as the new version (under the writer mutex, so it
    /// is ordered with updates like one more update).
    pub fn store(&self, value: T) {
        drop(self.replace(value));
    }

    /// Publishes `value` and returns the version it replaced.
    pub fn replace(&self, value: T) -> Snapshot<T> {
        let new = Arc::new(value);
        let _w = lock(&self.writer_mu);
        Snapshot {
            arc: self.slot.swap(new),
        }
    }

    /// The writer path shared by `update*`: under `writer_mu`, compute from
    /// the current version and publish the result.
    fn publish_with<R>(&self, f: impl FnOnce(&T) -> (T, R)) -> (Snapshot<T>, R) {
        let w = lock(&self.writer_mu);
        // Every swap of `slot` happens under `writer_mu`: the previous
        // writer's swap happens-before our lock, so this load returns it (or
        // the initial version), and no swap can come until we unlock.
        let cur = self.slot.load_full();
        let (value, r) = f(&cur);
        let new = Arc::new(value);
        let old = self.slot.swap(new.clone());
        drop(w);
        debug_assert!(Arc::ptr_eq(&old, &cur), "a writer bypassed writer_mu");
        // `old` and `cur` are dropped here, outside the lock.
        (Snapshot { arc: new }, r)
    }
}

impl<T: Default> Default for RcuCell<T> {
    /// A cell holding `T::default()`.
    fn default() -> Self {
        RcuCell::new(T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for RcuCell<T> {
    /// Shows the current version.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with(|v| f.debug_tuple("RcuCell").field(v).finish())
    }
}

impl<T> Snapshot<T> {
    /// Whether both snapshots show the same published version (not merely
    /// equal values).
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        Arc::ptr_eq(&this.arc, &other.arc)
    }

    /// The snapshot as a plain `Arc`, for APIs that want one. The version
    /// stays immutable: the cell still shares it, or did.
    #[cfg(not(loom))]
    pub fn into_arc(self) -> Arc<T> {
        self.arc
    }
}

impl<T> Deref for Snapshot<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.arc
    }
}

impl<T> AsRef<T> for Snapshot<T> {
    fn as_ref(&self) -> &T {
        &self.arc
    }
}

impl<T> Clone for Snapshot<T> {
    /// Another handle on the same version (one reference-count increment).
    fn clone(&self) -> Self {
        Snapshot {
            arc: self.arc.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Snapshot").field(&*self.arc).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops in a shared counter.
    struct Counted(u32, std::sync::Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn load_update_store() {
        let c = RcuCell::new(1);
        let s1 = c.load();
        assert_eq!(*s1, 1);
        let s2 = c.update(|v| v + 1);
        assert_eq!((*s1, *s2, *c.load()), (1, 2, 2));
        assert!(Snapshot::ptr_eq(&s2, &c.load()));
        assert!(!Snapshot::ptr_eq(&s1, &s2));
        c.store(10);
        assert_eq!(*c.load(), 10);
        let r = c.update_with(|v| (v * 2, *v));
        assert_eq!((r, *c.load()), (10, 20));
        let old = c.replace(7);
        assert_eq!((*old, *c.load()), (20, 7));
        assert_eq!(c.with(|v| v + 1), 8);
        assert_eq!(*s1, 1, "an old snapshot never changes");
        assert_eq!(format!("{c:?} {:?}", c.load()), "RcuCell(7) Snapshot(7)");
        assert_eq!(*RcuCell::<u8>::default().load(), 0);
        assert_eq!(*c.load().into_arc(), 7);
    }

    #[test]
    fn each_version_dropped_once_when_last_holder_goes() {
        let drops = std::sync::Arc::new(AtomicUsize::new(0));
        let c = RcuCell::new(Counted(0, drops.clone()));
        let held = c.load();
        let held2 = held.clone();
        c.update(|v| Counted(v.0 + 1, drops.clone()));
        c.update(|v| Counted(v.0 + 1, drops.clone()));
        // Version 1 had no holder but the cell: freed at the second update.
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert_eq!(held.0, 0);
        drop(held);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(held2);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        assert_eq!(c.load().0, 2);
        drop(c);
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn panicking_update_publishes_nothing() {
        let c = RcuCell::new(vec![1]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.update(|_| panic!("boom"));
        }));
        assert!(r.is_err());
        assert_eq!(*c.load(), vec![1]);
        c.update(|v| [v.as_slice(), &[2]].concat());
        assert_eq!(*c.load(), vec![1, 2]);
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let c = RcuCell::new(0u64);
        let n = if cfg!(miri) { 20 } else { 2000 };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..n {
                        c.update(|v| v + 1);
                    }
                });
            }
            s.spawn(|| {
                let mut last = 0;
                for _ in 0..n {
                    let v = *c.load();
                    assert!(v >= last, "versions go forward");
                    last = v;
                }
            });
        });
        assert_eq!(*c.load(), 4 * n);
    }

    #[test]
    fn snapshot_is_send_sync() {
        fn check<X: Send + Sync>() {}
        check::<Snapshot<Vec<u8>>>();
        check::<RcuCell<Vec<u8>>>();
    }
}

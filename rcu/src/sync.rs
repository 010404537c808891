//! The one place that names the synchronization primitives: std's in normal
//! builds, loom's under `--cfg loom`, so that the loom tests explore exactly
//! the code the crate ships (crossbeam's `primitive` module does the same).
//!
//! [`SnapshotSlot`] is the pointer that [`RcuCell`](crate::RcuCell)
//! publishes through. Normally it is an [`arc_swap::ArcSwap`]. arc-swap is
//! opaque to loom, so under `cfg(loom)` it is modelled by a loom
//! `Mutex<Arc<T>>` with the same four operations and the same guarantees
//! (each operation is atomic and sequentially consistent); everything around
//! it (the writer mutex, the clone-modify-publish sequence, where old
//! versions are dropped) is the shipped code in both builds.

use std::sync::PoisonError;

#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Locks `mu`, ignoring poisoning.
///
/// Every mutex of this crate is taken through here. A panic while one is
/// held never leaves the crate's own bookkeeping half-updated (each holder
/// documents why), so poisoning carries no information for us; a user
/// closure that panics under the registry lock leaves the user state as the
/// closure left it, which the registry documents.
pub(crate) fn lock<T>(mu: &Mutex<T>) -> MutexGuard<'_, T> {
    mu.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The published pointer of an [`RcuCell`](crate::RcuCell): `ArcSwap<T>`.
#[cfg(not(loom))]
pub(crate) struct SnapshotSlot<T> {
    /// The current version. `load*` are acquire-or-stronger and `swap` is
    /// SeqCst (arc-swap's documented guarantees), so all writes into a `T`
    /// made before `swap` publishes it happen-before any read of it through
    /// a load that returns it.
    ptr: arc_swap::ArcSwap<T>,
}

#[cfg(not(loom))]
impl<T> SnapshotSlot<T> {
    /// A slot publishing `v`.
    pub(crate) fn new(v: Arc<T>) -> Self {
        SnapshotSlot {
            ptr: arc_swap::ArcSwap::new(v),
        }
    }

    /// A new reference to the current version (lock-free; wait-free on
    /// arc-swap's fast path, see the crate doc).
    pub(crate) fn load_full(&self) -> Arc<T> {
        self.ptr.load_full()
    }

    /// Runs `f` on the current version without touching its reference count
    /// (arc-swap's debt-slot guard).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.ptr.load())
    }

    /// Publishes `v` and returns the version it replaced.
    pub(crate) fn swap(&self, v: Arc<T>) -> Arc<T> {
        self.ptr.swap(v)
    }
}

/// The loom model of the published pointer: a loom mutex around the `Arc`.
#[cfg(loom)]
pub(crate) struct SnapshotSlot<T> {
    /// The current version; each operation holds the lock only to clone or
    /// replace the `Arc`.
    ptr: Mutex<Arc<T>>,
}

#[cfg(loom)]
impl<T> SnapshotSlot<T> {
    /// A slot publishing `v`.
    pub(crate) fn new(v: Arc<T>) -> Self {
        SnapshotSlot { ptr: Mutex::new(v) }
    }

    /// A new reference to the current version.
    pub(crate) fn load_full(&self) -> Arc<T> {
        lock(&self.ptr).clone()
    }

    /// Runs `f` on the current version (on a clone of the `Arc`, so that `f`
    /// runs outside the model's lock, as it runs outside any lock for real).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.load_full())
    }

    /// Publishes `v` and returns the version it replaced.
    pub(crate) fn swap(&self, v: Arc<T>) -> Arc<T> {
        std::mem::replace(&mut *lock(&self.ptr), v)
    }
}

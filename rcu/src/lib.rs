//! Read-copy-update snapshots and a registry of in-progress jobs over key
//! ranges: the concurrency primitives of the WCFS engine.
//!
//! Readers of the engine (every FUSE READ) work on immutable snapshots of
//! its state and must never wait for the single writer that, on every
//! commit, publishes a new version. [`RcuCell`] gives exactly that: a
//! [`load`](RcuCell::load) that takes no lock and returns a [`Snapshot`] that
//! stays valid while held, and an [`update`](RcuCell::update) that clones,
//! modifies and publishes, with concurrent writers serialized inside the
//! cell so that no update is lost.
//!
//! Some reads need work first (ΔBtail rebuilds the history of keys that were
//! just tracked). [`JobRegistry`] lets a reader find out, atomically with a
//! look at its own state, which in-progress jobs cover the keys it needs,
//! register a job for the keys it will build itself, and then wait for
//! exactly those other jobs ([`JobWait`]) instead of for a global lock.
//!
//! # Organization
//!
//! 1. `sync`: std or loom primitives, and the published pointer (arc-swap,
//!    or its loom model).
//! 2. [`RcuCell`] / [`Snapshot`] (`cell.rs`): load → snapshot; update →
//!    writer mutex → clone-modify → publish → release the old version.
//! 3. [`JobRegistry`] (`jobs.rs`): lock → look at `S`, [`start`] own job,
//!    collect [`overlapping`] → unlock → work → [`finish_with`] (update `S`,
//!    unlist, publish, wake) → [`wait`] for the collected jobs.
//!
//! [`start`]: RegistryGuard::start
//! [`overlapping`]: RegistryGuard::overlapping
//! [`finish_with`]: JobHandle::finish_with
//! [`wait`]: JobWait::wait
//!
//! # Invariants
//!
//! - `s = cell.load()` ⇒ `*s` never changes and stays alive until the last
//!   clone of `s` is dropped; then it is dropped exactly once.
//! - published versions of a cell = its updates in writer-mutex order, each
//!   computed from its predecessor (no lost update).
//! - under the registry lock: in-progress jobs are pairwise disjoint;
//!   `in_progress() = ⋃ jobs.keys`; `job listed ⇔ outcome unpublished`.
//! - every job ends exactly once (result or [`Abandoned`]); a dropped
//!   [`JobHandle`] abandons, so no waiter hangs.
//!
//! # Concurrency
//!
//! | who | does | takes | may overlap with |
//! | --- | --- | --- | --- |
//! | readers | `RcuCell::load`, `with` | nothing | everything |
//! | writers | `RcuCell::update*`, `store`, `replace` | the cell's `writer_mu` | readers; other writers wait |
//! | query | `JobRegistry::lock` … drop | registry lock | job workers; waiters |
//! | worker | `JobHandle::finish*`, drop | registry lock, then job lock | other workers' work; waiters |
//! | waiter | `JobWait::wait`, `is_done` | that job's lock | everything but its job's end |
//!
//! # Locking organization
//!
//! Lock order: `registry lock > job lock`. The cell's `writer_mu` and both
//! registry locks are leaf locks: nothing of this crate takes another lock
//! under them, and the only foreign code run under them is the closure
//! passed by the caller (update closures, `finish_with`/`abandon_with`
//! closures, abandon hooks, `R::clone` under the job lock), which must not
//! block. Never wait for a job or end one while holding its registry's
//! [`RegistryGuard`] (the lock is not reentrant).
//!
//! # Memory orders
//!
//! This crate declares no atomics of its own; it relies on two
//! synchronizes-with edges:
//! - **publish → load.** The writer builds the new `T` completely, then
//!   `ArcSwap::swap` (SeqCst) publishes its pointer; a reader's `load_full`
//!   (at least Acquire on the pointer and on arc-swap's debt slots) that
//!   returns that pointer therefore sees the whole `T`. Reclamation is by
//!   reference count: arc-swap either takes a real reference or records a
//!   debt that the writer pays (turns into a reference) before it drops its
//!   own, so the old version is freed only after the last reader's
//!   `Snapshot` is dropped (`Arc`'s Release decrement / Acquire fence).
//! - **writer → writer.** All swaps happen under `writer_mu`; the mutex's
//!   release/acquire orders a writer's swap before the next writer's load,
//!   which thus returns the latest version.
//! - **job end → waiter.** The outcome is written under the job lock and
//!   the condvar is notified after; a waiter reads it under the same lock.
//!   Registry state (`S`, jobs, coverage) is only touched under the registry
//!   lock.
//!
//! # Backend: arc-swap, not crossbeam-epoch
//!
//! Measured with one writer publishing (`./dev bench rcu`, ns per keepable
//! load per reader thread, 1 / 2 readers): writer back to back, arc-swap
//! 20.3 / 34.5, crossbeam-epoch + `Arc` 20.9 / 36.2, `RwLock<Arc<T>>` 22.1 /
//! 55.5; writer every 50 µs, 13.3 / 26.2, 10.6 / 18.0, 14.3 / 23.4. The two
//! RCU backends are within noise to a few ns of each other; arc-swap is
//! chosen for immediate, deterministic reclamation of replaced versions
//! and for needing no `unsafe`. The full table and the reasoning are in
//! [`docs::backend`].
//!
//! # Testing
//!
//! Unit tests in each module; `tests/stress.rs` mixes loads, updates and
//! jobs on several threads and checks the invariants; `tests/loom.rs`
//! (`RUSTFLAGS="--cfg loom" cargo test -p rcu --release --test loom`)
//! explores publish/reclaim, update serialization and the job protocol.
//! Under loom, arc-swap is replaced by a loom `Mutex<Arc<T>>` model (loom
//! cannot see inside arc-swap): loom checks our writer mutex, publish
//! sequence, release of old versions and the whole job registry, and the
//! real arc-swap path is covered by Miri (`cargo +nightly miri test -p rcu`)
//! and the stress test. The loom models were checked to fail when the
//! writer mutex is removed from `update` (lost update) and when `finish`
//! does not notify (deadlock).
//!
//! # Notation
//!
//! `S`: user state kept under the registry lock. `R`: a job's result.
//! Key sets are `rangeset::RangedKeySet` of closed `KeyRange`s, printed
//! half-open as `[lo,hi+1)`.

#![forbid(unsafe_code)]

mod cell;
pub mod docs;
mod jobs;
mod sync;

pub use cell::{RcuCell, Snapshot};
pub use jobs::{Abandoned, JobHandle, JobRegistry, JobWait, Overlap, RegistryGuard};
pub use rangeset::{KeyRange, RangedKeySet};

//! Design notes (documentation only, no code).

pub mod backend {
    //! Why [`RcuCell`](crate::RcuCell) is built on `arc-swap` and not on
    //! `crossbeam-epoch`.
    //!
    //! The engine loads the snapshot on every FUSE READ and keeps it across
    //! calls (possibly moving it to another thread), and replaces it on
    //! every commit. So a load must hand out something `Send` that outlives
    //! the call: with either backend that is an `Arc<T>`, i.e. one
    //! reference-count increment per load on top of the backend's own read
    //! protocol.
    //!
    //! Measured by `benches/load.rs` (`./dev bench rcu`, i.e. `cargo bench
    //! -p rcu -- --warm-up-time 1 --measurement-time 3`; 2 shared cores,
    //! criterion median, ns per load per reader thread, all rows of one run):
    //!
    //! | writer | readers | `RcuCell::load` (arc-swap) | `RcuCell::with` | epoch + `Arc` | epoch, pinned only | `RwLock<Arc<T>>` + clone | `RwLock<T>` read |
    //! | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
    //! | back to back | 1 | 20.3 | 12.2 | 20.9 | 11.4 | 22.1 | 13.4 |
    //! | back to back | 2 | 34.5 | 24.3 | 36.2 | 18.0 | 55.5 | 41.4 |
    //! | every 50 µs | 1 | 13.3 | | 10.6 | | 14.3 | 8.7 |
    //! | every 50 µs | 2 | 26.2 | | 18.0 | | 23.4 | 14.2 |
    //!
    //! An earlier run of the back-to-back rows gave 44 / 31 ns (1 reader)
    //! and 60 / 66 ns (2 readers) for arc-swap / epoch + `Arc`: between the
    //! two keepable loads the difference is within the noise of this
    //! machine under a saturating writer, and epoch is ahead by 3 to 8 ns
    //! with a commit-like writer. The back-to-back writer published about
    //! 2x more versions per second through arc-swap (10.6 M/s) than through
    //! epoch (4.7 M/s).
    //!
    //! Decision: arc-swap, because at equal-or-few-ns load cost
    //! - reclamation is immediate and deterministic: a replaced version is
    //!   freed when its last `Snapshot` goes (by the writer's `swap` if no
    //!   reader holds it), whereas epoch defers it until every pinned thread
    //!   has moved on and a batch of garbage is collected, so whole engine
    //!   states replaced on every commit would linger in memory;
    //! - it needs no `unsafe` (`#![forbid(unsafe_code)]` holds here), while
    //!   the epoch cell needs unsafe pointer dereferences and
    //!   `defer_destroy`;
    //! - a few ns per load are noise against a FUSE READ round trip
    //!   (microseconds: a system call and a context switch each way).
    //!
    //! Revisit if profiles ever show loads: the cheapest reads are the ones
    //! that keep nothing (`RcuCell::with`, or an epoch pin), about half the
    //! cost of a keepable snapshot.
    //!
    //! What this costs in testing: loom cannot see inside arc-swap, so the
    //! loom models run against a loom-mutex model of the pointer (see the
    //! crate doc's Testing section); the arc-swap path itself is exercised
    //! by Miri and the stress test.
}

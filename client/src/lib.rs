//! The WCFS client library: isolated, read-only memory mappings of
//! ZBigFiles served by a mounted wcfs, as of a chosen database state.
//!
//! A mapping of bigfile `f` as of `@at` is built from `head/bigfile/f`
//! (shared page cache, almost always up to date) with single blocks
//! replaced by `@<rev>/bigfile/f` where the server says the head data is
//! newer than `at` (a *pin*, wcfs-protocol.md §5, §6). The server sends
//! pins through the watch link `head/watch`, synchronously with the access
//! that made them necessary, so they are handled by a separate thread per
//! [`Conn`], the *pinner*.
//!
//! # Organization
//!
//! 1. [`WCFS::open`] / [`WCFS::from_zurl`]: the mount (`mountpoint.rs`).
//! 2. [`WCFS::connect`]`(at)` → [`Conn`]: waits for `head/at >= at`, opens
//!    `head/watch` (`wlink.rs`), starts the pinner (`conn.rs`), asks for
//!    early pins (below).
//! 3. [`Conn::open`]`(foid)` → [`FileH`]: stats `head/bigfile/<foid>`,
//!    registers the file, sends `watch <foid> @<at>`; pins arriving before
//!    `ok` are recorded by the pinner (`fileh.rs`).
//! 4. [`FileH::mmap`] → [`Mapping`]: head data, zeros past the file size,
//!    then the recorded pins.
//! 5. pinner: `pin <oid> #<blk> @<rev>` → remap that block in every
//!    mapping of the file, record it, `ack`.
//! 6. [`Conn::resync`]`(at')`: move the view; re-stat, map grown tails,
//!    re-watch every file at `at'` (the server pins/unpins the difference).
//! 7. close: `watch <foid> -` per file, mappings PROT_NONE; `bye`; EOF.
//!
//! # Invariants
//!
//! - `blk ∈ FileH.pinned ⇔` every mapping covering `blk` maps it from
//!   `@pinned[blk]` (or zeros if that file is shorter).
//! - a mapping's bytes past `headfsize` are zeros (never SIGBUS);
//!   `headfsize` never decreases (files only grow).
//! - a registered mapping range is mapped: `Mapping::drop` unregisters
//!   under `mmap_mu` before it unmaps, and remapping happens only under
//!   `mmap_mu` on registered ranges.
//!
//! # Concurrency
//!
//! | thread | does | locks |
//! |---|---|---|
//! | user: `open`, file close, `Conn::close` | table updates, watch requests (wait for the server) | `at_mu` R, `watch_mu`, `fileh_mu` W briefly |
//! | user: `resync` | local part, then watch requests | `at_mu` W, then downgraded to R; `watch_mu` |
//! | user: `mmap`, `Mapping::drop` | map / unmap | `mmap_mu` |
//! | pinner | reads the link, handles pins, delivers replies | `at_mu` R (recursive), `fileh_mu` R (recursive), `mmap_mu` |
//!
//! The pinner is re-entered synchronously through the server: a user
//! thread waiting for `ok` (holding `at_mu` R) needs the pinner to handle
//! the pins the server sends first. So:
//!
//! - nothing waits for the server with `mmap_mu` held, or with `fileh_mu`
//!   held (a FUSE lookup counts as waiting: `open` opens the head file
//!   before taking `fileh_mu`), or with `at_mu` W held;
//! - the pinner takes `at_mu` and `fileh_mu` with `read_recursive`:
//!   parking_lot's `read` blocks new readers while a writer is queued
//!   (fairness), and a writer can be queued (resync waiting for `at_mu` W)
//!   behind a reader that waits for the server which waits for the pinner;
//!   a recursive read does not queue behind writers, so that cycle cannot
//!   form;
//! - user memory accesses to mappings never happen with our locks held
//!   (an access can fault into the server, which pins us).
//!
//! # Early pins
//!
//! A page fault the kernel retries (`FAULT_FLAG_TRIED`) reads a page
//! again *holding the process's mmap lock* if a commit dropped it between
//! the two attempts. If that READ needs our pin, the pinner's
//! `mmap(MAP_FIXED)` waits for that very lock: a deadlock that only the
//! server's pin timeout ends, by killing us. So `connect` sends
//! `option early-pins`: our server then pins our watches before it drops a
//! changed block from head/'s cache, while the old page is still there for
//! a retried fault to find. The original server answers `error` and keeps
//! lazy pins (and the window).
//!
//! # Locking organization
//!
//! `Conn::at_mu > FileHInner::watch_mu > Conn::fileh_mu > FileHInner::mmap_mu`
//!
//! - `at_mu` (RwLock): the view `at`; W while it changes (resync's local
//!   part, which also changes `headfsize`), R while it must stay.
//! - `watch_mu` (Mutex, per file): serializes a file's watch requests and
//!   its open/close transitions; waited on by whoever finds the file
//!   opening or closing. Never taken by the pinner.
//! - `fileh_mu` (RwLock): oid → file table, file `state` transitions and
//!   the "last handle" decision.
//! - `mmap_mu` (Mutex, per file): the mapping registry, `pinned`,
//!   `headfsize`, the head and `@rev` descriptors.
//! - leaf locks inside the watch link: `pending` (reply slots, down state)
//!   and `tx_mu` (one writer at a time).
//!
//! # Fork
//!
//! See `fork.rs`: the child detaches (descriptors to /dev/null, mappings
//! PROT_NONE, nothing sent), and every pre-fork object fails with
//! [`Error::Forked`] there.
//!
//! # Notation
//!
//! `foid`: the file's oid; `blk`: block number; `@rev`: `@<16 hex>`;
//! `@head`: unpin; `headfsize`: head file size as of the view.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod conn;
pub mod error;
mod fileh;
mod fork;
mod mm;
mod mountpoint;
/// The `head/watch` wire format: the `wire` crate, shared with the server.
pub use wire as proto;
mod wlink;

pub use conn::{Conn, WCFS};
pub use error::{Error, Result};
pub use fileh::{FileH, Mapping};
pub use ztypes::{Oid, Tid};

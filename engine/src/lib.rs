//! The WCFS engine: from raw ZODB changes to "which blocks of which
//! ZBigFiles changed when".
//!
//! - [`ztail`]: ΔZtail ([`ztail::DeltaZTail`]), the raw history: which
//!   objects each transaction in `(tail, head]` changed, and when an object
//!   last changed as of a revision;
//! - [`treediff`]: the change of one BTree between two states restricted to
//!   the tracked keys, forward (Update) and backward (rebuilding the history
//!   of keys tracked late), in time proportional to the changed part;
//! - [`btail`]: ΔBtail ([`btail::DeltaBTail`]), the history of tracked keys
//!   of BTrees: Track, Update, ForgetPast, SliceByRev, SliceByRootRev,
//!   GetAt;
//! - [`ftail`]: ΔFtail ([`ftail::DeltaFTail`]), the same for ZBigFile
//!   blocks, with file epochs: Track, Update, ForgetPast, SliceByRev,
//!   SliceByFileRev, BlkRevAt;
//! - [`pptree`]: PPTreeSubSet ([`pptree::PPTreeSubSet`]), parent-closed
//!   sets of tree nodes, and ΔPPTreeSubSet ([`pptree::DeltaPPTreeSubSet`]),
//!   for BTree-diff users that keep tracked node sets themselves;
//! - [`error`]: the crate's [`Error`];
//! - `testkit` (behind the `testkit` feature): the topology encoding, a
//!   generator that commits trees of exact topologies, the enumerator of
//!   all topologies.
//!
//! # Concurrency
//!
//! ΔBtail and ΔFtail take one writer (`update`, `forget_past`) or any
//! number of readers (`track` and the queries) at a time; the caller
//! guarantees it (the server holds its head lock for writing around
//! `update`). Readers never wait for each other unless one needs history
//! that another is computing: histories are RCU snapshots ([`rcu`]), and the
//! history of keys tracked late is rebuilt by the first query that needs it
//! as a job over exactly those keys, which other queries for those keys
//! wait for. See [`btail`] for the locks and their order.
//!
//! # Example
//!
//! ```
//! use engine::ftail::DeltaFTail;
//! use std::sync::Arc;
//! use zodb::zbigfile::{ZBigFile, ZBlkFormat};
//! use zodb::zwrite::ZWriter;
//! use zodb::Storage;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("Data.fs");
//! let mut zw = ZWriter::open(&path)?;
//! let (foid, at0) = zw.create_file("f", 8, &[(0, Some((ZBlkFormat::ZBlk0, b"hello")))])?;
//!
//! // The engine follows the database from at0; the server tracks what it serves.
//! let db: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path)?);
//! let ft = DeltaFTail::new(at0, db.clone());
//! let file = ZBigFile::load(&*db, foid, at0)?;
//! let blk = file.load_blk(&*db, 0, at0)?;
//! ft.track(&file, 0, &blk.path, blk.keycov, blk.zblk)?;
//!
//! // Someone commits a change to block 0; feed the transaction to the engine.
//! let at1 = zw.update_file(foid, &[(0, Some((ZBlkFormat::ZBlk0, b"world")))])?;
//! db.sync()?;
//! let txn = db.iterate(at1, at1)?.next().expect("one transaction")?;
//! let df = ft.update(at1, &txn.oids)?;
//! assert!(df.by_file[&foid].blocks.contains(&0));
//!
//! // Block 0 as of at0 last changed at or before the tail; as of at1, at at1.
//! assert_eq!(ft.blk_rev_at(foid, 0, at0)?, (at0, false));
//! assert_eq!(ft.blk_rev_at(foid, 0, at1)?, (at1, true));
//! # Ok(())
//! # }
//! ```
//!
//! Notation: `ΔZtail` = `DeltaZTail`, `δZ` = [`ztail::DeltaZ`] (one
//! transaction's changed oids), `ΔPPTreeSubSet` = `DeltaPPTreeSubSet`,
//! `ø` = [`zodb::Oid::INVALID`] (no parent / embedded bucket / no value),
//! `(lo, hi]` = revisions after `lo` up to and including `hi`, `rev↑` =
//! ascending.

#![forbid(unsafe_code)]

pub mod btail;
pub mod error;
pub mod ftail;
pub mod pptree;
pub mod treediff;
pub mod ztail;

pub use error::Error;

#[cfg(feature = "testkit")]
pub mod testkit;

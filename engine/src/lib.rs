//! The WCFS engine: from raw ZODB changes to "which blocks of which
//! ZBigFiles changed when" (ΔBtail, ΔFtail, treediff). Being built; so far:
//!
//! - [`ztail`]: ΔZtail ([`ztail::DeltaZTail`]), the raw history — which
//!   objects each transaction in `(tail, head]` changed, and when an object
//!   last changed as of a revision;
//! - [`pptree`]: PPTreeSubSet ([`pptree::PPTreeSubSet`]), the parent-closed
//!   set of tracked BTree nodes, and ΔPPTreeSubSet
//!   ([`pptree::DeltaPPTreeSubSet`]), a change to it;
//! - [`error`]: the crate's [`Error`];
//! - `testkit` (behind the `testkit` feature): test tooling.
//!
//! Notation: `ΔZtail` = `DeltaZTail`, `δZ` = [`ztail::DeltaZ`] (one
//! transaction's changed oids), `ΔPPTreeSubSet` = `DeltaPPTreeSubSet`,
//! `ø` = [`zodb::Oid::INVALID`] (no parent / embedded bucket), `(lo, hi]` =
//! revisions after `lo` up to and including `hi`, `rev↑` = ascending.

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

//! The WCFS engine: from raw ZODB changes to "which blocks of which
//! ZBigFiles changed when" (ΔBtail, ΔFtail, treediff). Being built; so far
//! only its test tooling exists (module `testkit`, behind the `testkit` feature).

#![forbid(unsafe_code)]

#[cfg(feature = "testkit")]
pub mod testkit;

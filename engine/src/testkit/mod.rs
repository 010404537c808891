//! Test tooling for BTree-diff users (behind the `testkit` feature).
//!
//! - [`topology`]: the text encoding of a tree's exact shape, e.g.
//!   `T3/T-T/B1-T5/B-B7,8,9`, and reading the shape of a stored tree;
//! - [`treegen`]: commit a tree with exactly a given topology and content
//!   into a FileStorage;
//! - [`allstructs`]: enumerate every topology of a key set within bounds on
//!   depth and fanout.

pub mod allstructs;
pub mod topology;
pub mod treegen;

//! ZODB for WCFS: storage drivers, pickles, BTrees and ZBigFile data.
//!
//! This crate is everything WCFS knows about ZODB. Layers, bottom up:
//!
//! 1. [`types`]: [`Oid`] and [`Tid`].
//! 2. [`pickle`]: the pickle decoder/encoder ZODB records are made of.
//! 3. [`storage`]: the [`Storage`] trait; [`fs1`] implements it for
//!    FileStorage (`Data.fs`), read side and write side; [`zeo`] is a
//!    read-only ZEO client; [`zurl`] opens a storage from a URL.
//! 4. [`record`]: an object record as class + state, persistent references.
//! 5. [`btree`]: `LOBTree`/`IOBTree` nodes: decode, encode, path lookup,
//!    changing a tree as BTrees does.
//! 6. [`zbigfile`]: wendelin.core `ZBigFile`, `ZBlk0`, `ZBlk1`, `ZData`:
//!    loading a block gives its bytes, the BTree path to it and an upper bound
//!    of its revision.
//!
//! Errors are one typed enum, [`Error`].

// One module holds unsafe code: fs1's read-only mapping of the committed
// part of Data.fs (`fs1/map.rs`, with its SAFETY argument). Everything else
// is safe Rust; `deny` (not `forbid`) lets that module opt in alone.
#![deny(unsafe_code)]

pub mod btree;
pub mod demo;
pub mod error;
pub mod fs1;
pub mod pickle;
pub mod record;
pub mod storage;
pub mod types;
pub mod zbigfile;
pub mod zeo;
pub mod zurl;
pub mod zwrite;

pub use error::{Error, Result};
pub use storage::{Loaded, Storage, TxnInfo, Watcher};
pub use types::{Oid, Tid};

//! `Oid` and `Tid`: ZODB object and transaction identifiers (they live in
//! the `ztypes` crate, shared with the client library).

pub use ztypes::ids::*;

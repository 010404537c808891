//! The identifiers WCFS shares between its server, its client and its
//! storage drivers: ZODB object and transaction ids ([`Oid`], [`Tid`]) and
//! database URLs ([`zurl`]: parsing, the normalized form and the default
//! mountpoint). A small crate so that the client library does not depend
//! on the storage drivers.

pub mod ids;
pub mod zurl;

pub use ids::{Oid, ParseIdError, Tid};
pub use zurl::ZurlError;

//! Typed errors of the zodb crate.
//!
//! One enum for the whole crate so that callers (the engine, the FUSE shell)
//! can match on what went wrong: a missing object is not corruption, and
//! corruption is not an I/O error. Each variant carries the context needed to
//! act on it or to print a useful one-line message.

use crate::pickle::PickleError;
use crate::types::{Oid, Tid};
use std::io;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when reading or writing a ZODB database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database has no object with this oid at all, at any revision.
    #[error("{oid}: no such object")]
    NoSuchObject {
        /// The object asked for.
        oid: Oid,
    },

    /// The object exists in the database, but was created after `at`.
    #[error("{oid}: object did not exist yet @{at} (created @{created})")]
    NotYet {
        /// The object asked for.
        oid: Oid,
        /// The database state asked for.
        at: Tid,
        /// The transaction that created the object (its first revision).
        created: Tid,
    },

    /// The object was deleted (or its creation undone) as of `at`.
    #[error("{oid}: object was deleted @{deleted_at} (asked @{at})")]
    Deleted {
        /// The object asked for.
        oid: Oid,
        /// The database state asked for.
        at: Tid,
        /// The transaction that deleted it.
        deleted_at: Tid,
    },

    /// The database file is corrupt (or truncated) at `offset`.
    #[error("{}: corrupt at offset {offset}: {what}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad bytes are.
        offset: u64,
        /// What is wrong there.
        what: String,
    },

    /// An I/O error from the operating system.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Another process holds the database's write lock.
    #[error("{}: database is locked by another process", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// An object's pickle could not be decoded.
    #[error("{oid}: {source}")]
    Pickle {
        /// The object whose record is bad.
        oid: Oid,
        /// What the decoder found.
        #[source]
        source: PickleError,
    },

    /// An object's state is well-formed pickle but not what its class requires
    /// (for example a ZBigFile whose blktab is not an LOBTree).
    #[error("{oid}: {what}")]
    BadState {
        /// The object.
        oid: Oid,
        /// What is wrong with it.
        what: String,
    },

    /// The object is of another class than the one expected.
    #[error("{oid}: is not a {expected} (it is {class})")]
    WrongClass {
        /// The object.
        oid: Oid,
        /// What the caller wanted, e.g. `ZBigFile`.
        expected: &'static str,
        /// The object's class path.
        class: String,
    },

    /// A database URL that we cannot parse or have no driver for.
    #[error("zurl {zurl:?}: {what}")]
    BadZurl {
        /// The URL as given.
        zurl: String,
        /// What is wrong with it.
        what: String,
    },

    /// A request that the storage cannot serve by design
    /// (e.g. writing to a read-only storage).
    #[error("{0}")]
    Unsupported(String),

    /// The storage or watcher was closed while the call was waiting.
    #[error("storage closed")]
    Closed,

    /// A watcher's storage moved on to `head` and cannot say which objects
    /// changed since the last transaction reported (e.g. a ZEO server that
    /// cannot iterate after a reconnect): assume everything did. The
    /// watcher goes on after `head`.
    #[error("changes up to @{head} unknown: {why}")]
    ChangesUnknown {
        /// The state the storage is at now.
        head: Tid,
        /// Why they are unknown.
        why: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }

    /// Shorthand for [`Error::BadState`].
    pub fn bad_state(oid: Oid, what: impl Into<String>) -> Error {
        Error::BadState {
            oid,
            what: what.into(),
        }
    }

    /// True for the three "the object is not there at that state" errors.
    pub fn is_no_object(&self) -> bool {
        matches!(
            self,
            Error::NoSuchObject { .. } | Error::NotYet { .. } | Error::Deleted { .. }
        )
    }
}

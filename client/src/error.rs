//! The client's error type.

use std::io;
use std::path::PathBuf;
use ztypes::{Oid, Tid};

/// Result of client operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
///
/// Server misbehaviour and bad input are errors, never panics. Errors that
/// take a connection down ([`Error::Down`]) are sticky: every later
/// operation of that [`Conn`](crate::Conn) returns `Down` with the same
/// reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a path failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The file the call was about.
        path: PathBuf,
        /// What was attempted (`open`, `fstat`, `mmap`, ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A system call not tied to a path failed (mmap of zeros, writes on
    /// the watch link, ...).
    #[error("{op}: {source}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A file of the mount does not have the expected form (bad `head/at`,
    /// size not a multiple of blksize, blksize changed, file shrank, ...).
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The server replied `error <text>` to a watch request; the link stays
    /// up (but `open` fails, and `resync` closes the connection).
    #[error("wcfs: {req}: {text}")]
    Server {
        /// The request, e.g. `watch 0000000000000001 @0285cbac3851eb99`.
        req: String,
        /// The server's text after `error `.
        text: String,
    },
    /// The server sent something outside the grammar.
    #[error("wcfs: protocol error: {0}")]
    Protocol(String),
    /// The connection is down: the link got EOF or an error, the server sent
    /// `0 error:`/`0 fatal:`, a pin could not be handled, or a resync
    /// failed. Sticky.
    #[error("wcfs: connection down: {0}")]
    Down(String),
    /// The connection was closed by [`Conn::close`](crate::Conn::close).
    #[error("wcfs: connection closed")]
    Closed,
    /// The file handle was closed (its connection closed it, or the process
    /// forked since).
    #[error("wcfs: file {0}: closed")]
    FileClosed(Oid),
    /// The object was created before a `fork`: in the child it is detached
    /// from the server and every operation fails.
    #[error("wcfs: used in a forked child (connections do not survive fork)")]
    Forked,
    /// A bad argument (block range, resync backwards, ...).
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    /// A zurl whose default mountpoint cannot be computed, or whose mount
    /// serves another database.
    #[error("zurl {zurl:?}: {reason}")]
    Zurl {
        /// The zurl.
        zurl: String,
        /// What is wrong.
        reason: String,
    },
    /// `resync` was asked to go back in time.
    #[error("resync @{to}: going back from @{from} is forbidden")]
    Backwards {
        /// The Conn's view.
        from: Tid,
        /// The requested view.
        to: Tid,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }

    pub(crate) fn sys(op: &'static str) -> Error {
        Error::Sys {
            op,
            source: io::Error::last_os_error(),
        }
    }
}

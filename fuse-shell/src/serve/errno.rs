//! Errors of the filesystem and the one place that turns them into an errno
//! and a log line (the policy of wcfs `err2LogStatus`).

use std::fmt;
use zodb::Oid;

/// What a filesystem operation can fail with.
#[derive(Debug)]
pub enum FsError {
    /// Bad input from the user (a name that is not `@<tid>` or an oid, an
    /// object that is not a ZBigFile): EINVAL and a warning.
    Inval(String),
    /// Nothing there (yet): ENOENT, no log line.
    NoEnt,
    /// The database failed us while serving `oid` (corrupt record, I/O
    /// error): EIO and an error log with the context.
    Db {
        /// What we were doing, e.g. `"read blk #3"`.
        what: String,
        /// The file concerned.
        oid: Oid,
        /// The cause.
        err: anyhow::Error,
    },
    /// An errno passed through as is: no log line.
    Errno(fuser::Errno),
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::Inval(m) => write!(f, "invalid argument: {m}"),
            FsError::NoEnt => write!(f, "no such file or directory"),
            FsError::Db { what, oid, err } => write!(f, "{oid}: {what}: {err:#}"),
            FsError::Errno(e) => write!(f, "{e:?}"),
        }
    }
}

impl FsError {
    /// The errno to reply with; logs what the policy says to log.
    pub fn errno(&self) -> fuser::Errno {
        match self {
            FsError::Inval(_) => {
                tracing::warn!("{self}");
                fuser::Errno::EINVAL
            }
            FsError::NoEnt => fuser::Errno::ENOENT,
            FsError::Db { .. } => {
                tracing::error!("{self}");
                fuser::Errno::EIO
            }
            FsError::Errno(e) => *e,
        }
    }

    /// The errno without logging (for tests of the table).
    #[cfg(test)]
    fn errno_quiet(&self) -> fuser::Errno {
        match self {
            FsError::Inval(_) => fuser::Errno::EINVAL,
            FsError::NoEnt => fuser::Errno::ENOENT,
            FsError::Db { .. } => fuser::Errno::EIO,
            FsError::Errno(e) => *e,
        }
    }
}

/// An error while loading the object that a lookup in `bigfile/` names:
/// a missing object, one without data or of another class is bad input
/// (EINVAL, as in wcfs); anything else (corruption, I/O) is EIO.
pub fn lookup_error(oid: Oid, e: zodb::Error) -> FsError {
    use zodb::Error as E;
    match e {
        E::NoSuchObject { .. } | E::NotYet { .. } | E::Deleted { .. } | E::WrongClass { .. } => {
            FsError::Inval(format!("{oid}: {e}"))
        }
        e => FsError::Db {
            what: "load ZBigFile".into(),
            oid,
            err: e.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let oid = Oid(1);
        assert_eq!(
            FsError::Inval("x".into()).errno_quiet(),
            fuser::Errno::EINVAL
        );
        assert_eq!(FsError::NoEnt.errno_quiet(), fuser::Errno::ENOENT);
        assert_eq!(
            FsError::Errno(fuser::Errno::EROFS).errno_quiet(),
            fuser::Errno::EROFS
        );
        let e = lookup_error(oid, zodb::Error::NoSuchObject { oid });
        assert_eq!(e.errno_quiet(), fuser::Errno::EINVAL);
        let e = lookup_error(
            oid,
            zodb::Error::Corrupt {
                path: "Data.fs".into(),
                offset: 4,
                what: "bad".into(),
            },
        );
        assert_eq!(e.errno_quiet(), fuser::Errno::EIO);
        assert!(e.to_string().contains("offset 4"), "{e}");
    }
}

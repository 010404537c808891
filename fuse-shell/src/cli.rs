//! Command-line interface of `wcfs`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use zodb::Tid;

/// WCFS: serve the ZBigFiles of a ZODB database as files, with per-client
/// isolation.
///
/// A zurl names the database: a path to a FileStorage (`Data.fs`), or
/// `file:///path/to/Data.fs`.
#[derive(Debug, Parser)]
#[command(name = "wcfs", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) log: LogArgs,

    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

/// Logging options, shared by every subcommand.
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Log level: error, warn, info, debug or trace (or a tracing filter
    /// such as `zodb=debug,info`). `$WCFS_LOG` overrides it.
    #[arg(long, global = true, default_value = "warn", help_heading = "Logging")]
    pub(crate) log_level: String,

    /// Append logs to this file instead of stderr.
    #[arg(long, global = true, help_heading = "Logging")]
    pub(crate) log_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Mount the database as a filesystem and serve it until SIGINT or
    /// SIGTERM (or an unmount): head/bigfile/OID, @TID/bigfile/OID,
    /// head/at, .wcfs/{zurl,stats,pintimeout}.
    Serve {
        /// Seconds a client has to handle a pin before it is killed (for the
        /// isolation protocol; shown in .wcfs/pintimeout).
        #[arg(long, value_name = "SECS", default_value_t = 30.0)]
        pintimeout: f64,
        /// Stop when no file has been open and no request came for 60 s.
        #[arg(long)]
        autoexit: bool,
        /// Serve .wcfs/debug/zhead: a stream of one `<tid>` line per
        /// transaction, once it is fully processed (the original's tools
        /// wait on it).
        #[arg(long)]
        debug: bool,
        /// The mount's readahead in KiB (as root; 0: the kernel's). The
        /// kernel reads around a page fault and ahead of sequential reads
        /// by this much; past a block's end that pulls in the next block,
        /// which the server must then track and pin for every watcher.
        /// More is faster for sequential readers (README "Readahead").
        #[arg(long, value_name = "KIB", default_value_t = crate::serve::DEFAULT_READAHEAD_KB)]
        readahead_kb: u32,
        /// The database.
        zurl: String,
        /// Where to mount (created if missing). Default:
        /// `/dev/shm/wcfs/<sha1 of the normalized zurl>`, which `wcfs status`
        /// and `wcfs stop` find from the zurl alone.
        mountpoint: Option<PathBuf>,
    },
    /// Write a ZBigFile's bytes (or one block of it) to stdout.
    Cat {
        /// The database.
        zurl: String,
        /// The ZBigFile's oid (16 hex digits).
        oid: zodb::Oid,
        /// Show the file as of this database state (16 hex digits) instead
        /// of the latest.
        #[arg(long)]
        at: Option<Tid>,
        /// Write only block N (blksize bytes; blocks past the end read as zeros).
        #[arg(long, value_name = "N")]
        blk: Option<i64>,
    },
    /// List the ZBigFiles reachable from the database root: oid, blksize, size.
    Ls {
        /// The database.
        zurl: String,
        /// List as of this database state instead of the latest.
        #[arg(long)]
        at: Option<Tid>,
    },
    /// Create a demo FileStorage holding two ZBigFiles (one ZBlk0, one ZBlk1),
    /// committed over several transactions.
    Mkdemo {
        /// Path of the Data.fs to create (must not exist).
        path: PathBuf,
        /// Number of 2 MiB blocks per file.
        #[arg(long, default_value_t = 8)]
        blocks: u32,
    },
    /// Say whether a wcfs serves the database: mountpoint, server pid and
    /// head/at; exit non-zero with the reason if not.
    Status {
        /// The database, as given to `wcfs serve`.
        zurl: String,
        /// The mountpoint (default: derived from the zurl).
        #[arg(long, value_name = "M")]
        mountpoint: Option<PathBuf>,
    },
    /// Stop the wcfs serving the database, whatever state it is in (clean
    /// unmount, else abort the FUSE connection, unmount lazily, kill the
    /// server), and remove the mountpoint. Nothing to stop is not an error.
    Stop {
        /// The database, as given to `wcfs serve`.
        zurl: String,
        /// The mountpoint (default: derived from the zurl).
        #[arg(long, value_name = "M")]
        mountpoint: Option<PathBuf>,
    },
}

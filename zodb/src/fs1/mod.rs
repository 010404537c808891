//! FileStorage (`Data.fs`): the storage format of ZODB's `FileStorage`.
//!
//! A `Data.fs` is one append-only file: a 4-byte magic (`FS21` or `FS30`)
//! followed by transaction records, each holding the data records of the
//! objects it changed (layout in [`format`](mod@format), spec `zodb-formats.md` §2).
//! [`FileStorage`] reads such a file, written by Python ZODB or by our
//! [`Writer`], and follows it while another process commits to it.
//!
//! # Organization
//!
//! 1. **Open** ([`FileStorage::open`]): check the magic, then scan forward
//!    from offset 4 over every committed transaction (`index.rs`), building
//!    the *index* `oid -> position of the newest committed data record` and
//!    the *transaction table* `[(tid, position)]`, sorted by tid. The scan
//!    stops at the first transaction that is not committed: status `'c'`
//!    (voted, not finished), or a header or record that extends beyond the
//!    end of the file (a write in progress, or crash garbage). Everything
//!    before that point is the *committed part*, ending at `top`.
//! 2. **Load** (`reader.rs`): look the oid up in the index, read the record
//!    there from the read-only mapping of the committed part (`map.rs`;
//!    data comes back as zero-copy `Bytes`); if it is newer than `at`, follow `prev` pointers back; then
//!    follow backpointers to the record holding the data. Every header read
//!    is checked (oid, tid is a committed transaction that contains the
//!    record, pointers go strictly backwards), so corrupt files give
//!    [`Error::Corrupt`] and backpointer loops cannot hang.
//! 3. **Sync / watch** (`watch.rs`): scan forward from `top` again, with the
//!    rules of spec §2.6: never expose a `'c'` or partially written
//!    transaction, re-read from the file (never from a stale buffer) on each
//!    attempt, report a short or overlong trailing record as garbage once it
//!    has stayed unchanged for [`INCOMPLETE_TIMEOUT`], and fail if the file
//!    shrinks below `top` or is replaced (pack).
//! 4. **Write** (`writer.rs`): [`Writer`] holds `Data.fs.lock` the way
//!    zc.lockfile does and appends transactions like ZODB's
//!    `tpc_vote`/`tpc_finish`: the whole record with status `'c'`, then the
//!    status byte flipped to `' '`, `fsync`, and only then the index update.
//!
//! # Where we are stricter or simpler than ZODB
//!
//! - A transaction whose tid is not greater than the previous one, an
//!   unknown status byte, or a data record with a version is
//!   [`Error::Corrupt`]; ZODB only logs a warning for the first two. The
//!   transaction table needs strictly increasing tids.
//! - `Data.fs.index` is neither read nor written; opening always scans.
//! - The scan does not compare each record's `prev` with the index (ZODB
//!   logs mismatches); loads check every `prev` they follow.
//! - Legacy `'u'` transactions are skipped, like ZODB's index builder does.
//!
//! # Invariants
//!
//! - `index[oid] = pos ⇒ pos < top` and the record at `pos` belongs to a
//!   transaction in the table.
//! - The transaction table is strictly increasing in tid and position; its
//!   last tid is the head (`last_tid`).
//! - Bytes of the file below `top` never change while we have it open
//!   (append-only; only the writer truncates, and only above `top`).
//!
//! # Concurrency
//!
//! | who | takes | for how long |
//! |---|---|---|
//! | `load` | `state` read, then `map` (wait-free load) | one index lookup or table probe, never across I/O |
//! | `load` finding `top` past the mapping | `map_mu` | one `mmap` call |
//! | `iterate`, `txn_info` | `state` read | one table probe, never across I/O |
//! | `sync`, watchers | `scan_mu`, then `state` write | `scan_mu` for the whole scan; `state` write only to merge the result |
//! | `Writer::commit` | `scan_mu`, then `state` write | `scan_mu` from before the write to after the index update |
//!
//! Loads therefore run in parallel with each other and with a scan; they
//! read the file with positional reads (`pread`), so no seek position is
//! shared. Only one thread scans at a time (`scan_mu`), which keeps `top`
//! stable during a scan and makes the writer's append and a concurrent sync
//! of the same storage mutually exclusive.
//!
//! # Lock order
//!
//! `Core::scan_mu` > `Core::state`. `Core::map_mu` is taken alone (a load
//! that finds `top` beyond the mapping remaps after releasing `state`).

pub mod format;
mod index;
mod map;
mod oidindex;
mod reader;
mod watch;
mod writer;

#[cfg(test)]
mod tests;

pub use watch::{FileWatcher, RECHECK};
pub use writer::{NewData, NewTxn, Writer};

use crate::error::{Error, Result};
use crate::storage::{Loaded, Storage, TxnInfo, Watcher};
use crate::types::{Oid, Tid};
use arc_swap::ArcSwap;
use format::{FIRST_TXN_POS, MAGIC_FS21, MAGIC_FS30};
use index::{scan_forward, ScanOut, State, Stop};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// How long a trailing transaction that is incomplete (short header, or a
/// record extending beyond the end of file) may stay unchanged before a sync
/// reports it as garbage. A commit in progress completes much faster.
pub const INCOMPLETE_TIMEOUT: Duration = Duration::from_secs(3);

/// Read-ahead of the scans (open, sync).
const SCAN_CHUNK: usize = 1 << 20;

/// The state shared by a [`FileStorage`], its clones, its watchers and its
/// [`Writer`].
struct Core {
    path: PathBuf,
    url: String,
    /// The open database file; read with `pread` only (the writer also
    /// `pwrite`s above `top`).
    file: File,
    /// `(st_dev, st_ino)` of `file`, to notice that the path was replaced.
    ident: (u64, u64),
    /// Index, transaction table, `top` and head.
    /// Protected by: itself. Readers hold it only for a lookup; writers
    /// (sync, commit) hold it only to merge a finished scan or commit, and
    /// only while holding `scan_mu`.
    state: RwLock<State>,
    /// Read-only mapping covering at least `[0, top)` (see `map.rs`); loads
    /// read through it. Published with a wait-free swap when `top` outgrows
    /// it; old mappings stay alive while data from them is held.
    map: ArcSwap<map::Mapping>,
    /// Serializes remapping (taken only when `top` is beyond the mapping,
    /// never while holding `state`; held across the `mmap` call).
    map_mu: Mutex<()>,
    /// Set (Release) when a sync finds the file shrunk below `top`; loads
    /// check it (Acquire) and stop touching the mapping, whose pages past the
    /// new end would fault.
    broken: AtomicBool,
    /// Serializes scanning and appending; holds what a scan must remember
    /// between attempts. Order: `scan_mu` > `state`.
    scan_mu: Mutex<ScanState>,
}

/// What [`Core::sync`] remembers between calls. Protected by `Core::scan_mu`.
#[derive(Debug)]
struct ScanState {
    /// False while the file is still shorter than the magic (an empty
    /// database that no writer has initialized yet).
    have_magic: bool,
    /// An incomplete trailing transaction seen at `(top, file size)` since
    /// the instant: if it stays like that for `incomplete_timeout`, it is
    /// garbage.
    stuck: Option<(u64, u64, Instant)>,
    incomplete_timeout: Duration,
}

fn ignore_poison<G>(r: std::sync::LockResult<G>) -> G {
    // State is only mutated by `State::merge` and `Vec`/map inserts, which
    // leave it consistent even if a panic unwinds through a holder.
    r.unwrap_or_else(|e| e.into_inner())
}

impl Core {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        ignore_poison(self.state.read())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        ignore_poison(self.state.write())
    }

    fn scan_lock(&self) -> MutexGuard<'_, ScanState> {
        ignore_poison(self.scan_mu.lock())
    }

    fn corrupt(&self, offset: u64, what: impl Into<String>) -> Error {
        Error::corrupt(&self.path, offset, what)
    }

    /// Open `file` (already opened at `path`) and scan it. Returns the core
    /// and why the scan stopped, so that the writer can truncate.
    fn open(path: &Path, file: File) -> Result<(Core, Stop)> {
        let meta = file.metadata().map_err(|e| Error::io(path, "stat", e))?;
        let size = meta.len();
        let mut magic = [0u8; 4];
        let n =
            index::read_full_at(&file, &mut magic, 0).map_err(|e| Error::io(path, "read", e))?;
        let have_magic = n == 4;
        if !is_magic_prefix(&magic[..n]) {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "bad magic {:?}: not a FileStorage",
                    String::from_utf8_lossy(&magic[..n])
                ),
            ));
        }
        let out = if have_magic {
            scan_forward(&file, path, FIRST_TXN_POS, size, Tid::ZERO, SCAN_CHUNK)?
        } else {
            empty_scan()
        };
        let stop = out.stop;
        let mut state = State {
            top: FIRST_TXN_POS,
            ..State::default()
        };
        state.merge(out);
        tracing::debug!(
            path = %path.display(),
            txns = state.txns.len(),
            objects = state.index.len(),
            top = state.top,
            head = %state.last_tid,
            ?stop,
            "opened FileStorage"
        );
        let stuck = (stop == Stop::Incomplete).then(|| (state.top, size, Instant::now()));
        let core = Core {
            path: path.to_owned(),
            url: path.display().to_string(),
            ident: (meta.dev(), meta.ino()),
            file,
            map: ArcSwap::from_pointee(map::Mapping::empty()),
            map_mu: Mutex::new(()),
            broken: AtomicBool::new(false),
            state: RwLock::new(state),
            scan_mu: Mutex::new(ScanState {
                have_magic,
                stuck,
                incomplete_timeout: INCOMPLETE_TIMEOUT,
            }),
        };
        Ok((core, stop))
    }

    /// See [`Storage::sync`].
    fn sync(&self) -> Result<Tid> {
        let mut scan = self.scan_lock();
        self.sync_locked(&mut scan)
    }

    fn sync_locked(&self, scan: &mut ScanState) -> Result<Tid> {
        let (top, last_tid) = {
            let s = self.state();
            (s.top, s.last_tid)
        };
        let size = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?
            .len();
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) != self.ident => {
                return Err(
                    self.corrupt(top, "the database file was replaced (packed?); reopen it")
                );
            }
            Ok(_) => {}
            Err(e) => return Err(Error::io(&self.path, "stat", e)),
        }
        if !scan.have_magic {
            if size == 0 {
                return Ok(last_tid);
            }
            let mut magic = [0u8; 4];
            let n = index::read_full_at(&self.file, &mut magic, 0)
                .map_err(|e| Error::io(&self.path, "read", e))?;
            if !is_magic_prefix(&magic[..n]) {
                return Err(self.corrupt(0, "bad magic: not a FileStorage"));
            }
            if n < 4 {
                return Ok(last_tid);
            }
            scan.have_magic = true;
        }
        if size < top {
            self.broken.store(true, Ordering::Release);
            return Err(self.corrupt(
                size,
                format!(
                    "the file shrank to {size} bytes, below its {top} bytes of committed \
                     transactions: it was truncated or packed"
                ),
            ));
        }
        if size == top {
            scan.stuck = None;
            return Ok(last_tid);
        }
        let out = scan_forward(&self.file, &self.path, top, size, last_tid, SCAN_CHUNK)?;
        let stop = out.stop;
        let new_top = out.top;
        let head = out.last_tid;
        if !out.txns.is_empty() {
            tracing::trace!(path = %self.path.display(), n = out.txns.len(), head = %head, "sync: new transactions");
        }
        self.state_mut().merge(out);
        if stop == Stop::Incomplete {
            match scan.stuck {
                Some((pos, sz, since)) if pos == new_top && sz == size => {
                    if since.elapsed() >= scan.incomplete_timeout {
                        return Err(self.corrupt(
                            new_top,
                            format!(
                                "incomplete transaction record at the end of the file \
                                 (file size {size}) unchanged for {:?}: garbage",
                                since.elapsed()
                            ),
                        ));
                    }
                }
                _ => scan.stuck = Some((new_top, size, Instant::now())),
            }
        } else {
            scan.stuck = None;
        }
        Ok(head)
    }
}

fn is_magic_prefix(b: &[u8]) -> bool {
    MAGIC_FS30.starts_with(b) || MAGIC_FS21.starts_with(b)
}

fn empty_scan() -> ScanOut {
    ScanOut {
        txns: Vec::new(),
        updates: Default::default(),
        max_oid: None,
        top: FIRST_TXN_POS,
        last_tid: Tid::ZERO,
        stop: Stop::End,
    }
}

/// A FileStorage database opened read-only.
///
/// Cheap to clone: clones share the index and the open file. Loads from
/// many threads proceed in parallel (see the module docs for the locking).
#[derive(Clone)]
pub struct FileStorage {
    core: Arc<Core>,
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("path", &self.core.path)
            .finish_non_exhaustive()
    }
}

impl FileStorage {
    /// Open the database at `path` read-only and build its index.
    ///
    /// Takes no lock and creates or writes nothing (no index, no lock file).
    /// Accepts the magics `FS21` and `FS30`; an empty file is an empty
    /// database. A missing file is [`Error::Io`]; a bad magic or a corrupt
    /// committed transaction is [`Error::Corrupt`]. A trailing transaction
    /// that is not committed (a commit in progress) is not visible.
    pub fn open(path: impl AsRef<Path>) -> Result<FileStorage> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
        let (core, _stop) = Core::open(path, file)?;
        Ok(FileStorage {
            core: Arc::new(core),
        })
    }

    /// The database file's path, as given to `open`.
    pub fn path(&self) -> &Path {
        &self.core.path
    }

    /// Change how long an incomplete trailing transaction may stay
    /// unchanged before [`Storage::sync`] reports it as garbage (default
    /// [`INCOMPLETE_TIMEOUT`]).
    pub fn set_incomplete_timeout(&self, timeout: Duration) {
        self.core.scan_lock().incomplete_timeout = timeout;
    }

    /// The number of objects in the index (every oid ever stored, including
    /// deleted ones).
    pub fn object_count(&self) -> usize {
        self.core.state().index.len()
    }

    /// The largest oid in the database, if any.
    pub fn max_oid(&self) -> Option<Oid> {
        self.core.state().max_oid
    }

    /// The end of the committed part of the file.
    pub fn committed_size(&self) -> u64 {
        self.core.state().top
    }

    /// A watcher with the concrete type (see [`Storage::watch`]).
    pub fn watcher(&self, after: Tid) -> Result<FileWatcher> {
        FileWatcher::new(self.core.clone(), after)
    }
}

impl Storage for FileStorage {
    fn url(&self) -> &str {
        &self.core.url
    }

    fn last_tid(&self) -> Result<Tid> {
        Ok(self.core.state().last_tid)
    }

    fn sync(&self) -> Result<Tid> {
        self.core.sync()
    }

    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded> {
        self.core.load(oid, at)
    }

    fn iterate(
        &self,
        lo: Tid,
        hi: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + Send + '_>> {
        let i = self.core.state().txns.partition_point(|e| e.tid < lo);
        Ok(Box::new(reader::TxnIter {
            core: &self.core,
            buf: self.core.txn_buf(),
            i,
            hi,
            failed: false,
        }))
    }

    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>> {
        Ok(Box::new(self.watcher(after)?))
    }
}

//! The write side: [`Writer`] appends transactions to a `Data.fs` the way
//! Python ZODB's FileStorage does, so that ZODB can read what we write and
//! we can continue a database ZODB wrote.
//!
//! - Locking: `<path>.lock` is opened (created if missing, never truncated
//!   before locking), locked with `flock(LOCK_EX|LOCK_NB)` and then given the
//!   content `" <pid>\n"`, exactly like zc.lockfile. Contention is
//!   [`Error::Locked`]. The lock is held until the writer is dropped; the
//!   lock file is left in place, as zc.lockfile does (its `close()` only
//!   unlocks and closes).
//! - Opening: an empty or missing (with `create`) file gets the magic
//!   `FS30`. Anything after the committed part (a `'c'` transaction left by
//!   a crash between vote and finish, or a partial record) is copied to
//!   `<path>.trN` and truncated away, as ZODB's read-write open does.
//! - Commit (ZODB `tpc_vote` + `tpc_finish`): the whole transaction record,
//!   with status `'c'`, is written at the committed end in one `pwrite`
//!   and `fdatasync`ed; then the status byte is overwritten with `' '`, the
//!   file is `fsync`ed,
//!   and only then are the index and the head updated. On any error the
//!   file is truncated back to where it was.

use super::format::{
    DataHeader, TxnHeader, DATA_HDR_LEN, MAGIC_FS21, MAGIC_FS30, STATUS_CHECKPOINT,
    STATUS_COMMITTED, TXN_HDR_LEN,
};
use super::index::{read_full_at, ScanOut, Stop, TxnEntry};
use super::{Core, FileStorage};
use crate::error::{Error, Result};
use crate::storage::{Loaded, Storage};
use crate::types::{Oid, Tid};
use hashbrown::{HashMap, HashSet};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// A new transaction to [`Writer::commit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTxn {
    /// User name (at most 65535 bytes).
    pub user: Vec<u8>,
    /// Description (at most 65535 bytes).
    pub description: Vec<u8>,
    /// Extension: a pickled dict or empty (at most 65535 bytes).
    pub extension: Vec<u8>,
    /// The tid to commit with; it must be greater than the head. `None`:
    /// the current time, bumped above the head if needed.
    pub tid: Option<Tid>,
    /// What to store, in record order; each oid at most once.
    pub records: Vec<(Oid, NewData)>,
}

/// What a [`NewTxn`] stores for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewData {
    /// A new revision with these bytes (the object record: class pickle and
    /// state pickle). Must not be empty.
    Data(Vec<u8>),
    /// Delete the object: a deletion record (data header + 8 zero bytes).
    /// The object must exist.
    Delete,
    /// Undo the change that transaction `tid` made to the object: restore
    /// the state it had before `tid`, by a backpointer to the record holding
    /// that state, or delete it if `tid` created it. The object's current
    /// revision must be the one `tid` wrote (else: undo conflict). See
    /// [`Writer::undo`].
    Undo(Tid),
}

/// `Data.fs.lock`, held the way zc.lockfile holds it.
struct LockFile {
    _flock: Flock<File>,
}

impl LockFile {
    fn acquire(path: &Path) -> Result<LockFile> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, "open lock file", e))?;
        let flock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(Error::Locked {
                    path: path.to_owned(),
                })
            }
            Err((_, e)) => return Err(Error::io(path, "flock", e.into())),
        };
        let content = format!(" {}\n", std::process::id());
        (|| -> std::io::Result<()> {
            flock.write_all_at(content.as_bytes(), 0)?;
            flock.set_len(content.len() as u64)?;
            (&*flock).flush()
        })()
        .map_err(|e| Error::io(path, "write lock file", e))?;
        Ok(LockFile { _flock: flock })
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The read-write opener of a FileStorage; see the module docs.
///
/// One per database at a time (the lock file enforces it across processes).
/// Readers of the same database, in this process or others, use
/// [`FileStorage`]; [`Writer::storage`] gives one that shares this writer's
/// index.
pub struct Writer {
    fs: FileStorage,
    /// The next oid [`Writer::new_oid`] may hand out.
    next_oid: u64,
    _lock: LockFile,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.fs.core.path)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Open the database at `path` for writing, creating it (with magic
    /// `FS30`) if `create` and it is missing. An existing database is never
    /// truncated below its committed part; an empty file is initialized.
    ///
    /// Errors: [`Error::Locked`] if another writer holds `<path>.lock`,
    /// [`Error::Io`] if the file is missing and not `create`,
    /// [`Error::Corrupt`] for a damaged database.
    pub fn open(path: impl AsRef<Path>, create: bool) -> Result<Writer> {
        let path = path.as_ref();
        let lock = LockFile::acquire(&with_suffix(path, ".lock"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, "open", e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        if size < 4 {
            let mut b = [0u8; 4];
            let n = read_full_at(&file, &mut b, 0).map_err(|e| Error::io(path, "read", e))?;
            if MAGIC_FS30.starts_with(&b[..n]) || MAGIC_FS21.starts_with(&b[..n]) {
                (|| -> std::io::Result<()> {
                    file.set_len(0)?;
                    file.write_all_at(&MAGIC_FS30, 0)?;
                    file.sync_all()
                })()
                .map_err(|e| Error::io(path, "write magic", e))?;
            }
        }
        let (core, stop) = Core::open(path, file)?;
        let size = core
            .file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        let top = core.state().top;
        if size > top {
            tracing::warn!(path = %path.display(), top, size, ?stop, "truncating uncommitted data at the end of the file");
            save_tail(path, &core.file, top, size)?;
            (|| -> std::io::Result<()> {
                core.file.set_len(top)?;
                core.file.sync_all()
            })()
            .map_err(|e| Error::io(path, "truncate", e))?;
        }
        let next_oid = core.state().max_oid.map_or(1, |o| o.0.saturating_add(1));
        {
            // The file now ends at `top`: nothing is stuck there.
            core.scan_lock().stuck = None;
        }
        Ok(Writer {
            fs: FileStorage {
                core: Arc::new(core),
            },
            next_oid,
            _lock: lock,
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        self.fs.path()
    }

    /// A read view sharing this writer's index: it sees each commit as
    /// soon as [`Writer::commit`] returns.
    pub fn storage(&self) -> FileStorage {
        self.fs.clone()
    }

    /// The head: tid of the last committed transaction, 0 if none.
    pub fn last_tid(&self) -> Tid {
        self.fs.core.state().last_tid
    }

    /// Load through the writer's index; see [`Storage::load`].
    pub fn load(&self, oid: Oid, at: Tid) -> Result<Loaded> {
        self.fs.load(oid, at)
    }

    /// Allocate a new oid: above the largest oid in the database and above
    /// every oid this writer handed out before. Never 0 (the root object's
    /// oid, which its creator stores explicitly), like ZODB's `new_oid`.
    pub fn new_oid(&mut self) -> Oid {
        let max_db = self.fs.core.state().max_oid.map_or(0, |o| o.0);
        let oid = self.next_oid.max(max_db.saturating_add(1));
        self.next_oid = oid.saturating_add(1);
        Oid(oid)
    }

    /// Commit `txn` and return its tid. See the module docs for how.
    pub fn commit(&mut self, txn: NewTxn) -> Result<Tid> {
        let core = self.fs.core.clone();
        let _scan = core.scan_lock();
        let (top, last_tid) = {
            let s = core.state();
            (s.top, s.last_tid)
        };
        let tid = match txn.tid {
            Some(t) if t <= last_tid => {
                return Err(Error::Unsupported(format!(
                    "commit: tid {t} is not after the last tid {last_tid}"
                )));
            }
            Some(t) if t > Tid::MAX => {
                return Err(Error::Unsupported(format!(
                    "commit: tid {t} is beyond the maximum tid"
                )));
            }
            Some(t) => t,
            None => {
                let now = Tid::from_time(SystemTime::now());
                if now > last_tid {
                    now
                } else {
                    Tid(last_tid.0 + 1)
                }
            }
        };
        let too_long = |what: &str, v: &[u8]| -> Result<u16> {
            u16::try_from(v.len()).map_err(|_| {
                Error::Unsupported(format!(
                    "commit: transaction {what} is longer than 65535 bytes"
                ))
            })
        };
        let hdr = TxnHeader {
            tid,
            tlen: 0, // patched below
            status: STATUS_CHECKPOINT,
            ulen: too_long("user", &txn.user)?,
            dlen: too_long("description", &txn.description)?,
            elen: too_long("extension", &txn.extension)?,
        };

        // Current record positions of the oids, looked up once. `scan_mu`
        // keeps them stable until we merge.
        let current: HashMap<Oid, u64> = {
            let s = core.state();
            txn.records
                .iter()
                .filter_map(|(oid, _)| s.index.get(oid).map(|&p| (*oid, p)))
                .collect()
        };

        let data_len: usize = txn
            .records
            .iter()
            .map(|(_, d)| {
                DATA_HDR_LEN as usize + if let NewData::Data(b) = d { b.len() } else { 8 }
            })
            .sum();
        let mut buf =
            Vec::with_capacity(TXN_HDR_LEN as usize + hdr.meta_len() as usize + data_len + 8);
        hdr.encode(&mut buf);
        buf.extend_from_slice(&txn.user);
        buf.extend_from_slice(&txn.description);
        buf.extend_from_slice(&txn.extension);
        let mut seen = HashSet::new();
        let mut updates = HashMap::new();
        let mut max_oid = None;
        for (oid, data) in &txn.records {
            let oid = *oid;
            if !seen.insert(oid) {
                return Err(Error::Unsupported(format!(
                    "commit: {oid} is stored twice in one transaction"
                )));
            }
            let rpos = top + buf.len() as u64;
            let prev = current.get(&oid).copied();
            let mut dh = DataHeader {
                oid,
                tid,
                prev: prev.unwrap_or(0),
                tloc: top,
                vlen: 0,
                plen: 0,
            };
            match data {
                NewData::Data(b) => {
                    if b.is_empty() {
                        return Err(Error::Unsupported(format!("commit: empty data for {oid}")));
                    }
                    dh.plen = b.len() as u64;
                    dh.encode(&mut buf);
                    buf.extend_from_slice(b);
                }
                NewData::Delete => {
                    if prev.is_none() {
                        return Err(Error::NoSuchObject { oid });
                    }
                    dh.encode(&mut buf);
                    buf.extend_from_slice(&0u64.to_be_bytes());
                }
                NewData::Undo(utid) => {
                    let back = undo_back(&core, oid, *utid, prev)?;
                    dh.encode(&mut buf);
                    buf.extend_from_slice(&back.to_be_bytes());
                }
            }
            updates.insert(oid, rpos);
            max_oid = max_oid.max(Some(oid));
        }
        let tlen = buf.len() as u64;
        buf[8..16].copy_from_slice(&tlen.to_be_bytes());
        buf.extend_from_slice(&tlen.to_be_bytes());
        let new_top = top + buf.len() as u64;

        let path = &core.path;
        let file = &core.file;
        let write = || -> std::io::Result<()> {
            let size = file.metadata()?.len();
            if size != top {
                tracing::warn!(path = %path.display(), size, top, "file does not end at the committed end; truncating");
                file.set_len(top)?;
            }
            // tpc_vote: the whole record, status 'c', made durable before
            // the status says committed (Python ZODB only flushes here; with
            // this fsync a crash can never leave a ' ' status over data that
            // did not reach the disk).
            file.write_all_at(&buf, top)?;
            file.sync_data()?;
            // tpc_finish: flip the status, fsync.
            file.write_all_at(&[STATUS_COMMITTED], top + 16)?;
            file.sync_all()
        };
        if let Err(e) = write() {
            if let Err(e2) = file.set_len(top) {
                tracing::error!(path = %path.display(), top, error = %e2, "commit failed and truncating it back failed too");
            }
            return Err(Error::io(path, "commit", e));
        }
        core.state_mut().merge(ScanOut {
            txns: vec![TxnEntry { tid, pos: top }],
            updates,
            max_oid,
            top: new_top,
            last_tid: tid,
            stop: Stop::End,
        });
        tracing::debug!(path = %path.display(), %tid, records = txn.records.len(), "committed");
        Ok(tid)
    }

    /// Transactional undo of the committed transaction `tid`: commit a new
    /// transaction that restores, for every object `tid` changed, the state
    /// it had before `tid` (or deletes it if `tid` created it). Fails with
    /// an undo conflict ([`Error::Unsupported`]) if any of those objects was
    /// changed again after `tid`. Returns the new transaction's tid.
    pub fn undo(&mut self, tid: Tid) -> Result<Tid> {
        let core = self.fs.core.clone();
        let entry = {
            let s = core.state();
            let i = s.txns.binary_search_by_key(&tid, |e| e.tid);
            i.ok().map(|i| s.txns[i])
        };
        let Some(entry) = entry else {
            return Err(Error::Unsupported(format!(
                "undo: no committed transaction {tid}"
            )));
        };
        let t = core.read_txn_at(&mut core.txn_buf(), entry, false)?;
        let mut seen = HashSet::new();
        let records = t
            .records
            .iter()
            .filter(|(oid, _)| seen.insert(*oid))
            .map(|&(oid, _)| (oid, NewData::Undo(tid)))
            .collect();
        self.commit(NewTxn {
            records,
            ..NewTxn::default()
        })
    }
}

/// The backpointer for undoing `utid`'s change of `oid`, whose current
/// record is at `cur`: the position of the record holding the state before
/// `utid`, or 0 if there is none (`utid` created the object, or it was
/// deleted before).
fn undo_back(core: &Core, oid: Oid, utid: Tid, cur: Option<u64>) -> Result<u64> {
    let Some(cur) = cur else {
        return Err(Error::NoSuchObject { oid });
    };
    let rec = core.read_record(cur, oid)?;
    if rec.hdr.tid > utid {
        return Err(Error::Unsupported(format!(
            "undo of {utid}: {oid} was changed by {} after it (undo conflict)",
            rec.hdr.tid
        )));
    }
    if rec.hdr.tid != utid {
        return Err(Error::Unsupported(format!(
            "undo of {utid}: it did not change {oid}"
        )));
    }
    if rec.hdr.prev == 0 {
        return Ok(0);
    }
    let mut r = core.read_record(rec.hdr.prev, oid)?;
    while r.hdr.plen == 0 {
        if r.back == 0 {
            return Ok(0);
        }
        r = core.read_record(r.back, oid)?;
    }
    Ok(r.pos)
}

/// Copy `[top, size)` of the database to the first free `<path>.trN`, as
/// ZODB does before truncating.
fn save_tail(path: &Path, file: &File, top: u64, size: u64) -> Result<()> {
    for i in 0.. {
        let tr = with_suffix(path, &format!(".tr{i}"));
        let mut out = match OpenOptions::new().write(true).create_new(true).open(&tr) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&tr, "create", e)),
        };
        let mut pos = top;
        let mut chunk = vec![0u8; 1 << 20];
        while pos < size {
            let want = chunk.len().min((size - pos) as usize);
            let n = read_full_at(file, &mut chunk[..want], pos)
                .map_err(|e| Error::io(path, "read", e))?;
            if n == 0 {
                break;
            }
            out.write_all(&chunk[..n])
                .map_err(|e| Error::io(&tr, "write", e))?;
            pos += n as u64;
        }
        out.sync_all().map_err(|e| Error::io(&tr, "fsync", e))?;
        tracing::warn!(path = %path.display(), saved = %tr.display(), bytes = size - top, "saved truncated data");
        return Ok(());
    }
    unreachable!()
}

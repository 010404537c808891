//! The filesystem without FUSE: the tree of nodes, the head view, READs
//! and commit processing. Callable from tests without a mount; `fuse.rs`
//! only decodes requests, calls in here and replies.

use super::errno::{lookup_error, FsError};
use super::stats::Stats;
use bytes::Bytes;
use engine::ftail::DeltaFTail;
use rayon::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};
use zodb::btree::{self, Family};
use zodb::zbigfile::{Block, ZBigFile};
use zodb::{Oid, Storage, Tid};

// ---- inodes ----

/// `/`.
pub(crate) const ROOT: u64 = 1;
/// `head/`.
pub(crate) const HEAD: u64 = 2;
/// `head/at`.
pub(crate) const HEAD_AT: u64 = 3;
/// `head/bigfile/`.
pub(crate) const HEAD_BIGFILE: u64 = 4;
/// `.wcfs/`.
pub(crate) const DOT_WCFS: u64 = 5;
/// `.wcfs/zurl`.
pub(crate) const ZURL: u64 = 6;
/// `.wcfs/stats`.
pub(crate) const STATS: u64 = 7;
/// `.wcfs/pintimeout`.
pub(crate) const PINTIMEOUT: u64 = 8;
/// The first inode number handed out on lookup.
const FIRST_DYNAMIC: u64 = 16;

/// How far behind head ΔFtail keeps history.
const HISTORY_WINDOW: Duration = Duration::from_secs(60);

/// Blocks kept loaded for READs that come in pieces (the kernel sends at
/// most 1 MiB per READ; a block is usually 2 MiB). Keyed by state, so an
/// entry never goes stale.
const BLK_CACHE_ENTRIES: usize = 16;

/// A loaded block's identity: (file, state, block).
type BlkKey = (Oid, Tid, i64);

/// A block load shared by concurrent READs: the block, or the error text.
type LoadSlot = std::sync::OnceLock<Result<Arc<Block>, String>>;

/// What an inode is.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Root,
    Head,
    HeadAt,
    HeadBigDir,
    DotWcfs,
    Zurl,
    Stats,
    PinTimeout,
    /// `@<tid>/`.
    RevDir(Tid),
    /// `@<tid>/bigfile/`.
    RevBigDir(Tid),
    /// `head/bigfile/<oid>`: its state lives in [`ZHead::files_mu`].
    HeadFile(Oid),
    /// `@<tid>/bigfile/<oid>`: immutable.
    RevFile(Arc<RevFile>),
}

/// A file of `@<tid>/bigfile/`.
#[derive(Debug)]
pub(crate) struct RevFile {
    at: Tid,
    zfile: ZBigFile,
    size: u64,
}

/// A file of `head/bigfile/` as of the head view.
#[derive(Debug, Clone)]
struct HeadFile {
    ino: u64,
    /// `None` once the object stopped being a ZBigFile.
    zfile: Option<ZBigFile>,
    size: u64,
    /// The last revision known to have touched it (mtime).
    rev: Tid,
}

/// The head view: the database state head/ files are served at.
#[derive(Debug)]
struct ZHead {
    at: Tid,
    /// oid -> HeadFile. Written (fields) only under `zhead` write; entries
    /// are added by lookups under `zhead` read + `files_mu`.
    files_mu: Mutex<HashMap<Oid, HeadFile>>,
}

/// Proof that the caller holds `zhead` for reading: the head view cannot
/// move while it lives.
struct ZHeadRead<'a>(RwLockReadGuard<'a, ZHead>);

#[derive(Debug, Default)]
struct Nodes {
    /// ino -> Node
    by_ino: HashMap<u64, Node>,
    /// (parent ino, name) -> ino
    by_name: HashMap<(u64, String), u64>,
    next: u64,
}

/// The kind of an inode, as stat shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// Attributes of an inode, independent of the FUSE library.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr {
    pub(crate) ino: u64,
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    pub(crate) perm: u16,
    pub(crate) mtime: SystemTime,
    pub(crate) blksize: u32,
    /// The attributes may change (head/ files, small files): no caching.
    pub(crate) volatile: bool,
}

/// How a file is to be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Data files and static files: keep the kernel page cache across opens.
    KeepCache,
    /// Small files computed on read (`head/at`, `.wcfs/stats`).
    DirectIo,
}

/// One kernel cache invalidation that a commit asks for: `off < 0` means
/// attributes only, `len <= 0` up to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inval {
    pub(crate) ino: u64,
    pub(crate) off: i64,
    pub(crate) len: i64,
}

/// The filesystem. See the [module docs](super) for the locks.
pub(crate) struct Wcfs {
    zurl: String,
    pintimeout: f64,
    stor: Arc<dyn Storage>,
    ft: DeltaFTail,
    /// The head view. READ of head/ files and Track hold it for reading,
    /// commit processing for writing. Outermost lock.
    zhead: RwLock<ZHead>,
    /// head/at as clients see it: set after the commit's invalidations are
    /// done (Release), read by `head/at` readers (Acquire).
    head_at: AtomicU64,
    /// Protected by itself; taken under `zhead` and `files_mu`, never the
    /// other way round.
    nodes_mu: Mutex<Nodes>,
    /// (oid, at, blk) -> Block, most recent last. Innermost lock.
    cache_mu: Mutex<VecDeque<(BlkKey, Arc<Block>)>>,
    /// Loads in progress: (oid, at, blk) -> the result, once there. Like
    /// `cache_mu`, held briefly and never together with it.
    loading_mu: Mutex<HashMap<BlkKey, Arc<LoadSlot>>>,
    pub(crate) stats: Stats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tid_time(t: Tid) -> SystemTime {
    t.to_time().unwrap_or(SystemTime::UNIX_EPOCH)
}

fn slice_at(data: &[u8], off: u64, len: u32) -> &[u8] {
    let lo = (off.min(data.len() as u64)) as usize;
    let hi = (off.saturating_add(len as u64).min(data.len() as u64)) as usize;
    &data[lo..hi]
}

fn db_err(oid: Oid, what: impl Into<String>, err: impl Into<anyhow::Error>) -> FsError {
    FsError::Db {
        what: what.into(),
        oid,
        err: err.into(),
    }
}

impl Wcfs {
    /// A filesystem over `stor`, with head/ at the storage's current head.
    pub(crate) fn new(
        zurl: String,
        stor: Arc<dyn Storage>,
        pintimeout: f64,
    ) -> anyhow::Result<Wcfs> {
        let at0 = stor.last_tid()?;
        let mut nodes = Nodes {
            next: FIRST_DYNAMIC,
            ..Nodes::default()
        };
        for (ino, parent, name, node) in [
            (ROOT, 0, "", Node::Root),
            (HEAD, ROOT, "head", Node::Head),
            (HEAD_AT, HEAD, "at", Node::HeadAt),
            (HEAD_BIGFILE, HEAD, "bigfile", Node::HeadBigDir),
            (DOT_WCFS, ROOT, ".wcfs", Node::DotWcfs),
            (ZURL, DOT_WCFS, "zurl", Node::Zurl),
            (STATS, DOT_WCFS, "stats", Node::Stats),
            (PINTIMEOUT, DOT_WCFS, "pintimeout", Node::PinTimeout),
        ] {
            nodes.by_ino.insert(ino, node);
            if parent != 0 {
                nodes.by_name.insert((parent, name.to_owned()), ino);
            }
        }
        Ok(Wcfs {
            zurl,
            pintimeout,
            ft: DeltaFTail::new(at0, stor.clone()),
            stor,
            zhead: RwLock::new(ZHead {
                at: at0,
                files_mu: Mutex::new(HashMap::new()),
            }),
            head_at: AtomicU64::new(at0.0),
            nodes_mu: Mutex::new(nodes),
            cache_mu: Mutex::new(VecDeque::new()),
            loading_mu: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        })
    }

    /// head/at as clients see it.
    pub(crate) fn head_at(&self) -> Tid {
        Tid(self.head_at.load(Ordering::Acquire))
    }

    fn zhead_read(&self) -> ZHeadRead<'_> {
        ZHeadRead(self.zhead.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn node(&self, ino: u64) -> Option<Node> {
        lock(&self.nodes_mu).by_ino.get(&ino).cloned()
    }

    /// The inode of `name` in `parent`, made by `make` if it is not there.
    fn child(&self, parent: u64, name: &str, make: impl FnOnce() -> Node) -> u64 {
        let mut n = lock(&self.nodes_mu);
        if let Some(&ino) = n.by_name.get(&(parent, name.to_owned())) {
            return ino;
        }
        let ino = n.next;
        n.next += 1;
        n.by_ino.insert(ino, make());
        n.by_name.insert((parent, name.to_owned()), ino);
        ino
    }

    fn existing_child(&self, parent: u64, name: &str) -> Option<u64> {
        lock(&self.nodes_mu)
            .by_name
            .get(&(parent, name.to_owned()))
            .copied()
    }

    // ---- 1) lookup / getattr / readdir ----

    /// Look `name` up in directory `parent`.
    pub(crate) fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        let Some(pnode) = self.node(parent) else {
            return Err(FsError::NoEnt);
        };
        let ino = match pnode {
            Node::Root => match self.existing_child(ROOT, name) {
                Some(ino) => ino,
                None => self.lookup_rev(name)?,
            },
            Node::Head | Node::DotWcfs => {
                self.existing_child(parent, name).ok_or(FsError::NoEnt)?
            }
            Node::RevDir(at) if name == "bigfile" => {
                self.child(parent, name, || Node::RevBigDir(at))
            }
            Node::RevDir(_) => return Err(FsError::NoEnt),
            Node::HeadBigDir => return self.lookup_head_file(name),
            Node::RevBigDir(at) => self.lookup_rev_file(parent, at, name)?,
            Node::HeadAt
            | Node::Zurl
            | Node::Stats
            | Node::PinTimeout
            | Node::HeadFile(_)
            | Node::RevFile(_) => return Err(FsError::Errno(fuser::Errno::ENOTDIR)),
        };
        self.getattr(ino)
    }

    /// `@<tid>` in `/`: EINVAL unless `@` + 16 hex digits; a tid beyond
    /// head/at is ENOENT (the state does not exist yet; a later lookup,
    /// once head/at reached it, succeeds).
    fn lookup_rev(&self, name: &str) -> Result<u64, FsError> {
        let at: Tid = name
            .strip_prefix('@')
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| FsError::Inval(format!("/{name}: not @rev")))?;
        if at > self.head_at() {
            return Err(FsError::NoEnt);
        }
        let mut made = false;
        let ino = self.child(ROOT, name, || {
            made = true;
            Node::RevDir(at)
        });
        if made {
            self.stats.rev_head.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ino)
    }

    fn parse_oid(dir: &str, name: &str) -> Result<Oid, FsError> {
        name.parse()
            .map_err(|_| FsError::Inval(format!("{dir}/{name}: not oid")))
    }

    fn lookup_head_file(&self, name: &str) -> Result<Attr, FsError> {
        let oid = Self::parse_oid("head/bigfile", name)?;
        let zh = self.zhead_read();
        if let Some(hf) = lock(&zh.0.files_mu).get(&oid) {
            if hf.zfile.is_none() {
                return Err(FsError::Inval(format!(
                    "head/bigfile/{oid}: not a ZBigFile @{}",
                    zh.0.at
                )));
            }
            return Ok(self.head_file_attr(hf));
        }
        let at = zh.0.at;
        let zf = ZBigFile::load(&*self.stor, oid, at).map_err(|e| lookup_error(oid, e))?;
        let size = zf
            .size(&*self.stor, at)
            .map_err(|e| db_err(oid, format!("@{at}: size"), e))?;
        self.track_size(&zh, &zf, at)?;
        let mut files = lock(&zh.0.files_mu);
        if let Some(hf) = files.get(&oid) {
            return Ok(self.head_file_attr(hf)); // another lookup was first
        }
        let ino = self.child(HEAD_BIGFILE, &oid.to_string(), || Node::HeadFile(oid));
        let hf = HeadFile {
            ino,
            rev: zf.serial,
            zfile: Some(zf),
            size,
        };
        let attr = self.head_file_attr(&hf);
        files.insert(oid, hf);
        self.stats.bigfile.fetch_add(1, Ordering::Relaxed);
        Ok(attr)
    }

    /// Track the blktab path to the last block, so that ΔFtail reports
    /// blocks added past the end (the file's size) even when no block near
    /// the end was read.
    fn track_size(&self, _zh: &ZHeadRead<'_>, zf: &ZBigFile, at: Tid) -> Result<(), FsError> {
        self.track_size_unchecked(zf, at)
    }

    fn track_size_unchecked(&self, zf: &ZBigFile, at: Tid) -> Result<(), FsError> {
        let l = btree::lookup(&*self.stor, Family::LO, zf.blktab, i64::MAX, at)
            .map_err(|e| db_err(zf.oid, format!("@{at}: blktab lookup of the last block"), e))?;
        self.ft
            .track(zf, -1, &l.path, l.keycov, None)
            .map_err(|e| db_err(zf.oid, "track", e))
    }

    fn lookup_rev_file(&self, parent: u64, at: Tid, name: &str) -> Result<u64, FsError> {
        let oid = Self::parse_oid(&format!("@{at}/bigfile"), name)?;
        if let Some(ino) = self.existing_child(parent, name) {
            return Ok(ino);
        }
        let zf = ZBigFile::load(&*self.stor, oid, at).map_err(|e| lookup_error(oid, e))?;
        let size = zf
            .size(&*self.stor, at)
            .map_err(|e| db_err(oid, format!("@{at}: size"), e))?;
        let rf = Arc::new(RevFile {
            at,
            zfile: zf,
            size,
        });
        Ok(self.child(parent, name, || Node::RevFile(rf)))
    }

    fn head_file_attr(&self, hf: &HeadFile) -> Attr {
        Attr {
            ino: hf.ino,
            kind: Kind::File,
            size: hf.size,
            perm: 0o444,
            mtime: tid_time(hf.rev),
            blksize: hf.zfile.as_ref().map_or(4096, |z| z.blksize as u32),
            volatile: true,
        }
    }

    /// The attributes of `ino`.
    pub(crate) fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let node = self.node(ino).ok_or(FsError::NoEnt)?;
        let head_at = self.head_at();
        let dir = |mtime, volatile| Attr {
            ino,
            kind: Kind::Dir,
            size: 0,
            perm: 0o555,
            mtime,
            blksize: 4096,
            volatile,
        };
        let small = |size: usize, perm, volatile| Attr {
            ino,
            kind: Kind::File,
            size: size as u64,
            perm,
            mtime: SystemTime::UNIX_EPOCH,
            blksize: 4096,
            volatile,
        };
        Ok(match node {
            Node::Root | Node::DotWcfs | Node::HeadBigDir => dir(SystemTime::UNIX_EPOCH, false),
            Node::Head => dir(tid_time(head_at), true),
            Node::RevDir(at) => dir(tid_time(at), false),
            Node::RevBigDir(_) => dir(SystemTime::UNIX_EPOCH, false),
            Node::HeadAt => small(16, 0o644, true),
            Node::Stats => small(
                self.stats.render(self.ft.explicitly_tracked_count()).len(),
                0o644,
                true,
            ),
            Node::Zurl => small(self.zurl.len(), 0o644, false),
            Node::PinTimeout => small(self.pintimeout_text().len(), 0o644, false),
            Node::HeadFile(oid) => {
                let zh = self.zhead_read();
                let files = lock(&zh.0.files_mu);
                let hf = files.get(&oid).ok_or(FsError::NoEnt)?;
                self.head_file_attr(hf)
            }
            Node::RevFile(rf) => Attr {
                ino,
                kind: Kind::File,
                size: rf.size,
                perm: 0o444,
                mtime: tid_time(rf.zfile.serial),
                blksize: rf.zfile.blksize as u32,
                volatile: false,
            },
        })
    }

    fn pintimeout_text(&self) -> String {
        format!("{:.1}", self.pintimeout)
    }

    /// The entries of directory `ino` (beyond `.` and `..`): the fixed
    /// ones, and in `bigfile/` and `/` those looked up so far.
    pub(crate) fn readdir(&self, ino: u64) -> Result<Vec<(u64, Kind, String)>, FsError> {
        let node = self.node(ino).ok_or(FsError::NoEnt)?;
        match node {
            Node::Root
            | Node::Head
            | Node::DotWcfs
            | Node::HeadBigDir
            | Node::RevDir(_)
            | Node::RevBigDir(_) => {}
            _ => return Err(FsError::Errno(fuser::Errno::ENOTDIR)),
        }
        let n = lock(&self.nodes_mu);
        let mut out: Vec<(u64, Kind, String)> = n
            .by_name
            .iter()
            .filter(|((p, _), _)| *p == ino)
            .map(|((_, name), &c)| {
                let kind = match n.by_ino.get(&c) {
                    Some(
                        Node::HeadFile(_)
                        | Node::RevFile(_)
                        | Node::HeadAt
                        | Node::Zurl
                        | Node::Stats
                        | Node::PinTimeout,
                    ) => Kind::File,
                    _ => Kind::Dir,
                };
                (c, kind, name.clone())
            })
            .collect();
        out.sort_by(|a, b| a.2.cmp(&b.2));
        Ok(out)
    }

    /// Check that `ino` can be opened, and how.
    pub(crate) fn open(&self, ino: u64) -> Result<OpenMode, FsError> {
        match self.node(ino).ok_or(FsError::NoEnt)? {
            Node::HeadAt | Node::Stats => Ok(OpenMode::DirectIo),
            Node::Zurl | Node::PinTimeout | Node::RevFile(_) => Ok(OpenMode::KeepCache),
            Node::HeadFile(oid) => {
                let zh = self.zhead_read();
                let live = matches!(
                    lock(&zh.0.files_mu).get(&oid),
                    Some(HeadFile { zfile: Some(_), .. })
                );
                if live {
                    Ok(OpenMode::KeepCache)
                } else {
                    Err(FsError::NoEnt)
                }
            }
            _ => Err(FsError::Errno(fuser::Errno::EISDIR)),
        }
    }

    // ---- 2) READ → load → track → reply ----

    /// READ(off, len) of `ino`: `reply` gets the bytes while the head view
    /// is still held, so the data it sends to the kernel is the data of the
    /// head state whose blocks were tracked (never mixed with a commit).
    pub(crate) fn read_with<R>(
        &self,
        ino: u64,
        off: u64,
        len: u32,
        reply: impl FnOnce(Result<&[u8], FsError>) -> R,
    ) -> R {
        let Some(node) = self.node(ino) else {
            return reply(Err(FsError::NoEnt));
        };
        match node {
            Node::HeadAt => reply(Ok(slice_at(
                self.head_at().to_string().as_bytes(),
                off,
                len,
            ))),
            Node::Stats => reply(Ok(slice_at(
                self.stats
                    .render(self.ft.explicitly_tracked_count())
                    .as_bytes(),
                off,
                len,
            ))),
            Node::Zurl => reply(Ok(slice_at(self.zurl.as_bytes(), off, len))),
            Node::PinTimeout => reply(Ok(slice_at(self.pintimeout_text().as_bytes(), off, len))),
            Node::HeadFile(oid) => {
                let zh = self.zhead_read();
                let hf = lock(&zh.0.files_mu).get(&oid).cloned();
                let Some(HeadFile {
                    zfile: Some(zf),
                    size,
                    ..
                }) = hf
                else {
                    return reply(Err(FsError::NoEnt));
                };
                let at = zh.0.at;
                match self.read_blocks(&zf, size, at, off, len, Some(&zh)) {
                    Ok(b) => reply(Ok(&b)),
                    Err(e) => reply(Err(e)),
                }
                // zh is released only here, after the reply
            }
            Node::RevFile(rf) => {
                match self.read_blocks(&rf.zfile, rf.size, rf.at, off, len, None) {
                    Ok(b) => reply(Ok(&b)),
                    Err(e) => reply(Err(e)),
                }
            }
            _ => reply(Err(FsError::Errno(fuser::Errno::EISDIR))),
        }
    }

    /// Bytes `[off, off+len)` of `zf` as of `at`, clamped to `size`; with
    /// `head`, every block read is tracked in ΔFtail first.
    fn read_blocks(
        &self,
        zf: &ZBigFile,
        size: u64,
        at: Tid,
        off: u64,
        len: u32,
        head: Option<&ZHeadRead<'_>>,
    ) -> Result<Bytes, FsError> {
        let end = off.saturating_add(len as u64).min(size);
        if end <= off {
            return Ok(Bytes::new());
        }
        let bs = zf.blksize;
        let (b0, b1) = ((off / bs) as i64, ((end - 1) / bs) as i64);
        let blocks: Vec<Arc<Block>> = (b0..=b1)
            .into_par_iter()
            .map(|blk| self.load_blk(zf, blk, at))
            .collect::<Result<_, _>>()?;
        if head.is_some() {
            for b in &blocks {
                self.ft
                    .track(zf, b.blk, &b.path, b.keycov, b.zblk)
                    .map_err(|e| db_err(zf.oid, format!("@{at}: track blk #{}", b.blk), e))?;
            }
        }
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_read
            .fetch_add(end - off, Ordering::Relaxed);
        if b0 == b1 {
            let base = b0 as u64 * bs;
            let (lo, hi) = ((off - base) as usize, (end - base) as usize);
            if hi <= blocks[0].data.len() {
                return Ok(blocks[0].data.slice(lo..hi)); // no copy
            }
        }
        let mut out = Vec::with_capacity((end - off) as usize);
        for b in &blocks {
            let base = b.blk as u64 * bs;
            let lo = (off.max(base) - base) as usize;
            let hi = (end.min(base + bs) - base) as usize;
            let dhi = hi.min(b.data.len());
            if lo < dhi {
                out.extend_from_slice(&b.data[lo..dhi]);
            }
            out.resize(out.len() + (hi - lo.max(dhi)), 0);
        }
        Ok(out.into())
    }

    /// Block `blk` of `zf` as of `at`: from the cache, or loaded once for
    /// all concurrent READs that want it (the kernel sends a 2 MiB block
    /// as several READs in parallel).
    fn load_blk(&self, zf: &ZBigFile, blk: i64, at: Tid) -> Result<Arc<Block>, FsError> {
        let key = (zf.oid, at, blk);
        let slot = {
            let c = lock(&self.cache_mu);
            if let Some((_, b)) = c.iter().find(|(k, _)| *k == key) {
                return Ok(b.clone());
            }
            drop(c);
            lock(&self.loading_mu).entry(key).or_default().clone()
        };
        // The first caller loads; the others wait in get_or_init.
        let r = slot
            .get_or_init(|| {
                let r = zf
                    .load_blk(&*self.stor, blk, at)
                    .map(Arc::new)
                    .map_err(|e| {
                        let off = (blk as u64).saturating_mul(zf.blksize);
                        format!("@{at}: read blk #{blk} (file offset {off}): {e}")
                    });
                if let Ok(b) = &r {
                    let mut c = lock(&self.cache_mu);
                    if c.len() >= BLK_CACHE_ENTRIES {
                        c.pop_front();
                    }
                    c.push_back((key, b.clone()));
                }
                lock(&self.loading_mu).remove(&key);
                r
            })
            .clone();
        r.map_err(|msg| FsError::Db {
            what: "load".into(),
            oid: zf.oid,
            err: anyhow::anyhow!(msg),
        })
    }

    // ---- 3) commit → δF → invalidations → advance head ----

    /// Process transaction `tid` (which stored `oids`) under the head view
    /// write lock: update ΔFtail, refresh the head files it touched, move
    /// the head view to `tid`, forget old history. Returns the kernel cache
    /// invalidations to send: the caller sends them after this returns (so
    /// that a READ the kernel holds page locks for is never waiting for
    /// the lock while we wait for its pages), then calls
    /// [`publish`](Self::publish).
    pub(crate) fn handle_commit(&self, tid: Tid, oids: &[Oid]) -> anyhow::Result<Vec<Inval>> {
        let mut zh = self.zhead.write().unwrap_or_else(|p| p.into_inner());
        let df = self.ft.update(tid, oids)?;
        let zh = &mut *zh;
        let files = zh.files_mu.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut inval = Vec::new();
        let mut nblk = 0;
        for (foid, d) in &df.by_file {
            let Some(hf) = files.get_mut(foid) else {
                continue;
            };
            hf.rev = tid;
            let ino = hf.ino;
            if d.epoch {
                inval.push(Inval {
                    ino,
                    off: 0,
                    len: 0,
                });
                let re = ZBigFile::load(&*self.stor, *foid, tid).and_then(|zf| {
                    let size = zf.size(&*self.stor, tid)?;
                    Ok((zf, size))
                });
                match re {
                    Ok((zf, size)) => {
                        if let Err(e) = self.track_size_unchecked(&zf, tid) {
                            tracing::error!("{e}");
                        }
                        hf.zfile = Some(zf);
                        hf.size = size;
                    }
                    Err(e) => {
                        tracing::warn!(oid = %foid, "@{tid}: head/bigfile/{foid} is gone: {e}");
                        hf.zfile = None;
                        hf.size = 0;
                    }
                }
                continue;
            }
            let Some(zf) = hf.zfile.clone() else {
                continue;
            };
            let bs = zf.blksize;
            for &b in &d.blocks {
                let o = (b as u64).saturating_mul(bs);
                if b >= 0 && o < hf.size {
                    inval.push(Inval {
                        ino,
                        off: o as i64,
                        len: bs as i64,
                    });
                    nblk += 1;
                }
            }
            if d.size {
                match zf.size(&*self.stor, tid) {
                    Ok(new) => {
                        // From the smaller size to the end, pages and size:
                        // a kernel that still believed an old larger size
                        // may have cached zero pages past our end (a READ
                        // there gets 0 bytes and the kernel zero-fills), so
                        // growth must drop them too.
                        if new != hf.size {
                            inval.push(Inval {
                                ino,
                                off: new.min(hf.size) as i64,
                                len: 0,
                            });
                        }
                        hf.size = new;
                    }
                    Err(e) => {
                        tracing::error!(oid = %foid, "@{tid}: size: {e}");
                        inval.push(Inval {
                            ino,
                            off: 0,
                            len: 0,
                        });
                    }
                }
                if let Err(e) = self.track_size_unchecked(&zf, tid) {
                    tracing::error!("{e}");
                }
            }
        }
        zh.at = tid;
        if let Some(t) = tid.to_time().and_then(|t| t.checked_sub(HISTORY_WINDOW)) {
            let cut = Tid::from_time(t);
            if cut > self.ft.tail() && cut < tid {
                self.ft.forget_past(cut)?;
            }
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .invalidated_blocks
            .fetch_add(nblk, Ordering::Relaxed);
        Ok(inval)
    }

    /// Show `tid` in head/at (after its invalidations were sent).
    pub(crate) fn publish(&self, tid: Tid) {
        self.head_at.store(tid.0, Ordering::Release);
    }

    /// The storage served.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.stor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zodb::zbigfile::ZBlkFormat;
    use zodb::zwrite::ZWriter;

    fn read(fs: &Wcfs, ino: u64, off: u64, len: u32) -> Result<Vec<u8>, String> {
        fs.read_with(ino, off, len, |r| {
            r.map(|b| b.to_vec()).map_err(|e| e.to_string())
        })
    }

    /// The filesystem without a mount: lookups, reads across blocks and
    /// holes, a commit's invalidations and the new head data.
    #[test]
    fn without_mount() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        let (foid, at0) = zw
            .create_file(
                "f",
                8,
                &[
                    (0, Some((ZBlkFormat::ZBlk0, b"abcdefgh"))),
                    (2, Some((ZBlkFormat::ZBlk1, b"xyz"))),
                ],
            )
            .unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Wcfs::new(path.display().to_string(), stor.clone(), 30.0).unwrap();
        assert_eq!(fs.head_at(), at0);
        assert!(matches!(fs.lookup(ROOT, "x"), Err(FsError::Inval(_))));
        assert!(matches!(
            fs.lookup(HEAD_BIGFILE, "zz"),
            Err(FsError::Inval(_))
        ));
        assert!(matches!(
            fs.lookup(HEAD_BIGFILE, &Oid(0).to_string()),
            Err(FsError::Inval(_))
        ));
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        assert_eq!((a.size, a.blksize), (24, 8));
        assert_eq!(
            read(&fs, a.ino, 0, 100).unwrap(),
            b"abcdefgh\0\0\0\0\0\0\0\0xyz\0\0\0\0\0"
        );
        assert_eq!(read(&fs, a.ino, 6, 4).unwrap(), b"gh\0\0");
        assert_eq!(read(&fs, a.ino, 24, 4).unwrap(), b"");
        let at1 = zw
            .update_file(
                foid,
                &[
                    (0, Some((ZBlkFormat::ZBlk0, b"ABC"))),
                    (3, Some((ZBlkFormat::ZBlk0, b"q"))),
                ],
            )
            .unwrap();
        stor.sync().unwrap();
        let txn = stor.iterate(at1, at1).unwrap().next().unwrap().unwrap();
        let inval = fs.handle_commit(at1, &txn.oids).unwrap();
        assert!(
            inval.contains(&Inval {
                ino: a.ino,
                off: 0,
                len: 8
            }),
            "{inval:?}"
        );
        assert!(
            inval.contains(&Inval {
                ino: a.ino,
                off: 24,
                len: 0
            }),
            "{inval:?}"
        );
        assert_eq!(fs.head_at(), at0, "published only after the invalidations");
        fs.publish(at1);
        assert_eq!(fs.getattr(a.ino).unwrap().size, 32);
        assert_eq!(read(&fs, a.ino, 0, 4).unwrap(), b"ABC\0");
        assert_eq!(read(&fs, a.ino, 24, 8).unwrap(), b"q\0\0\0\0\0\0\0");
        // @at0 still shows the old data
        let r = fs.lookup(ROOT, &format!("@{at0}")).unwrap();
        let rb = fs.lookup(r.ino, "bigfile").unwrap();
        let rf = fs.lookup(rb.ino, &foid.to_string()).unwrap();
        assert_eq!(rf.size, 24);
        assert_eq!(read(&fs, rf.ino, 0, 8).unwrap(), b"abcdefgh");
        // a future @tid does not exist yet
        assert!(matches!(
            fs.lookup(ROOT, &format!("@{}", Tid(at1.0 + 1))),
            Err(FsError::NoEnt)
        ));
    }
}

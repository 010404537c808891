//! The filesystem without FUSE: the tree of nodes, the head view, READs
//! and commit processing. Callable from tests without a mount; `fuse.rs`
//! only decodes requests, calls in here and replies.

use super::errno::{lookup_error, FsError};
use super::stats::{Instant as StatsNow, Stats};
use super::watch::{self, DownWhy, PinEnd, PinWait, ReadReply, WatchLink};
use bytes::Bytes;
use engine::ftail::DeltaFTail;
use rayon::prelude::*;
use rcu::RcuCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, Instant, SystemTime};
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
/// `head/watch`.
pub(crate) const HEAD_WATCH: u64 = 9;
/// The first inode number handed out on lookup.
const FIRST_DYNAMIC: u64 = 16;

/// How often the page cache of `@<rev>/` files nobody is pinned to is
/// dropped ([`Wcfs::trim_revs`]).
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// How far behind head ΔFtail keeps history.
const HISTORY_WINDOW: Duration = Duration::from_secs(60);

/// Blocks kept loaded for READs that come in pieces (the kernel sends at
/// most 1 MiB per READ; a block is usually 2 MiB). Keyed by state, so an
/// entry never goes stale.
const BLK_CACHE_ENTRIES: usize = 16;

/// A READ of head/ whose loads were overtaken by this many commits loads
/// with ΔFtail held for reading (see `read_for`).
const READ_RETRIES: u32 = 3;

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
    HeadWatch,
    HeadBigDir,
    DotWcfs,
    Zurl,
    Stats,
    PinTimeout,
    /// `@<tid>/`.
    RevDir(Tid),
    /// `@<tid>/bigfile/`.
    RevBigDir(Tid),
    /// `head/bigfile/<oid>`: its state lives in [`Wcfs::files_mu`].
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
    /// Read since the last trim (the kernel may cache some of it).
    /// Relaxed: a hint; a missed trim only keeps pages longer.
    read: std::sync::atomic::AtomicBool,
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

/// A watch: one link's view of one head/ file as of `at` (spec §5).
pub(crate) struct Watch {
    link: Weak<WatchLink>,
    foid: Oid,
    /// The view and the pins sent for it. Held only to read or change
    /// them and to queue pins (which never blocks): never across an
    /// engine query, storage I/O or a wait for the client.
    st: Mutex<WatchState>,
}

/// What [`Watch::st`] guards.
struct WatchState {
    /// The view (`Watch.at`). Moved forward only by setups (serialized per
    /// link and file by the link's setup lock).
    at: Tid,
    /// Bumped with every move of `at`: a READ that decided its pins for
    /// one `at` sends them only if the generation is still the one it
    /// read, else it decides again (so the last pin queued for a block is
    /// always for the current `at`).
    gen: u64,
    /// Blocks pinned (or being pinned) on the client: blk -> (rev, the
    /// pin). A block not here shows head data on the client.
    pinned: HashMap<i64, (Tid, Arc<PinWait>)>,
    /// The watch was removed (`watch <oid> -`, or its link went down):
    /// nothing more is queued for it. Set before the removal's `ok` is
    /// sent, so no pin for it follows that `ok` on the link (a client
    /// forgets the file at `ok` and would fail a later pin; found as a
    /// well-behaved wcfs-stress reader killed with SIGBUS).
    removed: bool,
}

impl Watch {
    fn at(&self) -> Tid {
        lock(&self.st).at
    }

    /// `(at, generation)`.
    fn view(&self) -> (Tid, u64) {
        let st = lock(&self.st);
        (st.at, st.gen)
    }

    /// Ask the client to show block `blk` as of `rev` (`None`: head), with
    /// `st` held. Returns the pin to wait for, or `None` if nothing is to
    /// be sent (the link is gone, or the block is not pinned and `rev` is
    /// head). A pin to the same rev in force or in flight is shared, not
    /// re-sent.
    fn pin_locked(
        self: &Arc<Self>,
        st: &mut WatchState,
        blk: i64,
        rev: Option<Tid>,
        stats: &Stats,
    ) -> Option<PinJob> {
        if st.removed {
            return None;
        }
        let link = self.link.upgrade()?;
        let job = |pw: &Arc<PinWait>| PinJob {
            w: self.clone(),
            link: link.clone(),
            blk,
            rev,
            pw: pw.clone(),
        };
        match (rev, st.pinned.get(&blk)) {
            (Some(r), Some((pr, pw))) if *pr == r && !pw.failed() => return Some(job(pw)),
            (None, None) => return None,
            _ => {}
        }
        let msg = client::proto::Pin {
            oid: self.foid,
            blk,
            rev,
        }
        .to_string();
        let pw = link.send_pin(&msg);
        stats.pin.fetch_add(1, Ordering::Relaxed);
        match rev {
            Some(r) => st.pinned.insert(blk, (r, pw.clone())),
            None => st.pinned.remove(&blk),
        };
        Some(job(&pw))
    }
}

/// A pin being waited for. It holds its link: a link closed meanwhile
/// (without `bye`) leaves the registry, but its client must still be dealt
/// with when the pin fails (spec §7).
struct PinJob {
    w: Arc<Watch>,
    link: Arc<WatchLink>,
    blk: i64,
    rev: Option<Tid>,
    pw: Arc<PinWait>,
}

/// The head view: the database state head/ files are served at and the
/// files as of it. Immutable: each processed commit publishes a new one
/// ([`Wcfs::head`]); lookups publish one with a file added.
#[derive(Debug, Clone)]
struct HeadView {
    at: Tid,
    /// head/ files looked up so far: oid -> its state at `at`.
    files: Arc<HashMap<Oid, HeadFile>>,
}

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
    /// `head/watch`: a stream (no offsets, no cache), opened read-write.
    Stream,
}

/// One kernel cache invalidation that a commit asks for: `off < 0` means
/// attributes only, `len <= 0` up to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inval {
    pub(crate) ino: u64,
    pub(crate) off: i64,
    pub(crate) len: i64,
}

/// See `Wcfs::setup_hook`.
#[cfg(test)]
type SetupHook = Box<dyn Fn(&str) + Send + Sync>;

/// The filesystem. See the [module docs](super) for the locks.
pub(crate) struct Wcfs {
    zurl: String,
    pintimeout: f64,
    /// The open `head/watch` links.
    pub(crate) links: watch::Registry,
    /// Every watch by file (`BigFile.watchTab`): READs of head/ look here
    /// for the watches to pin. Held briefly, never while waiting or
    /// querying the engine; before `Watch::st` in the lock order.
    watchers: RwLock<HashMap<Oid, Vec<Arc<Watch>>>>,
    /// Notified whenever head/at moves or a link goes down, for setups
    /// waiting for head/at to reach their at.
    head_cv: (Mutex<()>, Condvar),
    /// Notified whenever a new head view is published, for READs and
    /// lookups that found ΔFtail ahead of the view they loaded.
    view_cv: (Mutex<()>, Condvar),
    /// Every `@<rev>/bigfile/<oid>` made, with its inode (for trims).
    /// Innermost; held briefly.
    rev_files: Mutex<Vec<(u64, Arc<RevFile>)>>,
    /// When `@<rev>/` page cache was last trimmed.
    last_trim: Mutex<Instant>,
    /// Tests: run at the named point (in a watch setup, `register`: before
    /// it registers its at; `unpin`: before it decides which pins to undo;
    /// in a READ, `read-pin`: before it queues the pins it decided), to put
    /// another operation there. Taken out while it runs (a hook that
    /// READs does not run again inside), put back unless replaced.
    #[cfg(test)]
    setup_hook: Mutex<Option<SetupHook>>,
    stor: Arc<dyn Storage>,
    ft: DeltaFTail,
    /// ΔFtail's contract, one writer or many readers (engine-semantics
    /// §7): the commit thread holds it for writing around `Update`,
    /// `ForgetPast` and `reset` only; Track and the queries (READs, lookups,
    /// watch setups) hold it for reading while they track and decide their
    /// pins, never while they load blocks or wait for a client. Outermost
    /// lock.
    ft_rw: RwLock<()>,
    /// The head view, an RCU snapshot: READs, getattr, open and lookups
    /// load it without any lock. Published by the commit thread after
    /// ΔFtail's update and the files' refresh; updated by lookups (a file
    /// added) only while ΔFtail is at the view's `at`.
    head: RcuCell<HeadView>,
    /// head/at as clients see it: set after the commit's invalidations are
    /// done (Release), read by `head/at` readers (Acquire).
    head_at: AtomicU64,
    /// Protected by itself; held briefly, never while waiting.
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
            (HEAD_WATCH, HEAD, "watch", Node::HeadWatch),
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
            links: watch::Registry::default(),
            watchers: RwLock::new(HashMap::new()),
            head_cv: (Mutex::new(()), Condvar::new()),
            view_cv: (Mutex::new(()), Condvar::new()),
            rev_files: Mutex::new(Vec::new()),
            last_trim: Mutex::new(Instant::now()),
            #[cfg(test)]
            setup_hook: Mutex::new(None),
            ft: DeltaFTail::new(at0, stor.clone()),
            stor,
            ft_rw: RwLock::new(()),
            head: RcuCell::new(HeadView {
                at: at0,
                files: Arc::new(HashMap::new()),
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

    /// Tests: run the hook at `point`.
    #[cfg(test)]
    fn hook(&self, point: &str) {
        let h = lock(&self.setup_hook).take();
        if let Some(h) = h {
            h(point);
            let mut g = lock(&self.setup_hook);
            if g.is_none() {
                *g = Some(h);
            }
        }
    }

    /// ΔFtail for reading (Track and queries).
    fn ft_read(&self) -> RwLockReadGuard<'_, ()> {
        self.ft_rw.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until the head view is no longer at `at` (a commit moved
    /// ΔFtail past it and is about to publish the next view).
    fn wait_view_past(&self, at: Tid) {
        let mut g = lock(&self.view_cv.0);
        while self.head.with(|v| v.at) == at {
            g = self
                .view_cv
                .1
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Publish head view `v` and wake those waiting for it.
    fn publish_view(&self, f: impl FnOnce(&HeadView) -> HeadView) {
        self.head.update(f);
        let _g = lock(&self.view_cv.0);
        self.view_cv.1.notify_all();
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
            | Node::HeadWatch
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
        loop {
            if let Some(a) = self.known_head_file(oid)? {
                return Ok(a);
            }
            // load it at the view's head (storage I/O, no lock held) ...
            let at = self.head.with(|v| v.at);
            let zf = ZBigFile::load(&*self.stor, oid, at).map_err(|e| lookup_error(oid, e))?;
            let size = zf
                .size(&*self.stor, at)
                .map_err(|e| db_err(oid, format!("@{at}: size"), e))?;
            let l = btree::lookup(&*self.stor, Family::LO, zf.blktab, i64::MAX, at)
                .map_err(|e| db_err(oid, format!("@{at}: blktab lookup of the last block"), e))?;
            // ... then track it and add it to the view, both at that head:
            // ΔFtail cannot move while we hold it for reading, and a view
            // at `at` with ΔFtail at `at` is the current one (a commit
            // publishes its view only after moving ΔFtail).
            let g = self.ft_read();
            if self.ft.head() != at {
                drop(g);
                self.wait_view_past(at);
                continue;
            }
            self.ft
                .track(&zf, -1, &l.path, l.keycov, None)
                .map_err(|e| db_err(oid, "track", e))?;
            let ino = self.child(HEAD_BIGFILE, &oid.to_string(), || Node::HeadFile(oid));
            let hf = HeadFile {
                ino,
                rev: zf.serial,
                zfile: Some(zf),
                size,
            };
            let added = self.head.update_with(|v| {
                if v.at != at || v.files.contains_key(&oid) {
                    return (v.clone(), false); // another lookup was first
                }
                let mut files = (*v.files).clone();
                files.insert(oid, hf);
                (
                    HeadView {
                        at,
                        files: Arc::new(files),
                    },
                    true,
                )
            });
            drop(g);
            if added {
                self.stats.bigfile.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The attributes of head/ file `oid` if it was looked up before
    /// (EINVAL if it is no ZBigFile any more). Takes no lock.
    fn known_head_file(&self, oid: Oid) -> Result<Option<Attr>, FsError> {
        self.head.with(|v| {
            let Some(hf) = v.files.get(&oid) else {
                return Ok(None);
            };
            if hf.zfile.is_none() {
                return Err(FsError::Inval(format!(
                    "head/bigfile/{oid}: not a ZBigFile @{}",
                    hf.rev
                )));
            }
            Ok(Some(self.head_file_attr(hf)))
        })
    }

    /// Whether a lookup of `name` in `parent` may do storage I/O (a head/
    /// file not looked up before: it is loaded at head).
    pub(crate) fn lookup_may_block(&self, parent: u64, name: &str) -> bool {
        parent == HEAD_BIGFILE
            && name
                .parse::<Oid>()
                .is_ok_and(|oid| !self.head.with(|v| v.files.contains_key(&oid)))
    }

    /// Track the blktab path to the last block, so that ΔFtail reports
    /// blocks added past the end (the file's size) even when no block near
    /// the end was read. Called by the commit thread (ΔFtail's only writer,
    /// so no writer runs meanwhile).
    fn track_size(&self, zf: &ZBigFile, at: Tid) -> Result<(), FsError> {
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
            read: Default::default(),
        });
        let mut made = false;
        let ino = self.child(parent, name, || {
            made = true;
            Node::RevFile(rf.clone())
        });
        if made {
            lock(&self.rev_files).push((ino, rf));
        }
        Ok(ino)
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
            Node::HeadWatch => small(0, 0o644, true),
            Node::Stats => small(self.stats_text().len(), 0o644, true),
            Node::Zurl => small(self.zurl.len(), 0o644, false),
            Node::PinTimeout => small(self.pintimeout_text().len(), 0o644, false),
            Node::HeadFile(oid) => self.head.with(|v| {
                v.files
                    .get(&oid)
                    .map(|hf| self.head_file_attr(hf))
                    .ok_or(FsError::NoEnt)
            })?,
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
                        | Node::HeadWatch
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
            Node::HeadWatch => Ok(OpenMode::Stream),
            Node::Zurl | Node::PinTimeout | Node::RevFile(_) => Ok(OpenMode::KeepCache),
            Node::HeadFile(oid) => {
                let live = self
                    .head
                    .with(|v| matches!(v.files.get(&oid), Some(HeadFile { zfile: Some(_), .. })));
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

    /// [`read_for`](Self::read_for) with no requester (tests).
    #[cfg(test)]
    pub(crate) fn read_with<R>(
        &self,
        ino: u64,
        off: u64,
        len: u32,
        reply: impl FnOnce(Result<&[u8], FsError>) -> R,
    ) -> R {
        self.read_for(ino, off, len, 0, reply)
    }

    /// READ(off, len) of `ino` for thread `requester` (the FUSE header pid;
    /// 0 if unknown): `reply` gets the bytes of one head state, whose
    /// blocks were tracked and pinned before (never mixed with a commit).
    /// Pins to a faulty client stop waiting for its death if the requester
    /// itself is dying.
    ///
    /// Nothing is held while the pins are waited for and the reply is
    /// sent: a commit may move the head meanwhile. That is safe because
    /// the kernel keeps the pages of a READ in flight locked until our
    /// reply, and the commit's invalidation of a changed block waits for
    /// those page locks: data of the old head that reaches the page cache
    /// after the new head was published is dropped before head/at moves.
    pub(crate) fn read_for<R>(
        &self,
        ino: u64,
        off: u64,
        len: u32,
        requester: u32,
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
            Node::Stats => reply(Ok(slice_at(self.stats_text().as_bytes(), off, len))),
            Node::HeadWatch => reply(Err(FsError::Errno(fuser::Errno::EBADF))),
            Node::Zurl => reply(Ok(slice_at(self.zurl.as_bytes(), off, len))),
            Node::PinTimeout => reply(Ok(slice_at(self.pintimeout_text().as_bytes(), off, len))),
            Node::HeadFile(oid) => {
                for attempt in 0.. {
                    // After a few commits overtook our loads, load under
                    // `ft_rw` R (a commit then waits for this load: bounded
                    // by storage I/O), so that a READ always ends.
                    let g = (attempt >= READ_RETRIES).then(|| self.ft_read());
                    let (at, hf) = self.head.with(|v| (v.at, v.files.get(&oid).cloned()));
                    let Some(HeadFile {
                        zfile: Some(zf),
                        size,
                        ..
                    }) = hf
                    else {
                        return reply(Err(FsError::NoEnt));
                    };
                    match self.read_head(&zf, size, at, off, len, requester, g) {
                        Ok(Some(b)) => return reply(Ok(&b)),
                        Ok(None) => continue, // ΔFtail moved past `at`: again at the new head
                        Err(e) => return reply(Err(e)),
                    }
                }
                unreachable!("the attempts under ft_rw end")
            }
            Node::RevFile(rf) => {
                rf.read.store(true, Ordering::Relaxed);
                match self.read_blocks(&rf.zfile, rf.size, rf.at, off, len) {
                    Ok((b, _)) => reply(Ok(&b)),
                    Err(e) => reply(Err(e)),
                }
            }
            _ => reply(Err(FsError::Errno(fuser::Errno::EISDIR))),
        }
    }

    /// A READ of head/ file `zf` as of head view `at`: load the blocks (no
    /// lock), then with ΔFtail held for reading and at `at`, track them
    /// and queue the pins the watches need; then wait for the pins with
    /// nothing held. `None`: ΔFtail had moved past `at` (a commit is being
    /// published); the caller reads again at the new head.
    #[allow(clippy::too_many_arguments)]
    fn read_head(
        &self,
        zf: &ZBigFile,
        size: u64,
        at: Tid,
        off: u64,
        len: u32,
        requester: u32,
        held: Option<RwLockReadGuard<'_, ()>>,
    ) -> Result<Option<Bytes>, FsError> {
        let (data, blocks) = self.read_blocks(zf, size, at, off, len)?;
        if blocks.is_empty() {
            return Ok(Some(data));
        }
        let jobs = {
            let g = held.unwrap_or_else(|| self.ft_read());
            if self.ft.head() != at {
                drop(g);
                self.wait_view_past(at);
                return Ok(None);
            }
            for b in &blocks {
                self.ft
                    .track(zf, b.blk, &b.path, b.keycov, b.zblk)
                    .map_err(|e| db_err(zf.oid, format!("@{at}: track blk #{}", b.blk), e))?;
            }
            self.pin_watchers(zf, at, &blocks)
        };
        self.wait_pins(jobs, requester);
        Ok(Some(data))
    }

    /// Bytes `[off, off+len)` of `zf` as of `at`, clamped to `size`, and
    /// the blocks they came from.
    fn read_blocks(
        &self,
        zf: &ZBigFile,
        size: u64,
        at: Tid,
        off: u64,
        len: u32,
    ) -> Result<(Bytes, Vec<Arc<Block>>), FsError> {
        let end = off.saturating_add(len as u64).min(size);
        if end <= off {
            return Ok((Bytes::new(), Vec::new()));
        }
        let bs = zf.blksize;
        let (b0, b1) = ((off / bs) as i64, ((end - 1) / bs) as i64);
        let blocks: Vec<Arc<Block>> = (b0..=b1)
            .into_par_iter()
            .map(|blk| self.load_blk(zf, blk, at))
            .collect::<Result<_, _>>()?;
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_read
            .fetch_add(end - off, Ordering::Relaxed);
        if b0 == b1 {
            let base = b0 as u64 * bs;
            let (lo, hi) = ((off - base) as usize, (end - base) as usize);
            if hi <= blocks[0].data.len() {
                let data = blocks[0].data.slice(lo..hi); // no copy
                return Ok((data, blocks));
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
        Ok((out.into(), blocks))
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

    /// Process transaction `tid` (which stored `oids`): update ΔFtail (its
    /// lock held for writing, READs' loads and pin waits go on), refresh
    /// the head files it touched (storage I/O, no lock), publish the new
    /// head view, forget old history. Returns the kernel cache
    /// invalidations to send: the caller sends them after this returns,
    /// then calls [`publish`](Self::publish).
    pub(crate) fn handle_commit(&self, tid: Tid, oids: &[Oid]) -> anyhow::Result<Vec<Inval>> {
        let (df, view) = {
            let _w = self.ft_rw.write().unwrap_or_else(|p| p.into_inner());
            let df = self.ft.update(tid, oids)?;
            if let Some(t) = tid.to_time().and_then(|t| t.checked_sub(HISTORY_WINDOW)) {
                // keep what every watch still needs
                let cut = match self.min_watch_at() {
                    Some(m) => Tid::from_time(t).min(m),
                    None => Tid::from_time(t),
                };
                if cut > self.ft.tail() && cut < tid {
                    self.ft.forget_past(cut)?;
                }
            }
            // No lookup can add a file from here until the view below is
            // published: lookups add only while ΔFtail is at the view's at.
            (df, self.head.load())
        };
        let mut inval = Vec::new();
        let mut nblk = 0;
        let mut refreshed: Vec<(Oid, HeadFile)> = Vec::new();
        for (foid, d) in &df.by_file {
            let Some(hf) = view.files.get(foid) else {
                continue;
            };
            let mut hf = hf.clone();
            hf.rev = tid;
            let ino = hf.ino;
            if d.epoch {
                self.epoch_watchers(*foid, tid);
                inval.push(Inval {
                    ino,
                    off: 0,
                    len: 0,
                });
                self.reload_head_file(*foid, &mut hf, tid);
                refreshed.push((*foid, hf));
                continue;
            }
            let Some(zf) = hf.zfile.clone() else {
                refreshed.push((*foid, hf));
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
                if let Err(e) = self.track_size(&zf, tid) {
                    tracing::error!("{e}");
                }
            }
            refreshed.push((*foid, hf));
        }
        self.publish_view(|v| {
            let mut files = (*v.files).clone();
            for (foid, hf) in refreshed {
                files.insert(foid, hf);
            }
            HeadView {
                at: tid,
                files: Arc::new(files),
            }
        });
        if lock(&self.last_trim).elapsed() >= TRIM_EVERY {
            inval.extend(self.trim_revs());
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .invalidated_blocks
            .fetch_add(nblk, Ordering::Relaxed);
        Ok(inval)
    }

    /// The `@<rev>/` files read since the last trim whose revision no
    /// watch has pinned: their page cache is to be dropped (the caller
    /// sends the invalidations). Nobody is told to map them, so this costs
    /// at most a re-read; without it every revision a client was ever
    /// pinned to keeps its pages (they pile up with the commits).
    fn trim_revs(&self) -> Vec<Inval> {
        *lock(&self.last_trim) = Instant::now();
        let pinned: std::collections::HashSet<Tid> = self
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .flat_map(|w| {
                lock(&w.st)
                    .pinned
                    .values()
                    .map(|(r, _)| *r)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut out = Vec::new();
        for (ino, rf) in lock(&self.rev_files).iter() {
            if pinned.contains(&rf.at) || !rf.read.swap(false, Ordering::Relaxed) {
                continue;
            }
            out.push(Inval {
                ino: *ino,
                off: 0,
                len: 0,
            });
        }
        self.stats
            .rev_trimmed
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Head file `foid` changed as a whole at `tid`: load it (and its size)
    /// again and track its size path, or mark it gone.
    fn reload_head_file(&self, foid: Oid, hf: &mut HeadFile, tid: Tid) {
        let re = ZBigFile::load(&*self.stor, foid, tid).and_then(|zf| {
            let size = zf.size(&*self.stor, tid)?;
            Ok((zf, size))
        });
        match re {
            Ok((zf, size)) => {
                if let Err(e) = self.track_size(&zf, tid) {
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
    }

    /// The storage moved to `head` without saying what changed (its
    /// watcher's [`zodb::Error::ChangesUnknown`]): assume everything did.
    /// Under the head view write lock: ΔFtail forgets all (its history
    /// restarts at `head`), every head/ file is reloaded and its whole page
    /// cache is to be dropped, and every watch link is shut down with
    /// `0 fatal: ...` (no pin can keep an older view isolated across
    /// changes nobody knows; the clients did nothing wrong, so nobody is
    /// killed). Returns the invalidations to send; the caller then
    /// publishes `head`.
    pub(crate) fn handle_unknown(&self, head: Tid, why: &str) -> Vec<Inval> {
        let links: Vec<Arc<WatchLink>> = self
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .filter_map(|w| w.link.upgrade())
            .collect();
        for l in links {
            let msg =
                format!("fatal: storage changes up to @{head} unknown: the watch cannot be kept");
            if l.shutdown(Some(&msg), DownWhy::Epoch) {
                tracing::warn!(link = l.id, pid = l.client.pid, "head/watch: {msg}");
            }
            self.drop_watches(&l);
        }
        let view = {
            let _w = self.ft_rw.write().unwrap_or_else(|p| p.into_inner());
            self.ft.reset(head);
            self.head.load()
        };
        let mut inval = Vec::new();
        let mut files = (*view.files).clone();
        for (foid, hf) in files.iter_mut() {
            hf.rev = head;
            inval.push(Inval {
                ino: hf.ino,
                off: 0,
                len: 0,
            });
            self.reload_head_file(*foid, hf, head);
        }
        tracing::warn!(
            %head, n = inval.len(),
            "storage changes unknown ({why}): every head/ file invalidated, history restarted"
        );
        self.publish_view(|v| {
            let mut all = (*v.files).clone();
            all.extend(files);
            HeadView {
                at: head,
                files: Arc::new(all),
            }
        });
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        inval
    }

    /// Show `tid` in head/at (after its invalidations were sent).
    pub(crate) fn publish(&self, tid: Tid) {
        self.head_at.store(tid.0, Ordering::Release);
        self.wake_setups();
    }

    /// File `foid` changed as a whole at `tid` (re-created, blksize or
    /// blktab replaced): block numbers of views before `tid` no longer
    /// mean the same bytes, so its watches cannot be kept isolated by pins.
    /// Their links are shut down with `0 fatal: ...` (no kill: the client
    /// did nothing wrong; it sees its link end).
    fn epoch_watchers(&self, foid: Oid, tid: Tid) {
        let ws = self
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&foid)
            .cloned()
            .unwrap_or_default();
        for w in ws {
            if let Some(l) = w.link.upgrade() {
                let msg = format!("fatal: file {foid}: epoch @{tid}: the watch cannot be kept");
                tracing::warn!(link = l.id, pid = l.client.pid, "head/watch: {msg}");
                l.shutdown(Some(&msg), DownWhy::Epoch);
                self.drop_watches(&l);
            }
        }
    }

    /// The storage served.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.stor
    }
}

// ---- 4) the isolation protocol: watches and pins (spec §5, §7) ----

impl Wcfs {
    fn pintimeout(&self) -> Duration {
        Duration::from_secs_f64(self.pintimeout.max(0.001))
    }

    fn stats_text(&self) -> String {
        let (mut watches, mut pinned) = (0, 0);
        for ws in self
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            watches += ws.len() as u64;
            pinned += ws
                .iter()
                .map(|w| lock(&w.st).pinned.len() as u64)
                .sum::<u64>();
        }
        self.stats.render(StatsNow {
            watch_link: self.links.count() as u64,
            watch: watches,
            pinned_blk: pinned,
            tracked_blocks: self.ft.explicitly_tracked_count(),
            pin_rtt_p50_us: self.links.rtt.quantile(0.5),
            pin_rtt_p99_us: self.links.rtt.quantile(0.99),
        })
    }

    /// Before `blocks` of `zf` (as of head `head`) reach the kernel: queue
    /// the pins of every watch of the file whose view is older than the
    /// block's revision (spec §5 "lazy pins"), and return them for the
    /// caller to wait for once it has released ΔFtail. Called with ΔFtail
    /// held for reading and at `head`.
    fn pin_watchers(&self, zf: &ZBigFile, head: Tid, blocks: &[Arc<Block>]) -> Vec<PinJob> {
        let ws = match self
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&zf.oid)
        {
            Some(ws) if !ws.is_empty() => ws.clone(),
            _ => return Vec::new(),
        };
        let mut jobs: Vec<PinJob> = Vec::new();
        for w in &ws {
            // decide for the watch's at, then queue if it did not move
            // meanwhile (a setup moving it bumps the generation)
            loop {
                let (at, gen) = w.view();
                let mut want: Vec<(i64, Tid)> = Vec::new();
                for b in blocks {
                    if b.rev_max <= at {
                        continue; // the cheap upper bound says: unchanged since at
                    }
                    let hint = Some(b.zblk.unwrap_or(Oid::INVALID));
                    let r =
                        self.ft
                            .blk_rev_at_hint(zf.oid, b.blk, head, hint)
                            .and_then(|(rh, _)| {
                                if rh <= at {
                                    Ok(None)
                                } else {
                                    self.ft.blk_rev_at(zf.oid, b.blk, at).map(|(r, _)| Some(r))
                                }
                            });
                    match r {
                        Ok(None) => {}
                        Ok(Some(rev)) => want.push((b.blk, rev)),
                        Err(e) => tracing::error!(
                            oid = %zf.oid, blk = b.blk,
                            "pin for a watch @{at}: BlkRevAt: {e}: this watch is not pinned"
                        ),
                    }
                }
                #[cfg(test)]
                self.hook("read-pin");
                let mut st = lock(&w.st);
                if st.gen != gen {
                    continue;
                }
                for (blk, rev) in want {
                    jobs.extend(w.pin_locked(&mut st, blk, Some(rev), &self.stats));
                }
                break;
            }
        }
        jobs
    }

    /// Wait for all `jobs` (sent in parallel) until the pin timeout; deal
    /// with each that failed. True if all were acked.
    fn wait_pins(&self, jobs: Vec<PinJob>, requester: u32) -> bool {
        let deadline = Instant::now() + self.pintimeout();
        let mut ok = true;
        for j in jobs {
            match j.pw.wait(deadline) {
                Some(PinEnd::Ack) => {}
                end => {
                    ok = false;
                    self.pin_failed(&j, end, requester);
                }
            }
        }
        ok
    }

    /// A pin failed (`end`: its reply, `None` on timeout): shut the link
    /// down with `0 fatal: ...`, drop its watches, kill the client unless it
    /// is leaving (spec §7), and return only once it is dead, so that the
    /// data that needed the pin never reaches a page cache the faulty
    /// client still maps. Waiting stops early when `requester` (the thread
    /// the READ is for; 0 = none) is dying: it may be the client itself,
    /// which cannot die while its READ waits for us.
    fn pin_failed(&self, j: &PinJob, end: Option<PinEnd>, requester: u32) {
        let (w, link, blk) = (&j.w, &j.link, j.blk);
        let why = match &end {
            None => "timeout".to_owned(),
            Some(PinEnd::Nak(m)) => format!("expected {:?}, got {m:?}", client::proto::ACK),
            Some(PinEnd::LinkDown) => "link is down".to_owned(),
            Some(PinEnd::Ack) => return,
        };
        let rev = j.rev.map_or("head".to_owned(), |r| r.to_string());
        if end != Some(PinEnd::LinkDown) {
            let msg = format!("fatal: pin #{blk} @{rev}: {why}");
            tracing::warn!(link = link.id, pid = link.client.pid, oid = %w.foid, "head/watch: {msg}");
            link.shutdown(Some(&msg), DownWhy::PinFailed);
        }
        self.drop_watches(link);
        let pt = self.pintimeout();
        let stop = || requester != 0 && watch::thread_dying(requester);
        if !link.claim_kill() {
            // another waiter deals with the client: wait for its verdict
            if matches!(
                link.down_why(),
                Some(DownWhy::PinFailed | DownWhy::Protocol | DownWhy::Closed)
            ) {
                link.wait_kill(pt + Duration::from_secs(3), &stop);
            }
            return;
        }
        if watch::bad_pin_kill(link, end, pt, &stop) {
            self.stats.pinkill.fetch_add(1, Ordering::Relaxed);
        }
        link.kill_finished();
    }

    /// Remove all watches of `link` (it is down).
    fn drop_watches(&self, link: &Arc<WatchLink>) {
        let ws: Vec<Arc<Watch>> = lock(&link.byfile).drain().map(|(_, w)| w).collect();
        if ws.is_empty() {
            return;
        }
        for w in &ws {
            lock(&w.st).removed = true;
        }
        let mut all = self.watchers.write().unwrap_or_else(|p| p.into_inner());
        for w in ws {
            if let Some(v) = all.get_mut(&w.foid) {
                v.retain(|x| !Arc::ptr_eq(x, &w));
                if v.is_empty() {
                    all.remove(&w.foid);
                }
            }
        }
    }

    /// The oldest view of any watch (history must be kept for it).
    fn min_watch_at(&self) -> Option<Tid> {
        let all = self.watchers.read().unwrap_or_else(|p| p.into_inner());
        all.values().flatten().map(|w| w.at()).min()
    }

    /// OPEN of `head/watch` by thread `tid`: a new link, its id is the
    /// file handle. Fails if the opener is gone already.
    pub(crate) fn watch_open(&self, tid: u32) -> Result<u64, FsError> {
        let l = self
            .links
            .open(tid)
            .ok_or(FsError::Errno(fuser::Errno::ESRCH))?;
        tracing::debug!(link = l.id, pid = l.client.pid, "head/watch: open");
        Ok(l.id)
    }

    /// READ of `head/watch` link `fh` by thread `tid`: answered when a
    /// line is there (at once if queued), EOF once the link is down.
    pub(crate) fn watch_read(&self, fh: u64, size: u32, tid: u32, reply: ReadReply) {
        match self.links.get(fh) {
            Some(l) => l.read(size, tid, reply),
            None => reply(Err(fuser::Errno::EBADF)),
        }
    }

    /// WRITE to `head/watch` link `fh`: replies are taken at once; watch
    /// requests run in their own threads (they wait for head/at and for
    /// pins). Never blocks.
    pub(crate) fn watch_write(self: &Arc<Self>, fh: u64, data: &[u8]) -> Result<(), FsError> {
        let l = self
            .links
            .get(fh)
            .ok_or(FsError::Errno(fuser::Errno::EBADF))?;
        for i in l.input(data) {
            match i {
                watch::Input::Down => {
                    self.drop_watches(&l);
                    self.wake_setups();
                }
                watch::Input::Watch { stream, oid, at } => {
                    let (fs, l2) = (self.clone(), l.clone());
                    l.setups.fetch_add(1, Ordering::Relaxed);
                    let r =
                        std::thread::Builder::new()
                            .name("wcfs-watch".into())
                            .spawn(move || {
                                fs.setup_watch(&l2, stream, oid, at);
                                l2.setups.fetch_sub(1, Ordering::Relaxed);
                            });
                    if let Err(e) = r {
                        l.setups.fetch_sub(1, Ordering::Relaxed);
                        tracing::error!("start a watch setup: {e}");
                        l.send(stream, &format!("error {e}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// RELEASE of `head/watch` link `fh`: the link goes down, its watches
    /// go, pins in flight to it end (without a kill).
    pub(crate) fn watch_release(&self, fh: u64) {
        if let Some(l) = self.links.remove(fh) {
            l.shutdown(None, DownWhy::Closed);
            self.drop_watches(&l);
            self.wake_setups();
            tracing::debug!(link = l.id, "head/watch: closed");
        }
    }

    fn wake_setups(&self) {
        let _g = lock(&self.head_cv.0);
        self.head_cv.1.notify_all();
    }

    /// `watch <oid> @<at>` / `watch <oid> -` on `stream` of `link`:
    /// set the watch up or move it (`at_prev → at`, pins and unpins), or
    /// remove it; reply `ok` or `error ...` (spec §5). Runs on its own
    /// thread; holds ΔFtail for reading while it registers and decides its
    /// pins, and nothing but its link's per-file setup lock while it waits
    /// for head/at and for the acks.
    fn setup_watch(&self, link: &Arc<WatchLink>, stream: u64, foid: Oid, at: Option<Tid>) {
        let setup = link.setup_lock(foid);
        let _setup = lock(&setup);
        let at_text = at.map_or_else(|| Tid(u64::MAX).to_string(), |t| t.to_string());
        let fail = |why: &str| {
            link.send(
                stream,
                &format!("error setup watch f{foid} @{at_text}: {why}"),
            )
        };
        let known = || {
            self.head
                .with(|v| v.files.get(&foid).and_then(|hf| hf.zfile.clone()))
        };
        const UNKNOWN: &str = "file not yet known to wcfs or is not a ZBigFile";
        let Some(at) = at else {
            // removal
            if known().is_none() {
                return fail(UNKNOWN);
            }
            let w = lock(&link.byfile).remove(&foid);
            if let Some(w) = w {
                lock(&w.st).removed = true;
                let mut all = self.watchers.write().unwrap_or_else(|p| p.into_inner());
                if let Some(v) = all.get_mut(&foid) {
                    v.retain(|x| !Arc::ptr_eq(x, &w));
                    if v.is_empty() {
                        all.remove(&foid);
                    }
                }
            }
            return link.send(stream, "ok");
        };
        if known().is_none() {
            return fail(UNKNOWN);
        }
        // wait for head/at ≥ at (published: its invalidations are done)
        {
            let mut g = lock(&self.head_cv.0);
            while self.head_at() < at {
                if link.is_down() {
                    return;
                }
                g = self
                    .head_cv
                    .1
                    .wait_timeout(g, Duration::from_millis(200))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        let jobs = match self.setup_pins(link, foid, at) {
            Ok(Some(jobs)) => jobs,
            Ok(None) => return, // the link went down
            Err(why) => return fail(&why),
        };
        if self.wait_pins(jobs, 0) {
            link.send(stream, "ok");
        }
    }

    /// The part of a setup done with ΔFtail held for reading (so at one
    /// ΔFtail head, which is ≥ head/at ≥ `at`): checks, registration of
    /// `at`, and the pins and unpins that make the client's view `at`,
    /// queued. Returns them to wait for; `None` if the link went down;
    /// `Err` with the text of the `error` reply.
    fn setup_pins(
        &self,
        link: &Arc<WatchLink>,
        foid: Oid,
        at: Tid,
    ) -> Result<Option<Vec<PinJob>>, String> {
        let _g = self.ft_read();
        let head = self.ft.head();
        if self
            .head
            .with(|v| v.files.get(&foid).is_none_or(|hf| hf.zfile.is_none()))
        {
            return Err("file not yet known to wcfs or is not a ZBigFile".into());
        }
        if at < self.ft.tail() {
            let dt = tid_time(head)
                .duration_since(tid_time(at))
                .unwrap_or_default();
            return Err(format!(
                "too far away back from head/at (@{head}); δt = {}",
                watch::go_duration(dt)
            ));
        }
        let existing = lock(&link.byfile).get(&foid).cloned();
        if let Some(w) = &existing {
            if at < w.at() {
                return Err("going back in history is forbidden".into());
            }
        }
        let opts = engine::ftail::SliceOpts {
            only_explicitly_tracked: true,
        };
        // epochs depend on the file's history only, not on what is tracked
        let c = self
            .ft
            .slice_by_file_rev_ex(foid, at, head, opts)
            .map_err(|e| e.to_string())?;
        if let Some(e) = c.iter().find(|d| d.epoch) {
            return Err(format!(
                "file epoch detected @{} in between (at,head=@{head}]",
                e.rev
            ));
        }
        // Register the new at *before* asking which tracked blocks changed
        // in (at, head]: a READ Tracks its blocks and then looks for the
        // registered watches. Each block a READ Tracks is either Tracked
        // before the slice below (so we pin it) or pinned by that READ for
        // this at. (`watchers` and ΔFtail's track bookkeeping are both
        // mutexes: of a READ's "track, then look up watches" and our
        // "register, then slice", one sees the other's first step.) Asking
        // first left a window where a READ Tracked a block for the first
        // time and did not know this at: that block reached the page cache
        // unpinned for this watch (found by wcfs-stress: a readahead READ
        // of 30 blocks right after an epoch, when no block of the file was
        // tracked).
        #[cfg(test)]
        self.hook("register");
        let (w, gen) = match existing {
            Some(w) => {
                let gen = {
                    let mut st = lock(&w.st);
                    st.at = at;
                    st.gen += 1;
                    st.gen
                };
                (w, gen)
            }
            None => {
                let w = Arc::new(Watch {
                    link: Arc::downgrade(link),
                    foid,
                    st: Mutex::new(WatchState {
                        at,
                        gen: 0,
                        pinned: HashMap::new(),
                        removed: false,
                    }),
                });
                if link.is_down() {
                    return Ok(None);
                }
                lock(&link.byfile).insert(foid, w.clone());
                self.watchers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(foid)
                    .or_default()
                    .push(w.clone());
                (w, 0)
            }
        };
        let changed = self
            .ft
            .slice_by_file_rev_ex(foid, at, head, opts)
            .map_err(|e| e.to_string())?;
        let blocks: std::collections::BTreeSet<i64> = changed
            .iter()
            .flat_map(|d| d.blocks.iter().copied())
            .collect();
        let mut want: Vec<(i64, Option<Tid>)> = Vec::new();
        for &blk in &blocks {
            let (rev, _) = self
                .ft
                .blk_rev_at(foid, blk, at)
                .map_err(|e| format!("pin #{blk}: {e}"))?;
            want.push((blk, Some(rev)));
        }
        #[cfg(test)]
        self.hook("unpin");
        // Pinned blocks the slice did not name: unpin those unchanged in
        // (at, head]. Not named is not enough: a READ may have Tracked a
        // block after the slice and pinned it for this at (it sees the
        // registered at); so each is asked about on its own.
        let unpin: Vec<i64> = lock(&w.st)
            .pinned
            .keys()
            .copied()
            .filter(|b| !blocks.contains(b))
            .collect();
        for blk in unpin {
            let (rh, _) = self
                .ft
                .blk_rev_at(foid, blk, head)
                .map_err(|e| format!("pin #{blk}: {e}"))?;
            let rev = if rh <= at {
                None
            } else {
                let (r, _) = self
                    .ft
                    .blk_rev_at(foid, blk, at)
                    .map_err(|e| format!("pin #{blk}: {e}"))?;
                Some(r)
            };
            want.push((blk, rev));
        }
        let mut jobs: Vec<PinJob> = Vec::new();
        let mut st = lock(&w.st);
        // setups of one watch are serialized by the setup lock: nobody
        // moved it since we registered
        debug_assert_eq!(st.gen, gen);
        for (blk, rev) in want {
            jobs.extend(w.pin_locked(&mut st, blk, rev, &self.stats));
        }
        Ok(Some(jobs))
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

/// The isolation protocol on the filesystem without a mount: watch links
/// driven through `watch_open/read/write`, pins acked by a thread per
/// link, commits through `handle_commit`.
#[cfg(test)]
mod watch_tests {
    use super::*;
    use std::sync::mpsc;
    use zodb::zbigfile::ZBlkFormat;
    use zodb::zwrite::ZWriter;

    /// One link as a test client: a thread reads its lines, acks every pin
    /// (when `auto_ack`) and passes all lines on.
    pub(super) struct TLink {
        fs: Arc<Wcfs>,
        pub(super) fh: u64,
        rx: mpsc::Receiver<String>,
    }

    impl TLink {
        pub(super) fn open(fs: &Arc<Wcfs>, auto_ack: bool) -> TLink {
            let fh = fs.watch_open(std::process::id()).unwrap();
            let (tx, rx) = mpsc::channel();
            let f2 = fs.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    let (btx, brx) = mpsc::channel();
                    f2.watch_read(
                        fh,
                        4096,
                        std::process::id(),
                        Box::new(move |r| {
                            let _ = btx.send(r.map(|b| b.to_vec()));
                        }),
                    );
                    let Ok(Ok(b)) = brx.recv() else { return };
                    if b.is_empty() {
                        let _ = tx.send("EOF".to_owned());
                        return;
                    }
                    buf.extend(b);
                    while let Some(nl) = buf.iter().position(|&c| c == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let line = String::from_utf8(line).unwrap().trim_end().to_owned();
                        // passed on before the ack, so that a READ the ack
                        // releases finds the pin already recorded
                        let ack = (auto_ack && line.contains(" pin "))
                            .then(|| format!("{} ack\n", line.split(' ').next().unwrap()));
                        if tx.send(line).is_err() {
                            return;
                        }
                        if let Some(a) = ack {
                            f2.watch_write(fh, a.as_bytes()).unwrap();
                        }
                    }
                }
            });
            TLink {
                fs: fs.clone(),
                fh,
                rx,
            }
        }

        fn send(&self, line: &str) {
            self.fs
                .watch_write(self.fh, format!("{line}\n").as_bytes())
                .unwrap();
        }

        fn line(&self) -> String {
            self.rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a line from the server within 10 s")
        }

        /// Send request `line` on `stream` and collect the pins (blk ->
        /// "@rev") that come before the reply; returns (pins, reply).
        pub(super) fn request(&self, stream: u64, line: &str) -> (BTreeMap<i64, String>, String) {
            self.send(&format!("{stream} {line}"));
            let mut pins = BTreeMap::new();
            loop {
                let l = self.line();
                let (s, msg) = l.split_once(' ').unwrap();
                if s == stream.to_string() {
                    return (pins, msg.to_owned());
                }
                let p = client::proto::parse_pin(msg).unwrap_or_else(|e| panic!("{l}: {e}"));
                let rev = p.rev.map_or("@head".to_owned(), |r| format!("@{r}"));
                assert!(pins.insert(p.blk, rev).is_none(), "pinned twice: {l}");
            }
        }

        pub(super) fn pins_now(&self) -> BTreeMap<i64, String> {
            let mut pins = BTreeMap::new();
            while let Ok(l) = self.rx.try_recv() {
                let (_, msg) = l.split_once(' ').unwrap();
                let p = client::proto::parse_pin(msg).unwrap_or_else(|e| panic!("{l}: {e}"));
                pins.insert(p.blk, p.rev.map_or("@head".to_owned(), |r| format!("@{r}")));
            }
            pins
        }
    }

    use std::collections::BTreeMap;

    pub(super) fn commit(fs: &Wcfs, stor: &Arc<dyn Storage>, tid: Tid) {
        stor.sync().unwrap();
        let txn = stor.iterate(tid, tid).unwrap().next().unwrap().unwrap();
        fs.handle_commit(tid, &txn.oids).unwrap();
        fs.publish(tid);
    }

    pub(super) fn read(fs: &Wcfs, ino: u64, off: u64, len: u32) -> Vec<u8> {
        fs.read_with(ino, off, len, |r| r.unwrap().to_vec())
    }

    /// The spec's worked example (§5, `test_wcfs_watch_setup`), then lazy
    /// pins on READ of a block never read before.
    #[test]
    fn setup_example_and_lazy_pins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        let bs = 4u64;
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        let (foid, at0) = zw
            .create_file(
                "f",
                bs,
                &[
                    (1, d("a1")),
                    (2, d("a2")),
                    (3, d("a3")),
                    (4, d("a4")),
                    (5, d("a5")),
                ],
            )
            .unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 5.0).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        for blk in [0u64, 2, 3, 5] {
            read(&fs, a.ino, blk * bs, bs as u32);
        }
        let mut at = vec![at0];
        for set in [&[2][..], &[2, 3, 4, 5], &[0, 2, 5], &[2, 4, 5], &[3, 5]] {
            let n = at.len();
            let data: Vec<String> = set.iter().map(|b| format!("{b}.{n}")).collect();
            let ch: Vec<_> = set
                .iter()
                .zip(&data)
                .map(|(&b, s)| (b, Some((ZBlkFormat::ZBlk0, s.as_bytes()))))
                .collect();
            let t = zw.update_file(foid, &ch).unwrap();
            commit(&fs, &stor, t);
            at.push(t);
        }
        let r = |i: usize| format!("@{}", at[i]);
        let want = |v: &[(i64, String)]| v.iter().cloned().collect::<BTreeMap<_, _>>();

        let la = TLink::open(&fs, true);
        let (pins, reply) = la.request(1, &format!("watch {foid} {}", r(1)));
        assert_eq!(reply, "ok");
        assert_eq!(pins, want(&[(0, r(0)), (2, r(1)), (3, r(0)), (5, r(0))]));

        let lb = TLink::open(&fs, true);
        let (pins, reply) = lb.request(1, &format!("watch {foid} {}", r(2)));
        assert_eq!(reply, "ok");
        assert_eq!(pins, want(&[(0, r(0)), (2, r(2)), (3, r(2)), (5, r(2))]));
        let (pins, reply) = lb.request(3, &format!("watch {foid} {}", r(3)));
        assert_eq!(reply, "ok");
        assert_eq!(pins, want(&[(0, "@head".into()), (2, r(3)), (5, r(3))]));
        let (pins, reply) = lb.request(5, &format!("watch {foid} {}", r(1)));
        assert!(pins.is_empty());
        assert_eq!(
            reply,
            format!(
                "error setup watch f{foid} {}: going back in history is forbidden",
                r(1)
            )
        );

        let lc = TLink::open(&fs, true);
        let (pins, reply) = lc.request(1, &format!("watch {foid} {}", r(5)));
        assert_eq!((pins.len(), reply.as_str()), (0, "ok"));

        // block 4 was never read: reading it now pins A (@at1 → at0) and
        // B (@at3 → at2), not C (at5 ≥ its revision at4), before the data
        assert_eq!(read(&fs, a.ino, 4 * bs, bs as u32), b"4.4\0");
        assert_eq!(la.pins_now(), want(&[(4, r(0))]));
        assert_eq!(lb.pins_now(), want(&[(4, r(2))]));
        assert!(lc.pins_now().is_empty());
        // again: nothing new
        assert_eq!(read(&fs, a.ino, 4 * bs, bs as u32), b"4.4\0");
        assert!(la.pins_now().is_empty() && lb.pins_now().is_empty());
        let st = fs.stats_text();
        assert!(st.contains("WatchLink\t: 3\n"), "{st}");
        assert!(st.contains("Watch\t: 3\n"), "{st}");

        // a file never looked up; bad requests; removal
        let (_, reply) = lc.request(3, &format!("watch {} {}", Oid(999), r(5)));
        assert_eq!(
            reply,
            format!(
                "error setup watch f{} {}: file not yet known to wcfs or is not a ZBigFile",
                Oid(999),
                r(5)
            )
        );
        let (_, reply) = lc.request(5, "watch 123 @x");
        assert_eq!(reply, "error bad watch: invalid oid");
        let (_, reply) = lc.request(7, &format!("watch {foid} -"));
        assert_eq!(reply, "ok");
        // bye: EOF, the watches go
        la.send("9 bye");
        assert_eq!(la.line(), "EOF");
        fs.watch_release(la.fh);
        let st = fs.stats_text();
        assert!(st.contains("Watch\t: 1\n"), "{st}");
    }

    /// The shape of the violation in stress/findings (an epoch, a view
    /// after it, then a bulk delete of blocks on a blktab of small nodes):
    /// every deleted block read through head/ pins the view.
    #[test]
    fn epoch_then_bulk_delete_pins_every_block() {
        use zodb::btree::{self, Family};
        use zodb::zbigfile::{self, NewObject};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        zw.blktab_shape.max_bucket = 8;
        zw.blktab_shape.max_tree = 4;
        let data: Vec<Vec<u8>> = (0..64).map(|b| vec![b as u8 + 1; 4]).collect();
        let ch: Vec<_> = (0..64)
            .map(|b| (b as i64, Some((ZBlkFormat::ZBlk0, &data[b][..]))))
            .collect();
        let (foid, _) = zw.create_file("f", 4, &ch).unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 5.0).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        for b in 0..64u64 {
            read(&fs, a.ino, b * 4, 4);
        }
        let at1 = zw
            .update_file(foid, &[(30, Some((ZBlkFormat::ZBlk0, b"zz")))])
            .unwrap();
        commit(&fs, &stor, at1);
        // the epoch: the blktab replaced by a new tree with the same items
        let head = stor.last_tid().unwrap();
        let f = ZBigFile::load(&*stor, foid, head).unwrap();
        let items = btree::items(&*stor, Family::LO, f.blktab, head).unwrap();
        let root = zw.new_oid();
        let shape = zw.blktab_shape;
        let mut objs: Vec<NewObject> =
            btree::build(Family::LO, &items, shape, root, &mut || zw.new_oid());
        objs.push(NewObject {
            oid: foid,
            class: zbigfile::ZBIGFILE,
            state: zbigfile::zbigfile_state(4, root),
        });
        let ate = zw.commit_objects("epoch", objs).unwrap();
        commit(&fs, &stor, ate);
        for b in 0..64u64 {
            read(&fs, a.ino, b * 4, 4);
        }
        let at2 = zw
            .update_file(foid, &[(1, Some((ZBlkFormat::ZBlk0, b"yy")))])
            .unwrap();
        commit(&fs, &stor, at2);
        let l = TLink::open(&fs, true);
        let (_, reply) = l.request(1, &format!("watch {foid} @{at2}"));
        assert_eq!(reply, "ok");
        let dels: Vec<_> = (27..55).map(|b| (b as i64, None)).collect();
        let at3 = zw.update_file(foid, &dels).unwrap();
        commit(&fs, &stor, at3);
        for b in 27..55u64 {
            assert_eq!(read(&fs, a.ino, b * 4, 4), vec![0; 4]);
        }
        let pins = l.pins_now();
        let missing: Vec<i64> = (27..55).filter(|b| !pins.contains_key(b)).collect();
        assert!(missing.is_empty(), "no pin for {missing:?}; pins {pins:?}");
    }

    /// A file "f" of 4-byte blocks a0 a1 a2 (at0), served without a mount.
    struct ThreeBlocks {
        _dir: tempfile::TempDir,
        zw: ZWriter,
        foid: Oid,
        at0: Tid,
        stor: Arc<dyn Storage>,
        fs: Arc<Wcfs>,
        /// head/bigfile/<foid>
        ino: u64,
    }

    fn three_blocks() -> ThreeBlocks {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        let (foid, at0) = zw
            .create_file("f", 4, &[(0, d("a0")), (1, d("a1")), (2, d("a2"))])
            .unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 5.0).unwrap());
        let ino = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap().ino;
        ThreeBlocks {
            _dir: dir,
            zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        }
    }

    /// A READ that Tracks a block for the first time while a watch is being
    /// set up (after its checks, before it registers its at) must not let
    /// that block reach the page cache unpinned for the new watch: the
    /// setup asks ΔFtail only after registering. The shape of the
    /// wcfs-stress finding (nothing tracked after an epoch, a readahead
    /// READ racing a new Conn's setup), made deterministic with a hook.
    #[test]
    fn read_tracking_a_block_during_setup_pins_it() {
        let ThreeBlocks {
            _dir,
            mut zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        } = three_blocks();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        assert_eq!(read(&fs, ino, 0, 4), b"a0\0\0"); // the file is known
        let at1 = zw.update_file(foid, &[(1, d("b1"))]).unwrap();
        commit(&fs, &stor, at1);
        // block 1 was never read: not tracked. The READ comes in the window.
        let fs2 = fs.clone();
        *lock(&fs.setup_hook) = Some(Box::new(move |point| {
            if point == "register" {
                assert_eq!(read(&fs2, ino, 4, 4), b"b1\0\0");
            }
        }));
        let l = TLink::open(&fs, true);
        let (pins, reply) = l.request(1, &format!("watch {foid} @{at0}"));
        assert_eq!(reply, "ok");
        *lock(&fs.setup_hook) = None;
        let mut all = pins;
        all.extend(l.pins_now());
        assert_eq!(
            all.get(&1).map(String::as_str),
            Some(&*format!("@{at0}")),
            "block 1 (changed in (at0, head]) is in the page cache from head: \
             it must be pinned to @at0; pins {all:?}"
        );
    }

    /// A `watch <oid> -` while a READ has decided a pin for that watch but
    /// not queued it: no pin may follow the removal's `ok` (the client
    /// forgets the file at `ok` and fails such a pin, and a failed pin
    /// kills it: the SIGBUS of a well-behaved wcfs-stress reader).
    #[test]
    fn no_pin_after_a_removal_ok() {
        let ThreeBlocks {
            _dir,
            mut zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        } = three_blocks();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        assert_eq!(read(&fs, ino, 4, 4), b"a1\0\0");
        let l = Arc::new(Mutex::new(TLink::open(&fs, true)));
        let (pins, reply) = lock(&l).request(1, &format!("watch {foid} @{at0}"));
        assert_eq!((pins.len(), reply.as_str()), (0, "ok"));
        let at1 = zw.update_file(foid, &[(1, d("b1"))]).unwrap();
        commit(&fs, &stor, at1);
        // the READ of #1 decides "pin #1 @at0", then the removal runs
        let l2 = l.clone();
        *lock(&fs.setup_hook) = Some(Box::new(move |point| {
            if point == "read-pin" {
                let (pins, reply) = lock(&l2).request(3, &format!("watch {foid} -"));
                assert_eq!((pins.len(), reply.as_str()), (0, "ok"));
            }
        }));
        assert_eq!(read(&fs, ino, 4, 4), b"b1\0\0");
        *lock(&fs.setup_hook) = None;
        let after = lock(&l).pins_now();
        assert!(after.is_empty(), "pins after the removal's ok: {after:?}");
    }

    /// A watch moving forward keeps a pin that a READ made for its new at
    /// after the setup asked ΔFtail (the block was not tracked then, so the
    /// setup's slice does not name it): the setup undoes only pins of
    /// blocks unchanged in (at, head].
    #[test]
    fn setup_keeps_a_pin_a_concurrent_read_made() {
        let ThreeBlocks {
            _dir,
            mut zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        } = three_blocks();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        assert_eq!(read(&fs, ino, 0, 4), b"a0\0\0");
        let l = TLink::open(&fs, true);
        assert_eq!(l.request(1, &format!("watch {foid} @{at0}")).1, "ok");
        // block 0 changes: the READ pins it @at0
        let at1 = zw.update_file(foid, &[(0, d("b0"))]).unwrap();
        commit(&fs, &stor, at1);
        assert_eq!(read(&fs, ino, 0, 4), b"b0\0\0");
        assert_eq!(l.pins_now().get(&0).cloned(), Some(format!("@{at0}")));
        // block 1 changes twice; never read, so not tracked
        let at2 = zw.update_file(foid, &[(1, d("c1"))]).unwrap();
        commit(&fs, &stor, at2);
        let at3 = zw.update_file(foid, &[(1, d("d1"))]).unwrap();
        commit(&fs, &stor, at3);
        // move to at2: block 0 is to be unpinned (unchanged in (at2, at3]);
        // block 1 (changed in (at2, at3]) is read in the window and pinned
        // @at2 by that READ; the setup must leave that pin alone
        let fs2 = fs.clone();
        *lock(&fs.setup_hook) = Some(Box::new(move |point| {
            if point == "unpin" {
                assert_eq!(read(&fs2, ino, 4, 4), b"d1\0\0");
            }
        }));
        let (pins, reply) = l.request(1, &format!("watch {foid} @{at2}"));
        *lock(&fs.setup_hook) = None;
        assert_eq!(reply, "ok");
        let mut all = pins;
        all.extend(l.pins_now());
        assert_eq!(all.get(&0).map(String::as_str), Some("@head"), "{all:?}");
        assert_eq!(
            all.get(&1).map(String::as_str),
            Some(&*format!("@{at2}")),
            "the last word on block 1 must be its pin @at2: {all:?}"
        );
    }

    /// The storage moved on without saying what changed (a ZEO server
    /// that cannot iterate): every watch link is shut with `0 fatal`, the
    /// history restarts at the new head (a watch before it is too far
    /// back), head/ shows the new state, and commits after it are followed
    /// as usual.
    #[test]
    fn unknown_changes_restart_history() {
        let ThreeBlocks {
            _dir,
            mut zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        } = three_blocks();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        assert_eq!(read(&fs, ino, 0, 4), b"a0\0\0");
        let l = TLink::open(&fs, true);
        assert_eq!(l.request(1, &format!("watch {foid} @{at0}")).1, "ok");
        // two commits the server is not told about
        zw.update_file(foid, &[(0, d("b0"))]).unwrap();
        let at2 = zw.update_file(foid, &[(2, d("c2")), (5, d("c5"))]).unwrap();
        stor.sync().unwrap();
        let inval = fs.handle_unknown(at2, "test");
        fs.publish(at2);
        assert!(
            inval
                .iter()
                .any(|i| i.ino == ino && i.off == 0 && i.len == 0),
            "{inval:?}"
        );
        let mut lines = vec![l.line()];
        while lines.last().map(String::as_str) != Some("EOF") {
            lines.push(l.line());
        }
        assert!(
            lines[0].starts_with(&format!("0 fatal: storage changes up to @{at2} unknown")),
            "{lines:?}"
        );
        assert_eq!(fs.head_at(), at2);
        assert_eq!(
            read(&fs, ino, 0, 24),
            b"b0\0\0a1\0\0c2\0\0\0\0\0\0\0\0\0\0c5\0\0"
        );
        let l2 = TLink::open(&fs, true);
        let (_, reply) = l2.request(1, &format!("watch {foid} @{at0}"));
        assert!(reply.contains("too far away back"), "{reply}");
        assert_eq!(l2.request(3, &format!("watch {foid} @{at2}")).1, "ok");
        // followed as usual from here: a READ pins the watch at at2
        let at3 = zw.update_file(foid, &[(1, d("d1"))]).unwrap();
        commit(&fs, &stor, at3);
        assert_eq!(read(&fs, ino, 4, 4), b"d1\0\0");
        assert_eq!(l2.pins_now().get(&1).cloned(), Some(format!("@{at2}")));
    }

    /// `@<rev>/` page cache is trimmed for revisions nobody is pinned to,
    /// only for files read since the last trim, never for a pinned one.
    #[test]
    fn trim_rev_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        let (foid, at0) = zw.create_file("f", 4, &[(0, d("x"))]).unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 5.0).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        assert_eq!(read(&fs, a.ino, 0, 4), b"x\0\0\0");
        let l = TLink::open(&fs, true);
        let (_, reply) = l.request(1, &format!("watch {foid} @{at0}"));
        assert_eq!(reply, "ok");
        let at1 = zw.update_file(foid, &[(0, d("y"))]).unwrap();
        commit(&fs, &stor, at1);
        let at2 = zw.update_file(foid, &[(0, d("z"))]).unwrap();
        commit(&fs, &stor, at2);
        let rev = |at: Tid| {
            let r = fs.lookup(ROOT, &format!("@{at}")).unwrap();
            let b = fs.lookup(r.ino, "bigfile").unwrap();
            fs.lookup(b.ino, &foid.to_string()).unwrap().ino
        };
        let (r0, r1) = (rev(at0), rev(at1));
        assert_eq!(read(&fs, r0, 0, 4), b"x\0\0\0");
        assert_eq!(read(&fs, r1, 0, 4), b"y\0\0\0");
        // reading head pins the watch at at0 to @at0
        assert_eq!(read(&fs, a.ino, 0, 4), b"z\0\0\0");
        assert_eq!(
            l.pins_now().get(&0).map(String::as_str),
            Some(&*format!("@{at0}"))
        );
        let trimmed: Vec<u64> = fs.trim_revs().iter().map(|i| i.ino).collect();
        assert_eq!(trimmed, vec![r1], "@at0 is pinned, @at1 is not");
        assert!(fs.trim_revs().is_empty(), "nothing read since");
        assert_eq!(read(&fs, r1, 0, 4), b"y\0\0\0");
        assert_eq!(
            fs.trim_revs().iter().map(|i| i.ino).collect::<Vec<_>>(),
            vec![r1]
        );
    }

    /// A watch at an at ahead of head waits for that commit; a link that
    /// never acks is cut off after the pin timeout and the READ goes on.
    #[test]
    fn setup_waits_for_head_and_pin_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        let (foid, at0) = zw.create_file("f", 4, &[(0, d("x"))]).unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 0.5).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        assert_eq!(read(&fs, a.ino, 0, 4), b"x\0\0\0");

        let l = TLink::open(&fs, false);
        l.send(&format!("1 watch {foid} @{at0}"));
        assert_eq!(l.line(), "1 ok");
        let at1 = zw.update_file(foid, &[(0, d("y"))]).unwrap();
        // ahead of head: no reply until the commit is processed
        l.send(&format!("3 watch {foid} @{at1}"));
        assert!(l.rx.recv_timeout(Duration::from_millis(300)).is_err());
        commit(&fs, &stor, at1);
        assert_eq!(l.line(), "3 ok", "no pins: block 0 changed at at1 itself");
        let at2 = zw.update_file(foid, &[(0, d("z"))]).unwrap();
        commit(&fs, &stor, at2);
        // this link does not ack: the READ waits ~0.5 s, then gets the data
        let t0 = Instant::now();
        assert_eq!(read(&fs, a.ino, 0, 4), b"z\0\0\0");
        assert!(t0.elapsed() >= Duration::from_millis(400));
        let pin = l.line();
        assert!(
            pin.starts_with("2 pin ") && pin.ends_with(&format!("#0 @{at1}")),
            "{pin}"
        );
        assert_eq!(l.line(), format!("0 fatal: pin #0 @{at1}: timeout"));
        assert_eq!(l.line(), "EOF");
        assert!(fs.stats_text().contains("Watch\t: 0\n"));
    }
}

/// The server's pin decisions against a brute-force model: random commits
/// (rewrites, bulk inserts and deletes on a blktab of tiny nodes, epochs),
/// random READs of head/, watches set up and moved forward at random
/// states. The model keeps every state of the file; after every READ of a
/// block and every watch setup, each watch must see, for every block the
/// kernel would have cached from head/, exactly the block as of its at:
/// the @rev it is pinned to, or head when not pinned.
#[cfg(test)]
mod pin_model_tests {
    use super::watch_tests::{commit, read, TLink};
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use zodb::btree::{self, Family};
    use zodb::zbigfile::{self, NewObject, ZBlkFormat};
    use zodb::zwrite::ZWriter;

    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = mix(self.0);
            self.0 % n
        }
    }

    /// One model watcher: a link, its at, the pins it holds.
    struct W {
        link: TLink,
        at: Tid,
        pins: BTreeMap<i64, Tid>,
    }

    const BS: u64 = 4;
    const NBLK: i64 = 48;

    fn run(seed: u64, steps: usize) {
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        zw.blktab_shape.max_bucket = 2 + rng.below(6) as usize;
        zw.blktab_shape.max_tree = 2 + rng.below(4) as usize;
        // states[i] = (tid, blocks)
        let mut states: Vec<(Tid, BTreeMap<i64, Vec<u8>>)> = Vec::new();
        let mut cur: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let mut ver = 0u32;
        let mut data = |blk: i64| {
            ver += 1;
            format!("{:03}{}", ver % 1000, (b'a' + (blk % 26) as u8) as char).into_bytes()
        };
        let init: Vec<(i64, Vec<u8>)> = (0..NBLK)
            .filter(|b| *b == NBLK - 1 || rng.below(3) != 0)
            .map(|b| (b, data(b)))
            .collect();
        let ch: Vec<_> = init
            .iter()
            .map(|(b, d)| (*b, Some((ZBlkFormat::ZBlk0, &d[..]))))
            .collect();
        let (foid, at0) = zw.create_file("f", BS, &ch).unwrap();
        cur.extend(init);
        states.push((at0, cur.clone()));
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 10.0).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        let mut epoch = at0;
        // blocks the kernel holds from head/ (read since their last change)
        let mut cached: BTreeSet<i64> = BTreeSet::new();
        let mut ws: Vec<W> = Vec::new();
        let state_at = |states: &Vec<(Tid, BTreeMap<i64, Vec<u8>>)>, at: Tid| {
            states
                .iter()
                .rev()
                .find(|(t, _)| *t <= at)
                .map(|(_, s)| s.clone())
                .unwrap()
        };
        let blk_of = |s: &BTreeMap<i64, Vec<u8>>, b: i64| {
            let mut v = s.get(&b).cloned().unwrap_or_default();
            v.resize(BS as usize, 0);
            v
        };
        let mut log: Vec<String> = Vec::new();
        for step in 0..steps {
            let op = rng.below(100);
            if op < 30 {
                // a commit
                let kind = rng.below(10);
                let changes: Vec<(i64, Option<Vec<u8>>)> = if kind < 6 {
                    (0..1 + rng.below(3))
                        .map(|_| {
                            let b = rng.below(NBLK as u64) as i64;
                            (b, Some(data(b)))
                        })
                        .collect()
                } else if kind < 8 {
                    let lo = rng.below(NBLK as u64) as i64;
                    let n = 1 + rng.below(20) as i64;
                    // the last block stays: the file never shrinks (a
                    // client's blocks past head's end are never READ
                    // through head/, so never pinned)
                    (lo..(lo + n).min(NBLK - 1)).map(|b| (b, None)).collect()
                } else if kind < 9 {
                    let lo = rng.below(NBLK as u64) as i64;
                    let n = 1 + rng.below(20) as i64;
                    (lo..(lo + n).min(NBLK))
                        .map(|b| (b, Some(data(b))))
                        .collect()
                } else {
                    Vec::new() // an epoch
                };
                let changes: Vec<_> = changes
                    .into_iter()
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect();
                let tid = if changes.is_empty() {
                    // the watchers of the file lose their links
                    for w in ws.drain(..) {
                        fs.watch_release(w.link.fh);
                    }
                    let head = stor.last_tid().unwrap();
                    let f = ZBigFile::load(&*stor, foid, head).unwrap();
                    let items = btree::items(&*stor, Family::LO, f.blktab, head).unwrap();
                    let root = zw.new_oid();
                    let shape = zw.blktab_shape;
                    let mut objs: Vec<NewObject> =
                        btree::build(Family::LO, &items, shape, root, &mut || zw.new_oid());
                    objs.push(NewObject {
                        oid: foid,
                        class: zbigfile::ZBIGFILE,
                        state: zbigfile::zbigfile_state(BS, root),
                    });
                    let t = zw.commit_objects("epoch", objs).unwrap();
                    epoch = t;
                    log.push(format!("{step}: epoch @{t}"));
                    t
                } else {
                    let ch: Vec<_> = changes
                        .iter()
                        .map(|(b, d)| (*b, d.as_ref().map(|d| (ZBlkFormat::ZBlk0, &d[..]))))
                        .collect();
                    let t = zw.update_file(foid, &ch).unwrap();
                    for (b, d) in &changes {
                        match d {
                            Some(d) => cur.insert(*b, d.clone()),
                            None => cur.remove(b),
                        };
                        cached.remove(b);
                    }
                    log.push(format!(
                        "{step}: commit @{t} {:?}",
                        changes
                            .iter()
                            .map(|(b, d)| (*b, d.is_some()))
                            .collect::<Vec<_>>()
                    ));
                    t
                };
                commit(&fs, &stor, tid);
                states.push((tid, cur.clone()));
                continue;
            }
            if op < 45 {
                // a new watch, or one moved forward, at a state since the epoch
                let cands: Vec<Tid> = states
                    .iter()
                    .map(|(t, _)| *t)
                    .filter(|t| *t >= epoch)
                    .collect();
                let at = cands[cands.len() - 1 - rng.below(cands.len().min(6) as u64) as usize];
                let i = if ws.is_empty() || rng.below(2) == 0 {
                    ws.push(W {
                        link: TLink::open(&fs, true),
                        at: Tid(0),
                        pins: BTreeMap::new(),
                    });
                    ws.len() - 1
                } else {
                    rng.below(ws.len() as u64) as usize
                };
                if at < ws[i].at {
                    continue;
                }
                let (pins, reply) = ws[i].link.request(1, &format!("watch {foid} @{at}"));
                assert_eq!(reply, "ok", "seed {seed} step {step}");
                log.push(format!("{step}: watch {i} @{at} pins {pins:?}"));
                if std::env::var("WCFS_PIN_MODEL_DEBUG").is_ok() {
                    let head = stor.last_tid().unwrap();
                    log.push(format!(
                        "  slice: {:?}\n  ex: {:?}\n  explicit {}",
                        fs.ft.slice_by_file_rev(foid, at, head).unwrap(),
                        fs.ft
                            .slice_by_file_rev_ex(
                                foid,
                                at,
                                head,
                                engine::ftail::SliceOpts {
                                    only_explicitly_tracked: true
                                }
                            )
                            .unwrap(),
                        fs.ft.explicitly_tracked(foid)
                    ));
                }
                let w = &mut ws[i];
                w.at = at;
                for (b, r) in pins {
                    match r.as_str() {
                        "@head" => w.pins.remove(&b),
                        r => w
                            .pins
                            .insert(b, Tid(u64::from_str_radix(&r[1..], 16).unwrap())),
                    };
                }
                let check: Vec<i64> = cached.iter().copied().collect();
                check_all(seed, step, &log, &states, &ws, &check, state_at, blk_of);
                continue;
            }
            // a READ of head/
            let b = rng.below(NBLK as u64) as i64;
            let mut got = read(&fs, a.ino, b as u64 * BS, BS as u32);
            got.resize(BS as usize, 0); // past the end of a shrunk file
            assert_eq!(got, blk_of(&cur, b), "seed {seed} step {step}: head #{b}");
            cached.insert(b);
            for w in ws.iter_mut() {
                for (pb, r) in w.link.pins_now() {
                    match r.as_str() {
                        "@head" => w.pins.remove(&pb),
                        r => w
                            .pins
                            .insert(pb, Tid(u64::from_str_radix(&r[1..], 16).unwrap())),
                    };
                }
            }
            log.push(format!("{step}: read #{b}"));
            check_all(seed, step, &log, &states, &ws, &[b], state_at, blk_of);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_all(
        seed: u64,
        step: usize,
        log: &[String],
        states: &Vec<(Tid, BTreeMap<i64, Vec<u8>>)>,
        ws: &[W],
        blks: &[i64],
        state_at: impl Fn(&Vec<(Tid, BTreeMap<i64, Vec<u8>>)>, Tid) -> BTreeMap<i64, Vec<u8>>,
        blk_of: impl Fn(&BTreeMap<i64, Vec<u8>>, i64) -> Vec<u8>,
    ) {
        let head = states.last().unwrap().1.clone();
        for (i, w) in ws.iter().enumerate() {
            if w.at == Tid(0) {
                continue;
            }
            let want_s = state_at(states, w.at);
            for &b in blks {
                let want = blk_of(&want_s, b);
                let seen = match w.pins.get(&b) {
                    Some(r) => blk_of(&state_at(states, *r), b),
                    None => blk_of(&head, b),
                };
                if seen != want {
                    let tail: Vec<&String> = log.iter().rev().take(40).rev().collect();
                    panic!(
                        "seed {seed} step {step}: watch {i} @{} sees #{b} {:?} (pin {:?}), \
                         wants {:?}\n{}",
                        w.at,
                        String::from_utf8_lossy(&seen),
                        w.pins.get(&b),
                        String::from_utf8_lossy(&want),
                        tail.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
            }
        }
    }

    /// `WCFS_PIN_MODEL_SEEDS=<n>` runs more seeds, `WCFS_PIN_MODEL_DEBUG=1`
    /// logs ΔFtail's slices at every watch setup.
    #[test]
    fn pins_match_a_brute_force_model() {
        let seeds: u64 = std::env::var("WCFS_PIN_MODEL_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12);
        for seed in 0..seeds {
            run(mix(seed ^ 0x5eed), 300);
        }
    }
}

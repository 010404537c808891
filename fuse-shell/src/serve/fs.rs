//! The filesystem without FUSE: [`Wcfs`], the state of a mount, and the
//! entry points the FUSE adapter calls (lookup, getattr, readdir, open;
//! READ in [`super::read`]; head/watch in [`super::isolation`]). Each
//! concept has its file and its state: the inode table ([`super::nodes`]),
//! the head and commit processing ([`super::head`]), READ and block loads
//! ([`super::read`]), `@<rev>/` files ([`super::rev`]), isolation
//! ([`super::isolation`]). Callable from tests without a mount.

use super::errno::FsError;
use super::head::{tid_time, Head, HeadFile};
use super::isolation::Isolation;
use super::keep::{Keep, Keeper};
use super::nodes::{Attr, Kind, Node, NodeTable, OpenMode, ROOT};
use super::read::BlockCache;
use super::rev::Revs;
use super::stats::{Instant as StatsNow, Stats};
use super::zhead::Zhead;
use engine::ftail::DeltaFTail;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::SystemTime;
use zodb::{Oid, Storage};

/// One kernel cache invalidation that a commit asks for: `off < 0` means
/// attributes only, `len <= 0` up to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inval {
    pub ino: u64,
    pub off: i64,
    pub len: i64,
    /// Before invalidating: keep the old block for `@rev` (`serve::keep`).
    pub keep: Option<Keep>,
}

/// See `Wcfs::setup_hook`.
#[cfg(any(test, feature = "testing"))]
type SetupHook = Box<dyn Fn(&str) + Send + Sync>;

/// Pushes a head/ file's new size (inode, bytes) into the kernel.
pub type SizePush = Box<dyn Fn(u64, u64) + Send + Sync>;

/// The filesystem. See the [module docs](super) for the locks.
pub struct Wcfs {
    pub zurl: String,
    pub pintimeout: f64,
    pub stor: Arc<dyn Storage>,
    pub ft: DeltaFTail,
    /// ΔFtail's contract, one writer or many readers (engine-semantics
    /// §7): the commit thread holds it for writing around `apply_update`
    /// (an Update prepared beside the readers), `ForgetPast` and `reset`
    /// only, all in memory; Track and the queries (READs, lookups, watch
    /// setups) hold it for reading while they track and decide their pins,
    /// never while they load blocks or wait for a client. Outermost lock.
    pub ft_rw: RwLock<()>,
    /// The inode table.
    pub nodes: NodeTable,
    /// The head view and head/at.
    pub head: Head,
    /// Loaded blocks.
    pub blocks: BlockCache,
    /// `@<rev>/` files.
    pub revs: Revs,
    /// Links and watches.
    pub iso: Isolation,
    pub stats: Stats,
    /// `.wcfs/debug/zhead` streams (`--debug`).
    pub zhead: Zhead,
    /// What head/ READs served, and the kernel retrieves in flight, to
    /// keep changed blocks' old data for `@rev` (`serve::keep`).
    pub keeper: Keeper,
    /// Where a head/ file's new, larger size is pushed into the kernel,
    /// before the view showing it is published (the mount's notifier;
    /// unset without a mount). See `Wcfs::handle_commit`.
    pub size_push: std::sync::OnceLock<SizePush>,
    /// Tests: run at the named point (in a watch setup, `register`: before
    /// it registers its at; `unpin`: before it decides which pins to undo;
    /// in a READ, `read-pin`: before it queues the pins it decided), to put
    /// another operation there. Taken out while it runs (a hook that
    /// READs does not run again inside), put back unless replaced.
    #[cfg(any(test, feature = "testing"))]
    pub setup_hook: Mutex<Option<SetupHook>>,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn db_err(oid: Oid, what: impl Into<String>, err: impl Into<anyhow::Error>) -> FsError {
    FsError::Db {
        what: what.into(),
        oid,
        err: err.into(),
    }
}

impl Wcfs {
    /// A filesystem over `stor`, with head/ at the storage's current head.
    pub fn new(zurl: String, stor: Arc<dyn Storage>, pintimeout: f64) -> anyhow::Result<Wcfs> {
        let at0 = stor.last_tid()?;
        Ok(Wcfs {
            zurl,
            pintimeout,
            ft: DeltaFTail::new(at0, stor.clone()),
            stor,
            ft_rw: RwLock::new(()),
            nodes: NodeTable::new(),
            head: Head::new(at0),
            blocks: BlockCache::default(),
            revs: Revs::new(),
            iso: Isolation::default(),
            stats: Stats::default(),
            zhead: Zhead::default(),
            keeper: Keeper::default(),
            size_push: std::sync::OnceLock::new(),
            #[cfg(any(test, feature = "testing"))]
            setup_hook: Mutex::new(None),
        })
    }
}

impl Wcfs {
    /// Tests: run the hook at `point`.
    #[cfg(any(test, feature = "testing"))]
    pub fn hook(&self, point: &str) {
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
    pub fn ft_read(&self) -> RwLockReadGuard<'_, ()> {
        self.ft_rw.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Look `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        let Some(pnode) = self.nodes.get(parent) else {
            return Err(FsError::NoEnt);
        };
        let ino = match pnode {
            Node::Root => match self.nodes.existing_child(ROOT, name) {
                Some(ino) => ino,
                None => self.lookup_rev(name)?,
            },
            Node::Head | Node::DotWcfs | Node::DebugDir => self
                .nodes
                .existing_child(parent, name)
                .ok_or(FsError::NoEnt)?,
            Node::RevDir(at) if name == "bigfile" => {
                self.nodes.child(parent, name, || Node::RevBigDir(at))
            }
            Node::RevDir(_) => return Err(FsError::NoEnt),
            Node::HeadBigDir => return self.lookup_head_file(name),
            Node::RevBigDir(at) => self.lookup_rev_file(parent, at, name)?,
            Node::HeadAt
            | Node::HeadWatch
            | Node::Zurl
            | Node::Stats
            | Node::PinTimeout
            | Node::DebugZhead
            | Node::HeadFile(_)
            | Node::RevFile(_) => return Err(FsError::Errno(fuser::Errno::ENOTDIR)),
        };
        self.getattr(ino)
    }

    pub fn parse_oid(dir: &str, name: &str) -> Result<Oid, FsError> {
        name.parse()
            .map_err(|_| FsError::Inval(format!("{dir}/{name}: not oid")))
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let node = self.nodes.get(ino).ok_or(FsError::NoEnt)?;
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
            Node::Root | Node::DotWcfs | Node::HeadBigDir | Node::DebugDir => {
                dir(SystemTime::UNIX_EPOCH, false)
            }
            Node::Head => dir(tid_time(head_at), true),
            Node::RevDir(at) => dir(tid_time(at), false),
            Node::RevBigDir(_) => dir(SystemTime::UNIX_EPOCH, false),
            Node::HeadAt => small(16, 0o644, true),
            Node::HeadWatch => small(0, 0o644, true),
            Node::DebugZhead => small(0, 0o444, true),
            Node::Stats => small(self.stats_text().len(), 0o644, true),
            Node::Zurl => small(self.zurl.len(), 0o644, false),
            Node::PinTimeout => small(self.pintimeout_text().len(), 0o644, false),
            Node::HeadFile(oid) => self.head_attr_stable(|| {
                self.head.view.with(|v| {
                    v.files
                        .get(&oid)
                        .map(|hf| self.head_file_attr(hf))
                        .ok_or(FsError::NoEnt)
                })
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

    pub fn pintimeout_text(&self) -> String {
        format!("{:.1}", self.pintimeout)
    }

    /// The entries of directory `ino` (beyond `.` and `..`): the fixed
    /// ones, and in `bigfile/` and `/` those looked up so far.
    pub fn readdir(&self, ino: u64) -> Result<Vec<(u64, Kind, String)>, FsError> {
        let node = self.nodes.get(ino).ok_or(FsError::NoEnt)?;
        match node {
            Node::Root
            | Node::Head
            | Node::DotWcfs
            | Node::DebugDir
            | Node::HeadBigDir
            | Node::RevDir(_)
            | Node::RevBigDir(_) => {}
            _ => return Err(FsError::Errno(fuser::Errno::ENOTDIR)),
        }
        Ok(self.nodes.entries(ino))
    }
    /// Check that `ino` can be opened, and how.
    pub fn open(&self, ino: u64) -> Result<OpenMode, FsError> {
        match self.nodes.get(ino).ok_or(FsError::NoEnt)? {
            Node::HeadAt | Node::Stats => Ok(OpenMode::DirectIo),
            Node::HeadWatch | Node::DebugZhead => Ok(OpenMode::Stream),
            Node::Zurl | Node::PinTimeout | Node::RevFile(_) => Ok(OpenMode::KeepCache),
            Node::HeadFile(oid) => {
                let live = self
                    .head
                    .view
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

    pub fn stats_text(&self) -> String {
        let (mut watches, mut pinned) = (0, 0);
        for ws in self
            .iso
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
            zhead_link: self.zhead.count() as u64,
            watch_link: self.iso.links.count() as u64,
            watch: watches,
            pinned_blk: pinned,
            tracked_blocks: self.ft.explicitly_tracked_count(),
            pin_rtt_p50_us: self.iso.links.rtt.quantile(0.5),
            pin_rtt_p99_us: self.iso.links.rtt.quantile(0.99),
        })
    }
}

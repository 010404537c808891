//! The FUSE adapter: decode a request, call [`Wcfs`], reply. One span per
//! request.
//!
//! The session thread (the one reading /dev/fuse) must never wait for
//! storage I/O or for ΔFtail: a client's pinner needs it to look up and
//! open `@<rev>/` files while READs wait for that client's ack. So
//! everything that loads data or takes ΔFtail (READs of data, the first
//! lookup of a head/ file) runs on the read pool; the session thread
//! serves the rest (getattr, open, lookups of known files: head view
//! snapshots, no lock), including all of `head/watch`, which never blocks.

use super::fs::Wcfs;
use super::nodes::{Attr, Kind, OpenMode, DEBUG_ZHEAD, HEAD_WATCH};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{debug_span, warn};

/// Attribute and entry lifetime of what never changes.
const TTL_STATIC: Duration = Duration::from_secs(3600);
/// Background requests (page-cache READs) the kernel keeps in flight.
const MAX_BACKGROUND: u16 = 512;

/// Entry lifetime of names (the name stays; its attributes may change).
const TTL_ENTRY: Duration = Duration::from_secs(1);

/// The `fuser::Filesystem` of wcfs.
pub struct Fuse {
    pub fs: Arc<Wcfs>,
    pub pool: super::pool::Pool,
    /// Seconds since the epoch of the last request (for `--autoexit`).
    pub last_use: Arc<AtomicU64>,
    /// Files open now (opens minus releases; an mmap keeps its file open).
    pub open_files: Arc<AtomicU64>,
    uid: u32,
    gid: u32,
}

impl Fuse {
    pub fn new(
        fs: Arc<Wcfs>,
        pool: super::pool::Pool,
        last_use: Arc<AtomicU64>,
        open_files: Arc<AtomicU64>,
    ) -> Fuse {
        Fuse {
            fs,
            pool,
            last_use,
            open_files,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }

    fn touch(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_use.store(now, Ordering::Relaxed);
    }

    /// The FUSE attributes of an [`Attr`], as a closure that can be sent
    /// to the pool.
    fn attr_maker(&self) -> impl Fn(&Attr) -> FileAttr + Send + 'static {
        let (uid, gid) = (self.uid, self.gid);
        move |a| file_attr(uid, gid, a)
    }
}

fn file_attr(uid: u32, gid: u32, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
        },
        perm: a.perm,
        nlink: match a.kind {
            Kind::Dir => 2,
            Kind::File => 1,
        },
        uid,
        gid,
        rdev: 0,
        blksize: a.blksize,
        flags: 0,
    }
}

fn attr_ttl(a: &Attr) -> Duration {
    if a.volatile {
        Duration::ZERO
    } else {
        TTL_STATIC
    }
}

impl Filesystem for Fuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Invalidate the page cache only when we say so (not on mtime changes).
        if config
            .add_capabilities(InitFlags::FUSE_EXPLICIT_INVAL_DATA)
            .is_err()
        {
            warn!("kernel lacks FUSE_EXPLICIT_INVAL_DATA (Linux < 5.2): head/ data may be re-read more than needed");
        }
        // Page-cache READs are background requests, of which the kernel
        // keeps at most `max_background` (default 12) in flight per mount:
        // with that many READs waiting for a faulty client's pin, every
        // other READ of the mount would queue in the kernel. Raise it
        // (the READ pool grows to match, see pool.rs).
        if let Err(max) = config.set_max_background(MAX_BACKGROUND) {
            warn!("max_background {MAX_BACKGROUND} refused; using {max}");
            let _ = config.set_max_background(max);
        }
        let _ = config.set_congestion_threshold(MAX_BACKGROUND / 4 * 3);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.touch();
        let _s = debug_span!("lookup", req = req.unique().0, parent = parent.0, ?name).entered();
        let Some(name) = name.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        let name_owned = name.to_owned();
        let run = {
            let (fs, name, attr) = (self.fs.clone(), name.to_owned(), self.attr_maker());
            move || match fs.lookup(parent.0, &name) {
                Ok(a) => reply.entry_with_ttls(&attr_ttl(&a), &TTL_ENTRY, &attr(&a), Generation(0)),
                Err(e) => reply.error(e.errno()),
            }
        };
        if self.fs.lookup_may_block(parent.0, &name_owned) {
            let span = tracing::Span::current();
            self.pool.spawn(move || span.in_scope(run));
        } else {
            run()
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.touch();
        let _s = debug_span!("getattr", req = req.unique().0, ino = ino.0).entered();
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&attr_ttl(&a), &(self.attr_maker())(&a)),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.touch();
        let _s = debug_span!("open", req = req.unique().0, ino = ino.0).entered();
        if ino.0 == HEAD_WATCH {
            return match self.fs.watch_open(req.pid()) {
                Ok(fh) => {
                    self.open_files.fetch_add(1, Ordering::Relaxed);
                    reply.opened(
                        FileHandle(fh),
                        FopenFlags::FOPEN_STREAM
                            | FopenFlags::FOPEN_NONSEEKABLE
                            | FopenFlags::FOPEN_DIRECT_IO,
                    )
                }
                Err(e) => reply.error(e.errno()),
            };
        }
        if flags.0 & libc_accmode() != 0 {
            return reply.error(Errno::EROFS);
        }
        if ino.0 == DEBUG_ZHEAD && self.fs.nodes.get(DEBUG_ZHEAD).is_some() {
            self.open_files.fetch_add(1, Ordering::Relaxed);
            return reply.opened(
                FileHandle(self.fs.zhead.open()),
                FopenFlags::FOPEN_STREAM
                    | FopenFlags::FOPEN_NONSEEKABLE
                    | FopenFlags::FOPEN_DIRECT_IO,
            );
        }
        let flags = match self.fs.open(ino.0) {
            Ok(OpenMode::KeepCache) => FopenFlags::FOPEN_KEEP_CACHE,
            Ok(OpenMode::DirectIo) => FopenFlags::FOPEN_DIRECT_IO,
            Ok(OpenMode::Stream) => return reply.error(Errno::EINVAL),
            Err(e) => return reply.error(e.errno()),
        };
        self.open_files.fetch_add(1, Ordering::Relaxed);
        reply.opened(FileHandle(0), flags)
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    /// The kernel's answer to a retrieve of `serve::keep` (session
    /// thread: hands the bytes to the waiting lane, nothing else).
    fn notify_reply(
        &self,
        _req: &Request,
        notify_unique: u64,
        _ino: INodeNo,
        _offset: u64,
        data: &[u8],
    ) {
        self.fs.keeper.answer(notify_unique, data);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.touch();
        if ino.0 == HEAD_WATCH {
            self.fs.watch_release(fh.0);
        }
        if ino.0 == DEBUG_ZHEAD {
            self.fs.zhead.release(fh.0);
        }
        self.open_files.fetch_sub(1, Ordering::Relaxed);
        reply.ok()
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.touch();
        if ino.0 == HEAD_WATCH {
            let _s = debug_span!("read watch", req = req.unique().0, fh = _fh.0, size).entered();
            return self.fs.watch_read(
                _fh.0,
                size,
                req.pid(),
                Box::new(move |r| match r {
                    Ok(data) => reply.data(data),
                    Err(e) => reply.error(e),
                }),
            );
        }
        if ino.0 == DEBUG_ZHEAD {
            return self.fs.zhead.read(
                _fh.0,
                size,
                Box::new(move |r| match r {
                    Ok(data) => reply.data(data),
                    Err(e) => reply.error(e),
                }),
            );
        }
        let span = debug_span!("read", req = req.unique().0, ino = ino.0, offset, size);
        let pid = req.pid();
        let fs = self.fs.clone();
        self.pool.spawn(move || {
            let _s = span.entered();
            fs.read_for(ino.0, offset, size, pid, |r| match r {
                Ok(data) => reply.data(data),
                Err(e) => reply.error(e.errno()),
            })
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.touch();
        let _s =
            debug_span!("write", req = req.unique().0, ino = ino.0, len = data.len()).entered();
        if ino.0 != HEAD_WATCH {
            return reply.error(Errno::EROFS);
        }
        match self.fs.watch_write(fh.0, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.touch();
        let _s = debug_span!("readdir", req = req.unique().0, ino = ino.0, offset).entered();
        let entries = match self.fs.readdir(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(e.errno()),
        };
        let all = [
            (ino.0, Kind::Dir, ".".to_owned()),
            (ino.0, Kind::Dir, "..".to_owned()),
        ]
        .into_iter()
        .chain(entries);
        for (i, (c, kind, name)) in all.enumerate().skip(offset as usize) {
            let kind = match kind {
                Kind::Dir => FileType::Directory,
                Kind::File => FileType::RegularFile,
            };
            if reply.add(INodeNo(c), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.touch();
        const B: u32 = 2 << 20;
        reply.statfs(0, 0, 0, 0, 0, B, 255, B);
    }
}

/// `O_ACCMODE` bits that ask for writing (`O_WRONLY | O_RDWR`).
fn libc_accmode() -> i32 {
    nix::fcntl::OFlag::O_WRONLY.bits() | nix::fcntl::OFlag::O_RDWR.bits()
}

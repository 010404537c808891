//! A stand-in wcfs for the lifecycle tests: a tiny FUSE filesystem mounted
//! the way `wcfs serve` does (source = the zurl, fstype `fuse.wcfs`) with
//! `.wcfs/zurl`, `head/at` and `head/hang` (a read of it never returns).
//!
//! The test binary runs it in a child of itself (see `stub_server` in
//! `lifecycle.rs`), with an argv that ends in `<zurl> <mountpoint>` like the
//! real server's. `$WCFS_STUB_FUSE` is a comma-separated list of modes:
//! `serve` (just serve) and `ignore-term` (SIGTERM is ignored).
//! `$WCFS_STUB_HANG_MARK`, if set, names a file created when a read of
//! `head/hang` starts.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyEntry, Request, Session, SessionACL,
};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, SystemTime};

const ROOT: u64 = 1;
const DOT_WCFS: u64 = 2;
const ZURL: u64 = 3;
const HEAD: u64 = 4;
const AT: u64 = 5;
const HANG: u64 = 6;

/// What `head/at` reads.
pub(crate) const HEAD_AT: &str = "0123456789abcdef";

struct Stub {
    zurl: String,
    hang_mark: Option<String>,
}

impl Stub {
    fn content(&self, ino: u64) -> Option<Vec<u8>> {
        match ino {
            ZURL => Some(self.zurl.clone().into_bytes()),
            AT => Some(format!("{HEAD_AT}\n").into_bytes()),
            HANG => Some(b"never\n".to_vec()),
            _ => None,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size) = match ino {
            ROOT | DOT_WCFS | HEAD => (FileType::Directory, 0o755, 0),
            _ => (
                FileType::RegularFile,
                0o444,
                self.content(ino)?.len() as u64,
            ),
        };
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

const TTL: Duration = Duration::from_secs(1);

impl Filesystem for Stub {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match (parent.0, name.to_str()) {
            (ROOT, Some(".wcfs")) => DOT_WCFS,
            (ROOT, Some("head")) => HEAD,
            (DOT_WCFS, Some("zurl")) => ZURL,
            (HEAD, Some("at")) => AT,
            (HEAD, Some("hang")) => HANG,
            _ => return reply.error(Errno::ENOENT),
        };
        match self.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 == HANG {
            if let Some(m) = &self.hang_mark {
                let _ = std::fs::write(m, b"");
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let Some(data) = self.content(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let lo = (offset as usize).min(data.len());
        let hi = (lo + size as usize).min(data.len());
        reply.data(&data[lo..hi]);
    }
}

/// Mount a FUSE filesystem of type `fuse.wcfs` from `zurl` on `mnt` (as
/// root; fuser's own mount(2) would say plain `fuse`, dropping the subtype).
fn mount(zurl: &str, mnt: &str) -> std::io::Result<OwnedFd> {
    use nix::mount::MsFlags;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let fd = OwnedFd::from(dev);
    let opts = format!("fd={},rootmode=40000,user_id=0,group_id=0", fd.as_raw_fd());
    nix::mount::mount(
        Some(zurl),
        mnt,
        Some("fuse.wcfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )?;
    Ok(fd)
}

/// Serve `zurl` on `mnt` until unmounted, then exit the process.
pub(crate) fn run(zurl: &str, mnt: &str, modes: &str) -> ! {
    if modes.split(',').any(|m| m == "ignore-term") {
        // SAFETY: SIG_IGN installs no handler code; nothing else in this
        // process changes the SIGTERM disposition concurrently.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGTERM,
                nix::sys::signal::SigHandler::SigIgn,
            )
        }
        .expect("ignore SIGTERM");
    }
    let stub = Stub {
        zurl: zurl.to_string(),
        hang_mark: std::env::var("WCFS_STUB_HANG_MARK").ok(),
    };
    let code = match mount(zurl, mnt)
        .and_then(|fd| Session::from_fd(stub, fd, SessionACL::Owner, Config::default()))
        .and_then(|s| s.run())
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stub_fuse: {e}");
            1
        }
    };
    std::process::exit(code)
}

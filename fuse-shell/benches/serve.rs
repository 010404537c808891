//! `wcfs serve` benchmarks (`./dev bench serve`; root, /dev/fuse): every
//! figure beside its reference from the same run.
//!
//! - cold sequential read(2) of `head/bigfile/<oid>` (512 MiB, kernel cache
//!   dropped before each pass) vs a minimal in-memory FUSE filesystem
//!   serving the same bytes at the same readahead (the FUSE ceiling), a
//!   plain read of `Data.fs`, and Python ZODB loading the same blocks
//!   (`WCFS_PYTHON`, which `./dev bench` sets): goal >= 0.8x the ceiling;
//! - warm mmap read of `head/bigfile/<oid>` (512 MiB, every byte summed)
//!   vs mmap of the same bytes in a file on /dev/shm: goal >= 0.9x;
//! - time from a commit (one changed block) to `head/at` showing it, p50
//!   and p99 over 200 commits: goal p99 < 20 ms.
//!
//! The server runs as a child process and is stopped with `wcfs stop`; a
//! watchdog stops it too if the bench hangs.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
    SessionACL,
};
use memmap2::Mmap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;

#[path = "common/mod.rs"]
mod common;
use common::{cold_read_mibs, Server};

const BLKSIZE: u64 = 2 << 20;
const NBLK: i64 = 256; // 512 MiB
const COMMITS: usize = 200;
const LIMIT: Duration = Duration::from_secs(600);

/// Sum every byte of `m` as little-endian u64 words (so that nothing is
/// skipped and the compiler cannot drop the reads).
fn sum(m: &[u8]) -> u64 {
    let mut s = 0u64;
    for c in m.chunks_exact(8) {
        s = s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()));
    }
    s
}

/// Best MiB/s of `n` passes of `sum` over a fresh mapping of `path`.
fn mmap_mibs(path: &Path, n: usize, want: u64) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..n {
        let f = std::fs::File::open(path).unwrap();
        // SAFETY: the file is not truncated or written while mapped: the
        // head/ file only changes on commits (none run during this pass),
        // the /dev/shm copy is ours.
        let m = unsafe { Mmap::map(&f) }.unwrap();
        let t = Instant::now();
        let s = sum(&m);
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(s, want, "{}: other bytes", path.display());
    }
    (m_len(path) as f64 / (1 << 20) as f64) / best
}

fn m_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// The FUSE ceiling: one read-only file `f` held in memory, answered with
/// no work beyond a copy.
struct Ceiling {
    data: Arc<Vec<u8>>,
}

const CEIL_FILE: u64 = 2;

impl Ceiling {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size) = match ino {
            1 => (FileType::Directory, 0o555, 0),
            CEIL_FILE => (FileType::RegularFile, 0o444, self.data.len() as u64),
            _ => return None,
        };
        let t = std::time::SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLKSIZE as u32,
            flags: 0,
        })
    }
}

impl Filesystem for Ceiling {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent.0, name.to_str()) {
            (1, Some("f")) => reply.entry(
                &Duration::from_secs(60),
                &self.attr(CEIL_FILE).expect("file"),
                Generation(0),
            ),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&Duration::from_secs(60), &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let lo = (offset as usize).min(self.data.len());
        let hi = (lo + size as usize).min(self.data.len());
        reply.data(&self.data[lo..hi]);
    }
}

/// The `read_ahead_kb` file of a mount's bdi.
fn readahead_file(mnt: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(mnt).unwrap().dev();
    let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
    format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb").into()
}

/// Give the ceiling's mount the readahead `wcfs serve` set on ours, so that
/// both read ahead by the same amount.
fn same_readahead(ours: &Path, ceiling: &Path) -> String {
    let kb = std::fs::read_to_string(readahead_file(ours)).unwrap_or_default();
    let _ = std::fs::write(readahead_file(ceiling), kb.trim());
    kb.trim().to_owned()
}

fn pattern(blk: i64, gen: u64) -> Vec<u8> {
    let mut v = vec![0u8; BLKSIZE as usize];
    let mut x = (blk as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ gen;
    for c in v.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    v
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("serve bench: needs root and /dev/fuse; skipped");
        return;
    }
    // a watchdog: the bench must not hang CI or a session
    std::thread::spawn(|| {
        std::thread::sleep(LIMIT);
        eprintln!("serve bench: over {LIMIT:?}, giving up");
        std::process::exit(2);
    });
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let db = dir.path().join("Data.fs");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    eprintln!("serve bench: writing a 512 MiB ZBigFile...");
    let data: Vec<Vec<u8>> = (0..NBLK).map(|b| pattern(b, 0)).collect();
    let mut zw = ZWriter::open(&db).unwrap();
    let changes: Vec<_> = (0..NBLK)
        .map(|b| (b, Some((ZBlkFormat::ZBlk0, &data[b as usize][..]))))
        .collect();
    let (oid, _) = zw.create_file("bench", BLKSIZE, &changes).unwrap();
    let zurl = db.to_str().unwrap().to_owned();
    let srv = Server::start(&zurl, &mnt, &dir.path().join("wcfs.log"));

    // (1) cold sequential read: ours, the FUSE ceiling, Data.fs, Python
    eprintln!("serve bench: cold reads...");
    let head = mnt.join(format!("head/bigfile/{oid}"));
    let total = (NBLK as u64) * BLKSIZE;
    let cmnt = dir.path().join("ceiling");
    std::fs::create_dir(&cmnt).unwrap();
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("ceiling".into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    cfg.acl = SessionACL::RootAndOwner;
    let ceiling = fuser::Session::new(
        Ceiling {
            data: Arc::new(data.concat()),
        },
        &cmnt,
        &cfg,
    )
    .expect("mount the ceiling filesystem")
    .spawn()
    .expect("serve the ceiling filesystem");
    let ra = same_readahead(&mnt, &cmnt);
    eprintln!("serve bench: readahead {ra} KiB on both mounts");
    let (mut c_ours, mut c_ceil, mut c_raw) = (0f64, 0f64, 0f64);
    for _ in 0..3 {
        c_ours = c_ours.max(cold_read_mibs(&head, total));
        c_ceil = c_ceil.max(cold_read_mibs(&cmnt.join("f"), total));
        c_raw = c_raw.max(cold_read_mibs(&db, m_len(&db)));
    }
    drop(ceiling);
    let c_py = std::env::var("WCFS_PYTHON").ok().and_then(|py| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/bench_load.py");
        let out = Command::new(py)
            .arg(script)
            .arg(&db)
            .arg(oid.to_string())
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(v["bytes"].as_f64()? / (1 << 20) as f64 / v["seconds"].as_f64()?)
    });

    // (2) warm mmap read
    let shm = dir.path().join("copy");
    std::fs::write(&shm, data.concat()).unwrap();
    let want = sum(&data.concat());
    eprintln!("serve bench: mmap passes...");
    mmap_mibs(&head, 1, want); // warm the page cache through FUSE
    let (mut ours, mut reference) = (0f64, 0f64);
    for _ in 0..3 {
        ours = ours.max(mmap_mibs(&head, 1, want));
        reference = reference.max(mmap_mibs(&shm, 1, want));
    }

    // (3) commit -> head/at
    eprintln!("serve bench: {COMMITS} commits...");
    let mut lat = Vec::with_capacity(COMMITS);
    for i in 0..COMMITS {
        let blk = (i as i64 * 37) % NBLK;
        let d = pattern(blk, i as u64 + 1);
        let tid = zw
            .update_file(oid, &[(blk, Some((ZBlkFormat::ZBlk0, &d[..])))])
            .unwrap();
        let t0 = Instant::now();
        while srv.head_at() < tid {
            assert!(t0.elapsed() < Duration::from_secs(10), "head/at stuck");
            std::thread::sleep(Duration::from_micros(50));
        }
        lat.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    drop(srv);
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(mnt.to_str().unwrap()),
        "mount left after wcfs stop"
    );

    println!();
    println!("| measure | ours | reference | ratio / goal |");
    println!("| --- | ---: | ---: | --- |");
    println!(
        "| cold sequential read(2) of head/bigfile (512 MiB), MiB/s | {c_ours:.0} | FUSE ceiling {c_ceil:.0}; read of Data.fs {c_raw:.0}; Python ZODB {} | {:.2}x the ceiling (goal >= 0.8x) |",
        c_py.map_or("n/a (set WCFS_PYTHON)".to_string(), |p| format!("{p:.0}")),
        c_ours / c_ceil
    );
    println!(
        "| warm mmap read of head/bigfile (512 MiB), MiB/s | {ours:.0} | {reference:.0} (mmap of a /dev/shm file) | {:.2}x (goal >= 0.9x) |",
        ours / reference
    );
    println!(
        "| commit -> head/at, one 2 MiB block, {COMMITS} commits | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms | | p99 goal < 20 ms |",
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

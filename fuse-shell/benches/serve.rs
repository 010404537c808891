//! `wcfs serve` benchmarks (`./dev bench serve`; root, /dev/fuse): every
//! figure beside its reference from the same run.
//!
//! - warm mmap read of `head/bigfile/<oid>` (512 MiB, every byte summed)
//!   vs mmap of the same bytes in a file on /dev/shm: goal >= 0.9x;
//! - time from a commit (one changed block) to `head/at` showing it, p50
//!   and p99 over 200 commits: goal p99 < 20 ms.
//!
//! The server runs as a child process and is stopped with `wcfs stop`; a
//! watchdog stops it too if the bench hangs.

use memmap2::Mmap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;
use zodb::Tid;

const BLKSIZE: u64 = 2 << 20;
const NBLK: i64 = 256; // 512 MiB
const COMMITS: usize = 200;
const LIMIT: Duration = Duration::from_secs(600);

fn wcfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wcfs"))
}

/// The server; dropping it stops it (`wcfs stop`, which also unmounts a
/// stuck or dead one and removes the mountpoint).
struct Server {
    child: Child,
    zurl: String,
    mnt: PathBuf,
}

impl Server {
    fn start(zurl: &str, mnt: &Path, log: &Path) -> Server {
        let child = wcfs()
            .args(["--log-level", "warn", "--log-file"])
            .arg(log)
            .args(["serve", zurl])
            .arg(mnt)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn wcfs serve");
        let s = Server {
            child,
            zurl: zurl.to_owned(),
            mnt: mnt.to_owned(),
        };
        let t0 = Instant::now();
        while std::fs::read_to_string(mnt.join(".wcfs/zurl"))
            .ok()
            .as_deref()
            != Some(zurl)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "not served after 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn head_at(&self) -> Tid {
        std::fs::read_to_string(self.mnt.join("head/at"))
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = wcfs()
            .args(["stop", &self.zurl, "--mountpoint"])
            .arg(&self.mnt)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

    // (1) warm mmap read
    let head = mnt.join(format!("head/bigfile/{oid}"));
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

    // (2) commit -> head/at
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

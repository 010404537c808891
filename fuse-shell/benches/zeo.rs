//! Cold read throughput of `wcfs serve` on `zeo://` vs `file://` for the
//! same data, in one run (`./dev bench zeo`; root, /dev/fuse, the Python
//! venv with ZEO in `WCFS_PYTHON`).
//!
//! One Data.fs on /dev/shm with a 256 MiB ZBigFile (2 MiB ZBlk0 blocks) is
//! served twice: directly (`file://`) and through a ZEO server (Python
//! ZEO, `tests/py/zeo_server.py serve`, on loopback). Each pass drops the
//! kernel's page cache (as the serve bench does; the tmpfs Data.fs stays)
//! and reads `head/bigfile/<oid>` sequentially in 1 MiB pieces; the best of
//! three passes of each, alternating, and their ratio are printed as a
//! table row.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;

#[path = "common/mod.rs"]
mod common;
use common::{cold_read_mibs, Server};

const BLKSIZE: u64 = 2 << 20;
const NBLK: i64 = 128; // 256 MiB
const PASSES: usize = 3;
const LIMIT: Duration = Duration::from_secs(900);

fn pattern(blk: i64) -> Vec<u8> {
    let mut v = vec![0u8; BLKSIZE as usize];
    let mut x = (blk as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for c in v.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    v
}

/// The ZEO server; killed on drop (it also exits when its stdin closes).
struct Zeo {
    child: Child,
    _stdin: Option<ChildStdin>,
    addr: String,
}

impl Zeo {
    fn start(py: &Path, db: &Path) -> Zeo {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/zeo_server.py");
        let mut child = Command::new(py)
            .arg(script)
            .arg("serve")
            .arg(db)
            .arg("127.0.0.1:0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start zeo_server.py");
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // (the watchdog bounds this wait)
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("zeo_server.py: {line:?}"))
            .to_owned();
        Zeo {
            child,
            _stdin: stdin,
            addr,
        }
    }
}

impl Drop for Zeo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("zeo bench: needs root and /dev/fuse; skipped");
        return;
    }
    let Some(py) = std::env::var_os("WCFS_PYTHON").map(PathBuf::from) else {
        eprintln!("zeo bench: needs WCFS_PYTHON (the venv with ZEO; ./dev bench sets it); skipped");
        return;
    };
    std::thread::spawn(|| {
        std::thread::sleep(LIMIT);
        eprintln!("zeo bench: over {LIMIT:?}, giving up");
        std::process::exit(2);
    });
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let db = dir.path().join("Data.fs");
    eprintln!("zeo bench: writing a 256 MiB ZBigFile...");
    let data: Vec<Vec<u8>> = (0..NBLK).map(pattern).collect();
    let mut zw = ZWriter::open(&db).unwrap();
    let changes: Vec<_> = (0..NBLK)
        .map(|b| (b, Some((ZBlkFormat::ZBlk0, &data[b as usize][..]))))
        .collect();
    let (oid, _) = zw.create_file("bench", BLKSIZE, &changes).unwrap();
    drop(zw);
    drop(data);
    let zeo = Zeo::start(&py, &db);
    let (mfile, mzeo) = (dir.path().join("mnt-file"), dir.path().join("mnt-zeo"));
    std::fs::create_dir(&mfile).unwrap();
    std::fs::create_dir(&mzeo).unwrap();
    let sfile = Server::start(db.to_str().unwrap(), &mfile, &dir.path().join("file.log"));
    let szeo = Server::start(
        &format!("zeo://{}", zeo.addr),
        &mzeo,
        &dir.path().join("zeo.log"),
    );
    assert_eq!(sfile.head_at(), szeo.head_at());
    let total = NBLK as u64 * BLKSIZE;
    let (hfile, hzeo) = (
        mfile.join(format!("head/bigfile/{oid}")),
        mzeo.join(format!("head/bigfile/{oid}")),
    );
    // same bytes through both
    assert!(std::fs::read(&hfile).unwrap() == std::fs::read(&hzeo).unwrap());
    eprintln!("zeo bench: cold reads, {PASSES} passes each...");
    let (mut f, mut z) = (0f64, 0f64);
    for _ in 0..PASSES {
        f = f.max(cold_read_mibs(&hfile, total));
        z = z.max(cold_read_mibs(&hzeo, total));
    }
    drop((sfile, szeo, zeo));
    println!("| metric | zeo:// | file:// | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| cold sequential read(2) of head/bigfile (256 MiB, 2 MiB blocks), MiB/s, best of {PASSES} | {z:.0} | {f:.0} | {:.2}x |",
        z / f
    );
}

//! Load every block of a 512 MiB ZBigFile, ZBlk0 and ZBlk1 variants, and
//! put the speed beside two references measured in the same run:
//!
//! - a plain sequential `read` of the `Data.fs` file itself;
//! - Python ZODB loading the same blocks (tests/py/bench_load.py).
//!
//! Everything is read from the page cache (each file is read once before
//! timing). Each figure is the median of several passes. Speeds are MiB of
//! block data per second (for the raw read: MiB of file per second). Both
//! the raw read and our loads read every byte they deliver once (`fold`):
//! our loads are zero-copy views of the page cache, and a figure that never
//! touches the bytes would measure nothing.
//! Goal (issue 2): ours >= 1/2 of raw, >= 5x Python.
//!
//! Environment: `WCFS_BENCH_MIB` (file size, default 512), `WCFS_BENCH_DIR`
//! (where the databases are kept between runs, default target/bench-data),
//! `WCFS_PYTHON` (the venv's python; `./dev bench` sets it).

use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use zodb::fs1::FileStorage;
use zodb::zbigfile::{ZBigFile, ZBlkFormat};
use zodb::zwrite::ZWriter;
use zodb::{Oid, Storage};

const BLKSIZE: usize = 2 << 20;
const PASSES: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Deterministic incompressible-looking block content (xorshift64*), no zero tail.
fn block_data(blk: u64) -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15u64 ^ (blk + 1).wrapping_mul(0xbf58476d1ce4e5b9);
    let mut out = Vec::with_capacity(BLKSIZE);
    while out.len() < BLKSIZE {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545f4914f6cdd1d).to_le_bytes());
    }
    out[BLKSIZE - 1] = 1;
    out
}

/// Create (once) the database for `format` and return its path and the file's oid.
fn ensure_db(dir: &Path, format: ZBlkFormat, nblk: u64) -> (PathBuf, Oid) {
    let path = dir.join(format!("{format:?}-{nblk}.fs"));
    let done = path.with_extension("fs.done");
    if !done.exists() {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("fs.lock"));
        eprintln!(
            "creating {} ({nblk} blocks of {format:?})...",
            path.display()
        );
        let mut zw = ZWriter::open(&path).expect("create bench db");
        let (oid, _) = zw.create_file("bench", BLKSIZE as u64, &[]).unwrap();
        for batch in (0..nblk).collect::<Vec<_>>().chunks(32) {
            let data: Vec<(i64, Vec<u8>)> =
                batch.iter().map(|&b| (b as i64, block_data(b))).collect();
            let changes: Vec<_> = data
                .iter()
                .map(|(b, d)| (*b, Some((format, &d[..]))))
                .collect();
            zw.update_file(oid, &changes).unwrap();
        }
        drop(zw);
        std::fs::write(&done, oid.to_string()).unwrap();
    }
    let oid: Oid = std::fs::read_to_string(&done)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (path, oid)
}

/// Read every byte once (a wrapping sum of u64 words; vectorizes): what
/// any consumer of the data does at least. Applied to the raw read and to
/// ours alike, so that a zero-copy load cannot win by not reading.
fn fold(b: &[u8]) -> u64 {
    let mut it = b.chunks_exact(8);
    let s = it.by_ref().fold(0u64, |a, w| {
        a.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()))
    });
    it.remainder()
        .iter()
        .fold(s, |a, &x| a.wrapping_add(x as u64))
}

fn raw_read(path: &Path) -> (u64, f64) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
        std::hint::black_box(fold(&buf[..k]));
    }
    (n, t.elapsed().as_secs_f64())
}

/// Open time (the index scan), reported apart: Python's figure excludes
/// opening its storage too.
fn open_secs(path: &Path) -> f64 {
    let t = Instant::now();
    std::hint::black_box(FileStorage::open(path).unwrap());
    t.elapsed().as_secs_f64()
}

/// Load every block through a freshly opened storage (no cache of ours is
/// warm), timing from the ZBigFile load to the last block.
fn ours(path: &Path, oid: Oid, parallel: bool) -> (u64, f64) {
    let stor = FileStorage::open(path).unwrap();
    let t = Instant::now();
    let at = stor.last_tid().unwrap();
    let f = ZBigFile::load(&stor, oid, at).unwrap();
    let nblk = (f.size(&stor, at).unwrap() / f.blksize) as i64;
    let load = |b: i64| {
        let blk = f.load_blk(&stor, b, at).unwrap();
        std::hint::black_box(fold(&blk.data));
        blk.blksize as u64
    };
    let bytes: u64 = if parallel {
        (0..nblk).into_par_iter().map(load).sum()
    } else {
        (0..nblk).map(load).sum()
    };
    (bytes, t.elapsed().as_secs_f64())
}

fn python(path: &Path, oid: Oid) -> Option<(u64, f64)> {
    let py = std::env::var("WCFS_PYTHON").ok()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/bench_load.py");
    let out = Command::new(py)
        .arg(script)
        .arg(path)
        .arg(oid.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((v["bytes"].as_u64()?, v["seconds"].as_f64()?))
}

fn mibs((bytes, secs): (u64, f64)) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we use.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib: u64 = std::env::var("WCFS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let dir = std::env::var_os("WCFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    std::fs::create_dir_all(&dir).unwrap();
    let nblk = (mib << 20) / BLKSIZE as u64;
    let mut rows = Vec::new();
    for format in [ZBlkFormat::ZBlk0, ZBlkFormat::ZBlk1] {
        let (path, oid) = ensure_db(&dir, format, nblk);
        raw_read(&path); // warm the page cache
        let raw = median((0..PASSES).map(|_| mibs(raw_read(&path))).collect());
        let seq = median((0..PASSES).map(|_| mibs(ours(&path, oid, false))).collect());
        let par = median((0..PASSES).map(|_| mibs(ours(&path, oid, true))).collect());
        let open = median((0..PASSES).map(|_| open_secs(&path)).collect());
        python(&path, oid); // warm Python's imports and the page cache
        let py: Option<f64> = (0..3)
            .map(|_| python(&path, oid).map(mibs))
            .collect::<Option<Vec<_>>>()
            .map(median);
        rows.push((format, raw, seq, par, py, open));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut table = format!(
        "Load every block of a {mib} MiB ZBigFile from the page cache and read its bytes (MiB/s of block data, median of {PASSES}; {cores} cores):\n\n\
         | variant | raw read of Data.fs | ours, 1 thread | ours, {cores} threads | Python ZODB | ours(1) / raw | ours(1) / Python | open (index scan) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for (format, raw, seq, par, py, open) in rows {
        let (pys, ratio) = match py {
            Some(p) => (format!("{p:.0}"), format!("{:.1}x", seq / p)),
            None => ("n/a".into(), "n/a".into()),
        };
        table += &format!(
            "| {format:?} | {raw:.0} | {seq:.0} | {par:.0} | {pys} | {:.2} | {ratio} | {:.0} ms |\n",
            seq / raw,
            open * 1e3
        );
    }
    println!("{table}");
    let _ = std::fs::write(dir.join("load.md"), table);
}

//! A faulty client must stall only the READs that need its pin
//! (`./dev bench faulty`; root, /dev/fuse). Issue 13's benchmark: the same
//! measures twice in one run, first with no faulty client (the
//! reference), then with one never-acking client pending a pin on file A
//! (a READ of A waiting for it all along):
//!
//! - cold READs of file B, one 2 MiB block each: p50 / p99;
//! - commit -> head/at for commits that change only B: p50 / p99;
//! - READ throughput of distinct cold blocks of B from 1 and 2 threads
//!   while a writer commits to a third file at 100 commits/s.
//!
//! Goal: every faulty figure within 1.5x of its reference. The pin timeout
//! is 600 s, longer than the bench: the faulty client stays pending.

#[path = "common/mod.rs"]
mod common;

use common::Server;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;
use zodb::{Oid, Tid};

const BLKSIZE: u64 = 2 << 20;
/// Blocks of B (256 MiB).
const NB: i64 = 128;
/// Cold single-block READs of B per phase.
const READS: usize = 256;
/// Commits of B per phase (commit -> head/at).
const COMMITS: usize = 200;
/// Commits per second of the background writer (throughput part).
const RATE: f64 = 100.0;
/// Throughput passes per thread count (best is kept).
const PASSES: usize = 3;
const LIMIT: Duration = Duration::from_secs(900);

fn block(tag: u64) -> Vec<u8> {
    tag.to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(BLKSIZE as usize)
        .collect()
}

fn pct(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

fn fadvise(f: &std::fs::File, a: nix::fcntl::PosixFadviseAdvice) {
    nix::fcntl::posix_fadvise(f.as_raw_fd(), 0, 0, a).unwrap();
}

/// A child that watches `oid` at `at` and never acks a pin: prints `ok`
/// after its setup and `pin` for every pin, holds the link until killed.
fn faulty_main() {
    let a: Vec<String> = std::env::args().collect();
    let (mnt, oid, at) = (&a[a.len() - 3], &a[a.len() - 2], &a[a.len() - 1]);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new(mnt).join("head/watch"))
        .unwrap();
    f.write_all(format!("1 watch {oid} @{at}\n").as_bytes())
        .unwrap();
    let mut r = BufReader::new(f.try_clone().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            return;
        }
        let l = line.trim_end();
        if l == "1 ok" {
            println!("ok");
        } else if l.contains(" pin ") {
            println!("pin");
        }
        std::io::stdout().flush().unwrap();
    }
}

struct Db {
    zw: ZWriter,
    b: Oid,
    c: Oid,
    tag: u64,
}

impl Db {
    fn commit(&mut self, oid: Oid, blk: i64, bs: u64) -> Tid {
        self.tag += 1;
        let mut d = block(self.tag);
        d.truncate(bs as usize);
        self.zw
            .update_file(oid, &[(blk, Some((ZBlkFormat::ZBlk0, &d[..])))])
            .unwrap()
    }
}

fn wait_head(srv: &Server, t: Tid) {
    let t0 = Instant::now();
    while srv.head_at() < t {
        assert!(t0.elapsed() < Duration::from_secs(60), "head/at stuck");
    }
}

/// One phase's figures.
struct Figures {
    read_ms: Vec<f64>,
    commit_ms: Vec<f64>,
    mibs_1: f64,
    mibs_2: f64,
}

/// MiB/s reading every block of `path` once, cold, `threads` threads
/// taking distinct blocks (best of PASSES).
fn throughput(path: &Path, threads: usize) -> f64 {
    let mut best = 0f64;
    for _ in 0..PASSES {
        let f = std::fs::File::open(path).unwrap();
        fadvise(&f, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let f = &f;
                s.spawn(move || {
                    let mut buf = vec![0u8; BLKSIZE as usize];
                    let mut b = t as i64;
                    while b < NB {
                        f.read_exact_at(&mut buf, b as u64 * BLKSIZE).unwrap();
                        b += threads as i64;
                    }
                });
            }
        });
        let mibs = (NB as u64 * BLKSIZE) as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64();
        best = best.max(mibs);
    }
    best
}

fn phase(db: &Arc<Mutex<Db>>, srv: &Server, what: &str) -> Figures {
    let (b, c) = {
        let d = db.lock().unwrap();
        (d.b, d.c)
    };
    let pb = srv.mnt.join(format!("head/bigfile/{b}"));
    eprintln!("faulty bench [{what}]: {READS} cold READs of B...");
    let mut buf = vec![0u8; BLKSIZE as usize];
    let f = std::fs::File::open(&pb).unwrap();
    fadvise(&f, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM);
    let mut read_ms = Vec::new();
    for i in 0..READS {
        fadvise(&f, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        let blk = (i as i64 * 37) % NB;
        let t0 = Instant::now();
        f.read_exact_at(&mut buf, blk as u64 * BLKSIZE).unwrap();
        read_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!("faulty bench [{what}]: {COMMITS} commits of B -> head/at...");
    let mut commit_ms = Vec::new();
    for i in 0..COMMITS {
        let t = db.lock().unwrap().commit(b, (i as i64 * 11) % NB, BLKSIZE);
        let t0 = Instant::now();
        wait_head(srv, t);
        commit_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!("faulty bench [{what}]: throughput with commits at {RATE}/s...");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let every = Duration::from_secs_f64(1.0 / RATE);
            let mut next = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                db.lock().unwrap().commit(c, 0, 4096);
                n += 1;
                next += every;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            n
        })
    };
    let t0 = Instant::now();
    let mibs_1 = throughput(&pb, 1);
    let mibs_2 = throughput(&pb, 2);
    stop.store(true, Ordering::Relaxed);
    let n = writer.join().unwrap();
    eprintln!(
        "faulty bench [{what}]: {n} background commits in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Figures {
        read_ms,
        commit_ms,
        mibs_1,
        mibs_2,
    }
}

fn main() {
    if std::env::var_os("WCFS_BENCH_FAULTY").is_some() {
        return faulty_main();
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("faulty bench: needs root and /dev/fuse; skipped");
        return;
    }
    std::thread::spawn(|| {
        std::thread::sleep(LIMIT);
        eprintln!("faulty bench: over {LIMIT:?}, giving up");
        std::process::exit(2);
    });
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let db_path = dir.path().join("Data.fs");
    let mnt: PathBuf = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    eprintln!("faulty bench: writing files A (4 blocks), B ({NB} blocks of 2 MiB), C...");
    let mut zw = ZWriter::open(&db_path).unwrap();
    let mk = |zw: &mut ZWriter, name: &str, n: i64, bs: u64, tag: u64| {
        let mut d = block(tag);
        d.truncate(bs as usize);
        let ch: Vec<_> = (0..n)
            .map(|b| (b, Some((ZBlkFormat::ZBlk0, &d[..]))))
            .collect();
        zw.create_file(name, bs, &ch).unwrap().0
    };
    let a = mk(&mut zw, "a", 4, BLKSIZE, 1);
    let b = mk(&mut zw, "b", NB, BLKSIZE, 2);
    let c = mk(&mut zw, "c", 1, 4096, 3);
    let db = Arc::new(Mutex::new(Db { zw, b, c, tag: 10 }));
    let zurl = db_path.to_str().unwrap().to_owned();
    let srv = Server::start_with(
        &zurl,
        &mnt,
        &dir.path().join("wcfs.log"),
        &["--pintimeout", "600"],
    );
    let pa = mnt.join(format!("head/bigfile/{a}"));
    // A's blocks are read (tracked) at the start; C is known to the server
    std::fs::read(&pa).unwrap();
    std::fs::read(mnt.join(format!("head/bigfile/{c}"))).unwrap();

    let reference = phase(&db, &srv, "no faulty client");

    // the faulty client, and a READ of A waiting for its pin
    let at0 = srv.head_at();
    let mut kid = Command::new(std::env::current_exe().unwrap())
        .env("WCFS_BENCH_FAULTY", "1")
        .arg(&mnt)
        .arg(a.to_string())
        .arg(at0.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(kid.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ok", "faulty client setup");
    let t = db.lock().unwrap().commit(a, 1, BLKSIZE);
    wait_head(&srv, t);
    let stuck = {
        let pa = pa.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&pa).unwrap();
            fadvise(&f, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM);
            let mut buf = vec![0u8; BLKSIZE as usize];
            let t0 = Instant::now();
            let _ = f.read_exact_at(&mut buf, BLKSIZE);
            t0.elapsed()
        })
    };
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "pin", "the faulty client got its pin");

    let faulty = phase(&db, &srv, "a faulty client pending");
    assert!(!stuck.is_finished(), "the READ of A waited all along");
    let _ = kid.kill();
    let _ = kid.wait();
    let waited = stuck.join().unwrap();
    eprintln!("faulty bench: the READ that needed the pin waited {waited:.1?}");
    drop(srv);

    let row = |what: &str, f: f64, r: f64, unit: &str, higher_better: bool| {
        let ratio = if higher_better { r / f } else { f / r };
        println!(
            "| {what} | {f:.2} {unit} | {r:.2} {unit} | {ratio:.2}x ({}) |",
            if ratio <= 1.5 {
                "goal <= 1.5x: met"
            } else {
                "goal <= 1.5x: NOT met"
            }
        );
    };
    println!("| measure (B: a file the faulty client does not need) | with a faulty client pending on A | no faulty client (same run) | slowdown |");
    println!("| --- | ---: | ---: | --- |");
    row(
        "cold READ of one 2 MiB block of B, p50",
        pct(&faulty.read_ms, 0.5),
        pct(&reference.read_ms, 0.5),
        "ms",
        false,
    );
    row(
        "cold READ of one 2 MiB block of B, p99",
        pct(&faulty.read_ms, 0.99),
        pct(&reference.read_ms, 0.99),
        "ms",
        false,
    );
    row(
        "commit of B -> head/at, p50",
        pct(&faulty.commit_ms, 0.5),
        pct(&reference.commit_ms, 0.5),
        "ms",
        false,
    );
    row(
        "commit of B -> head/at, p99",
        pct(&faulty.commit_ms, 0.99),
        pct(&reference.commit_ms, 0.99),
        "ms",
        false,
    );
    row(
        "READ throughput of B, 1 thread, commits at 100/s",
        faulty.mibs_1,
        reference.mibs_1,
        "MiB/s",
        true,
    );
    row(
        "READ throughput of B, 2 threads, commits at 100/s",
        faulty.mibs_2,
        reference.mibs_2,
        "MiB/s",
        true,
    );
}

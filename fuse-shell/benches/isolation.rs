//! Isolation-protocol benchmarks (`./dev bench isolation`; root,
//! /dev/fuse), each figure beside its reference from the same run:
//!
//! - page-cache sharing: 8 client processes (the `client` crate), each at
//!   its own one of the last 8 states, map a 512 MiB file and read (and
//!   check) every byte; the page cache the mount then holds (head/ plus
//!   every `@<rev>/` file, counted with mincore) vs the file size and vs
//!   the file plus the blocks changed in those states;
//! - pin round trip (the server queues a pin, the client's pinner remaps
//!   the block, the server has the `ack`): p50 and p99 over 200 pins, from
//!   the server's histogram (`.wcfs/stats`), beside the latency of the
//!   READ that needed the pin vs the same READ with no watch to pin.
//!
//! Block contents are a pure function of (block, generation): every u64
//! word of block `b` at generation `g` is `b << 32 | g`, so checking a
//! client's bytes is cheap.

#[path = "common/mod.rs"]
mod common;

use client::WCFS;
use common::Server;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;
use zodb::{Oid, Tid};

const BLKSIZE: u64 = 2 << 20;
const NBLK: i64 = 256; // 512 MiB
const CLIENTS: usize = 8;
/// Blocks changed by each of the last CLIENTS transactions.
const PER_TXN: i64 = 2;
const PINS: usize = 200;
/// First reads of pinned blocks in part (d), half of them kept in @rev.
const KEEPS: usize = 100;
const LIMIT: Duration = Duration::from_secs(600);

fn word(blk: i64, gen: u64) -> u64 {
    (blk as u64) << 32 | gen
}

fn block(blk: i64, gen: u64) -> Vec<u8> {
    word(blk, gen)
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(BLKSIZE as usize)
        .collect()
}

/// Words of `data` (block `blk`) that are not `word(blk, gen)`.
fn bad_words(data: &[u8], blk: i64, gen: u64) -> usize {
    let w = word(blk, gen);
    data.chunks_exact(8)
        .filter(|c| u64::from_le_bytes((*c).try_into().unwrap()) != w)
        .count()
}

/// head/bigfile/`oid` opened with readahead off (a READ of one block pins
/// or loads that block only).
fn open_random(mnt: &Path, oid: Oid) -> std::fs::File {
    let hf = std::fs::File::open(mnt.join(format!("head/bigfile/{oid}"))).unwrap();
    nix::fcntl::posix_fadvise(
        hf.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
    )
    .unwrap();
    hf
}

/// Commit block `b` of `oid` at generation `gen`; wait for head/at.
fn commit_block(zw: &mut ZWriter, srv: &Server, oid: Oid, b: i64, gen: u64) {
    let d = block(b, gen);
    let t = zw
        .update_file(oid, &[(b, Some((ZBlkFormat::ZBlk0, &d[..])))])
        .unwrap();
    while srv.head_at() < t {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Resident bytes of `path` in the page cache (mincore over a mapping).
fn resident(path: &Path) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a fresh read-only shared mapping of a file we opened; we
    // only pass its address to mincore and never read through it.
    let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    let pages = len.div_ceil(4096);
    let mut v = vec![0u8; pages];
    // SAFETY: [ptr, ptr+len) is the mapping above; v has one byte per page.
    let r = unsafe { libc::mincore(m.as_ptr() as *mut libc::c_void, len, v.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    v.iter().filter(|&&b| b & 1 != 0).count() as u64 * 4096
}

/// The page cache the mount holds for `oid`: head/ and every `@<rev>/`
/// view looked up so far.
fn mount_cache(mnt: &Path, oid: Oid) -> (u64, u64, usize) {
    let head = resident(&mnt.join(format!("head/bigfile/{oid}")));
    let mut revs = 0;
    let mut n = 0;
    for e in std::fs::read_dir(mnt).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.starts_with('@') {
            let p = mnt.join(&name).join(format!("bigfile/{oid}"));
            if p.exists() {
                revs += resident(&p);
                n += 1;
            }
        }
    }
    (head, revs, n)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn stats(mnt: &Path) -> BTreeMap<String, u64> {
    std::fs::read_to_string(mnt.join(".wcfs/stats"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("\t: "))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// A child: view `at` of file `oid`, whose block generations as of `at`
/// are `gens` (missing = 0). Maps the whole file, checks every word,
/// prints `ok <bad words>`, then holds the view until stdin closes.
fn client_main() {
    let a: Vec<String> = std::env::args().collect();
    let mnt = &a[a.len() - 4];
    let oid: Oid = a[a.len() - 3].parse().unwrap();
    let at: Tid = a[a.len() - 2].parse().unwrap();
    let gens: BTreeMap<i64, u64> = a[a.len() - 1]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (b, g) = s.split_once(':').unwrap();
            (b.parse().unwrap(), g.parse().unwrap())
        })
        .collect();
    let wc = WCFS::open(mnt).unwrap();
    let c = wc.connect(at).unwrap();
    let f = c.open(oid).unwrap();
    let m = f.mmap(0, NBLK).unwrap();
    // SAFETY: the mapping lives until the end of this function; pins may
    // remap blocks under the slice, which is what is being measured (the
    // data stays that of `at`).
    let data = unsafe { m.as_slice() };
    let mut bad = 0;
    for blk in 0..NBLK {
        let lo = (blk as u64 * BLKSIZE) as usize;
        let g = gens.get(&blk).copied().unwrap_or(0);
        bad += bad_words(&data[lo..lo + BLKSIZE as usize], blk, g);
    }
    println!("ok {bad}");
    std::io::stdout().flush().unwrap();
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
    drop((m, f, c));
}

fn main() {
    if std::env::var_os("WCFS_BENCH_CLIENT").is_some() {
        return client_main();
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("isolation bench: needs root and /dev/fuse; skipped");
        return;
    }
    std::thread::spawn(|| {
        std::thread::sleep(LIMIT);
        eprintln!("isolation bench: over {LIMIT:?}, giving up");
        std::process::exit(2);
    });
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let db = dir.path().join("Data.fs");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    eprintln!("isolation bench: writing a 512 MiB ZBigFile and {CLIENTS} commits...");
    let mut zw = ZWriter::open(&db).unwrap();
    let data: Vec<Vec<u8>> = (0..NBLK).map(|b| block(b, 0)).collect();
    let ch: Vec<_> = (0..NBLK)
        .map(|b| (b, Some((ZBlkFormat::ZBlk0, &data[b as usize][..]))))
        .collect();
    let (oid, at0) = zw.create_file("bench", BLKSIZE, &ch).unwrap();
    drop(data);
    let zurl = db.to_str().unwrap().to_owned();
    let log = dir.path().join("wcfs.log");
    // (the server's history starts where it starts: commit after that)
    let srv = Server::start(&zurl, &mnt, &log);
    // the last CLIENTS states: txn k changes PER_TXN blocks spread over the file
    let mut gens: BTreeMap<i64, u64> = BTreeMap::new();
    let mut states: Vec<(Tid, BTreeMap<i64, u64>)> = vec![(at0, gens.clone())];
    for k in 1..=CLIENTS as u64 {
        let blks: Vec<i64> = (0..PER_TXN)
            .map(|j| (k as i64 * 37 + j * 101) % NBLK)
            .collect();
        let bytes: Vec<Vec<u8>> = blks.iter().map(|&b| block(b, k)).collect();
        let ch: Vec<_> = blks
            .iter()
            .zip(&bytes)
            .map(|(&b, d)| (b, Some((ZBlkFormat::ZBlk0, &d[..]))))
            .collect();
        let t = zw.update_file(oid, &ch).unwrap();
        for &b in &blks {
            gens.insert(b, k);
        }
        states.push((t, gens.clone()));
    }
    while srv.head_at() < states.last().unwrap().0 {
        std::thread::sleep(Duration::from_millis(1));
    }

    // (1) page-cache sharing
    eprintln!("isolation bench: {CLIENTS} clients map and check the file...");
    let exe = std::env::current_exe().unwrap();
    let t0 = Instant::now();
    let mut kids: Vec<_> = states[1..]
        .iter()
        .map(|(at, g)| {
            let gs: Vec<String> = g.iter().map(|(b, v)| format!("{b}:{v}")).collect();
            Command::new(&exe)
                .env("WCFS_BENCH_CLIENT", "1")
                .arg(&mnt)
                .arg(oid.to_string())
                .arg(at.to_string())
                .arg(gs.join(","))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut bad = 0;
    for k in &mut kids {
        let mut line = String::new();
        BufReader::new(k.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let n: usize = line
            .trim()
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("client: {line:?}"))
            .parse()
            .unwrap();
        bad += n;
    }
    let took = t0.elapsed();
    let (head, revs, nrev) = mount_cache(&mnt, oid);
    let st = stats(&mnt);
    for mut k in kids {
        drop(k.stdin.take());
        assert!(k.wait().unwrap().success());
    }
    drop(srv);
    assert_eq!(bad, 0, "clients saw wrong words");
    let file = NBLK as u64 * BLKSIZE;
    let changed: std::collections::BTreeSet<i64> =
        states.iter().flat_map(|(_, g)| g.keys().copied()).collect();
    let reference = file + changed.len() as u64 * BLKSIZE;

    // (2) pin round trip, and the READ that needs one vs one that does not.
    // A READ through head/ of a block just changed (not cached) by a plain
    // reader; the watcher, if any, is a Conn of this process.
    let mut gen = 100u64;
    let mut model = states.last().unwrap().1.clone();
    let mut buf = vec![0u8; BLKSIZE as usize];
    let mut read_lat =
        |zw: &mut ZWriter, i: usize, srv: &Server, model: &mut BTreeMap<i64, u64>| {
            gen += 1;
            let b = (i as i64 * 7) % NBLK;
            commit_block(zw, srv, oid, b, gen);
            model.insert(b, gen);
            let hf = open_random(&srv.mnt, oid);
            let t0 = Instant::now();
            hf.read_exact_at(&mut buf, b as u64 * BLKSIZE).unwrap();
            let dt = t0.elapsed().as_secs_f64() * 1e3;
            assert_eq!(bad_words(&buf, b, gen), 0);
            dt
        };
    // check that a view still shows the state `g` it was made at
    let check_view = |m: &client::Mapping, g: &BTreeMap<i64, u64>| {
        let view = m.to_vec().unwrap();
        let bad: usize = (0..NBLK)
            .map(|b| {
                let lo = (b as u64 * BLKSIZE) as usize;
                bad_words(
                    &view[lo..lo + BLKSIZE as usize],
                    b,
                    *g.get(&b).unwrap_or(&0),
                )
            })
            .sum();
        assert_eq!(bad, 0, "a pinned view changed");
    };
    // (a) a view at the head reached after the first part: every pin goes
    // to one of a few revisions, whose @rev files the client has open
    let srv = Server::start(&zurl, &mnt, &log);
    eprintln!("isolation bench: {PINS} pins to revisions open already...");
    let wc = WCFS::open(&mnt).unwrap();
    let (c, g) = (wc.connect(srv.head_at()).unwrap(), model.clone());
    let f = c.open(oid).unwrap();
    let m = f.mmap(0, NBLK).unwrap();
    let mut lat_open: Vec<f64> = (0..PINS)
        .map(|i| read_lat(&mut zw, i, &srv, &mut model))
        .collect();
    let st_open = stats(&mnt);
    check_view(&m, &g);
    drop((m, f, c));
    drop(srv);
    // (b) no watch; then (c) a view at the head reached after (b): every
    // pin goes to a revision of its own (the client looks it up and opens
    // it first)
    let srv = Server::start(&zurl, &mnt, &log);
    eprintln!("isolation bench: {PINS} reads with no watch, then {PINS} pins to new revisions...");
    let mut lat_none: Vec<f64> = (0..PINS)
        .map(|i| read_lat(&mut zw, PINS + i, &srv, &mut model))
        .collect();
    let (c, g) = (wc.connect(srv.head_at()).unwrap(), model.clone());
    let f = c.open(oid).unwrap();
    let m = f.mmap(0, NBLK).unwrap();
    let mut lat_new: Vec<f64> = (0..PINS)
        .map(|i| read_lat(&mut zw, PINS + i, &srv, &mut model))
        .collect();
    let st_new = stats(&mnt);
    check_view(&m, &g);
    drop((m, f, c));
    drop(srv);

    // (d) a pinned client's first read of a block just changed, through
    // its view (now `@rev`): the block's old data kept in `@rev`'s cache
    // by the invalidation (head/ had it cached whole: serve/keep.rs) vs
    // loaded from the database (head/'s copy dropped before the commit:
    // what every such read cost before). Alternating, distinct blocks.
    let srv = Server::start(&zurl, &mnt, &log);
    eprintln!("isolation bench: {KEEPS} first reads of pinned blocks, kept in @rev or not...");
    let (c, g) = (wc.connect(srv.head_at()).unwrap(), model.clone());
    let f = c.open(oid).unwrap();
    let m = f.mmap(0, NBLK).unwrap();
    let (mut lat_kept, mut lat_db) = (Vec::new(), Vec::new());
    for i in 0..KEEPS {
        let b = (i as i64 * 5 + 3) % NBLK;
        let keep = i % 2 == 0;
        // another reader has the block whole in head/'s cache
        let hf = open_random(&srv.mnt, oid);
        let off = b * BLKSIZE as i64;
        hf.read_exact_at(&mut buf, off as u64).unwrap();
        if !keep {
            nix::fcntl::posix_fadvise(
                hf.as_raw_fd(),
                off,
                BLKSIZE as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )
            .unwrap();
        }
        gen += 1;
        commit_block(&mut zw, &srv, oid, b, gen);
        model.insert(b, gen);
        let t0 = Instant::now();
        m.read_at(off as usize, &mut buf).unwrap();
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        assert_eq!(
            bad_words(&buf, b, *g.get(&b).unwrap_or(&0)),
            0,
            "a pinned view changed"
        );
        if keep { &mut lat_kept } else { &mut lat_db }.push(dt);
    }
    let st_keep = stats(&mnt);
    check_view(&m, &g);
    drop((m, f, c));
    drop(srv);

    let file_mib = mib(file);
    println!();
    println!("| isolation | ours | reference (same run) | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| page cache, {CLIENTS} client processes at the last {CLIENTS} states of a {file_mib:.0} MiB file, every byte read | {:.0} MiB (head {:.0} + {nrev} @rev view {:.0}) | file {file_mib:.0} MiB; file + {} changed blocks {:.0} MiB | {:.3}x the file, {:.3}x file + changed |",
        mib(head + revs),
        mib(head),
        mib(revs),
        changed.len(),
        mib(reference),
        (head + revs) as f64 / file as f64,
        (head + revs) as f64 / reference as f64,
    );
    for (what, st) in [
        ("to a revision the client has open", &st_open),
        ("to a new revision (client opens @rev)", &st_new),
    ] {
        println!(
            "| pin round trip {what} (server: queued → ack), {} pins | p50 {} µs, p99 {} µs | | |",
            st["pin"], st["PinRtt50us"], st["PinRtt99us"],
        );
    }
    let (n50, n99) = (pct(&mut lat_none, 0.5), pct(&mut lat_none, 0.99));
    for (what, lat) in [
        ("pins a view at an open revision", &mut lat_open),
        ("pins a view at a new revision", &mut lat_new),
    ] {
        let (w50, w99) = (pct(lat, 0.5), pct(lat, 0.99));
        println!(
            "| READ of a changed 2 MiB block that {what} | p50 {w50:.2} ms, p99 {w99:.2} ms | no watch: p50 {n50:.2} ms, p99 {n99:.2} ms | {:.2}x at p50 |",
            w50 / n50
        );
    }
    let (k50, k99) = (pct(&mut lat_kept, 0.5), pct(&mut lat_kept, 0.99));
    let (d50, d99) = (pct(&mut lat_db, 0.5), pct(&mut lat_db, 0.99));
    println!(
        "| first read of a just-changed 2 MiB block through a pinned view, old data kept in @rev's cache ({} kept) | p50 {k50:.2} ms, p99 {k99:.2} ms | loaded from the database (head/'s copy dropped; {} not kept): p50 {d50:.2} ms, p99 {d99:.2} ms | {:.2}x at p50 |",
        st_keep["kept_blocks"],
        st_keep["keep_missed"],
        k50 / d50
    );
    println!();
    println!(
        "({CLIENTS} clients checked {file_mib:.0} MiB each in {:.2} s together, 0 wrong words; {} pins for them, pinkill {})",
        took.as_secs_f64(),
        st.get("pin").copied().unwrap_or(0),
        st.get("pinkill").copied().unwrap_or(0),
    );
}

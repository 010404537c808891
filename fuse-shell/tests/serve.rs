//! `wcfs serve` mounted for real: the built binary serves a database that
//! our writer (`zodb::zwrite::ZWriter`) builds and changes; the test reads
//! the mount with read(2) and mmap and compares with a model of every
//! file (block -> bytes). What is held: exact bytes of whole files, of
//! ranges across block boundaries and at EOF, of holes, ZBlk0 and ZBlk1;
//! `@<tid>` views of older states; after a commit, head/at moves and
//! head/ shows exactly the new data, also for blocks that were in the
//! kernel cache (and mapped) before; file growth, with the inode's size
//! never below what an fstat returned; the EINVAL / ENOENT
//! cases; SIGTERM and kill -9 leave no mount entry.
//!
//! With `WCFS_TEST_ON_ZEO=1` (as `./dev test` runs it a second time) the
//! database lives behind a real ZEO server and `wcfs serve` serves
//! `zeo://`: the writer commits through ZEO (`support/zeo.rs`); the tests
//! about the server process or a damaged Data.fs say they are not run.
//!
//! Every test runs under a watchdog (abort the FUSE connection, `umount
//! -l`, kill the server) and a guard that unmounts and kills the server
//! even when the test panics; each test ends by asserting that no mount
//! entry for its mountpoint is left. Needs root, /dev/fuse and fusermount3
//! (CI has them; `./dev test` installs fuse3).

#[path = "../../zodb/tests/py_common/mod.rs"]
mod py_common;
#[path = "support/server.rs"]
#[allow(dead_code)]
mod server;
#[path = "support/zeo.rs"]
#[allow(dead_code)]
mod zeo_support;
use server::{mounted, pattern, read_at, Server};
use zeo_support::{on_zeo, open_writer, AnyWriter};

use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::{BlkChange, ZWriter};

/// The test writer: to the Data.fs, or through a ZEO server on it
/// (`WCFS_TEST_ON_ZEO=1`, see `support/zeo.rs`).
type TestWriter = ZWriter<AnyWriter>;
use zodb::{Oid, Tid};

const MIB2: u64 = 2 << 20;

/// A block change with its bytes owned.
type OwnedChange = (i64, Option<(ZBlkFormat, Vec<u8>)>);

/// Files as the model sees them: block -> bytes (unpadded).
type Model = BTreeMap<i64, Vec<u8>>;

fn content(m: &Model, bs: u64) -> Vec<u8> {
    let n = m.keys().next_back().map_or(0, |&k| (k as u64 + 1) * bs);
    let mut v = vec![0u8; n as usize];
    for (&k, d) in m {
        let o = (k as u64 * bs) as usize;
        v[o..o + d.len()].copy_from_slice(d);
    }
    v
}

fn apply(zw: &mut TestWriter, oid: Oid, m: &mut Model, ch: Vec<OwnedChange>) -> Tid {
    let changes: Vec<_> = ch
        .iter()
        .map(|(b, d)| (*b, d.as_ref().map(|(f, v)| (*f, v.as_slice()))))
        .collect();
    let tid = zw.update_file(oid, &changes).unwrap();
    for (b, d) in ch {
        match d {
            Some((_, v)) => m.insert(b, v),
            None => m.remove(&b),
        };
    }
    tid
}

fn errno(r: std::io::Result<std::fs::Metadata>) -> i32 {
    r.expect_err("should fail").raw_os_error().unwrap()
}

fn mk(m: &Model, f: ZBlkFormat) -> Vec<BlkChange<'_>> {
    m.iter()
        .map(|(&k, v)| (k, Some((f, v.as_slice()))))
        .collect()
}

/// The inode's size as the kernel has it cached (`statx` with
/// `AT_STATX_DONT_SYNC`: no getattr is sent).
fn cached_size(f: &File) -> u64 {
    use std::os::fd::AsRawFd;
    // SAFETY: statx on our open fd with an empty path, into a zeroed
    // statx of this frame.
    unsafe {
        let mut sx: libc::statx = std::mem::zeroed();
        let r = libc::statx(
            f.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_SIZE,
            &mut sx,
        );
        assert_eq!(r, 0, "statx: {}", std::io::Error::last_os_error());
        sx.stx_size
    }
}

/// While a file grows commit after commit, threads fstat it over and over
/// (each fstat is a getattr: head/ sizes are never cached): the size the
/// kernel keeps for the inode must never fall below a size an fstat has
/// returned, or a client that maps that far dies of SIGBUS past the
/// inode's end (the last open SIGBUS finding of wcfs-stress, caught by its
/// reader's report: cached size below fstat's). The kernel ignores a
/// getattr reply whose request is older than the last attribute change,
/// yet hands it to the caller; so concurrent getattrs across a size change
/// can leave the inode at the old size while fstat said the new one,
/// unless the server has put the new size into the inode itself before
/// any getattr can tell it.
#[test]
fn inode_size_never_below_what_fstat_said() {
    const BS: u64 = 16 << 10;
    const COMMITS: i64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let (oid, _) = zw
        .create_file("f", BS, &[(0, Some((ZBlkFormat::ZBlk0, &[1u8][..])))])
        .unwrap();
    let srv = Server::start(dir.path(), &db);
    let p = srv.p(&format!("head/bigfile/{oid}"));
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (p, stop, bad) = (p.clone(), stop.clone(), bad.clone());
            std::thread::spawn(move || {
                let f = File::open(&p).unwrap();
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let said = f.metadata().unwrap().len();
                    seen = seen.max(said);
                    let cached = cached_size(&f);
                    if cached < seen {
                        bad.lock().unwrap().push(format!(
                            "the inode's size {cached} < {seen} that fstat returned"
                        ));
                        return;
                    }
                }
            })
        })
        .collect();
    let mut last = Tid::ZERO;
    for b in 1..=COMMITS {
        last = zw
            .update_file(oid, &[(b, Some((ZBlkFormat::ZBlk0, &[b as u8][..])))])
            .unwrap();
        if !bad.lock().unwrap().is_empty() {
            break;
        }
    }
    srv.wait_head(last);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let bad = bad.lock().unwrap().clone();
    if !bad.is_empty() {
        let log = std::fs::read_to_string(&srv.log).unwrap_or_default();
        for l in log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            eprintln!("server: {l}");
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
    let f = File::open(&p).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (COMMITS as u64 + 1) * BS);
    srv.finish();
}

/// read() of whole files and ranges, holes, ZBlk0 and ZBlk1, mmap,
/// st_blksize, `@<tid>`, .wcfs/*.
#[test]
fn reads() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let a: Model = [
        (0, pattern(1, MIB2 as usize)),
        (2, pattern(2, 1000)),
        (3, pattern(3, MIB2 as usize)),
    ]
    .into();
    let b: Model = [
        (0, pattern(4, MIB2 as usize)),
        (2, pattern(5, 3 * 4096 + 17)),
    ]
    .into();
    let (aoid, _) = zw
        .create_file("a", MIB2, &mk(&a, ZBlkFormat::ZBlk0))
        .unwrap();
    let (boid, at) = zw
        .create_file("b", MIB2, &mk(&b, ZBlkFormat::ZBlk1))
        .unwrap();
    let srv = Server::start(dir.path(), &db);
    assert_eq!(srv.head_at(), at);

    for (oid, m) in [(aoid, &a), (boid, &b)] {
        let want = content(m, MIB2);
        let p = srv.p(&format!("head/bigfile/{oid}"));
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.len(), want.len() as u64);
        assert_eq!(md.blksize(), MIB2);
        assert_eq!(md.mode() & 0o777, 0o444);
        assert!(std::fs::read(&p).unwrap() == want, "{oid}: whole file");
        let f = File::open(&p).unwrap();
        let size = want.len() as u64;
        for (off, len) in [
            (0, 10),
            (MIB2 - 100, 200),
            (MIB2, 4096),
            (MIB2 + 7, 3 * 4096),
            (2 * MIB2 - 1, MIB2 + 2),
            (size - 5, 100),
            (size, 10),
            (size + 4096, 10),
        ] {
            let lo = off.min(size) as usize;
            let hi = (off + len).min(size) as usize;
            assert!(
                read_at(&f, off, len as usize) == want[lo..hi],
                "{oid}: [{off}, +{len})"
            );
        }
        // SAFETY (test): the file is read-only and nobody truncates it.
        let map = unsafe { Mmap::map(&f) }.unwrap();
        assert!(map[..] == want[..], "{oid}: mmap");
        // the same through @<tid>
        let r = std::fs::read(srv.p(&format!("@{at}/bigfile/{oid}"))).unwrap();
        assert!(r == want, "{oid}: @{at}");
    }
    assert_eq!(
        std::fs::read_to_string(srv.p(".wcfs/zurl")).unwrap(),
        srv.zurl
    );
    assert_eq!(
        std::fs::read_to_string(srv.p(".wcfs/pintimeout")).unwrap(),
        "30.0"
    );
    let stats = std::fs::read_to_string(srv.p(".wcfs/stats")).unwrap();
    let keys: Vec<&str> = stats
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "BigFile",
            "RevHead",
            "ZHeadLink",
            "WatchLink",
            "Watch",
            "PinnedBlk",
            "pin",
            "pinkill",
            "reads",
            "bytes_read",
            "invalidated_blocks",
            "commits",
            "TrackedBlk",
            "PinRtt50us",
            "PinRtt99us",
            "rev_trimmed",
            "Commit50us",
            "Commit99us",
            "HeadAtLag50us",
            "HeadAtLag99us",
            "kept_blocks",
            "keep_missed"
        ]
    );
    assert!(stats.contains("BigFile\t: 2\n"), "{stats}");
    assert!(stats.contains("RevHead\t: 1\n"), "{stats}");
    assert!(!stats.contains("TrackedBlk\t: 0\n"), "{stats}");
    srv.finish();
}

/// Commits by our writer while the mount is used: head/at moves, and head/
/// then shows exactly the new data, also where the old data was cached and
/// mapped; growth; `@<old>` keeps the old state; a deleted file goes.
#[test]
fn commits() {
    const BS: u64 = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let mut m: Model = [(0, pattern(10, BS as usize)), (1, pattern(11, 100))].into();
    let init: Vec<_> = m
        .iter()
        .map(|(&k, v)| (k, Some((ZBlkFormat::ZBlk0, v.as_slice()))))
        .collect();
    let (oid, at0) = zw.create_file("f", BS, &init).unwrap();
    let srv = Server::start(dir.path(), &db);
    let p = srv.p(&format!("head/bigfile/{oid}"));
    let old = content(&m, BS);
    assert!(std::fs::read(&p).unwrap() == old);
    let f = File::open(&p).unwrap();
    // SAFETY (test): read-only mapping of a file nobody truncates.
    let map = unsafe { Mmap::map(&f) }.unwrap();
    assert!(map[..] == old[..]);

    // change both cached blocks (block 1 also from ZBlk0 to ZBlk1) and grow
    let at1 = apply(
        &mut zw,
        oid,
        &mut m,
        vec![
            (0, Some((ZBlkFormat::ZBlk0, pattern(12, 500)))),
            (1, Some((ZBlkFormat::ZBlk1, pattern(13, BS as usize)))),
            (3, Some((ZBlkFormat::ZBlk0, pattern(14, 10)))),
        ],
    );
    srv.wait_head(at1);
    let new = content(&m, BS);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 4 * BS);
    assert!(std::fs::read(&p).unwrap() == new, "head/ after {at1}");
    assert!(
        read_at(&f, 0, (4 * BS) as usize) == new,
        "open handle after {at1}"
    );
    assert!(map[..] == new[..old.len()], "old mapping after {at1}");
    assert!(
        std::fs::read(srv.p(&format!("@{at0}/bigfile/{oid}"))).unwrap() == old,
        "@{at0}"
    );

    // a series of commits, each checked right after head/at shows it
    let mut hist = vec![(at1, new)];
    for i in 0..20u64 {
        let blk = (i * 7 % 6) as i64;
        let ch = match i % 4 {
            0 => (blk, None),
            1 => (
                blk,
                Some((
                    ZBlkFormat::ZBlk1,
                    pattern(100 + i, (i as usize * 997) % BS as usize + 1),
                )),
            ),
            _ => (
                blk,
                Some((
                    ZBlkFormat::ZBlk0,
                    pattern(100 + i, (i as usize * 4099) % BS as usize + 1),
                )),
            ),
        };
        // read first so that the blocks are in the kernel cache
        let _ = std::fs::read(&p).unwrap();
        let at = apply(&mut zw, oid, &mut m, vec![ch]);
        srv.wait_head(at);
        let want = content(&m, BS);
        assert!(std::fs::read(&p).unwrap() == want, "commit {i} @{at}");
        hist.push((at, want));
    }
    for (at, want) in &hist {
        assert!(
            std::fs::read(srv.p(&format!("@{at}/bigfile/{oid}"))).unwrap() == *want,
            "@{at}"
        );
    }
    let stats = std::fs::read_to_string(srv.p(".wcfs/stats")).unwrap();
    assert!(stats.contains("commits\t: 21\n"), "{stats}");
    assert!(!stats.contains("invalidated_blocks\t: 0\n"), "{stats}");

    // the file is deleted: its reads fail, a new lookup is EINVAL
    drop(map);
    let atd = zw.delete_file("f", oid).unwrap();
    srv.wait_head(atd);
    assert!(read_at_err(&f), "read of a deleted file succeeded");
    drop(f);
    let e = errno(std::fs::metadata(srv.p(&format!("head/bigfile/{oid}x"))));
    assert_eq!(e, libc_einval());
    srv.finish();
}

fn read_at_err(f: &File) -> bool {
    let mut b = [0u8; 10];
    f.read_at(&mut b, 0).is_err()
}

fn libc_einval() -> i32 {
    nix::errno::Errno::EINVAL as i32
}

/// 200 random commits while a reader thread keeps reading head/: every
/// block it reads after head/at showed T is the block of a state >= T
/// (never older data for a block that changed); once the writer stops
/// and head/at shows the last tid, the file is exactly the last state.
#[test]
fn random_commits_with_a_concurrent_reader() {
    const BS: u64 = 4096;
    const NBLK: i64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let mut m: Model = [(0, pattern(1, BS as usize))].into();
    let (oid, at0) = zw.create_file("f", BS, &mk(&m, ZBlkFormat::ZBlk0)).unwrap();
    let srv = Server::start(dir.path(), &db);
    let p = srv.p(&format!("head/bigfile/{oid}"));
    // tid -> file content, shared with the reader
    let hist = Arc::new(std::sync::Mutex::new(BTreeMap::from([(
        at0,
        content(&m, BS),
    )])));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (hist, done, p, at_path) = (hist.clone(), done.clone(), p.clone(), srv.p("head/at"));
        std::thread::spawn(move || {
            let mut checks = 0u32;
            while !done.load(Ordering::SeqCst) {
                let t: Tid = std::fs::read_to_string(&at_path).unwrap().parse().unwrap();
                // Block by block (pread of one block each, up to the first
                // short one), not one read() of the whole file: a read()
                // spanning a shrink is at the mercy of the kernel's
                // short-READ handling (it moves i_size to where a reply
                // ended), which once produced a page holding the previous
                // block's bytes in std's read_to_end (32-byte EOF probe).
                // Each block must still be exactly one state's.
                let data = {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::File::open(&p).unwrap();
                    let mut data = Vec::new();
                    let mut buf = vec![0u8; BS as usize];
                    for blk in 0..NBLK as u64 {
                        let n = f.read_at(&mut buf, blk * BS).unwrap();
                        if n < BS as usize {
                            break;
                        }
                        data.extend_from_slice(&buf);
                    }
                    data
                };
                // The writer records a state right after committing it, so
                // the state the data comes from may be recorded a bit later.
                let t0 = Instant::now();
                loop {
                    let bad = {
                        let h = hist.lock().unwrap();
                        (0..NBLK as usize).find(|&blk| {
                            let lo = blk * BS as usize;
                            let got = data.get(lo..lo + BS as usize);
                            // While a commit that shrinks the file is being
                            // processed, the kernel may still believe the
                            // old size: a block past the new end then reads
                            // as zeros (the READ gets 0 bytes) until the
                            // size is invalidated, before head/at moves.
                            let zeros = got.is_some_and(|g| g.iter().all(|&b| b == 0));
                            // An early end must be an end the file once
                            // had (head/ no longer shrinks, so this is
                            // only slack for the kernel's own size).
                            let early_end = got.is_none() && h.values().any(|c| c.len() <= lo);
                            !early_end
                                && !h.range(t..).any(|(_, c)| {
                                    c.get(lo..lo + BS as usize) == got || (zeros && c.len() <= lo)
                                })
                        })
                    };
                    let Some(blk) = bad else { break };
                    if t0.elapsed() > Duration::from_secs(5) {
                        let h = hist.lock().unwrap();
                        let lo = blk * BS as usize;
                        let got = data.get(lo..lo + BS as usize);
                        let desc = |c: Option<&[u8]>| match c {
                            None => "none".to_owned(),
                            Some(c) if c.iter().all(|&b| b == 0) => "zeros".to_owned(),
                            Some(c) => format!("{:02x?}", &c[..8]),
                        };
                        let states: Vec<String> = h
                            .range(..)
                            .rev()
                            .take(6)
                            .map(|(tid, c)| {
                                format!("{tid}:{}:{}", c.len(), desc(c.get(lo..lo + BS as usize)))
                            })
                            .collect();
                        panic!(
                            "head/at {t}: blk {blk} is not from a state >= {t}: got len {} {}; states {states:?}",
                            data.len(),
                            desc(got)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                checks += 1;
            }
            checks
        })
    };
    let mut x = 12345u64;
    let mut last = at0;
    for i in 0..200u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let blk = ((x >> 33) % NBLK as u64) as i64;
        let ch = match (x >> 20) % 5 {
            0 if m.len() > 1 => (blk, None),
            1 | 2 => (
                blk,
                Some((ZBlkFormat::ZBlk1, pattern(x, ((x >> 8) % BS) as usize + 1))),
            ),
            _ => (
                blk,
                Some((ZBlkFormat::ZBlk0, pattern(x, ((x >> 8) % BS) as usize + 1))),
            ),
        };
        last = apply(&mut zw, oid, &mut m, vec![ch]);
        hist.lock().unwrap().insert(last, content(&m, BS));
        if i % 50 == 49 {
            srv.wait_head(last);
        }
    }
    srv.wait_head(last);
    done.store(true, Ordering::SeqCst);
    let checks = reader.join().expect("reader");
    assert!(checks > 0);
    // head/ never shrinks (a deleted tail reads as zeros up to the
    // largest size the file had: serve/head.rs)
    let longest = hist.lock().unwrap().values().map(Vec::len).max().unwrap();
    let mut want = content(&m, BS);
    want.resize(want.len().max(longest), 0);
    assert!(std::fs::read(&p).unwrap() == want, "after the last commit");
    srv.finish();
}

/// 2 MiB ZBlk1 blocks read by three threads at once (read() and mmap,
/// so the kernel sends many READs of one block in parallel) while 20
/// commits rewrite them: no hang, no error, and the exact last state.
#[test]
fn parallel_readers_of_big_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let mut m: Model = (0..4)
        .map(|b| (b, pattern(500 + b as u64, MIB2 as usize)))
        .collect();
    let (oid, _) = zw
        .create_file("f", MIB2, &mk(&m, ZBlkFormat::ZBlk1))
        .unwrap();
    let srv = Server::start(dir.path(), &db);
    let p = srv.p(&format!("head/bigfile/{oid}"));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !done.load(Ordering::SeqCst) {
                    if i == 0 {
                        let f = File::open(&p).unwrap();
                        // SAFETY (test): read-only mapping; the file only grows.
                        let map = unsafe { Mmap::map(&f) }.unwrap();
                        let sum: u64 = map.iter().step_by(4096).map(|&b| b as u64).sum();
                        std::hint::black_box(sum);
                    } else {
                        assert_eq!(std::fs::read(&p).unwrap().len() as u64 % MIB2, 0);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut last = Tid(0);
    for i in 0..20u64 {
        let blk = (i % 4) as i64;
        last = apply(
            &mut zw,
            oid,
            &mut m,
            vec![(
                blk,
                Some((
                    ZBlkFormat::ZBlk1,
                    pattern(600 + i, MIB2 as usize - (i as usize) * 4096),
                )),
            )],
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.wait_head(last);
    done.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    assert!(
        std::fs::read(&p).unwrap() == content(&m, MIB2),
        "last state"
    );
    srv.finish();
}

/// Bad names: EINVAL; a future `@<tid>`: ENOENT; writes: refused.
#[test]
fn errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let (oid, at) = zw
        .create_file("f", 4096, &[(0, Some((ZBlkFormat::ZBlk0, b"x")))])
        .unwrap();
    let srv = Server::start(dir.path(), &db);
    let einval = libc_einval();
    for rel in [
        "notrev".to_owned(),
        "@0123".to_owned(),
        "@zzzzzzzzzzzzzzzz".to_owned(),
        "head/bigfile/xyz".to_owned(),
        format!("head/bigfile/{oid}0"),
        "head/bigfile/0000000000000000".to_owned(), // the root: not a ZBigFile
        "head/bigfile/00000000000fffff".to_owned(), // no such object
        format!("@{at}/bigfile/zz"),
    ] {
        assert_eq!(errno(std::fs::metadata(srv.p(&rel))), einval, "{rel}");
    }
    let future = Tid(at.0 + 1);
    assert_eq!(
        errno(std::fs::metadata(srv.p(&format!("@{future}")))),
        nix::errno::Errno::ENOENT as i32
    );
    assert_eq!(
        errno(std::fs::metadata(srv.p("head/nothere"))),
        nix::errno::Errno::ENOENT as i32
    );
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(srv.p(&format!("head/bigfile/{oid}")));
    assert!(w.is_err(), "opened for writing");
    // a file created after @at is not there
    let (oid2, at2) = zw
        .create_file("g", 4096, &[(0, Some((ZBlkFormat::ZBlk0, b"y")))])
        .unwrap();
    srv.wait_head(at2);
    assert_eq!(
        errno(std::fs::metadata(srv.p(&format!("@{at}/bigfile/{oid2}")))),
        einval
    );
    assert_eq!(
        std::fs::read(srv.p(&format!("head/bigfile/{oid2}")))
            .unwrap()
            .len(),
        4096
    );
    // the server is unharmed
    assert_eq!(
        std::fs::read(srv.p(&format!("head/bigfile/{oid}"))).unwrap()[0],
        b'x'
    );
    srv.finish();
}

/// A corrupt record: EIO for the reads that need it, logged with the oid
/// and offset; the other blocks and files keep working.
#[test]
fn corrupt_record_is_eio() {
    if on_zeo() {
        eprintln!(
            "corrupt_record_is_eio: not run on zeo:// (it damages the Data.fs under the storage)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let bad = pattern(77, 4096);
    let (aoid, _) = zw
        .create_file(
            "a",
            4096,
            &[
                (0, Some((ZBlkFormat::ZBlk0, b"fine"))),
                (1, Some((ZBlkFormat::ZBlk0, &bad))),
            ],
        )
        .unwrap();
    let (boid, _) = zw
        .create_file("b", 4096, &[(0, Some((ZBlkFormat::ZBlk0, b"ok")))])
        .unwrap();
    drop(zw);
    // garble the pickle opcodes right before block 1's bytes
    let mut raw = std::fs::read(&db).unwrap();
    let pos = raw
        .windows(64)
        .position(|w| w == &bad[..64])
        .expect("block data in Data.fs");
    raw[pos - 8..pos].fill(0xff);
    std::fs::write(&db, &raw).unwrap();

    let srv = Server::start(dir.path(), &db);
    let f = File::open(srv.p(&format!("head/bigfile/{aoid}"))).unwrap();
    let mut b = [0u8; 16];
    let e = f
        .read_at(&mut b, 4096)
        .expect_err("read of a corrupt block");
    assert_eq!(e.raw_os_error(), Some(nix::errno::Errno::EIO as i32), "{e}");
    assert_eq!(read_at(&f, 0, 4), b"fine");
    assert_eq!(
        &std::fs::read(srv.p(&format!("head/bigfile/{boid}"))).unwrap()[..2],
        b"ok"
    );
    let log = srv.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("read blk #1"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        line.contains(&aoid.to_string()) && line.contains("file offset 4096"),
        "{line}"
    );
    srv.finish();
}

/// kill -9 of the server: fusermount3 (auto_unmount) removes the mount.
#[test]
fn kill9_leaves_no_mount() {
    if on_zeo() {
        eprintln!(
            "kill9_leaves_no_mount: not run on zeo:// (about the server process, not the storage)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    zw.create_file("f", 4096, &[(0, Some((ZBlkFormat::ZBlk0, b"x")))])
        .unwrap();
    let mut srv = Server::start(dir.path(), &db);
    srv.signal(nix::sys::signal::Signal::SIGKILL);
    srv.wait_exit(Duration::from_secs(10));
    let t0 = Instant::now();
    while mounted(&srv.mnt) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "mount left after kill -9"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(srv);
    assert!(!mounted(&dir.path().join("mnt")));
}

/// `--autoexit`: the server stops by itself once no file is open and no
/// request came for a while (2 s here), not while a file is open.
#[test]
fn autoexit() {
    if on_zeo() {
        eprintln!("autoexit: not run on zeo:// (about the server process, not the storage)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    zw.create_file("f", 4096, &[(0, Some((ZBlkFormat::ZBlk0, b"x")))])
        .unwrap();
    let mut srv = Server::start_with(
        dir.path(),
        &db,
        &["--autoexit"],
        &[("WCFS_AUTOEXIT_SECS", "2")],
    );
    let f = File::open(srv.p(".wcfs/zurl")).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        srv.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "exited with a file open"
    );
    drop(f);
    let st = srv.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "{st}:\n{}", srv.log_text());
    assert!(!mounted(&srv.mnt));
    assert!(srv.log_text().contains("autoexit"));
}

/// SIGINT stops the server as SIGTERM does: exit 0, no mount.
#[test]
fn sigint_unmounts() {
    if on_zeo() {
        eprintln!("sigint_unmounts: not run on zeo:// (about the server process, not the storage)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    zw.create_file("f", 4096, &[(0, Some((ZBlkFormat::ZBlk0, b"x")))])
        .unwrap();
    let mut srv = Server::start(dir.path(), &db);
    // a client keeps a file open: the unmount is then lazy, still no entry
    let f = File::open(srv.p(".wcfs/zurl")).unwrap();
    srv.signal(nix::sys::signal::Signal::SIGINT);
    let st = srv.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "{st}:\n{}", srv.log_text());
    assert!(!mounted(&srv.mnt));
    drop(f);
}

/// `wcfs serve <zurl>` on the default mountpoint; `wcfs status` finds it
/// (pid, head/at), `wcfs stop` stops it and leaves no mount entry and no
/// directory; a second `serve` on a mounted zurl is refused.
#[test]
fn default_mountpoint_status_stop() {
    if on_zeo() {
        eprintln!("default_mountpoint_status_stop: not run on zeo:// (about the server process and the zurl of a path)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let (_, tid) = zw
        .create_file("f", 4096, &[(0, Some((ZBlkFormat::ZBlk0, b"x")))])
        .unwrap();
    let zurl = db.to_str().unwrap().to_owned();
    let wcfs = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wcfs"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let st = wcfs(&["status", &zurl]);
    assert!(!st.status.success(), "status before serve");
    let text = String::from_utf8_lossy(&st.stdout).into_owned();
    let mnt: PathBuf = text
        .lines()
        .find_map(|l| l.strip_prefix("mountpoint:"))
        .unwrap_or_else(|| panic!("no mountpoint line in {text:?}"))
        .trim()
        .into();
    assert!(mnt.starts_with("/dev/shm/wcfs"), "{}", mnt.display());

    let mut srv = Server::start_on(dir.path(), &db, mnt.clone(), false, &[], &[]);
    let st = wcfs(&["status", &zurl]);
    let out = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(st.status.success(), "status while serving: {out}");
    let pid = srv.child.as_ref().unwrap().id().to_string();
    assert!(
        out.contains(&pid),
        "status names the server pid {pid}: {out}"
    );
    assert!(
        out.contains(&tid.to_string()),
        "status shows head/at {tid}: {out}"
    );

    // a second server on the same zurl is refused, the first keeps serving
    let again = wcfs(&["serve", &zurl]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already mounted"));
    assert_eq!(
        std::fs::read_to_string(mnt.join(".wcfs/zurl")).unwrap(),
        zurl
    );

    let stop = wcfs(&["stop", &zurl]);
    assert!(
        stop.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    srv.wait_exit(Duration::from_secs(10));
    assert!(!mounted(&mnt), "mount left after stop");
    assert!(!mnt.exists(), "mountpoint directory left after stop");
    drop(srv);
}

/// Real Python ZODB commits (tests/py/committer.py: ZBlk0 and ZBlk1
/// blocks, holes, block 0 a sequence number) while the server follows the
/// database: every printed tid shows up in head/at, and whenever head/at
/// reads T before and after reading the whole file, head/ is exactly the
/// file at T as our zodb library loads it (itself checked against Python in
/// the zodb interop tests), and block 0 holds T's sequence number.
#[test]
fn python_commits_followed_exactly() {
    if on_zeo() {
        eprintln!("python_commits_followed_exactly: not run on zeo:// (Python commits to the Data.fs; zeo.rs has the same through ZEO)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let dbs = db.to_str().unwrap();
    py_common::run_py("committer.py", &[dbs, "--txns", "1", "--blksize", "65536"]);
    use zodb::Storage;
    let stor = zodb::fs1::FileStorage::open(&db).unwrap();
    let at0 = stor.last_tid().unwrap();
    let files = zodb::zbigfile::list(&stor, at0).unwrap();
    assert_eq!(files.len(), 1, "the committer's one file");
    let oid = files[0].oid;
    let srv = Server::start(dir.path(), &db);
    let path = srv.p(&format!("head/bigfile/{oid}"));

    let mut child = py_common::py_cmd(
        "committer.py",
        &[
            dbs,
            "--txns",
            "25",
            "--delay-ms",
            "20",
            "--blksize",
            "65536",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = 0;
    for (k, line) in std::io::BufRead::lines(out).enumerate() {
        let line = line.unwrap();
        if line == "done" {
            break;
        }
        let tid: Tid = line.parse().unwrap();
        // head/at reaches every committed tid (or passes it)
        let t0 = Instant::now();
        while srv.head_at() < tid {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "head/at stuck before {tid}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // a consistent read: head/at the same before and after
        let (t1, bytes, t2) = (srv.head_at(), std::fs::read(&path).unwrap(), srv.head_at());
        if t1 != t2 {
            continue;
        }
        stor.sync().unwrap();
        let f = zodb::zbigfile::ZBigFile::load(&stor, oid, t1).unwrap();
        let size = f.size(&stor, t1).unwrap();
        let mut want = Vec::with_capacity(size as usize);
        for b in 0..(size / f.blksize) as i64 {
            want.extend(f.load_blk(&stor, b, t1).unwrap().to_vec());
        }
        assert_eq!(bytes.len(), want.len(), "size of head/ @{t1}");
        // A commit being processed may already show some of its blocks
        // before head/at moves (README: its view is published before its
        // invalidations are done): a block that is not T's must be that
        // of a later committed state.
        let later = stor.last_tid().unwrap();
        let bs = f.blksize as usize;
        for (b, (got, w)) in bytes.chunks(bs).zip(want.chunks(bs)).enumerate() {
            if got == w {
                continue;
            }
            let ok = stor.iterate(Tid(t1.0 + 1), later).unwrap().any(|t| {
                let t = t.unwrap().tid;
                let g = zodb::zbigfile::ZBigFile::load(&stor, oid, t).unwrap();
                g.load_blk(&stor, b as i64, t).unwrap().to_vec() == got
            });
            assert!(
                ok,
                "head/ block {b} @{t1} is neither T's nor a later state's"
            );
        }
        if t1 == tid && bytes[..bs] == want[..bs] {
            // k-th printed tid of this run: seq = 1 (first run) + k + 1
            let seq = u64::from_be_bytes(bytes[..8].try_into().unwrap());
            assert_eq!(seq, k as u64 + 2, "block 0 @{tid}");
        }
        seen += 1;
    }
    assert!(child.wait().unwrap().success(), "committer failed");
    assert!(seen >= 5, "only {seen} consistent reads");
    srv.finish();
}

/// File epochs through the mount: the block size changes, then the blktab
/// is replaced by another tree. The file was read (and cached) before each;
/// after head/at shows the epoch, head/ is exactly the file as our zodb
/// library loads it at that tid, with the new size and st_blksize.
#[test]
fn epochs_invalidate_whole_file() {
    use zodb::btree::{self, Family, Shape};
    use zodb::zbigfile::{self, NewObject, ZBIGFILE};
    use zodb::Storage;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let b0 = pattern(1, 4096);
    let b2 = pattern(2, 3000);
    let (oid, _) = zw
        .create_file(
            "f",
            4096,
            &[
                (0, Some((ZBlkFormat::ZBlk0, &b0[..]))),
                (2, Some((ZBlkFormat::ZBlk1, &b2[..]))),
            ],
        )
        .unwrap();
    let srv = Server::start(dir.path(), &db);
    let path = srv.p(&format!("head/bigfile/{oid}"));
    let stor = zodb::fs1::FileStorage::open(&db).unwrap();
    // head/ never shrinks, not even at an epoch (a shorter file reads as
    // zeros up to the longest it was, rounded up to its blksize)
    let longest = std::cell::Cell::new(0u64);
    let check = |tid: Tid, what: &str| {
        srv.wait_head(tid);
        stor.sync().unwrap();
        let f = zodb::zbigfile::ZBigFile::load(&stor, oid, tid).unwrap();
        let size = f.size(&stor, tid).unwrap();
        let mut want = Vec::new();
        for b in 0..(size / f.blksize) as i64 {
            want.extend(f.load_blk(&stor, b, tid).unwrap().to_vec());
        }
        let size = size.max(longest.get().div_ceil(f.blksize) * f.blksize);
        longest.set(size);
        want.resize(size as usize, 0);
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.len(), size, "{what}: size");
        assert_eq!(md.blksize(), f.blksize, "{what}: st_blksize");
        let got = std::fs::read(&path).unwrap();
        assert!(got == want, "{what}: head/ differs from the file @{tid}");
    };
    let head0 = srv.head_at();
    check(head0, "initial");

    // blksize 4096 -> 8192, same blktab
    let blktab = zodb::zbigfile::ZBigFile::load(&stor, oid, head0)
        .unwrap()
        .blktab;
    let t1 = zw
        .commit_objects(
            "blksize",
            vec![NewObject {
                oid,
                class: ZBIGFILE,
                state: zbigfile::zbigfile_state(8192, blktab),
            }],
        )
        .unwrap();
    check(t1, "blksize changed");

    // blktab replaced by a new tree: block 1 only, a new ZBlk0
    let z = zw.new_oid();
    let t2root = zw.new_oid();
    let d1 = pattern(3, 8192);
    let mut objs = zbigfile::zblk_objects(z, ZBlkFormat::ZBlk0, &d1, &mut || zw.new_oid());
    let items = vec![(1, zbigfile::zblk_ref(z, ZBlkFormat::ZBlk0).to_value())];
    objs.extend(btree::build(
        Family::LO,
        &items,
        Shape::default(),
        t2root,
        &mut || zw.new_oid(),
    ));
    objs.push(NewObject {
        oid,
        class: ZBIGFILE,
        state: zbigfile::zbigfile_state(8192, t2root),
    });
    let t2 = zw.commit_objects("new blktab", objs).unwrap();
    check(t2, "blktab replaced");
    srv.finish();
}

/// The storage breaks under the server (garbage appended to Data.fs where
/// the next transaction would start): head/at stops advancing, the error
/// is logged, and data already served stays readable.
#[test]
fn broken_storage_keeps_serving_what_it_has() {
    if on_zeo() {
        eprintln!("broken_storage_keeps_serving_what_it_has: not run on zeo:// (it breaks the Data.fs under the storage)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let d = pattern(7, 4096);
    let (oid, _) = zw
        .create_file("f", 4096, &[(0, Some((ZBlkFormat::ZBlk0, &d[..])))])
        .unwrap();
    drop(zw);
    let srv = Server::start(dir.path(), &db);
    let path = srv.p(&format!("head/bigfile/{oid}"));
    let head = srv.head_at();
    assert_eq!(std::fs::read(&path).unwrap(), d);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&db).unwrap();
        // a transaction header with an impossible length and status
        f.write_all(&[0xff; 64]).unwrap();
        f.sync_all().unwrap();
    }
    let t0 = Instant::now();
    while !srv.log_text().contains("ERROR") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no error logged for the broken storage:\n{}",
            srv.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(srv.head_at(), head, "head/at moved past a broken storage");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        d,
        "served data still readable"
    );
    assert_eq!(
        std::fs::read_to_string(srv.p(".wcfs/zurl")).unwrap(),
        db.to_str().unwrap()
    );
    srv.finish();
}

/// `wcfs stop` on the real server in the states a user meets: a client
/// holding a file open (and mapped), and a server killed with kill -9.
/// Each ends with no mount entry, no mountpoint directory, and a new
/// `serve` on the same zurl working.
#[test]
fn stop_real_server_in_every_state() {
    if on_zeo() {
        eprintln!("stop_real_server_in_every_state: not run on zeo:// (about the server process, not the storage)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zw = open_writer(&db);
    let d = pattern(9, 8192);
    let (oid, _) = zw
        .create_file("f", 8192, &[(0, Some((ZBlkFormat::ZBlk0, &d[..])))])
        .unwrap();
    drop(zw);
    let zurl = db.to_str().unwrap().to_owned();
    let stop = |mnt: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_wcfs"))
            .args(["stop", &zurl, "--mountpoint"])
            .arg(mnt)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wcfs stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!mounted(mnt), "mount entry left after stop");
        assert!(!mnt.exists(), "mountpoint left after stop");
    };

    // 1. a client holds the file open and mapped
    let mut srv = Server::start(dir.path(), &db);
    let f = File::open(srv.p(&format!("head/bigfile/{oid}"))).unwrap();
    // SAFETY: read-only mapping of a file that no one truncates while mapped
    let m = unsafe { Mmap::map(&f) }.unwrap();
    assert_eq!(&m[..8192], &d[..]);
    stop(&srv.mnt.clone());
    srv.wait_exit(Duration::from_secs(10));
    drop((m, f));
    drop(srv);

    // 2. the server was killed with kill -9
    let mut srv = Server::start(dir.path(), &db);
    srv.signal(nix::sys::signal::Signal::SIGKILL);
    srv.wait_exit(Duration::from_secs(10));
    stop(&srv.mnt.clone());
    drop(srv);

    // and a new server on the same zurl and mountpoint works
    let srv = Server::start(dir.path(), &db);
    assert_eq!(
        std::fs::read(srv.p(&format!("head/bigfile/{oid}"))).unwrap(),
        d
    );
    srv.finish();
}

//! `wcfs serve zeo://...`: the mount on a database behind a real ZEO server
//! (Python ZEO from the test venv, `tests/py/zeo_server.py serve`, on a
//! loopback port of a temp Data.fs), with commits by Python ZODB clients
//! through that server.
//!
//! The truth is the Data.fs itself, read by our fs1 driver (checked against
//! Python ZODB in the zodb interop tests), and the models the writers keep.
//!
//! - `zeo_head_and_revs_follow_python_commits`: files Python created through
//!   ZEO read the same through head/ as fs1 loads them; Python commits
//!   through the server move head/at through every tid (the
//!   `commits` counter counts each once), consistent reads of head/ equal
//!   the file at head/at, `@<rev>/` keeps the old data.
//! - `zeo_isolation_through_client`: a Conn of the client crate at an old
//!   state keeps seeing it after our ZWriter commits through ZEO, while a
//!   Conn at head sees the new data.
//! - `zeo_server_restart`: ZEO stops under the mount: head/at stays, reads
//!   of data never read fail with EIO within the bound (`WCFS_ZEO_WAIT`),
//!   never with other bytes; Python commits while it is down (to the
//!   Data.fs) and after it is back (through it): all are processed, each
//!   once, before head/at reaches the last, and head/ then is that state.
//!
//! Each test has the harness' time limit (watchdog: abort, unmount, kill)
//! and guards that unmount and stop the ZEO server on drop.

#[path = "../../zodb/tests/py_common/mod.rs"]
mod py_common;
#[path = "support/server.rs"]
#[allow(dead_code)]
mod server;
#[path = "support/zeo.rs"]
#[allow(dead_code)]
mod zeo_support;
use zeo_support::Zeo;

use server::{read_at, Server};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use zodb::fs1::FileStorage;
use zodb::zbigfile::{ZBigFile, ZBlkFormat};
use zodb::zwrite::ZWriter;
use zodb::{Oid, Storage, Tid};

/// `committer.py <target> --txns n` (target: a Data.fs or a zeo:// zurl):
/// the tids it committed.
fn python_commits(target: &str, n: usize, blksize: u64) -> Vec<Tid> {
    let out = py_common::run_py(
        "committer.py",
        &[
            target,
            "--txns",
            &n.to_string(),
            "--blksize",
            &blksize.to_string(),
        ],
    );
    let tids: Vec<Tid> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.len() == 16)
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(tids.len(), n);
    tids
}

/// The whole file `oid` as of `at`, as our fs1 driver loads it.
fn file_at(stor: &FileStorage, oid: Oid, at: Tid) -> Vec<u8> {
    let f = ZBigFile::load(stor, oid, at).unwrap();
    let size = f.size(stor, at).unwrap();
    let mut v = Vec::with_capacity(size as usize);
    for b in 0..(size / f.blksize) as i64 {
        v.extend(f.load_blk(stor, b, at).unwrap().to_vec());
    }
    v
}

/// The committer's one file.
fn committer_file(db: &Path) -> (FileStorage, Oid) {
    let stor = FileStorage::open(db).unwrap();
    let at = stor.last_tid().unwrap();
    let files = zodb::zbigfile::list(&stor, at).unwrap();
    assert_eq!(files.len(), 1, "the committer's one file");
    (stor, files[0].oid)
}

const BS: u64 = 64 << 10;

#[test]
fn zeo_head_and_revs_follow_python_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let zeo = Zeo::start(&db, "127.0.0.1:0");
    let at0 = *python_commits(&zeo.zurl(), 2, BS).last().unwrap();
    let (stor, oid) = committer_file(&db);
    let srv = Server::start(dir.path(), Path::new(&zeo.zurl()));
    assert_eq!(srv.head_at(), at0);
    let head = srv.head_file(oid);
    let before = std::fs::read(&head).unwrap();
    assert!(before == file_at(&stor, oid, at0), "head/ @{at0}");
    let commits0 = srv.stat("commits");

    // Python commits through the server, while we read
    let mut child = py_common::py_cmd(
        "committer.py",
        &[
            &zeo.zurl(),
            "--txns",
            "12",
            "--delay-ms",
            "20",
            "--blksize",
            &BS.to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut tids = Vec::new();
    let mut consistent = 0;
    for line in out.lines() {
        let line = line.unwrap();
        if line == "done" {
            break;
        }
        let tid: Tid = line.parse().unwrap();
        tids.push(tid);
        srv.wait_head(tid);
        let (t1, bytes, t2) = (srv.head_at(), std::fs::read(&head).unwrap(), srv.head_at());
        if t1 == t2 {
            stor.sync().unwrap();
            assert!(
                bytes == file_at(&stor, oid, t1),
                "head/ differs from the file @{t1}"
            );
            consistent += 1;
        }
    }
    assert!(child.wait().unwrap().success(), "committer failed");
    assert_eq!(tids.len(), 12);
    assert!(consistent >= 3, "only {consistent} consistent reads");
    let last = *tids.last().unwrap();
    srv.wait_head(last);
    assert_eq!(srv.head_at(), last);
    stor.sync().unwrap();
    assert!(std::fs::read(&head).unwrap() == file_at(&stor, oid, last));
    // every transaction was processed once
    assert_eq!(srv.stat("commits"), commits0 + tids.len() as u64);

    // @rev/ views: the old states, unchanged
    for at in [at0, tids[5]] {
        let rev = srv.p(&format!("@{at}/bigfile/{oid}"));
        assert!(
            std::fs::read(&rev).unwrap() == file_at(&stor, oid, at),
            "@{at}"
        );
    }
    assert!(std::fs::read(srv.p(&format!("@{at0}/bigfile/{oid}"))).unwrap() == before);
    srv.finish();
}

#[test]
fn zeo_isolation_through_client() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let zeo = Zeo::start(&db, "127.0.0.1:0");
    let mut zw = ZWriter::open_zeo(&zeo.addr, "1").unwrap();
    let blk = |tag: u8, b: i64| vec![tag.wrapping_add(b as u8) | 1; BS as usize];
    let mut hist: BTreeMap<Tid, BTreeMap<i64, Vec<u8>>> = BTreeMap::new();
    let mut m: BTreeMap<i64, Vec<u8>> = (0..4).map(|b| (b, blk(10, b))).collect();
    let ch: Vec<_> = m
        .iter()
        .map(|(b, d)| (*b, Some((ZBlkFormat::ZBlk0, &d[..]))))
        .collect();
    let (oid, at0) = zw.create_file("f", BS, &ch).unwrap();
    hist.insert(at0, m.clone());
    let srv = Server::start(dir.path(), Path::new(&zeo.zurl()));
    srv.wait_head(at0);
    let want = |at: Tid, h: &BTreeMap<Tid, BTreeMap<i64, Vec<u8>>>| {
        let m = h.range(..=at).next_back().unwrap().1;
        let mut v = vec![0u8; 4 * BS as usize];
        for (b, d) in m {
            v[(*b as u64 * BS) as usize..][..d.len()].copy_from_slice(d);
        }
        v
    };

    let wc = client::WCFS::open(srv.p("")).unwrap();
    let c0 = wc.connect(at0).unwrap();
    let f0 = c0.open(oid).unwrap();
    let m0 = f0.mmap(0, 4).unwrap();
    assert!(m0.to_vec().unwrap() == want(at0, &hist), "c0 @{at0}");

    // commits through ZEO change blocks 1 and 3, then 3 again
    for (tag, blks) in [(20u8, &[1i64, 3][..]), (30, &[3])] {
        let mut ch = Vec::new();
        for b in blks {
            m.insert(*b, blk(tag, *b));
        }
        for b in blks {
            ch.push((*b, Some((ZBlkFormat::ZBlk1, &m[b][..]))));
        }
        let t = zw.update_file(oid, &ch).unwrap();
        hist.insert(t, m.clone());
    }
    let (at1, at2) = {
        let mut k = hist.keys().skip(1);
        (*k.next().unwrap(), *k.next().unwrap())
    };
    srv.wait_head(at2);
    let c2 = wc.connect(at2).unwrap();
    let f2 = c2.open(oid).unwrap();
    let m2 = f2.mmap(0, 4).unwrap();
    assert!(m2.to_vec().unwrap() == want(at2, &hist), "c2 @{at2}");
    // c0 still sees at0 (its changed blocks pinned to their old revision)
    assert!(m0.to_vec().unwrap() == want(at0, &hist), "c0 after commits");
    let c1 = wc.connect(at1).unwrap();
    let f1 = c1.open(oid).unwrap();
    let m1 = f1.mmap(0, 4).unwrap();
    assert!(m1.to_vec().unwrap() == want(at1, &hist), "c1 @{at1}");
    assert!(srv.stat("pin") > 0);
    // head/ is the latest state
    assert!(std::fs::read(srv.head_file(oid)).unwrap() == want(at2, &hist));
    drop((m0, m1, m2, f0, f1, f2, c0, c1, c2, wc));
    srv.wait_stat("WatchLink", 0);
    drop(zw);
    srv.finish();
}

#[test]
fn zeo_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mut zeo = Zeo::start(&db, "127.0.0.1:0");
    let addr = zeo.addr.clone();
    let zurl = zeo.zurl();
    let at0 = *python_commits(&zurl, 3, BS).last().unwrap();
    let (stor, oid) = committer_file(&db);
    let srv = Server::start_with(dir.path(), Path::new(&zurl), &[], &[("WCFS_ZEO_WAIT", "2")]);
    assert_eq!(srv.head_at(), at0);
    let head = srv.head_file(oid);
    let f = std::fs::File::open(&head).unwrap();
    // no readahead: the blocks not asked for stay unread (not cached)
    nix::fcntl::posix_fadvise(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
    )
    .unwrap();
    let size = f.metadata().unwrap().len();
    assert!(size >= 3 * BS);
    // block 0 read (cached); the others never
    assert!(read_at(&f, 0, BS as usize) == file_at(&stor, oid, at0)[..BS as usize]);
    let commits0 = srv.stat("commits");

    zeo.stop();
    // reads that need the server: EIO within the bound, never other data
    let t0 = Instant::now();
    let mut buf = vec![0u8; BS as usize];
    let e = std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, size - BS).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_eio()), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(30), "read hung");
    let rev = srv.p(&format!("@{at0}/bigfile/{oid}"));
    match std::fs::read(&rev) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc_eio()), "{e}"),
        Ok(b) => panic!("@{at0} read {} bytes with the server down", b.len()),
    }
    assert_eq!(srv.head_at(), at0);
    // Python commits while the server is down (nobody holds the Data.fs)
    let down = python_commits(db.to_str().unwrap(), 3, BS);
    assert_eq!(
        srv.head_at(),
        at0,
        "head/at moved while the server was down"
    );

    // back on the same address; Python commits through it at once
    let zeo = Zeo::start(&db, &addr);
    assert_eq!(zeo.addr, addr);
    let after = python_commits(&zurl, 2, BS);
    let last = *after.last().unwrap();
    // every head/at shown on the way is a committed state, in order
    let mut shown = vec![srv.head_at()];
    let t0 = Instant::now();
    while *shown.last().unwrap() < last {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "head/at stuck at {shown:?}"
        );
        let h = srv.head_at();
        if h != *shown.last().unwrap() {
            shown.push(h);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(srv.head_at(), last);
    // every transaction since at0 processed, each once
    stor.sync().unwrap();
    let n = stor.iterate(Tid(at0.0 + 1), last).unwrap().count() as u64;
    assert_eq!(n, (down.len() + after.len()) as u64);
    let all: Vec<Tid> = down.iter().chain(&after).copied().collect();
    assert!(shown.windows(2).all(|w| w[0] < w[1]), "{shown:?}");
    assert!(
        shown[1..].iter().all(|t| all.contains(t)),
        "{shown:?} vs {all:?}"
    );
    assert_eq!(srv.stat("commits"), commits0 + n);
    let want = file_at(&stor, oid, last);
    assert!(
        std::fs::read(&head).unwrap() == want,
        "head/ after the restart"
    );
    // the block read before the outage was invalidated too (it changed)
    assert!(read_at(&f, 0, BS as usize) == want[..BS as usize]);
    let log = srv.log_text();
    assert!(log.contains("reconnecting"), "no reconnect in the log");
    srv.finish();
    drop(zeo);
}

fn libc_eio() -> i32 {
    nix::errno::Errno::EIO as i32
}

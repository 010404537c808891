//! The client library (`client` crate) against a real `wcfs serve`: each
//! Conn's mappings must show the files exactly as of its own `at` while
//! other Conns and commits move on, and unchanged blocks must be the very
//! same page-cache pages for all views (checked by physical frame number
//! through /proc/self/pagemap, which root can read).
//!
//! The truth every read is compared with is a model of the file at every
//! committed state (block -> bytes), kept by the writer of this test.
//! Server harness (watchdog, unmount guard): `support/watch_support.rs`.

#[path = "support/server.rs"]
#[allow(dead_code)]
mod server;
#[path = "support/watch_support.rs"]
#[allow(dead_code)]
mod support;

use client::{Conn, Error, Mapping, WCFS};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use support::{pattern, Server};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;
use zodb::{Oid, Tid};

const BS: u64 = 64 << 10;

/// The file at one state: block -> bytes (absent = hole).
type Model = BTreeMap<i64, Vec<u8>>;

/// Every committed state.
#[derive(Default, Clone)]
struct History(BTreeMap<Tid, Model>);

impl History {
    /// The whole file as of `at`, `nblk` blocks long (zeros past its end).
    fn bytes(&self, at: Tid, nblk: i64) -> Vec<u8> {
        let m = self.0.range(..=at).next_back().expect("a state <= at").1;
        let mut v = vec![0u8; (nblk as u64 * BS) as usize];
        for (&b, d) in m.range(..nblk) {
            let o = (b as u64 * BS) as usize;
            v[o..o + d.len()].copy_from_slice(d);
        }
        v
    }
}

fn blk_data(tag: u64, blk: i64) -> Vec<u8> {
    // shorter than a block now and then: the rest reads as zeros
    let n = if (tag + blk as u64) % 3 == 0 {
        (BS / 2) as usize + 17
    } else {
        BS as usize
    };
    pattern(tag * 1000 + blk as u64 + 1, n)
}

struct Db {
    zw: ZWriter,
    oid: Oid,
    hist: History,
    cur: Model,
}

impl Db {
    fn create(dir: &Path, blks: &[i64]) -> Db {
        let mut zw = ZWriter::open(dir.join("Data.fs")).unwrap();
        let cur: Model = blks.iter().map(|&b| (b, blk_data(0, b))).collect();
        let ch: Vec<_> = cur
            .iter()
            .map(|(&b, d)| (b, Some((ZBlkFormat::ZBlk0, d.as_slice()))))
            .collect();
        let (oid, at) = zw.create_file("f", BS, &ch).unwrap();
        let mut hist = History::default();
        hist.0.insert(at, cur.clone());
        Db { zw, oid, hist, cur }
    }

    fn head(&self) -> Tid {
        *self.hist.0.keys().next_back().unwrap()
    }

    /// Commit: `set` blocks get new data (tagged `tag`), `del` become holes.
    fn commit(&mut self, tag: u64, set: &[i64], del: &[i64]) -> Tid {
        let new: Vec<(i64, Vec<u8>)> = set.iter().map(|&b| (b, blk_data(tag, b))).collect();
        let mut ch: Vec<_> = new
            .iter()
            .map(|(b, d)| (*b, Some((ZBlkFormat::ZBlk1, d.as_slice()))))
            .collect();
        ch.extend(del.iter().map(|&b| (b, None)));
        let t = self.zw.update_file(self.oid, &ch).unwrap();
        for (b, d) in new {
            self.cur.insert(b, d);
        }
        for b in del {
            self.cur.remove(b);
        }
        self.hist.0.insert(t, self.cur.clone());
        t
    }
}

fn check(m: &Mapping, hist: &History, at: Tid, what: &str) {
    let got = m.to_vec().unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = hist.bytes(at, m.blk_len());
    if got != want {
        let bad: Vec<i64> = (0..m.blk_len())
            .filter(|&b| {
                let r = (b as u64 * BS) as usize..((b + 1) as u64 * BS) as usize;
                got[r.clone()] != want[r]
            })
            .collect();
        panic!("{what}: mapping as of @{at} differs from the model in blocks {bad:?}");
    }
}

/// The physical frame of the page at `addr` (touched first), from
/// /proc/self/pagemap.
fn pfn(addr: *const u8) -> u64 {
    use std::os::unix::fs::FileExt;
    // SAFETY: the caller passes an address inside a live, readable mapping.
    let _ = unsafe { std::ptr::read_volatile(addr) };
    let f = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, (addr as u64 / 4096) * 8).unwrap();
    let e = u64::from_le_bytes(e);
    assert!(
        e & (1 << 63) != 0,
        "page at {addr:p} not present after touching it"
    );
    let pfn = e & ((1 << 55) - 1);
    assert!(pfn != 0, "pagemap hides PFNs: not root?");
    pfn
}

fn blk_ptr(m: &Mapping, blk: i64) -> *const u8 {
    m.as_ptr().wrapping_add((blk as u64 * BS) as usize)
}

/// Three Conns at three states of one file: each sees its own state;
/// blocks unchanged between two views are the same physical pages, blocks
/// changed are not.
#[test]
fn views_at_different_states_share_unchanged_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(dir.path(), &[0, 1, 2, 3, 4, 5]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = db.head();
    let wc = WCFS::open(srv.p("")).unwrap();
    let c0 = wc.connect(at0).unwrap();
    let f0 = c0.open(db.oid).unwrap();
    assert_eq!((f0.blksize(), f0.size()), (BS, 6 * BS));
    let m0 = f0.mmap(0, 6).unwrap();
    check(&m0, &db.hist, at0, "c0 before any commit");

    let at1 = db.commit(1, &[1, 3], &[]);
    let at2 = db.commit(2, &[3, 4], &[]);
    srv.wait_head(at2);
    let c1 = wc.connect(at1).unwrap();
    let c2 = wc.connect(at2).unwrap();
    let f1 = c1.open(db.oid).unwrap();
    let f2 = c2.open(db.oid).unwrap();
    let m1 = f1.mmap(0, 6).unwrap();
    let m2 = f2.mmap(0, 6).unwrap();
    // in every order: the newest first, so that head pages are cached
    // when the older views fault on them
    check(&m2, &db.hist, at2, "c2");
    check(&m1, &db.hist, at1, "c1");
    check(&m0, &db.hist, at0, "c0 after two commits");

    let p = |m: &Mapping, b| pfn(blk_ptr(m, b));
    for b in [0, 2, 5] {
        assert_eq!(
            p(&m0, b),
            p(&m2, b),
            "blk {b} unchanged: c0 and c2 share the page"
        );
        assert_eq!(
            p(&m1, b),
            p(&m2, b),
            "blk {b} unchanged: c1 and c2 share the page"
        );
    }
    assert_eq!(p(&m1, 1), p(&m2, 1), "blk 1 unchanged after at1");
    assert_ne!(p(&m0, 1), p(&m2, 1), "blk 1 changed at at1");
    for b in [3, 4] {
        assert_ne!(p(&m1, b), p(&m2, b), "blk {b} changed at at2");
        assert_ne!(p(&m0, b), p(&m2, b), "blk {b} changed after at0");
    }
    assert_eq!(p(&m0, 4), p(&m1, 4), "blk 4 is the same @rev for c0 and c1");
    assert!(srv.stat("pin") > 0);
    assert!(srv.stat("PinnedBlk") > 0);

    // moving forward: c0 to at2 sees head everywhere, sharing all pages
    c0.resync(at2).unwrap();
    assert_eq!(c0.at(), at2);
    check(&m0, &db.hist, at2, "c0 resynced to at2");
    for b in 0..6 {
        assert_eq!(p(&m0, b), p(&m2, b), "blk {b} after resync");
    }
    // going back is refused and takes the Conn down
    assert!(c1.resync(at0).is_err());
    drop((m0, m1, m2, f0, f1, f2, c0, c1, c2));
    srv.wait_stat("WatchLink", 0);
    srv.finish();
}

/// Growth (zeros past the view's size, never SIGBUS), holes that fill and
/// blocks that become holes, resync forward step by step.
#[test]
fn growth_holes_and_resync() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(dir.path(), &[0, 2]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = db.head();
    let wc = WCFS::open(srv.p("")).unwrap();
    let c = wc.connect(at0).unwrap();
    let f = c.open(db.oid).unwrap();
    assert_eq!(f.size(), 3 * BS);
    // map past the end: blocks 3..5 read as zeros
    let m = f.mmap(0, 6).unwrap();
    check(&m, &db.hist, at0, "at0");

    // at1: the hole 1 gets data, 2 becomes a hole, the file grows to 5
    let at1 = db.commit(1, &[1, 4], &[2]);
    srv.wait_head(at1);
    let head = std::fs::read(srv.head_file(db.oid)).unwrap();
    assert_eq!(head, db.hist.bytes(at1, 5), "head/ shows at1");
    check(
        &m,
        &db.hist,
        at0,
        "at0 view after at1 was read through head/",
    );

    let at2 = db.commit(2, &[0, 5], &[]);
    srv.wait_head(at2);
    check(&m, &db.hist, at0, "at0 view after at2");
    c.resync(at1).unwrap();
    // the size is head's (6 blocks at at2): block 5, past at1's end, reads
    // as zeros through a pin
    assert_eq!(f.size(), 6 * BS);
    check(&m, &db.hist, at1, "resynced to at1");
    c.resync(at2).unwrap();
    check(&m, &db.hist, at2, "resynced to at2");
    // a second mapping of part of the file shows the same
    let m2 = f.mmap(4, 2).unwrap();
    let want = db.hist.bytes(at2, 6);
    assert_eq!(m2.to_vec().unwrap(), want[(4 * BS) as usize..]);
    drop((m, m2, f, c));
    srv.finish();
}

/// A commit deletes the file's last blocks while a view from before maps
/// them from head/ (once read, and never read): the view still reads them
/// (pins to their revision, no SIGBUS past a shrunk end: head/ keeps its
/// size, the deleted tail reads as zeros there), and head/ shows zeros.
#[test]
fn a_deleted_tail_stays_readable_in_older_views() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(dir.path(), &[0, 1, 2, 3, 4, 5]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = db.head();
    let wc = WCFS::open(srv.p("")).unwrap();
    let c = wc.connect(at0).unwrap();
    let f = c.open(db.oid).unwrap();
    assert_eq!(f.size(), 6 * BS);
    let m = f.mmap(0, 6).unwrap();
    // block 4 read through head/ before the delete, block 5 never
    let mut buf = vec![0u8; BS as usize];
    m.read_at((4 * BS) as usize, &mut buf).unwrap();
    let at1 = db.commit(1, &[0], &[3, 4, 5]);
    srv.wait_head(at1);
    assert_eq!(
        std::fs::metadata(srv.head_file(db.oid)).unwrap().len(),
        6 * BS,
        "head/ keeps its size"
    );
    let head = std::fs::read(srv.head_file(db.oid)).unwrap();
    assert_eq!(
        head,
        db.hist.bytes(at1, 6),
        "head/ shows at1: the tail as zeros"
    );
    check(&m, &db.hist, at0, "the at0 view after its tail was deleted");
    c.resync(at1).unwrap();
    check(&m, &db.hist, at1, "resynced to at1");
    drop((m, f, c));
    srv.finish();
}

/// Readers in threads, each with its own Conn at its own recent state,
/// check every byte of the whole file against the model after each
/// resync, while a writer commits.
#[test]
fn concurrent_views_under_commits() {
    let dir = tempfile::tempdir().unwrap();
    const NBLK: i64 = 8;
    let mut db = Db::create(dir.path(), &(0..NBLK).collect::<Vec<_>>());
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let hist = Arc::new(Mutex::new(db.hist.clone()));
    let wc = WCFS::open(srv.p("")).unwrap();
    let oid = db.oid;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3u64)
        .map(|r| {
            let (hist, wc, stop) = (hist.clone(), wc.clone(), stop.clone());
            std::thread::spawn(move || {
                let at0 = *hist.lock().unwrap().0.keys().next_back().unwrap();
                let c: Conn = wc.connect(at0).unwrap();
                let f = c.open(oid).unwrap();
                let m = f.mmap(0, NBLK).unwrap();
                let mut x = r + 1;
                let mut checks = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) || checks < 3 {
                    let h = hist.lock().unwrap().clone();
                    // one of the last few states, not behind the current view
                    let ats: Vec<Tid> = h.0.keys().copied().filter(|&t| t >= c.at()).collect();
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let back = ((x >> 33) % 3) as usize;
                    let at = ats[ats.len().saturating_sub(1 + back)];
                    c.resync(at).unwrap();
                    check(&m, &h, at, &format!("reader {r} at {at}"));
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let mut x = 7u64;
    for tag in 1..=30u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let a = ((x >> 33) % NBLK as u64) as i64;
        let b = (a + 1 + ((x >> 40) % (NBLK as u64 - 1)) as i64) % NBLK;
        let t = db.commit(tag, &[a, b], &[]);
        srv.wait_head(t);
        hist.lock().unwrap().0.insert(t, db.cur.clone());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.join().expect("reader") >= 3);
    }
    srv.finish();
}

/// After fork the child's objects refuse to work (they would disturb the
/// parent's link); the parent keeps its view and its link. The body runs
/// in a re-executed copy of this test binary, so that the fork happens in
/// a process with no other test threads.
#[test]
fn fork_detaches_the_child() {
    if std::env::var_os("WCFS_FORK_TEST").is_some() {
        return fork_body();
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "fork_detaches_the_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("WCFS_FORK_TEST", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

fn fork_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(dir.path(), &[0, 1, 2]);
    let srv = Server::start_opts(dir.path(), &dir.path().join("Data.fs"), &[]);
    let at0 = db.head();
    let wc = WCFS::open(srv.p("")).unwrap();
    let c = wc.connect(at0).unwrap();
    let f = c.open(db.oid).unwrap();
    let m = f.mmap(0, 3).unwrap();
    check(&m, &db.hist, at0, "before fork");
    let pins0 = srv.stat("pin");

    // SAFETY: the child only calls read_at/mmap (no locks taken on the
    // error paths they return through), then _exit.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let mut b = [0u8; 8];
            let code = match (m.read_at(0, &mut b), f.mmap(0, 1)) {
                (Err(Error::Forked), Err(Error::Forked)) => 0,
                _ => 3,
            };
            // SAFETY: _exit ends the child without running destructors or
            // atexit handlers (which would talk to the parent's server).
            unsafe { libc_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0), "child");
        }
    }
    // the parent's link is intact: a commit, a read through head/ that
    // pins this Conn, resync
    let at1 = db.commit(1, &[0, 2], &[]);
    srv.wait_head(at1);
    assert_eq!(
        std::fs::read(srv.head_file(db.oid)).unwrap(),
        db.hist.bytes(at1, 3)
    );
    check(&m, &db.hist, at0, "parent after the child exited");
    assert!(srv.stat("pin") > pins0, "the parent was pinned");
    c.resync(at1).unwrap();
    check(&m, &db.hist, at1, "parent resynced");
    drop((m, f, c));
    srv.finish();
}

unsafe fn libc_exit(code: i32) -> ! {
    extern "C" {
        fn _exit(code: i32) -> !;
    }
    // SAFETY: see the caller.
    unsafe { _exit(code) }
}

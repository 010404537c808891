//! Tests of the filesystem without a mount, through the server library
//! (`wcfs::serve`, public with the `testing` feature this package's tests
//! enable): reads and commits, the isolation protocol driven through
//! `watch_open/read/write` (pins acked by a thread per link), the server's
//! pin decisions against a brute-force model, and block loads.

#![allow(unused_imports)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wcfs::serve::errno::*;
use wcfs::serve::fs::*;
use wcfs::serve::head::*;
use wcfs::serve::isolation::*;
use wcfs::serve::link::*;
use wcfs::serve::nodes::*;
use wcfs::serve::pin::*;
use wcfs::serve::read::*;
use wcfs::serve::rev::*;
use zodb::btree::{self, Family};
use zodb::zbigfile::ZBigFile;
use zodb::{Oid, Storage, Tid};

use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;

fn read(fs: &Wcfs, ino: u64, off: u64, len: u32) -> Result<Vec<u8>, String> {
    fs.read_with(ino, off, len, |r| {
        r.map(|b| b.to_vec()).map_err(|e| e.to_string())
    })
}

/// The filesystem without a mount: lookups, reads across blocks and
/// holes, a commit's invalidations and the new head data.
#[test]
fn without_mount() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let mut zw = ZWriter::open(&path).unwrap();
    let (foid, at0) = zw
        .create_file(
            "f",
            8,
            &[
                (0, Some((ZBlkFormat::ZBlk0, b"abcdefgh"))),
                (2, Some((ZBlkFormat::ZBlk1, b"xyz"))),
            ],
        )
        .unwrap();
    let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
    let fs = Wcfs::new(path.display().to_string(), stor.clone(), 30.0).unwrap();
    assert_eq!(fs.head_at(), at0);
    assert!(matches!(fs.lookup(ROOT, "x"), Err(FsError::Inval(_))));
    assert!(matches!(
        fs.lookup(HEAD_BIGFILE, "zz"),
        Err(FsError::Inval(_))
    ));
    assert!(matches!(
        fs.lookup(HEAD_BIGFILE, &Oid(0).to_string()),
        Err(FsError::Inval(_))
    ));
    let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
    assert_eq!((a.size, a.blksize), (24, 8));
    // never short: past the end a head/ file reads as zeros (a short READ
    // would make the kernel cut the inode's size)
    let mut want = b"abcdefgh\0\0\0\0\0\0\0\0xyz\0\0\0\0\0".to_vec();
    want.resize(100, 0);
    assert_eq!(read(&fs, a.ino, 0, 100).unwrap(), want);
    assert_eq!(read(&fs, a.ino, 6, 4).unwrap(), b"gh\0\0");
    assert_eq!(read(&fs, a.ino, 24, 4).unwrap(), b"\0\0\0\0");
    let at1 = zw
        .update_file(
            foid,
            &[
                (0, Some((ZBlkFormat::ZBlk0, b"ABC"))),
                (3, Some((ZBlkFormat::ZBlk0, b"q"))),
            ],
        )
        .unwrap();
    stor.sync().unwrap();
    let txn = stor.iterate(at1, at1).unwrap().next().unwrap().unwrap();
    let inval = fs.handle_commit(at1, &txn.oids).unwrap().inval;
    assert!(
        inval.contains(&Inval {
            ino: a.ino,
            off: 0,
            len: 8,
            keep: None,
        }),
        "{inval:?}"
    );
    assert!(
        inval.contains(&Inval {
            ino: a.ino,
            off: 24,
            len: 0,
            keep: None,
        }),
        "{inval:?}"
    );
    assert_eq!(fs.head_at(), at0, "published only after the invalidations");
    fs.publish(at1);
    assert_eq!(fs.getattr(a.ino).unwrap().size, 32);
    assert_eq!(read(&fs, a.ino, 0, 4).unwrap(), b"ABC\0");
    assert_eq!(read(&fs, a.ino, 24, 8).unwrap(), b"q\0\0\0\0\0\0\0");
    // @at0 still shows the old data
    let r = fs.lookup(ROOT, &format!("@{at0}")).unwrap();
    let rb = fs.lookup(r.ino, "bigfile").unwrap();
    let rf = fs.lookup(rb.ino, &foid.to_string()).unwrap();
    assert_eq!(rf.size, 24);
    assert_eq!(read(&fs, rf.ino, 0, 8).unwrap(), b"abcdefgh");
    // a future @tid does not exist yet
    assert!(matches!(
        fs.lookup(ROOT, &format!("@{}", Tid(at1.0 + 1))),
        Err(FsError::NoEnt)
    ));
}

/// The isolation protocol on the filesystem without a mount: watch links
/// driven through `watch_open/read/write`, pins acked by a thread per
/// link, commits through `handle_commit`.
mod watch_tests {
    use super::*;
    use std::sync::mpsc;
    use zodb::zbigfile::ZBlkFormat;
    use zodb::zwrite::ZWriter;

    /// One link as a test client: a thread reads its lines, acks every pin
    /// (when `auto_ack`) and passes all lines on.
    pub(super) struct TLink {
        fs: Arc<Wcfs>,
        pub(super) fh: u64,
        rx: mpsc::Receiver<String>,
    }

    impl TLink {
        pub(super) fn open(fs: &Arc<Wcfs>, auto_ack: bool) -> TLink {
            let fh = fs.watch_open(std::process::id()).unwrap();
            let (tx, rx) = mpsc::channel();
            let f2 = fs.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    let (btx, brx) = mpsc::channel();
                    f2.watch_read(
                        fh,
                        4096,
                        std::process::id(),
                        Box::new(move |r| {
                            let _ = btx.send(r.map(|b| b.to_vec()));
                        }),
                    );
                    let Ok(Ok(b)) = brx.recv() else { return };
                    if b.is_empty() {
                        let _ = tx.send("EOF".to_owned());
                        return;
                    }
                    buf.extend(b);
                    while let Some(nl) = buf.iter().position(|&c| c == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let line = String::from_utf8(line).unwrap().trim_end().to_owned();
                        // passed on before the ack, so that a READ the ack
                        // releases finds the pin already recorded
                        let ack = (auto_ack && line.contains(" pin "))
                            .then(|| format!("{} ack\n", line.split(' ').next().unwrap()));
                        if tx.send(line).is_err() {
                            return;
                        }
                        if let Some(a) = ack {
                            f2.watch_write(fh, a.as_bytes()).unwrap();
                        }
                    }
                }
            });
            TLink {
                fs: fs.clone(),
                fh,
                rx,
            }
        }

        pub(super) fn send(&self, line: &str) {
            self.fs
                .watch_write(self.fh, format!("{line}\n").as_bytes())
                .unwrap();
        }

        pub(super) fn line(&self) -> String {
            self.rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a line from the server within 10 s")
        }

        /// Send request `line` on `stream` and collect the pins (blk ->
        /// "@rev") that come before the reply; returns (pins, reply).
        pub(super) fn request(&self, stream: u64, line: &str) -> (BTreeMap<i64, String>, String) {
            self.send(&format!("{stream} {line}"));
            let mut pins = BTreeMap::new();
            loop {
                let l = self.line();
                let (s, msg) = l.split_once(' ').unwrap();
                if s == stream.to_string() {
                    return (pins, msg.to_owned());
                }
                let p = wire::parse_pin(msg).unwrap_or_else(|e| panic!("{l}: {e}"));
                let rev = p.rev.map_or("@head".to_owned(), |r| format!("@{r}"));
                assert!(pins.insert(p.blk, rev).is_none(), "pinned twice: {l}");
            }
        }

        pub(super) fn pins_now(&self) -> BTreeMap<i64, String> {
            let mut pins = BTreeMap::new();
            while let Ok(l) = self.rx.try_recv() {
                let (_, msg) = l.split_once(' ').unwrap();
                let p = wire::parse_pin(msg).unwrap_or_else(|e| panic!("{l}: {e}"));
                pins.insert(p.blk, p.rev.map_or("@head".to_owned(), |r| format!("@{r}")));
            }
            pins
        }
    }

    use std::collections::BTreeMap;

    pub(super) fn commit(fs: &Wcfs, stor: &Arc<dyn Storage>, tid: Tid) {
        stor.sync().unwrap();
        let txn = stor.iterate(tid, tid).unwrap().next().unwrap().unwrap();
        fs.handle_commit(tid, &txn.oids).unwrap();
        fs.publish(tid);
    }

    pub(super) fn read(fs: &Wcfs, ino: u64, off: u64, len: u32) -> Vec<u8> {
        fs.read_with(ino, off, len, |r| r.unwrap().to_vec())
    }

    /// The spec's worked example (§5, `test_wcfs_watch_setup`), then lazy
    /// pins on READ of a block never read before.
    #[test]
    fn setup_example_and_lazy_pins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        let bs = 4u64;
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        let (foid, at0) = zw
            .create_file(
                "f",
                bs,
                &[
                    (1, d("a1")),
                    (2, d("a2")),
                    (3, d("a3")),
                    (4, d("a4")),
                    (5, d("a5")),
                ],
            )
            .unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 5.0).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        for blk in [0u64, 2, 3, 5] {
            read(&fs, a.ino, blk * bs, bs as u32);
        }
        let mut at = vec![at0];
        for set in [&[2][..], &[2, 3, 4, 5], &[0, 2, 5], &[2, 4, 5], &[3, 5]] {
            let n = at.len();
            let data: Vec<String> = set.iter().map(|b| format!("{b}.{n}")).collect();
            let ch: Vec<_> = set
                .iter()
                .zip(&data)
                .map(|(&b, s)| (b, Some((ZBlkFormat::ZBlk0, s.as_bytes()))))
                .collect();
            let t = zw.update_file(foid, &ch).unwrap();
            commit(&fs, &stor, t);
            at.push(t);
        }
        let r = |i: usize| format!("@{}", at[i]);
        let want = |v: &[(i64, String)]| v.iter().cloned().collect::<BTreeMap<_, _>>();

        let la = TLink::open(&fs, true);
        let (pins, reply) = la.request(1, &format!("watch {foid} {}", r(1)));
        assert_eq!(reply, "ok");
        assert_eq!(pins, want(&[(0, r(0)), (2, r(1)), (3, r(0)), (5, r(0))]));

        let lb = TLink::open(&fs, true);
        let (pins, reply) = lb.request(1, &format!("watch {foid} {}", r(2)));
        assert_eq!(reply, "ok");
        assert_eq!(pins, want(&[(0, r(0)), (2, r(2)), (3, r(2)), (5, r(2))]));
        let (pins, reply) = lb.request(3, &format!("watch {foid} {}", r(3)));
        assert_eq!(reply, "ok");
        assert_eq!(pins, want(&[(0, "@head".into()), (2, r(3)), (5, r(3))]));
        let (pins, reply) = lb.request(5, &format!("watch {foid} {}", r(1)));
        assert!(pins.is_empty());
        assert_eq!(
            reply,
            format!(
                "error setup watch f<{foid}> {}: going back in history is forbidden",
                r(1)
            )
        );

        let lc = TLink::open(&fs, true);
        let (pins, reply) = lc.request(1, &format!("watch {foid} {}", r(5)));
        assert_eq!((pins.len(), reply.as_str()), (0, "ok"));

        // block 4 was never read: reading it now pins A (@at1 → at0) and
        // B (@at3 → at2), not C (at5 ≥ its revision at4), before the data
        assert_eq!(read(&fs, a.ino, 4 * bs, bs as u32), b"4.4\0");
        assert_eq!(la.pins_now(), want(&[(4, r(0))]));
        assert_eq!(lb.pins_now(), want(&[(4, r(2))]));
        assert!(lc.pins_now().is_empty());
        // again: nothing new
        assert_eq!(read(&fs, a.ino, 4 * bs, bs as u32), b"4.4\0");
        assert!(la.pins_now().is_empty() && lb.pins_now().is_empty());
        let st = fs.stats_text();
        assert!(st.contains("WatchLink\t: 3\n"), "{st}");
        assert!(st.contains("Watch\t: 3\n"), "{st}");

        // a file never looked up; bad requests; removal
        let (_, reply) = lc.request(3, &format!("watch {} {}", Oid(999), r(5)));
        assert_eq!(
            reply,
            format!(
                "error setup watch f<{}> {}: file not yet known to wcfs or is not a ZBigFile",
                Oid(999),
                r(5)
            )
        );
        let (_, reply) = lc.request(5, "watch 123 @x");
        assert_eq!(reply, "error bad watch: invalid oid");
        let (_, reply) = lc.request(7, &format!("watch {foid} -"));
        assert_eq!(reply, "ok");
        // bye: EOF, the watches go
        la.send("9 bye");
        assert_eq!(la.line(), "EOF");
        fs.watch_release(la.fh);
        let st = fs.stats_text();
        assert!(st.contains("Watch\t: 1\n"), "{st}");
    }

    /// The shape of the violation in stress/findings (an epoch, a view
    /// after it, then a bulk delete of blocks on a blktab of small nodes):
    /// every deleted block read through head/ pins the view.
    #[test]
    fn epoch_then_bulk_delete_pins_every_block() {
        use zodb::btree::{self, Family};
        use zodb::zbigfile::{self, NewObject};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        zw.blktab_shape.max_bucket = 8;
        zw.blktab_shape.max_tree = 4;
        let data: Vec<Vec<u8>> = (0..64).map(|b| vec![b as u8 + 1; 4]).collect();
        let ch: Vec<_> = (0..64)
            .map(|b| (b as i64, Some((ZBlkFormat::ZBlk0, &data[b][..]))))
            .collect();
        let (foid, _) = zw.create_file("f", 4, &ch).unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 5.0).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        for b in 0..64u64 {
            read(&fs, a.ino, b * 4, 4);
        }
        let at1 = zw
            .update_file(foid, &[(30, Some((ZBlkFormat::ZBlk0, b"zz")))])
            .unwrap();
        commit(&fs, &stor, at1);
        // the epoch: the blktab replaced by a new tree with the same items
        let head = stor.last_tid().unwrap();
        let f = ZBigFile::load(&*stor, foid, head).unwrap();
        let items = btree::items(&*stor, Family::LO, f.blktab, head).unwrap();
        let root = zw.new_oid();
        let shape = zw.blktab_shape;
        let mut objs: Vec<NewObject> =
            btree::build(Family::LO, &items, shape, root, &mut || zw.new_oid());
        objs.push(NewObject {
            oid: foid,
            class: zbigfile::ZBIGFILE,
            state: zbigfile::zbigfile_state(4, root),
        });
        let ate = zw.commit_objects("epoch", objs).unwrap();
        commit(&fs, &stor, ate);
        for b in 0..64u64 {
            read(&fs, a.ino, b * 4, 4);
        }
        let at2 = zw
            .update_file(foid, &[(1, Some((ZBlkFormat::ZBlk0, b"yy")))])
            .unwrap();
        commit(&fs, &stor, at2);
        let l = TLink::open(&fs, true);
        let (_, reply) = l.request(1, &format!("watch {foid} @{at2}"));
        assert_eq!(reply, "ok");
        let dels: Vec<_> = (27..55).map(|b| (b as i64, None)).collect();
        let at3 = zw.update_file(foid, &dels).unwrap();
        commit(&fs, &stor, at3);
        for b in 27..55u64 {
            assert_eq!(read(&fs, a.ino, b * 4, 4), vec![0; 4]);
        }
        let pins = l.pins_now();
        let missing: Vec<i64> = (27..55).filter(|b| !pins.contains_key(b)).collect();
        assert!(missing.is_empty(), "no pin for {missing:?}; pins {pins:?}");
    }

    /// A file "f" of 4-byte blocks a0 a1 a2 (at0), served without a mount.
    struct ThreeBlocks {
        _dir: tempfile::TempDir,
        zw: ZWriter,
        foid: Oid,
        at0: Tid,
        stor: Arc<dyn Storage>,
        fs: Arc<Wcfs>,
        /// head/bigfile/<foid>
        ino: u64,
    }

    fn three_blocks() -> ThreeBlocks {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        let (foid, at0) = zw
            .create_file("f", 4, &[(0, d("a0")), (1, d("a1")), (2, d("a2"))])
            .unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 5.0).unwrap());
        let ino = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap().ino;
        ThreeBlocks {
            _dir: dir,
            zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        }
    }

    /// A READ that Tracks a block for the first time while a watch is being
    /// set up (after its checks, before it registers its at) must not let
    /// that block reach the page cache unpinned for the new watch: the
    /// setup asks ΔFtail only after registering. The shape of the
    /// wcfs-stress finding (nothing tracked after an epoch, a readahead
    /// READ racing a new Conn's setup), made deterministic with a hook.
    #[test]
    fn read_tracking_a_block_during_setup_pins_it() {
        let ThreeBlocks {
            _dir,
            mut zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        } = three_blocks();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        assert_eq!(read(&fs, ino, 0, 4), b"a0\0\0"); // the file is known
        let at1 = zw.update_file(foid, &[(1, d("b1"))]).unwrap();
        commit(&fs, &stor, at1);
        // block 1 was never read: not tracked. The READ comes in the window.
        let fs2 = fs.clone();
        *lock(&fs.setup_hook) = Some(Box::new(move |point| {
            if point == "register" {
                assert_eq!(read(&fs2, ino, 4, 4), b"b1\0\0");
            }
        }));
        let l = TLink::open(&fs, true);
        let (pins, reply) = l.request(1, &format!("watch {foid} @{at0}"));
        assert_eq!(reply, "ok");
        *lock(&fs.setup_hook) = None;
        let mut all = pins;
        all.extend(l.pins_now());
        assert_eq!(
            all.get(&1).map(String::as_str),
            Some(&*format!("@{at0}")),
            "block 1 (changed in (at0, head]) is in the page cache from head: \
             it must be pinned to @at0; pins {all:?}"
        );
    }

    /// A `watch <oid> -` while a READ has decided a pin for that watch but
    /// not queued it: no pin may follow the removal's `ok` (the client
    /// forgets the file at `ok` and fails such a pin, and a failed pin
    /// kills it: the SIGBUS of a well-behaved wcfs-stress reader).
    #[test]
    fn no_pin_after_a_removal_ok() {
        let ThreeBlocks {
            _dir,
            mut zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        } = three_blocks();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        assert_eq!(read(&fs, ino, 4, 4), b"a1\0\0");
        let l = Arc::new(Mutex::new(TLink::open(&fs, true)));
        let (pins, reply) = lock(&l).request(1, &format!("watch {foid} @{at0}"));
        assert_eq!((pins.len(), reply.as_str()), (0, "ok"));
        let at1 = zw.update_file(foid, &[(1, d("b1"))]).unwrap();
        commit(&fs, &stor, at1);
        // the READ of #1 decides "pin #1 @at0", then the removal runs
        let l2 = l.clone();
        *lock(&fs.setup_hook) = Some(Box::new(move |point| {
            if point == "read-pin" {
                let (pins, reply) = lock(&l2).request(3, &format!("watch {foid} -"));
                assert_eq!((pins.len(), reply.as_str()), (0, "ok"));
            }
        }));
        assert_eq!(read(&fs, ino, 4, 4), b"b1\0\0");
        *lock(&fs.setup_hook) = None;
        let after = lock(&l).pins_now();
        assert!(after.is_empty(), "pins after the removal's ok: {after:?}");
    }

    /// A watch moving forward keeps a pin that a READ made for its new at
    /// after the setup asked ΔFtail (the block was not tracked then, so the
    /// setup's slice does not name it): the setup undoes only pins of
    /// blocks unchanged in (at, head].
    #[test]
    fn setup_keeps_a_pin_a_concurrent_read_made() {
        let ThreeBlocks {
            _dir,
            mut zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        } = three_blocks();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        assert_eq!(read(&fs, ino, 0, 4), b"a0\0\0");
        let l = TLink::open(&fs, true);
        assert_eq!(l.request(1, &format!("watch {foid} @{at0}")).1, "ok");
        // block 0 changes: the READ pins it @at0
        let at1 = zw.update_file(foid, &[(0, d("b0"))]).unwrap();
        commit(&fs, &stor, at1);
        assert_eq!(read(&fs, ino, 0, 4), b"b0\0\0");
        assert_eq!(l.pins_now().get(&0).cloned(), Some(format!("@{at0}")));
        // block 1 changes twice; never read, so not tracked
        let at2 = zw.update_file(foid, &[(1, d("c1"))]).unwrap();
        commit(&fs, &stor, at2);
        let at3 = zw.update_file(foid, &[(1, d("d1"))]).unwrap();
        commit(&fs, &stor, at3);
        // move to at2: block 0 is to be unpinned (unchanged in (at2, at3]);
        // block 1 (changed in (at2, at3]) is read in the window and pinned
        // @at2 by that READ; the setup must leave that pin alone
        let fs2 = fs.clone();
        *lock(&fs.setup_hook) = Some(Box::new(move |point| {
            if point == "unpin" {
                assert_eq!(read(&fs2, ino, 4, 4), b"d1\0\0");
            }
        }));
        let (pins, reply) = l.request(1, &format!("watch {foid} @{at2}"));
        *lock(&fs.setup_hook) = None;
        assert_eq!(reply, "ok");
        let mut all = pins;
        all.extend(l.pins_now());
        assert_eq!(all.get(&0).map(String::as_str), Some("@head"), "{all:?}");
        assert_eq!(
            all.get(&1).map(String::as_str),
            Some(&*format!("@{at2}")),
            "the last word on block 1 must be its pin @at2: {all:?}"
        );
    }

    /// The storage moved on without saying what changed (a ZEO server
    /// that cannot iterate): every watch link is shut with `0 fatal`, the
    /// history restarts at the new head (a watch before it is too far
    /// back), head/ shows the new state, and commits after it are followed
    /// as usual.
    #[test]
    fn unknown_changes_restart_history() {
        let ThreeBlocks {
            _dir,
            mut zw,
            foid,
            at0,
            stor,
            fs,
            ino,
        } = three_blocks();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        assert_eq!(read(&fs, ino, 0, 4), b"a0\0\0");
        let l = TLink::open(&fs, true);
        assert_eq!(l.request(1, &format!("watch {foid} @{at0}")).1, "ok");
        // two commits the server is not told about
        zw.update_file(foid, &[(0, d("b0"))]).unwrap();
        let at2 = zw.update_file(foid, &[(2, d("c2")), (5, d("c5"))]).unwrap();
        stor.sync().unwrap();
        let inval = fs.handle_unknown(at2, "test");
        fs.publish(at2);
        assert!(
            inval
                .iter()
                .any(|i| i.ino == ino && i.off == 0 && i.len == 0),
            "{inval:?}"
        );
        let mut lines = vec![l.line()];
        while lines.last().map(String::as_str) != Some("EOF") {
            lines.push(l.line());
        }
        assert!(
            lines[0].starts_with(&format!("0 fatal: storage changes up to @{at2} unknown")),
            "{lines:?}"
        );
        assert_eq!(fs.head_at(), at2);
        assert_eq!(
            read(&fs, ino, 0, 24),
            b"b0\0\0a1\0\0c2\0\0\0\0\0\0\0\0\0\0c5\0\0"
        );
        let l2 = TLink::open(&fs, true);
        let (_, reply) = l2.request(1, &format!("watch {foid} @{at0}"));
        assert!(reply.contains("too far away back"), "{reply}");
        assert_eq!(l2.request(3, &format!("watch {foid} @{at2}")).1, "ok");
        // followed as usual from here: a READ pins the watch at at2
        let at3 = zw.update_file(foid, &[(1, d("d1"))]).unwrap();
        commit(&fs, &stor, at3);
        assert_eq!(read(&fs, ino, 4, 4), b"d1\0\0");
        assert_eq!(l2.pins_now().get(&1).cloned(), Some(format!("@{at2}")));
    }

    /// `@<rev>/` page cache is trimmed for revisions nobody is pinned to,
    /// only for files read since the last trim, never for a pinned one.
    #[test]
    fn trim_rev_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        let (foid, at0) = zw.create_file("f", 4, &[(0, d("x"))]).unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 5.0).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        assert_eq!(read(&fs, a.ino, 0, 4), b"x\0\0\0");
        let l = TLink::open(&fs, true);
        let (_, reply) = l.request(1, &format!("watch {foid} @{at0}"));
        assert_eq!(reply, "ok");
        let at1 = zw.update_file(foid, &[(0, d("y"))]).unwrap();
        commit(&fs, &stor, at1);
        let at2 = zw.update_file(foid, &[(0, d("z"))]).unwrap();
        commit(&fs, &stor, at2);
        let rev = |at: Tid| {
            let r = fs.lookup(ROOT, &format!("@{at}")).unwrap();
            let b = fs.lookup(r.ino, "bigfile").unwrap();
            fs.lookup(b.ino, &foid.to_string()).unwrap().ino
        };
        let (r0, r1) = (rev(at0), rev(at1));
        assert_eq!(read(&fs, r0, 0, 4), b"x\0\0\0");
        assert_eq!(read(&fs, r1, 0, 4), b"y\0\0\0");
        // reading head pins the watch at at0 to @at0
        assert_eq!(read(&fs, a.ino, 0, 4), b"z\0\0\0");
        assert_eq!(
            l.pins_now().get(&0).map(String::as_str),
            Some(&*format!("@{at0}"))
        );
        let trimmed: Vec<u64> = fs.trim_revs().iter().map(|i| i.ino).collect();
        assert_eq!(trimmed, vec![r1], "@at0 is pinned, @at1 is not");
        assert!(fs.trim_revs().is_empty(), "nothing read since");
        assert_eq!(read(&fs, r1, 0, 4), b"y\0\0\0");
        assert_eq!(
            fs.trim_revs().iter().map(|i| i.ino).collect::<Vec<_>>(),
            vec![r1]
        );
    }

    /// A watch at an at ahead of head waits for that commit; a link that
    /// never acks is cut off after the pin timeout and the READ goes on.
    #[test]
    fn setup_waits_for_head_and_pin_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        let d = |s: &'static str| Some((ZBlkFormat::ZBlk0, s.as_bytes()));
        let (foid, at0) = zw.create_file("f", 4, &[(0, d("x"))]).unwrap();
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 0.5).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        assert_eq!(read(&fs, a.ino, 0, 4), b"x\0\0\0");

        let l = TLink::open(&fs, false);
        l.send(&format!("1 watch {foid} @{at0}"));
        assert_eq!(l.line(), "1 ok");
        let at1 = zw.update_file(foid, &[(0, d("y"))]).unwrap();
        // ahead of head: no reply until the commit is processed
        l.send(&format!("3 watch {foid} @{at1}"));
        assert!(l.rx.recv_timeout(Duration::from_millis(300)).is_err());
        commit(&fs, &stor, at1);
        assert_eq!(l.line(), "3 ok", "no pins: block 0 changed at at1 itself");
        let at2 = zw.update_file(foid, &[(0, d("z"))]).unwrap();
        commit(&fs, &stor, at2);
        // this link does not ack: the READ waits ~0.5 s, then gets the data
        let t0 = Instant::now();
        assert_eq!(read(&fs, a.ino, 0, 4), b"z\0\0\0");
        assert!(t0.elapsed() >= Duration::from_millis(400));
        let pin = l.line();
        assert!(
            pin.starts_with("2 pin ") && pin.ends_with(&format!("#0 @{at1}")),
            "{pin}"
        );
        assert_eq!(
            l.line(),
            format!(
                "0 fatal: pin #0 @{at1}: sendReq: waiting for reply: context deadline exceeded"
            )
        );
        assert_eq!(l.line(), "EOF");
        assert!(fs.stats_text().contains("Watch\t: 0\n"));
    }
}

/// The server's pin decisions against a brute-force model: random commits
/// (rewrites, bulk inserts and deletes on a blktab of tiny nodes, epochs),
/// random READs of head/, watches set up and moved forward at random
/// states. The model keeps every state of the file; after every READ of a
/// block and every watch setup, each watch must see, for every block the
/// kernel would have cached from head/, exactly the block as of its at:
/// the @rev it is pinned to, or head when not pinned.
mod pin_model_tests {
    use super::watch_tests::{commit, read, TLink};
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use zodb::btree::{self, Family};
    use zodb::zbigfile::{self, NewObject, ZBlkFormat};
    use zodb::zwrite::ZWriter;

    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = mix(self.0);
            self.0 % n
        }
    }

    /// One model watcher: a link, its at, the pins it holds.
    struct W {
        link: TLink,
        at: Tid,
        pins: BTreeMap<i64, Tid>,
    }

    const BS: u64 = 4;
    const NBLK: i64 = 48;

    fn run(seed: u64, steps: usize) {
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        zw.blktab_shape.max_bucket = 2 + rng.below(6) as usize;
        zw.blktab_shape.max_tree = 2 + rng.below(4) as usize;
        // states[i] = (tid, blocks)
        let mut states: Vec<(Tid, BTreeMap<i64, Vec<u8>>)> = Vec::new();
        let mut cur: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let mut ver = 0u32;
        let mut data = |blk: i64| {
            ver += 1;
            format!("{:03}{}", ver % 1000, (b'a' + (blk % 26) as u8) as char).into_bytes()
        };
        let init: Vec<(i64, Vec<u8>)> = (0..NBLK)
            .filter(|b| *b == NBLK - 1 || rng.below(3) != 0)
            .map(|b| (b, data(b)))
            .collect();
        let ch: Vec<_> = init
            .iter()
            .map(|(b, d)| (*b, Some((ZBlkFormat::ZBlk0, &d[..]))))
            .collect();
        let (foid, at0) = zw.create_file("f", BS, &ch).unwrap();
        cur.extend(init);
        states.push((at0, cur.clone()));
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 10.0).unwrap());
        let a = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap();
        let mut epoch = at0;
        // blocks the kernel holds from head/ (read since their last change)
        let mut cached: BTreeSet<i64> = BTreeSet::new();
        let mut ws: Vec<W> = Vec::new();
        let state_at = |states: &Vec<(Tid, BTreeMap<i64, Vec<u8>>)>, at: Tid| {
            states
                .iter()
                .rev()
                .find(|(t, _)| *t <= at)
                .map(|(_, s)| s.clone())
                .unwrap()
        };
        let blk_of = |s: &BTreeMap<i64, Vec<u8>>, b: i64| {
            let mut v = s.get(&b).cloned().unwrap_or_default();
            v.resize(BS as usize, 0);
            v
        };
        let mut log: Vec<String> = Vec::new();
        for step in 0..steps {
            let op = rng.below(100);
            if op < 30 {
                // a commit
                let kind = rng.below(10);
                let changes: Vec<(i64, Option<Vec<u8>>)> = if kind < 6 {
                    (0..1 + rng.below(3))
                        .map(|_| {
                            let b = rng.below(NBLK as u64) as i64;
                            (b, Some(data(b)))
                        })
                        .collect()
                } else if kind < 8 {
                    let lo = rng.below(NBLK as u64) as i64;
                    let n = 1 + rng.below(20) as i64;
                    // the last block stays: the file never shrinks (a
                    // client's blocks past head's end are never READ
                    // through head/, so never pinned)
                    (lo..(lo + n).min(NBLK - 1)).map(|b| (b, None)).collect()
                } else if kind < 9 {
                    let lo = rng.below(NBLK as u64) as i64;
                    let n = 1 + rng.below(20) as i64;
                    (lo..(lo + n).min(NBLK))
                        .map(|b| (b, Some(data(b))))
                        .collect()
                } else {
                    Vec::new() // an epoch
                };
                let changes: Vec<_> = changes
                    .into_iter()
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect();
                let tid = if changes.is_empty() {
                    // the watchers of the file lose their links
                    for w in ws.drain(..) {
                        fs.watch_release(w.link.fh);
                    }
                    let head = stor.last_tid().unwrap();
                    let f = ZBigFile::load(&*stor, foid, head).unwrap();
                    let items = btree::items(&*stor, Family::LO, f.blktab, head).unwrap();
                    let root = zw.new_oid();
                    let shape = zw.blktab_shape;
                    let mut objs: Vec<NewObject> =
                        btree::build(Family::LO, &items, shape, root, &mut || zw.new_oid());
                    objs.push(NewObject {
                        oid: foid,
                        class: zbigfile::ZBIGFILE,
                        state: zbigfile::zbigfile_state(BS, root),
                    });
                    let t = zw.commit_objects("epoch", objs).unwrap();
                    epoch = t;
                    log.push(format!("{step}: epoch @{t}"));
                    t
                } else {
                    let ch: Vec<_> = changes
                        .iter()
                        .map(|(b, d)| (*b, d.as_ref().map(|d| (ZBlkFormat::ZBlk0, &d[..]))))
                        .collect();
                    let t = zw.update_file(foid, &ch).unwrap();
                    for (b, d) in &changes {
                        match d {
                            Some(d) => cur.insert(*b, d.clone()),
                            None => cur.remove(b),
                        };
                        cached.remove(b);
                    }
                    log.push(format!(
                        "{step}: commit @{t} {:?}",
                        changes
                            .iter()
                            .map(|(b, d)| (*b, d.is_some()))
                            .collect::<Vec<_>>()
                    ));
                    t
                };
                commit(&fs, &stor, tid);
                states.push((tid, cur.clone()));
                continue;
            }
            if op < 45 {
                // a new watch, or one moved forward, at a state since the epoch
                let cands: Vec<Tid> = states
                    .iter()
                    .map(|(t, _)| *t)
                    .filter(|t| *t >= epoch)
                    .collect();
                let at = cands[cands.len() - 1 - rng.below(cands.len().min(6) as u64) as usize];
                let i = if ws.is_empty() || rng.below(2) == 0 {
                    ws.push(W {
                        link: TLink::open(&fs, true),
                        at: Tid(0),
                        pins: BTreeMap::new(),
                    });
                    ws.len() - 1
                } else {
                    rng.below(ws.len() as u64) as usize
                };
                if at < ws[i].at {
                    continue;
                }
                let (pins, reply) = ws[i].link.request(1, &format!("watch {foid} @{at}"));
                assert_eq!(reply, "ok", "seed {seed} step {step}");
                log.push(format!("{step}: watch {i} @{at} pins {pins:?}"));
                if std::env::var("WCFS_PIN_MODEL_DEBUG").is_ok() {
                    let head = stor.last_tid().unwrap();
                    log.push(format!(
                        "  slice: {:?}\n  ex: {:?}\n  explicit {}",
                        fs.ft.slice_by_file_rev(foid, at, head).unwrap(),
                        fs.ft
                            .slice_by_file_rev_ex(
                                foid,
                                at,
                                head,
                                engine::ftail::SliceOpts {
                                    only_explicitly_tracked: true
                                }
                            )
                            .unwrap(),
                        fs.ft.explicitly_tracked(foid)
                    ));
                }
                let w = &mut ws[i];
                w.at = at;
                for (b, r) in pins {
                    match r.as_str() {
                        "@head" => w.pins.remove(&b),
                        r => w
                            .pins
                            .insert(b, Tid(u64::from_str_radix(&r[1..], 16).unwrap())),
                    };
                }
                let check: Vec<i64> = cached.iter().copied().collect();
                check_all(seed, step, &log, &states, &ws, &check, state_at, blk_of);
                continue;
            }
            // a READ of head/
            let b = rng.below(NBLK as u64) as i64;
            let mut got = read(&fs, a.ino, b as u64 * BS, BS as u32);
            got.resize(BS as usize, 0); // past the end of a shrunk file
            assert_eq!(got, blk_of(&cur, b), "seed {seed} step {step}: head #{b}");
            cached.insert(b);
            for w in ws.iter_mut() {
                for (pb, r) in w.link.pins_now() {
                    match r.as_str() {
                        "@head" => w.pins.remove(&pb),
                        r => w
                            .pins
                            .insert(pb, Tid(u64::from_str_radix(&r[1..], 16).unwrap())),
                    };
                }
            }
            log.push(format!("{step}: read #{b}"));
            check_all(seed, step, &log, &states, &ws, &[b], state_at, blk_of);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_all(
        seed: u64,
        step: usize,
        log: &[String],
        states: &Vec<(Tid, BTreeMap<i64, Vec<u8>>)>,
        ws: &[W],
        blks: &[i64],
        state_at: impl Fn(&Vec<(Tid, BTreeMap<i64, Vec<u8>>)>, Tid) -> BTreeMap<i64, Vec<u8>>,
        blk_of: impl Fn(&BTreeMap<i64, Vec<u8>>, i64) -> Vec<u8>,
    ) {
        let head = states.last().unwrap().1.clone();
        for (i, w) in ws.iter().enumerate() {
            if w.at == Tid(0) {
                continue;
            }
            let want_s = state_at(states, w.at);
            for &b in blks {
                let want = blk_of(&want_s, b);
                let seen = match w.pins.get(&b) {
                    Some(r) => blk_of(&state_at(states, *r), b),
                    None => blk_of(&head, b),
                };
                if seen != want {
                    let tail: Vec<&String> = log.iter().rev().take(40).rev().collect();
                    panic!(
                        "seed {seed} step {step}: watch {i} @{} sees #{b} {:?} (pin {:?}), \
                         wants {:?}\n{}",
                        w.at,
                        String::from_utf8_lossy(&seen),
                        w.pins.get(&b),
                        String::from_utf8_lossy(&want),
                        tail.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
            }
        }
    }

    /// `WCFS_PIN_MODEL_SEEDS=<n>` runs more seeds, `WCFS_PIN_MODEL_DEBUG=1`
    /// logs ΔFtail's slices at every watch setup.
    #[test]
    fn pins_match_a_brute_force_model() {
        let seeds: u64 = std::env::var("WCFS_PIN_MODEL_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12);
        for seed in 0..seeds {
            run(mix(seed ^ 0x5eed), 300);
        }
    }

    /// Every state of the file: (tid, blk -> bytes).
    type States = Vec<(Tid, BTreeMap<i64, Vec<u8>>)>;

    /// One watch of the concurrent model, on its own link.
    struct CW {
        link: TLink,
        at: Tid,
        pins: BTreeMap<i64, Tid>,
    }

    impl CW {
        /// Apply pin line `l` (lines arrive in the order the server queued
        /// them, which is the order the client applies them in).
        fn apply(&mut self, l: &str) {
            let (_, msg) = l.split_once(' ').unwrap();
            let p = wire::parse_pin(msg).unwrap_or_else(|e| panic!("{l}: {e}"));
            match p.rev {
                Some(r) => self.pins.insert(p.blk, r),
                None => self.pins.remove(&p.blk),
            };
        }

        /// `watch f @at` on stream 1; the pins before the reply applied.
        fn setup(&mut self, foid: Oid, at: Tid) {
            self.link.send(&format!("1 watch {foid} @{at}"));
            loop {
                let l = self.link.line();
                if let Some(r) = l.strip_prefix("1 ") {
                    assert_eq!(r, "ok", "setup @{at}");
                    self.at = at;
                    return;
                }
                self.apply(&l);
            }
        }
    }

    /// The concurrent model: rounds in which, on real threads at once, a
    /// writer commits (rewrites, bulk inserts and deletes on tiny blktab
    /// nodes; no epochs), three readers READ random blocks of head/ and two
    /// setup threads move their watch forward to random published states;
    /// then, with everything quiet, every block the kernel would hold from
    /// head/ must be head's data, and every watch must see exactly the
    /// block as of its at. The kernel is modelled where it matters: a READ
    /// holds its block's page lock from before the request until its data
    /// is cached, and a commit's invalidation of a block takes that lock
    /// (so a READ of an older state that replies after the new view was
    /// published is dropped by the invalidation, as the kernel does).
    fn run_concurrent(seed: u64, rounds: usize) {
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut zw = ZWriter::open(&path).unwrap();
        zw.blktab_shape.max_bucket = 2 + rng.below(6) as usize;
        zw.blktab_shape.max_tree = 2 + rng.below(4) as usize;
        let mut ver = 0u32;
        let mut data = move |blk: i64| {
            ver += 1;
            format!("{:03}{}", ver % 1000, (b'a' + (blk % 26) as u8) as char).into_bytes()
        };
        let mut cur: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let init: Vec<(i64, Vec<u8>)> = (0..NBLK)
            .filter(|b| *b == NBLK - 1 || rng.below(3) != 0)
            .map(|b| (b, data(b)))
            .collect();
        let ch: Vec<_> = init
            .iter()
            .map(|(b, d)| (*b, Some((ZBlkFormat::ZBlk0, &d[..]))))
            .collect();
        let (foid, at0) = zw.create_file("f", BS, &ch).unwrap();
        cur.extend(init);
        let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
        let fs = Arc::new(Wcfs::new("test".into(), stor.clone(), 10.0).unwrap());
        let ino = fs.lookup(HEAD_BIGFILE, &foid.to_string()).unwrap().ino;
        let states: Mutex<States> = Mutex::new(vec![(at0, cur.clone())]);
        let cache: Mutex<BTreeMap<i64, Vec<u8>>> = Mutex::new(BTreeMap::new());
        let pages: Vec<Mutex<()>> = (0..NBLK).map(|_| Mutex::new(())).collect();
        let mut ws: Vec<CW> = (0..2)
            .map(|_| CW {
                link: TLink::open(&fs, true),
                at: Tid(0),
                pins: BTreeMap::new(),
            })
            .collect();
        let blk_of = |s: &BTreeMap<i64, Vec<u8>>, b: i64| {
            let mut v = s.get(&b).cloned().unwrap_or_default();
            v.resize(BS as usize, 0);
            v
        };
        let state_at = |at: Tid| {
            lock(&states)
                .iter()
                .rev()
                .find(|(t, _)| *t <= at)
                .map(|(_, s)| s.clone())
                .unwrap()
        };
        for round in 0..rounds {
            let seeds: Vec<u64> = (0..6).map(|_| rng.below(u64::MAX)).collect();
            std::thread::scope(|sc| {
                // the writer
                let (fs2, stor2, states2, cache2, pages2) = (&fs, &stor, &states, &cache, &pages);
                let (zw2, cur2, data2) = (&mut zw, &mut cur, &mut data);
                let s0 = seeds[0];
                sc.spawn(move || {
                    let mut r = Rng(s0);
                    for _ in 0..1 + r.below(4) {
                        let kind = r.below(10);
                        let changes: BTreeMap<i64, Option<Vec<u8>>> = if kind < 6 {
                            (0..1 + r.below(3))
                                .map(|_| {
                                    let b = r.below(NBLK as u64) as i64;
                                    (b, Some(data2(b)))
                                })
                                .collect()
                        } else if kind < 8 {
                            let lo = r.below(NBLK as u64) as i64;
                            let n = 1 + r.below(20) as i64;
                            (lo..(lo + n).min(NBLK - 1)).map(|b| (b, None)).collect()
                        } else {
                            let lo = r.below(NBLK as u64) as i64;
                            let n = 1 + r.below(20) as i64;
                            (lo..(lo + n).min(NBLK))
                                .map(|b| (b, Some(data2(b))))
                                .collect()
                        };
                        if changes.is_empty() {
                            continue;
                        }
                        let ch: Vec<_> = changes
                            .iter()
                            .map(|(b, d)| (*b, d.as_ref().map(|d| (ZBlkFormat::ZBlk0, &d[..]))))
                            .collect();
                        let tid = zw2.update_file(foid, &ch).unwrap();
                        for (b, d) in &changes {
                            match d {
                                Some(d) => cur2.insert(*b, d.clone()),
                                None => cur2.remove(b),
                            };
                        }
                        stor2.sync().unwrap();
                        let txn = stor2.iterate(tid, tid).unwrap().next().unwrap().unwrap();
                        let inval = fs2.handle_commit(tid, &txn.oids).unwrap().inval;
                        // the kernel: each invalidation takes the page locks
                        for i in inval.iter().filter(|i| i.ino == ino && i.off >= 0) {
                            let lo = i.off / BS as i64;
                            let hi = if i.len <= 0 {
                                NBLK
                            } else {
                                (i.off + i.len + BS as i64 - 1) / BS as i64
                            };
                            for b in lo..hi.min(NBLK) {
                                let _p = lock(&pages2[b as usize]);
                                lock(cache2).remove(&b);
                            }
                        }
                        lock(states2).push((tid, cur2.clone()));
                        fs2.publish(tid);
                    }
                });
                // the readers
                for &sd in &seeds[1..4] {
                    let (fs2, cache2, pages2) = (&fs, &cache, &pages);
                    sc.spawn(move || {
                        let mut r = Rng(sd);
                        for _ in 0..8 {
                            let b = r.below(NBLK as u64) as i64;
                            let _p = lock(&pages2[b as usize]);
                            let mut got = read(fs2, ino, b as u64 * BS, BS as u32);
                            got.resize(BS as usize, 0);
                            lock(cache2).insert(b, got);
                        }
                    });
                }
                // the setups, one per watch
                for (w, &sd) in ws.iter_mut().zip(&seeds[4..6]) {
                    let states2 = &states;
                    sc.spawn(move || {
                        let mut r = Rng(sd);
                        for _ in 0..2 {
                            let cands: Vec<Tid> = lock(states2)
                                .iter()
                                .map(|(t, _)| *t)
                                .filter(|t| *t >= w.at)
                                .collect();
                            let at = cands
                                [cands.len() - 1 - r.below(cands.len().min(4) as u64) as usize];
                            w.setup(foid, at);
                        }
                    });
                }
            });
            // quiet: every pin queued so far has been received
            let head = lock(&states).last().unwrap().1.clone();
            for w in ws.iter_mut() {
                for (b, rv) in w.link.pins_now() {
                    match rv.as_str() {
                        "@head" => w.pins.remove(&b),
                        r => w
                            .pins
                            .insert(b, Tid(u64::from_str_radix(&r[1..], 16).unwrap())),
                    };
                }
            }
            let cached = lock(&cache).clone();
            for (b, d) in &cached {
                assert_eq!(
                    d,
                    &blk_of(&head, *b),
                    "seed {seed} round {round}: #{b} in the page cache is not head's"
                );
                for (i, w) in ws.iter().enumerate() {
                    let want = blk_of(&state_at(w.at), *b);
                    let seen = match w.pins.get(b) {
                        Some(r) => blk_of(&state_at(*r), *b),
                        None => d.clone(),
                    };
                    assert_eq!(
                        seen,
                        want,
                        "seed {seed} round {round}: watch {i} @{} sees #{b} wrong (pin {:?})",
                        w.at,
                        w.pins.get(b)
                    );
                }
            }
        }
    }

    /// `WCFS_PIN_MODEL_SEEDS=<n>` runs more seeds.
    #[test]
    fn concurrent_pins_match_a_brute_force_model() {
        let seeds: u64 = std::env::var("WCFS_PIN_MODEL_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12);
        for seed in 0..seeds {
            run_concurrent(mix(seed ^ 0xc0c0), 25);
        }
    }
}

/// Storage whose first load on a thread named `slow` waits until told:
/// that thread then holds a block's load slot for as long as the test
/// wants.
struct SlowFirst {
    inner: Arc<dyn Storage>,
    gate: Mutex<bool>,
    cv: std::sync::Condvar,
    entered: std::sync::atomic::AtomicBool,
}

impl Storage for SlowFirst {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn last_tid(&self) -> zodb::Result<Tid> {
        self.inner.last_tid()
    }
    fn sync(&self) -> zodb::Result<Tid> {
        self.inner.sync()
    }
    fn load(&self, oid: Oid, at: Tid) -> zodb::Result<zodb::Loaded> {
        if std::thread::current().name() == Some("slow")
            && !self.entered.swap(true, Ordering::SeqCst)
        {
            let mut g = lock(&self.gate);
            while !*g {
                g = self.cv.wait(g).unwrap();
            }
        }
        self.inner.load(oid, at)
    }
    fn iterate(
        &self,
        lo: Tid,
        hi: Tid,
    ) -> zodb::Result<Box<dyn Iterator<Item = zodb::Result<zodb::TxnInfo>> + Send + '_>> {
        self.inner.iterate(lo, hi)
    }
    fn watch(&self, after: Tid) -> zodb::Result<Box<dyn zodb::Watcher>> {
        self.inner.watch(after)
    }
}

/// A block load in progress on a READ thread, whose ZBlk1 chunks load on
/// rayon's pool, while every rayon worker wants the same block (a READ of
/// several blocks loads them in parallel): the workers must not wait for
/// that load, which waits for them (the deadlock wcfs-stress found at 2 MiB
/// blocks). Fails by timing out with the old waiting.
#[test]
fn block_loads_on_rayon_never_wait_for_a_load_that_needs_rayon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let mut zw = ZWriter::open(&path).unwrap();
    let data: Vec<u8> = (0..2048 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (foid, at) = zw
        .create_file(
            "f",
            2048 * 1024,
            &[(0, Some((ZBlkFormat::ZBlk1, &data[..])))],
        )
        .unwrap();
    let fs1: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
    let stor = Arc::new(SlowFirst {
        inner: fs1.clone(),
        gate: Mutex::new(false),
        cv: std::sync::Condvar::new(),
        entered: Default::default(),
    });
    let zf = Arc::new(ZBigFile::load(&*fs1, foid, at).unwrap());
    let cache = Arc::new(BlockCache::default());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // the READ thread: takes the load slot, stalls in its first load
    let (c2, s2, z2, d2) = (cache.clone(), stor.clone(), zf.clone(), done_tx.clone());
    let slow = std::thread::Builder::new()
        .name("slow".into())
        .spawn(move || {
            let b = c2.load(&*s2, &z2, 0, at).unwrap();
            d2.send(("slow", b.data.len())).unwrap();
        })
        .unwrap();
    while !stor.entered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // every rayon worker wants the same block meanwhile
    for _ in 0..rayon::current_num_threads() {
        let (c, s, z, d) = (cache.clone(), stor.clone(), zf.clone(), done_tx.clone());
        rayon::spawn(move || {
            let b = c.load(&*s, &z, 0, at).unwrap();
            let _ = d.send(("worker", b.data.len()));
        });
    }
    std::thread::sleep(Duration::from_millis(50));
    *lock(&stor.gate) = true;
    stor.cv.notify_all();
    for i in 0..=rayon::current_num_threads() {
        let (who, n) = done_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("load {i} not done in 30 s: a deadlock"));
        assert_eq!(n, data.len(), "{who}");
    }
    slow.join().unwrap();
}

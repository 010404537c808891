//! Following a database while it is being committed to.
//!
//! - a writer thread, then a writer in a child process (this test binary
//!   re-run with the ignored `child_writer` test), commit transactions while
//!   a watcher on a separately opened read-only storage reads: every
//!   transaction is seen exactly once, in order, with its oids, and loads at
//!   each watched tid return the data committed then;
//! - the in-progress states, made by hand: a `'c'` transaction is not
//!   reported until its status flips; a half-written header or record is not
//!   reported until complete; an incomplete tail that persists, a bad status
//!   byte, a shrinking or replaced file are errors.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};
use zodb::fs1::format::{DataHeader, TxnHeader, DATA_HDR_LEN, TXN_HDR_LEN};
use zodb::fs1::{FileStorage, NewData, NewTxn, Writer};
use zodb::{Error, Oid, Storage, Tid, TxnInfo};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// Transaction `i` of the followed writers: changes oids `i % 5` and
/// `10 + i % 3`, plus a new oid `100 + i`.
fn txn_i(i: u64) -> NewTxn {
    let oids = [i % 5, 10 + i % 3, 100 + i];
    NewTxn {
        description: format!("txn {i}").into_bytes(),
        records: oids
            .iter()
            .map(|&o| (Oid(o), NewData::Data(format!("{o}@{i}").into_bytes())))
            .collect(),
        ..NewTxn::default()
    }
}

/// Check watched transaction `info` as transaction `i` of `txn_i`, and the
/// loads at its tid.
fn check_txn_i(fs: &FileStorage, info: &TxnInfo, i: u64) {
    assert_eq!(info.description[..], format!("txn {i}").into_bytes()[..]);
    let want: Vec<Oid> = [i % 5, 10 + i % 3, 100 + i]
        .iter()
        .map(|&o| Oid(o))
        .collect();
    assert_eq!(info.oids, want, "txn {i}");
    for oid in &want {
        let l = fs
            .load(*oid, info.tid)
            .unwrap_or_else(|e| panic!("txn {i}: {e}"));
        assert_eq!(l.serial, info.tid);
        assert_eq!(l.data[..], format!("{}@{i}", oid.0).into_bytes()[..]);
    }
    // an oid not changed by txn i: its state at that tid is from before
    if i > 0 {
        let l = fs.load(Oid((i - 1) % 5), info.tid).unwrap();
        assert!(l.serial <= info.tid);
    }
}

#[test]
fn follow_writer_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let n0 = 5;
    for i in 0..n0 {
        w.commit(txn_i(i)).unwrap();
    }
    let fs = FileStorage::open(&p).unwrap();
    // start watching from the beginning: the 5 existing ones come first
    let mut watch = fs.watch(Tid::ZERO).unwrap();
    let n = 60;
    let writer = std::thread::spawn(move || {
        let mut tids = vec![];
        for i in n0..n {
            tids.push(w.commit(txn_i(i)).unwrap());
            if i % 7 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        tids
    });
    let mut seen = vec![];
    for i in 0..n {
        let info = watch
            .next(WAIT)
            .unwrap()
            .expect("timed out waiting for a transaction");
        if let Some(prev) = seen.last() {
            assert!(info.tid > *prev);
        }
        check_txn_i(&fs, &info, i);
        seen.push(info.tid);
    }
    let tids = writer.join().unwrap();
    assert_eq!(seen[n0 as usize..], tids[..]);
    // nothing more, and a bounded wait returns
    let t0 = Instant::now();
    assert!(watch
        .next(Some(Duration::from_millis(150)))
        .unwrap()
        .is_none());
    assert!(t0.elapsed() < Duration::from_secs(2));
    // a watcher from the middle
    let mut w2 = fs.watch(seen[9]).unwrap();
    assert_eq!(
        w2.next(Some(Duration::ZERO)).unwrap().unwrap().tid,
        seen[10]
    );
    assert_eq!(fs.last_tid().unwrap(), *seen.last().unwrap());
}

/// The child side of `follow_child_process`; does nothing when run normally.
#[test]
#[ignore = "run by follow_child_process"]
fn child_writer() {
    let Ok(path) = std::env::var("FS1_CHILD_PATH") else {
        return;
    };
    let n: u64 = std::env::var("FS1_CHILD_N").unwrap().parse().unwrap();
    let mut w = Writer::open(&path, false).unwrap();
    for i in 0..n {
        w.commit(txn_i(i)).unwrap();
        if i % 5 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn follow_child_process() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    drop(Writer::open(&p, true).unwrap());
    let fs = FileStorage::open(&p).unwrap();
    let mut watch = fs.watch(Tid::ZERO).unwrap();
    let n = 40u64;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--ignored",
            "--quiet",
            "--test-threads=1",
        ])
        .env("FS1_CHILD_PATH", &p)
        .env("FS1_CHILD_N", n.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut last = Tid::ZERO;
    for i in 0..n {
        let info = watch.next(WAIT).unwrap().unwrap_or_else(|| {
            let _ = child.kill();
            panic!("timed out waiting for transaction {i}")
        });
        assert!(info.tid > last);
        last = info.tid;
        check_txn_i(&fs, &info, i);
    }
    assert!(child.wait().unwrap().success());
    assert!(watch
        .next(Some(Duration::from_millis(100)))
        .unwrap()
        .is_none());
}

/// A hand-made transaction record at `pos` with one data record per
/// `(oid, prev, data)`.
fn raw_txn(tid: Tid, pos: u64, status: u8, recs: &[(Oid, u64, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut rpos = pos + TXN_HDR_LEN;
    for (oid, prev, data) in recs {
        DataHeader {
            oid: *oid,
            tid,
            prev: *prev,
            tloc: pos,
            vlen: 0,
            plen: data.len() as u64,
        }
        .encode(&mut body);
        body.extend_from_slice(data);
        rpos += DATA_HDR_LEN + data.len() as u64;
    }
    let tlen = rpos - pos;
    let mut v = Vec::new();
    TxnHeader {
        tid,
        tlen,
        status,
        ulen: 0,
        dlen: 0,
        elen: 0,
    }
    .encode(&mut v);
    v.extend_from_slice(&body);
    v.extend_from_slice(&tlen.to_be_bytes());
    v
}

fn append(p: &Path, b: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(b).unwrap();
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn in_progress_states() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let t1 = w
        .commit(NewTxn {
            records: vec![(Oid(0), NewData::Data(b"r1".to_vec()))],
            ..Default::default()
        })
        .unwrap();
    let rec0 = w.storage().committed_size() - 8 - DATA_HDR_LEN - 2;
    drop(w);
    let fs = FileStorage::open(&p).unwrap();
    let mut watch = fs.watch(t1).unwrap();
    let short = Some(Duration::from_millis(250));
    assert!(watch.next(short).unwrap().is_none());

    // 1) voted, not finished: status 'c'
    let pos = size(&p);
    let t2 = Tid(t1.0 + 10);
    append(&p, &raw_txn(t2, pos, b'c', &[(Oid(0), rec0, b"r2")]));
    assert!(
        watch.next(short).unwrap().is_none(),
        "a 'c' transaction must not be reported"
    );
    assert_eq!(fs.sync().unwrap(), t1);
    assert_eq!(&fs.load(Oid(0), Tid::MAX).unwrap().data[..], b"r1");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(b" ", pos + 16)
        .unwrap();
    let info = watch.next(WAIT).unwrap().unwrap();
    assert_eq!((info.tid, info.oids.clone()), (t2, vec![Oid(0)]));
    assert_eq!(&fs.load(Oid(0), Tid::MAX).unwrap().data[..], b"r2");
    assert_eq!(fs.last_tid().unwrap(), t2);

    // 2) written piecewise: half a header, then a header without its
    //    records, then everything
    let rec2 = pos + TXN_HDR_LEN;
    let pos = size(&p);
    let t3 = Tid(t2.0 + 10);
    let raw = raw_txn(
        t3,
        pos,
        b' ',
        &[(Oid(0), rec2, b"r3"), (Oid(5), 0, b"five")],
    );
    for cut in [
        10,
        TXN_HDR_LEN as usize,
        TXN_HDR_LEN as usize + 30,
        raw.len() - 1,
    ] {
        let have = (size(&p) - pos) as usize;
        append(&p, &raw[have..cut]);
        assert!(
            watch
                .next(Some(Duration::from_millis(120)))
                .unwrap()
                .is_none(),
            "cut {cut}"
        );
        assert_eq!(fs.sync().unwrap(), t2);
    }
    append(&p, &raw[raw.len() - 1..]);
    let info = watch.next(WAIT).unwrap().unwrap();
    assert_eq!((info.tid, info.oids.clone()), (t3, vec![Oid(0), Oid(5)]));
    assert_eq!(&fs.load(Oid(5), t3).unwrap().data[..], b"five");
    assert!(matches!(fs.load(Oid(5), t2), Err(Error::NotYet { .. })));

    // 3) an incomplete tail that stays: garbage after the timeout
    fs.set_incomplete_timeout(Duration::from_millis(200));
    let pos = size(&p);
    append(&p, &raw_txn(Tid(t3.0 + 10), pos, b' ', &[])[..12]);
    let t0 = Instant::now();
    match watch.next(Some(Duration::from_secs(5))) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, pos),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(200));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(pos)
        .unwrap();
    assert_eq!(fs.sync().unwrap(), t3);

    // 4) a complete record with a bad status byte: corruption
    let raw = raw_txn(Tid(t3.0 + 10), pos, b'x', &[]);
    append(&p, &raw);
    assert!(matches!(fs.sync(), Err(Error::Corrupt { .. })));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(pos)
        .unwrap();
    // a decreasing tid: corruption too
    append(&p, &raw_txn(t1, pos, b' ', &[]));
    assert!(matches!(fs.sync(), Err(Error::Corrupt { .. })));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(pos)
        .unwrap();
    // a legacy 'u' transaction is skipped
    let tu = Tid(t3.0 + 20);
    append(&p, &raw_txn(tu, pos, b'u', &[(Oid(9), 0, b"nine")]));
    assert_eq!(fs.sync().unwrap(), t3);
    assert!(matches!(
        fs.load(Oid(9), Tid::MAX),
        Err(Error::NoSuchObject { .. })
    ));
    assert!(watch
        .next(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());

    // 5) the file shrinks below the committed part
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(pos - 5)
        .unwrap();
    match watch.next(short) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("shrank"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn replaced_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let mut w = Writer::open(&p, true).unwrap();
    w.commit(NewTxn::default()).unwrap();
    drop(w);
    let fs = FileStorage::open(&p).unwrap();
    std::fs::copy(&p, tmp.path().join("new.fs")).unwrap();
    std::fs::rename(tmp.path().join("new.fs"), &p).unwrap();
    match fs.sync() {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("replaced"), "{what}"),
        other => panic!("{other:?}"),
    }
}

/// A watcher on the writer's own storage, and an empty file that gets its
/// magic and first transaction later.
#[test]
fn watch_own_writer_and_empty_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    std::fs::write(&p, b"").unwrap();
    let ro = FileStorage::open(&p).unwrap();
    let mut ro_watch = ro.watch(Tid::ZERO).unwrap();
    assert!(ro_watch
        .next(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());
    let mut w = Writer::open(&p, false).unwrap();
    let mut own = w.storage().watch(Tid::ZERO).unwrap();
    let t = w.commit(txn_i(0)).unwrap();
    assert_eq!(own.next(WAIT).unwrap().unwrap().tid, t);
    assert_eq!(ro_watch.next(WAIT).unwrap().unwrap().tid, t);
    check_txn_i(&ro, &ro.iterate(t, t).unwrap().next().unwrap().unwrap(), 0);
}

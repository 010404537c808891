//! Damaged databases: the read-only opener must never panic or hang, and
//! must give either a valid view or a typed error.
//!
//! - truncation at every byte offset: always a valid prefix (a truncated
//!   last transaction looks like a commit in progress and is not visible);
//!   the view equals the model restricted to the complete transactions;
//! - every byte flipped (several patterns): open, iterate and load every oid
//!   at every tid; only `Corrupt` (with an offset inside the file) or the
//!   three "no object" errors are allowed;
//! - hand-made pointer loops and bad magic.

mod fs1_common;

use fs1_common::{Model, Rng};
use std::path::Path;
use zodb::fs1::{FileStorage, NewData, NewTxn, Writer};
use zodb::{Error, Oid, Storage, Tid};

fn tmpdir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// A small database with updates, deletions and undos; returns its bytes,
/// the model, and the end position of each transaction.
fn sample_db(dir: &Path) -> (Vec<u8>, Model, Vec<u64>) {
    let p = dir.join("sample.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let mut m = Model::default();
    let mut rng = Rng::new(42);
    let mut ends = vec![];
    let commit = |w: &mut Writer, m: &mut Model, recs: Vec<(u64, Option<Vec<u8>>)>| {
        let t = w
            .commit(NewTxn {
                user: b"u".to_vec(),
                description: b"d".to_vec(),
                extension: b"e".to_vec(),
                tid: None,
                records: recs
                    .iter()
                    .map(|(o, d)| (Oid(*o), d.clone().map_or(NewData::Delete, NewData::Data)))
                    .collect(),
            })
            .unwrap();
        for (o, d) in &recs {
            m.revs.insert((Oid(*o), t), d.clone());
        }
        m.txns.push((t, recs.iter().map(|r| Oid(r.0)).collect()));
        t
    };
    let undo = |w: &mut Writer, m: &mut Model, ut: Tid, oid: u64, before: Option<Vec<u8>>| {
        let t = w.undo(ut).unwrap();
        m.revs.insert((Oid(oid), t), before);
        m.txns.push((t, vec![Oid(oid)]));
    };
    let a0 = rng.bytes(20);
    let t1 = commit(
        &mut w,
        &mut m,
        vec![(0, Some(a0.clone())), (1, Some(rng.bytes(30)))],
    );
    ends.push(w.storage().committed_size());
    let b1 = rng.bytes(40);
    commit(
        &mut w,
        &mut m,
        vec![(1, Some(b1.clone())), (2, Some(rng.bytes(10)))],
    );
    ends.push(w.storage().committed_size());
    let t3 = commit(&mut w, &mut m, vec![(1, Some(rng.bytes(25)))]);
    ends.push(w.storage().committed_size());
    undo(&mut w, &mut m, t3, 1, Some(b1));
    ends.push(w.storage().committed_size());
    commit(&mut w, &mut m, vec![(2, None), (3, Some(rng.bytes(15)))]);
    ends.push(w.storage().committed_size());
    let t6 = commit(&mut w, &mut m, vec![(4, Some(rng.bytes(12)))]);
    ends.push(w.storage().committed_size());
    undo(&mut w, &mut m, t6, 4, None);
    ends.push(w.storage().committed_size());
    commit(&mut w, &mut m, vec![]);
    ends.push(w.storage().committed_size());
    commit(
        &mut w,
        &mut m,
        vec![(0, Some(rng.bytes(33))), (3, Some(rng.bytes(7)))],
    );
    ends.push(w.storage().committed_size());
    let _ = t1;
    drop(w);
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(*ends.last().unwrap(), bytes.len() as u64);
    (bytes, m, ends)
}

fn prefix(m: &Model, n: usize) -> Model {
    let mut p = m.clone();
    p.txns.truncate(n);
    let keep: std::collections::HashSet<Tid> = p.txns.iter().map(|t| t.0).collect();
    p.revs.retain(|(_, t), _| keep.contains(t));
    p
}

#[test]
fn truncated_everywhere() {
    let dir = tmpdir();
    let (bytes, m, ends) = sample_db(dir.path());
    m.check(
        &FileStorage::open(dir.path().join("sample.fs")).unwrap(),
        "full",
    );
    let p = dir.path().join("t.fs");
    for cut in 4..bytes.len() {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let fs = FileStorage::open(&p).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let complete = ends.iter().filter(|&&e| e <= cut as u64).count();
        let want = prefix(&m, complete);
        let ctx = format!("cut at {cut}");
        if ends.contains(&(cut as u64)) || cut % 7 == 0 {
            want.check(&fs, &ctx);
        } else {
            assert_eq!(
                fs.last_tid().unwrap(),
                want.txns.last().map_or(Tid::ZERO, |t| t.0),
                "{ctx}"
            );
        }
        // a sync of a truncated tail is "in progress", not an error (yet)
        assert_eq!(fs.sync().unwrap(), fs.last_tid().unwrap(), "{ctx}");
    }
}

fn allowed(e: &Error, len: usize) -> bool {
    match e {
        Error::Corrupt { offset, .. } => *offset <= len as u64,
        Error::NoSuchObject { .. } | Error::NotYet { .. } | Error::Deleted { .. } => true,
        _ => false,
    }
}

/// Open `path` and read everything; panics on a non-typed error.
fn exercise(path: &Path, len: usize, oids: &[Oid], ctx: &str) -> (usize, usize) {
    let (mut ok, mut bad) = (0, 0);
    let fs = match FileStorage::open(path) {
        Ok(fs) => fs,
        Err(e) => {
            assert!(allowed(&e, len), "{ctx}: open: {e:?}");
            return (0, 1);
        }
    };
    let mut tids = vec![Tid::ZERO, Tid::MAX];
    for t in fs.iterate(Tid::ZERO, Tid::MAX).unwrap() {
        match t {
            Ok(t) => tids.push(t.tid),
            Err(e) => assert!(allowed(&e, len), "{ctx}: iterate: {e:?}"),
        }
    }
    for &oid in oids {
        for &at in &tids {
            match fs.load(oid, at) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(allowed(&e, len), "{ctx}: load({oid}, {at}): {e:?}");
                    bad += 1;
                }
            }
        }
    }
    let _ = fs
        .sync()
        .map_err(|e| assert!(allowed(&e, len), "{ctx}: sync: {e:?}"));
    (ok, bad)
}

#[test]
fn flipped_bytes() {
    let dir = tmpdir();
    let (bytes, m, _) = sample_db(dir.path());
    let oids: Vec<Oid> = (0..6).map(Oid).collect();
    let p = dir.path().join("f.fs");
    let mut corrupt_opens = 0;
    for pos in 0..bytes.len() {
        for pat in [0xffu8, 0x01, 0x80, 0x00] {
            let mut b = bytes.clone();
            if pat == 0 {
                b[pos] = 0;
            } else {
                b[pos] ^= pat;
            }
            if b == bytes {
                continue;
            }
            std::fs::write(&p, &b).unwrap();
            let (_, bad) = exercise(&p, b.len(), &oids, &format!("byte {pos} ^ {pat:#x}"));
            corrupt_opens += bad;
        }
    }
    eprintln!("{} bytes, {corrupt_opens} damaged views", bytes.len());
    // sanity: the checks do detect damage
    assert!(corrupt_opens > bytes.len(), "{corrupt_opens}");
    let _ = m;
}

#[test]
fn pointer_loops_and_bad_pointers() {
    let dir = tmpdir();
    let p = dir.path().join("loop.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let t1 = w
        .commit(NewTxn {
            records: vec![(Oid(1), NewData::Data(b"one".to_vec()))],
            ..Default::default()
        })
        .unwrap();
    let t2 = w
        .commit(NewTxn {
            records: vec![(Oid(1), NewData::Data(b"two".to_vec()))],
            ..Default::default()
        })
        .unwrap();
    let u = w.undo(t2).unwrap();
    drop(w);
    let bytes = std::fs::read(&p).unwrap();
    // layout: txn1 @4: hdr 23, record @27 (42+3), tlen; txn2 @80: record @103; txn3 @156: record @179 (42+8)
    let rec3 = 4 + 23 + 45 + 8 + 23 + 45 + 8 + 23;
    assert_eq!(&bytes[rec3..rec3 + 8], &1u64.to_be_bytes());
    let set = |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    let cases: Vec<(&str, usize, u64)> = vec![
        ("backpointer to itself", rec3 + 42, rec3 as u64),
        ("backpointer forward", rec3 + 42, rec3 as u64 + 10),
        ("backpointer into the header", rec3 + 42, 5),
        ("backpointer to another txn header", rec3 + 42, 80),
        ("prev to itself", rec3 + 16, rec3 as u64),
        ("prev into the middle of a record", rec3 + 16, 30),
    ];
    for (what, at, v) in cases {
        let mut b = bytes.clone();
        set(&mut b, at, v);
        std::fs::write(&p, &b).unwrap();
        match FileStorage::open(&p) {
            Err(Error::Corrupt { .. }) => {}
            Ok(fs) => {
                for at in [t1, t2, u, Tid::MAX] {
                    match fs.load(Oid(1), at) {
                        Ok(l) => assert!(
                            at != u && at != Tid::MAX || what.starts_with("prev"),
                            "{what}: {l:?}"
                        ),
                        Err(Error::Corrupt { .. }) => {}
                        Err(e) => panic!("{what}: {e:?}"),
                    }
                }
            }
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
    // sanity: the undamaged file loads
    std::fs::write(&p, &bytes).unwrap();
    let fs = FileStorage::open(&p).unwrap();
    assert_eq!(&fs.load(Oid(1), Tid::MAX).unwrap().data[..], b"one");
}

#[test]
fn bad_magic() {
    let dir = tmpdir();
    let p = dir.path().join("m.fs");
    for magic in [&b"FS22"[..], b"fs30", b"\0\0\0\0", b"FS3", b"X"] {
        let mut b = magic.to_vec();
        b.extend_from_slice(&[0u8; 40]);
        std::fs::write(&p, &b).unwrap();
        assert!(
            matches!(FileStorage::open(&p), Err(Error::Corrupt { offset: 0, .. })),
            "{magic:?}"
        );
    }
    // a prefix of the magic alone: an empty database still being created
    std::fs::write(&p, b"FS3").unwrap();
    assert_eq!(
        FileStorage::open(&p).unwrap().last_tid().unwrap(),
        Tid::ZERO
    );
}

//! The FileStorage writer: commits, deletions, undo, tid rules, reopening,
//! recovery of a file ending in an unfinished commit. The main test runs
//! random operation sequences (seeded; `WCFS_TEST_SEED` replays one) against
//! a brute-force model of every revision and checks `load(oid, at)` for
//! every oid at every tid (and the tids around each), through the writer, a
//! fresh read-only opener, and a reader that follows by `sync`.

mod fs1_common;

use fs1_common::{seed, Model, Rng};
use zodb::fs1::{FileStorage, NewData, NewTxn, Writer};
use zodb::{Error, Oid, Storage, Tid};

fn txn(records: Vec<(Oid, NewData)>) -> NewTxn {
    NewTxn {
        user: b"tester".to_vec(),
        description: b"test txn".to_vec(),
        records,
        ..NewTxn::default()
    }
}

fn data(s: &str) -> NewData {
    NewData::Data(s.as_bytes().to_vec())
}

#[test]
fn basics_delete_undo() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    assert!(matches!(Writer::open(&p, false), Err(Error::Io { .. })));
    let mut w = Writer::open(&p, true).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"FS30");
    assert_eq!(w.last_tid(), Tid::ZERO);
    let mut m = Model::default();
    let commit = |w: &mut Writer, m: &mut Model, recs: Vec<(Oid, Option<&str>)>| -> Tid {
        let t = w
            .commit(txn(recs
                .iter()
                .map(|(o, d)| (*o, d.map_or(NewData::Delete, data)))
                .collect()))
            .unwrap();
        for (o, d) in &recs {
            m.revs.insert((*o, t), d.map(|s| s.as_bytes().to_vec()));
        }
        m.txns.push((t, recs.iter().map(|r| r.0).collect()));
        t
    };

    let o1 = w.new_oid();
    assert_eq!(o1, Oid(1));
    let t1 = commit(
        &mut w,
        &mut m,
        vec![(Oid(0), Some("root")), (o1, Some("a1"))],
    );
    let t2 = commit(&mut w, &mut m, vec![(o1, Some("a2"))]);
    assert!(t2 > t1);
    assert_eq!(&w.load(o1, t1).unwrap().data[..], b"a1");

    // undo of an update: older data, serial = the undo txn
    let u1 = w.undo(t2).unwrap();
    m.revs.insert((o1, u1), Some(b"a1".to_vec()));
    m.txns.push((u1, vec![o1]));
    let l = w.load(o1, u1).unwrap();
    assert_eq!((&l.data[..], l.serial), (&b"a1"[..], u1));
    m.check(&w.storage(), "after undo of update");

    // undo conflict: t1 wrote o1, which was changed since
    let head = w.last_tid();
    match w.undo(t1) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("conflict"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.last_tid(), head, "a failed undo commits nothing");

    // undo of the undo: back to a2
    let u2 = w.undo(u1).unwrap();
    m.revs.insert((o1, u2), Some(b"a2".to_vec()));
    m.txns.push((u2, vec![o1]));
    assert_eq!(&w.load(o1, Tid::MAX).unwrap().data[..], b"a2");

    // undo of a creation: Deleted
    let o2 = w.new_oid();
    assert_eq!(o2, Oid(2));
    let t3 = commit(&mut w, &mut m, vec![(o2, Some("b"))]);
    let u3 = w.undo(t3).unwrap();
    m.revs.insert((o2, u3), None);
    m.txns.push((u3, vec![o2]));
    match w.load(o2, Tid::MAX) {
        Err(Error::Deleted {
            oid, deleted_at, ..
        }) => assert_eq!((oid, deleted_at), (o2, u3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(&w.load(o2, t3).unwrap().data[..], b"b");
    // ... and of that undo: the object is back (through the backpointer)
    let u4 = w.undo(u3).unwrap();
    m.revs.insert((o2, u4), Some(b"b".to_vec()));
    m.txns.push((u4, vec![o2]));

    // deletion
    let t4 = commit(&mut w, &mut m, vec![(Oid(0), None)]);
    assert!(matches!(w.load(Oid(0), t4), Err(Error::Deleted { .. })));
    assert!(matches!(
        w.commit(txn(vec![(Oid(77), NewData::Delete)])),
        Err(Error::NoSuchObject { .. })
    ));
    // undo of a deletion: back to the root data
    let u5 = w.undo(t4).unwrap();
    m.revs.insert((Oid(0), u5), Some(b"root".to_vec()));
    m.txns.push((u5, vec![Oid(0)]));

    // bad commits leave nothing behind
    let size = std::fs::metadata(&p).unwrap().len();
    let head = w.last_tid();
    for bad in [
        NewTxn {
            tid: Some(head),
            ..txn(vec![(o1, data("x"))])
        },
        NewTxn {
            tid: Some(Tid(1)),
            ..txn(vec![(o1, data("x"))])
        },
        txn(vec![(o1, data("x")), (o1, data("y"))]),
        txn(vec![(o1, NewData::Data(Vec::new()))]),
        NewTxn {
            user: vec![b'u'; 70000],
            ..txn(vec![])
        },
        txn(vec![(Oid(1000), NewData::Undo(t1))]),
    ] {
        assert!(w.commit(bad.clone()).is_err(), "{bad:?}");
        assert_eq!(w.last_tid(), head);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), size);
    }
    assert!(w.undo(Tid(12345)).is_err());

    // an explicit tid, and an empty transaction
    let t5 = w
        .commit(NewTxn {
            tid: Some(Tid(head.0 + 1000)),
            ..txn(vec![])
        })
        .unwrap();
    assert_eq!(t5, Tid(head.0 + 1000));
    m.txns.push((t5, vec![]));

    // new_oid: above everything stored and handed out
    let t6 = commit(&mut w, &mut m, vec![(Oid(50), Some("fifty"))]);
    assert_eq!(w.new_oid(), Oid(51));
    assert_eq!(w.new_oid(), Oid(52));
    let _ = t6;

    m.check(&w.storage(), "writer");
    let info: Vec<_> = w
        .storage()
        .iterate(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(&info[0].user[..], b"tester");
    assert_eq!(&info[0].description[..], b"test txn");
    assert_eq!(info[0].status, b' ');
    drop(w);

    // reopen: read-only and read-write see the same
    m.check(&FileStorage::open(&p).unwrap(), "reopened read-only");
    let mut w = Writer::open(&p, false).unwrap();
    m.check(&w.storage(), "reopened writer");
    assert_eq!(
        w.new_oid(),
        Oid(51),
        "new_oid after reopen: above the max oid"
    );
}

#[test]
fn big_records() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let mut rng = Rng::new(1);
    let big = rng.bytes(2 << 20);
    let sizes = [1usize, 4000, 4054, 4055, 4096, 5000, 70000];
    let mut recs: Vec<(Oid, NewData)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (Oid(i as u64), NewData::Data(rng.bytes(n))))
        .collect();
    recs.push((Oid(100), NewData::Data(big.clone())));
    let t = w.commit(txn(recs.clone())).unwrap();
    let fs = FileStorage::open(&p).unwrap();
    for (oid, d) in &recs {
        let NewData::Data(d) = d else { unreachable!() };
        let l = fs.load(*oid, t).unwrap();
        assert_eq!(l.data.len(), d.len());
        assert!(l.data[..] == d[..], "{oid}");
    }
}

/// Random operation sequences against the model.
#[test]
fn random_against_model() {
    let base = seed("random_against_model");
    for round in 0..4u64 {
        run_random(base.wrapping_add(round), 120);
    }
}

fn run_random(seed: u64, nops: usize) {
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let follower = FileStorage::open(&p).unwrap();
    let mut m = Model::default();
    let ctx = |i: usize| format!("seed {seed} op {i}");
    for i in 0..nops {
        let r = rng.below(100);
        if r < 70 || m.txns.is_empty() {
            // a commit of 0..6 records
            let n = rng.below(6) as usize;
            let mut recs = Vec::new();
            let mut used = std::collections::HashSet::new();
            for _ in 0..n {
                let existing = m.oids();
                let oid = if existing.is_empty() || rng.chance(30) {
                    w.new_oid()
                } else {
                    existing[rng.below(existing.len() as u64) as usize]
                };
                if !used.insert(oid) {
                    continue;
                }
                let exists = m.latest(oid).is_some();
                if exists && rng.chance(20) {
                    recs.push((oid, None));
                } else {
                    let len = match rng.below(10) {
                        0 => 5000 + rng.below(20000) as usize,
                        _ => 1 + rng.below(300) as usize,
                    };
                    recs.push((oid, Some(rng.bytes(len))));
                }
            }
            let t = w
                .commit(txn(recs
                    .iter()
                    .map(|(o, d)| (*o, d.clone().map_or(NewData::Delete, NewData::Data)))
                    .collect()))
                .unwrap_or_else(|e| panic!("{}: {e}", ctx(i)));
            for (o, d) in &recs {
                m.revs.insert((*o, t), d.clone());
            }
            m.txns.push((t, recs.iter().map(|r| r.0).collect()));
        } else if r < 92 {
            // undo of a random transaction
            let (ut, oids) = m.txns[rng.below(m.txns.len() as u64) as usize].clone();
            let conflict = oids.iter().any(|o| m.latest(*o).unwrap().0 != ut);
            let res = w.undo(ut);
            if conflict {
                assert!(
                    matches!(res, Err(Error::Unsupported(_))),
                    "{}: undo {ut} must conflict: {res:?}",
                    ctx(i)
                );
            } else {
                let t = res.unwrap_or_else(|e| panic!("{}: undo {ut}: {e}", ctx(i)));
                for o in &oids {
                    let before = m
                        .revs
                        .range((*o, Tid::ZERO)..(*o, ut))
                        .next_back()
                        .and_then(|(_, v)| v.clone());
                    m.revs.insert((*o, t), before);
                }
                m.txns.push((t, oids));
            }
        } else {
            // reopen the writer
            drop(w);
            w = Writer::open(&p, false).unwrap();
        }
        if i % 40 == 39 {
            m.check(&w.storage(), &ctx(i));
            follower.sync().unwrap();
            m.check(&follower, &format!("{} follower", ctx(i)));
        }
    }
    m.check(&w.storage(), &format!("seed {seed} end"));
    drop(w);
    m.check(
        &FileStorage::open(&p).unwrap(),
        &format!("seed {seed} reopened"),
    );
    follower.sync().unwrap();
    m.check(&follower, &format!("seed {seed} follower end"));
}

/// A file that ends with an unfinished commit (status 'c') or a partial
/// record: readers ignore it and leave it alone; the writer saves it to
/// `.tr0` and truncates it.
#[test]
fn writer_truncates_unfinished_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let t1 = w.commit(txn(vec![(Oid(0), data("root"))])).unwrap();
    let t2 = w.commit(txn(vec![(Oid(0), data("root2"))])).unwrap();
    drop(w);
    let full = std::fs::read(&p).unwrap();
    let fs = FileStorage::open(&p).unwrap();
    let t2pos = fs.iterate(t2, t2).unwrap().count();
    assert_eq!(t2pos, 1);
    // find the second txn's position: the first txn's redundant length
    let tlen1 = u64::from_be_bytes(full[12..20].try_into().unwrap());
    let pos2 = 4 + tlen1 as usize + 8;
    let mut unfinished = full.clone();
    unfinished[pos2 + 16] = b'c';
    for (name, bytes) in [
        ("checkpoint", unfinished),
        ("partial", full[..full.len() - 3].to_vec()),
        ("header", full[..pos2 + 10].to_vec()),
    ] {
        std::fs::write(&p, &bytes).unwrap();
        let fs = FileStorage::open(&p).unwrap();
        assert_eq!(fs.last_tid().unwrap(), t1, "{name}");
        assert_eq!(fs.committed_size(), pos2 as u64, "{name}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            bytes,
            "{name}: a reader changes nothing"
        );
        let w = Writer::open(&p, false).unwrap();
        assert_eq!(w.last_tid(), t1, "{name}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), pos2 as u64, "{name}");
        let tr = tmp.path().join("Data.fs.tr0");
        assert_eq!(std::fs::read(&tr).unwrap(), &bytes[pos2..], "{name}");
        std::fs::remove_file(&tr).unwrap();
        drop(w);
        // the reader that saw the unfinished commit is fine with the truncation
        assert_eq!(fs.sync().unwrap(), t1, "{name}");
    }
}

/// Loads from many threads while the writer commits.
#[test]
fn parallel_loads_during_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let st = w.storage();
    let mut tids = vec![];
    for i in 0..50u64 {
        tids.push(
            w.commit(txn((0..8)
                .map(|o| (Oid(o), NewData::Data(format!("{o}@{i}").into_bytes())))
                .collect()))
                .unwrap(),
        );
    }
    let tids = std::sync::Arc::new(tids);
    std::thread::scope(|s| {
        for th in 0..4u64 {
            let st = st.clone();
            let tids = tids.clone();
            s.spawn(move || {
                for round in 0..300u64 {
                    let i = ((round * 7 + th) % 50) as usize;
                    let o = (round + th) % 8;
                    let l = st.load(Oid(o), tids[i]).unwrap();
                    assert_eq!(l.data[..], format!("{o}@{i}").into_bytes()[..]);
                    assert_eq!(l.serial, tids[i]);
                }
            });
        }
        for i in 50..100u64 {
            w.commit(txn(vec![(Oid(100 + i), NewData::Data(vec![1; 10]))]))
                .unwrap();
        }
    });
}

//! Unit tests of the fs1 internals: the read-ahead buffer, scan stop
//! reasons, the transaction table lookups, and that loads of the newest
//! revision read nothing but that revision.

use super::format::{DATA_HDR_LEN, TXN_HDR_LEN};
use super::index::{scan_forward, BufAt, State, Stop, TxnEntry};
use super::{FileStorage, NewData, NewTxn, Writer};
use crate::error::Error;
use crate::storage::Storage;
use crate::types::{Oid, Tid};
use std::fs::File;
use std::os::unix::fs::FileExt;

fn commit(w: &mut Writer, recs: &[(u64, &[u8])]) -> Tid {
    w.commit(NewTxn {
        records: recs
            .iter()
            .map(|(o, d)| (Oid(*o), NewData::Data(d.to_vec())))
            .collect(),
        ..NewTxn::default()
    })
    .unwrap()
}

#[test]
fn bufat_limits() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, (0..100u8).collect::<Vec<_>>()).unwrap();
    let f = File::open(&p).unwrap();
    let mut b = BufAt::new(&f, &p, 50, 16);
    assert_eq!(b.get(0, 4).unwrap(), &[0, 1, 2, 3]);
    assert_eq!(
        b.get(10, 4).unwrap(),
        &[10, 11, 12, 13],
        "served from the read-ahead"
    );
    assert_eq!(b.get(48, 4).unwrap(), &[48, 49], "cut at the limit");
    assert_eq!(b.get(50, 4).unwrap(), &[] as &[u8]);
    assert_eq!(b.get(u64::MAX - 1, 4).unwrap(), &[] as &[u8]);
    assert_eq!(b.get(5, 40).unwrap().len(), 40, "longer than a chunk");
    let mut b = BufAt::new(&f, &p, 1000, 16);
    assert_eq!(b.get(98, 4).unwrap(), &[98, 99], "cut at end of file");
}

#[test]
fn scan_stops_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let t1 = commit(&mut w, &[(0, b"a")]);
    let t2 = commit(&mut w, &[(0, b"b"), (3, b"c")]);
    drop(w);
    let bytes = std::fs::read(&p).unwrap();
    let f = File::open(&p).unwrap();
    let size = bytes.len() as u64;
    let out = scan_forward(&f, &p, 4, size, Tid::ZERO, 7).unwrap();
    assert_eq!(out.stop, Stop::End);
    assert_eq!(
        out.txns.iter().map(|e| e.tid).collect::<Vec<_>>(),
        vec![t1, t2]
    );
    assert_eq!(out.top, size);
    assert_eq!(out.max_oid, Some(Oid(3)));
    let pos2 = out.txns[1].pos;
    assert_eq!(out.updates[&Oid(0)], pos2 + TXN_HDR_LEN);

    // the scan reads no further than the size it is given
    let out = scan_forward(&f, &p, 4, size - 1, Tid::ZERO, 7).unwrap();
    assert_eq!(
        (out.stop, out.top, out.txns.len()),
        (Stop::Incomplete, pos2, 1)
    );
    let out = scan_forward(&f, &p, 4, pos2 + 5, Tid::ZERO, 7).unwrap();
    assert_eq!((out.stop, out.top), (Stop::Incomplete, pos2));
    // the second transaction as a checkpoint
    f.sync_all().unwrap();
    let fw = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    fw.write_all_at(b"c", pos2 + 16).unwrap();
    let out = scan_forward(&f, &p, 4, size, Tid::ZERO, 7).unwrap();
    assert_eq!((out.stop, out.top), (Stop::Checkpoint, pos2));
    // a scan that must start after a later tid: corruption
    fw.write_all_at(b" ", pos2 + 16).unwrap();
    match scan_forward(&f, &p, 4, size, t2, 7) {
        Err(Error::Corrupt { offset: 4, .. }) => {}
        other => panic!("{other:?}"),
    }

    let mut s = State {
        top: 4,
        ..State::default()
    };
    s.merge(scan_forward(&f, &p, 4, size, Tid::ZERO, 1 << 20).unwrap());
    assert_eq!(s.last_tid, t2);
    assert_eq!(s.first_after(Tid::ZERO), 0);
    assert_eq!(s.first_after(t1), 1);
    assert_eq!(s.first_after(t2), 2);
    assert_eq!(s.txn_span(t1), Some((4, pos2 - 8)));
    assert_eq!(s.txn_span(t2), Some((pos2, size - 8)));
    assert_eq!(s.txn_span(Tid(t1.0 + 1)), None);
    assert_eq!(
        s.txns,
        vec![
            TxnEntry { tid: t1, pos: 4 },
            TxnEntry { tid: t2, pos: pos2 }
        ]
    );
}

/// Loading the newest revision touches only its own record: with every
/// older record destroyed it still works, while older states report the
/// corruption.
#[test]
fn newest_revision_reads_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    let mut w = Writer::open(&p, true).unwrap();
    let t1 = commit(&mut w, &[(1, b"one")]);
    let t2 = commit(&mut w, &[(1, b"two")]);
    let t3 = commit(&mut w, &[(1, b"three")]);
    drop(w);
    let fs = FileStorage::open(&p).unwrap();
    // wipe the data record headers of t1 and t2
    let fw = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    for t in [t1, t2] {
        let pos = fs.core.state().txn_span(t).unwrap().0 + TXN_HDR_LEN;
        fw.write_all_at(&[0xee; DATA_HDR_LEN as usize], pos)
            .unwrap();
    }
    let l = fs.load(Oid(1), Tid::MAX).unwrap();
    assert_eq!((&l.data[..], l.serial), (&b"three"[..], t3));
    assert_eq!(&fs.load(Oid(1), t3).unwrap().data[..], b"three");
    for at in [t1, t2] {
        assert!(matches!(fs.load(Oid(1), at), Err(Error::Corrupt { .. })));
    }
}

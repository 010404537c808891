//! Loads read through a read-only mapping of the committed part of the file
//! that is replaced as the file grows (zodb/src/fs1/map.rs). Data handed
//! out must stay valid and unchanged after any number of remaps, while
//! other threads load and a writer keeps committing; a reader following
//! the file from another handle must see the same.

use std::sync::atomic::{AtomicBool, Ordering};
use zodb::fs1::{FileStorage, NewData, NewTxn, Writer};
use zodb::{Oid, Storage, Tid};

fn content(oid: u64, round: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (oid as usize * 31 + round as usize * 7 + i) as u8)
        .collect()
}

#[test]
fn held_data_survives_remaps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let mut w = Writer::open(&path, true).unwrap();
    let oids: Vec<Oid> = (0..8).map(|_| w.new_oid()).collect();
    let commit = |w: &mut Writer, round: u64| -> Tid {
        let records = oids
            .iter()
            .map(|o| {
                (
                    *o,
                    NewData::Data(content(o.0, round, 1000 + (round as usize * 997) % 70_000)),
                )
            })
            .collect();
        w.commit(NewTxn {
            records,
            ..NewTxn::default()
        })
        .unwrap()
    };
    let t0 = commit(&mut w, 0);

    // a reader on its own handle, following
    let reader = FileStorage::open(&path).unwrap();
    let held: Vec<_> = oids
        .iter()
        .map(|o| reader.load(*o, t0).unwrap().data)
        .collect();

    let stop = AtomicBool::new(false);
    let tids = std::thread::scope(|s| {
        // loaders: always the latest state they know, checked against the formula
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let head = reader.sync().unwrap();
                    for o in &oids {
                        let l = reader.load(*o, head).unwrap();
                        assert_eq!(l.serial, head);
                        assert!(!l.data.is_empty());
                    }
                }
            });
        }
        let mut tids = vec![t0];
        for round in 1..200 {
            tids.push(commit(&mut w, round));
        }
        stop.store(true, Ordering::Relaxed);
        tids
    });

    // everything, at every revision, through the following reader
    reader.sync().unwrap();
    for (round, at) in tids.iter().enumerate() {
        for o in &oids {
            let want = content(o.0, round as u64, 1000 + (round * 997) % 70_000);
            assert_eq!(
                reader.load(*o, *at).unwrap().data,
                want,
                "{o:?} round {round}"
            );
        }
    }
    // what was loaded before all the remaps is unchanged
    for (o, d) in oids.iter().zip(&held) {
        assert_eq!(d, &content(o.0, 0, 1000));
    }
    assert!(
        reader.committed_size() > 5 << 20,
        "file too small to have remapped much"
    );
}

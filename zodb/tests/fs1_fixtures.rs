//! FileStorage reader against real databases written by Python ZODB
//! (`shared/testdata/zblk/*/zblk.fs`, see its README): head, transactions,
//! oids, loads at both revisions. Each fixture is copied to a temporary
//! directory first, and we check that opening it creates no file there.

use std::path::{Path, PathBuf};
use zodb::fs1::FileStorage;
use zodb::{Error, Oid, Storage, Tid};

const TID1: Tid = Tid(0x0285cbac20da7419);
const TID2: Tid = Tid(0x0285cbac3851eb99);

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/zblk");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path().join("zblk.fs"))
        .filter(|p| p.exists())
        .collect();
    v.sort();
    assert_eq!(v.len(), 4, "fixtures in {}", dir.display());
    v
}

#[test]
fn zblk_fixtures() {
    for src in fixtures() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("zblk.fs");
        std::fs::copy(&src, &path).unwrap();
        let fs = FileStorage::open(&path).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        let what = src.display();

        assert_eq!(fs.last_tid().unwrap(), TID2, "{what}");
        assert_eq!(fs.sync().unwrap(), TID2, "{what}");
        assert_eq!(fs.object_count(), 0x48, "{what}");
        assert_eq!(fs.max_oid(), Some(Oid(0x47)), "{what}");
        assert_eq!(fs.committed_size(), std::fs::metadata(&path).unwrap().len());

        let txns: Vec<_> = fs
            .iterate(Tid::ZERO, Tid::MAX)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(txns.len(), 2, "{what}");
        assert_eq!(txns[0].tid, TID1);
        assert_eq!(txns[0].status, b' ');
        assert_eq!(&txns[0].description[..], b"initial database creation");
        assert_eq!(txns[0].oids, vec![Oid(0)]);
        assert_eq!(txns[1].tid, TID2);
        // the second transaction changes the root (oid 0) and creates 1..=0x47
        let want: Vec<Oid> = (0..=0x47).map(Oid).collect();
        let mut got = txns[1].oids.clone();
        assert_eq!(got.len(), 0x48, "{what}: each oid once");
        got.sort();
        assert_eq!(got, want, "{what}");

        // ranges
        let only2: Vec<_> = fs
            .iterate(Tid(TID1.0 + 1), Tid::MAX)
            .unwrap()
            .map(|t| t.unwrap().tid)
            .collect();
        assert_eq!(only2, vec![TID2]);
        let only1: Vec<_> = fs
            .iterate(Tid::ZERO, TID1)
            .unwrap()
            .map(|t| t.unwrap().tid)
            .collect();
        assert_eq!(only1, vec![TID1]);
        assert_eq!(fs.iterate(Tid(TID2.0 + 1), Tid::MAX).unwrap().count(), 0);

        // loads
        let z = fs.load(Oid(1), TID2).unwrap();
        assert_eq!(z.serial, TID2);
        assert!(
            z.data.windows(8).any(|w| w == b"ZBigFile"),
            "{what}: oid 1 is the ZBigFile"
        );
        assert_eq!(fs.load(Oid(1), Tid::MAX).unwrap(), z);
        match fs.load(Oid(1), TID1) {
            Err(Error::NotYet { oid, at, created }) => {
                assert_eq!((oid, at, created), (Oid(1), TID1, TID2))
            }
            other => panic!("{what}: {other:?}"),
        }
        let root = fs.load(Oid(0), TID1).unwrap();
        assert_eq!(root.serial, TID1);
        let root2 = fs.load(Oid(0), TID2).unwrap();
        assert_eq!(root2.serial, TID2);
        assert_ne!(root.data, root2.data);
        for oid in 1..=0x47 {
            assert!(
                matches!(fs.load(Oid(oid), TID1), Err(Error::NotYet { .. })),
                "{what} {oid}"
            );
            let l = fs.load(Oid(oid), TID2).unwrap();
            assert_eq!(l.serial, TID2);
            assert!(!l.data.is_empty());
        }
        assert!(matches!(
            fs.load(Oid(0x48), Tid::MAX),
            Err(Error::NoSuchObject { oid: Oid(0x48) })
        ));
        assert!(matches!(
            fs.load(Oid(0), Tid(TID1.0 - 1)),
            Err(Error::NotYet { .. })
        ));

        // the ZBlk0 record (oid 2) holds 16 KiB of data: bigger than one
        // header read
        assert!(fs.load(Oid(2), TID2).unwrap().data.len() > 16384);

        // read-only open created nothing
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("zblk.fs")], "{what}");
    }
}

#[test]
fn missing_and_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    assert!(matches!(FileStorage::open(&p), Err(Error::Io { .. })));
    std::fs::write(&p, b"").unwrap();
    let fs = FileStorage::open(&p).unwrap();
    assert_eq!(fs.last_tid().unwrap(), Tid::ZERO);
    assert_eq!(fs.sync().unwrap(), Tid::ZERO);
    assert_eq!(fs.iterate(Tid::ZERO, Tid::MAX).unwrap().count(), 0);
    assert!(matches!(
        fs.load(Oid(0), Tid::MAX),
        Err(Error::NoSuchObject { .. })
    ));
    for magic in [b"FS21", b"FS30"] {
        std::fs::write(&p, magic).unwrap();
        let fs = FileStorage::open(&p).unwrap();
        assert_eq!(fs.last_tid().unwrap(), Tid::ZERO);
    }
    std::fs::write(&p, b"FS40").unwrap();
    match FileStorage::open(&p) {
        Err(Error::Corrupt { offset: 0, .. }) => {}
        other => panic!("{other:?}"),
    }
    std::fs::write(&p, b"XYZ").unwrap();
    assert!(matches!(
        FileStorage::open(&p),
        Err(Error::Corrupt { offset: 0, .. })
    ));
}

/// Our writer continues a database Python wrote (magic kept, old states
/// intact), and a Python-written `Data.fs.index`/`.lock` beside it is fine.
#[test]
fn writer_continues_fixture() {
    for src in fixtures() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("zblk.fs");
        std::fs::copy(&src, &path).unwrap();
        std::fs::copy(
            src.with_extension("fs.index"),
            tmp.path().join("zblk.fs.index"),
        )
        .unwrap();
        let magic = std::fs::read(&path).unwrap()[..4].to_vec();
        let old1 = FileStorage::open(&path)
            .unwrap()
            .load(Oid(1), TID2)
            .unwrap();
        let mut w = zodb::fs1::Writer::open(&path, false).unwrap();
        assert_eq!(w.last_tid(), TID2);
        assert_eq!(w.new_oid(), Oid(0x48));
        let t = w
            .commit(zodb::fs1::NewTxn {
                records: vec![(Oid(1), zodb::fs1::NewData::Data(b"new state".to_vec()))],
                ..Default::default()
            })
            .unwrap();
        assert!(t > TID2);
        let u = w.undo(t).unwrap();
        drop(w);
        let fs = FileStorage::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap()[..4], magic[..]);
        assert_eq!(fs.last_tid().unwrap(), u);
        assert_eq!(fs.load(Oid(1), TID2).unwrap(), old1);
        assert_eq!(&fs.load(Oid(1), t).unwrap().data[..], b"new state");
        let l = fs.load(Oid(1), u).unwrap();
        assert_eq!((l.data.clone(), l.serial), (old1.data.clone(), u));
    }
}

//! `Data.fs.lock`: the writer holds it like zc.lockfile (flock, content
//! `" <pid>\n"`), a second writer gets `Error::Locked`, dropping releases it
//! and leaves the file; readers neither take nor create it.

use zodb::fs1::{FileStorage, NewTxn, Writer};
use zodb::{Error, Storage};

#[test]
fn second_writer_is_locked_out() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    let lock = tmp.path().join("Data.fs.lock");
    // a stale, longer lock file from someone else: reused and rewritten
    std::fs::write(&lock, b" 999999999 stale content\n").unwrap();
    let mut w = Writer::open(&p, true).unwrap();
    assert_eq!(
        std::fs::read(&lock).unwrap(),
        format!(" {}\n", std::process::id()).into_bytes()
    );
    match Writer::open(&p, true) {
        Err(Error::Locked { path }) => assert_eq!(path, lock),
        other => panic!("{other:?}"),
    }
    // readers are not affected
    let t = w.commit(NewTxn::default()).unwrap();
    let ro = FileStorage::open(&p).unwrap();
    assert_eq!(ro.last_tid().unwrap(), t);
    drop(w);
    assert!(lock.exists(), "like zc.lockfile, the lock file stays");
    let w2 = Writer::open(&p, false).unwrap();
    assert_eq!(w2.last_tid(), t);
    assert!(matches!(Writer::open(&p, false), Err(Error::Locked { .. })));
    drop(w2);
    drop(Writer::open(&p, false).unwrap());
}

#[test]
fn reader_creates_no_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("Data.fs");
    std::fs::write(&p, b"FS30").unwrap();
    let fs = FileStorage::open(&p).unwrap();
    fs.sync().unwrap();
    assert!(!tmp.path().join("Data.fs.lock").exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

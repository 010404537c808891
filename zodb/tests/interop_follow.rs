//! Following a database while real Python ZODB commits to it
//! (tests/py/committer.py, another process holding the FileStorage lock):
//! the watcher must report every transaction exactly once, in order, never
//! one still being committed, and loads at each reported tid must show what
//! that transaction wrote. (Following our own writer, in-process and from a
//! child process, is in fs1_follow.rs.)

mod py_common;

use py_common::{py_cmd, run_py};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;
use zodb::fs1::FileStorage;
use zodb::zbigfile::{self, ZBigFile};
use zodb::{Storage, Tid};

/// Kills the committer if the test fails half way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_python_commits() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("follow.fs");
    let ps = path.to_str().unwrap();
    // create the database and the file (seq 1)
    run_py("committer.py", &[ps, "--txns", "1"]);

    let stor = FileStorage::open(&path).unwrap();
    let start = stor.last_tid().unwrap();
    let mut w = stor.watch(start).unwrap();

    let child = py_cmd(
        "committer.py",
        &[ps, "--txns", &N.to_string(), "--delay-ms", "5"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let printed = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| l.unwrap())
            .take_while(|l| l != "done")
            .collect::<Vec<String>>()
    });

    let mut seen: Vec<Tid> = Vec::new();
    while seen.len() < N {
        let t = w
            .next(Some(Duration::from_secs(30)))
            .unwrap()
            .unwrap_or_else(|| panic!("no txn after {} seen", seen.len()));
        assert!(seen.last().is_none_or(|&p| t.tid > p), "out of order");
        assert!(t.tid > start);
        // what the transaction wrote is visible at its tid
        let files = zbigfile::list(&stor, t.tid).unwrap();
        assert_eq!(files.len(), 1);
        let zf = ZBigFile::load(&stor, files[0].oid, t.tid).unwrap();
        let b0 = zf.load_blk(&stor, 0, t.tid).unwrap().to_vec();
        let seq = u64::from_be_bytes(b0[..8].try_into().unwrap());
        assert_eq!(seq as usize, seen.len() + 2, "block 0 @{}", t.tid);
        assert_eq!(&b0[8..17], b"committer");
        seen.push(t.tid);
    }
    let printed = printed.join().unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success());
    let printed: Vec<Tid> = printed.iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(seen, printed);
    // nothing more, and nothing twice
    assert!(w.next(Some(Duration::from_millis(300))).unwrap().is_none());
    assert_eq!(stor.last_tid().unwrap(), *printed.last().unwrap());
}

/// `Data.fs.lock` keeps Python ZODB and our writer from writing at once,
/// both ways: while a Python process has the FileStorage open, our writer
/// gets `Error::Locked`; while our writer is open, Python's `FileStorage()`
/// raises `zc.lockfile.LockError`.
#[test]
fn python_and_our_writer_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock.fs");
    let ps = path.to_str().unwrap();
    run_py("committer.py", &[ps, "--txns", "1"]);

    // Python holds the lock while it commits (slowly)
    let child = py_cmd("committer.py", &[ps, "--txns", "20", "--delay-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    lines.next().expect("a first commit").unwrap(); // Python has it open now
    match zodb::fs1::Writer::open(&path, false) {
        Err(zodb::Error::Locked { .. }) => {}
        other => panic!("our writer opened a database Python holds: {other:?}"),
    }
    assert!(lines.any(|l| l.unwrap() == "done"));
    assert!(child.0.wait().unwrap().success());

    // we hold it: Python cannot open the storage for writing
    let w = zodb::fs1::Writer::open(&path, false).unwrap();
    let out = std::process::Command::new(py_common::python())
        .arg("-c")
        .arg(
            "import sys, zc.lockfile\n\
             from ZODB.FileStorage import FileStorage\n\
             try:\n    FileStorage(sys.argv[1])\nexcept zc.lockfile.LockError:\n    print('locked')\n",
        )
        .arg(ps)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "locked",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(w);
}

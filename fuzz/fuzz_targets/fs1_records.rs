//! Fuzz the FileStorage reader: the input, after a valid `FS30` magic and
//! also as-is, is opened read-only; every transaction is iterated and every
//! oid loaded at every tid, and a watcher drains what it sees. Nothing may
//! panic or hang; errors are fine.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use zodb::fs1::FileStorage;
use zodb::{Oid, Storage, Tid};

fn scratch() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("fs1_fuzz_{}.fs", std::process::id()))
    })
}

fn exercise(bytes: &[u8]) {
    let path = scratch();
    std::fs::write(path, bytes).expect("write scratch file");
    let Ok(fs) = FileStorage::open(path) else {
        let _ = std::fs::remove_file(path);
        return;
    };
    let mut tids = vec![Tid::ZERO, Tid::MAX];
    let mut oids: Vec<Oid> = vec![Oid(0)];
    if let Ok(it) = fs.iterate(Tid::ZERO, Tid::MAX) {
        for t in it.flatten() {
            tids.push(t.tid);
            tids.push(Tid(t.tid.0.saturating_sub(1)));
            oids.extend(t.oids);
        }
    }
    oids.sort();
    oids.dedup();
    for &oid in oids.iter().take(200) {
        for &at in tids.iter().take(200) {
            let _ = fs.load(oid, at);
        }
    }
    let _ = fs.sync();
    if let Ok(mut w) = fs.watch(Tid::ZERO) {
        for _ in 0..10_000 {
            match w.next(Some(Duration::ZERO)) {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
    let _ = std::fs::remove_file(path);
}

fuzz_target!(|data: &[u8]| {
    let mut with_magic = b"FS30".to_vec();
    with_magic.extend_from_slice(data);
    exercise(&with_magic);
    exercise(data);
});

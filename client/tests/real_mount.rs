//! Against a real wcfs server (optional): runs only when `$WCFS_BIN`
//! names a wcfs binary and /dev/fuse exists; otherwise it prints why and
//! passes. The end-to-end suite lives with the server (fuse-shell); this
//! checks the client's isolation on a real mount: a mapping keeps showing
//! its view's data after a commit (the lazy pin is handled by the pinner
//! while the reading thread is blocked in its page fault), a newer Conn
//! sees the new data, and resync moves the old one forward.

mod common;

use client::{Tid, WCFS};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::{BlkChange, ZWriter};

const BS: usize = 16 << 10;

fn data(tag: u8, blk: i64) -> Vec<u8> {
    vec![tag.wrapping_mul(16).wrapping_add(blk as u8 + 1); BS]
}

fn blk(m: &client::Mapping, b: usize) -> Vec<u8> {
    let mut v = vec![0; BS];
    m.read_at(b * BS, &mut v).unwrap();
    v
}

#[test]
fn isolation_on_a_real_mount() {
    common::init();
    let Some(bin) = std::env::var_os("WCFS_BIN") else {
        eprintln!("WCFS_BIN not set: skipped");
        return;
    };
    if !Path::new("/dev/fuse").exists() {
        eprintln!("no /dev/fuse: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut zw = ZWriter::open(&db).unwrap();
    let d0: Vec<(i64, Vec<u8>)> = (0..2).map(|b| (b, data(0, b))).collect();
    let ch: Vec<BlkChange<'_>> = d0
        .iter()
        .map(|(b, v)| (*b, Some((ZBlkFormat::ZBlk0, v.as_slice()))))
        .collect();
    let (oid, _) = zw.create_file("f", BS as u64, &ch).unwrap();

    let mut srv = Command::new(&bin)
        .args(["--log-level", "debug", "--log-file"])
        .arg(dir.path().join("wcfs.log"))
        .arg("serve")
        .arg(&db)
        .arg(&mnt)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(mnt.join(".wcfs/zurl")).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "not served");
        std::thread::sleep(Duration::from_millis(20));
    }
    let unmount = || {
        let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    };

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let wc = WCFS::open(&mnt).unwrap();
        let at0 = wc.head_at().unwrap();
        let conn = wc.connect(at0).unwrap();
        let f = conn.open(oid).unwrap();
        assert_eq!(f.blksize(), BS as u64);
        let m = f.mmap(0, 3).unwrap();
        assert_eq!(blk(&m, 0), data(0, 0));
        assert_eq!(blk(&m, 1), data(0, 1));
        assert_eq!(blk(&m, 2), vec![0; BS], "beyond the file's size");

        let d1 = [(0i64, data(1, 0))];
        let ch: Vec<BlkChange<'_>> = d1
            .iter()
            .map(|(b, v)| (*b, Some((ZBlkFormat::ZBlk0, v.as_slice()))))
            .collect();
        let at1: Tid = zw.update_file(oid, &ch).unwrap();
        let t0 = Instant::now();
        while wc.head_at().unwrap() < at1 {
            assert!(t0.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(5));
        }
        // The old view keeps its data (pinned to @at0 on access).
        assert_eq!(blk(&m, 0), data(0, 0), "conn @at0 after commit");
        let stats = std::fs::read_to_string(mnt.join(".wcfs/stats")).unwrap();
        let pins: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("pin\t: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(pins >= 1, "no pin was sent:\n{stats}");
        // A new view sees the commit.
        let conn1 = wc.connect(at1).unwrap();
        let f1 = conn1.open(oid).unwrap();
        let m1 = f1.mmap(0, 2).unwrap();
        assert_eq!(blk(&m1, 0), data(1, 0), "conn @at1");
        // Resync moves the old view forward.
        conn.resync(at1).unwrap();
        assert_eq!(blk(&m, 0), data(1, 0), "conn resynced to @at1");
        assert_eq!(blk(&m, 1), data(0, 1));
        drop((m, m1, f, f1));
        conn.close().unwrap();
        conn1.close().unwrap();
    }));
    unmount();
    let t0 = Instant::now();
    while srv.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = srv.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(p) = result {
        let log = std::fs::read_to_string(dir.path().join("wcfs.log")).unwrap_or_default();
        eprintln!("wcfs log:\n{log}");
        std::panic::resume_unwind(p);
    }
}

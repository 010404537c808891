//! The mount's readahead (`./dev bench readahead`; root, /dev/fuse): what
//! reading pulls in beyond what was asked, at `--readahead-kb` 128, 256
//! and 1024, each in the same run:
//!
//! - pins per 1000 random accesses: a 512 MiB file of 2 MiB blocks on
//!   tmpfs, a watch at the state before a commit that changed every
//!   block, then 1000 one-byte page faults at random offsets of random
//!   *even* blocks through a mapping (cold cache). Every block the kernel
//!   reads gets pinned once: pins of odd blocks are the readahead's, data
//!   nobody asked for;
//! - cold sequential read(2) throughput of the whole file (1 MiB reads, no
//!   watch).

#[path = "common/mod.rs"]
mod common;

use common::{drop_caches, Server};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;

const BLKSIZE: u64 = 2 << 20;
const NBLK: i64 = 256;
const ACCESSES: usize = 1000;

fn block(b: i64, gen: u8) -> Vec<u8> {
    let mut v = vec![gen; BLKSIZE as usize];
    v[..8].copy_from_slice(&(b as u64).to_le_bytes());
    v
}

/// A raw link that acks every pin and records the pinned blocks.
fn watcher(
    mnt: &Path,
    oid: zodb::Oid,
    at: zodb::Tid,
) -> (std::fs::File, Arc<Mutex<BTreeSet<i64>>>) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("head/watch"))
        .unwrap();
    let pinned = Arc::new(Mutex::new(BTreeSet::new()));
    let (rf, p2) = (f.try_clone().unwrap(), pinned.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut w = rf.try_clone().unwrap();
        for l in BufReader::new(rf).lines() {
            let Ok(l) = l else { return };
            let Ok(fr) = wire::parse_frame(&l) else {
                return;
            };
            if fr.stream % 2 == 0 && fr.stream != 0 {
                if let Ok(p) = wire::parse_pin(fr.msg) {
                    p2.lock().unwrap().insert(p.blk);
                }
                let _ = w.write_all(wire::format_frame(fr.stream, "ack").as_bytes());
            } else {
                let _ = tx.send(l);
            }
        }
    });
    (&f).write_all(format!("1 watch {oid} @{at}\n").as_bytes())
        .unwrap();
    let r = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(r, "1 ok");
    (f, pinned)
}

fn main() {
    let tmp = tempfile::Builder::new()
        .prefix("wcfs-ra")
        .tempdir_in("/dev/shm")
        .unwrap();
    let db = tmp.path().join("Data.fs");
    let mut zw = ZWriter::open(&db).unwrap();
    let data: Vec<Vec<u8>> = (0..NBLK).map(|b| block(b, 1)).collect();
    let ch: Vec<_> = data
        .iter()
        .enumerate()
        .map(|(b, d)| (b as i64, Some((ZBlkFormat::ZBlk0, d.as_slice()))))
        .collect();
    let (oid, _) = zw.create_file("f", BLKSIZE, &ch).unwrap();
    let zurl = db.to_str().unwrap().to_owned();
    println!(
        "| readahead | pins / {ACCESSES} random accesses | of blocks not accessed | cold sequential read |"
    );
    println!("| --- | --- | --- | --- |");
    for (gen, ra) in (2u8..).zip([128u32, 256, 1024]) {
        let mnt = tmp.path().join(format!("mnt{ra}"));
        std::fs::create_dir_all(&mnt).unwrap();
        let srv = Server::start_with(
            &zurl,
            &mnt,
            &tmp.path().join(format!("wcfs{ra}.log")),
            &["--readahead-kb", &ra.to_string()],
        );
        let head = mnt.join(format!("head/bigfile/{oid}"));
        let _ = std::fs::metadata(&head).unwrap();
        let at = srv.head_at();
        let (link, pinned) = watcher(&mnt, oid, at);
        let d: Vec<Vec<u8>> = (0..NBLK).map(|b| block(b, gen)).collect();
        let ch: Vec<_> = d
            .iter()
            .enumerate()
            .map(|(b, v)| (b as i64, Some((ZBlkFormat::ZBlk0, v.as_slice()))))
            .collect();
        let t1 = zw.update_file(oid, &ch).unwrap();
        let t0 = Instant::now();
        while srv.head_at() < t1 {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "head/at did not reach the commit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop_caches();
        let f = std::fs::File::open(&head).unwrap();
        // SAFETY (bench): a read-only mapping of a file nobody truncates.
        let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        let mut rng = 0x9e3779b97f4a7c15u64 ^ ra as u64;
        let mut sum = 0u64;
        for _ in 0..ACCESSES {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let b = (rng % (NBLK as u64 / 2)) * 2;
            let off = (rng >> 20) % BLKSIZE;
            sum += m[(b * BLKSIZE + off) as usize] as u64;
        }
        std::hint::black_box(sum);
        let p = pinned.lock().unwrap().clone();
        let odd = p.iter().filter(|b| *b % 2 == 1).count();
        drop(m);
        drop(f);
        // `bye`, not a plain close: a readahead READ may still have a pin in
        // flight, and a close mid-pin is a failed pin (spec §7)
        (&link).write_all(b"3 bye\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(link);
        let mibs = common::cold_read_mibs(&head, NBLK as u64 * BLKSIZE);
        println!("| {ra} KiB | {} | {odd} | {mibs:.0} MiB/s |", p.len());
        drop(srv);
    }
}

//! The fixture databases written by the original Python wendelin.core
//! (shared/testdata/zblk: Python 2 pickle protocols 1-3 and Python 3
//! protocol 3) read through the whole stack: FileStorage, pickles, BTrees,
//! ZBigFile/ZBlk0/ZBlk1. The truth is the sha256 table of the fixtures'
//! README and the facts of wendelin-formats §7.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use zodb::btree::KeyRange;
use zodb::zbigfile::{self, ZBigFile};
use zodb::{Error, Oid, Tid};

const TID1: Tid = Tid(0x0285cbac20da7419);
const TID2: Tid = Tid(0x0285cbac3851eb99);
const SHA_FILE: &str = "f5e88fa297e175efe54852026392a5f0ff5b6b5151ef63bb4cf85245a09b1eef";
const SHA_ZERO: &str = "5647f05ec18958947d32874eeb788fa396a05d0bab7c1b71f112ceb7e9b31eee";
const SHA_BLK1: &str = "ef707ce8ef33f13b4fa2761e9f8f1af5fad5f5ac55b0f13536dcec122e34612c";
const SHA_BLK3: &str = "af8030ee7eb050d7679286cb0ba3731f57ac6692ad1652efc11aeb205cde103e";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/zblk")
}

/// The fixture kinds present, each copied into its own temp dir (the
/// fixtures are read-only ground truth; nothing may touch them).
fn fixtures() -> Vec<(String, tempfile::TempDir, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(testdata()).expect("shared/testdata/zblk") {
        let e = e.unwrap();
        if !e.file_type().unwrap().is_dir() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("zblk.fs");
        std::fs::copy(e.path().join("zblk.fs"), &fs).unwrap();
        out.push((e.file_name().to_string_lossy().into_owned(), dir, fs));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "fixtures missing");
    out
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn u32_seq(n: usize) -> Vec<u8> {
    (0..n as u32).flat_map(|i| i.to_be_bytes()).collect()
}

#[test]
fn fixtures_decode_exactly() {
    for (kind, _dir, path) in fixtures() {
        let stor = zodb::zurl::open(path.to_str().unwrap()).unwrap();
        let stor = &*stor;
        assert_eq!(stor.last_tid().unwrap(), TID2, "{kind}");

        let f = ZBigFile::load(stor, Oid(1), TID2).unwrap();
        assert_eq!(
            (f.blksize, f.blktab, f.serial),
            (2097152, Oid(0x47), TID2),
            "{kind}"
        );
        assert_eq!(f.size(stor, TID2).unwrap(), 8388608, "{kind}");

        let mut whole = Sha256::new();
        for (blk, want) in [(0, SHA_ZERO), (1, SHA_BLK1), (2, SHA_ZERO), (3, SHA_BLK3)] {
            let b = f.load_blk(stor, blk, TID2).unwrap();
            let bytes = b.to_vec();
            assert_eq!(bytes.len(), 2097152);
            assert_eq!(sha(&bytes), want, "{kind} blk {blk}");
            whole.update(&bytes);
            // blktab is stored as a tree with one inline bucket
            assert_eq!(b.path, vec![Oid(0x47), Oid::INVALID], "{kind}");
            assert_eq!(b.keycov, KeyRange::FULL);
            assert_eq!(b.rev_max, TID2);
            let zblk = match blk {
                1 => Some(Oid(2)),
                3 => Some(Oid(3)),
                _ => None,
            };
            assert_eq!(b.zblk, zblk, "{kind} blk {blk}");
        }
        assert_eq!(hex::encode(whole.finalize()), SHA_FILE, "{kind}");

        // the ZBlks themselves
        let (z0, s0) = zbigfile::load_zblk(stor, Oid(2), TID2).unwrap();
        assert_eq!((&z0[..], s0), (&u32_seq(4096)[..], TID2), "{kind}");
        let (z1, s1) = zbigfile::load_zblk(stor, Oid(3), TID2).unwrap();
        assert_eq!((z1.len(), s1), (2097145, TID2), "{kind}");
        let head = u32_seq(32768);
        assert_eq!(&z1[..131072], &head[..], "{kind}");
        let mut tail = head.clone();
        tail.reverse();
        assert_eq!(&z1[2097152 - 131072..], &tail[..131072 - 7], "{kind}");
        assert!(z1[131072..2097152 - 131072].iter().all(|&b| b == 0));

        // past the end: zeros; negative: error
        let b = f.load_blk(stor, 10, TID2).unwrap();
        assert!(b.data.is_empty() && b.zblk.is_none());
        assert!(f.load_blk(stor, -1, TID2).is_err());

        // listing finds exactly the one file
        let files = zbigfile::list(stor, TID2).unwrap();
        assert_eq!(files, vec![f.clone()], "{kind}");

        // at the first transaction only the root exists
        assert!(zbigfile::list(stor, TID1).unwrap().is_empty());
        match ZBigFile::load(stor, Oid(1), TID1) {
            Err(Error::NotYet { oid, at, created }) => {
                assert_eq!((oid, at, created), (Oid(1), TID1, TID2))
            }
            other => panic!("{kind}: want NotYet, got {other:?}"),
        }
        // wrong classes are typed errors
        assert!(matches!(
            ZBigFile::load(stor, Oid(2), TID2),
            Err(Error::WrongClass { .. })
        ));
        assert!(matches!(
            zbigfile::load_zblk(stor, Oid(1), TID2),
            Err(Error::WrongClass { .. })
        ));
        assert!(matches!(
            ZBigFile::load(stor, Oid(0x1000), TID2),
            Err(Error::NoSuchObject { .. })
        ));
    }
}

#[test]
fn fixture_chunktab_is_a_real_tree() {
    // oid 4: IOBTree with two buckets (oids 5 and 6), split key 122880
    for (kind, _dir, path) in fixtures() {
        let stor = zodb::zurl::open(path.to_str().unwrap()).unwrap();
        let node = zodb::btree::load_node(&*stor, Oid(4), TID2).unwrap();
        let zodb::btree::Node::Tree {
            state: zodb::btree::TreeState::Children(c),
            ..
        } = node
        else {
            panic!("{kind}: oid 4 is not a tree with children: {node:?}");
        };
        let kids: Vec<Oid> = c.children.iter().map(|r| r.oid).collect();
        assert_eq!(
            (kids, c.keys.clone(), c.firstbucket),
            (vec![Oid(5), Oid(6)], vec![122880], Oid(5)),
            "{kind}"
        );
        let items = zodb::btree::items(&*stor, zodb::btree::Family::IO, Oid(4), TID2).unwrap();
        assert_eq!(items.len(), 64, "{kind}");
        assert_eq!(items[0].0, 0);
        assert_eq!(items.last().unwrap().0, 2093056);
    }
}

//! The record fast paths (`pickle::bytes_record` for ZData/ZBlk0,
//! `pickle::ref_bucket` for buckets of references) against the general
//! decoder: whenever a fast path answers, the general decoder must decode the
//! same record to the same thing; when it does not, nothing is lost (the
//! general path runs). Inputs: every record revision of the Python-written
//! fixtures (Python 2 protocols 1-3, Python 3 protocol 3) and of a database
//! our writer makes, each also cut at every length and with every byte
//! flipped; and random bucket states pickled at protocols 1-3.

use bytes::Bytes;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use zodb::fs1::FileStorage;
use zodb::pickle::{self, Pickler, Value};
use zodb::record::{self, Ref};
use zodb::zbigfile::ZBlkFormat;
use zodb::zwrite::ZWriter;
use zodb::{Oid, Storage, Tid};

/// `bytes_record` and `ref_bucket` of `data` agree with the general decoder.
/// Returns which fast paths answered.
fn check(data: &Bytes) -> (bool, bool) {
    let general = pickle::decode_record(data);
    let bytes = pickle::bytes_record(data);
    if let Some(r) = &bytes {
        let (class, state) = general.clone().unwrap_or_else(|e| {
            panic!("bytes_record took {data:?} but the general decoder fails: {e}")
        });
        assert_eq!(class.as_global(), Some((r.module, r.name)), "{data:?}");
        assert_eq!(state, r.state, "{data:?}");
    }
    let bucket = pickle::ref_bucket(data);
    if let Some(b) = &bucket {
        let (class, state) = general.unwrap_or_else(|e| {
            panic!("ref_bucket took {data:?} but the general decoder fails: {e}")
        });
        assert_eq!(class.as_global(), Some(b.class), "{data:?}");
        let t = state.as_tuple().expect("bucket state is a tuple");
        let (items, next) = match t {
            [items] => (items, None),
            [items, next] => (items, Some(next)),
            _ => panic!("bucket state is not a 1- or 2-tuple: {state:?}"),
        };
        let items = items.as_tuple().expect("items tuple");
        assert_eq!(items.len(), 2 * b.keys.len(), "{data:?}");
        for (i, pair) in items.chunks(2).enumerate() {
            assert_eq!(pair[0], Value::Int(b.keys[i]), "{data:?}");
            let oid = record::decode_ref_oid(Oid(1), &pair[1]).expect("a reference");
            assert_eq!(oid, Oid(b.refs[i].oid), "{data:?}");
            assert_eq!(pair[1], b.refs[i].to_value(), "{data:?}");
        }
        let next = next.map(|n| record::decode_ref(Oid(1), n).expect("next ref").oid);
        assert_eq!(next, b.next.map(Oid), "{data:?}");
    }
    (bytes.is_some(), bucket.is_some())
}

/// Every revision of every object of the database at `path`.
fn all_records(path: &Path) -> Vec<Bytes> {
    let fs = FileStorage::open(path).unwrap();
    let txns: Vec<_> = fs
        .iterate(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    let mut out = Vec::new();
    for t in &txns {
        for &oid in &t.oids {
            if let Ok(l) = fs.load(oid, t.tid) {
                out.push(l.data);
            }
        }
    }
    out
}

fn fixture_paths() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/zblk");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata/zblk")
        .map(|e| e.unwrap().path().join("zblk.fs"))
        .filter(|p| p.exists())
        .collect();
    v.sort();
    assert!(v.len() >= 4, "fixtures missing");
    v
}

/// Cut at every length, and every byte flipped (two ways).
fn check_mutations(data: &Bytes) {
    for n in 0..data.len() {
        check(&data.slice(..n));
    }
    for i in 0..data.len() {
        for x in [0xff, 0x01] {
            let mut m = data.to_vec();
            m[i] ^= x;
            check(&Bytes::from(m));
        }
    }
}

#[test]
fn fixtures_and_their_mutations() {
    for path in fixture_paths() {
        let recs = all_records(&path);
        let (mut nbytes, mut nbucket) = (0, 0);
        for r in &recs {
            let (b, k) = check(r);
            nbytes += b as usize;
            nbucket += k as usize;
        }
        // The fixtures hold ZBlk0, ZData and IOBucket/LOBucket records of
        // every pickle kind: the fast paths must take them.
        assert!(nbytes > 0 && nbucket > 0, "{path:?}: {nbytes} {nbucket}");
        for r in recs.iter().filter(|r| r.len() <= 1024) {
            check_mutations(r);
        }
        // and a sample of the big ones (cut inside the header region only)
        for r in recs.iter().filter(|r| r.len() > 1024).take(8) {
            for n in 0..200 {
                check(&r.slice(..n));
                let mut m = r.to_vec();
                m[n] ^= 0xff;
                check(&Bytes::from(m));
            }
        }
    }
}

#[test]
fn our_writer_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let mut zw = ZWriter::open(&path).unwrap();
    // blocks of up to 2 MiB: chunktabs of several buckets, small ones inline
    let (oid, _) = zw.create_file("f", 2 << 20, &[]).unwrap();
    let data: Vec<(i64, Vec<u8>)> = (0..40)
        .map(|b| {
            (
                b * 3,
                vec![(b as u8) | 1; 5000 + (b as usize % 5) * 500_000],
            )
        })
        .collect();
    for fmt in [ZBlkFormat::ZBlk0, ZBlkFormat::ZBlk1] {
        let changes: Vec<_> = data
            .iter()
            .map(|(b, d)| (*b, Some((fmt, &d[..]))))
            .collect();
        zw.update_file(oid, &changes).unwrap();
    }
    drop(zw);
    let (mut nbytes, mut nbucket) = (0, 0);
    for r in all_records(&path) {
        let (b, k) = check(&r);
        nbytes += b as usize;
        nbucket += k as usize;
        if r.len() <= 1024 {
            check_mutations(&r);
        }
    }
    assert!(nbytes > 0 && nbucket > 0, "{nbytes} {nbucket}");
}

fn encode(class: &str, state: &Value, protocol: u8) -> Bytes {
    let mut p = Pickler::new(protocol);
    p.dump(&record::global(class));
    p.dump(state);
    Bytes::from(p.finish())
}

proptest! {
    /// Bucket states with random keys (ordered or not, any i64), plain and
    /// `(oid, klass)` references and an optional next bucket, at protocols
    /// 1-3: the fast path takes them all and agrees.
    #[test]
    fn random_buckets(
        items in proptest::collection::vec((any::<i64>(), any::<u64>(), any::<bool>()), 0..40),
        next in proptest::option::of(any::<u64>()),
        protocol in 1u8..=3,
        flip in any::<(usize, u8)>(),
    ) {
        let mut kv = Vec::new();
        for &(k, o, with_class) in &items {
            kv.push(Value::Int(k));
            let r = Ref { oid: Oid(o), class: with_class.then(|| "wendelin.bigfile.file_zodb.ZData".to_owned()) };
            kv.push(r.to_value());
        }
        let mut st = vec![Value::Tuple(kv)];
        if let Some(n) = next {
            st.push(Ref::new(Oid(n), "BTrees.IOBTree.IOBucket").to_value());
        }
        let data = encode("BTrees.IOBTree.IOBucket", &Value::Tuple(st), protocol);
        let (_, took) = check(&data);
        // (protocol 1 writes ints beyond 32 bits as text, which the fast path leaves alone)
        let small = items.iter().all(|it| i32::try_from(it.0).is_ok());
        prop_assert!(took || (protocol == 1 && !small), "ref_bucket refused our own pickle {:?}", data);
        let mut m = data.to_vec();
        let i = flip.0 % m.len();
        m[i] ^= flip.1 | 1;
        check(&Bytes::from(m));
    }

    /// Byte-string records of every size class and both string kinds.
    #[test]
    fn random_bytes_records(
        len in prop_oneof![0usize..300, 250usize..70_000],
        protocol in 1u8..=3,
        str8 in any::<bool>(),
    ) {
        let b = Bytes::from(vec![0xa5u8; len]);
        let state = if str8 { Value::Str8(b) } else { Value::Bytes(b) };
        let data = encode("wendelin.bigfile.file_zodb.ZData", &state, protocol);
        let (took, _) = check(&data);
        prop_assert!(took);
    }
}

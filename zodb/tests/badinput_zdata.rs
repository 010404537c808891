//! Garbage through the whole decode stack: pickles, records and refs,
//! BTrees, ZBigFile/ZBlk0/ZBlk1/ZData.
//!
//! The objects of a fixture database are put into an in-memory storage;
//! then, one record at a time, every byte of the record's pickle framing is
//! replaced by several values, and the record is cut at every length. After
//! each mutation the whole file is read the way `wcfs cat` reads it (load,
//! size, every block, listing). The rule: never a panic, and every failure
//! is a typed error of the expected kinds. (File-level corruption and
//! truncation are in fs1_badinput.rs.)

use bytes::Bytes;
use std::collections::HashMap;
use std::path::Path;
use zodb::storage::{Loaded, TxnInfo, Watcher};
use zodb::zbigfile::{self, ZBigFile};
use zodb::{Error, Oid, Result, Storage, Tid};

/// One revision of a set of objects, in memory.
struct Mem {
    objs: HashMap<Oid, (Tid, Bytes)>,
}

impl Storage for Mem {
    fn url(&self) -> &str {
        "mem:"
    }
    fn last_tid(&self) -> Result<Tid> {
        Ok(Tid::MAX)
    }
    fn sync(&self) -> Result<Tid> {
        Ok(Tid::MAX)
    }
    fn load(&self, oid: Oid, _at: Tid) -> Result<Loaded> {
        let (serial, data) = self.objs.get(&oid).ok_or(Error::NoSuchObject { oid })?;
        Ok(Loaded {
            data: data.clone(),
            serial: *serial,
        })
    }
    fn iterate(
        &self,
        _: Tid,
        _: Tid,
    ) -> Result<Box<dyn Iterator<Item = Result<TxnInfo>> + Send + '_>> {
        Ok(Box::new(std::iter::empty()))
    }
    fn watch(&self, _: Tid) -> Result<Box<dyn Watcher>> {
        Err(Error::Unsupported("mem".into()))
    }
}

/// Read everything `wcfs cat`/`ls` would; return whether it all worked.
fn read_all(st: &Mem) -> std::result::Result<(), Error> {
    let at = Tid::MAX;
    let f = ZBigFile::load(st, Oid(1), at)?;
    let size = f.size(st, at)?;
    for blk in 0..(size / f.blksize).min(8) as i64 {
        f.load_blk(st, blk, at)?;
    }
    f.blktab(st, at)?;
    zbigfile::list(st, at)?;
    Ok(())
}

fn assert_typed(e: &Error, what: &str) {
    assert!(
        matches!(
            e,
            Error::Pickle { .. }
                | Error::BadState { .. }
                | Error::WrongClass { .. }
                | Error::NoSuchObject { .. }
        ),
        "{what}: unexpected error kind: {e:?}"
    );
}

fn fixture(kind: &str) -> Mem {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/zblk")
        .join(kind)
        .join("zblk.fs");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("zblk.fs");
    std::fs::copy(src, &p).unwrap();
    let fs = zodb::fs1::FileStorage::open(&p).unwrap();
    let head = fs.last_tid().unwrap();
    let objs = (0..=0x47u64)
        .map(|o| {
            let l = fs.load(Oid(o), head).unwrap();
            (Oid(o), (l.serial, Bytes::copy_from_slice(&l.data)))
        })
        .collect();
    Mem { objs }
}

#[test]
fn mutated_records_give_typed_errors() {
    for kind in ["py2_pickle1", "py3_pickle3"] {
        let base = fixture(kind);
        read_all(&base).expect("pristine fixture reads");
        let mut runs = 0usize;
        let mut failures = 0usize;
        let oids: Vec<Oid> = {
            // ZData objects 7..=0x46 all have one shape: take the first two and the last
            let mut v: Vec<Oid> = base
                .objs
                .keys()
                .copied()
                .filter(|o| o.0 < 9 || o.0 > 0x45)
                .collect();
            v.sort();
            v
        };
        for oid in oids {
            let orig = base.objs[&oid].1.clone();
            // every byte of the framing; for big payloads only their ends
            let n = orig.len();
            let positions: Vec<usize> = (0..n).filter(|&i| i < 96 || i + 48 >= n).collect();
            let mut check = |data: Vec<u8>, what: String| {
                let mut st = Mem {
                    objs: base.objs.clone(),
                };
                st.objs.get_mut(&oid).unwrap().1 = Bytes::from(data);
                runs += 1;
                if let Err(e) = read_all(&st) {
                    failures += 1;
                    assert_typed(&e, &what);
                }
            };
            for &i in &positions {
                for v in [0x00u8, 0xff, b'(', b'.', b'q', b'X', orig[i] ^ 0x01] {
                    let mut d = orig.to_vec();
                    d[i] = v;
                    check(d, format!("{kind} {oid} byte {i} := {v:#x}"));
                }
            }
            for len in positions.iter().copied().filter(|&l| l < n) {
                check(orig[..len].to_vec(), format!("{kind} {oid} cut at {len}"));
            }
        }
        // the mutations must actually have hit something
        assert!(runs > 5_000, "{kind}: only {runs} runs");
        assert!(
            failures > runs / 4,
            "{kind}: only {failures} of {runs} mutations failed"
        );
    }
}

//! Python writes, Rust reads.
//!
//! Real Python ZODB (tests/py/gen_db.py) writes a database exercising
//! everything a ZBigFile database holds: ZBlk0 and ZBlk1 blocks, a blktab of
//! depth 3, many transactions of overwrites and holes, a blktab replaced, a
//! blksize changed, objects deleted with deleteObject, undo (backpointers and
//! deletion records). Python then dumps what it reads at every revision
//! (tests/py/dump_db.py, schema in tests/py/README.md) and we check that the
//! Rust reader agrees on every transaction, every object revision, every
//! loadBefore sample and every block of every file at every revision.

mod py_common;

use py_common::run_py;
use rayon::prelude::*;
use serde_json::Value as J;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use zodb::fs1::FileStorage;
use zodb::zbigfile::{self, ZBigFile};
use zodb::{Error, Oid, Storage, Tid};

fn tid(v: &J) -> Tid {
    v.as_str().expect("tid string").parse().expect("tid")
}

fn oid(v: &J) -> Oid {
    v.as_str().expect("oid string").parse().expect("oid")
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Generate a database with Python and dump it; returns (dir, db path, dump).
fn python_db(seed: u32, txns: u32) -> (tempfile::TempDir, std::path::PathBuf, J) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("py.fs");
    let dump = dir.path().join("dump.json");
    let (dbs, dumps) = (db.to_str().unwrap(), dump.to_str().unwrap());
    run_py(
        "gen_db.py",
        &[
            dbs,
            "--seed",
            &seed.to_string(),
            "--txns",
            &txns.to_string(),
            "--dangling",
        ],
    );
    run_py("dump_db.py", &[dbs, dumps, "--sample", "-1"]);
    let j: J = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    assert_eq!(j["format"], "wcfs-interop-dump/1");
    (dir, db, j)
}

#[test]
fn rust_reads_what_python_wrote() {
    let (_dir, db, j) = python_db(1, 60);
    let stor = FileStorage::open(&db).unwrap();
    let stor: &dyn Storage = &stor;

    // -- transactions: same tids, metadata and changed oids, in order
    let txns = j["transactions"].as_array().unwrap();
    assert!(txns.len() > 60);
    assert_eq!(stor.last_tid().unwrap(), tid(&j["head"]));
    let ours: Vec<_> = stor
        .iterate(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(ours.len(), txns.len());
    for (o, p) in ours.iter().zip(txns) {
        assert_eq!(o.tid, tid(&p["tid"]));
        assert_eq!(
            o.status as char,
            p["status"].as_str().unwrap().chars().next().unwrap()
        );
        assert_eq!(
            String::from_utf8_lossy(&o.description),
            p["description"].as_str().unwrap()
        );
        assert_eq!(
            String::from_utf8_lossy(&o.user),
            p["user"].as_str().unwrap()
        );
        let ext = (!o.extension.is_empty()).then(|| sha(&o.extension));
        assert_eq!(ext.as_deref(), p["extension_sha256"].as_str(), "{}", o.tid);
        let want: BTreeSet<Oid> = p["oids"].as_array().unwrap().iter().map(oid).collect();
        let got: BTreeSet<Oid> = o.oids.iter().copied().collect();
        assert_eq!(got, want, "txn {}", o.tid);
        assert_eq!(got.len(), o.oids.len(), "oids reported twice in {}", o.tid);
    }
    // iterate() honours its bounds
    let mid = tid(&txns[txns.len() / 2]["tid"]);
    let part: Vec<Tid> = stor
        .iterate(mid, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(part.len(), txns.len() - txns.len() / 2);
    assert_eq!(part[0], mid);

    // -- every revision of every object
    let objects = j["objects"].as_array().unwrap();
    let mut nrev = 0;
    for obj in objects {
        let o = oid(&obj["oid"]);
        for rev in obj["revisions"].as_array().unwrap() {
            nrev += 1;
            let t = tid(&rev["tid"]);
            match stor.load(o, t) {
                Ok(l) => {
                    assert!(
                        !rev["deleted"].as_bool().unwrap(),
                        "{o}@{t}: python says deleted"
                    );
                    assert_eq!(l.serial, t, "{o}@{t}");
                    assert_eq!(
                        Some(sha(&l.data).as_str()),
                        rev["sha256"].as_str(),
                        "{o}@{t}"
                    );
                }
                Err(Error::Deleted { deleted_at, .. }) => {
                    assert!(rev["deleted"].as_bool().unwrap(), "{o}@{t}: we say deleted");
                    assert_eq!(deleted_at, t);
                }
                Err(e) => panic!("{o}@{t}: {e}"),
            }
        }
    }
    assert!(nrev > 10_000, "only {nrev} revisions");

    // -- loadBefore at every transaction, for every oid
    for lb in j["loadbefore"].as_array().unwrap() {
        let o = oid(&lb["oid"]);
        for (i, res) in lb["at"].as_array().unwrap().iter().enumerate() {
            let at = tid(&txns[i]["tid"]);
            let got = stor.load(o, at);
            match (res, &got) {
                (J::Null, Err(Error::NotYet { .. } | Error::NoSuchObject { .. })) => {}
                (J::String(s), Err(Error::Deleted { .. })) if s == "deleted" => {}
                (J::Object(m), Ok(l)) => {
                    assert_eq!(l.serial, tid(&m["serial"]), "{o}@{at}");
                    assert_eq!(sha(&l.data), m["sha256"].as_str().unwrap(), "{o}@{at}");
                }
                _ => panic!("{o}@{at}: python {res}, rust {got:?}"),
            }
        }
    }

    // -- every file at every revision, block by block
    let files = j["files"].as_array().unwrap();
    let mut nblk = 0usize;
    for f in files {
        let (o, at) = (oid(&f["oid"]), tid(&f["tid"]));
        let ctx = format!("file {o} @{at}");
        let loaded = ZBigFile::load(stor, o, at);
        match f["status"].as_str().unwrap() {
            "absent" => assert!(
                matches!(
                    loaded,
                    Err(Error::NotYet { .. } | Error::NoSuchObject { .. })
                ),
                "{ctx}: {loaded:?}"
            ),
            "deleted" => assert!(
                matches!(loaded, Err(Error::Deleted { .. })),
                "{ctx}: {loaded:?}"
            ),
            "error" => {
                let r = loaded.and_then(|zf| zf.size(stor, at));
                assert!(
                    r.is_err(),
                    "{ctx}: python fails ({}), we succeed",
                    f["error"]
                );
            }
            "ok" => {
                let zf = loaded.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert_eq!(zf.blksize, f["blksize"].as_u64().unwrap(), "{ctx}");
                assert_eq!(zf.blktab, oid(&f["blktab"]), "{ctx}");
                assert_eq!(zf.serial, tid(&f["serial"]), "{ctx}");
                let size = zf.size(stor, at).unwrap();
                assert_eq!(size, f["size"].as_u64().unwrap(), "{ctx}");
                let blocks = f["blocks"].as_array().unwrap();
                let zblks = f["zblk"].as_array().unwrap();
                assert_eq!(blocks.len() as u64, size / zf.blksize);
                nblk += blocks.len();
                // The whole content through one blktab walk...
                let tab: std::collections::HashMap<i64, Oid> =
                    zf.blktab(stor, at).unwrap().into_iter().collect();
                let zero = sha(&vec![0u8; zf.blksize as usize]);
                (0..blocks.len()).into_par_iter().for_each(|i| {
                    let want_zblk = zblks[i].as_str().map(|s| s.parse::<Oid>().unwrap());
                    assert_eq!(
                        tab.get(&(i as i64)).copied(),
                        want_zblk,
                        "{ctx} blktab[{i}]"
                    );
                    let got = match want_zblk {
                        None => Some(zero.clone()),
                        Some(z) => zbigfile::load_zblk(stor, z, at).ok().map(|(d, _)| {
                            let mut d = d.to_vec();
                            d.resize(zf.blksize as usize, 0);
                            sha(&d)
                        }),
                    };
                    assert_eq!(got.as_deref(), blocks[i].as_str(), "{ctx} blk {i} (bulk)");
                });
                // ...and block by block (the path-tracking lookup): all of a
                // small file, a sample of a big one (each lookup decodes the
                // whole path, 30k times per revision would dominate the run)
                let step = if blocks.len() > 2000 { 97 } else { 1 };
                let idx: Vec<usize> = (0..blocks.len())
                    .step_by(step)
                    .chain(blocks.len().checked_sub(1))
                    .collect();
                idx.into_par_iter().for_each(|i| {
                    let r = zf.load_blk(stor, i as i64, at);
                    match (&blocks[i], r) {
                        (J::String(want), Ok(b)) => {
                            assert_eq!(&sha(&b.to_vec()), want, "{ctx} blk {i}");
                            assert_eq!(
                                b.zblk,
                                zblks[i].as_str().map(|s| s.parse().unwrap()),
                                "{ctx} blk {i}"
                            );
                            assert!(
                                b.rev_max <= at && b.rev_max > Tid::ZERO,
                                "{ctx} blk {i}: rev_max {}",
                                b.rev_max
                            );
                            assert_eq!(b.path[0], zf.blktab);
                            assert!(b.keycov.contains(i as i64));
                        }
                        (J::Null, Err(_)) => {}
                        (want, got) => panic!("{ctx} blk {i}: python {want}, rust {got:?}"),
                    }
                });
            }
            s => panic!("unknown status {s}"),
        }
    }
    assert!(nblk > 100_000, "only {nblk} blocks compared");
    assert!(
        files.iter().any(|f| f["blktab_depth"].as_u64() >= Some(3)),
        "no deep blktab"
    );

    // -- listing: reachable ZBigFiles, where every reachable one is loadable
    for t in txns {
        let at = tid(&t["tid"]);
        let here: Vec<&J> = files
            .iter()
            .filter(|f| tid(&f["tid"]) == at && f["reachable"] == true)
            .collect();
        if here.iter().any(|f| f["status"] != "ok") {
            continue;
        }
        let want: Vec<Oid> = here.iter().map(|f| oid(&f["oid"])).collect();
        let got: Vec<Oid> = zbigfile::list(stor, at)
            .unwrap()
            .iter()
            .map(|f| f.oid)
            .collect();
        assert_eq!(got, want, "list @{at}");
    }
}

/// A second seed, fewer transactions: different random choices everywhere.
#[test]
fn rust_reads_python_seed2_at_head_and_past() {
    let (_dir, db, j) = python_db(2, 30);
    let stor = FileStorage::open(&db).unwrap();
    for f in j["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "ok")
    {
        let (o, at) = (oid(&f["oid"]), tid(&f["tid"]));
        let zf = ZBigFile::load(&stor, o, at).unwrap();
        let mut whole = Vec::new();
        let n = zf.size(&stor, at).unwrap() / zf.blksize;
        if n > 2000 {
            continue; // the big file is covered block by block in the test above
        }
        for i in 0..n {
            match zf.load_blk(&stor, i as i64, at) {
                Ok(b) => whole.push(sha(&b.to_vec())),
                Err(_) => whole.push(String::new()),
            }
        }
        let want: Vec<String> = f["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(whole, want, "{o} @{at}");
    }
}

//! The tree generator commits exactly the topology asked for.
//!
//! A sequence of topologies (hand-picked tricky ones, then a sample of every
//! structure of a small key set, with values) is committed one after
//! another into one database. After each commit our reader must read the
//! same topology back; at the end real Python ZODB/BTrees reads every
//! revision, encodes the shape it sees (tests/py/btree_topo.py, independent
//! of our code) and runs `BTrees.check` on it: the shapes must be exactly
//! the ones we meant, and the check must find nothing wrong.

#[path = "../../zodb/tests/py_common/mod.rs"]
mod py_common;

use engine::testkit::allstructs::{all_structs, Bounds};
use engine::testkit::topology::Topology;
use engine::testkit::treegen::TreeGen;
use std::collections::BTreeMap;
use zodb::Storage;

fn kv(pairs: &[(i64, &str)]) -> BTreeMap<i64, String> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[test]
fn treegen_commits_exact_topologies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("treegen.fs");
    let mut g = TreeGen::create(&path).unwrap();

    let mut seq: Vec<Topology> = [
        "T/B:",
        "T/B1:a",
        "T2,4,6/B1:a-B2:b,3:c-B4:d,5:e-B6:f,7:g",
        "T3,5,7/B1:g,2:f-B3:e,4:d-B5:c,6:b-B7:a",
        "T3/T-T/B1:a-T5/B:-B7:b,8:c,9:d",
        "T/B:",
        "T/T/B1:a,2:b",
        "T4/T2-T6/B1:x-B2:y,3:z-B4:x-B6:y,7:z",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let values = kv(&[(1, "a"), (2, "b"), (3, "c"), (5, "d")]);
    let b = Bounds {
        maxdepth: 1,
        maxsplit: 2,
        allow_empty: false,
    };
    let all = all_structs(&[1, 2, 3, 5], b);
    assert!(all.len() > 50, "{}", all.len());
    seq.extend(
        all.iter()
            .step_by(7)
            .map(|t| t.with_values(&values).unwrap()),
    );

    let mut committed: Vec<(zodb::Tid, String)> = Vec::new();
    for t in &seq {
        let tid = g.commit(t).unwrap();
        let stor = g.storage();
        let got = Topology::load(&stor, g.tree(), tid, &g.names()).unwrap();
        assert_eq!(
            got.to_string(),
            t.to_string(),
            "read back after commit @{tid}"
        );
        if committed.last().is_none_or(|c| c.0 != tid) {
            committed.push((tid, t.to_string()));
        } else {
            // the same tree again: nothing was stored
            assert_eq!(committed.last().unwrap().1, t.to_string());
        }
    }
    assert!(committed.len() > 10);

    // Python reads the same shapes, and BTrees.check finds them valid.
    let out = py_common::run_py("btree_topo.py", &[path.to_str().unwrap()]);
    let py: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by_tid: BTreeMap<String, &serde_json::Value> = py
        .iter()
        .map(|e| (e["tid"].as_str().unwrap().to_owned(), e))
        .collect();
    for (tid, topo) in &committed {
        let e = by_tid
            .get(&tid.to_string())
            .unwrap_or_else(|| panic!("python has no revision {tid}"));
        assert_eq!(e["topo"].as_str().unwrap(), topo, "python's view @{tid}");
        assert!(e["check"].is_null(), "BTrees.check @{tid}: {}", e["check"]);
    }

    // the ZBigFile over the tree reads the values' data
    let stor = g.storage();
    let head = stor.last_tid().unwrap();
    let f = zodb::zbigfile::ZBigFile::load(&stor, g.file(), head).unwrap();
    for (k, v) in &seq.last().unwrap().items() {
        let b = f.load_blk(&stor, *k, head).unwrap();
        assert_eq!(&b.data[..], v.as_bytes(), "blk {k}");
    }
}

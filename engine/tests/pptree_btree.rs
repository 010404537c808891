//! PPTreeSubSet fed with real BTree paths, as ΔBtail will feed it.
//!
//! The tree generator commits a sequence of topologies (empty tree, a tree
//! whose single bucket is embedded, deep and wide trees); for each, every
//! key, every gap between keys and the extremes (-2..=12, ±∞) is looked up with
//! `zodb::btree::lookup`, whose path (root first, `ø` for an embedded
//! bucket, just the root for an empty tree) goes to `add_path`. The set of
//! all paths must hold exactly the tree's nodes (trees, and buckets that
//! have an oid) under one root, with the buckets as leaves and each leaf's
//! `path` equal to the normalized lookup path. Tracking only some keys and
//! taking the difference must leave exactly the other keys' buckets.

use engine::pptree::{norm_path, PPTreeSubSet};
use engine::testkit::topology::{Node, Topology};
use engine::testkit::treegen::TreeGen;
use std::collections::BTreeSet;
use zodb::btree::{lookup, Family};
use zodb::Oid;

/// (tree nodes, buckets) of a topology.
fn count(n: &Node) -> (usize, usize) {
    match n {
        Node::Bucket { .. } => (0, 1),
        Node::Tree { children, .. } => children
            .iter()
            .map(count)
            .fold((1, 0), |(t, b), (t2, b2)| (t + t2, b + b2)),
    }
}

#[test]
fn pptree_btree_paths() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = TreeGen::create(&dir.path().join("pptree.fs")).unwrap();
    let topos = [
        "T/B:",
        "T/B1:a,3:b",
        "T2,4,6/B1:a-B2:b,3:c-B4:d,5:e-B6:f,7:g",
        "T3/T-T/B1:a-T5/B:-B7:b,8:c,9:d",
        "T4/T2-T6/B1:a-B2:b,3:c-B4:d-B6:e,7:f",
        "T3,5,7/B1:g,2:f-B3:e,4:d-B5:c,6:b-B7:a",
        "T/T/B1:a,2:b",
    ];
    for text in topos {
        let topo: Topology = text.parse().unwrap();
        let at = g.commit(&topo).unwrap();
        let stor = g.storage();
        let root = g.tree();

        let keys = topo.keys();
        // every key, and every gap (an empty bucket may hold no key at all)
        let mut probes: BTreeSet<i64> = [i64::MIN, 100, i64::MAX].into();
        probes.extend(-2..=12);
        assert!(keys.iter().all(|k| probes.contains(k)));
        let mut all = PPTreeSubSet::new();
        let mut paths = Vec::new();
        for &k in &probes {
            let l = lookup(&stor, Family::LO, root, k, at).unwrap();
            all.add_path(&l.path).unwrap();
            all.verify().unwrap();
            paths.push((k, l.path));
        }

        let (ntree, nbucket) = count(&topo.root);
        let single_bucket = ntree == 1 && nbucket == 1; // embedded or empty
        let want_len = if single_bucket { 1 } else { ntree + nbucket };
        assert_eq!(all.len(), want_len, "{text}: {all}");
        assert_eq!(all.roots().collect::<Vec<_>>(), [root], "{text}");
        let leaves: BTreeSet<Oid> = all.leaves().collect();
        assert_eq!(
            leaves.len(),
            if single_bucket { 1 } else { nbucket },
            "{text}"
        );
        for (k, p) in &paths {
            let np = norm_path(p);
            assert_eq!(np[0], root);
            let last = *np.last().unwrap();
            assert!(
                leaves.contains(&last),
                "{text}: key {k}: {p:?} not to a leaf"
            );
            assert_eq!(all.path(last).unwrap(), np, "{text}: key {k}");
        }

        // track the even keys only: the rest is what the odd keys reach alone
        let leaf_of = |k: i64| {
            *norm_path(&paths.iter().find(|(k2, _)| *k2 == k).unwrap().1)
                .last()
                .unwrap()
        };
        let even = PPTreeSubSet::from_paths(
            paths
                .iter()
                .filter(|(k, _)| k % 2 == 0)
                .map(|(_, p)| p.clone()),
        )
        .unwrap();
        let rest = all.difference(&even).unwrap();
        rest.verify().unwrap();
        let want: BTreeSet<Oid> = probes
            .iter()
            .map(|&k| leaf_of(k))
            .filter(|l| !even.contains(*l))
            .collect();
        assert_eq!(rest.leaves().collect::<BTreeSet<_>>(), want, "{text}");
        assert_eq!(rest.union(&even).unwrap(), all, "{text}");
    }
}

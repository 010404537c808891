//! ΔBtail against the brute-force oracle: the whole tree loaded at every
//! revision (`common::History`), its key -> value maps diffed.
//!
//! - every Update's δB equals the oracle's diff restricted to the tracked
//!   keys, exactly (nothing more, nothing less);
//! - keys tracked late (after history was recorded) get their full history
//!   back to tail: SliceByRootRev over every (lo, hi] and GetAt at every
//!   revision for every key equal the oracle's;
//! - ForgetPast, trees that grow from and shrink to empty, data-only
//!   transactions.
//!
//! Exhaustive over all pairs of topologies of a small key set; seeded random
//! runs over larger ones (the seed is printed on failure;
//! `WCFS_TEST_SEED=<seed>` replays, `WCFS_TEST_LONG=<seconds>` runs longer).

mod common;

use common::{History, Rng, Step};
use engine::btail::DeltaBTail;
use engine::testkit::allstructs::{all_structs, Bounds};
use engine::treediff::TrackTree;
use rangeset::{KeyRange, RangedKeySet};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use zodb::Tid;

/// Check GetAt and every slice of `bt` against the oracle for `keys`.
fn check_queries(h: &History, bt: &DeltaBTail, keys: &RangedKeySet, ctx: &str) {
    let root = h.tree();
    let (tail, head) = (bt.tail(), bt.head());
    let it = h.index_at(tail);
    let ih = h.index_at(head);
    // the full slice, and every (lo, hi] with both ends at revisions
    let full = bt.slice_by_root_rev(root, tail, head).unwrap();
    let mut want = Vec::new();
    for i in it + 1..=ih {
        let d = h.delta(i, keys);
        if !d.is_empty() {
            want.push((h.revs[i], d));
        }
    }
    let got: Vec<(Tid, _)> = full.iter().map(|e| (e.rev, e.kv.clone())).collect();
    assert_eq!(got, want, "{ctx}: SliceByRootRev(tail, head], keys {keys}");
    // one tree: SliceByRev is the same history
    let all: Vec<(Tid, _)> = bt
        .slice_by_rev(tail, head)
        .unwrap()
        .into_iter()
        .map(|d| {
            assert_eq!(d.by_root.len(), 1);
            (d.rev, d.by_root[&root].clone())
        })
        .collect();
    assert_eq!(all, want, "{ctx}: SliceByRev(tail, head]");
    for lo in it..=ih {
        for hi in lo..=ih {
            let s = bt.slice_by_root_rev(root, h.revs[lo], h.revs[hi]).unwrap();
            let w: Vec<_> = want
                .iter()
                .filter(|(r, _)| *r > h.revs[lo] && *r <= h.revs[hi])
                .cloned()
                .collect();
            let g: Vec<_> = s.iter().map(|e| (e.rev, e.kv.clone())).collect();
            assert_eq!(g, w, "{ctx}: SliceByRootRev({lo}, {hi}]");
        }
    }
    // GetAt for every tracked key at every revision
    for k in h.test_keys() {
        if !keys.has(k) {
            continue;
        }
        for i in it..=ih {
            let got = bt.get_at(root, k, h.revs[i]).unwrap();
            let want = common::get_at(h, k, i, it, ih);
            assert_eq!(got, want, "{ctx}: GetAt({k}, @{i})");
        }
    }
}

/// Track `keys` from revs[i0], Update to the end: each δB is exact.
fn check_update(h: &History, i0: usize, keys: &RangedKeySet, ctx: &str) {
    let root = h.tree();
    let bt = DeltaBTail::new(h.revs[i0], h.storage());
    bt.track_keys(root, keys);
    for i in i0 + 1..h.revs.len() {
        let d = bt.update(h.revs[i], &h.oids[i]).unwrap();
        assert_eq!(d.rev, h.revs[i]);
        let want = h.delta(i, keys);
        let got = d.by_root.get(&root).cloned().unwrap_or_default();
        assert_eq!(
            got,
            want,
            "{ctx}: Update @{i} ({}), keys {keys}: {} -> {}",
            h.revs[i],
            h.what[i - 1],
            h.what[i]
        );
        assert!(d.by_root.keys().all(|r| *r == root));
        if keys.is_empty() {
            continue;
        }
        let (built, nodes) = bt.tracked_nodes(root).unwrap();
        assert_eq!(&built, keys);
        let fresh = TrackTree::walk(&*h.storage(), root, h.revs[i], keys).unwrap();
        nodes.verify().unwrap();
        assert_eq!(
            nodes,
            fresh,
            "{ctx}: tracked nodes after Update @{i}: {} -> {}",
            h.what[i - 1],
            h.what[i]
        );
        assert!(d.by_root.values().all(|kv| !kv.is_empty()));
    }
}

/// Track in three rounds (before, in the middle, at the end of the
/// Updates), querying in between; then everything must be as if all keys
/// had been tracked from the start. ForgetPast at the end, and again.
fn check_rebuild(h: &History, rng: &mut Rng, kmax: i64, ctx: &str) {
    let root = h.tree();
    let n = h.revs.len();
    let bt = DeltaBTail::new(h.revs[0], h.storage());
    let k1 = common::random_keys(rng, kmax);
    let k2 = common::random_keys(rng, kmax);
    let k3 = common::random_keys(rng, kmax);
    let m = 1 + rng.below(n as u64) as usize;
    bt.track_keys(root, &k1);
    for i in 1..m.min(n) {
        bt.update(h.revs[i], &h.oids[i]).unwrap();
    }
    bt.track_keys(root, &k2);
    let mut all = k1.union(&k2);
    if rng.chance(1, 2) {
        check_queries(h, &bt, &all, &format!("{ctx} mid"));
    }
    for i in m.min(n)..n {
        let d = bt.update(h.revs[i], &h.oids[i]).unwrap();
        let got = d.by_root.get(&root).cloned().unwrap_or_default();
        assert_eq!(got, h.delta(i, &all), "{ctx}: Update @{i} after late Track");
    }
    bt.track_keys(root, &k3);
    all.union_in_place(&k3);
    check_queries(h, &bt, &all, &format!("{ctx} end"));
    // forget part of the past: the rest must be unchanged
    let cut = rng.below(n as u64) as usize;
    let before = bt.slice_by_root_rev(root, bt.tail(), bt.head()).unwrap();
    bt.forget_past(h.revs[cut]).unwrap();
    assert_eq!(bt.tail(), h.revs[cut].max(h.revs[0]));
    check_queries(h, &bt, &all, &format!("{ctx} forget {cut}"));
    // a snapshot taken before is not changed by ForgetPast
    let again: Vec<_> = before.iter().map(|e| e.rev).collect();
    assert!(again.windows(2).all(|w| w[0] < w[1]));
    // untracked keys are refused
    let untracked = (-1000..1000).find(|k| !all.has(*k));
    if let Some(k) = untracked {
        assert!(
            bt.get_at(root, k, bt.head()).is_err(),
            "{ctx}: GetAt of untracked key {k}"
        );
    }
}

fn values(rng: &mut Rng, keys: &[i64]) -> BTreeMap<i64, String> {
    keys.iter()
        .map(|k| (*k, ((b'a' + rng.below(3) as u8) as char).to_string()))
        .collect()
}

/// Every ordered pair of the topologies of a small key set, with random
/// values; for each transition every subset of the interesting keys.
#[test]
fn btail_all_structure_pairs() {
    common::with_seed("btail_all_structure_pairs", |seed| {
        let mut rng = Rng::new(seed);
        let b = Bounds {
            maxdepth: 1,
            maxsplit: 1,
            allow_empty: false,
        };
        let mut topos = all_structs(&[1, 2, 3], b);
        topos.extend(all_structs(&[2], b));
        topos.push(engine::testkit::topology::Topology::empty());
        let mut h = History::new();
        let mut steps = 0;
        for a in &topos {
            for bb in &topos {
                for t in [a, bb] {
                    let kv = values(&mut rng, &t.keys());
                    if h.step(&Step::Tree(t.with_values(&kv).unwrap())) {
                        steps += 1;
                    }
                }
            }
        }
        assert!(steps > 100, "{steps}");
        // every subset of {0, 1, 2, 3, 4, ∞} as the tracked keys, over
        // every transition
        let interesting = [0, 1, 2, 3, 4, i64::MAX];
        for mask in 0..(1u32 << interesting.len()) {
            let keys: RangedKeySet = interesting
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, k)| *k)
                .collect();
            check_update(&h, 0, &keys, &format!("mask {mask:b}"));
        }
        // late tracking over the whole sequence
        for r in 0..4 {
            check_rebuild(&h, &mut rng, 5, &format!("rebuild {r}"));
        }
    });
}

/// Seeded random histories over larger key sets and deeper trees, with
/// data-only transactions and trees that become empty.
#[test]
fn btail_random() {
    common::with_seed("btail_random", |seed| {
        let mut rng = Rng::new(seed);
        let deadline = Instant::now() + common::budget(Duration::from_secs(20));
        let mut rounds = 0;
        while rounds < 3 || Instant::now() < deadline {
            rounds += 1;
            let kmax = 4 + rng.below(20) as i64;
            let maxdepth = 1 + rng.below(3) as usize;
            let maxsplit = 1 + rng.below(3) as usize;
            let mut h = History::new();
            let nsteps = 5 + rng.below(25);
            for _ in 0..nsteps {
                let s = if rng.chance(1, 6) {
                    Step::Data(vec!["a".into(), "c".into()])
                } else if rng.chance(1, 10) {
                    Step::Tree(engine::testkit::topology::Topology::empty())
                } else {
                    let kv = common::random_kv(&mut rng, kmax, 6);
                    Step::Tree(common::random_topology(&mut rng, &kv, maxdepth, maxsplit))
                };
                h.step(&s);
            }
            let ctx = format!("round {rounds} (kmax {kmax}, depth {maxdepth}, split {maxsplit})");
            for _ in 0..3 {
                let keys = common::random_keys(&mut rng, kmax);
                let i0 = rng.below(h.revs.len() as u64) as usize;
                check_update(&h, i0, &keys, &ctx);
            }
            let full = RangedKeySet::from_iter([KeyRange::FULL]);
            check_update(&h, 0, &full, &ctx);
            check_rebuild(&h, &mut rng, kmax, &ctx);
        }
        eprintln!("btail_random: {rounds} rounds, seed {seed}");
    });
}

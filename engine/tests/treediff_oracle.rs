//! treediff alone, both directions, against the oracle: for every
//! transition of a history of random and hand-picked topologies and random
//! tracked key sets, `step` forward from the tracked nodes before must give
//! exactly the oracle's diff of the tracked keys and exactly the tracked
//! nodes a fresh walk finds after (and `step_ex` the difference of the two
//! node sets); backward from the nodes after, the same diff and the nodes
//! before.

mod common;

use common::{History, Rng, Step};
use engine::testkit::topology::Topology;
use engine::treediff::{self, Direction, TrackTree};
use std::collections::BTreeSet;
use zodb::Oid;

fn node_set(t: &TrackTree) -> BTreeSet<Oid> {
    t.iter().map(|(o, _)| o).collect()
}

#[test]
fn treediff_both_directions() {
    common::with_seed("treediff_both_directions", |seed| {
        let mut rng = Rng::new(seed);
        let deadline =
            std::time::Instant::now() + common::budget(std::time::Duration::from_secs(8));
        let mut rounds = 0;
        while rounds < 2 || std::time::Instant::now() < deadline {
            rounds += 1;
            let kmax = 8 + rng.below(20) as i64;
            let mut h = History::new();
            let fixed = [
                "T2,4,6/B1:a-B2:b,3:c-B4:d,5:e-B6:f,7:g",
                "T3,5,7/B1:g,2:f-B3:e,4:d-B5:c,6:b-B7:a",
                "T3/T-T/B1:a-T5/B:-B7:b,8:c,9:d",
                "T/B:",
                "T/T/B1:a,2:b",
                "T4/T2-T6/B1:x-B2:y,3:z-B4:x-B6:y,7:z",
                "T/B1:a",
            ];
            for t in fixed {
                h.step(&Step::Tree(t.parse::<Topology>().unwrap()));
            }
            for _ in 0..30 {
                let kv = common::random_kv(&mut rng, kmax, 5);
                let depth = 1 + rng.below(3) as usize;
                let split = 1 + rng.below(3) as usize;
                h.step(&Step::Tree(common::random_topology(
                    &mut rng, &kv, depth, split,
                )));
                if rng.chance(1, 10) {
                    h.step(&Step::Data(vec!["a".into()]));
                }
            }
            let db = h.storage();
            let root = h.tree();
            for i in 1..h.revs.len() {
                for _ in 0..6 {
                    let keys = common::random_keys(&mut rng, kmax);
                    let before = TrackTree::walk(&*db, root, h.revs[i - 1], &keys).unwrap();
                    let after = TrackTree::walk(&*db, root, h.revs[i], &keys).unwrap();
                    let ctx = format!("@{i} {} -> {}, keys {keys}", h.what[i - 1], h.what[i]);

                    let mut t = before.clone();
                    let d = treediff::step_ex(
                        &*db,
                        &mut t,
                        &keys,
                        h.revs[i],
                        &h.oids[i],
                        Direction::Forward,
                    )
                    .unwrap();
                    assert_eq!(d.kv, h.delta(i, &keys), "{ctx}: forward δT");
                    t.verify().unwrap();
                    assert_eq!(t, after, "{ctx}: forward tracked nodes");
                    let (nb, na) = (node_set(&before), node_set(&after));
                    let del: Vec<Oid> = nb.difference(&na).copied().collect();
                    let add: Vec<Oid> = na.difference(&nb).copied().collect();
                    assert_eq!(d.track_del, del, "{ctx}: δtrack del");
                    assert_eq!(d.track_add, add, "{ctx}: δtrack add");

                    let mut t = after.clone();
                    let kv = treediff::step(
                        &*db,
                        &mut t,
                        &keys,
                        h.revs[i],
                        &h.oids[i],
                        Direction::Backward,
                    )
                    .unwrap();
                    assert_eq!(kv, h.delta(i, &keys), "{ctx}: backward δT");
                    assert_eq!(t, before, "{ctx}: backward tracked nodes");
                }
            }
        }
        eprintln!("treediff: {rounds} rounds, seed {seed}");
    });
}

//! PPTreeSubSet and ΔPPTreeSubSet (`engine::pptree`) against a naive oracle
//! on random forests.
//!
//! A forest is a plain map `oid -> parent` (up to ~30 nodes, random oids,
//! several roots, some long chains). The oracle computes `PP(X)` for a set
//! of nodes `X` by walking parents, its leaves by looking for nodes nobody
//! points to, and nchild by counting: nothing of `engine::pptree` is used.
//!
//! - `pptree_oracle_set_algebra`: for random node sets `X`, `Y` (mostly
//!   forest leaves, sometimes any nodes), `A = PP(X)` and `B = PP(Y)` built
//!   with `add_path`, check members, links, nchild, leaves and `path` against
//!   the oracle; `A ∪ B`, `A \ B`, `A ∩ B` against `PP` of the leaf-set
//!   formulas; identities (`(A \ B) ∪ (A ∩ B) = A`, …); and
//!   `apply_delta({del: D, add: B})` = `PP((leaves(A) \ leaves(D)) ∪
//!   leaves(B))`, with the reverse undoing it when the leaf sets allow it.
//! - `pptree_oracle_delta_between_forests`: a second forest is made from the
//!   first by moving random nodes (with their subtrees) under other parents
//!   and adding new nodes; `S1 = PP₁(X1)`, `S2 = PP₂(X2)`. A Δ is computed
//!   from `S1` and `S2` alone (moved nodes, removed and added nodes, and
//!   `ΔnchildNonLeafs` = children kept under a moved node, as treediff
//!   does); `apply_delta` must turn `S1` into `S2`, and its reverse `S2`
//!   into `S1`.
//! - `pptree_oracle_garbage_delta`: random ill-fitting Δ on random sets:
//!   `apply_delta` either fails and leaves the set unchanged, or succeeds
//!   and the result passes `verify()`.
//! - `pptree_prop_ops` (proptest): sequences of add_path / union /
//!   difference / intersection with operands from the forest or from a
//!   conflicting copy of it (some parents changed), against a model map;
//!   an operation touching a node under two parents must fail with
//!   `TreeCorrupt` and change nothing.
//!
//! `verify()` runs after every operation. The seeded tests print their seed;
//! `WCFS_TEST_SEED=<seed>` replays a run.

use engine::pptree::{DeltaPPTreeSubSet, PPTreeSubSet};
use engine::Error;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use zodb::Oid;

const Ø: Oid = Oid::INVALID;

// ---- randomness ----

/// SplitMix64: a small seeded generator, enough for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `num/den`.
    fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

/// The seed for a randomized test: `WCFS_TEST_SEED` if set, else the clock.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("WCFS_TEST_SEED") {
        Ok(s) => s.parse().expect("WCFS_TEST_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("{test}: seed = {seed} (replay with WCFS_TEST_SEED={seed})");
    seed
}

// ---- forests and the oracle ----

/// oid -> parent (ø for a root). Also used for parent-closed node sets.
type Forest = BTreeMap<Oid, Oid>;

/// A fresh oid not in `used`, from a range wide enough that oid order says
/// nothing about the structure.
fn fresh(rng: &mut Rng, used: &Forest) -> Oid {
    loop {
        let o = Oid(1 + rng.below(0xfff) as u64);
        if !used.contains_key(&o) {
            return o;
        }
    }
}

/// A random forest of 1..=n nodes: each node hangs under an earlier one
/// (often the last few, for depth) or is a root.
fn gen_forest(rng: &mut Rng, n: usize) -> Forest {
    let n = 1 + rng.below(n);
    let mut f = Forest::new();
    let mut order = Vec::new();
    for i in 0..n {
        let oid = fresh(rng, &f);
        let parent = if i == 0 || rng.chance(1, 7) {
            Ø
        } else if rng.chance(1, 2) {
            order[i - 1 - rng.below(i.min(3))]
        } else {
            rng.pick(&order)
        };
        f.insert(oid, parent);
        order.push(oid);
    }
    f
}

/// Root-first path to `n` in `f`.
fn path_to(f: &Forest, n: Oid) -> Vec<Oid> {
    let mut p = vec![n];
    let mut cur = f[&n];
    while cur != Ø {
        p.push(cur);
        cur = f[&cur];
    }
    p.reverse();
    p
}

/// Whether `a` is `x` or an ancestor of it in `f`.
fn is_anc_or_self(f: &Forest, a: Oid, x: Oid) -> bool {
    let mut cur = x;
    while cur != Ø {
        if cur == a {
            return true;
        }
        cur = f[&cur];
    }
    false
}

/// Oracle `PP(xs)` in `f`: every node of xs and all its ancestors.
fn pp_model(f: &Forest, xs: impl IntoIterator<Item = Oid>) -> Forest {
    let mut m = Forest::new();
    for x in xs {
        let mut cur = x;
        while cur != Ø && !m.contains_key(&cur) {
            m.insert(cur, f[&cur]);
            cur = f[&cur];
        }
    }
    m
}

/// Oracle leaves: the nodes no node points to.
fn leaves_model(m: &Forest) -> BTreeSet<Oid> {
    let parents: BTreeSet<Oid> = m.values().copied().collect();
    m.keys().filter(|o| !parents.contains(o)).copied().collect()
}

/// Oracle full state: oid -> (parent, nchild).
fn expect(m: &Forest) -> BTreeMap<Oid, (Oid, u32)> {
    let mut r: BTreeMap<Oid, (Oid, u32)> = m.iter().map(|(&o, &p)| (o, (p, 0))).collect();
    for &p in m.values() {
        if p != Ø {
            r.get_mut(&p).expect("parent-closed").1 += 1;
        }
    }
    r
}

/// The set's full state, to compare with [`expect`].
fn state(s: &PPTreeSubSet) -> BTreeMap<Oid, (Oid, u32)> {
    s.iter()
        .map(|(o, n)| (o, (n.parent(), n.nchild())))
        .collect()
}

fn leaves(s: &PPTreeSubSet) -> BTreeSet<Oid> {
    s.leaves().collect()
}

/// `PP(xs)` through the API under test.
fn pp(f: &Forest, xs: impl IntoIterator<Item = Oid>) -> PPTreeSubSet {
    let s = PPTreeSubSet::from_paths(xs.into_iter().map(|x| path_to(f, x))).unwrap();
    s.verify().unwrap();
    s
}

/// Assert the set is valid and equals the oracle set `m`.
#[track_caller]
fn assert_is(s: &PPTreeSubSet, m: &Forest, what: &str) {
    if let Err(e) = s.verify() {
        panic!("{what}: {e}");
    }
    assert_eq!(state(s), expect(m), "{what}: got {s:?}");
}

/// A random node set of `f`: mostly among its leaves, sometimes any nodes.
fn pick_nodes(rng: &mut Rng, f: &Forest) -> BTreeSet<Oid> {
    let pool: Vec<Oid> = if rng.chance(2, 3) {
        leaves_model(f).into_iter().collect()
    } else {
        f.keys().copied().collect()
    };
    let num = 1 + rng.below(4);
    pool.into_iter().filter(|_| rng.chance(num, 5)).collect()
}

// ---- set algebra ----

#[test]
fn pptree_oracle_set_algebra() {
    let seed = seed("pptree_oracle_set_algebra");
    let mut rng = Rng(seed);
    let mut reversible = 0;
    for _ in 0..800 {
        let f = gen_forest(&mut rng, 30);
        let (x, y) = (pick_nodes(&mut rng, &f), pick_nodes(&mut rng, &f));
        let (ma, mb) = (
            pp_model(&f, x.iter().copied()),
            pp_model(&f, y.iter().copied()),
        );
        let (a, b) = (pp(&f, x.iter().copied()), pp(&f, y.iter().copied()));
        assert_is(&a, &ma, "PP(X)");
        assert_is(&b, &mb, "PP(Y)");
        let (la, lb) = (leaves_model(&ma), leaves_model(&mb));
        assert_eq!(leaves(&a), la);
        for &n in ma.keys() {
            assert_eq!(a.path(n).unwrap(), path_to(&f, n));
        }
        for &n in f.keys().filter(|n| !ma.contains_key(n)) {
            assert!(!a.contains(n) && a.path(n).is_none());
        }
        // adding the paths again, in another order, changes nothing
        let mut a2 = a.clone();
        for &n in x.iter().rev() {
            a2.add_path(&path_to(&f, n)).unwrap();
        }
        assert_eq!(a2, a);

        let u = a.union(&b).unwrap();
        assert_is(&u, &pp_model(&f, la.union(&lb).copied()), "A ∪ B");
        assert_eq!(b.union(&a).unwrap(), u, "∪ commutes");
        let d = a.difference(&b).unwrap();
        assert_is(&d, &pp_model(&f, la.difference(&lb).copied()), "A \\ B");
        let i = a.intersection(&b).unwrap();
        assert_is(&i, &pp_model(&f, la.intersection(&lb).copied()), "A ∩ B");
        assert_eq!(b.intersection(&a).unwrap(), i, "∩ commutes");

        assert_eq!(d.union(&i).unwrap(), a, "(A \\ B) ∪ (A ∩ B) = A");
        assert_eq!(a.union(&a).unwrap(), a);
        assert_eq!(a.intersection(&a).unwrap(), a);
        assert!(a.difference(&a).unwrap().is_empty());
        assert_eq!(u.difference(&PPTreeSubSet::new()).unwrap(), u);
        let mut ip = a.clone();
        ip.union_in_place(&b).unwrap();
        assert_eq!(ip, u);
        let mut ip = a.clone();
        ip.difference_in_place(&b).unwrap();
        assert_eq!(ip, d);

        // apply without fixups: (A \ D) ∪ B on leaf sets
        // D: often some of A's leaves (then the reverse can undo it)
        let z = if rng.chance(2, 3) {
            la.iter().copied().filter(|_| rng.chance(1, 2)).collect()
        } else {
            pick_nodes(&mut rng, &f)
        };
        let d_set = pp(&f, z);
        let ld = leaves(&d_set);
        let mut delta = DeltaPPTreeSubSet {
            del: d_set,
            add: b.clone(),
            delta_nchild_non_leafs: HashMap::new(),
        };
        let mut r = a.clone();
        r.apply_delta(&delta).unwrap();
        let want: BTreeSet<Oid> = la.difference(&ld).chain(lb.iter()).copied().collect();
        assert_is(&r, &pp_model(&f, want), "apply {del: D, add: B}");
        // and back: PP((leaves(R) \ leaves(B)) ∪ leaves(D)), which is A
        // again when D's leaves were A's and R's leaves split exactly into
        // A's kept leaves and B's
        let lr = leaves(&r);
        delta.reverse();
        let mut back = r.clone();
        back.apply_delta(&delta).unwrap();
        let want: BTreeSet<Oid> = lr.difference(&lb).chain(ld.iter()).copied().collect();
        assert_is(&back, &pp_model(&f, want), "apply reverse");
        let kept: BTreeSet<Oid> = la.difference(&ld).copied().collect();
        if ld.is_subset(&la) && kept.is_disjoint(&lb) && lr == kept.union(&lb).copied().collect() {
            assert_eq!(back, a, "reverse undoes");
            reversible += 1;
        }
    }
    eprintln!("reversible cases: {reversible}");
    assert!(reversible > 100, "only {reversible} reversible cases");
}

// ---- Δ between two forests ----

/// Make a second forest from `f1`: move some nodes of `s1` (with their
/// subtrees) under other parents, and add new nodes. The moved nodes are
/// picked none inside another's subtree, and the new parents outside every
/// moved subtree (so no cycle) and never a leaf of `s1` (a tracked leaf is
/// a bucket: it gets no children).
fn move_subtrees(rng: &mut Rng, f1: &Forest, s1: &Forest) -> Forest {
    let mut f2 = f1.clone();
    let s1_leaves = leaves_model(s1);
    let mut moved: Vec<Oid> = Vec::new();
    for &m in s1.keys() {
        if rng.chance(1, 4)
            && !moved
                .iter()
                .any(|&mm| is_anc_or_self(f1, mm, m) || is_anc_or_self(f1, m, mm))
        {
            moved.push(m);
        }
    }
    let mut targets: Vec<Oid> = f1
        .keys()
        .copied()
        .filter(|&x| !s1_leaves.contains(&x) && !moved.iter().any(|&m| is_anc_or_self(f1, m, x)))
        .collect();
    targets.push(Ø);
    // new nodes (possibly chains of them), under targets, become targets
    for _ in 0..rng.below(4) {
        let q = fresh(rng, &f2);
        let p = rng.pick(&targets);
        f2.insert(q, p);
        targets.push(q);
    }
    for m in moved {
        let p = rng.pick(&targets);
        if p != f1[&m] {
            f2.insert(m, p);
        }
    }
    f2
}

/// Δ(S1 → S2) from the two sets alone, the way treediff reports it.
///
/// Let `K` be the nodes *kept*: in both sets, under the same parent, a leaf
/// in both or in neither. Every other node of S1 goes to `del` with its old
/// path, every other node of S2 to `add` with its new path (a node whose
/// leafness changes is collected on the way and must come back). A node
/// moved to another parent keeps the children that stay under it through
/// the whole apply: `ΔnchildNonLeafs[n]` = their number. Those are the kept
/// children that *survive* `del`: a kept node survives if it is a leaf or
/// one of its kept children survives (otherwise it is collected as its
/// children go, and `add` brings it back). The recursion reads the same on
/// both sides, so the reverse Δ is `Δ(S2 → S1)`. (treediff reports such a
/// node only when nothing under it changes: then all its children count.)
fn delta_between(s1: &PPTreeSubSet, s2: &PPTreeSubSet) -> DeltaPPTreeSubSet {
    let kept = |n: Oid| match (s1.get(n), s2.get(n)) {
        (Some(a), Some(b)) => a.parent() == b.parent() && a.is_leaf() == b.is_leaf(),
        _ => false,
    };
    let mut children: BTreeMap<Oid, Vec<Oid>> = BTreeMap::new();
    for (c, a) in s1.iter() {
        children.entry(a.parent()).or_default().push(c);
    }
    fn survives(
        n: Oid,
        kept: &dyn Fn(Oid) -> bool,
        children: &BTreeMap<Oid, Vec<Oid>>,
        memo: &mut BTreeMap<Oid, bool>,
    ) -> bool {
        if let Some(&v) = memo.get(&n) {
            return v;
        }
        let v = kept(n)
            && match children.get(&n) {
                None => true, // a leaf
                Some(cs) => cs.iter().any(|&c| survives(c, kept, children, memo)),
            };
        memo.insert(n, v);
        v
    }
    let mut memo = BTreeMap::new();

    let mut delta = DeltaPPTreeSubSet::new();
    for (n, a) in s1.iter() {
        if kept(n) {
            continue;
        }
        delta.del.add_path(&s1.path(n).unwrap()).unwrap();
        let Some(b) = s2.get(n) else { continue };
        delta.add.add_path(&s2.path(n).unwrap()).unwrap();
        if b.parent() != a.parent() {
            let stay = children.get(&n).map_or(0, |cs| {
                cs.iter()
                    .filter(|&&c| survives(c, &kept, &children, &mut memo))
                    .count()
            });
            if stay > 0 {
                delta.delta_nchild_non_leafs.insert(n, stay as i64);
            }
        }
    }
    for (n, _) in s2.iter().filter(|(n, _)| !s1.contains(*n)) {
        delta.add.add_path(&s2.path(n).unwrap()).unwrap();
    }
    delta
}

#[test]
fn pptree_oracle_delta_between_forests() {
    let seed = seed("pptree_oracle_delta_between_forests");
    let mut rng = Rng(seed);
    let mut with_fixup = 0;
    for _ in 0..1000 {
        let f1 = gen_forest(&mut rng, 30);
        let x1 = pick_nodes(&mut rng, &f1);
        let m1 = pp_model(&f1, x1.iter().copied());
        let f2 = move_subtrees(&mut rng, &f1, &m1);
        // tracked after: the same leaves (maybe fewer), plus some others
        let mut x2: BTreeSet<Oid> = leaves_model(&m1)
            .into_iter()
            .filter(|_| rng.chance(5, 6))
            .collect();
        x2.extend(
            pick_nodes(&mut rng, &f2)
                .into_iter()
                .filter(|_| rng.chance(1, 3)),
        );
        let m2 = pp_model(&f2, x2.iter().copied());
        let (s1, s2) = (pp(&f1, x1.iter().copied()), pp(&f2, x2.iter().copied()));
        assert_is(&s2, &m2, "PP₂(X2)");

        let mut delta = delta_between(&s1, &s2);
        delta.del.verify().unwrap();
        delta.add.verify().unwrap();
        if !delta.delta_nchild_non_leafs.is_empty() {
            with_fixup += 1;
        }
        let mut s = s1.clone();
        if let Err(e) = s.apply_delta(&delta) {
            panic!("apply: {e}\n S1 = {s1}\n S2 = {s2}\n Δ = {delta:?}");
        }
        assert_is(&s, &m2, "S1 + Δ = S2");

        delta.reverse();
        assert_eq!(delta, delta_between(&s2, &s1), "reverse = Δ(S2 → S1)");
        s.apply_delta(&delta).unwrap();
        assert_is(&s, &m1, "S2 - Δ = S1");
    }
    eprintln!("cases with a fixup: {with_fixup}");
    assert!(with_fixup > 100, "only {with_fixup} cases with a fixup");
}

#[test]
fn pptree_oracle_garbage_delta() {
    let seed = seed("pptree_oracle_garbage_delta");
    let mut rng = Rng(seed);
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..2000 {
        let f1 = gen_forest(&mut rng, 20);
        let m1 = pp_model(&f1, pick_nodes(&mut rng, &f1));
        let f2 = move_subtrees(&mut rng, &f1, &m1);
        let s = pp(&f1, pick_nodes(&mut rng, &f1));
        let mut nnl = HashMap::new();
        let nodes: Vec<Oid> = f2.keys().copied().collect();
        for _ in 0..rng.below(3) {
            nnl.insert(rng.pick(&nodes), rng.below(4) as i64 - 1);
        }
        let delta = DeltaPPTreeSubSet {
            del: pp(
                if rng.chance(1, 2) { &f1 } else { &f2 },
                pick_nodes(&mut rng, &f1),
            ),
            add: pp(&f2, pick_nodes(&mut rng, &f2)),
            delta_nchild_non_leafs: nnl,
        };
        let mut x = s.clone();
        match x.apply_delta(&delta) {
            Ok(()) => {
                x.verify()
                    .unwrap_or_else(|e| panic!("{e}\n S = {s:?}\n Δ = {delta:?}"));
                ok += 1;
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::DeltaMismatch { .. } | Error::TreeCorrupt { .. }),
                    "{e}"
                );
                assert_eq!(x, s, "failed apply changed the set: {e}");
                failed += 1;
            }
        }
    }
    eprintln!("applied: {ok}, refused: {failed}");
    assert!(ok > 100 && failed > 100, "ok {ok}, failed {failed}");
}

// ---- proptest: operation sequences with conflicts ----

#[derive(Debug, Clone)]
enum Op {
    AddPath(usize),
    Union(Vec<usize>),
    Difference(Vec<usize>),
    Intersection(Vec<usize>),
}

/// An operation and whether its operand comes from the conflicting forest.
fn op_strategy() -> impl Strategy<Value = (Op, bool)> {
    let nodes = || prop::collection::vec(0usize..64, 0..5);
    (
        prop_oneof![
            3 => (0usize..64).prop_map(Op::AddPath),
            2 => nodes().prop_map(Op::Union),
            2 => nodes().prop_map(Op::Difference),
            1 => nodes().prop_map(Op::Intersection),
        ],
        prop::bool::weighted(0.2),
    )
}

/// The model's expected result of `op` on `m`: the new set, or Err for a
/// node under two parents.
fn model_op(m: &Forest, f: &Forest, op: &Op, nodes: &[Oid]) -> Result<Forest, ()> {
    let pick = |ix: &[usize]| -> Forest { pp_model(f, ix.iter().map(|&i| nodes[i % nodes.len()])) };
    let conflict = |b: &Forest, which: &BTreeSet<Oid>| {
        which.iter().any(|n| m.get(n).is_some_and(|p| *p != b[n]))
    };
    match op {
        Op::AddPath(i) => {
            let b = pick(&[*i]);
            if conflict(&b, &b.keys().copied().collect()) {
                return Err(());
            }
            Ok(m.iter().chain(b.iter()).map(|(&o, &p)| (o, p)).collect())
        }
        Op::Union(ix) => {
            let b = pick(ix);
            if conflict(&b, &b.keys().copied().collect()) {
                return Err(());
            }
            Ok(m.iter().chain(b.iter()).map(|(&o, &p)| (o, p)).collect())
        }
        Op::Difference(ix) => {
            let b = pick(ix);
            let lb = leaves_model(&b);
            if conflict(&b, &lb) {
                return Err(());
            }
            Ok(pp_model(m, leaves_model(m).difference(&lb).copied()))
        }
        Op::Intersection(ix) => {
            let b = pick(ix);
            let common: BTreeSet<Oid> = leaves_model(m)
                .intersection(&leaves_model(&b))
                .copied()
                .collect();
            // the common leaves' paths must agree all the way up
            for &l in &common {
                let mut cur = l;
                while cur != Ø {
                    if m[&cur] != b[&cur] {
                        return Err(());
                    }
                    cur = m[&cur];
                }
            }
            Ok(pp_model(m, common))
        }
    }
}

fn run_ops(seed: u64, ops: &[(Op, bool)]) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let f = gen_forest(&mut rng, 24);
    // the conflicting forest: some nodes under another parent (acyclic)
    let mut g = f.clone();
    let nodes: Vec<Oid> = f.keys().copied().collect();
    for &n in &nodes {
        if rng.chance(1, 4) {
            let p = rng.pick(&nodes);
            if !is_anc_or_self(&g, n, p) {
                g.insert(n, p);
            } else {
                g.insert(n, Ø);
            }
        }
    }
    let mut s = PPTreeSubSet::new();
    let mut m = Forest::new();
    for (op, conflicting) in ops {
        let src = if *conflicting { &g } else { &f };
        let operand = |ix: &[usize]| pp(src, ix.iter().map(|&i| nodes[i % nodes.len()]));
        let want = model_op(&m, src, op, &nodes);
        let before = s.clone();
        let got = match op {
            Op::AddPath(i) => s.add_path(&path_to(src, nodes[i % nodes.len()])),
            Op::Union(ix) => s.union_in_place(&operand(ix)),
            Op::Difference(ix) => s.difference_in_place(&operand(ix)),
            Op::Intersection(ix) => s.intersection(&operand(ix)).map(|r| s = r),
        };
        s.verify().map_err(|e| TestCaseError::fail(e.to_string()))?;
        match want {
            Ok(want) => {
                prop_assert!(got.is_ok(), "{op:?}: {got:?}");
                prop_assert_eq!(state(&s), expect(&want), "{:?}", op);
                m = want;
            }
            Err(()) => {
                prop_assert!(
                    matches!(got, Err(Error::TreeCorrupt { .. })),
                    "{:?}: want TreeCorrupt, got {:?}",
                    op,
                    got
                );
                prop_assert_eq!(&s, &before, "failed {:?} changed the set", op);
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn pptree_prop_ops(seed in any::<u64>(), ops in prop::collection::vec(op_strategy(), 1..40)) {
        run_ops(seed, &ops)?;
    }
}

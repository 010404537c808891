//! PPTreeSubSet and ΔPPTreeSubSet (`engine::pptree`): table tests on small
//! hand-made trees.
//!
//! Oids are small hex numbers and sets are written in their text form
//! `{oid:parent …}` (`ø` = no parent), e.g. `{1:ø 2:1 3:2}` is the path
//! 1-2-3; paths are written `[1, 2, 3]`. Every set a test builds or gets back
//! is `verify()`d (parents present, nchild exact, no cycle) and compared by
//! its printed form, so that a wrong nchild (not printed) is caught by
//! `verify()` and a wrong node or link by the text. Failing operations must
//! return the expected typed error and leave the set exactly as it was.
//!
//! The ΔPPTreeSubSet cases include the example from upstream's
//! documentation (a subtree moving to another parent, which needs the
//! ΔnchildNonLeafs fixup) applied in both directions.

use engine::pptree::{norm_path, DeltaPPTreeSubSet, PPTreeSubSet};
use engine::Error;
use std::collections::{BTreeSet, HashMap};
use zodb::Oid;

const Ø: u64 = u64::MAX;

fn o(n: u64) -> Oid {
    Oid(n)
}

fn path(v: &[u64]) -> Vec<Oid> {
    v.iter().map(|&n| Oid(n)).collect()
}

/// The set from its text form.
fn s(text: &str) -> PPTreeSubSet {
    let s: PPTreeSubSet = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    s.verify().unwrap();
    assert_eq!(s.to_string(), text, "text form round trip");
    s
}

/// The set `PP(leaf of each path)`.
fn pp(paths: &[&[u64]]) -> PPTreeSubSet {
    let s = PPTreeSubSet::from_paths(paths.iter().map(|p| path(p))).unwrap();
    s.verify().unwrap();
    s
}

fn check(s: &PPTreeSubSet, want: &str) {
    s.verify().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.to_string(), want);
}

fn leaves(s: &PPTreeSubSet) -> BTreeSet<u64> {
    s.leaves().map(|o| o.0).collect()
}

fn roots(s: &PPTreeSubSet) -> BTreeSet<u64> {
    s.roots().map(|o| o.0).collect()
}

fn corrupt(oid: u64, p1: u64, p2: u64) -> Error {
    Error::TreeCorrupt {
        oid: o(oid),
        parent1: o(p1),
        parent2: o(p2),
    }
}

#[test]
fn pptree_empty() {
    let e = PPTreeSubSet::new();
    check(&e, "{}");
    assert!(e.is_empty());
    assert_eq!(e.len(), 0);
    assert_eq!(format!("{e:?}"), "{}");
    assert_eq!(e.path(o(1)), None);
    assert_eq!(s("{}"), e);
}

#[test]
fn pptree_add_path() {
    let mut a = PPTreeSubSet::new();
    a.add_path(&path(&[1, 2, 3])).unwrap();
    check(&a, "{1:ø 2:1 3:2}");
    assert_eq!(format!("{a:?}"), "{1:ø/1 2:1/1 3:2/0}");
    assert_eq!(leaves(&a), [3].into());
    assert_eq!(a.path(o(3)), Some(path(&[1, 2, 3])));
    assert_eq!(a.path(o(2)), Some(path(&[1, 2])));
    assert_eq!(a.path(o(9)), None);

    // overlapping paths share their prefix; nchild counts distinct children
    a.add_path(&path(&[1, 2, 4])).unwrap();
    a.add_path(&path(&[1, 5])).unwrap();
    check(&a, "{1:ø 2:1 3:2 4:2 5:1}");
    assert_eq!(format!("{a:?}"), "{1:ø/2 2:1/2 3:2/0 4:2/0 5:1/0}");
    assert_eq!(leaves(&a), [3, 4, 5].into());
    assert_eq!(a.get(o(2)).unwrap().nchild(), 2);
    assert_eq!(a.get(o(2)).unwrap().parent(), o(1));
    assert!(a.get(o(1)).unwrap().is_root());

    // adding a path again, or a prefix of one, changes nothing
    let before = a.clone();
    a.add_path(&path(&[1, 2, 3])).unwrap();
    a.add_path(&path(&[1, 2])).unwrap();
    a.add_path(&path(&[1])).unwrap();
    assert_eq!(a, before);
    check(&a, "{1:ø 2:1 3:2 4:2 5:1}");
    assert!(a.contains(o(2)) && !a.contains(o(6)));
}

#[test]
fn pptree_several_roots() {
    let mut a = pp(&[&[1, 2], &[0x10, 0x11, 0x12], &[0x20]]);
    check(&a, "{1:ø 2:1 10:ø 11:10 12:11 20:ø}");
    assert_eq!(roots(&a), [1, 0x10, 0x20].into());
    assert_eq!(leaves(&a), [2, 0x12, 0x20].into());
    assert_eq!(a.path(o(0x12)), Some(path(&[0x10, 0x11, 0x12])));
    // a lone root is both root and leaf; growing under it makes it inner
    a.add_path(&path(&[0x20, 0x21])).unwrap();
    check(&a, "{1:ø 2:1 10:ø 11:10 12:11 20:ø 21:20}");
    assert_eq!(leaves(&a), [2, 0x12, 0x21].into());
}

#[test]
fn pptree_norm_path() {
    assert_eq!(norm_path(&path(&[Ø])), &[] as &[Oid]);
    assert_eq!(norm_path(&path(&[1, Ø])), path(&[1]));
    assert_eq!(norm_path(&path(&[1, 2, Ø])), path(&[1, 2]));
    assert_eq!(norm_path(&path(&[1, 2])), path(&[1, 2]));

    let mut a = PPTreeSubSet::new();
    // [ø]: the artificial empty tree, tracked as nothing
    a.add_path(&path(&[Ø])).unwrap();
    check(&a, "{}");
    // [root, ø]: an embedded bucket, tracked through its tree
    a.add_path(&path(&[1, Ø])).unwrap();
    check(&a, "{1:ø}");
    // another embedded bucket: no conflict on ø
    a.add_path(&path(&[7, Ø])).unwrap();
    check(&a, "{1:ø 7:ø}");
    // an empty tree: just the root
    a.add_path(&path(&[9])).unwrap();
    check(&a, "{1:ø 7:ø 9:ø}");
}

#[test]
fn pptree_bad_paths() {
    let mut a = pp(&[&[1, 2]]);
    for bad in [&[][..], &[1, Ø, 2][..], &[Ø, 1][..], &[Ø, Ø][..]] {
        let err = a.add_path(&path(bad)).unwrap_err();
        assert!(matches!(err, Error::BadPath { .. }), "{bad:?}: {err}");
        check(&a, "{1:ø 2:1}");
    }
}

#[test]
fn pptree_two_parents() {
    let mut a = pp(&[&[1, 2, 3], &[1, 4]]);
    let want = "{1:ø 2:1 3:2 4:1}";

    // 3 under 2 already; now under 5 (5 would be new): refused, no trace
    assert_eq!(a.add_path(&path(&[1, 5, 3])), Err(corrupt(3, 2, 5)));
    check(&a, want);
    // 2 is a child of 1, not a root
    assert_eq!(a.add_path(&path(&[2, 6])), Err(corrupt(2, 1, Ø)));
    check(&a, want);
    // a root seen as a child
    assert_eq!(a.add_path(&path(&[4, 1])), Err(corrupt(4, 1, Ø)));
    check(&a, want);
    // a node repeated in one path is under two parents too
    let mut e = PPTreeSubSet::new();
    assert_eq!(e.add_path(&path(&[1, 2, 1])), Err(corrupt(1, Ø, 2)));
    check(&e, "{}");
    assert_eq!(e.add_path(&path(&[1, 1])), Err(corrupt(1, Ø, 1)));
    check(&e, "{}");

    // the same through union and difference
    let b = pp(&[&[1, 4, 3]]);
    assert_eq!(a.union_in_place(&b), Err(corrupt(3, 2, 4)));
    check(&a, want);
    assert_eq!(a.difference_in_place(&b), Err(corrupt(3, 2, 4)));
    check(&a, want);
    assert_eq!(a.intersection(&b), Err(corrupt(3, 2, 4)));
    // but difference looks only at the other's leaves
    let c = pp(&[&[4, 9]]); // 4 as a root: inner node of c, ignored
    a.difference_in_place(&c).unwrap();
    check(&a, want);
}

#[test]
fn pptree_union() {
    let a = pp(&[&[1, 2, 3], &[1, 4]]);
    let b = pp(&[&[1, 2, 5], &[1, 4, 6], &[7, 8]]);
    let u = a.union(&b).unwrap();
    check(&u, "{1:ø 2:1 3:2 4:1 5:2 6:4 7:ø 8:7}");
    assert_eq!(leaves(&u), [3, 5, 6, 8].into()); // 4 no longer a leaf
    assert_eq!(b.union(&a).unwrap(), u);
    assert_eq!(u.union(&a).unwrap(), u);
    assert_eq!(a.union(&PPTreeSubSet::new()).unwrap(), a);
    assert_eq!(PPTreeSubSet::new().union(&a).unwrap(), a);

    let mut x = a.clone();
    x.union_in_place(&b).unwrap();
    assert_eq!(x, u);
}

#[test]
fn pptree_difference() {
    let a = s("{1:ø 2:1 3:2 4:2 5:1}"); // 1-2-3, 1-2-4, 1-5

    // a leaf goes, its parent stays (still has 4)
    check(
        &a.difference(&pp(&[&[1, 2, 3]])).unwrap(),
        "{1:ø 2:1 4:2 5:1}",
    );
    // both leaves under 2 go: 2 is collected too, 1 stays (has 5)
    check(
        &a.difference(&pp(&[&[1, 2, 3], &[1, 2, 4]])).unwrap(),
        "{1:ø 5:1}",
    );
    // everything: the root is collected too (upstream's bug 66bc41ce kept it)
    check(&a.difference(&a).unwrap(), "{}");
    check(
        &a.difference(&pp(&[&[1, 2, 3], &[1, 2, 4], &[1, 5]]))
            .unwrap(),
        "{}",
    );
    // a leaf of the other that is an inner node here stays: it is still on
    // the path to 3 and 4 (PP(leaves(A) \ leaves(B)) = A)
    check(
        &a.difference(&pp(&[&[1, 2]])).unwrap(),
        "{1:ø 2:1 3:2 4:2 5:1}",
    );
    check(
        &a.difference(&pp(&[&[1]])).unwrap(),
        "{1:ø 2:1 3:2 4:2 5:1}",
    );
    // leaves of the other that are not here: nothing happens
    check(
        &a.difference(&pp(&[&[1, 2, 9], &[8]])).unwrap(),
        "{1:ø 2:1 3:2 4:2 5:1}",
    );
    // several roots: a whole tree goes
    let b = pp(&[&[1, 2], &[7, 8, 9], &[7, 0xa]]);
    check(
        &b.difference(&pp(&[&[7, 8, 9], &[7, 0xa]])).unwrap(),
        "{1:ø 2:1}",
    );
    // in place
    let mut x = a.clone();
    x.difference_in_place(&pp(&[&[1, 5]])).unwrap();
    check(&x, "{1:ø 2:1 3:2 4:2}");
    // a lone root: a leaf of itself
    let mut r = pp(&[&[1]]);
    r.difference_in_place(&pp(&[&[1]])).unwrap();
    check(&r, "{}");
}

#[test]
fn pptree_intersection() {
    let a = pp(&[&[1, 2, 3], &[1, 2, 4], &[1, 5], &[7, 8]]);
    let b = pp(&[&[1, 2, 4], &[1, 5], &[1, 6], &[7, 9]]);
    let i = a.intersection(&b).unwrap();
    check(&i, "{1:ø 2:1 4:2 5:1}");
    assert_eq!(b.intersection(&a).unwrap(), i);
    assert_eq!(a.intersection(&a).unwrap(), a);
    check(&a.intersection(&PPTreeSubSet::new()).unwrap(), "{}");
    // leaf sets: 2 is a leaf only of the left; node sets would give {1 2}
    check(
        &pp(&[&[1, 2]]).intersection(&pp(&[&[1, 2, 3]])).unwrap(),
        "{}",
    );
    // (A \ B) ∪ (A ∩ B) = A
    let d = a.difference(&b).unwrap();
    assert_eq!(d.union(&i).unwrap(), a);
}

/// The example of ΔPPTreeSubSet's documentation (upstream's too): `43`
/// moves with its subtree `{44}` from under `42` to under `41`.
///
/// ```text
///        c*             c
///       /  \           /
///     41*   42        41
///      |     |       /  \
///     22    43      46   43
///            |       |    |
///           44      22   44
/// ```
fn moved_subtree_delta() -> (PPTreeSubSet, PPTreeSubSet, DeltaPPTreeSubSet) {
    let s1 = s("{c:ø 22:41 41:c 42:c 43:42 44:43}");
    let s2 = s("{c:ø 22:46 41:c 43:41 44:43 46:41}");
    let delta = DeltaPPTreeSubSet {
        del: pp(&[&[0xc, 0x42, 0x43], &[0xc, 0x41, 0x22]]),
        add: pp(&[&[0xc, 0x41, 0x43], &[0xc, 0x41, 0x46, 0x22]]),
        delta_nchild_non_leafs: HashMap::from([(o(0x43), 1)]),
    };
    (s1, s2, delta)
}

#[test]
fn pptree_apply_delta_moved_subtree() {
    let (s1, s2, mut delta) = moved_subtree_delta();
    let mut x = s1.clone();
    x.apply_delta(&delta).unwrap();
    check(&x, &s2.to_string());
    assert_eq!(x, s2);

    // and back
    delta.reverse();
    x.apply_delta(&delta).unwrap();
    assert_eq!(x, s1);
    check(&x, "{c:ø 22:41 41:c 42:c 43:42 44:43}");
}

#[test]
fn pptree_apply_delta_needs_fixup() {
    let (s1, _, mut delta) = moved_subtree_delta();

    // without the fixup: 43 is a leaf of del but an inner node of s1, so
    // it stays under 42, and add puts it under 41: two parents
    delta.delta_nchild_non_leafs.clear();
    let mut x = s1.clone();
    assert_eq!(x.apply_delta(&delta), Err(corrupt(0x43, 0x42, 0x41)));
    assert_eq!(x, s1);

    // a fixup larger than 43's children
    delta.delta_nchild_non_leafs = HashMap::from([(o(0x43), 2)]);
    let err = x.apply_delta(&delta).unwrap_err();
    assert!(matches!(err, Error::DeltaMismatch { .. }), "{err}");
    assert_eq!(x, s1);

    // a fixup of a node not in the set
    delta.delta_nchild_non_leafs = HashMap::from([(o(0x99), 1)]);
    let err = x.apply_delta(&delta).unwrap_err();
    assert!(matches!(err, Error::DeltaMismatch { .. }), "{err}");
    assert_eq!(x, s1);

    // the right δ applied to a set it was not computed for: 44 untracked,
    // so 43 has no children to keep
    let (_, _, delta) = moved_subtree_delta();
    let mut y = s("{c:ø 22:41 41:c 42:c 43:42}");
    let before = y.clone();
    let err = y.apply_delta(&delta).unwrap_err();
    assert!(matches!(err, Error::DeltaMismatch { .. }), "{err}");
    assert_eq!(y, before);
    // … nor twice: after the first, 43 is under 41 and del's 42 is gone
    let (s1, s2, delta) = moved_subtree_delta();
    let mut z = s1;
    z.apply_delta(&delta).unwrap();
    let res = z.apply_delta(&delta);
    assert!(res.is_err(), "{res:?}: {z}");
    assert_eq!(z, s2);
}

#[test]
fn pptree_apply_delta_plain() {
    // without fixups, apply = (S \ del) ∪ add
    let mut x = pp(&[&[1, 2, 3], &[1, 2, 4], &[1, 5]]);
    let delta = DeltaPPTreeSubSet {
        del: pp(&[&[1, 2, 3], &[1, 5]]),
        add: pp(&[&[1, 6], &[7]]),
        delta_nchild_non_leafs: HashMap::new(),
    };
    x.apply_delta(&delta).unwrap();
    check(&x, "{1:ø 2:1 4:2 6:1 7:ø}");
    // the empty δ changes nothing
    let before = x.clone();
    x.apply_delta(&DeltaPPTreeSubSet::new()).unwrap();
    assert_eq!(x, before);
    assert!(DeltaPPTreeSubSet::new().is_empty());
    assert!(!delta.is_empty());
}

#[test]
fn pptree_delta_update_reverse() {
    let mut d1 = DeltaPPTreeSubSet {
        del: pp(&[&[1, 2]]),
        add: pp(&[&[1, 3]]),
        delta_nchild_non_leafs: HashMap::from([(o(2), 1), (o(5), 2)]),
    };
    let d2 = DeltaPPTreeSubSet {
        del: pp(&[&[1, 4]]),
        add: pp(&[&[1, 3, 6]]),
        delta_nchild_non_leafs: HashMap::from([(o(2), -1), (o(6), 3)]),
    };
    d1.update(&d2).unwrap();
    check(&d1.del, "{1:ø 2:1 4:1}");
    check(&d1.add, "{1:ø 3:1 6:3}");
    // sums per oid; zero sums are dropped
    assert_eq!(
        d1.delta_nchild_non_leafs,
        HashMap::from([(o(5), 2), (o(6), 3)])
    );

    // a conflict in add leaves the δ as it was (del included)
    let before = d1.clone();
    let bad = DeltaPPTreeSubSet {
        del: pp(&[&[1, 9]]),
        add: pp(&[&[1, 2, 6]]),
        delta_nchild_non_leafs: HashMap::new(),
    };
    assert_eq!(d1.update(&bad), Err(corrupt(6, 3, 2)));
    assert_eq!(d1, before);

    let mut r = d1.clone();
    r.reverse();
    assert_eq!((&r.del, &r.add), (&d1.add, &d1.del));
    assert_eq!(r.delta_nchild_non_leafs, d1.delta_nchild_non_leafs);
    r.reverse();
    assert_eq!(r, d1);
}

#[test]
fn pptree_text_form() {
    let a = s("{1:ø 2:1 3:2 ab:2}");
    assert_eq!(format!("{a:?}"), "{1:ø/1 2:1/2 3:2/0 ab:2/0}");
    assert_eq!(a, pp(&[&[1, 2, 3], &[1, 2, 0xab]]));
    // tokens in any order, spaces free
    assert_eq!(
        " { 3:2  2:1 1:ø } ".parse::<PPTreeSubSet>().unwrap(),
        pp(&[&[1, 2, 3]])
    );
    for bad in [
        "1:ø",                  // no braces
        "{1}",                  // no parent
        "{1:2}",                // parent not listed
        "{1:ø 1:ø}",            // twice
        "{1:2 2:1}",            // a cycle: never reaches a root
        "{x:ø}",                // not hex
        "{1:ø 2:zz}",           // not hex
        "{ffffffffffffffff:ø}", // ø is not a node
    ] {
        let err = bad.parse::<PPTreeSubSet>().unwrap_err();
        assert!(matches!(err, Error::Parse { .. }), "{bad}: {err}");
    }
}

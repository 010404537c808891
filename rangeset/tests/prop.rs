//! Property tests: random operation sequences on `RangedKeySet` and
//! `RangedMap<u8>`, applied in step to a naive model (`BTreeSet<i64>` /
//! `BTreeMap<i64, u8>`), plus set algebra over arbitrary `i64` ranges.
//!
//! How the model stays exact with a tiny domain: every range argument has
//! both ends in the domain `D = {MIN, MIN+1, -8..=7, MAX-1, MAX}`, so the
//! key line splits into 22 *cells* — each point of `D`, plus the gaps
//! `[MIN+2, -9]` and `[8, MAX-2]` — and membership (and value) is constant
//! on each cell. The model stores one key per cell (its lowest). After
//! every step we:
//! - call `verify()` (sorted, non-empty, disjoint, coalesced);
//! - compare membership / value key by key at both ends of every cell;
//! - compare the exact stored range list with the one computed from the
//!   model (runs of consecutive cells with the same value), which checks
//!   coalescing independently of `verify()`;
//! - check `get`/`range_of` and that the text form parses back.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rangeset::{KeyRange, RangedKeySet, RangedMap};

const MIN: i64 = i64::MIN;
const MAX: i64 = i64::MAX;

/// The points of the domain, increasing.
fn domain() -> Vec<i64> {
    let mut d = vec![MIN, MIN + 1];
    d.extend(-8..8);
    d.extend([MAX - 1, MAX]);
    d
}

/// The cells, increasing; each is inside or outside any range with ends
/// in the domain.
fn cells() -> Vec<KeyRange> {
    let mut c = vec![
        KeyRange::point(MIN),
        KeyRange::point(MIN + 1),
        KeyRange::new(MIN + 2, -9),
    ];
    c.extend((-8..8).map(KeyRange::point));
    c.extend([
        KeyRange::new(8, MAX - 2),
        KeyRange::point(MAX - 1),
        KeyRange::point(MAX),
    ]);
    c
}

fn key() -> impl Strategy<Value = i64> {
    prop::sample::select(domain())
}

/// A range with ends in the domain; 1 in 10 is left unsorted (usually
/// empty).
fn range() -> impl Strategy<Value = KeyRange> {
    (key(), key(), 0..10u8).prop_map(|(a, b, unsorted)| {
        if unsorted == 0 {
            KeyRange::new(a.max(b), a.min(b))
        } else {
            KeyRange::new(a.min(b), a.max(b))
        }
    })
}

/// Cells of `r` (all-or-nothing by construction).
fn cells_in(r: KeyRange) -> impl Iterator<Item = KeyRange> {
    cells()
        .into_iter()
        .filter(move |c| !r.is_empty() && r.lo <= c.lo && c.hi <= r.hi)
}

/// The canonical range list of a cell→value model: runs of consecutive
/// cells with equal values.
fn runs<V: Copy + PartialEq>(value_of: impl Fn(i64) -> Option<V>) -> Vec<(KeyRange, V)> {
    let mut out: Vec<(KeyRange, V)> = Vec::new();
    for c in cells() {
        let Some(v) = value_of(c.lo) else { continue };
        match out.last_mut() {
            Some((r, w)) if *w == v && r.hi.checked_add(1) == Some(c.lo) => r.hi = c.hi,
            _ => out.push((c, v)),
        }
    }
    out
}

// ---- RangedKeySet ----

#[derive(Debug, Clone)]
enum SetOp {
    Add(i64),
    Del(i64),
    AddRange(KeyRange),
    DelRange(KeyRange),
    Union(Vec<bool>, bool),
    Difference(Vec<bool>, bool),
    Intersection(Vec<bool>, bool),
    Query(KeyRange),
    Clear,
}

/// Another set, as cell membership (up to 11 ranges: exercises both the
/// small-operand and the merge paths).
fn cell_mask() -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), 22)
}

fn set_op() -> impl Strategy<Value = SetOp> {
    prop_oneof![
        3 => key().prop_map(SetOp::Add),
        2 => key().prop_map(SetOp::Del),
        4 => range().prop_map(SetOp::AddRange),
        3 => range().prop_map(SetOp::DelRange),
        1 => (cell_mask(), any::<bool>()).prop_map(|(m, p)| SetOp::Union(m, p)),
        1 => (cell_mask(), any::<bool>()).prop_map(|(m, p)| SetOp::Difference(m, p)),
        1 => (cell_mask(), any::<bool>()).prop_map(|(m, p)| SetOp::Intersection(m, p)),
        2 => range().prop_map(SetOp::Query),
        1 => Just(SetOp::Clear),
    ]
}

fn from_mask(mask: &[bool]) -> (RangedKeySet, BTreeSet<i64>) {
    let mut s = RangedKeySet::new();
    let mut model = BTreeSet::new();
    for (c, _) in cells().into_iter().zip(mask).filter(|(_, &m)| m) {
        s.add_range(c);
        model.insert(c.lo);
    }
    s.verify();
    (s, model)
}

fn check_set(s: &RangedKeySet, model: &BTreeSet<i64>) -> Result<(), TestCaseError> {
    s.verify();
    for c in cells() {
        let want = model.contains(&c.lo);
        prop_assert_eq!(s.has(c.lo), want, "has({}) in {}", c.lo, s);
        prop_assert_eq!(s.has(c.hi), want, "has({}) in {}", c.hi, s);
    }
    let want: Vec<KeyRange> = runs(|k| model.contains(&k).then_some(()))
        .into_iter()
        .map(|(r, ())| r)
        .collect();
    let got: Vec<KeyRange> = s.ranges().collect();
    prop_assert_eq!(&got, &want, "ranges of {}", s);
    prop_assert_eq!(s.len_ranges(), want.len());
    prop_assert_eq!(s.is_empty(), model.is_empty());
    for c in cells() {
        let want = want.iter().find(|r| r.contains(c.lo)).copied();
        prop_assert_eq!(s.range_of(c.lo), want, "range_of({}) in {}", c.lo, s);
    }
    let back: RangedKeySet = s.to_string().parse().expect("text form parses back");
    prop_assert_eq!(&back, s);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn set_ops_vs_model(ops in prop::collection::vec(set_op(), 1..40)) {
        let mut s = RangedKeySet::new();
        let mut model: BTreeSet<i64> = BTreeSet::new();
        for op in ops {
            match op {
                SetOp::Add(k) => {
                    s.add(k);
                    model.insert(cells_in(KeyRange::point(k)).next().unwrap().lo);
                }
                SetOp::Del(k) => {
                    s.del(k);
                    model.remove(&cells_in(KeyRange::point(k)).next().unwrap().lo);
                }
                SetOp::AddRange(r) => {
                    s.add_range(r);
                    model.extend(cells_in(r).map(|c| c.lo));
                }
                SetOp::DelRange(r) => {
                    s.del_range(r);
                    for c in cells_in(r) {
                        model.remove(&c.lo);
                    }
                }
                SetOp::Union(mask, in_place) => {
                    let (o, om) = from_mask(&mask);
                    if in_place { s.union_in_place(&o) } else { s = s.union(&o) }
                    model = model.union(&om).copied().collect();
                }
                SetOp::Difference(mask, in_place) => {
                    let (o, om) = from_mask(&mask);
                    if in_place { s.difference_in_place(&o) } else { s = s.difference(&o) }
                    model = model.difference(&om).copied().collect();
                }
                SetOp::Intersection(mask, in_place) => {
                    let (o, om) = from_mask(&mask);
                    if in_place { s.intersection_in_place(&o) } else { s = s.intersection(&o) }
                    model = model.intersection(&om).copied().collect();
                }
                SetOp::Query(r) => {
                    let n = cells_in(r).filter(|c| model.contains(&c.lo)).count();
                    prop_assert_eq!(s.has_range(r), n == cells_in(r).count(), "{} has_range {}", s, r);
                    prop_assert_eq!(s.intersects_range(r), n > 0, "{} intersects_range {}", s, r);
                }
                SetOp::Clear => {
                    s.clear();
                    model.clear();
                }
            }
            check_set(&s, &model)?;
        }
    }

    /// Two random sets: the algebra against the model, both argument
    /// orders, in place and not.
    #[test]
    fn set_algebra_vs_model(a in cell_mask(), b in cell_mask()) {
        let (sa, ma) = from_mask(&a);
        let (sb, mb) = from_mask(&b);
        let u: BTreeSet<i64> = ma.union(&mb).copied().collect();
        let d: BTreeSet<i64> = ma.difference(&mb).copied().collect();
        let i: BTreeSet<i64> = ma.intersection(&mb).copied().collect();
        check_set(&sa.union(&sb), &u)?;
        check_set(&sb.union(&sa), &u)?;
        check_set(&sa.difference(&sb), &d)?;
        check_set(&sa.intersection(&sb), &i)?;
        check_set(&sb.intersection(&sa), &i)?;
        let mut x = sa.clone();
        x.union_in_place(&sb);
        check_set(&x, &u)?;
        let mut x = sa.clone();
        x.difference_in_place(&sb);
        check_set(&x, &d)?;
        let mut x = sa.clone();
        x.intersection_in_place(&sb);
        check_set(&x, &i)?;
    }
}

// ---- RangedMap<u8> ----

#[derive(Debug, Clone)]
enum MapOp {
    Set(i64, u8),
    Del(i64),
    SetRange(KeyRange, u8),
    DelRange(KeyRange),
    Query(KeyRange),
    Clear,
}

fn value() -> impl Strategy<Value = u8> {
    0..3u8 // few values: equal neighbours, hence coalescing, are common
}

fn map_op() -> impl Strategy<Value = MapOp> {
    prop_oneof![
        3 => (key(), value()).prop_map(|(k, v)| MapOp::Set(k, v)),
        2 => key().prop_map(MapOp::Del),
        6 => (range(), value()).prop_map(|(r, v)| MapOp::SetRange(r, v)),
        3 => range().prop_map(MapOp::DelRange),
        2 => range().prop_map(MapOp::Query),
        1 => Just(MapOp::Clear),
    ]
}

fn check_map(m: &RangedMap<u8>, model: &BTreeMap<i64, u8>) -> Result<(), TestCaseError> {
    m.verify();
    let want = runs(|k| model.get(&k).copied());
    for c in cells() {
        let v = model.get(&c.lo);
        let r = want.iter().find(|(r, _)| r.contains(c.lo)).map(|(r, _)| *r);
        let expect = v.zip(r);
        prop_assert_eq!(m.get(c.lo), expect, "get({}) in {}", c.lo, m);
        prop_assert_eq!(m.get(c.hi), expect, "get({}) in {}", c.hi, m);
        prop_assert_eq!(m.has(c.lo), v.is_some());
    }
    let got: Vec<(KeyRange, u8)> = m.ranges().map(|(r, v)| (r, *v)).collect();
    prop_assert_eq!(&got, &want, "ranges of {}", m);
    prop_assert_eq!(m.len_ranges(), want.len());
    prop_assert_eq!(m.is_empty(), model.is_empty());
    let back: RangedMap<u8> = m.to_string().parse().expect("text form parses back");
    prop_assert_eq!(&back, m);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn map_ops_vs_model(ops in prop::collection::vec(map_op(), 1..40)) {
        let mut m: RangedMap<u8> = RangedMap::new();
        let mut model: BTreeMap<i64, u8> = BTreeMap::new();
        for op in ops {
            match op {
                MapOp::Set(k, v) => {
                    m.set(k, v);
                    model.insert(cells_in(KeyRange::point(k)).next().unwrap().lo, v);
                }
                MapOp::Del(k) => {
                    m.del(k);
                    model.remove(&cells_in(KeyRange::point(k)).next().unwrap().lo);
                }
                MapOp::SetRange(r, v) => {
                    m.set_range(r, v);
                    for c in cells_in(r) {
                        model.insert(c.lo, v);
                    }
                }
                MapOp::DelRange(r) => {
                    m.del_range(r);
                    for c in cells_in(r) {
                        model.remove(&c.lo);
                    }
                }
                MapOp::Query(r) => {
                    let n = cells_in(r).filter(|c| model.contains_key(&c.lo)).count();
                    prop_assert_eq!(m.has_range(r), n == cells_in(r).count(), "{} has_range {}", m, r);
                    prop_assert_eq!(m.intersects_range(r), n > 0, "{} intersects_range {}", m, r);
                }
                MapOp::Clear => {
                    m.clear();
                    model.clear();
                }
            }
            check_map(&m, &model)?;
        }
    }
}

// ---- set algebra over arbitrary i64 ranges ----

/// Keys biased to the extremes and to small numbers, so that ranges
/// overlap and touch often while also spanning the whole domain.
fn wide_key() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -20..20i64,
        Just(MIN),
        Just(MIN + 1),
        Just(MAX - 1),
        Just(MAX),
    ]
}

/// Up to 24 ranges: a few long ones, mostly short ones (so that many stay
/// disjoint after coalescing and the merge paths run, not only the
/// small-operand ones).
fn wide_set() -> impl Strategy<Value = Vec<KeyRange>> {
    let long = (wide_key(), wide_key()).prop_map(|(a, b)| KeyRange::new(a.min(b), a.max(b)));
    let short = (wide_key(), 0..3i64).prop_map(|(k, n)| KeyRange::new(k, k.saturating_add(n)));
    prop::collection::vec(prop_oneof![1 => long, 6 => short], 0..24)
}

/// Keys where membership can change: every range end and its neighbours.
fn probes(sets: &[&[KeyRange]]) -> Vec<i64> {
    let mut p = vec![MIN, MAX, 0];
    for r in sets.iter().flat_map(|s| s.iter()) {
        for k in [r.lo, r.hi] {
            p.extend([k.saturating_sub(1), k, k.saturating_add(1)]);
        }
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Merge-based algebra agrees pointwise with the definitions, and with
    /// the same result built by `add_range`/`del_range` (a different code
    /// path); `verify()` holds throughout.
    #[test]
    fn wide_set_algebra(a in wide_set(), b in wide_set()) {
        let sa: RangedKeySet = a.iter().copied().collect();
        let sb: RangedKeySet = b.iter().copied().collect();
        sa.verify();
        sb.verify();
        let u = sa.union(&sb);
        let d = sa.difference(&sb);
        let i = sa.intersection(&sb);
        for k in probes(&[&a, &b]) {
            let (ia, ib) = (a.iter().any(|r| r.contains(k)), b.iter().any(|r| r.contains(k)));
            prop_assert_eq!(sa.has(k), ia, "{} has {}", sa, k);
            prop_assert_eq!(u.has(k), ia || ib, "{} ∪ {} has {}", sa, sb, k);
            prop_assert_eq!(d.has(k), ia && !ib, "{} \\ {} has {}", sa, sb, k);
            prop_assert_eq!(i.has(k), ia && ib, "{} ∩ {} has {}", sa, sb, k);
        }
        let u2: RangedKeySet = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(&u, &u2);
        let mut d2 = sa.clone();
        for r in &b {
            d2.del_range(*r);
        }
        prop_assert_eq!(&d, &d2);
        prop_assert_eq!(&i, &sa.difference(&sa.difference(&sb)));
        for (x, text) in [(&u, u.to_string()), (&d, d.to_string()), (&i, i.to_string())] {
            x.verify();
            prop_assert_eq!(&text.parse::<RangedKeySet>().unwrap(), x);
        }
        for r in a.iter().chain(&b) {
            prop_assert!(u.has_range(*r));
            prop_assert_eq!(i.intersects_range(*r), i.ranges().any(|q| q.intersects(r)));
        }
    }

    /// `KeyRange` text form round-trips for any bounds.
    #[test]
    fn keyrange_text_roundtrip(lo in wide_key(), hi in wide_key()) {
        let r = KeyRange::new(lo, hi);
        let back: KeyRange = r.to_string().parse().unwrap();
        prop_assert_eq!(back, r);
    }
}

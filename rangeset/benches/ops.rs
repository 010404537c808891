//! Benchmarks of `RangedKeySet` at 10, 1 000 and 100 000 ranges:
//!
//! - `get`: membership of a random key;
//! - `add`: add a random small range (1..=4 keys), one after another, to a
//!   copy of the set that is renewed (untimed) every `max(n/4, 16)` adds;
//! - `union`: union of two different sets of the same size;
//! - `union_in_place_small`: like `add`, through `union_in_place` of a
//!   one-range set (the small-operand path; includes building that set).
//!
//! Each group also runs `btree`, a reference representation written here
//! (a `BTreeMap` lo → hi of the same closed, coalesced ranges), which is
//! the alternative to the sorted `Vec` the crate uses.
//!
//! Sets: range `i` starts at `16 i + rnd(0..8)` and holds `rnd(1..=4)`
//! keys, so ranges never touch; random keys are drawn from `[0, 16 n)`.

#![allow(missing_docs)] // criterion_group! defines an undocumented `pub fn benches`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rangeset::{KeyRange, RangedKeySet};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// splitmix64: a small deterministic generator (no `rand` needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }

    fn small_range(&mut self, n: usize) -> KeyRange {
        let lo = self.below(16 * n as u64);
        KeyRange::new(lo, lo + self.below(4))
    }
}

fn ranges(n: usize, seed: u64) -> Vec<KeyRange> {
    let mut rng = Rng(seed);
    (0..n as i64)
        .map(|i| {
            let lo = 16 * i + rng.below(8);
            KeyRange::new(lo, lo + rng.below(4))
        })
        .collect()
}

/// The reference: disjoint, never touching closed ranges in a `BTreeMap`
/// from `lo` to `hi`.
#[derive(Clone)]
struct BTreeRanges(BTreeMap<i64, i64>);

impl BTreeRanges {
    fn from_ranges(rs: &[KeyRange]) -> Self {
        BTreeRanges(rs.iter().map(|r| (r.lo, r.hi)).collect())
    }

    fn has(&self, k: i64) -> bool {
        self.0
            .range(..=k)
            .next_back()
            .is_some_and(|(_, &hi)| k <= hi)
    }

    fn add_range(&mut self, r: KeyRange) {
        let (mut lo, mut hi) = (r.lo, r.hi);
        if let Some((&l, &h)) = self.0.range(..lo).next_back() {
            if h.saturating_add(1) >= lo {
                lo = l;
                hi = hi.max(h);
            }
        }
        while let Some((&l, &h)) = self.0.range(lo..=hi.saturating_add(1)).next() {
            self.0.remove(&l);
            hi = hi.max(h);
        }
        self.0.insert(lo, hi);
    }

    fn union(&self, other: &BTreeRanges) -> BTreeRanges {
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            let Some((&lo, &hi)) = next else { break };
            match out.last_mut() {
                Some(c) if lo <= c.1.saturating_add(1) => c.1 = c.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        BTreeRanges(out.into_iter().collect())
    }
}

fn bench_get(c: &mut Criterion) {
    let mut g = c.benchmark_group("get");
    for n in SIZES {
        let rs = ranges(n, 1);
        let set: RangedKeySet = rs.iter().copied().collect();
        let bt = BTreeRanges::from_ranges(&rs);
        let mut rng = Rng(2);
        let keys: Vec<i64> = (0..1024).map(|_| rng.below(16 * n as u64)).collect();
        g.bench_with_input(BenchmarkId::new("vec", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 1023;
                set.has(black_box(keys[i]))
            })
        });
        g.bench_with_input(BenchmarkId::new("btree", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 1023;
                bt.has(black_box(keys[i]))
            })
        });
    }
    g.finish();
}

/// Times `add` of random small ranges applied one after another to a copy
/// of `set`, recopied (untimed) every `max(n/4, 16)` adds so that it stays
/// close to `n` ranges while the timer runs over many adds at once.
fn time_adds<S: Clone>(set: &S, n: usize, iters: u64, add: impl Fn(&mut S, KeyRange)) -> Duration {
    let mut rng = Rng(3);
    let per_copy = (n as u64 / 4).max(16);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let k = per_copy.min(iters - done);
        let rs: Vec<KeyRange> = (0..k).map(|_| rng.small_range(n)).collect();
        let mut s = set.clone();
        let t = Instant::now();
        for r in rs {
            add(&mut s, black_box(r));
        }
        total += t.elapsed();
        black_box(&s);
        done += k;
    }
    total
}

fn bench_add(c: &mut Criterion) {
    let mut g = c.benchmark_group("add");
    for n in SIZES {
        let rs = ranges(n, 1);
        let set: RangedKeySet = rs.iter().copied().collect();
        let bt = BTreeRanges::from_ranges(&rs);
        g.bench_with_input(BenchmarkId::new("vec", n), &n, |b, _| {
            b.iter_custom(|iters| time_adds(&set, n, iters, |s, r| s.add_range(r)))
        });
        g.bench_with_input(BenchmarkId::new("btree", n), &n, |b, _| {
            b.iter_custom(|iters| time_adds(&bt, n, iters, |s, r| s.add_range(r)))
        });
    }
    g.finish();
}

fn bench_union(c: &mut Criterion) {
    let mut g = c.benchmark_group("union");
    for n in SIZES {
        let (ra, rb) = (ranges(n, 4), ranges(n, 5));
        let (a, b): (RangedKeySet, RangedKeySet) =
            (ra.iter().copied().collect(), rb.iter().copied().collect());
        let (ba, bb) = (BTreeRanges::from_ranges(&ra), BTreeRanges::from_ranges(&rb));
        g.bench_with_input(BenchmarkId::new("vec", n), &n, |bn, _| {
            bn.iter(|| a.union(&b))
        });
        g.bench_with_input(BenchmarkId::new("btree", n), &n, |bn, _| {
            bn.iter(|| ba.union(&bb))
        });
    }
    g.finish();
}

fn bench_union_in_place_small(c: &mut Criterion) {
    let mut g = c.benchmark_group("union_in_place_small");
    for n in SIZES {
        let set: RangedKeySet = ranges(n, 6).into_iter().collect();
        g.bench_with_input(BenchmarkId::new("vec", n), &n, |b, _| {
            b.iter_custom(|iters| {
                time_adds(&set, n, iters, |s, r| {
                    s.union_in_place(&[r].into_iter().collect::<RangedKeySet>())
                })
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_get,
    bench_add,
    bench_union,
    bench_union_in_place_small
);
criterion_main!(benches);

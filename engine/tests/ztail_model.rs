//! ΔZtail (`engine::ztail::DeltaZTail`): table tests of each operation's
//! contract (engine-semantics §1), then seeded random operation sequences
//! checked step by step against a brute-force model: a plain list of
//! `(rev, oids)` plus `head` and `tail`, where every query is a linear scan.
//!
//! After every step the ΔZtail is `verify()`d (order, bounds, and the
//! per-oid index recomputed from the entries), and head, tail, len and the
//! entries must equal the model's. Queries go to random revisions, in range
//! and out of it, and must fail exactly when the contract says so. The seed
//! is printed; `WCFS_TEST_SEED=<seed>` replays a run.

use engine::ztail::{DeltaZ, DeltaZTail};
use engine::Error;
use zodb::{Oid, Tid};

fn t(n: u64) -> Tid {
    Tid(n)
}

fn oids(v: &[u64]) -> Vec<Oid> {
    v.iter().map(|&n| Oid(n)).collect()
}

fn lr(z: &DeltaZTail, oid: u64, at: u64) -> (Tid, bool) {
    z.last_rev_of(Oid(oid), t(at)).unwrap()
}

fn revs<'a>(s: impl IntoIterator<Item = &'a DeltaZ>) -> Vec<u64> {
    s.into_iter().map(|e| e.rev.0).collect()
}

#[test]
fn ztail_empty() {
    let z = DeltaZTail::new(t(10));
    z.verify().unwrap();
    assert_eq!((z.head(), z.tail(), z.len()), (t(10), t(10), 0));
    assert!(z.is_empty());
    assert_eq!(z.slice_by_rev(t(10), t(10)).unwrap(), Vec::<&DeltaZ>::new());
    assert_eq!(z.last_rev_of(Oid(1), t(10)).unwrap(), (t(10), false));
    assert!(matches!(
        z.last_rev_of(Oid(1), t(11)),
        Err(Error::RevOutOfRange { .. })
    ));
    assert!(matches!(
        z.slice_by_rev(t(9), t(10)),
        Err(Error::BadSlice { .. })
    ));
}

#[test]
fn ztail_append_requires_rev_after_head() {
    let mut z = DeltaZTail::new(t(10));
    assert_eq!(
        z.append(t(10), oids(&[1])),
        Err(Error::RevNotAfterHead {
            rev: t(10),
            head: t(10)
        })
    );
    z.append(t(12), oids(&[1])).unwrap();
    assert!(z.append(t(11), oids(&[1])).is_err());
    assert!(z.append(t(12), oids(&[1])).is_err());
    // refused appends change nothing
    z.verify().unwrap();
    assert_eq!((z.head(), z.len()), (t(12), 1));
    // an empty transaction extends the coverage
    z.append(t(13), vec![]).unwrap();
    assert_eq!((z.head(), z.len()), (t(13), 2));
    z.verify().unwrap();
}

#[test]
fn ztail_slice_and_last_rev_of() {
    // at 10: start; 11: {1,2}; 13: {2}; 14: {3,1,1}; 16: {}
    let mut z = DeltaZTail::new(t(10));
    z.append(t(11), oids(&[1, 2])).unwrap();
    z.append(t(13), oids(&[2])).unwrap();
    z.append(t(14), oids(&[3, 1, 1])).unwrap();
    z.append(t(16), oids(&[])).unwrap();
    z.verify().unwrap();

    let sl = |lo, hi| revs(z.slice_by_rev(t(lo), t(hi)).unwrap());
    assert_eq!(sl(10, 16), [11, 13, 14, 16]);
    assert_eq!(sl(11, 14), [13, 14]); // lo exclusive, hi inclusive
    assert_eq!(sl(12, 13), [13]);
    assert_eq!(sl(11, 12), Vec::<u64>::new());
    assert_eq!(sl(14, 14), Vec::<u64>::new());
    assert!(z.slice_by_rev(t(14), t(13)).is_err()); // lo > hi
    assert!(z.slice_by_rev(t(10), t(17)).is_err()); // hi > head
    assert_eq!(z.slice_by_rev(t(13), t(13)).unwrap(), Vec::<&DeltaZ>::new());
    assert_eq!(z.slice_by_rev(t(12), t(13)).unwrap()[0].oids, oids(&[2]));

    assert_eq!(lr(&z, 1, 10), (t(10), false));
    assert_eq!(lr(&z, 1, 11), (t(11), true));
    assert_eq!(lr(&z, 1, 13), (t(11), true));
    assert_eq!(lr(&z, 1, 14), (t(14), true));
    assert_eq!(lr(&z, 1, 16), (t(14), true));
    assert_eq!(lr(&z, 2, 12), (t(11), true));
    assert_eq!(lr(&z, 2, 16), (t(13), true));
    assert_eq!(lr(&z, 3, 13), (t(10), false)); // changed only later
    assert_eq!(lr(&z, 9, 16), (t(10), false)); // never changed here

    // forget_past: entries ≤ 13 go; what changed only then is now "≤ tail"
    z.forget_past(t(13)).unwrap();
    z.verify().unwrap();
    assert_eq!((z.tail(), z.head(), z.len()), (t(13), t(16), 2));
    assert_eq!(revs(z.entries()), [14, 16]);
    assert_eq!(lr(&z, 2, 16), (t(13), false));
    assert_eq!(lr(&z, 1, 13), (t(13), false));
    assert_eq!(lr(&z, 1, 15), (t(14), true));
    assert!(z.last_rev_of(Oid(1), t(12)).is_err()); // below tail now
    assert!(z.slice_by_rev(t(11), t(16)).is_err());

    // no-op at or below tail: the tail never moves back
    z.forget_past(t(13)).unwrap();
    z.forget_past(t(5)).unwrap();
    assert_eq!((z.tail(), z.len()), (t(13), 2));

    // the tail moves between entries and past the last entry, up to head
    z.forget_past(t(15)).unwrap();
    z.verify().unwrap();
    assert_eq!((z.tail(), z.len()), (t(15), 1));
    z.forget_past(t(16)).unwrap();
    z.verify().unwrap();
    assert_eq!((z.tail(), z.head(), z.len()), (t(16), t(16), 0));
    assert_eq!(lr(&z, 1, 16), (t(16), false));
    assert_eq!(z.slice_by_rev(t(16), t(16)).unwrap(), Vec::<&DeltaZ>::new());

    // past head: refused, nothing changes; head never moves back
    assert!(matches!(
        z.forget_past(t(17)),
        Err(Error::RevOutOfRange { .. })
    ));
    assert_eq!((z.tail(), z.head()), (t(16), t(16)));
    z.append(t(17), oids(&[1])).unwrap();
    assert_eq!(lr(&z, 1, 17), (t(17), true));
    z.verify().unwrap();
}

// ---- random sequences against a model ----

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
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A value in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
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

/// Brute force: every entry ever appended and not forgotten, linear scans.
struct Model {
    head: u64,
    tail: u64,
    entries: Vec<(u64, Vec<u64>)>,
}

impl Model {
    fn last_rev_of(&self, oid: u64, at: u64) -> Option<(u64, bool)> {
        if !(self.tail <= at && at <= self.head) {
            return None;
        }
        let last = self
            .entries
            .iter()
            .filter(|(rev, oids)| *rev <= at && oids.contains(&oid))
            .map(|(rev, _)| *rev)
            .max();
        Some(match last {
            Some(rev) => (rev, true),
            None => (self.tail, false),
        })
    }

    fn slice(&self, lo: u64, hi: u64) -> Option<Vec<u64>> {
        if !(self.tail <= lo && lo <= hi && hi <= self.head) {
            return None;
        }
        Some(
            self.entries
                .iter()
                .filter(|(rev, _)| lo < *rev && *rev <= hi)
                .map(|(rev, _)| *rev)
                .collect(),
        )
    }
}

#[test]
fn ztail_random_vs_model() {
    let seed = seed("ztail_random_vs_model");
    let mut rng = Rng(seed);
    for _run in 0..200 {
        let at0 = rng.range(0, 50);
        let mut z = DeltaZTail::new(t(at0));
        let mut m = Model {
            head: at0,
            tail: at0,
            entries: Vec::new(),
        };
        let noids = rng.range(1, 8);
        for _step in 0..60 {
            match rng.below(10) {
                // append: mostly valid, sometimes not after head
                0..=4 => {
                    let rev = if rng.below(8) == 0 {
                        m.head.saturating_sub(rng.below(3))
                    } else {
                        m.head + rng.range(1, 3)
                    };
                    let changed: Vec<u64> = (0..rng.below(5)).map(|_| rng.below(noids)).collect();
                    let res = z.append(t(rev), oids(&changed));
                    if rev > m.head {
                        res.unwrap();
                        m.head = rev;
                        m.entries.push((rev, changed));
                    } else {
                        assert!(matches!(res, Err(Error::RevNotAfterHead { .. })));
                    }
                }
                // forget_past: anywhere around [tail, head]
                5 => {
                    let cut = rng.range(m.tail.saturating_sub(2), m.head + 2);
                    let res = z.forget_past(t(cut));
                    if cut > m.head {
                        assert!(matches!(res, Err(Error::RevOutOfRange { .. })));
                    } else {
                        res.unwrap();
                        if cut > m.tail {
                            m.entries.retain(|(rev, _)| *rev > cut);
                            m.tail = cut;
                        }
                    }
                }
                // queries
                _ => {
                    for _ in 0..4 {
                        let oid = rng.below(noids + 1);
                        let at = rng.range(m.tail.saturating_sub(1), m.head + 1);
                        let got = z.last_rev_of(Oid(oid), t(at)).ok();
                        let want = m.last_rev_of(oid, at).map(|(r, e)| (t(r), e));
                        assert_eq!(got, want, "last_rev_of({oid}, {at})");

                        let lo = rng.range(m.tail.saturating_sub(1), m.head + 1);
                        let hi = rng.range(m.tail.saturating_sub(1), m.head + 1);
                        let got = z.slice_by_rev(t(lo), t(hi)).ok().map(revs);
                        assert_eq!(got, m.slice(lo, hi), "slice ({lo}, {hi}]");
                    }
                }
            }
            z.verify().unwrap();
            assert_eq!((z.head(), z.tail()), (t(m.head), t(m.tail)));
            assert_eq!(z.len(), m.entries.len());
            let got: Vec<(u64, Vec<Oid>)> =
                z.entries().map(|e| (e.rev.0, e.oids.clone())).collect();
            let want: Vec<(u64, Vec<Oid>)> = m.entries.iter().map(|(r, o)| (*r, oids(o))).collect();
            assert_eq!(got, want);
        }
    }
}

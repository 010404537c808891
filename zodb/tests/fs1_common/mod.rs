//! Helpers shared by the `fs1_*` integration tests: a seeded PRNG and a
//! brute-force model of a database's history.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use zodb::{Error, Oid, Storage, Tid};

/// splitmix64: small, seedable, good enough for tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seed for a randomized test: `WCFS_TEST_SEED` if set, else the clock.
/// Printed so that a failing run can be replayed.
pub fn seed(test: &str) -> u64 {
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

/// What the database should contain: `(oid, tid) -> Some(data) | None`
/// (deleted) for every revision, plus the committed transactions in order.
#[derive(Default, Clone)]
pub struct Model {
    pub revs: BTreeMap<(Oid, Tid), Option<Vec<u8>>>,
    /// (tid, oids in record order)
    pub txns: Vec<(Tid, Vec<Oid>)>,
}

impl Model {
    /// The state of `oid` as of `at`: `Err(expected error kind)` or data.
    pub fn at(&self, oid: Oid, at: Tid) -> Result<(Vec<u8>, Tid), Expect> {
        let mut first = None;
        let mut last = None;
        for ((_, t), v) in self.revs.range((oid, Tid::ZERO)..=(oid, Tid(u64::MAX))) {
            first.get_or_insert(*t);
            if *t <= at {
                last = Some((*t, v));
            }
        }
        match (first, last) {
            (None, _) => Err(Expect::NoSuchObject),
            (Some(c), None) => Err(Expect::NotYet(c)),
            (_, Some((t, None))) => Err(Expect::Deleted(t)),
            (_, Some((t, Some(d)))) => Ok((d.clone(), t)),
        }
    }

    /// The latest revision of `oid` (tid and state), if any.
    pub fn latest(&self, oid: Oid) -> Option<(Tid, Option<Vec<u8>>)> {
        self.revs
            .range((oid, Tid::ZERO)..=(oid, Tid(u64::MAX)))
            .next_back()
            .map(|((_, t), v)| (*t, v.clone()))
    }

    pub fn oids(&self) -> Vec<Oid> {
        let mut v: Vec<Oid> = self.revs.keys().map(|k| k.0).collect();
        v.dedup();
        v
    }

    /// Every committed tid, plus the tids right before and after each, 0 and
    /// the maximum.
    pub fn probe_tids(&self) -> Vec<Tid> {
        let mut v = vec![Tid::ZERO, Tid::MAX];
        for (t, _) in &self.txns {
            v.extend([Tid(t.0 - 1), *t, Tid(t.0 + 1)]);
        }
        v.sort();
        v.dedup();
        v
    }

    /// Check every oid (and one unknown oid) at every probe tid, and the
    /// transaction list, against `st`.
    pub fn check(&self, st: &dyn Storage, ctx: &str) {
        let head = self.txns.last().map_or(Tid::ZERO, |t| t.0);
        assert_eq!(st.last_tid().unwrap(), head, "{ctx}: head");
        let tids = self.probe_tids();
        let mut oids = self.oids();
        oids.push(Oid(oids.iter().map(|o| o.0 + 1).max().unwrap_or(0)));
        for &oid in &oids {
            for &at in &tids {
                let got = st.load(oid, at);
                let want = self.at(oid, at);
                let ok = match (&got, &want) {
                    (Ok(l), Ok((d, s))) => l.data[..] == d[..] && l.serial == *s,
                    (Err(Error::NoSuchObject { oid: o }), Err(Expect::NoSuchObject)) => *o == oid,
                    (
                        Err(Error::NotYet {
                            oid: o,
                            at: a,
                            created,
                        }),
                        Err(Expect::NotYet(c)),
                    ) => *o == oid && *a == at && created == c,
                    (
                        Err(Error::Deleted {
                            oid: o,
                            at: a,
                            deleted_at,
                        }),
                        Err(Expect::Deleted(d)),
                    ) => *o == oid && *a == at && deleted_at == d,
                    _ => false,
                };
                assert!(
                    ok,
                    "{ctx}: load({oid}, {at}): got {:?}, want {:?}",
                    got.map(|l| (l.data.len(), l.serial)),
                    want.map(|(d, s)| (d.len(), s))
                );
            }
        }
        let got: Vec<(Tid, Vec<Oid>)> = st
            .iterate(Tid::ZERO, Tid::MAX)
            .unwrap()
            .map(|t| {
                let t = t.unwrap();
                (t.tid, t.oids)
            })
            .collect();
        assert_eq!(got, self.txns, "{ctx}: transactions");
    }
}

/// The kind of error a load should give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    NoSuchObject,
    NotYet(Tid),
    Deleted(Tid),
}

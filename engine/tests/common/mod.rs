//! Shared by the ΔBtail/ΔFtail oracle tests: random topologies, a committed
//! history of trees, and the brute-force oracle (the whole tree loaded at
//! every revision).
#![allow(dead_code, unreachable_pub)]

use engine::testkit::topology::{Node, Topology};
use engine::testkit::treegen::TreeGen;
use engine::treediff::{DeltaKV, DeltaValue};
use rangeset::{KeyRange, RangedKeySet};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use zodb::{Oid, Storage, Tid};

/// A small deterministic PRNG (xorshift64*), so that a failing seed replays.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// The seed of a random test: `WCFS_TEST_SEED` if set, else from the clock.
pub fn seed() -> u64 {
    match std::env::var("WCFS_TEST_SEED") {
        Ok(s) => s.parse().expect("WCFS_TEST_SEED: not a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// Run `f(seed)`; on panic say how to replay.
pub fn with_seed(name: &str, f: impl FnOnce(u64)) {
    let s = seed();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s)));
    if let Err(e) = r {
        eprintln!("{name}: FAILED with seed {s}: replay with WCFS_TEST_SEED={s}");
        std::panic::resume_unwind(e);
    }
}

/// How long a random test runs: `WCFS_TEST_LONG=<seconds>` for the long
/// mode, else the short default.
pub fn budget(short: std::time::Duration) -> std::time::Duration {
    match std::env::var("WCFS_TEST_LONG") {
        Ok(s) => std::time::Duration::from_secs(s.parse().expect("WCFS_TEST_LONG: seconds")),
        Err(_) => short,
    }
}

/// A random valid topology over `kv` (keys ascending), at most `maxdepth`
/// tree levels below the root and `maxsplit + 1` children per tree node.
pub fn random_topology(
    rng: &mut Rng,
    kv: &BTreeMap<i64, String>,
    maxdepth: usize,
    maxsplit: usize,
) -> Topology {
    if kv.is_empty() {
        return Topology::empty();
    }
    let items: Vec<(i64, String)> = kv.iter().map(|(k, v)| (*k, v.clone())).collect();
    let lo = items[0].0 - 2;
    let hi = items[items.len() - 1].0 + 2;
    let root = gen_tree(rng, &items, lo.max(0), hi, maxdepth, maxsplit);
    let t = Topology { root };
    t.verify().expect("generated topology is valid");
    t
}

/// A tree node over `items` (all inside `[lo, hi)`), non-empty buckets.
fn gen_tree(
    rng: &mut Rng,
    items: &[(i64, String)],
    lo: i64,
    hi: i64,
    depth: usize,
    maxsplit: usize,
) -> Node {
    // choose separators: cut points between distinct keys, at a random
    // position inside the gap, so that every child has a key
    let n = items.len();
    let nsplit = if n < 2 {
        0
    } else {
        rng.below(maxsplit.min(n - 1) as u64 + 1) as usize
    };
    let mut cuts: Vec<usize> = Vec::new(); // child boundaries: index of first item of a child
    while cuts.len() < nsplit {
        let c = 1 + rng.below(n as u64 - 1) as usize;
        if !cuts.contains(&c) {
            cuts.push(c);
        }
    }
    cuts.sort();
    let mut seps = Vec::new();
    for &c in &cuts {
        let (a, b) = (items[c - 1].0, items[c].0);
        seps.push(a + 1 + rng.below((b - a) as u64) as i64);
    }
    let mut bounds = vec![0];
    bounds.extend(&cuts);
    bounds.push(n);
    let children_are_trees = depth > 0 && rng.chance(1, 2);
    let mut children = Vec::new();
    for i in 0..bounds.len() - 1 {
        let part = &items[bounds[i]..bounds[i + 1]];
        let clo = if i == 0 { lo } else { seps[i - 1] };
        let chi = if i == seps.len() { hi } else { seps[i] };
        children.push(if children_are_trees {
            gen_tree(rng, part, clo, chi, depth - 1, maxsplit)
        } else {
            Node::Bucket {
                keys: part.iter().map(|x| x.0).collect(),
                values: Some(part.iter().map(|x| x.1.clone()).collect()),
            }
        });
    }
    Node::Tree {
        keys: seps,
        children,
    }
}

/// A random key -> value map with keys in `0..kmax` and values `a..`.
pub fn random_kv(rng: &mut Rng, kmax: i64, nvalues: u8) -> BTreeMap<i64, String> {
    let n = rng.below(kmax as u64 + 1);
    let mut kv = BTreeMap::new();
    for _ in 0..n {
        let k = rng.below(kmax as u64) as i64;
        let v = (b'a' + rng.below(nvalues as u64) as u8) as char;
        kv.insert(k, v.to_string());
    }
    kv
}

/// A committed sequence of trees and, per revision, the oracle's view.
pub struct History {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub gen: TreeGen,
    /// revs[0] is the state before the first step.
    pub revs: Vec<Tid>,
    /// Whole tree at each rev: key -> value oid.
    pub states: Vec<BTreeMap<i64, Oid>>,
    /// Objects each rev stored (revs[0]: none).
    pub oids: Vec<Vec<Oid>>,
    /// What each step was, for messages.
    pub what: Vec<String>,
}

/// A scratch directory, on tmpfs when there is one (commits fsync).
pub fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// What a step of a history does.
#[derive(Debug, Clone)]
pub enum Step {
    /// Reshape the tree.
    Tree(Topology),
    /// Change the data of these values (ZBlk objects), tree unchanged.
    Data(Vec<String>),
}

impl History {
    pub fn new() -> History {
        let dir = scratch();
        let path = dir.path().join("t.fs");
        let gen = TreeGen::create(&path).unwrap();
        let head = gen.head();
        let mut h = History {
            dir,
            path,
            gen,
            revs: vec![head],
            states: vec![BTreeMap::new()],
            oids: vec![vec![]],
            what: vec!["T/B:".into()],
        };
        h.states[0] = h.items(head);
        h
    }

    pub fn tree(&self) -> Oid {
        self.gen.tree()
    }

    pub fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(zodb::fs1::FileStorage::open(&self.path).unwrap())
    }

    fn items(&mut self, at: Tid) -> BTreeMap<i64, Oid> {
        let stor = self.gen.storage();
        zodb::btree::items(&stor, zodb::btree::Family::LO, self.gen.tree(), at)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    zodb::record::decode_ref(self.gen.tree(), &v).unwrap().oid,
                )
            })
            .collect()
    }

    /// Apply a step; returns whether it made a transaction.
    pub fn step(&mut self, s: &Step) -> bool {
        let head = self.gen.head();
        let tid = match s {
            Step::Tree(t) => self.gen.commit(t).unwrap(),
            Step::Data(names) => {
                let data: Vec<(String, Vec<u8>)> = names
                    .iter()
                    .map(|n| {
                        (
                            n.clone(),
                            format!("{}{}", n, self.revs.len() % 100).into_bytes(),
                        )
                    })
                    .collect();
                let d: Vec<(&str, &[u8])> =
                    data.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
                self.gen.set_data(&d).unwrap()
            }
        };
        if tid == head {
            return false;
        }
        let stor = self.gen.storage();
        let txn: Vec<_> = stor.iterate(tid, tid).unwrap().collect();
        assert_eq!(txn.len(), 1);
        self.oids
            .push(txn.into_iter().next().unwrap().unwrap().oids);
        self.revs.push(tid);
        self.what.push(match s {
            Step::Tree(t) => t.to_string(),
            Step::Data(n) => format!("data {n:?}"),
        });
        let st = self.items(tid);
        self.states.push(st);
        true
    }

    /// Oracle: the change of `keys` from state `i-1` to `i`.
    pub fn delta(&self, i: usize, keys: &RangedKeySet) -> DeltaKV {
        diff(&self.states[i - 1], &self.states[i], keys)
    }

    /// All keys ever present, plus the extremes and a neighbour or two.
    pub fn test_keys(&self) -> Vec<i64> {
        let mut ks: std::collections::BTreeSet<i64> =
            self.states.iter().flat_map(|s| s.keys().copied()).collect();
        ks.insert(i64::MIN);
        ks.insert(i64::MAX);
        ks.insert(0);
        ks.insert(-1);
        ks.into_iter().collect()
    }

    /// Index of the state as of `at`.
    pub fn index_at(&self, at: Tid) -> usize {
        self.revs.partition_point(|r| *r <= at) - 1
    }
}

/// key -> change between two whole-tree states, restricted to `keys`.
pub fn diff(a: &BTreeMap<i64, Oid>, b: &BTreeMap<i64, Oid>, keys: &RangedKeySet) -> DeltaKV {
    let mut out = DeltaKV::new();
    for k in a.keys().chain(b.keys()) {
        if !keys.has(*k) {
            continue;
        }
        let old = a.get(k).copied().unwrap_or(Oid::INVALID);
        let new = b.get(k).copied().unwrap_or(Oid::INVALID);
        if old != new {
            out.insert(*k, DeltaValue { old, new });
        }
    }
    out
}

/// A random set of key ranges over about `-2..kmax+2`, sometimes reaching
/// the extremes.
pub fn random_keys(rng: &mut Rng, kmax: i64) -> RangedKeySet {
    let mut s = RangedKeySet::new();
    for _ in 0..rng.below(4) {
        let a = rng.below(kmax as u64 + 4) as i64 - 2;
        let b = a + rng.below(kmax as u64 / 2 + 2) as i64;
        let lo = if rng.chance(1, 8) { i64::MIN } else { a };
        let hi = if rng.chance(1, 8) { i64::MAX } else { b };
        s.add_range(KeyRange::new(lo, hi));
    }
    s
}

/// Oracle GetAt: `root[key]` as of state `i` with the window `(it, ih]`.
pub fn get_at(h: &History, key: i64, i: usize, it: usize, ih: usize) -> engine::btail::GetAt {
    use engine::btail::GetAt;
    let tail = h.revs[it];
    let ch = |j: usize| h.states[j - 1].get(&key) != h.states[j].get(&key);
    let val = |j: usize| h.states[j].get(&key).copied().unwrap_or(Oid::INVALID);
    match (it + 1..=i).rev().find(|&j| ch(j)) {
        Some(j) => GetAt {
            value: val(j),
            rev: h.revs[j],
            value_exact: true,
            rev_exact: true,
        },
        None if (i + 1..=ih).any(ch) => GetAt {
            value: val(i),
            rev: tail,
            value_exact: true,
            rev_exact: false,
        },
        None => GetAt {
            value: Oid::INVALID,
            rev: tail,
            value_exact: false,
            rev_exact: false,
        },
    }
}

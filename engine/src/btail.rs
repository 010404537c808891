//! ΔBtail: the history of tracked BTree keys over a window of revisions.
//!
//! [`DeltaBTail`] semantically is
//!
//! ```text
//! []δB            rev ∈ (tail, head]
//! δB = {rev, {root -> {key -> ΔValue}}}
//! ```
//!
//! complete and exact for the *tracked* keys: a key is tracked once a
//! [`track`](DeltaBTail::track) call named it (its tree root and a key
//! range), and from then on every query sees its full history back to
//! `tail`, including the part before the `track` call (rebuilt on demand
//! from the raw history, ΔZtail, by walking the tree backwards from head;
//! see [`crate::treediff`]). Untracked keys never appear.
//!
//! # Concurrency
//!
//! As engine-semantics §7: one writer ([`update`](DeltaBTail::update),
//! [`forget_past`](DeltaBTail::forget_past)) *or* any number of readers
//! ([`track`](DeltaBTail::track) and the queries) at a time; the caller
//! guarantees it (wcfs holds ΔFtail's lock for writing around them).
//! Writers are also serialized among themselves by `wmu`. An Update comes
//! in two parts so that its storage reads need no exclusion:
//! [`prepare_update`](DeltaBTail::prepare_update) runs beside readers (it
//! steps copies of the tracked nodes; nothing is published), and
//! [`apply_update`](DeltaBTail::apply_update), the writer part, publishes
//! in memory. What queries built while a preparation ran (history up to
//! the old head only) goes back to pending at apply.
//!
//! Per tree, the history of built keys lives in an RCU cell ([`rcu::RcuCell`]):
//! a query for keys whose history is built loads a snapshot and answers from
//! it, taking no lock. Keys tracked but not built yet are *pending*; a query
//! that needs some of them claims them as a rebuild job in the tree's job
//! registry ([`rcu::JobRegistry`]), computes their history with no lock
//! held, and publishes it (merging into the history and the tracked nodes
//! under the registry's short lock). A query that needs keys another query
//! is rebuilding waits for exactly that job. So Track calls and queries for
//! different keys run in parallel, and rebuilds of disjoint keys too, which
//! rests on `history(T₁ ∪ T₂) = history(T₁) ∪ history(T₂)`.
//!
//! Locks, in the order they may nest:
//! 1. `wmu` (writers only);
//! 2. a tree's registry lock (short: set algebra on key sets and the merge
//!    of a finished rebuild; never held across storage I/O);
//! 3. the writer mutexes inside the RCU cells (held while publishing).

use crate::error::{Error, Result};
use crate::treediff::{self, DeltaKV, DeltaValue, Direction, TrackTree};
use crate::ztail::DeltaZTail;
use hashbrown::HashMap;
use rangeset::{KeyRange, RangedKeySet};
use rcu::{JobRegistry, RcuCell};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use zodb::{Oid, Storage, Tid};

/// One tree's change at one revision: the tracked keys that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaTree {
    /// The revision.
    pub rev: Tid,
    /// Changed keys with old and new value; never empty in a history.
    pub kv: DeltaKV,
}

/// δB: what one revision changed in every tracked tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeltaB {
    /// The revision.
    pub rev: Tid,
    /// Trees with a non-empty change, by root.
    pub by_root: BTreeMap<Oid, DeltaKV>,
}

/// An Update of ΔBtail computed beside readers
/// ([`DeltaBTail::prepare_update`]), to be published by
/// [`DeltaBTail::apply_update`].
pub struct PreparedB {
    rev: Tid,
    oids: Vec<Oid>,
    /// The head it was prepared from.
    head: Tid,
    trees: Vec<PreparedTree>,
}

impl std::fmt::Debug for PreparedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedB")
            .field("rev", &self.rev)
            .field("head", &self.head)
            .field("trees", &self.trees.len())
            .finish()
    }
}

/// One tree's part of a [`PreparedB`]: the history and tracked nodes it
/// was stepped from, the stepped nodes and the change.
struct PreparedTree {
    tree: Arc<TreeTail>,
    hist: rcu::Snapshot<Hist>,
    nodes: TrackTree,
    dkv: DeltaKV,
}

/// The answer of [`DeltaBTail::get_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetAt {
    /// The key's value as of `at` (`ø` = absent) when `value_exact`.
    pub value: Oid,
    /// The revision of the last change `≤ at`, or `tail` if none is known.
    pub rev: Tid,
    /// Whether `value` is known (from a change in the window); otherwise the
    /// value did not change in `(tail, head]` and the caller knows it from
    /// head.
    pub value_exact: bool,
    /// Whether `rev` is the exact revision of the last change (`false`: it
    /// is `tail`, an upper bound).
    pub rev_exact: bool,
}

/// The built part of one tree's history: an immutable snapshot.
#[derive(Debug, Clone, Default)]
struct Hist {
    /// Keys whose history is complete over `(tail, head]`.
    built: RangedKeySet,
    /// `rev↑`, no empty entries. Persistent (O(1) clone, O(log n)
    /// append): a commit extends it without copying the window.
    entries: imbl::Vector<Arc<DeltaTree>>,
    /// The same history by key, for GetAt.
    by_key: KeyIndex,
}

/// One [`KeyIndex`] shard: key -> its changes, `rev↑`.
type Shard = HashMap<i64, Vec<(Tid, DeltaValue)>>;

/// Number of [`KeyIndex`] shards.
const SHARDS: usize = 64;

/// key -> `[(rev, ΔValue)]` (`rev↑`), in shards shared between versions:
/// a new version copies only the shards it changes (copy-on-write), so an
/// Update costs in proportion to the keys it changes and to a shard, not to
/// the whole index.
#[derive(Debug, Clone)]
struct KeyIndex {
    shards: Vec<Arc<Shard>>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
        }
    }
}

impl KeyIndex {
    fn shard(k: i64) -> usize {
        ((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
    }

    fn get(&self, k: i64) -> &[(Tid, DeltaValue)] {
        self.shards[Self::shard(k)]
            .get(&k)
            .map(|v| &v[..])
            .unwrap_or(&[])
    }

    /// Record the changes of one revision, newer than all recorded for
    /// those keys.
    fn push(&mut self, rev: Tid, kv: &DeltaKV) {
        for (k, dv) in kv {
            let sh = Arc::make_mut(&mut self.shards[Self::shard(*k)]);
            sh.entry(*k).or_default().push((rev, *dv));
        }
    }

    /// Drop changes `≤ rev_cut`, given the history entries being dropped
    /// (`gone`, every change `≤ rev_cut`): touches only their keys' lists
    /// and shards, so forgetting costs what is forgotten.
    fn forget<'a>(&mut self, rev_cut: Tid, gone: impl Iterator<Item = &'a DeltaTree>) {
        for e in gone {
            for k in e.kv.keys() {
                let sh = Arc::make_mut(&mut self.shards[Self::shard(*k)]);
                if let Some(v) = sh.get_mut(k) {
                    let n = v.partition_point(|c| c.0 <= rev_cut);
                    v.drain(..n);
                    if v.is_empty() {
                        sh.remove(k);
                    }
                }
            }
        }
    }
}

/// What a tree's registry lock protects.
#[derive(Debug)]
struct Meta {
    /// Tracked, not built, not being rebuilt.
    pending: RangedKeySet,
    /// The tracked nodes at head for the built keys.
    nodes: TrackTree,
}

/// One tracked tree.
struct TreeTail {
    root: Oid,
    hist: RcuCell<Hist>,
    /// In-progress rebuild jobs over key ranges; the state under its lock
    /// is [`Meta`]. Job results are `Err` only for the waiters of a failed
    /// rebuild.
    jobs: JobRegistry<Meta, std::result::Result<(), Error>>,
}

/// Shared state readers see: replaced as a whole by writers, and by the
/// first Track of a new tree.
#[derive(Clone)]
struct Shared {
    ztail: Arc<DeltaZTail>,
    trees: Arc<HashMap<Oid, Arc<TreeTail>>>,
}

/// ΔBtail; see the [module docs](self).
pub struct DeltaBTail {
    db: Arc<dyn Storage>,
    shared: RcuCell<Shared>,
    /// Serializes writers (Update, ForgetPast); see the lock order above.
    wmu: Mutex<()>,
}

impl std::fmt::Debug for DeltaBTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.load();
        f.debug_struct("DeltaBTail")
            .field("tail", &s.ztail.tail())
            .field("head", &s.ztail.head())
            .field("trees", &s.trees.len())
            .finish()
    }
}

impl DeltaBTail {
    /// An empty ΔBtail with coverage `(at0, at0]` over database `db`.
    pub fn new(at0: Tid, db: Arc<dyn Storage>) -> DeltaBTail {
        DeltaBTail {
            db,
            shared: RcuCell::new(Shared {
                ztail: Arc::new(DeltaZTail::new(at0)),
                trees: Arc::new(HashMap::new()),
            }),
            wmu: Mutex::new(()),
        }
    }

    /// The database.
    pub fn db(&self) -> &Arc<dyn Storage> {
        &self.db
    }

    /// The newest covered revision.
    pub fn head(&self) -> Tid {
        self.shared.with(|s| s.ztail.head())
    }

    /// The oldest covered revision (history is kept for `(tail, head]`).
    pub fn tail(&self) -> Tid {
        self.shared.with(|s| s.ztail.tail())
    }

    /// A snapshot of the raw history.
    pub fn ztail(&self) -> Arc<DeltaZTail> {
        self.shared.with(|s| s.ztail.clone())
    }

    /// Run `f` on the current raw history without taking a reference to
    /// it (no shared reference count is touched: the cheap form for hot
    /// paths).
    pub fn with_ztail<R>(&self, f: impl FnOnce(&DeltaZTail) -> R) -> R {
        self.shared.with(|s| f(&s.ztail))
    }

    /// Start tracking the keys `keycov` of the tree whose root is `path[0]`.
    ///
    /// `path` is the lookup path at head (root first) that led to a leaf
    /// covering `keycov`; only its root is used: the tracked nodes are
    /// derived from the keys when their history is built. A no-op for keys
    /// already tracked. Cheap: the history of new keys is computed by the
    /// first query that needs it.
    pub fn track(&self, path: &[Oid], keycov: KeyRange) -> Result<()> {
        let Some(&root) = path.first() else {
            return Err(Error::BadPath {
                path: path.to_vec(),
                why: "empty",
            });
        };
        if root == Oid::INVALID {
            return Err(Error::BadPath {
                path: path.to_vec(),
                why: "no root",
            });
        }
        let mut keys = RangedKeySet::new();
        keys.add_range(keycov);
        self.track_keys(root, &keys);
        Ok(())
    }

    /// [`track`](Self::track) for a set of keys of the tree `root`.
    pub fn track_keys(&self, root: Oid, keys: &RangedKeySet) {
        if keys.is_empty() {
            return;
        }
        // fast path: nothing new (snapshots read in place, no allocation)
        let known = self.shared.with(|s| {
            s.trees
                .get(&root)
                .is_some_and(|t| t.hist.with(|h| covers(&h.built, keys)))
        });
        if known {
            return;
        }
        let tree = self.tree_or_new(root);
        let mut g = tree.jobs.lock();
        let built = tree.hist.load().built.clone();
        let mut new = keys.difference(&built);
        new.difference_in_place(g.in_progress());
        g.pending.union_in_place(&new);
    }

    fn tree_or_new(&self, root: Oid) -> Arc<TreeTail> {
        if let Some(t) = self.shared.load().trees.get(&root) {
            return t.clone();
        }
        let mut made = None;
        self.shared.update(|s| {
            let mut s = s.clone();
            if !s.trees.contains_key(&root) {
                let mut trees = (*s.trees).clone();
                trees.insert(
                    root,
                    Arc::new(TreeTail {
                        root,
                        hist: RcuCell::new(Hist::default()),
                        jobs: JobRegistry::new(Meta {
                            pending: RangedKeySet::new(),
                            nodes: TrackTree::new(root),
                        }),
                    }),
                );
                s.trees = Arc::new(trees);
            }
            made = Some(s.trees[&root].clone());
            s
        });
        made.expect("set in update")
    }

    /// The tracked nodes of tree `root` at head for the keys whose history
    /// is built (for tests: they must equal a fresh walk of the tree).
    pub fn tracked_nodes(&self, root: Oid) -> Option<(RangedKeySet, TrackTree)> {
        let s = self.shared.load();
        let tree = s.trees.get(&root)?;
        let g = tree.jobs.lock();
        Some((tree.hist.load().built.clone(), g.nodes.clone()))
    }

    /// Apply transaction `δZ` (its tid and every object it stored): appends
    /// it to the raw history and computes the change of every tracked tree.
    /// Returns the trees whose tracked keys changed. Writer: the same as
    /// [`prepare_update`](Self::prepare_update) then
    /// [`apply_update`](Self::apply_update).
    pub fn update(&self, rev: Tid, oids: &[Oid]) -> Result<DeltaB> {
        let p = self.prepare_update(rev, oids)?;
        self.apply_update(p)
    }

    /// The storage-reading part of an Update, which may run beside readers
    /// (Track and the queries): build what is tracked but not built, then
    /// step a copy of each tree's tracked nodes forward through `δZ` (the
    /// tracked nodes are persistent: the copy is O(1)). Takes no lock
    /// across storage I/O. Nothing is published: readers keep seeing the
    /// old head until [`apply_update`](Self::apply_update). One preparation
    /// at a time (the writer's).
    pub fn prepare_update(&self, rev: Tid, oids: &[Oid]) -> Result<PreparedB> {
        let s = self.shared.load();
        if rev <= s.ztail.head() {
            return Err(Error::RevNotAfterHead {
                rev,
                head: s.ztail.head(),
            });
        }
        // keys tracked but not built: build them as of the old head first,
        // so that the forward step below covers them
        for tree in s.trees.values() {
            self.build(tree, &s.ztail, None)?;
        }
        let mut trees = Vec::with_capacity(s.trees.len());
        for tree in s.trees.values() {
            // a consistent pair: merges of rebuilds change both under the
            // registry lock
            let (mut nodes, h) = {
                let g = tree.jobs.lock();
                (g.nodes.clone(), tree.hist.load())
            };
            // on error nothing was published
            let dkv = treediff::step(
                &*self.db,
                &mut nodes,
                &h.built,
                rev,
                oids,
                Direction::Forward,
            )?;
            trees.push(PreparedTree {
                tree: tree.clone(),
                hist: h,
                nodes,
                dkv,
            });
        }
        Ok(PreparedB {
            rev,
            oids: oids.to_vec(),
            head: s.ztail.head(),
            trees,
        })
    }

    /// Publish a prepared Update: in memory only, no storage I/O. Writer,
    /// exclusive with readers (the caller guarantees it, see the module
    /// docs). Keys that queries built while it was being prepared have a
    /// history that ends at the old head: they are given back to the
    /// pending set (the next query that needs them rebuilds them at the
    /// new head), as are the keys of trees first tracked meanwhile.
    pub fn apply_update(&self, p: PreparedB) -> Result<DeltaB> {
        let _w = self.wmu.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.shared.load();
        if s.ztail.head() != p.head {
            return Err(Error::Inconsistent {
                what: format!(
                    "apply_update @{}: prepared at head {}, head is {}",
                    p.rev,
                    p.head,
                    s.ztail.head()
                ),
            });
        }
        let mut z = (*s.ztail).clone();
        z.append(p.rev, p.oids)?;
        let mut delta_b = DeltaB {
            rev: p.rev,
            by_root: BTreeMap::new(),
        };
        let mut stepped: hashbrown::HashSet<Oid> = hashbrown::HashSet::new();
        for pt in p.trees {
            stepped.insert(pt.tree.root);
            let mut g = pt.tree.jobs.lock();
            let now = pt.tree.hist.load();
            let merged = !rcu::Snapshot::ptr_eq(&now, &pt.hist);
            if merged {
                let late = now.built.difference(&pt.hist.built);
                g.pending.union_in_place(&late);
            }
            g.nodes = pt.nodes;
            if pt.dkv.is_empty() && !merged {
                continue;
            }
            let mut h = (*pt.hist).clone();
            if !pt.dkv.is_empty() {
                delta_b.by_root.insert(pt.tree.root, pt.dkv.clone());
                h.by_key.push(p.rev, &pt.dkv);
                h.entries.push_back(Arc::new(DeltaTree {
                    rev: p.rev,
                    kv: pt.dkv,
                }));
            }
            pt.tree.hist.store(h);
        }
        // trees first tracked while preparing: what queries built of them
        // is as of the old head
        for tree in s.trees.values().filter(|t| !stepped.contains(&t.root)) {
            let mut g = tree.jobs.lock();
            let h = tree.hist.load();
            if !h.built.is_empty() {
                g.pending.union_in_place(&h.built);
                g.nodes = TrackTree::new(tree.root);
                tree.hist.store(Hist::default());
            }
        }
        self.shared.store(Shared {
            ztail: Arc::new(z),
            trees: s.trees.clone(),
        });
        Ok(delta_b)
    }

    /// Forget everything: coverage becomes `(at, at]`, nothing is tracked
    /// (for a storage that moved to `at` without saying what changed: no
    /// history before it can be trusted). Snapshots already returned are
    /// not changed. Writer.
    pub fn reset(&self, at: Tid) {
        let _w = self.wmu.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.store(Shared {
            ztail: Arc::new(DeltaZTail::new(at)),
            trees: Arc::new(HashMap::new()),
        });
    }

    /// Forget history `≤ rev_cut` (ΔZtail semantics: `tail` becomes
    /// `rev_cut`). Snapshots already returned are not changed. Writer.
    pub fn forget_past(&self, rev_cut: Tid) -> Result<()> {
        let _w = self.wmu.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.shared.load();
        if rev_cut <= s.ztail.tail() {
            return Ok(());
        }
        let mut z = (*s.ztail).clone();
        z.forget_past(rev_cut)?;
        for tree in s.trees.values() {
            let _g = tree.jobs.lock();
            tree.hist.update(|h| {
                let mut h = h.clone();
                let n = count_le(&h.entries, rev_cut);
                let kept = h.entries.split_off(n);
                h.by_key.forget(rev_cut, h.entries.iter().map(|e| &**e));
                h.entries = kept;
                h
            });
        }
        self.shared.store(Shared {
            ztail: Arc::new(z),
            trees: s.trees.clone(),
        });
        Ok(())
    }

    /// The changes of tree `root` with `rev ∈ (lo, hi]`, ascending, no empty
    /// entries, for every key tracked so far. Needs `tail ≤ lo ≤ hi ≤ head`.
    /// Reader.
    pub fn slice_by_root_rev(&self, root: Oid, lo: Tid, hi: Tid) -> Result<Vec<Arc<DeltaTree>>> {
        let s = self.shared.load();
        check_slice(&s.ztail, lo, hi)?;
        let Some(tree) = s.trees.get(&root) else {
            return Ok(vec![]);
        };
        let h = self.build(tree, &s.ztail, None)?;
        Ok(slice(&h.entries, lo, hi))
    }

    /// The changes of every tracked tree with `rev ∈ (lo, hi]`, ascending.
    /// Reader.
    pub fn slice_by_rev(&self, lo: Tid, hi: Tid) -> Result<Vec<DeltaB>> {
        let s = self.shared.load();
        check_slice(&s.ztail, lo, hi)?;
        let mut by_rev: BTreeMap<Tid, DeltaB> = BTreeMap::new();
        for tree in s.trees.values() {
            let h = self.build(tree, &s.ztail, None)?;
            for e in slice(&h.entries, lo, hi) {
                by_rev
                    .entry(e.rev)
                    .or_insert_with(|| DeltaB {
                        rev: e.rev,
                        by_root: BTreeMap::new(),
                    })
                    .by_root
                    .insert(tree.root, e.kv.clone());
            }
        }
        Ok(by_rev.into_values().collect())
    }

    /// `root[key]` as of `at ∈ [tail, head]`, and when it last changed; see
    /// [`GetAt`]. The key must be tracked ([`Error::NotTracked`]
    /// otherwise). Reader; for a key whose history is built it takes no
    /// lock.
    pub fn get_at(&self, root: Oid, key: i64, at: Tid) -> Result<GetAt> {
        // fast path: snapshots read in place, no lock, no shared counter
        let fast = self.shared.with(|s| {
            let (tail, head) = (s.ztail.tail(), s.ztail.head());
            if at < tail || at > head {
                return Some(Err(Error::RevOutOfRange {
                    op: "GetAt",
                    rev: at,
                    tail,
                    head,
                }));
            }
            let tree = s.trees.get(&root)?;
            tree.hist.with(|h| {
                h.built
                    .has(key)
                    .then(|| Ok(get_at(h.by_key.get(key), at, tail)))
            })
        });
        if let Some(r) = fast {
            return r;
        }
        // slow path: the key's history is not built (or it is not tracked)
        let s = self.shared.load();
        let tail = s.ztail.tail();
        let not_tracked = || Error::NotTracked {
            what: format!("{root}[{key}]"),
        };
        let Some(tree) = s.trees.get(&root) else {
            return Err(not_tracked());
        };
        let mut want = RangedKeySet::new();
        want.add(key);
        let h = self.build(tree, &s.ztail, Some(&want))?;
        if !h.built.has(key) {
            return Err(not_tracked());
        }
        Ok(get_at(h.by_key.get(key), at, tail))
    }

    /// Make the history of `want` (all tracked keys if `None`) built, and
    /// return a snapshot that has it. Rebuilds pending keys that overlap
    /// (whole pending ranges), waits for rebuilds in progress that overlap.
    fn build(
        &self,
        tree: &TreeTail,
        ztail: &DeltaZTail,
        want: Option<&RangedKeySet>,
    ) -> Result<rcu::Snapshot<Hist>> {
        let all;
        let want = match want {
            Some(w) => w,
            None => {
                all = RangedKeySet::from_iter([KeyRange::FULL]);
                &all
            }
        };
        loop {
            let h = tree.hist.load();
            if covers(&h.built, want) {
                return Ok(h);
            }
            let (job, waits) = {
                let mut g = tree.jobs.lock();
                let waits = g.overlapping(want);
                let claim: RangedKeySet = g
                    .pending
                    .ranges()
                    .filter(|r| want.intersects_range(*r))
                    .collect();
                let job = if claim.is_empty() {
                    None
                } else {
                    g.pending.difference_in_place(&claim);
                    let mut job = g
                        .start(claim.clone())
                        .expect("pending is disjoint from jobs");
                    // a panicking rebuild gives its keys back to pending
                    let back = claim.clone();
                    job.on_abandon(move |m: &mut Meta| m.pending.union_in_place(&back));
                    Some((job, claim))
                };
                (job, waits)
            };
            if job.is_none() && waits.is_empty() {
                // what is left of `want` is not tracked
                return Ok(tree.hist.load());
            }
            if let Some((job, claim)) = job {
                match self.rebuild(tree.root, ztail, &claim) {
                    Ok((nodes, entries)) => job.finish_with(
                        |m: &mut Meta| {
                            m.nodes.union_in_place(&nodes);
                            tree.hist.update(|h| merge(h, &claim, entries));
                        },
                        Ok(()),
                    ),
                    Err(e) => {
                        job.finish_with(
                            |m: &mut Meta| m.pending.union_in_place(&claim),
                            Err(Error::RebuildFailed {
                                what: format!("{}{:?}", tree.root, claim),
                            }),
                        );
                        return Err(e);
                    }
                }
            }
            for w in waits {
                match w.wait() {
                    Ok(r) => r?,
                    Err(_abandoned) => {
                        return Err(Error::RebuildFailed {
                            what: format!("{}", tree.root),
                        })
                    }
                }
            }
        }
    }

    /// The history of `keys` of tree `root` over the window of `ztail`, and
    /// their tracked nodes at head. No lock held: reads only the storage and
    /// the given snapshot.
    fn rebuild(
        &self,
        root: Oid,
        ztail: &DeltaZTail,
        keys: &RangedKeySet,
    ) -> Result<(TrackTree, Vec<DeltaTree>)> {
        let db = &*self.db;
        let at_head = TrackTree::walk(db, root, ztail.head(), keys)?;
        let mut tt = at_head.clone();
        let mut out = Vec::new();
        for dz in ztail.entries().rev() {
            let kv = treediff::step(db, &mut tt, keys, dz.rev, &dz.oids, Direction::Backward)?;
            if !kv.is_empty() {
                out.push(DeltaTree { rev: dz.rev, kv });
            }
        }
        out.reverse();
        Ok((at_head, out))
    }
}

/// Whether every key of `want` is in `have`.
fn covers(have: &RangedKeySet, want: &RangedKeySet) -> bool {
    want.ranges().all(|r| have.has_range(r))
}

/// `h` with the history of `keys` (disjoint from `h.built`) merged in.
fn merge(h: &Hist, keys: &RangedKeySet, add: Vec<DeltaTree>) -> Hist {
    // the keys of `add` are new to the index: their lists are `add`'s revs
    let mut by_key = h.by_key.clone();
    for e in &add {
        by_key.push(e.rev, &e.kv);
    }
    let mut entries = imbl::Vector::new();
    let mut a = h.entries.iter().peekable();
    let mut b = add.into_iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => entries.push_back(a.next().expect("peeked").clone()),
            (None, Some(_)) => entries.push_back(Arc::new(b.next().expect("peeked"))),
            (Some(x), Some(y)) => {
                if x.rev < y.rev {
                    entries.push_back(a.next().expect("peeked").clone());
                } else if y.rev < x.rev {
                    entries.push_back(Arc::new(b.next().expect("peeked")));
                } else {
                    let mut e = (**a.next().expect("peeked")).clone();
                    e.kv.extend(b.next().expect("peeked").kv);
                    entries.push_back(Arc::new(e));
                }
            }
        }
    }
    Hist {
        built: h.built.union(keys),
        entries,
        by_key,
    }
}

fn check_slice(z: &DeltaZTail, lo: Tid, hi: Tid) -> Result<()> {
    let (tail, head) = (z.tail(), z.head());
    if !(tail <= lo && lo <= hi && hi <= head) {
        return Err(Error::BadSlice { lo, hi, tail, head });
    }
    Ok(())
}

/// The number of leading entries with `rev ≤ at`.
fn count_le(entries: &imbl::Vector<Arc<DeltaTree>>, at: Tid) -> usize {
    entries
        .binary_search_by(|e| {
            if e.rev <= at {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        })
        .unwrap_or_else(|i| i)
}

/// The entries with `rev ∈ (lo, hi]`.
fn slice(entries: &imbl::Vector<Arc<DeltaTree>>, lo: Tid, hi: Tid) -> Vec<Arc<DeltaTree>> {
    let (i, j) = (count_le(entries, lo), count_le(entries, hi));
    (i..j.max(i)).map(|k| entries[k].clone()).collect()
}

/// GetAt over one key's changes (`rev↑`).
fn get_at(changes: &[(Tid, DeltaValue)], at: Tid, tail: Tid) -> GetAt {
    let i = changes.partition_point(|e| e.0 <= at);
    if i > 0 {
        let (rev, dv) = changes[i - 1];
        return GetAt {
            value: dv.new,
            rev,
            value_exact: true,
            rev_exact: true,
        };
    }
    if let Some((_, dv)) = changes.first() {
        return GetAt {
            value: dv.old,
            rev: tail,
            value_exact: true,
            rev_exact: false,
        };
    }
    GetAt {
        value: Oid::INVALID,
        rev: tail,
        value_exact: false,
        rev_exact: false,
    }
}

// ΔBtail is shared between the server's threads.
const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<DeltaBTail>();
};

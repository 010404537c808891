//! treediff: the change of one BTree between two database states,
//! restricted to a set of tracked keys.
//!
//! # What is computed
//!
//! A tree is tracked for a set of keys `K` (a [`RangedKeySet`]). At each
//! database state `s` the *tracked nodes* [`TrackTree`] of the tree are
//! `PP(leaves of s covering K)`: the root, and every node on the way from
//! the root to a bucket whose key coverage intersects `K` (an empty tree or a
//! tree with its bucket inlined is its own leaf). Each tracked node carries
//! its key coverage at `s`.
//!
//! Given the tracked nodes at one state (the *known* side) and the objects a
//! transaction changed (`δZ`), [`step`] computes
//!
//! - `dkv`: every key of `K` whose value differs between the two states,
//!   with old and new value, and nothing else: the result is exact, not a
//!   superset;
//! - the tracked nodes at the other state.
//!
//! It works in both directions: forward (known = before the transaction,
//! used by `Update`) and backward (known = after it, used to rebuild the
//! history of keys tracked late, walking from head towards tail).
//!
//! # Why looking only at δZ ∩ tracked nodes is enough
//!
//! The keys a node covers are fixed by the separator keys of its ancestors.
//! Let `N` be a changed tracked node none of whose ancestors changed: `N` sits
//! at the same place with the same coverage in both states, and every key of
//! `K` outside all such `N` is reached through unchanged nodes only, so its
//! value is the same in both states. Inside `N` both sides are walked,
//! restricted to `K ∩ cov(N)`. A child `X` that is not in δZ and has no
//! changed tracked descendant ("not dirty") is not expanded if it appears on
//! both sides with the same coverage: every changed node below `X` that is
//! topmost below it keeps its coverage, and covers no key of `K` (if it did,
//! it would be an ancestor of a known-side leaf covering that key, hence
//! tracked, and `X` would be dirty). So the `K`-part of `X`'s subtree is the
//! same on both sides. Cost: proportional to the nodes of the changed
//! region that cover `K`, not to the tree.
//!
//! A tree root that does not exist at a state (created later, or never) is
//! an empty tree there; the root stays tracked while its tree is absent, so
//! that its re-creation is noticed.
//!
//! Tracked keys never grow here: unlike upstream, which tracks whole leaf
//! coverages and so grows the tracked keys when buckets merge (and then has
//! to report untracked neighbours "uniformly"), the key set is exactly what
//! was asked, and the tracked nodes are derived from it.

use crate::error::{Error, Result};
use hashbrown::{HashMap, HashSet};
use rangeset::{KeyRange, RangedKeySet};
use std::collections::BTreeMap;
use zodb::btree::{self, Node, TreeState, MAX_DEPTH};
use zodb::{record, Oid, Storage, Tid};

/// A value change of one key: `old`/`new` are the value oids, with
/// [`Oid::INVALID`] (`ø`, VDEL) for "no entry".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeltaValue {
    /// The value before (`ø`: the key was absent).
    pub old: Oid,
    /// The value after (`ø`: the key is absent).
    pub new: Oid,
}

impl std::fmt::Display for DeltaValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |o: Oid| {
            if o == Oid::INVALID {
                "ø".to_owned()
            } else {
                format!("{:x}", o.0)
            }
        };
        write!(f, "{{{} {}}}", v(self.old), v(self.new))
    }
}

/// Key -> value change, ascending keys.
pub type DeltaKV = BTreeMap<i64, DeltaValue>;

/// A tracked node: its parent (`ø` for the root), its key coverage and its
/// tracked children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackNode {
    /// The parent, [`Oid::INVALID`] for the root.
    pub parent: Oid,
    /// Keys the node covers at this state (closed range).
    pub cov: KeyRange,
    /// Tracked children, sorted by oid.
    pub kids: Vec<Oid>,
}

/// The tracked nodes of one tree at one database state; see the
/// [module docs](self).
///
/// Invariant: the root is present; every other node's parent is present and
/// lists it in `kids`; coverages of siblings are disjoint and inside the
/// parent's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackTree {
    root: Oid,
    /// Persistent (a hash trie): a clone is O(1) and shares the nodes, so
    /// a commit can step a copy beside queries that read the original.
    nodes: imbl::HashMap<Oid, TrackNode>,
}

impl TrackTree {
    /// Only the root, covering everything (how an absent or not yet walked
    /// tree starts).
    pub fn new(root: Oid) -> TrackTree {
        let mut nodes = imbl::HashMap::new();
        nodes.insert(
            root,
            TrackNode {
                parent: Oid::INVALID,
                cov: KeyRange::FULL,
                kids: vec![],
            },
        );
        TrackTree { root, nodes }
    }

    /// The tracked nodes of the tree at `at` for keys `keys`, by walking it.
    pub fn walk(stor: &dyn Storage, root: Oid, at: Tid, keys: &RangedKeySet) -> Result<TrackTree> {
        let mut out = WalkOut::default();
        if !keys.is_empty() {
            let w = Walker {
                stor,
                at,
                root,
                want: keys,
            };
            w.walk(
                root,
                Oid::INVALID,
                KeyRange::FULL,
                0,
                &mut |_, _| false,
                &mut out,
            )?;
        }
        let mut t = TrackTree::new(root);
        t.insert_nodes(out.nodes.into_iter().filter(|n| n.0 != root));
        Ok(t)
    }

    /// The root oid.
    pub fn root(&self) -> Oid {
        self.root
    }

    /// Number of tracked nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: the root is always tracked.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `oid` is tracked.
    pub fn contains(&self, oid: Oid) -> bool {
        self.nodes.contains_key(&oid)
    }

    /// A tracked node.
    pub fn get(&self, oid: Oid) -> Option<&TrackNode> {
        self.nodes.get(&oid)
    }

    /// All tracked nodes.
    pub fn iter(&self) -> impl Iterator<Item = (Oid, &TrackNode)> + '_ {
        self.nodes.iter().map(|(o, n)| (*o, n))
    }

    /// Add the nodes of `other` (a tracked set of the same tree at the same
    /// state): the tracked nodes for the union of both key sets.
    pub fn union_in_place(&mut self, other: &TrackTree) {
        debug_assert_eq!(self.root, other.root);
        let new: Vec<(Oid, Oid, KeyRange)> = other
            .nodes
            .iter()
            .filter(|(o, _)| !self.nodes.contains_key(*o))
            .map(|(o, n)| (*o, n.parent, n.cov))
            .collect();
        self.insert_nodes(parents_first(new));
    }

    /// Insert nodes whose parents are present or inserted before them.
    fn insert_nodes(&mut self, nodes: impl IntoIterator<Item = (Oid, Oid, KeyRange)>) {
        for (oid, parent, cov) in nodes {
            let fresh = self
                .nodes
                .insert(
                    oid,
                    TrackNode {
                        parent,
                        cov,
                        kids: vec![],
                    },
                )
                .is_none();
            debug_assert!(fresh, "node {oid} inserted twice");
            if let Some(p) = self.nodes.get_mut(&parent) {
                // kids sorted by oid: equal sets compare equal
                let i = p.kids.partition_point(|k| *k < oid);
                p.kids.insert(i, oid);
            }
        }
    }

    /// `n` and every tracked node below it, parents first.
    fn subtree(&self, n: Oid) -> Vec<Oid> {
        let mut out = vec![n];
        let mut i = 0;
        while i < out.len() {
            if let Some(t) = self.nodes.get(&out[i]) {
                out.extend_from_slice(&t.kids);
            }
            i += 1;
        }
        out
    }

    /// Whether an ancestor of `oid` (not `oid` itself) is in `set`.
    fn has_ancestor_in(&self, oid: Oid, set: &HashSet<Oid>) -> bool {
        let mut p = self.nodes[&oid].parent;
        while p != Oid::INVALID {
            if set.contains(&p) {
                return true;
            }
            p = self.nodes[&p].parent;
        }
        false
    }

    /// Check the invariant from scratch (tests).
    pub fn verify(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Inconsistent { what });
        match self.nodes.get(&self.root) {
            Some(r) if r.parent == Oid::INVALID => {}
            _ => return bad(format!("root {} missing or has a parent", self.root)),
        }
        for (o, n) in &self.nodes {
            if *o != self.root {
                let Some(p) = self.nodes.get(&n.parent) else {
                    return bad(format!("{o}: parent {} not tracked", n.parent));
                };
                if !p.kids.contains(o) {
                    return bad(format!("{o}: not among the kids of its parent"));
                }
                if n.cov.lo < p.cov.lo || n.cov.hi > p.cov.hi {
                    return bad(format!("{o}: coverage outside its parent's"));
                }
            }
            for k in &n.kids {
                if self.nodes.get(k).map(|c| c.parent) != Some(*o) {
                    return bad(format!("{o}: kid {k} does not point back"));
                }
            }
        }
        if self.subtree(self.root).len() != self.nodes.len() {
            return bad("nodes unreachable from the root".into());
        }
        Ok(())
    }
}

/// A node as walks report it: `(oid, parent, coverage)`.
type NodeEntry = (Oid, Oid, KeyRange);

/// A diffed region: the other side's nodes, and `(key, (known value, other
/// value))` of every key that differs.
type Region = (Vec<NodeEntry>, Vec<(i64, (Oid, Oid))>);

/// Order `(oid, parent, cov)` entries so that parents present in the list
/// come before their children.
fn parents_first(mut v: Vec<(Oid, Oid, KeyRange)>) -> Vec<(Oid, Oid, KeyRange)> {
    let idx: HashSet<Oid> = v.iter().map(|e| e.0).collect();
    let mut out = Vec::with_capacity(v.len());
    let mut done: HashSet<Oid> = HashSet::new();
    while !v.is_empty() {
        let before = v.len();
        v.retain(|e| {
            if !idx.contains(&e.1) || done.contains(&e.1) {
                done.insert(e.0);
                out.push(*e);
                false
            } else {
                true
            }
        });
        if v.len() == before {
            // a parent cycle: cannot come from a tree walk
            out.append(&mut v);
        }
    }
    out
}

/// Which side of a transaction the known tracked nodes describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Known = before the transaction; compute after (Update).
    Forward,
    /// Known = after the transaction; compute before (rebuild).
    Backward,
}

/// One transaction's change to a tracked tree: see the [module docs](self).
///
/// `tt` holds the tracked nodes for `keys` at the known state and is turned
/// into those at the other state. `rev` is the transaction, `changed` the
/// objects it stored. Returns the exact change of the keys in `keys`. On
/// error `tt` is unchanged: every region is diffed before any is replaced.
pub fn step(
    stor: &dyn Storage,
    tt: &mut TrackTree,
    keys: &RangedKeySet,
    rev: Tid,
    changed: &[Oid],
    dir: Direction,
) -> Result<DeltaKV> {
    Ok(step_ex(stor, tt, keys, rev, changed, dir)?.kv)
}

/// What [`step_ex`] computed: the change of the keys and of the tracked
/// set. (The tracked *keys* never change here, see the [module
/// docs](self), so there is no key-coverage change to report.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepDelta {
    /// The exact change of the tracked keys.
    pub kv: DeltaKV,
    /// Nodes that left the tracked set, sorted.
    pub track_del: Vec<Oid>,
    /// Nodes that joined it, sorted.
    pub track_add: Vec<Oid>,
}

/// [`step`], also reporting how the tracked node set changed.
pub fn step_ex(
    stor: &dyn Storage,
    tt: &mut TrackTree,
    keys: &RangedKeySet,
    rev: Tid,
    changed: &[Oid],
    dir: Direction,
) -> Result<StepDelta> {
    let mut out = StepDelta::default();
    let mut dkv = DeltaKV::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let before = Tid(rev.0 - 1);
    let (known_at, other_at) = match dir {
        Direction::Forward => (before, rev),
        Direction::Backward => (rev, before),
    };
    let hit: HashSet<Oid> = changed
        .iter()
        .copied()
        .filter(|o| tt.contains(*o))
        .collect();
    if hit.is_empty() {
        return Ok(out);
    }
    let changed: HashSet<Oid> = changed.iter().copied().collect();
    // dirty: tracked ancestors of changed tracked nodes
    let mut dirty: HashSet<Oid> = HashSet::new();
    for &c in &hit {
        let mut p = tt.nodes[&c].parent;
        while p != Oid::INVALID && dirty.insert(p) {
            p = tt.nodes[&p].parent;
        }
    }
    let tops: Vec<Oid> = hit
        .iter()
        .copied()
        .filter(|&c| !tt.has_ancestor_in(c, &hit))
        .collect();
    // diff every region first: a node may move from one region to another
    // (its oid reused elsewhere), so no region may be replaced before all
    // are diffed against the known side
    let mut regions = Vec::with_capacity(tops.len());
    for &n in &tops {
        let (region, kv) = diff_region(stor, tt, n, keys, known_at, other_at, &changed, &dirty)?;
        for (k, (known, other)) in kv {
            let dv = match dir {
                Direction::Forward => DeltaValue {
                    old: known,
                    new: other,
                },
                Direction::Backward => DeltaValue {
                    old: other,
                    new: known,
                },
            };
            dkv.insert(k, dv);
        }
        regions.push((n, region));
    }
    let mut removed: HashSet<Oid> = HashSet::new();
    for &n in &tops {
        for o in &tt.subtree(n)[1..] {
            tt.nodes.remove(o);
            removed.insert(*o);
        }
        tt.nodes.get_mut(&n).expect("n tracked").kids.clear();
    }
    let mut added: HashSet<Oid> = HashSet::new();
    for (_, region) in regions {
        added.extend(region.iter().map(|e| e.0));
        tt.insert_nodes(region);
    }
    out.track_del = removed.difference(&added).copied().collect();
    out.track_add = added.difference(&removed).copied().collect();
    out.track_del.sort();
    out.track_add.sort();
    out.kv = dkv;
    Ok(out)
}

/// Diff the region below tracked node `n` (topmost changed): returns the
/// other side's tracked nodes below `n` (parents first) and, for every key
/// of `keys` in the region whose value differs, `(known value, other value)`.
#[allow(clippy::too_many_arguments)]
fn diff_region(
    stor: &dyn Storage,
    tt: &TrackTree,
    n: Oid,
    keys: &RangedKeySet,
    known_at: Tid,
    other_at: Tid,
    changed: &HashSet<Oid>,
    dirty: &HashSet<Oid>,
) -> Result<Region> {
    let tn = &tt.nodes[&n];
    let (parent, cov) = (tn.parent, tn.cov);
    let root = tt.root;

    // known side: do not expand clean children, remember them
    let kw = Walker {
        stor,
        at: known_at,
        root,
        want: keys,
    };
    let mut kout = WalkOut::default();
    kw.walk(
        n,
        parent,
        cov,
        0,
        &mut |c, ccov| {
            !changed.contains(&c)
                && !dirty.contains(&c)
                && tt.nodes.get(&c).is_some_and(|t| t.cov == ccov)
        },
        &mut kout,
    )?;
    let mut cands: HashMap<Oid, (KeyRange, bool)> = kout
        .pruned
        .iter()
        .map(|&(o, _, c)| (o, (c, false)))
        .collect();

    // other side: skip what the known side skipped, at the same coverage
    let ow = Walker {
        stor,
        at: other_at,
        root,
        want: keys,
    };
    let mut oout = WalkOut::default();
    ow.walk(
        n,
        parent,
        cov,
        0,
        &mut |c, ccov| match cands.get_mut(&c) {
            Some((kc, matched)) if *kc == ccov && !changed.contains(&c) => {
                *matched = true;
                true
            }
            _ => false,
        },
        &mut oout,
    )?;

    // known-side candidates the other side did not match: expand them
    for &(o, p, c) in &kout.pruned {
        if !cands[&o].1 {
            let mut sub = WalkOut::default();
            kw.walk(o, p, c, 0, &mut |_, _| false, &mut sub)?;
            kout.items.extend(sub.items);
        }
    }

    let known: BTreeMap<i64, Oid> = kout.items.into_iter().collect();
    let other: BTreeMap<i64, Oid> = oout.items.into_iter().collect();
    let mut kv = Vec::new();
    let mut ki = known.iter().peekable();
    let mut oi = other.iter().peekable();
    loop {
        let (k, a, b) = match (ki.peek(), oi.peek()) {
            (None, None) => break,
            (Some((&k, &a)), None) => {
                ki.next();
                (k, a, Oid::INVALID)
            }
            (None, Some((&k, &b))) => {
                oi.next();
                (k, Oid::INVALID, b)
            }
            (Some((&k1, &a)), Some((&k2, &b))) => {
                if k1 < k2 {
                    ki.next();
                    (k1, a, Oid::INVALID)
                } else if k2 < k1 {
                    oi.next();
                    (k2, Oid::INVALID, b)
                } else {
                    ki.next();
                    oi.next();
                    (k1, a, b)
                }
            }
        };
        if a != b {
            kv.push((k, (a, b)));
        }
    }

    // the other side's region: its walked nodes, and matched candidates
    // with their (unchanged) tracked subtrees
    let mut region: Vec<(Oid, Oid, KeyRange)> =
        oout.nodes.into_iter().filter(|e| e.0 != n).collect();
    for (o, p, c) in oout.pruned {
        region.push((o, p, c));
        for d in &tt.subtree(o)[1..] {
            let t = &tt.nodes[d];
            region.push((*d, t.parent, t.cov));
        }
    }
    Ok((region, kv))
}

/// What a node holds, as far as a walk needs it.
enum Content {
    /// A bucket (or an empty tree, or an inlined bucket): key -> value oid.
    Leaf(Vec<(i64, Oid)>),
    /// Children with their coverage.
    Inner(Vec<(Oid, KeyRange)>),
}

#[derive(Default)]
struct WalkOut {
    /// Items of the reached leaves, restricted to the wanted keys.
    items: Vec<(i64, Oid)>,
    /// Visited nodes `(oid, parent, cov)`, parents first.
    nodes: Vec<(Oid, Oid, KeyRange)>,
    /// Children not expanded because the prune callback said so.
    pruned: Vec<(Oid, Oid, KeyRange)>,
}

struct Walker<'a> {
    stor: &'a dyn Storage,
    at: Tid,
    root: Oid,
    want: &'a RangedKeySet,
}

impl Walker<'_> {
    /// Walk the subtree of `oid` (coverage `cov`), restricted to the wanted
    /// keys; children for which `prune(child, cov)` says so are recorded,
    /// not expanded.
    fn walk(
        &self,
        oid: Oid,
        parent: Oid,
        cov: KeyRange,
        depth: usize,
        prune: &mut dyn FnMut(Oid, KeyRange) -> bool,
        out: &mut WalkOut,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(zodb::Error::bad_state(self.root, "btree: too deep (cycle?)").into());
        }
        out.nodes.push((oid, parent, cov));
        match self.content(oid, cov)? {
            Content::Leaf(items) => {
                out.items
                    .extend(items.into_iter().filter(|(k, _)| self.want.has(*k)));
            }
            Content::Inner(children) => {
                for (c, ccov) in children {
                    if !self.want.intersects_range(ccov) {
                        continue;
                    }
                    if prune(c, ccov) {
                        out.pruned.push((c, oid, ccov));
                    } else {
                        self.walk(c, oid, ccov, depth + 1, prune, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn content(&self, oid: Oid, cov: KeyRange) -> Result<Content> {
        let node = match btree::load_node(self.stor, oid, self.at) {
            Ok(n) => n,
            // an absent root is an empty tree
            Err(e) if oid == self.root && e.is_no_object() => {
                return Ok(Content::Leaf(vec![]));
            }
            Err(e) => return Err(e.into()),
        };
        let leaf = |oid: Oid, b: btree::Bucket| -> Result<Content> {
            let mut items = Vec::with_capacity(b.keys.len());
            for (k, v) in b.keys.into_iter().zip(b.values) {
                if cov.contains(k) {
                    items.push((k, record::decode_ref(oid, &v)?.oid));
                }
            }
            Ok(Content::Leaf(items))
        };
        match node {
            Node::Bucket { bucket, .. } => leaf(oid, bucket),
            Node::Tree { state, .. } => match state {
                TreeState::Empty => Ok(Content::Leaf(vec![])),
                TreeState::Inline(b) => leaf(oid, b),
                TreeState::Children(c) => Ok(Content::Inner(
                    (0..c.children.len())
                        .map(|i| (c.children[i].oid, c.child_cov(i, cov)))
                        .filter(|(_, cc)| !cc.is_empty())
                        .collect(),
                )),
            },
        }
    }
}

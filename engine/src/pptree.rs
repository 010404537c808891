//! PPTreeSubSet: a parent-closed ("PP-connected") set of BTree nodes, and
//! ΔPPTreeSubSet, a change to one.
//!
//! ΔBtail keeps the set of *tracked* tree nodes as a [`PPTreeSubSet`]: each
//! `Track(path)` adds the nodes of a root→leaf path, so the set is
//!
//! ```text
//! PP(leaves) = ⋃ { leaf, parent(leaf), parent(parent(leaf)), …, root }
//! ```
//!
//! and from any member one can walk `parent` links up to a root through
//! members only. Nodes are named by oid; each member stores its `parent`
//! (`ø` = [`Oid::INVALID`] for a root) and `nchild`, the number of members
//! that have it as parent. The set may hold several roots (several trees).
//!
//! # Invariants
//!
//! Writing `S` for the set and `n.parent`, `n.nchild` for a member's fields:
//!
//! ```text
//! ∀ n ∈ S:  n.parent = ø  ∨  n.parent ∈ S                    (PP-connected)
//! ∀ n ∈ S:  n.nchild = #{ m ∈ S : m.parent = n }
//! ∀ n ∈ S:  n ≠ ø                                            (Oid::INVALID is never a member)
//! leaves(S) = { n ∈ S : n.nchild = 0 },   S = PP(leaves(S))
//! ```
//!
//! No cycles: a cycle of parent links never reaches a root, and the
//! mutators only link a node under a parent taken from a valid path or set
//! (`add_path`, the other operand of `union`, `δ.add`), which leads to a
//! root within that path or set. Every public mutator keeps the invariants or fails with
//! the set unchanged: the changes are journaled and checked locally (in time
//! proportional to the change, not to the set; see `Edit::check`), and
//! rolled back on error. [`PPTreeSubSet::verify`] re-checks everything from
//! scratch, for tests.
//!
//! A node is always seen under one parent; a node seen under two different
//! parents (or as a root and as a child) is a corrupt tree
//! ([`Error::TreeCorrupt`]).
//!
//! # Set algebra
//!
//! The sets behave as sets of leaves, each leaf carrying its path:
//!
//! ```text
//! A ∪ B = PP(leaves(A) ∪ leaves(B))   (= the union of the node sets)
//! A \ B = PP(leaves(A) \ leaves(B))
//! A ∩ B = PP(leaves(A) ∩ leaves(B))
//! ```
//!
//! Upstream implements `A \ B` as "remove from A every leaf of B, then
//! collect parents left without children", which is `PP(leaves(A) \
//! leaves(B))` provided no leaf of B is an inner node of A (upstream leaves
//! a broken set otherwise). Here a leaf of B that is an inner node of A stays:
//! it is still an ancestor of A's remaining leaves, so the formula holds
//! always. Upstream has no intersection; the one here follows the same
//! leaf-set reading (it is *not* the node intersection: `{c-41} ∩ {c-41-22}`
//! is empty, since `41` is a leaf only of the first). It is well defined
//! whenever the common leaves sit on the same path in both sets, and
//! [`Error::TreeCorrupt`] otherwise.
//!
//! # Text form
//!
//! [`Display`](std::fmt::Display) prints `{oid:parent …}` sorted by oid,
//! oids in hex without padding, `ø` for no parent: the tree `1 → {2 → 4,
//! 3}` is `{1:ø 2:1 3:1 4:2}`. `nchild` follows from the links and is not
//! printed; [`FromStr`] parses the same form back (and
//! checks it). [`Debug`](std::fmt::Debug) adds nchild: `{1:ø/2 2:1/1 …}`.
//!
//! [`DeltaPPTreeSubSet`] (ΔPPTreeSubSet) documents how a change of tracked
//! paths is applied, and why its `delta_nchild_non_leafs` fixup exists.
//!
//! # Concurrency
//!
//! Plain data: queries take `&self`, mutators `&mut self`. ΔBtail's
//! concurrent Track/rebuild (engine-semantics §7) works on clones and
//! merges changes with `union`/`apply_delta`.

use crate::error::{Error, Result};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use zodb::Oid;

/// What a [`PPTreeSubSet`] records about one member node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PPNode {
    parent: Oid,
    nchild: u32,
}

impl PPNode {
    /// The parent node, or [`Oid::INVALID`] for a root.
    pub fn parent(&self) -> Oid {
        self.parent
    }

    /// Number of members whose parent is this node.
    pub fn nchild(&self) -> u32 {
        self.nchild
    }

    /// Whether this node is a root (has no parent).
    pub fn is_root(&self) -> bool {
        self.parent == Oid::INVALID
    }

    /// Whether this node is a leaf of the set (`nchild == 0`).
    pub fn is_leaf(&self) -> bool {
        self.nchild == 0
    }
}

/// A parent-closed set of tree nodes; see the [module docs](self).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PPTreeSubSet {
    /// oid -> {parent, nchild}
    nodes: HashMap<Oid, PPNode>,
}

/// Normalize a tree path as `add_path` takes it: `[ø]` (the artificial
/// empty tree) → `[]`; a trailing `ø` (an embedded bucket: it has no oid of
/// its own and is tracked through its tree) is dropped. Returns a subslice.
///
/// Upstream drops the trailing `ø` only after a root (`[root, ø]`), since
/// ZODB embeds a bucket only in a tree that never split; dropping it at any
/// depth accepts every shape the reader may produce and changes nothing for
/// the shapes ZODB writes.
pub fn norm_path(path: &[Oid]) -> &[Oid] {
    match path {
        [rest @ .., last] if *last == Oid::INVALID => rest,
        _ => path,
    }
}

impl PPTreeSubSet {
    /// The empty set.
    pub fn new() -> PPTreeSubSet {
        PPTreeSubSet::default()
    }

    /// The set `PP(leaf of each path)`: [`add_path`](Self::add_path) of
    /// each path.
    pub fn from_paths<P: AsRef<[Oid]>>(paths: impl IntoIterator<Item = P>) -> Result<Self> {
        let mut s = PPTreeSubSet::new();
        for p in paths {
            s.add_path(p.as_ref())?;
        }
        Ok(s)
    }

    /// Number of member nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `oid` is a member.
    pub fn contains(&self, oid: Oid) -> bool {
        self.nodes.contains_key(&oid)
    }

    /// What the set records about member `oid`.
    pub fn get(&self, oid: Oid) -> Option<PPNode> {
        self.nodes.get(&oid).copied()
    }

    /// All members, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Oid, PPNode)> + '_ {
        self.nodes.iter().map(|(&oid, &n)| (oid, n))
    }

    /// The leaves (members without member children), in no particular order.
    pub fn leaves(&self) -> impl Iterator<Item = Oid> + '_ {
        self.iter().filter(|(_, n)| n.is_leaf()).map(|(oid, _)| oid)
    }

    /// The roots (members without parent), in no particular order.
    pub fn roots(&self) -> impl Iterator<Item = Oid> + '_ {
        self.iter().filter(|(_, n)| n.is_root()).map(|(oid, _)| oid)
    }

    /// Remove every member.
    pub fn clear(&mut self) {
        self.nodes.clear();
    }

    /// The path `[root, …, oid]` to member `oid`; `None` if `oid` is not a
    /// member.
    pub fn path(&self, oid: Oid) -> Option<Vec<Oid>> {
        let mut path = Vec::new();
        let mut cur = oid;
        while cur != Oid::INVALID {
            path.push(cur);
            cur = self.nodes.get(&cur)?.parent;
        }
        path.reverse();
        Some(path)
    }

    /// Add the nodes of `path = [root, …, node]` (each linked under the one
    /// before it, the first as a root).
    ///
    /// The path is normalized first ([`norm_path`]): `[ø]` adds nothing,
    /// `[root, ø]` adds `[root]`. An empty path, or `ø` anywhere else, is
    /// [`Error::BadPath`]. A node already in the set under another parent,
    /// or repeated in the path, is [`Error::TreeCorrupt`]. On error the set
    /// is unchanged.
    pub fn add_path(&mut self, path: &[Oid]) -> Result<()> {
        if path.is_empty() {
            return Err(Error::BadPath {
                path: Vec::new(),
                why: "empty path",
            });
        }
        let npath = norm_path(path);
        if npath.contains(&Oid::INVALID) {
            return Err(Error::BadPath {
                path: path.to_vec(),
                why: "ø (Oid::INVALID) inside the path",
            });
        }
        let mut ed = Edit::new(&mut self.nodes);
        let mut parent = Oid::INVALID;
        let mut res = Ok(());
        for &oid in npath {
            match ed.get(oid) {
                Some(n) if n.parent == parent => {}
                Some(n) => {
                    // Also catches a node repeated in the path: it was
                    // just added under another parent.
                    res = Err(Error::TreeCorrupt {
                        oid,
                        parent1: n.parent,
                        parent2: parent,
                    });
                    break;
                }
                None => {
                    ed.put(oid, PPNode { parent, nchild: 0 });
                    if parent != Oid::INVALID {
                        let mut p = ed.get(parent).expect("parent was just visited");
                        p.nchild += 1;
                        ed.put(parent, p);
                    }
                }
            }
            parent = oid;
        }
        ed.finish(res)
    }

    /// `self = self ∪ other = PP(leaves(self) ∪ leaves(other))`: add every
    /// node of `other`.
    ///
    /// A node of both with different parents is [`Error::TreeCorrupt`]; the
    /// set is then unchanged.
    pub fn union_in_place(&mut self, other: &PPTreeSubSet) -> Result<()> {
        let mut ed = Edit::new(&mut self.nodes);
        let res = ed.x_union(other);
        ed.finish(res)
    }

    /// `self ∪ other`; see [`union_in_place`](Self::union_in_place).
    pub fn union(&self, other: &PPTreeSubSet) -> Result<PPTreeSubSet> {
        let mut u = self.clone();
        u.union_in_place(other)?;
        Ok(u)
    }

    /// `self = self \ other = PP(leaves(self) \ leaves(other))`: remove
    /// every leaf of `other` that is a leaf of `self`, then every ancestor
    /// left without children.
    ///
    /// A leaf of `other` that is an inner node of `self` stays (it is still
    /// on the path of some remaining leaf). A leaf of `other` present in
    /// `self` under another parent is [`Error::TreeCorrupt`]; the set is then
    /// unchanged.
    pub fn difference_in_place(&mut self, other: &PPTreeSubSet) -> Result<()> {
        let mut ed = Edit::new(&mut self.nodes);
        let res = ed.x_difference(other);
        ed.finish(res)
    }

    /// `self \ other`; see [`difference_in_place`](Self::difference_in_place).
    pub fn difference(&self, other: &PPTreeSubSet) -> Result<PPTreeSubSet> {
        let mut d = self.clone();
        d.difference_in_place(other)?;
        Ok(d)
    }

    /// `PP(leaves(self) ∩ leaves(other))`: the paths of the leaves common to
    /// both.
    ///
    /// A common leaf must have the same path in both sets
    /// ([`Error::TreeCorrupt`] at the first node whose parents differ).
    /// Note this is not the intersection of the node sets; see the module
    /// docs.
    pub fn intersection(&self, other: &PPTreeSubSet) -> Result<PPTreeSubSet> {
        let (small, big) = if self.len() <= other.len() {
            (self, other)
        } else {
            (other, self)
        };
        let mut r = PPTreeSubSet::new();
        for leaf in small.leaves() {
            if !big.get(leaf).is_some_and(|n| n.is_leaf()) {
                continue;
            }
            // Walk up both sets together until a root, or a node already in
            // r (whose path is already checked).
            let mut path = Vec::new();
            let mut cur = leaf;
            while cur != Oid::INVALID && !r.contains(cur) {
                let (a, b) = match (self.get(cur), other.get(cur)) {
                    (Some(a), Some(b)) => (a, b),
                    // Both sets are parent-closed and share cur's child.
                    _ => unreachable!("{cur} missing from a parent-closed set"),
                };
                if a.parent != b.parent {
                    return Err(Error::TreeCorrupt {
                        oid: cur,
                        parent1: a.parent,
                        parent2: b.parent,
                    });
                }
                path.push(cur);
                cur = a.parent;
            }
            // path is leaf-first and hangs under cur (ø or a member of r).
            let mut parent = cur;
            for &oid in path.iter().rev() {
                r.nodes.insert(oid, PPNode { parent, nchild: 0 });
                if let Some(p) = r.nodes.get_mut(&parent) {
                    p.nchild += 1;
                }
                parent = oid;
            }
        }
        Ok(r)
    }

    /// Apply a change: `self = (self \ δ.del) ∪ δ.add`, with the
    /// `delta_nchild_non_leafs` fixup around it. See [`DeltaPPTreeSubSet`].
    ///
    /// If `δ` does not fit the set (a fixed-up node is missing or has fewer
    /// children than the fixup removes; the result would not be
    /// PP-connected or would have a wrong nchild) the result is
    /// [`Error::DeltaMismatch`]; a node under two parents is
    /// [`Error::TreeCorrupt`]. In both cases the set is unchanged.
    pub fn apply_delta(&mut self, delta: &DeltaPPTreeSubSet) -> Result<()> {
        let mut ed = Edit::new(&mut self.nodes);
        let res = (|| {
            ed.x_fixup(-1, &delta.delta_nchild_non_leafs, Strict::Yes)?;
            ed.x_difference(&delta.del)?;
            ed.x_union(&delta.add)?;
            ed.x_fixup(1, &delta.delta_nchild_non_leafs, Strict::Yes)
        })();
        ed.finish(res)
    }

    /// Check every invariant from scratch (module docs): parents present,
    /// nchild exact, no `ø` member, no cycle. Meant for tests; `O(n)`.
    pub fn verify(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Inconsistent { what });
        if self.nodes.contains_key(&Oid::INVALID) {
            return bad("ø is a member".into());
        }
        let mut nchild: HashMap<Oid, u32> = HashMap::with_capacity(self.nodes.len());
        for (&oid, n) in &self.nodes {
            if n.parent == Oid::INVALID {
                continue;
            }
            if !self.nodes.contains_key(&n.parent) {
                return bad(format!(
                    "{}: parent {} is not a member (set: {self:?})",
                    Short(oid),
                    Short(n.parent)
                ));
            }
            *nchild.entry(n.parent).or_default() += 1;
        }
        for (&oid, n) in &self.nodes {
            let want = nchild.get(&oid).copied().unwrap_or(0);
            if n.nchild != want {
                return bad(format!(
                    "{}: nchild = {}, but {want} members have it as parent (set: {self:?})",
                    Short(oid),
                    n.nchild
                ));
            }
        }
        // No cycles: every member reaches a root. Walk up from each member,
        // memoizing the ones known good.
        let mut good: HashMap<Oid, ()> = HashMap::with_capacity(self.nodes.len());
        for &start in self.nodes.keys() {
            let mut walked = Vec::new();
            let mut cur = start;
            while cur != Oid::INVALID && !good.contains_key(&cur) {
                if walked.len() > self.nodes.len() {
                    return bad(format!("{}: parent links form a cycle", Short(start)));
                }
                walked.push(cur);
                cur = self.nodes[&cur].parent;
            }
            good.extend(walked.into_iter().map(|o| (o, ())));
        }
        Ok(())
    }

    /// The members sorted by oid, for printing.
    fn sorted(&self) -> BTreeMap<Oid, PPNode> {
        self.nodes.iter().map(|(&o, &n)| (o, n)).collect()
    }
}

/// Hex without padding, `ø` for [`Oid::INVALID`].
struct Short(Oid);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Oid::INVALID {
            f.write_str("ø")
        } else {
            write!(f, "{:x}", self.0 .0)
        }
    }
}

impl fmt::Display for PPTreeSubSet {
    /// `{oid:parent …}`, sorted; see the module docs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (oid, n)) in self.sorted().into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}:{}", Short(oid), Short(n.parent))?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for PPTreeSubSet {
    /// `{oid:parent/nchild …}`, sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (oid, n)) in self.sorted().into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}:{}/{}", Short(oid), Short(n.parent), n.nchild)?;
        }
        f.write_str("}")
    }
}

impl FromStr for PPTreeSubSet {
    type Err = Error;

    /// Parse the [`Display`](fmt::Display) form, e.g. `{1:ø 2:1 3:1 4:2}`;
    /// nchild is computed. The result must satisfy the invariants.
    fn from_str(text: &str) -> Result<PPTreeSubSet> {
        let bad = |why: &'static str| Error::Parse {
            text: text.to_owned(),
            why,
        };
        let body = text
            .trim()
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| bad("want {…}"))?;
        let hex = |s: &str| -> Result<Oid> {
            u64::from_str_radix(s, 16)
                .ok()
                .filter(|&v| v != u64::MAX)
                .map(Oid)
                .ok_or_else(|| bad("want a hex oid"))
        };
        let mut nodes: HashMap<Oid, PPNode> = HashMap::new();
        for tok in body.split_whitespace() {
            let (o, p) = tok.split_once(':').ok_or_else(|| bad("want oid:parent"))?;
            let oid = hex(o)?;
            let parent = if p == "ø" { Oid::INVALID } else { hex(p)? };
            if nodes.insert(oid, PPNode { parent, nchild: 0 }).is_some() {
                return Err(bad("oid listed twice"));
            }
        }
        let parents: Vec<Oid> = nodes.values().map(|n| n.parent).collect();
        for p in parents {
            if p != Oid::INVALID {
                nodes
                    .get_mut(&p)
                    .ok_or_else(|| bad("a parent is not listed"))?
                    .nchild += 1;
            }
        }
        let s = PPTreeSubSet { nodes };
        s.verify()
            .map_err(|_| bad("not a parent-closed acyclic set"))?;
        Ok(s)
    }
}

// ---- journaled editing ----

/// Whether [`Edit::x_fixup`] requires every node it adjusts to be present
/// with enough children (the ΔnchildNonLeafs fixup), or skips nodes already
/// collected (the decrements `x_difference` schedules: a parent may be gone
/// while the set is between the steps of `apply_delta`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strict {
    Yes,
    No,
}

/// A set being changed, with an undo journal: the original value of every
/// touched oid (`None` = was not a member).
///
/// The mutators work through it; [`finish`](Edit::finish) checks the
/// invariants over what was touched and either keeps the change or rolls it
/// back. In between (inside `apply_delta`) the set may be transiently not
/// PP-connected.
struct Edit<'a> {
    nodes: &'a mut HashMap<Oid, PPNode>,
    undo: HashMap<Oid, Option<PPNode>>,
}

impl<'a> Edit<'a> {
    fn new(nodes: &'a mut HashMap<Oid, PPNode>) -> Edit<'a> {
        Edit {
            nodes,
            undo: HashMap::new(),
        }
    }

    fn get(&self, oid: Oid) -> Option<PPNode> {
        self.nodes.get(&oid).copied()
    }

    fn touch(&mut self, oid: Oid) {
        if let Entry::Vacant(e) = self.undo.entry(oid) {
            e.insert(self.nodes.get(&oid).copied());
        }
    }

    fn put(&mut self, oid: Oid, n: PPNode) {
        self.touch(oid);
        self.nodes.insert(oid, n);
    }

    fn remove(&mut self, oid: Oid) {
        self.touch(oid);
        self.nodes.remove(&oid);
    }

    /// Keep the change if `res` is Ok and the touched part is consistent;
    /// otherwise undo it and return the error.
    fn finish(self, res: Result<()>) -> Result<()> {
        match res.and_then(|()| self.check()) {
            Ok(()) => Ok(()),
            Err(e) => {
                for (oid, old) in self.undo {
                    match old {
                        Some(n) => self.nodes.insert(oid, n),
                        None => self.nodes.remove(&oid),
                    };
                }
                Err(e)
            }
        }
    }

    /// Check the invariants after the change, looking only at what changed
    /// (the set was consistent before).
    ///
    /// Membership and parent links changed only for journaled oids, so the
    /// number of children of a node `p` changed by
    /// `Δ(p) = #{journaled m now under p} - #{journaled m before under p}`,
    /// and must now be `nchild₀(p) + Δ(p)` (its nchild before, 0 if it was
    /// not a member). Checking that for every journaled `p` and every `p`
    /// with `Δ(p) ≠ 0` covers everything: a parent removed while members
    /// remain under it (`p ∉ S` with `nchild₀(p) + Δ(p) > 0`), a node linked
    /// under a non-member, and every nchild that may have moved.
    fn check(&self) -> Result<()> {
        let mut delta: HashMap<Oid, i64> = HashMap::new();
        for (oid, old) in &self.undo {
            if let Some(o) = old {
                if o.parent != Oid::INVALID {
                    *delta.entry(o.parent).or_default() -= 1;
                }
            }
            if let Some(n) = self.nodes.get(oid) {
                if n.parent != Oid::INVALID {
                    *delta.entry(n.parent).or_default() += 1;
                }
            }
        }
        let journaled = self.undo.keys().filter(|o| !delta.contains_key(o));
        for &oid in delta.keys().chain(journaled) {
            let was = match self.undo.get(&oid) {
                Some(old) => old.map_or(0, |n| n.nchild),
                None => self.nodes.get(&oid).map_or(0, |n| n.nchild),
            };
            let want = i64::from(was) + delta.get(&oid).copied().unwrap_or(0);
            match self.nodes.get(&oid) {
                Some(n) if i64::from(n.nchild) == want => {}
                Some(_) => {
                    return Err(Error::DeltaMismatch {
                        oid,
                        why: "the result's nchild would not match its children",
                    })
                }
                None if want == 0 => {}
                None => {
                    return Err(Error::DeltaMismatch {
                        oid,
                        why: "the node would be removed while members remain under it",
                    })
                }
            }
        }
        Ok(())
    }

    /// Add every node of `b` (step `xUnion`).
    fn x_union(&mut self, b: &PPTreeSubSet) -> Result<()> {
        // parent -> number of children newly added under it
        let mut added: HashMap<Oid, i64> = HashMap::new();
        for (&oid, n2) in &b.nodes {
            match self.get(oid) {
                Some(n) if n.parent == n2.parent => {}
                Some(n) => {
                    return Err(Error::TreeCorrupt {
                        oid,
                        parent1: n.parent,
                        parent2: n2.parent,
                    })
                }
                None => {
                    self.put(
                        oid,
                        PPNode {
                            parent: n2.parent,
                            nchild: 0,
                        },
                    );
                    if n2.parent != Oid::INVALID {
                        *added.entry(n2.parent).or_default() += 1;
                    }
                }
            }
        }
        // b is parent-closed, so every parent in `added` is present now.
        self.x_fixup(1, &added, Strict::Yes)
    }

    /// Remove every leaf of `b` that is a leaf here, then the ancestors left
    /// without children (step `xDifference`).
    fn x_difference(&mut self, b: &PPTreeSubSet) -> Result<()> {
        // parent -> number of children removed from under it
        let mut removed: HashMap<Oid, i64> = HashMap::new();
        for (&oid, n2) in &b.nodes {
            if !n2.is_leaf() {
                continue;
            }
            let Some(n) = self.get(oid) else { continue };
            if n.parent != n2.parent {
                return Err(Error::TreeCorrupt {
                    oid,
                    parent1: n.parent,
                    parent2: n2.parent,
                });
            }
            if !n.is_leaf() {
                continue; // still on the path of our other leaves
            }
            self.remove(oid);
            if n.parent != Oid::INVALID {
                *removed.entry(n.parent).or_default() += 1;
            }
        }
        self.x_fixup(-1, &removed, Strict::No)
    }

    /// `nchild += sign·δ` for each `(oid, δ)`, then collect every node whose
    /// nchild became 0, and upward every ancestor left without children.
    ///
    /// Nodes reaching 0 are collected in oid order, so the outcome does not
    /// depend on hash order. With [`Strict::Yes`] a missing node or an
    /// nchild going below 0 is [`Error::DeltaMismatch`].
    fn x_fixup(&mut self, sign: i64, d: &HashMap<Oid, i64>, strict: Strict) -> Result<()> {
        let mut zero = Vec::new();
        for (&oid, &dn) in d {
            if dn == 0 {
                continue;
            }
            let Some(mut n) = self.get(oid) else {
                if strict == Strict::Yes {
                    return Err(Error::DeltaMismatch {
                        oid,
                        why: "node to fix up nchild of is not in the set",
                    });
                }
                continue; // collected already
            };
            let v = i64::from(n.nchild) + sign * dn;
            let v = match u32::try_from(v) {
                Ok(v) => v,
                Err(_) if strict == Strict::No && v < 0 => 0,
                Err(_) => {
                    return Err(Error::DeltaMismatch {
                        oid,
                        why: "nchild fixup out of range (more children removed than present)",
                    })
                }
            };
            n.nchild = v;
            self.put(oid, n);
            if v == 0 {
                zero.push(oid);
            }
        }
        zero.sort_unstable();
        for oid in zero {
            self.gc_up(oid);
        }
        Ok(())
    }

    /// Remove `oid` if it is still a childless member, then walk up
    /// removing every ancestor left without children.
    ///
    /// Between the steps of `apply_delta` a node fixed up to 0 may still
    /// have members under it, and walking up may meet such a node: it goes
    /// too (its nchild is treated as already 0), and a parent already gone
    /// ends the walk. Whether that is right is for `Edit::check` to say.
    fn gc_up(&mut self, oid: Oid) {
        match self.get(oid) {
            Some(n) if n.is_leaf() => {}
            _ => return,
        }
        let mut cur = oid;
        while let Some(n) = self.get(cur) {
            self.remove(cur);
            if n.parent == Oid::INVALID {
                break;
            }
            let Some(mut pn) = self.get(n.parent) else {
                break;
            };
            pn.nchild = pn.nchild.saturating_sub(1);
            if pn.nchild > 0 {
                self.put(n.parent, pn);
                break;
            }
            cur = n.parent;
        }
    }
}

// ---- ΔPPTreeSubSet ----

/// ΔPPTreeSubSet: a change to a [`PPTreeSubSet`], applied with
/// [`PPTreeSubSet::apply_delta`]:
///
/// ```text
/// S.xfixup(-1, ΔnchildNonLeafs)
/// S.xDifference(Del)
/// S.xUnion(Add)
/// S.xfixup(+1, ΔnchildNonLeafs)
/// ```
///
/// which without the fixups is `S = (S \ Del) ∪ Add`.
///
/// # Why the fixup
///
/// `del` and `add` are built from paths, and a path may *end at a node that
/// is not a leaf* of the tracked set: when the path to a node changes but the
/// node itself (and its subtree) does not. Example (tracked: everything
/// shown; `*` = changed):
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
///
/// `c` and `41` change, `42` goes away, `46` is new; `43` moves from under
/// `42` to under `41`, its subtree `{44}` unchanged. treediff reports
///
/// ```text
/// del = c-42-43 ∪ c-41-22        add = c-41-43 ∪ c-41-46-22
/// delta_nchild_non_leafs = {43: +1}
/// ```
///
/// `43` is a leaf of `del` and of `add`, but not of the tracked set: it has
/// the tracked child `44`. On its own, `S \ del` would keep `43` (a leaf of
/// `del` that is an inner node of `S` stays; upstream would drop it and leave
/// `44` dangling), and `∪ add` would then find `43` under two parents
/// (`42` and `41`). The fixup first takes `43`'s `+1` tracked children off
/// its count: `43` now looks like a leaf and is collected with the path
/// above it that nothing else needs (`42`); `44` is left hanging for a
/// moment. `∪ add` links `43` under `41`, and the final `+1` gives `43` its
/// child `44` back:
///
/// ```text
/// {c:ø 41:c 42:c 22:41 43:42 44:43}  →  {c:ø 41:c 46:41 22:46 43:41 44:43}
/// ```
///
/// So `delta_nchild_non_leafs[n]` must be the number of children of `n`
/// that stay members under `n` all through the apply: a child that `del`
/// removes, or that is collected because all of its own children go, is
/// not counted (`add` brings it back and counts it itself). treediff
/// reports such an `n` only when nothing under it changes, and takes
/// `nchild(n)` from the tracked set. The same number serves the reverse
/// change, hence [`reverse`](Self::reverse) keeps it. Only the complete
/// sequence gives a consistent set; `apply_delta` checks the result and
/// refuses a δ that does not fit ([`Error::DeltaMismatch`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaPPTreeSubSet {
    /// Paths removed.
    pub del: PPTreeSubSet,
    /// Paths added.
    pub add: PPTreeSubSet,
    /// oid -> number of tracked children of a node at which a `del`/`add`
    /// path ends although it is not a leaf of the tracked set (see above).
    /// Zero entries are meaningless and not kept by
    /// [`update`](Self::update).
    pub delta_nchild_non_leafs: HashMap<Oid, i64>,
}

impl DeltaPPTreeSubSet {
    /// The empty change.
    pub fn new() -> DeltaPPTreeSubSet {
        DeltaPPTreeSubSet::default()
    }

    /// Whether this changes nothing.
    pub fn is_empty(&self) -> bool {
        self.del.is_empty()
            && self.add.is_empty()
            && self.delta_nchild_non_leafs.values().all(|&v| v == 0)
    }

    /// Combine with a following change: `del ∪= δ2.del`, `add ∪= δ2.add`,
    /// `delta_nchild_non_leafs += δ2.delta_nchild_non_leafs` (per oid).
    ///
    /// Like upstream, this is a merge of two changes computed against the
    /// same set (e.g. for disjoint key ranges of one tree), not a general
    /// composition `δ1 ; δ2`. A node under two parents in `del` or `add` is
    /// [`Error::TreeCorrupt`]; `self` is then unchanged.
    pub fn update(&mut self, d2: &DeltaPPTreeSubSet) -> Result<()> {
        let mut del = self.del.clone();
        del.union_in_place(&d2.del)?;
        self.add.union_in_place(&d2.add)?;
        self.del = del;
        for (&oid, &v) in &d2.delta_nchild_non_leafs {
            let e = self.delta_nchild_non_leafs.entry(oid).or_default();
            *e += v;
            if *e == 0 {
                self.delta_nchild_non_leafs.remove(&oid);
            }
        }
        Ok(())
    }

    /// Turn `δ = diff(A → B)` into `diff(B → A)`: swap `del` and `add`;
    /// `delta_nchild_non_leafs` stays (the nodes it names keep their
    /// children on both sides).
    pub fn reverse(&mut self) {
        std::mem::swap(&mut self.del, &mut self.add);
    }
}

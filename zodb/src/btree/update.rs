//! Changing an existing tree the way the BTrees package changes it, so that
//! a commit stores what a real ZODB commit would store and no more.
//!
//! [`build`](super::build) makes a whole new tree; a writer that rebuilt
//! the blktab on every commit stored every node every time. Here the tree
//! as of `at` is loaded into memory, the changes are applied with the
//! rules of `BTrees/BTreeTemplate.c` and `BucketTemplate.c`, and only the
//! nodes whose pickled state differs from the loaded one (or that are new)
//! are returned:
//!
//! - an item set or deleted changes its bucket (a tree that never split
//!   holds its bucket inline: then the root changes);
//! - a bucket with more than `max_bucket` items splits in two at the
//!   middle: the left half keeps the oid, the right half is a new bucket,
//!   and the parent gains a child and the separator (the right half's
//!   first key);
//! - a tree node with more than `max_tree` children splits the same way,
//!   the middle separator moving up; the root never moves: its children
//!   go to two new nodes under it (`BTree_split_root`), so the tree's oid,
//!   which its owner references, stays;
//! - a bucket (or tree node) left empty is removed from its parent, with
//!   one separator; a tree left without items becomes empty (state
//!   `None`). Non-empty buckets are never merged, and separators stay as
//!   they are when the key equal to them goes: BTrees does neither, and
//!   both are valid trees for `BTrees.check`;
//! - bucket `next` pointers and tree `firstbucket` references follow from
//!   the new layout: the bucket before a removed one, and the ancestors
//!   whose first bucket went away, change through them, as in BTrees.
//!
//! Whether a node changed is decided by comparing its new state with the
//! state loaded, not by flags set along the way: a missed flag cannot
//! lose a change, and an operation that leaves a node as it was stores
//! nothing. The whole tree is loaded (the bucket before a removed one can
//! be anywhere); that costs reads, never writes.

use super::{
    bucket_state, decode_bucket, decode_tree, inline_tree_state, key_of, tree_state, Children,
    Family, NewNode, Shape, TreeState, MAX_DEPTH,
};
use crate::error::{Error, Result};
use crate::pickle::Value;
use crate::record::{self, Ref};
use crate::storage::Storage;
use crate::types::{Oid, Tid};

/// Apply `changes` (in order: set `key` to the value, or delete it with
/// `None`) to the tree `root` of `family` as it is at `at`. Returns the
/// objects to store: the nodes whose state changed and the new ones (new
/// oids from `alloc`); empty if nothing changed. The root keeps its oid.
pub fn update(
    stor: &dyn Storage,
    family: Family,
    root: Oid,
    at: Tid,
    changes: &[(i64, Option<Value>)],
    shape: Shape,
    alloc: &mut dyn FnMut() -> Oid,
) -> Result<Vec<NewNode>> {
    assert!(
        shape.max_bucket >= 1 && shape.max_tree >= 2,
        "degenerate tree shape"
    );
    for (k, _) in changes {
        key_of(root, family, &Value::Int(*k))?;
    }
    let mut t = Loaded::load(stor, family, root, at)?;
    for (k, v) in changes {
        t.set(*k, v.as_ref(), shape, alloc);
    }
    Ok(t.changed(family))
}

/// A bucket in memory.
struct Bucket {
    /// `None` for the bucket a root holds inline (it has no oid of its own).
    oid: Option<Oid>,
    keys: Vec<i64>,
    values: Vec<Value>,
    /// The state as loaded; `None` for a bucket this update made.
    was: Option<Value>,
}

/// A tree node with persistent children, in memory.
struct Tree {
    oid: Oid,
    kids: Kids,
    /// `keys[i]` separates `kids[i]` and `kids[i+1]`.
    keys: Vec<i64>,
    /// The state as loaded; `None` for a node this update made.
    was: Option<Value>,
}

/// A node's children: all buckets or all trees (every bucket is at the
/// same depth, and splits and removals keep it so).
enum Kids {
    Buckets(Vec<Bucket>),
    Trees(Vec<Tree>),
}

/// What the root holds.
enum Root {
    Empty,
    Inline(Bucket),
    Tree(Tree),
}

/// The whole tree as loaded, being changed.
struct Loaded {
    oid: Oid,
    /// The root's state as loaded (it exists: its owner references it).
    was: Value,
    root: Root,
}

// ---- loading ----

struct Loader<'a> {
    stor: &'a dyn Storage,
    family: Family,
    at: Tid,
    /// Nodes seen: a node reached twice is not a tree we can change (a
    /// shared node would be stored once per parent, a cycle never ends).
    seen: hashbrown::HashSet<Oid>,
}

enum Node {
    Bucket(Bucket),
    Tree(Tree),
}

impl Loaded {
    fn load(stor: &dyn Storage, family: Family, oid: Oid, at: Tid) -> Result<Loaded> {
        let mut l = Loader {
            stor,
            family,
            at,
            seen: hashbrown::HashSet::new(),
        };
        let obj = l.object(oid, 0, true)?;
        let was = obj.state.clone();
        let root = match decode_tree(oid, family, &obj.state)? {
            TreeState::Empty => Root::Empty,
            TreeState::Inline(b) => Root::Inline(Bucket {
                oid: None,
                keys: b.keys,
                values: b.values,
                was: None,
            }),
            TreeState::Children(c) => Root::Tree(l.tree(oid, obj.state, c, 0)?),
        };
        Ok(Loaded { oid, was, root })
    }
}

impl Loader<'_> {
    /// The record of `oid`, checked to be a node of our family (a tree if
    /// `tree`, else either).
    fn object(&mut self, oid: Oid, depth: usize, tree: bool) -> Result<record::Object> {
        if depth >= MAX_DEPTH {
            return Err(Error::bad_state(oid, "btree: too deep (cycle?)"));
        }
        if !self.seen.insert(oid) {
            return Err(Error::bad_state(
                oid,
                "btree: node reached twice (cycle or shared node)",
            ));
        }
        let obj = record::load(self.stor, oid, self.at)?;
        let f = self.family;
        if obj.class != f.tree_class() && (tree || obj.class != f.bucket_class()) {
            return Err(Error::WrongClass {
                oid,
                expected: if tree { f.tree_class() } else { "BTree node" },
                class: obj.class,
            });
        }
        Ok(obj)
    }

    fn node(&mut self, oid: Oid, depth: usize) -> Result<Node> {
        let obj = self.object(oid, depth, false)?;
        if obj.class == self.family.bucket_class() {
            let b = decode_bucket(oid, self.family, &obj.state)?;
            return Ok(Node::Bucket(Bucket {
                oid: Some(oid),
                keys: b.keys,
                values: b.values,
                was: Some(obj.state),
            }));
        }
        match decode_tree(oid, self.family, &obj.state)? {
            TreeState::Children(c) => Ok(Node::Tree(self.tree(oid, obj.state, c, depth)?)),
            // BTrees inlines (or empties) only the root
            _ => Err(Error::bad_state(
                oid,
                "btree: an interior node that is empty or holds an inline bucket",
            )),
        }
    }

    /// Tree node `oid` whose state `was` decoded to `c`, with its subtree.
    fn tree(&mut self, oid: Oid, was: Value, c: Children, depth: usize) -> Result<Tree> {
        let mut buckets = Vec::new();
        let mut trees = Vec::new();
        for c in &c.children {
            match self.node(c.oid, depth + 1)? {
                Node::Bucket(b) => buckets.push(b),
                Node::Tree(t) => trees.push(t),
            }
        }
        let kids = match (buckets.is_empty(), trees.is_empty()) {
            (false, true) => Kids::Buckets(buckets),
            (true, false) => Kids::Trees(trees),
            _ => {
                return Err(Error::bad_state(
                    oid,
                    "btree: children mix buckets and trees",
                ))
            }
        };
        Ok(Tree {
            oid,
            kids,
            keys: c.keys,
            was: Some(was),
        })
    }
}

// ---- changing ----

impl Bucket {
    /// Set `key` to `v` (delete it if `None`); whether the items changed.
    fn set(&mut self, key: i64, v: Option<&Value>) -> bool {
        match (self.keys.binary_search(&key), v) {
            (Ok(i), Some(v)) => {
                if self.values[i] == *v {
                    return false;
                }
                self.values[i] = v.clone();
            }
            (Ok(i), None) => {
                self.keys.remove(i);
                self.values.remove(i);
            }
            (Err(i), Some(v)) => {
                self.keys.insert(i, key);
                self.values.insert(i, v.clone());
            }
            (Err(_), None) => return false,
        }
        true
    }

    /// Move the upper half of the items to a new bucket (`bucket_split`);
    /// that bucket's first key separates the two.
    fn split(&mut self, alloc: &mut dyn FnMut() -> Oid) -> Bucket {
        let m = self.keys.len() / 2;
        Bucket {
            oid: Some(alloc()),
            keys: self.keys.split_off(m),
            values: self.values.split_off(m),
            was: None,
        }
    }
}

impl Tree {
    fn len(&self) -> usize {
        match &self.kids {
            Kids::Buckets(b) => b.len(),
            Kids::Trees(t) => t.len(),
        }
    }

    /// Set or delete `key` in the subtree, splitting what grew too big and
    /// removing what became empty among the children.
    fn set(&mut self, key: i64, v: Option<&Value>, shape: Shape, alloc: &mut dyn FnMut() -> Oid) {
        let i = self.keys.partition_point(|&k| k <= key);
        match &mut self.kids {
            Kids::Buckets(bs) => {
                if !bs[i].set(key, v) {
                    return;
                }
                if bs[i].keys.len() > shape.max_bucket {
                    let right = bs[i].split(alloc);
                    self.keys.insert(i, right.keys[0]);
                    bs.insert(i + 1, right);
                } else if bs[i].keys.is_empty() {
                    bs.remove(i);
                    remove_separator(&mut self.keys, i);
                }
            }
            Kids::Trees(ts) => {
                ts[i].set(key, v, shape, alloc);
                if ts[i].len() > shape.max_tree {
                    let (sep, right) = ts[i].split(alloc);
                    self.keys.insert(i, sep);
                    ts.insert(i + 1, right);
                } else if ts[i].len() == 0 {
                    ts.remove(i);
                    remove_separator(&mut self.keys, i);
                }
            }
        }
    }

    /// Move the upper half of the children to a new node (`BTree_split`):
    /// returns the separator that moves up, and the new node.
    fn split(&mut self, alloc: &mut dyn FnMut() -> Oid) -> (i64, Tree) {
        let m = self.len() / 2;
        let kids = match &mut self.kids {
            Kids::Buckets(b) => Kids::Buckets(b.split_off(m)),
            Kids::Trees(t) => Kids::Trees(t.split_off(m)),
        };
        // keys[m-1] separated the halves: it goes up; keys[m..] go right
        let mut keys = self.keys.split_off(m - 1);
        let sep = keys.remove(0);
        (
            sep,
            Tree {
                oid: alloc(),
                kids,
                keys,
                was: None,
            },
        )
    }
}

/// Child `i` was removed: drop the separator on its left (for the first
/// child, the one on its right, whose child is now first and needs none).
fn remove_separator(keys: &mut Vec<i64>, i: usize) {
    if i > 0 {
        keys.remove(i - 1);
    } else if !keys.is_empty() {
        keys.remove(0);
    }
}

impl Loaded {
    fn set(&mut self, key: i64, v: Option<&Value>, shape: Shape, alloc: &mut dyn FnMut() -> Oid) {
        match &mut self.root {
            Root::Empty => {
                if let Some(v) = v {
                    self.root = Root::Inline(Bucket {
                        oid: None,
                        keys: vec![key],
                        values: vec![v.clone()],
                        was: None,
                    });
                }
            }
            Root::Inline(b) => {
                if !b.set(key, v) {
                    return;
                }
                if b.keys.is_empty() {
                    self.root = Root::Empty;
                } else if b.keys.len() > shape.max_bucket {
                    // the inline bucket becomes a persistent one, split
                    let mut left = Bucket {
                        oid: Some(alloc()),
                        keys: std::mem::take(&mut b.keys),
                        values: std::mem::take(&mut b.values),
                        was: None,
                    };
                    let right = left.split(alloc);
                    self.root = Root::Tree(Tree {
                        oid: self.oid,
                        keys: vec![right.keys[0]],
                        kids: Kids::Buckets(vec![left, right]),
                        was: None,
                    });
                }
            }
            Root::Tree(t) => {
                t.set(key, v, shape, alloc);
                if t.len() == 0 {
                    self.root = Root::Empty;
                } else if t.len() > shape.max_tree {
                    // BTree_split_root: the root's children move to a new
                    // node, which splits; the root keeps its oid above both
                    let mut left = Tree {
                        oid: alloc(),
                        kids: std::mem::replace(&mut t.kids, Kids::Trees(Vec::new())),
                        keys: std::mem::take(&mut t.keys),
                        was: None,
                    };
                    let (sep, right) = left.split(alloc);
                    t.kids = Kids::Trees(vec![left, right]);
                    t.keys = vec![sep];
                }
            }
        }
    }

    // ---- what to store ----

    /// The nodes whose state differs from the loaded one, root first.
    fn changed(&self, family: Family) -> Vec<NewNode> {
        let mut out = Vec::new();
        let state = match &self.root {
            Root::Empty => Value::None,
            Root::Inline(b) => inline_tree_state(&b.keys, &b.values),
            Root::Tree(t) => {
                let mut chain = Vec::new();
                chain_of(t, &mut chain);
                let mut e = Emit {
                    family,
                    chain: &chain,
                    pos: 0,
                    out: &mut out,
                };
                e.tree_state(t)
            }
        };
        if state != self.was {
            out.insert(
                0,
                NewNode {
                    oid: self.oid,
                    class: family.tree_class(),
                    state,
                },
            );
        }
        out
    }
}

/// The buckets of `t`, left to right: the `next` chain.
fn chain_of(t: &Tree, out: &mut Vec<Oid>) {
    match &t.kids {
        Kids::Buckets(bs) => out.extend(bs.iter().map(|b| b.oid.expect("persistent bucket"))),
        Kids::Trees(ts) => ts.iter().for_each(|t| chain_of(t, out)),
    }
}

struct Emit<'a> {
    family: Family,
    /// Every bucket, left to right.
    chain: &'a [Oid],
    /// Buckets emitted so far: the next one is `chain[pos]`.
    pos: usize,
    out: &'a mut Vec<NewNode>,
}

impl Emit<'_> {
    /// The state of `t` (its changed descendants pushed to `out`).
    fn tree_state(&mut self, t: &Tree) -> Value {
        let family = self.family;
        let bucket_ref = move |o: Oid| Ref::new(o, family.bucket_class());
        let first = bucket_ref(self.chain[self.pos]);
        let children: Vec<Ref> = match &t.kids {
            Kids::Buckets(bs) => bs
                .iter()
                .map(|b| {
                    let oid = b.oid.expect("persistent bucket");
                    self.pos += 1;
                    let next = self.chain.get(self.pos).map(|&o| bucket_ref(o));
                    let state = bucket_state(&b.keys, &b.values, next.as_ref());
                    self.push(oid, family.bucket_class(), b.was.as_ref(), state);
                    bucket_ref(oid)
                })
                .collect(),
            Kids::Trees(ts) => ts
                .iter()
                .map(|c| {
                    let state = self.tree_state(c);
                    self.push(c.oid, family.tree_class(), c.was.as_ref(), state);
                    Ref::new(c.oid, family.tree_class())
                })
                .collect(),
        };
        tree_state(&children, &t.keys, &first)
    }

    fn push(&mut self, oid: Oid, class: &'static str, was: Option<&Value>, state: Value) {
        if was != Some(&state) {
            self.out.push(NewNode { oid, class, state });
        }
    }
}

//! The topology of a BTree as text, e.g. `T3/T-T/B1-T5/B-B7,8,9`.
//!
//! Level order: levels are separated by `/`, the nodes of one level by `-`.
//! A node is `T<keys>` (a tree node, keys comma-separated) or a bucket:
//! `B<keys>` (keys only) or `B<k:v,...>` (keys with values; `B:` is an empty
//! bucket with values, `B` an empty one without). Each level lists the
//! children of the previous level's tree nodes, left to right; a tree node
//! with n keys has n+1 children, all trees or all buckets. So
//! `T3/T-T/B1-T5/B-B7,8,9` is `T[3]{ T[]{B[1]}, T[]{T[5]{B[], B[7,8,9]}} }`.
//! The empty tree is `T/B:` (or `T/B` without values).
//!
//! Keys are non-negative decimal integers (a `-` would be ambiguous with the
//! node separator). Values are short names (letters in the engine's tests)
//! standing for ZBlk objects.
//!
//! A stored tree whose root holds one bucket reads as `T/B...` whether the
//! bucket is inlined in the root (the form ZODB writes for a tree that never
//! split) or a separate object.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use zodb::btree::{self, TreeState};
use zodb::record;
use zodb::{Oid, Storage, Tid};

/// One node of a topology.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// A tree node: `children.len() == keys.len() + 1`.
    Tree {
        /// Separator keys, strictly increasing.
        keys: Vec<i64>,
        /// Children, left to right, all trees or all buckets.
        children: Vec<Node>,
    },
    /// A bucket.
    Bucket {
        /// Keys, strictly increasing.
        keys: Vec<i64>,
        /// Values of the keys, or `None` for a keys-only bucket.
        values: Option<Vec<String>>,
    },
}

/// A whole tree's topology; the root is a tree node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topology {
    /// The root.
    pub root: Node,
}

/// A topology text that does not parse, or a shape that is not a valid BTree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topology {text:?}: {what}")]
pub struct TopologyError {
    text: String,
    what: String,
}

impl Node {
    fn is_tree(&self) -> bool {
        matches!(self, Node::Tree { .. })
    }
}

impl Topology {
    /// The empty tree `T/B:`.
    pub fn empty() -> Topology {
        Topology {
            root: Node::Tree {
                keys: vec![],
                children: vec![Node::Bucket {
                    keys: vec![],
                    values: Some(vec![]),
                }],
            },
        }
    }

    /// The items (key -> value) of a topology with values, in key order.
    /// Keys-only buckets contribute nothing.
    pub fn items(&self) -> BTreeMap<i64, String> {
        fn walk(n: &Node, out: &mut BTreeMap<i64, String>) {
            match n {
                Node::Tree { children, .. } => children.iter().for_each(|c| walk(c, out)),
                Node::Bucket {
                    keys,
                    values: Some(v),
                } => out.extend(keys.iter().copied().zip(v.iter().cloned())),
                Node::Bucket { values: None, .. } => {}
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &mut out);
        out
    }

    /// All keys, in order.
    pub fn keys(&self) -> Vec<i64> {
        fn walk(n: &Node, out: &mut Vec<i64>) {
            match n {
                Node::Tree { children, .. } => children.iter().for_each(|c| walk(c, out)),
                Node::Bucket { keys, .. } => out.extend(keys),
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// The same shape with every bucket's keys given values from `kv`
    /// (a key missing from `kv` is an error).
    pub fn with_values(&self, kv: &BTreeMap<i64, String>) -> Result<Topology, TopologyError> {
        fn walk(n: &Node, kv: &BTreeMap<i64, String>) -> Result<Node, i64> {
            Ok(match n {
                Node::Tree { keys, children } => Node::Tree {
                    keys: keys.clone(),
                    children: children
                        .iter()
                        .map(|c| walk(c, kv))
                        .collect::<Result<_, _>>()?,
                },
                Node::Bucket { keys, .. } => Node::Bucket {
                    keys: keys.clone(),
                    values: Some(
                        keys.iter()
                            .map(|k| kv.get(k).cloned().ok_or(*k))
                            .collect::<Result<_, _>>()?,
                    ),
                },
            })
        }
        walk(&self.root, kv)
            .map(|root| Topology { root })
            .map_err(|k| TopologyError {
                text: self.to_string(),
                what: format!("no value for key {k}"),
            })
    }

    /// Check the BTree shape rules: keys strictly increasing in every
    /// node, children of one node all of one kind, and every key under
    /// child i of a tree with keys k inside `[k[i-1], k[i])`.
    pub fn verify(&self) -> Result<(), TopologyError> {
        fn walk(n: &Node, lo: i64, hi: Option<i64>) -> Result<(), String> {
            let inside = |k: i64| k >= lo && hi.is_none_or(|h| k < h);
            match n {
                Node::Bucket { keys, values } => {
                    if keys.windows(2).any(|w| w[0] >= w[1]) {
                        return Err(format!("bucket keys {keys:?} not increasing"));
                    }
                    if let Some(k) = keys.iter().find(|k| !inside(**k)) {
                        return Err(format!("bucket key {k} outside [{lo}, {hi:?})"));
                    }
                    if values.as_ref().is_some_and(|v| v.len() != keys.len()) {
                        return Err("bucket values do not match keys".into());
                    }
                    Ok(())
                }
                Node::Tree { keys, children } => {
                    if children.len() != keys.len() + 1 {
                        return Err(format!(
                            "tree with keys {keys:?} has {} children",
                            children.len()
                        ));
                    }
                    if keys.windows(2).any(|w| w[0] >= w[1]) {
                        return Err(format!("tree keys {keys:?} not increasing"));
                    }
                    if let Some(k) = keys.iter().find(|k| !inside(**k)) {
                        return Err(format!("tree key {k} outside [{lo}, {hi:?})"));
                    }
                    if children
                        .iter()
                        .any(|c| c.is_tree() != children[0].is_tree())
                    {
                        return Err("children of one tree are of mixed kinds".into());
                    }
                    for (i, c) in children.iter().enumerate() {
                        let clo = if i == 0 { lo } else { keys[i - 1] };
                        let chi = keys.get(i).copied().or(hi);
                        walk(c, clo, chi)?;
                    }
                    Ok(())
                }
            }
        }
        if !self.root.is_tree() {
            return Err(TopologyError {
                text: self.to_string(),
                what: "root is not a tree node".into(),
            });
        }
        walk(&self.root, i64::MIN, None).map_err(|what| TopologyError {
            text: self.to_string(),
            what,
        })
    }

    /// The topology of the tree stored at `root` as of `at`. `names` gives
    /// the value names of value oids (refs); a value not in it shows as its
    /// oid in hex.
    pub fn load(
        stor: &dyn Storage,
        root: Oid,
        at: Tid,
        names: &BTreeMap<Oid, String>,
    ) -> zodb::Result<Topology> {
        let name = |owner: Oid, v: &zodb::pickle::Value| -> zodb::Result<String> {
            let r = record::decode_ref(owner, v)?;
            Ok(names
                .get(&r.oid)
                .cloned()
                .unwrap_or_else(|| r.oid.to_string()))
        };
        let bucket = |b: &btree::Bucket| -> zodb::Result<Node> {
            Ok(Node::Bucket {
                keys: b.keys.clone(),
                values: Some(
                    b.values
                        .iter()
                        .map(|v| name(b.oid, v))
                        .collect::<zodb::Result<_>>()?,
                ),
            })
        };
        fn load_node(
            stor: &dyn Storage,
            oid: Oid,
            at: Tid,
            depth: usize,
            bucket: &dyn Fn(&btree::Bucket) -> zodb::Result<Node>,
        ) -> zodb::Result<Node> {
            if depth > btree::MAX_DEPTH {
                return Err(zodb::Error::bad_state(oid, "tree too deep"));
            }
            match btree::load_node(stor, oid, at)? {
                btree::Node::Bucket { bucket: b, .. } => bucket(&b),
                btree::Node::Tree { state, .. } => Ok(match state {
                    TreeState::Empty => Topology::empty().root,
                    TreeState::Inline(b) => Node::Tree {
                        keys: vec![],
                        children: vec![bucket(&b)?],
                    },
                    TreeState::Children(c) => Node::Tree {
                        keys: c.keys.clone(),
                        children: c
                            .children
                            .iter()
                            .map(|r| load_node(stor, r.oid, at, depth + 1, bucket))
                            .collect::<zodb::Result<_>>()?,
                    },
                }),
            }
        }
        Ok(Topology {
            root: load_node(stor, root, at, 0, &bucket)?,
        })
    }
}

fn fmt_keys(f: &mut fmt::Formatter<'_>, keys: &[i64]) -> fmt::Result {
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{k}")?;
    }
    Ok(())
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut level: Vec<&Node> = vec![&self.root];
        let mut first_level = true;
        while !level.is_empty() {
            if !first_level {
                f.write_str("/")?;
            }
            first_level = false;
            let mut next = Vec::new();
            for (i, n) in level.iter().enumerate() {
                if i > 0 {
                    f.write_str("-")?;
                }
                match n {
                    Node::Tree { keys, children } => {
                        f.write_str("T")?;
                        fmt_keys(f, keys)?;
                        next.extend(children.iter());
                    }
                    Node::Bucket { keys, values: None } => {
                        f.write_str("B")?;
                        fmt_keys(f, keys)?;
                    }
                    Node::Bucket {
                        keys,
                        values: Some(v),
                    } => {
                        f.write_str("B")?;
                        if keys.is_empty() {
                            f.write_str(":")?;
                        }
                        for (i, (k, v)) in keys.iter().zip(v).enumerate() {
                            if i > 0 {
                                f.write_str(",")?;
                            }
                            write!(f, "{k}:{v}")?;
                        }
                    }
                }
            }
            level = next;
        }
        Ok(())
    }
}

/// A parsed node before its children are attached.
enum Flat {
    Tree(Vec<i64>),
    Bucket(Node),
}

fn parse_node(s: &str) -> Result<Flat, String> {
    let bad = || format!("bad node {s:?}");
    let int = |t: &str| t.parse::<i64>().ok().filter(|k| *k >= 0).ok_or_else(bad);
    if let Some(rest) = s.strip_prefix('T') {
        let keys = if rest.is_empty() {
            vec![]
        } else {
            rest.split(',').map(int).collect::<Result<_, _>>()?
        };
        return Ok(Flat::Tree(keys));
    }
    let rest = s.strip_prefix('B').ok_or_else(bad)?;
    if rest.is_empty() {
        return Ok(Flat::Bucket(Node::Bucket {
            keys: vec![],
            values: None,
        }));
    }
    if rest == ":" {
        return Ok(Flat::Bucket(Node::Bucket {
            keys: vec![],
            values: Some(vec![]),
        }));
    }
    let items: Vec<&str> = rest.split(',').collect();
    if rest.contains(':') {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for it in items {
            let (k, v) = it.split_once(':').ok_or_else(bad)?;
            if v.is_empty() || v.contains([':', '/', '-', ',']) {
                return Err(bad());
            }
            keys.push(int(k)?);
            values.push(v.to_owned());
        }
        Ok(Flat::Bucket(Node::Bucket {
            keys,
            values: Some(values),
        }))
    } else {
        let keys = items.into_iter().map(int).collect::<Result<_, _>>()?;
        Ok(Flat::Bucket(Node::Bucket { keys, values: None }))
    }
}

impl FromStr for Topology {
    type Err = TopologyError;

    fn from_str(text: &str) -> Result<Topology, TopologyError> {
        let err = |what: String| TopologyError {
            text: text.to_owned(),
            what,
        };
        let levels: Vec<Vec<Flat>> = text
            .split('/')
            .map(|l| l.split('-').map(parse_node).collect::<Result<Vec<_>, _>>())
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if levels[0].len() != 1 || !matches!(levels[0][0], Flat::Tree(_)) {
            return Err(err("the first level must be one tree node".into()));
        }
        // Build bottom-up: each level's nodes take their children, in order,
        // from the already built level below.
        let mut below: Vec<Node> = Vec::new();
        for (li, level) in levels.into_iter().enumerate().rev() {
            let mut take = below.into_iter();
            let mut built = Vec::with_capacity(level.len());
            for n in level {
                built.push(match n {
                    Flat::Bucket(b) => b,
                    Flat::Tree(keys) => {
                        let children: Vec<Node> = take.by_ref().take(keys.len() + 1).collect();
                        if children.len() != keys.len() + 1 {
                            return Err(err(format!("level {} has too few nodes", li + 1)));
                        }
                        Node::Tree { keys, children }
                    }
                });
            }
            if take.next().is_some() {
                return Err(err(format!("level {} has nodes nobody points to", li + 1)));
            }
            below = built;
        }
        let t = Topology {
            root: below.pop().expect("one root"),
        };
        t.verify().map_err(|e| err(e.what))?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format_roundtrip() {
        for s in [
            "T/B:",
            "T/B",
            "T/B1:a",
            "T3/T-T/B1-T5/B-B7,8,9",
            "T2,4,6/B1:a-B2:b,3:c-B4:d,5:e-B6:f,7:g",
            "T3,5,7/B1:g,2:f-B3:e,4:d-B5:c,6:b-B7:a",
            "T/T/T/B0,1,2",
        ] {
            let t: Topology = s.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.to_string(), s);
        }
        let t: Topology = "T3/T-T/B1-T5/B-B7,8,9".parse().unwrap();
        assert_eq!(t.keys(), vec![1, 7, 8, 9]);
        let Node::Tree { keys, children } = &t.root else {
            panic!()
        };
        assert_eq!(keys, &vec![3]);
        assert_eq!(children.len(), 2);
    }

    #[test]
    fn bad_topologies() {
        for s in [
            "", "B1",       // root must be a tree
            "T3/B1",    // too few children
            "T/B1-B2",  // extra node
            "T3/B1-B2", // key 2 left of separator 3? no: 2 < 3 must be in child 0
            "T3/B4-B5", // 4 must be >= 3? it is in child 0: outside
            "T/B2,1",   // not increasing
            "T3/T-B4",  // mixed kinds
            "T/Bx",     // bad key
            "T/B1:a,2", // mixed forms
            "T/B-1",    // negative: ambiguous
            "X",
        ] {
            assert!(s.parse::<Topology>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn values() {
        let t: Topology = "T2/B1-B2,3".parse().unwrap();
        let kv: BTreeMap<i64, String> = [(1, "a"), (2, "b"), (3, "c")]
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        let tv = t.with_values(&kv).unwrap();
        assert_eq!(tv.to_string(), "T2/B1:a-B2:b,3:c");
        assert_eq!(tv.items(), kv);
        assert!(t.with_values(&BTreeMap::new()).is_err());
    }
}

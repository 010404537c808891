//! Enumerate every tree topology of a key set within bounds.
//!
//! [`all_structs`] lists every tree over sorted keys in which each tree node
//! has at most `maxsplit + 1` children and every path from the root has at
//! most `maxdepth + 1` tree nodes. Separator keys are any integers strictly
//! inside the node's key range, the root's range being
//! `[max(min key - 2, 0), max key + 2)` (the text form has no negative keys), so two structures that group the keys
//! alike but separate them at different points are both listed. Unless
//! `allow_empty` is set, every bucket holds at least one key. With no keys
//! the only structure is the empty tree `T/B`.
//!
//! The result is keys-only (`B1,2`); give it values with
//! [`Topology::with_values`].

use super::topology::{Node, Topology};

/// Bounds and options of an enumeration.
#[derive(Debug, Copy, Clone)]
pub struct Bounds {
    /// Max tree nodes on a root-to-bucket path, minus one.
    pub maxdepth: usize,
    /// Max children of a tree node, minus one.
    pub maxsplit: usize,
    /// Whether buckets may be empty.
    pub allow_empty: bool,
}

/// Every topology of `keys` (sorted, unique, non-negative) within `b`.
pub fn all_structs(keys: &[i64], b: Bounds) -> Vec<Topology> {
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "keys not sorted/unique"
    );
    let (Some(&min), Some(&max)) = (keys.first(), keys.last()) else {
        return vec![Topology {
            root: Node::Tree {
                keys: vec![],
                children: vec![Node::Bucket {
                    keys: vec![],
                    values: None,
                }],
            },
        }];
    };
    // the text form has no negative keys: separators start at 1
    trees(keys, (min - 2).max(0), max + 2, b.maxdepth + 1, b)
        .into_iter()
        .map(|root| Topology { root })
        .collect()
}

/// Tree nodes over `keys`, covering `[lo, hi)`, at most `levels` tree levels deep.
fn trees(keys: &[i64], lo: i64, hi: i64, levels: usize, b: Bounds) -> Vec<Node> {
    let mut out = Vec::new();
    let mut splits = Vec::new();
    for nsplit in 0..=b.maxsplit {
        each_split(lo + 1, hi, nsplit, &mut splits, &mut |seps: &[i64]| {
            let bounds: Vec<(i64, i64)> = (0..=seps.len())
                .map(|i| {
                    (
                        if i == 0 { lo } else { seps[i - 1] },
                        seps.get(i).copied().unwrap_or(hi),
                    )
                })
                .collect();
            let groups: Vec<&[i64]> = bounds
                .iter()
                .map(|&(a, z)| {
                    let s = keys.partition_point(|&k| k < a);
                    let e = keys.partition_point(|&k| k < z);
                    &keys[s..e]
                })
                .collect();
            if !b.allow_empty && groups.iter().any(|g| g.is_empty()) {
                return;
            }
            // children all buckets
            out.push(Node::Tree {
                keys: seps.to_vec(),
                children: groups
                    .iter()
                    .map(|g| Node::Bucket {
                        keys: g.to_vec(),
                        values: None,
                    })
                    .collect(),
            });
            // children all trees: every combination of the children's structures
            if levels > 1 {
                let options: Vec<Vec<Node>> = groups
                    .iter()
                    .zip(&bounds)
                    .map(|(g, &(a, z))| trees(g, a, z, levels - 1, b))
                    .collect();
                if options.iter().any(|o| o.is_empty()) {
                    return;
                }
                let mut pick = vec![0usize; options.len()];
                loop {
                    out.push(Node::Tree {
                        keys: seps.to_vec(),
                        children: pick
                            .iter()
                            .zip(&options)
                            .map(|(&i, o)| o[i].clone())
                            .collect(),
                    });
                    // odometer increment
                    let mut d = 0;
                    while d < pick.len() {
                        pick[d] += 1;
                        if pick[d] < options[d].len() {
                            break;
                        }
                        pick[d] = 0;
                        d += 1;
                    }
                    if d == pick.len() {
                        break;
                    }
                }
            }
        });
    }
    out
}

/// Call `f` with every strictly increasing sequence of `n` integers in `[from, to)`.
fn each_split(from: i64, to: i64, n: usize, cur: &mut Vec<i64>, f: &mut dyn FnMut(&[i64])) {
    if n == 0 {
        f(cur);
        return;
    }
    let mut p = from;
    while p < to {
        cur.push(p);
        each_split(p + 1, to, n - 1, cur, f);
        cur.pop();
        p += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn depth(n: &Node) -> usize {
        match n {
            Node::Tree { children, .. } => 1 + children.iter().map(depth).max().unwrap_or(0),
            Node::Bucket { .. } => 0,
        }
    }

    fn maxfan(n: &Node) -> usize {
        match n {
            Node::Tree { children, .. } => children
                .len()
                .max(children.iter().map(maxfan).max().unwrap_or(0)),
            Node::Bucket { .. } => 0,
        }
    }

    #[test]
    fn small_cases_by_hand() {
        let b = Bounds {
            maxdepth: 0,
            maxsplit: 1,
            allow_empty: false,
        };
        let s: Vec<String> = all_structs(&[1, 2], b)
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(s, vec!["T/B1,2", "T2/B1-B2"]);
        let s: Vec<String> = all_structs(&[], b).iter().map(|t| t.to_string()).collect();
        assert_eq!(s, vec!["T/B"]);
        // {1,3}: separators 2 or 3 both split 1|3
        let s: HashSet<String> = all_structs(&[1, 3], b)
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(
            s,
            ["T/B1,3", "T2/B1-B3", "T3/B1-B3"]
                .iter()
                .map(|x| x.to_string())
                .collect()
        );
        // one more level: a tree child over each side
        let b2 = Bounds {
            maxdepth: 1,
            maxsplit: 0,
            allow_empty: false,
        };
        let s: Vec<String> = all_structs(&[5], b2)
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(s, vec!["T/B5", "T/T/B5"]);
    }

    #[test]
    fn properties() {
        for keys in [vec![1], vec![1, 2, 3], vec![0, 2, 4, 6]] {
            for (maxdepth, maxsplit) in [(0, 2), (1, 1), (2, 1), (1, 2)] {
                for allow_empty in [false, true] {
                    let b = Bounds {
                        maxdepth,
                        maxsplit,
                        allow_empty,
                    };
                    let all = all_structs(&keys, b);
                    let mut seen = HashSet::new();
                    for t in &all {
                        t.verify().unwrap();
                        assert_eq!(t.keys(), keys, "{t}");
                        assert!(depth(&t.root) <= maxdepth + 1, "{t}");
                        assert!(maxfan(&t.root) <= maxsplit + 1, "{t}");
                        assert!(seen.insert(t.to_string()), "duplicate {t}");
                        let reparsed: Topology = t.to_string().parse().unwrap();
                        assert_eq!(&reparsed, t);
                    }
                    if !allow_empty {
                        for t in &all {
                            assert!(
                                !t.to_string().contains("B-") && !t.to_string().ends_with('B'),
                                "{t}"
                            );
                        }
                    }
                }
            }
        }
    }
}

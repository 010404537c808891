//! Commit trees of exactly a given topology into a FileStorage.
//!
//! A [`TreeGen`] owns a database with, in its root mapping:
//! - `treegen/tree`: an `LOBTree` whose shape and content [`TreeGen::commit`]
//!   sets to a given [`Topology`];
//! - `treegen/file`: a `ZBigFile(blksize=4)` whose blktab is that tree;
//! - `treegen/values`: a dict name -> `ZBlk0` holding the values the
//!   topologies name (`B1:a` maps key 1 to the ZBlk0 named `a`, whose data is
//!   `a` until changed with [`TreeGen::set_data`]).
//!
//! Each commit restructures the tree in place: the root keeps its oid, and
//! the other nodes reuse the oids of the previous shape's nodes of the same
//! kind in level order (new ones are allocated as needed); only nodes whose
//! state actually changes are stored. So consecutive commits change some
//! nodes and keep others, as real BTree updates do. A root whose only child
//! is a bucket is stored with that bucket inlined, as ZODB stores a tree
//! that never split.

use super::topology::{Node, Topology};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use zodb::btree::{self, Family};
use zodb::pickle::Value;
use zodb::record::{self, Ref};
use zodb::zbigfile::{self, NewObject, ZBIGFILE, ZBLK0};
use zodb::zwrite::ZWriter;
use zodb::{Error, Oid, Result, Storage, Tid};

/// Block size of `treegen/file`.
pub const BLKSIZE: u64 = 4;

/// A database whose tree [`TreeGen::commit`] reshapes; see the module docs.
pub struct TreeGen {
    zw: ZWriter,
    tree: Oid,
    file: Oid,
    /// value name -> ZBlk0 oid
    values: BTreeMap<String, Oid>,
    /// Oids of the current non-root nodes, level order, by kind.
    cur_trees: Vec<Oid>,
    cur_buckets: Vec<Oid>,
}

impl std::fmt::Debug for TreeGen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeGen")
            .field("tree", &self.tree)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl TreeGen {
    /// Create the database at `path` (a new file) with an empty tree.
    pub fn create(path: &Path) -> Result<TreeGen> {
        let mut zw = ZWriter::open(path)?;
        let tree = zw.new_oid();
        let file = zw.new_oid();
        let mut g = TreeGen {
            zw,
            tree,
            file,
            values: BTreeMap::new(),
            cur_trees: vec![],
            cur_buckets: vec![],
        };
        let mut objs = vec![
            NewObject {
                oid: tree,
                class: Family::LO.tree_class(),
                state: Value::None,
            },
            NewObject {
                oid: file,
                class: ZBIGFILE,
                state: zbigfile::zbigfile_state(BLKSIZE, tree),
            },
        ];
        g.root_entries(&mut objs)?;
        g.zw.commit_objects("treegen: create", objs)?;
        Ok(g)
    }

    /// Oid of the tree (`treegen/tree`).
    pub fn tree(&self) -> Oid {
        self.tree
    }

    /// Oid of the ZBigFile (`treegen/file`).
    pub fn file(&self) -> Oid {
        self.file
    }

    /// The latest committed tid.
    pub fn head(&self) -> Tid {
        self.zw.head()
    }

    /// A read view of the database.
    pub fn storage(&mut self) -> zodb::fs1::FileStorage {
        self.zw.writer().storage()
    }

    /// Value name -> ZBlk0 oid, for the values created so far.
    pub fn values(&self) -> &BTreeMap<String, Oid> {
        &self.values
    }

    /// ZBlk0 oid -> value name (for [`Topology::load`]).
    pub fn names(&self) -> BTreeMap<Oid, String> {
        self.values.iter().map(|(n, o)| (*o, n.clone())).collect()
    }

    /// The root object naming tree, file and values, appended to `objs`.
    fn root_entries(&mut self, objs: &mut Vec<NewObject>) -> Result<()> {
        let vals = Value::Dict(
            self.values
                .iter()
                .map(|(n, o)| (Value::Unicode(n.clone()), Ref::new(*o, ZBLK0).to_value()))
                .collect(),
        );
        let root = self.zw.root_with_entries(vec![
            (
                "treegen/tree",
                Some(Ref::new(self.tree, Family::LO.tree_class()).to_value()),
            ),
            (
                "treegen/file",
                Some(Ref::new(self.file, ZBIGFILE).to_value()),
            ),
            ("treegen/values", Some(vals)),
        ])?;
        objs.push(root);
        Ok(())
    }

    /// Set the data of the named values (creating missing ones), in one
    /// transaction. Data must be at most [`BLKSIZE`] bytes.
    pub fn set_data(&mut self, data: &[(&str, &[u8])]) -> Result<Tid> {
        let mut objs = Vec::new();
        let mut new = false;
        for (name, d) in data {
            let oid = match self.values.get(*name) {
                Some(o) => *o,
                None => {
                    new = true;
                    let o = self.zw.new_oid();
                    self.values.insert((*name).to_owned(), o);
                    o
                }
            };
            objs.push(NewObject {
                oid,
                class: ZBLK0,
                state: Value::Bytes(bytes::Bytes::copy_from_slice(d)),
            });
        }
        if new {
            self.root_entries(&mut objs)?;
        }
        self.zw.commit_objects("treegen: data", objs)
    }

    /// Store the ZBigFile again with block size `blksize` and its current
    /// blktab (an epoch if `blksize` differs; a re-save with no change of
    /// state otherwise). Re-creates the file if it was deleted.
    pub fn set_file(&mut self, blksize: u64) -> Result<Tid> {
        let objs = vec![NewObject {
            oid: self.file,
            class: ZBIGFILE,
            state: zbigfile::zbigfile_state(blksize, self.tree),
        }];
        self.zw.commit_objects("treegen: file", objs)
    }

    /// Replace the file's blktab by a new, empty tree (an epoch); later
    /// commits reshape the new tree. The old tree stays as it is.
    pub fn new_tree(&mut self, blksize: u64) -> Result<Tid> {
        self.tree = self.zw.new_oid();
        self.cur_trees.clear();
        self.cur_buckets.clear();
        let mut objs = vec![
            NewObject {
                oid: self.tree,
                class: Family::LO.tree_class(),
                state: Value::None,
            },
            NewObject {
                oid: self.file,
                class: ZBIGFILE,
                state: zbigfile::zbigfile_state(blksize, self.tree),
            },
        ];
        self.root_entries(&mut objs)?;
        self.zw.commit_objects("treegen: new tree", objs)
    }

    /// Delete the ZBigFile object (a deletion record); [`TreeGen::set_file`]
    /// brings it back.
    pub fn delete_file(&mut self) -> Result<Tid> {
        self.zw.writer().commit(zodb::fs1::NewTxn {
            description: b"treegen: delete file".to_vec(),
            records: vec![(self.file, zodb::fs1::NewData::Delete)],
            ..Default::default()
        })
    }

    /// Reshape the tree to `topo` (which must have values). Values not seen
    /// before get a ZBlk0 whose data is their name. Returns the new head
    /// (the old head if nothing changed: no empty transaction is made).
    pub fn commit(&mut self, topo: &Topology) -> Result<Tid> {
        topo.verify()
            .map_err(|e| Error::Unsupported(e.to_string()))?;
        let mut objs = Vec::new();
        // values first
        let mut new_values = false;
        for v in topo.items().values() {
            if !self.values.contains_key(v) {
                let o = self.zw.new_oid();
                self.values.insert(v.clone(), o);
                objs.push(NewObject {
                    oid: o,
                    class: ZBLK0,
                    state: Value::Bytes(bytes::Bytes::copy_from_slice(v.as_bytes())),
                });
                new_values = true;
            }
        }
        if topo.items().len() != topo.keys().len() {
            return Err(Error::Unsupported(format!(
                "topology {topo} has buckets without values"
            )));
        }

        // assign oids in level order, reusing old ones by kind
        let mut free_trees: VecDeque<Oid> = self.cur_trees.drain(..).collect();
        let mut free_buckets: VecDeque<Oid> = self.cur_buckets.drain(..).collect();
        let inline = matches!(&topo.root, Node::Tree { keys, children } if keys.is_empty() && matches!(children[0], Node::Bucket { .. }));
        let mut oids: Vec<Oid> = vec![self.tree]; // level order, root first
        let mut order: Vec<&Node> = vec![&topo.root];
        let mut i = 0;
        while i < order.len() {
            if let Node::Tree { children, .. } = order[i] {
                for c in children {
                    order.push(c);
                    let oid = match c {
                        _ if inline && i == 0 => Oid::INVALID,
                        Node::Tree { .. } => {
                            free_trees.pop_front().unwrap_or_else(|| self.zw.new_oid())
                        }
                        Node::Bucket { .. } => free_buckets
                            .pop_front()
                            .unwrap_or_else(|| self.zw.new_oid()),
                    };
                    match c {
                        Node::Tree { .. } => self.cur_trees.push(oid),
                        Node::Bucket { .. } if oid != Oid::INVALID => self.cur_buckets.push(oid),
                        Node::Bucket { .. } => {}
                    }
                    oids.push(oid);
                }
            }
            i += 1;
        }
        let oid_of: std::collections::HashMap<*const Node, Oid> = order
            .iter()
            .zip(&oids)
            .map(|(n, o)| (*n as *const Node, *o))
            .collect();

        // bucket chain: next of each bucket in key order
        let mut leaves: Vec<&Node> = Vec::new();
        fn collect_leaves<'a>(n: &'a Node, out: &mut Vec<&'a Node>) {
            match n {
                Node::Tree { children, .. } => children.iter().for_each(|c| collect_leaves(c, out)),
                b => out.push(b),
            }
        }
        collect_leaves(&topo.root, &mut leaves);
        let next_of: std::collections::HashMap<*const Node, Oid> = leaves
            .windows(2)
            .map(|w| (w[0] as *const Node, oid_of[&(w[1] as *const Node)]))
            .collect();
        fn first_bucket(n: &Node) -> &Node {
            match n {
                Node::Tree { children, .. } => first_bucket(&children[0]),
                b => b,
            }
        }

        let bref = |o: Oid| Ref::new(o, Family::LO.bucket_class());
        let tref = |o: Oid| Ref::new(o, Family::LO.tree_class());
        let vref = |name: &String| Ref::new(self.values[name], ZBLK0).to_value();
        let bucket_state = |n: &Node| -> Value {
            let Node::Bucket {
                keys,
                values: Some(v),
            } = n
            else {
                unreachable!("checked: values present")
            };
            let vals: Vec<Value> = v.iter().map(vref).collect();
            let next = next_of.get(&(n as *const Node)).map(|o| bref(*o));
            btree::bucket_state(keys, &vals, next.as_ref())
        };
        for (n, oid) in order.iter().zip(&oids) {
            let (class, state) = match n {
                Node::Bucket { .. } if *oid == Oid::INVALID => continue, // inline, in the root
                Node::Bucket { .. } => (Family::LO.bucket_class(), bucket_state(n)),
                Node::Tree { keys, children } => {
                    let state = if *oid == self.tree && inline {
                        let Node::Bucket { keys: bk, .. } = &children[0] else {
                            unreachable!()
                        };
                        if bk.is_empty() {
                            Value::None
                        } else {
                            Value::Tuple(vec![Value::Tuple(vec![bucket_state(&children[0])])])
                        }
                    } else {
                        let refs: Vec<Ref> = children
                            .iter()
                            .map(|c| {
                                let o = oid_of[&(c as *const Node)];
                                if matches!(c, Node::Tree { .. }) {
                                    tref(o)
                                } else {
                                    bref(o)
                                }
                            })
                            .collect();
                        let fb = oid_of[&(first_bucket(n) as *const Node)];
                        btree::tree_state(&refs, keys, &bref(fb))
                    };
                    (Family::LO.tree_class(), state)
                }
            };
            objs.push(NewObject {
                oid: *oid,
                class,
                state,
            });
        }

        // store only what changes
        let stor = self.zw.writer().storage();
        let head = stor.last_tid()?;
        objs.retain(|o| match stor.load(o.oid, head) {
            Ok(l) => l.data[..] != record::encode(o.class, &o.state)[..],
            Err(_) => true,
        });
        if new_values {
            self.root_entries(&mut objs)?;
        }
        if objs.is_empty() {
            return Ok(head);
        }
        self.zw.commit_objects(&format!("treegen: {topo}"), objs)
    }
}

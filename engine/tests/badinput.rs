//! Data the engine cannot decode gives errors, not panics: a blktab child
//! that is not a BTree node, a tree that refers to itself, a value that is
//! not a persistent reference.

mod common;

use engine::btail::DeltaBTail;
use rangeset::{KeyRange, RangedKeySet};
use std::sync::Arc;
use zodb::btree::{self, Family};
use zodb::pickle::Value;
use zodb::record::Ref;
use zodb::zbigfile::{NewObject, ZBLK0};
use zodb::zwrite::ZWriter;
use zodb::{Oid, Storage, Tid};

/// A database whose tree `root` is made of `objs` (committed at t1 after an
/// empty tree at t0). Returns (storage, root, t0, t1, oids of t1).
fn db_with(
    make: impl FnOnce(&mut ZWriter, Oid) -> Vec<NewObject>,
) -> (tempfile::TempDir, Arc<dyn Storage>, Oid, Tid, Tid, Vec<Oid>) {
    let dir = common::scratch();
    let path = dir.path().join("bad.fs");
    let mut zw = ZWriter::open(&path).unwrap();
    let root = zw.new_oid();
    let t0 = zw
        .commit_objects(
            "empty",
            vec![NewObject {
                oid: root,
                class: Family::LO.tree_class(),
                state: Value::None,
            }],
        )
        .unwrap();
    let objs = make(&mut zw, root);
    let oids: Vec<Oid> = objs.iter().map(|o| o.oid).collect();
    let t1 = zw.commit_objects("bad", objs).unwrap();
    let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
    (dir, stor, root, t0, t1, oids)
}

fn full() -> RangedKeySet {
    RangedKeySet::from_iter([KeyRange::FULL])
}

fn check(make: impl FnOnce(&mut ZWriter, Oid) -> Vec<NewObject>, what: &str) {
    // forward: tracked before, Update meets the bad tree
    let (_d, stor, root, t0, t1, oids) = db_with(make);
    let bt = DeltaBTail::new(t0, stor.clone());
    bt.track_keys(root, &full());
    bt.slice_by_root_rev(root, t0, t0).unwrap();
    let e = bt.update(t1, &oids).expect_err(what);
    eprintln!("{what}: update: {e}");
    // backward: tracked at the bad head, the rebuild meets it
    let bt = DeltaBTail::new(t0, stor);
    let _ = bt.update(t1, &oids);
    bt.track_keys(root, &full());
    let e = bt.get_at(root, 1, t1).expect_err(what);
    eprintln!("{what}: get_at: {e}");
    // and the error repeats: the keys went back to pending, nothing hangs
    assert!(bt.get_at(root, 1, t1).is_err());
}

#[test]
fn child_is_not_a_btree_node() {
    check(
        |zw, root| {
            let blk = zw.new_oid();
            let b2 = zw.new_oid();
            vec![
                NewObject {
                    oid: blk,
                    class: ZBLK0,
                    state: Value::Bytes(bytes::Bytes::from_static(b"x")),
                },
                NewObject {
                    oid: b2,
                    class: Family::LO.bucket_class(),
                    state: btree::bucket_state(&[5], &[Ref::new(blk, ZBLK0).to_value()], None),
                },
                NewObject {
                    oid: root,
                    class: Family::LO.tree_class(),
                    state: btree::tree_state(
                        &[
                            Ref::new(blk, Family::LO.bucket_class()),
                            Ref::new(b2, Family::LO.bucket_class()),
                        ],
                        &[3],
                        &Ref::new(blk, Family::LO.bucket_class()),
                    ),
                },
            ]
        },
        "child is a ZBlk0",
    );
}

#[test]
fn tree_refers_to_itself() {
    check(
        |_zw, root| {
            let r = Ref::new(root, Family::LO.tree_class());
            vec![NewObject {
                oid: root,
                class: Family::LO.tree_class(),
                state: btree::tree_state(&[r.clone(), r.clone()], &[3], &r),
            }]
        },
        "cycle",
    );
}

#[test]
fn value_is_not_a_reference() {
    check(
        |_zw, root| {
            vec![NewObject {
                oid: root,
                class: Family::LO.tree_class(),
                state: btree::inline_tree_state(&[1, 2], &[Value::Int(7), Value::Int(8)]),
            }]
        },
        "value is an int",
    );
}

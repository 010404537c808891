//! The incremental blktab writer (`ZWriter::update_file_incremental`, over
//! `btree::update`) against truths it does not compute itself.
//!
//! A seeded random sequence of block changes on two ZBigFiles with small
//! tree shapes (so that buckets and interior nodes split, empty buckets
//! and subtrees go away, the tree empties and grows back from an inline
//! bucket): rewrites in the same format, format changes, holes filled,
//! appends, single and bulk deletions, far keys. An in-memory model of
//! every block (its ZBlk oid, format and bytes) is the truth.
//!
//! After every commit:
//!
//! - the blktab's items (our reader) are exactly the model's blocks with
//!   their ZBlk oids (a same-format rewrite keeps its oid, a new ZBlk has
//!   an oid nothing else uses), and the changed blocks read back;
//! - the ZBigFile is not stored and keeps its blktab oid;
//! - what was stored (the transaction's oid list) is only: the written
//!   blocks' ZBlk objects, and nodes of the new tree that are new or
//!   differ from their previous record. Each stored old node has a reason:
//!   it is on the path of a changed key (before or after), or its `next`
//!   or `firstbucket` changed. A commit rewriting blocks in their format
//!   stores no tree node; one new ZBlk without a split stores one bucket
//!   (the root, while the tree is a single inline bucket).
//!
//! At the end Python ZODB reads every revision (`tests/py/check_db.py`:
//! block contents, the blk -> ZBlk oid map, `BTrees.check` of every tree at
//! every revision where a node changed, fstest). The test also prints how
//! many tree records the full rewrite (`update_file`) would have stored.
//!
//! Replay a failing run with `WCFS_TEST_SEED=<seed>`.

mod py_common;

use py_common::py_cmd;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use zodb::btree::{self, Family, Node, Shape, TreeState};
use zodb::fs1::FileStorage;
use zodb::record;
use zodb::zbigfile::{ZBigFile, ZBlkFormat};
use zodb::zwrite::ZWriter;
use zodb::{Oid, Storage, Tid};

/// splitmix64: the run must replay from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const BLKSIZE: usize = 64;

/// A block as the model knows it.
#[derive(Clone, Debug)]
struct Blk {
    zoid: Oid,
    format: ZBlkFormat,
    data: Vec<u8>,
}

/// One file: its oid, blktab, tree shape and blocks.
#[derive(Clone, Debug)]
struct FileModel {
    name: &'static str,
    oid: Oid,
    blktab: Oid,
    shape: Shape,
    blocks: BTreeMap<i64, Blk>,
}

fn random_data(rng: &mut Rng) -> Vec<u8> {
    let mut b = vec![0u8; BLKSIZE];
    match rng.below(5) {
        0 => {} // all zeros, but present (not a hole)
        1 => {
            let n = rng.below(BLKSIZE as u64) as usize;
            b[..n].iter_mut().for_each(|x| *x = rng.next() as u8);
        }
        _ => b.iter_mut().for_each(|x| *x = rng.next() as u8),
    }
    b
}

fn format(rng: &mut Rng) -> ZBlkFormat {
    if rng.below(3) == 0 {
        ZBlkFormat::ZBlk1
    } else {
        ZBlkFormat::ZBlk0
    }
}

fn other(f: ZBlkFormat) -> ZBlkFormat {
    match f {
        ZBlkFormat::ZBlk0 => ZBlkFormat::ZBlk1,
        ZBlkFormat::ZBlk1 => ZBlkFormat::ZBlk0,
    }
}

/// A tree node as decoded from its record (the structure the checks
/// reason about, read with the decoder, not with the code under test).
#[derive(Debug)]
struct NodeInfo {
    data: bytes::Bytes,
    /// A bucket's next bucket.
    next: Option<Oid>,
    /// A tree node's first bucket (`None` for an empty or inline root).
    first: Option<Oid>,
}

/// Every node of the tree `root` at `at`, by oid.
fn tree_nodes(stor: &dyn Storage, root: Oid, at: Tid) -> HashMap<Oid, NodeInfo> {
    let mut out = HashMap::new();
    let mut todo = vec![root];
    while let Some(oid) = todo.pop() {
        let data = stor.load(oid, at).unwrap().data;
        let (next, first) = match btree::load_node(stor, oid, at).unwrap() {
            Node::Bucket { bucket, .. } => (bucket.next, None),
            Node::Tree { state, .. } => match state {
                TreeState::Children(c) => {
                    todo.extend(c.children.iter().map(|r| r.oid));
                    (None, Some(c.firstbucket))
                }
                TreeState::Empty | TreeState::Inline(_) => (None, None),
            },
        };
        let dup = out.insert(oid, NodeInfo { data, next, first });
        assert!(dup.is_none(), "{oid} reached twice");
    }
    out
}

/// Every object reachable from `oid` at `at` (a ZBlk and its chunks).
fn reachable(stor: &dyn Storage, oid: Oid, at: Tid) -> HashSet<Oid> {
    let mut seen = HashSet::new();
    let mut todo = vec![oid];
    while let Some(o) = todo.pop() {
        if !seen.insert(o) {
            continue;
        }
        let obj = record::load(stor, o, at).unwrap();
        let mut refs = Vec::new();
        record::refs_in(o, &obj.state, &mut refs);
        todo.extend(refs.into_iter().map(|r| r.oid));
    }
    seen
}

/// The oids a transaction stored.
fn stored(stor: &dyn Storage, tid: Tid) -> Vec<Oid> {
    let t: Vec<_> = stor
        .iterate(tid, tid)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(t.len(), 1);
    t[0].oids.clone()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Totals of a run, for the comparison with full rewrites.
#[derive(Default, Debug)]
struct Totals {
    commits: u64,
    /// Tree records the incremental writer stored.
    tree_records: u64,
    /// Tree records a full rewrite would have stored: every node of every
    /// new tree.
    full_rewrite_records: u64,
    splits: u64,
    removals: u64,
}

/// What one step does: (blk, `Some(format, data)` or `None` = delete).
type Step = Vec<(i64, Option<(ZBlkFormat, Vec<u8>)>)>;

fn gen_step(rng: &mut Rng, f: &FileModel) -> Step {
    let keys: Vec<i64> = f.blocks.keys().copied().collect();
    let end = keys.last().map_or(0, |k| k + 1);
    let pick = |rng: &mut Rng| keys[rng.below(keys.len() as u64) as usize];
    let mut s: Step = Vec::new();
    match rng.below(100) {
        // rewrites in the same format: only the ZBlks change
        0..=29 if !keys.is_empty() => {
            for _ in 0..1 + rng.below(4) {
                let k = pick(rng);
                s.push((k, Some((f.blocks[&k].format, random_data(rng)))));
            }
        }
        // one block changes format: a new ZBlk
        30..=39 if !keys.is_empty() => {
            let k = pick(rng);
            s.push((k, Some((other(f.blocks[&k].format), random_data(rng)))));
        }
        // one block in a hole or at the end
        40..=54 => {
            let k = rng.below(end as u64 + 2) as i64;
            s.push((k, Some((format(rng), random_data(rng)))));
        }
        // many appended: splits
        55..=64 => {
            for k in end..end + 1 + rng.below(12) as i64 {
                s.push((k, Some((format(rng), random_data(rng)))));
            }
        }
        // one deleted
        65..=74 if !keys.is_empty() => s.push((pick(rng), None)),
        // a run deleted: buckets and subtrees go away
        75..=84 if !keys.is_empty() => {
            let lo = pick(rng);
            for k in lo..lo + 3 + rng.below(25) as i64 {
                s.push((k, None));
            }
        }
        // everything deleted: the tree empties (then grows from inline)
        85..=86 => s.extend(keys.iter().map(|&k| (k, None))),
        // a mix, keys past a gap included (a gap of at most 50 blocks:
        // the Python check hashes every block of every revision)
        _ => {
            for _ in 0..2 + rng.below(6) {
                let k = match rng.below(4) {
                    0 => end + 10 + rng.below(40) as i64,
                    _ => rng.below(end as u64 + 5) as i64,
                };
                if rng.below(3) == 0 {
                    s.push((k, None));
                } else {
                    s.push((k, Some((format(rng), random_data(rng)))));
                }
            }
        }
    }
    s
}

fn run(seed: u64, steps: usize, python: bool) {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inc.fs");
    let mut zw = ZWriter::open(&path).unwrap();
    let stor = zw.reader();
    let mut files: Vec<FileModel> = Vec::new();
    // (tid, the models as of it)
    let mut history: Vec<(Tid, Vec<FileModel>)> = Vec::new();
    for (name, shape, n) in [
        (
            "tiny",
            Shape {
                max_bucket: 3,
                max_tree: 3,
            },
            30,
        ),
        (
            "small",
            Shape {
                max_bucket: 8,
                max_tree: 4,
            },
            5,
        ),
    ] {
        zw.blktab_shape = shape;
        let data: Vec<(i64, ZBlkFormat, Vec<u8>)> = (0..n)
            .map(|k| (k, format(&mut rng), random_data(&mut rng)))
            .collect();
        let ch: Vec<_> = data
            .iter()
            .map(|(k, f, d)| (*k, Some((*f, &d[..]))))
            .collect();
        let (oid, tid) = zw.create_file(name, BLKSIZE as u64, &ch).unwrap();
        let zf = ZBigFile::load(&stor, oid, tid).unwrap();
        let refs: HashMap<i64, Oid> = btree::items(&stor, Family::LO, zf.blktab, tid)
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, record::decode_ref(zf.blktab, v).unwrap().oid))
            .collect();
        let blocks = data
            .into_iter()
            .map(|(k, format, data)| {
                let zoid = refs[&k];
                (k, Blk { zoid, format, data })
            })
            .collect();
        files.push(FileModel {
            name,
            oid,
            blktab: zf.blktab,
            shape,
            blocks,
        });
        history.push((tid, files.clone()));
    }

    let mut tot = Totals::default();
    for step in 0..steps {
        let fi = rng.below(files.len() as u64) as usize;
        let ch = gen_step(&mut rng, &files[fi]);
        let f = &mut files[fi];
        let before = zw.head();
        zw.blktab_shape = f.shape;
        let borrowed: Vec<_> = ch
            .iter()
            .map(|(k, c)| (*k, c.as_ref().map(|(f, d)| (*f, &d[..]))))
            .collect();
        let tid = zw.update_file_incremental(f.oid, &borrowed).unwrap();
        let ctx = format!("seed {seed} step {step} ({}, {} changes)", f.name, ch.len());
        tot.commits += 1;

        // the model: the last change of a block wins; a same-format write
        // keeps the ZBlk oid (filled in below for new ZBlks)
        let mut last: BTreeMap<i64, Option<(ZBlkFormat, Vec<u8>)>> = BTreeMap::new();
        for (k, c) in ch {
            last.insert(k, c);
        }
        let mut fresh: Vec<i64> = Vec::new(); // blocks with a new ZBlk
        let mut rewritten: Vec<i64> = Vec::new(); // same ZBlk, new data
        for (k, c) in &last {
            match c {
                None => {
                    f.blocks.remove(k);
                }
                Some((format, data)) => {
                    let keep = f.blocks.get(k).filter(|b| b.format == *format);
                    let zoid = keep.map_or(Oid::INVALID, |b| b.zoid);
                    if keep.is_some() {
                        rewritten.push(*k);
                    } else {
                        fresh.push(*k);
                    }
                    f.blocks.insert(
                        *k,
                        Blk {
                            zoid,
                            format: *format,
                            data: data.clone(),
                        },
                    );
                }
            }
        }

        // 1) the items are the model's
        let zf = ZBigFile::load(&stor, f.oid, tid).unwrap();
        assert_eq!(zf.blktab, f.blktab, "{ctx}: the blktab keeps its oid");
        let items: BTreeMap<i64, record::Ref> = btree::items(&stor, Family::LO, f.blktab, tid)
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, record::decode_ref(f.blktab, v).unwrap()))
            .collect();
        assert_eq!(
            items.keys().collect::<Vec<_>>(),
            f.blocks.keys().collect::<Vec<_>>(),
            "{ctx}: keys"
        );
        let old_zoids: HashSet<Oid> = history
            .iter()
            .flat_map(|(_, fs)| fs.iter().flat_map(|f| f.blocks.values().map(|b| b.zoid)))
            .collect();
        let mut fresh_zoids = HashSet::new();
        for k in &fresh {
            let z = items[k].oid;
            assert!(
                !old_zoids.contains(&z) && fresh_zoids.insert(z),
                "{ctx}: blk {k}: ZBlk {z} not new"
            );
            f.blocks.get_mut(k).unwrap().zoid = z;
        }
        for (k, b) in &f.blocks {
            let r = &items[k];
            assert_eq!(r.oid, b.zoid, "{ctx}: blk {k}: ZBlk oid");
            let want = match b.format {
                ZBlkFormat::ZBlk0 => zodb::zbigfile::ZBLK0,
                ZBlkFormat::ZBlk1 => zodb::zbigfile::ZBLK1,
            };
            assert_eq!(r.class.as_deref(), Some(want), "{ctx}: blk {k}: class");
        }
        for k in fresh.iter().chain(&rewritten) {
            let got = zf.load_blk(&stor, *k, tid).unwrap().to_vec();
            assert_eq!(got, f.blocks[k].data, "{ctx}: blk {k} data");
        }

        // 2) what was stored
        let old = tree_nodes(&stor, f.blktab, before);
        let new = tree_nodes(&stor, f.blktab, tid);
        let oids = stored(&stor, tid);
        assert!(!oids.contains(&f.oid), "{ctx}: the ZBigFile was stored");
        let mut zblk_objs = HashSet::new();
        for k in fresh.iter().chain(&rewritten) {
            zblk_objs.extend(reachable(&stor, f.blocks[k].zoid, tid));
        }
        let changed_keys: Vec<i64> = last.keys().copied().collect();
        let mut on_paths = HashSet::new();
        for t in [before, tid] {
            for &k in &changed_keys {
                let l = btree::lookup(&stor, Family::LO, f.blktab, k, t).unwrap();
                on_paths.extend(l.path.into_iter().filter(|o| *o != Oid::INVALID));
            }
        }
        let mut tree_records = 0;
        for o in &oids {
            if zblk_objs.contains(o) {
                continue;
            }
            let Some(n) = new.get(o) else {
                panic!("{ctx}: stored {o}: neither a written ZBlk's nor a node of the new tree");
            };
            tree_records += 1;
            if let Some(was) = old.get(o) {
                assert_ne!(was.data, n.data, "{ctx}: {o} stored unchanged");
                let why = on_paths.contains(o) || was.next != n.next || was.first != n.first;
                assert!(why, "{ctx}: {o} stored for no reason");
            }
        }
        for o in new.keys() {
            if !old.contains_key(o) {
                assert!(oids.contains(o), "{ctx}: new node {o} not stored");
            }
        }
        let split = new.keys().any(|o| !old.contains_key(o));
        let removed = old.keys().any(|o| !new.contains_key(o));
        tot.splits += u64::from(split);
        tot.removals += u64::from(removed);
        if fresh.is_empty() && last.values().all(|c| c.is_some()) {
            assert_eq!(
                tree_records, 0,
                "{ctx}: same-format rewrites stored tree nodes"
            );
        }
        if fresh.len() == 1 && last.len() == 1 && !split {
            assert_eq!(tree_records, 1, "{ctx}: one new ZBlk: one bucket");
        }
        tot.tree_records += tree_records;
        tot.full_rewrite_records += new.len() as u64;
        history.push((tid, files.clone()));
    }
    eprintln!("seed {seed}: {tot:?}");
    assert!(
        tot.splits > 10 && tot.removals > 10,
        "seed {seed}: the run should split and remove nodes: {tot:?}"
    );
    assert!(
        tot.tree_records * 2 < tot.full_rewrite_records,
        "seed {seed}: the incremental writer should store far fewer tree nodes: {tot:?}"
    );
    drop(zw);
    if python {
        check_with_python(&path, &history, dir.path());
    }
}

/// Python ZODB reads every revision of every file as the model says.
fn check_with_python(
    path: &std::path::Path,
    history: &[(Tid, Vec<FileModel>)],
    dir: &std::path::Path,
) {
    let stor = FileStorage::open(path).unwrap();
    let mut entries = Vec::new();
    for (tid, files) in history {
        for f in files {
            let nblk = f.blocks.keys().next_back().map_or(0, |k| k + 1);
            let (mut blocks, mut zblk) = (Vec::new(), Vec::new());
            for k in 0..nblk {
                let (data, z) = match f.blocks.get(&k) {
                    Some(b) => (b.data.clone(), json!(b.zoid.to_string())),
                    None => (Vec::new(), json!(null)),
                };
                let mut data = data;
                data.resize(BLKSIZE, 0);
                blocks.push(sha(&data));
                zblk.push(z);
            }
            entries.push(json!({
                "tid": tid.to_string(), "oid": f.oid.to_string(), "status": "ok",
                "reachable": true, "blksize": BLKSIZE, "size": nblk as usize * BLKSIZE,
                "blocks": blocks, "zblk": zblk, "blktab": f.blktab.to_string(),
            }));
        }
    }
    let expect = dir.join("expect.json");
    let doc = json!({
        "format": "wcfs-interop-dump/1",
        "head": stor.last_tid().unwrap().to_string(),
        "files": entries,
    });
    std::fs::write(&expect, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = py_cmd(
        "check_db.py",
        &[path.to_str().unwrap(), expect.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "check_db failed:\n{text}");
    assert!(text.contains("check_db: OK"), "{text}");
}

fn seed() -> u64 {
    let seed = std::env::var("WCFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (replay with WCFS_TEST_SEED={seed})");
    seed
}

#[test]
fn incremental_updates_store_only_what_changes() {
    run(seed(), 600, false);
}

#[test]
fn python_reads_incremental_updates() {
    for s in [1, 2] {
        run(s, 250, true);
    }
    run(seed(), 250, true);
}

//! ΔFtail against the brute-force oracle: the whole file loaded at every
//! revision, each block as `(file state, ZBlk, ZBlk serial)`; a block changed
//! at `r` iff that triple differs between `r-1` and `r`.
//!
//! Histories mix blktab reshapes, ZBlk data changes, and epochs (block size
//! changed, blktab replaced by a new tree, file deleted and re-created);
//! blocks are tracked at random points before and between Updates. Checked:
//! every Update's δF, BlkRevAt of every block at every revision,
//! SliceByFileRev over every (lo, hi] (exact for explicitly tracked blocks,
//! never reporting a block that did not change, and uniform for the
//! others), OnlyExplicitlyTracked, and ForgetPast.
//!
//! `WCFS_TEST_SEED=<seed>` replays a run, `WCFS_TEST_LONG=<seconds>` runs
//! longer.

mod common;

use common::Rng;
use engine::ftail::{DeltaFTail, SliceOpts};
use engine::testkit::treegen::TreeGen;
use rangeset::RangedKeySet;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBigFile;
use zodb::{Oid, Storage, Tid};

type FileState = Option<(u64, Oid)>;
type BlkState = (FileState, Oid, Tid);
/// A file at one revision: its state, and block -> (zblk, zblk serial).
type FileAt = (FileState, BTreeMap<i64, (Oid, Tid)>);

struct FHistory {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    gen: TreeGen,
    revs: Vec<Tid>,
    oids: Vec<Vec<Oid>>,
    what: Vec<String>,
    /// per revision: file state, and block -> (zblk, zblk serial)
    states: Vec<FileAt>,
}

impl FHistory {
    fn new() -> FHistory {
        let dir = common::scratch();
        let path = dir.path().join("f.fs");
        let gen = TreeGen::create(&path).unwrap();
        let mut h = FHistory {
            _dir: dir,
            path,
            revs: vec![gen.head()],
            gen,
            oids: vec![vec![]],
            what: vec!["create".into()],
            states: vec![],
        };
        let st = h.load(h.revs[0]);
        h.states.push(st);
        h
    }

    fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(zodb::fs1::FileStorage::open(&self.path).unwrap())
    }

    fn load(&mut self, at: Tid) -> FileAt {
        let stor = self.gen.storage();
        let f = match ZBigFile::load(&stor, self.gen.file(), at) {
            Ok(f) => f,
            Err(_) => return (None, BTreeMap::new()),
        };
        let mut blks = BTreeMap::new();
        for (k, z) in f.blktab(&stor, at).unwrap() {
            let serial = stor.load(z, at).unwrap().serial;
            blks.insert(k, (z, serial));
        }
        (Some((f.blksize, f.blktab)), blks)
    }

    fn push(&mut self, tid: Tid, what: String) {
        if tid == *self.revs.last().unwrap() {
            return;
        }
        let stor = self.gen.storage();
        let txn = stor.iterate(tid, tid).unwrap().next().unwrap().unwrap();
        self.oids.push(txn.oids);
        self.revs.push(tid);
        self.what.push(what);
        let st = self.load(tid);
        self.states.push(st);
    }

    fn blk(&self, i: usize, blk: i64) -> BlkState {
        let (fs, b) = &self.states[i];
        let (z, s) = b.get(&blk).copied().unwrap_or((Oid::INVALID, Tid(0)));
        (*fs, z, s)
    }

    fn changed(&self, i: usize, blk: i64) -> bool {
        self.blk(i - 1, blk) != self.blk(i, blk)
    }

    fn epoch(&self, i: usize) -> bool {
        self.states[i - 1].0 != self.states[i].0
    }

    fn index_at(&self, at: Tid) -> usize {
        self.revs.partition_point(|r| *r <= at) - 1
    }
}

/// Build a random history of `n` steps over blocks `0..kmax`.
fn random_history(rng: &mut Rng, n: usize, kmax: i64) -> FHistory {
    let mut h = FHistory::new();
    let mut deleted = false;
    let mut blksize = 4;
    for _ in 0..n {
        let x = rng.below(100);
        let (tid, what) = if x < 8 && !deleted {
            deleted = true;
            (h.gen.delete_file().unwrap(), "delete file".to_string())
        } else if deleted && x < 40 {
            deleted = false;
            (
                h.gen.set_file(blksize).unwrap(),
                format!("recreate file bs={blksize}"),
            )
        } else if x < 12 && !deleted {
            blksize = if blksize == 4 { 8 } else { 4 };
            (
                h.gen.set_file(blksize).unwrap(),
                format!("blksize {blksize}"),
            )
        } else if x < 15 && !deleted {
            (
                h.gen.set_file(blksize).unwrap(),
                "file re-saved".to_string(),
            )
        } else if x < 19 && !deleted {
            (h.gen.new_tree(blksize).unwrap(), "new blktab".to_string())
        } else if x < 35 {
            let names: BTreeSet<String> = (0..1 + rng.below(3))
                .map(|_| ((b'a' + rng.below(6) as u8) as char).to_string())
                .collect();
            let data: Vec<(String, Vec<u8>)> = names
                .iter()
                .map(|n| (n.clone(), format!("{n}{}", rng.below(100)).into_bytes()))
                .collect();
            let d: Vec<(&str, &[u8])> = data.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
            (h.gen.set_data(&d).unwrap(), format!("data {names:?}"))
        } else {
            let kv = common::random_kv(rng, kmax, 6);
            let t = common::random_topology(rng, &kv, 2, 2);
            (h.gen.commit(&t).unwrap(), t.to_string())
        };
        h.push(tid, what);
    }
    h
}

/// Track a few random blocks of the file at the current head.
fn track_some(
    h: &FHistory,
    ft: &DeltaFTail,
    rng: &mut Rng,
    kmax: i64,
    at: Tid,
    explicit: &mut BTreeSet<i64>,
) {
    let stor = h.storage();
    let Ok(f) = ZBigFile::load(&*stor, h.gen.file(), at) else {
        return;
    };
    for _ in 0..rng.below(4) {
        let blk = rng.below(kmax as u64 + 2) as i64;
        let b = f.load_blk(&*stor, blk, at).unwrap();
        ft.track(&f, blk, &b.path, b.keycov, b.zblk).unwrap();
        explicit.insert(blk);
    }
    if rng.chance(1, 4) {
        // the size path only
        let b = f.load_blk(&*stor, kmax + 5, at).unwrap();
        ft.track(&f, -1, &b.path, b.keycov, None).unwrap();
    }
}

fn check_all(h: &FHistory, ft: &DeltaFTail, kmax: i64, explicit: &BTreeSet<i64>, ctx: &str) {
    let file = h.gen.file();
    let (tail, head) = (ft.tail(), ft.head());
    let it = h.index_at(tail);
    let ih = h.index_at(head);
    let last_epoch = (1..h.revs.len()).filter(|&i| h.epoch(i)).max().unwrap_or(0);
    // BlkRevAt for every block at every revision
    for blk in 0..kmax + 2 {
        for i in it..=ih {
            let got = ft.blk_rev_at(file, blk, h.revs[i]).unwrap();
            // the server's form, with the block's ZBlk at head as a hint
            let hint = h.states[ih].1.get(&blk).map_or(Oid::INVALID, |b| b.0);
            let got_hint = ft
                .blk_rev_at_hint(file, blk, h.revs[i], Some(hint))
                .unwrap();
            assert_eq!(
                got_hint, got,
                "{ctx}: BlkRevAt(#{blk}, @{i}) with head hint"
            );
            let want = match (it + 1..=i).rev().find(|&j| h.changed(j, blk)) {
                Some(j) => (h.revs[j], true),
                None => (tail, false),
            };
            if got != want {
                let states: Vec<_> = (it..=ih).map(|j| (j, h.blk(j, blk), &h.what[j])).collect();
                panic!(
                    "{ctx}: BlkRevAt(#{blk}, @{i}) [{}]: got {got:?} want {want:?}; tail @{it}; revs {:?}\nstates {states:#?}",
                    h.what[i],
                    &h.revs[it..=ih]
                );
            }
        }
    }
    // one file: SliceByRev is SliceByFileRev
    let all: Vec<_> = ft
        .slice_by_rev(tail, head)
        .unwrap()
        .into_iter()
        .map(|d| d.by_file[&file].clone())
        .collect();
    assert_eq!(
        all,
        ft.slice_by_file_rev(file, tail, head).unwrap(),
        "{ctx}: SliceByRev"
    );
    // slices
    for lo in it..=ih {
        for hi in lo..=ih {
            let s = ft.slice_by_file_rev(file, h.revs[lo], h.revs[hi]).unwrap();
            let by_rev: BTreeMap<Tid, _> = s.iter().map(|d| (d.rev, d)).collect();
            assert_eq!(by_rev.len(), s.len());
            assert!(s.windows(2).all(|w| w[0].rev < w[1].rev));
            // segments between epochs: blocks reported in one are reported
            // wherever they changed in it (uniform)
            let mut seg_reported: BTreeSet<i64> = BTreeSet::new();
            let mut seg: Vec<usize> = Vec::new();
            let uniform = |seg: &[usize], rep: &BTreeSet<i64>| {
                for b in rep {
                    for &i in seg {
                        if h.changed(i, *b) {
                            assert!(
                                by_rev.get(&h.revs[i]).is_some_and(|d| d.blocks.contains(b)),
                                "{ctx}: slice ({lo},{hi}]: #{b} not reported uniformly: missing @{i} [{}]",
                                h.what[i]
                            );
                        }
                    }
                }
            };
            for i in lo + 1..=hi {
                let r = h.revs[i];
                let d = by_rev.get(&r);
                if h.epoch(i) {
                    let d = d.unwrap_or_else(|| panic!("{ctx}: slice ({lo},{hi}]: no epoch @{i}"));
                    assert!(d.epoch && d.blocks.is_empty(), "{ctx}: epoch @{i}: {d:?}");
                    uniform(&seg, &seg_reported);
                    seg.clear();
                    seg_reported.clear();
                    continue;
                }
                seg.push(i);
                if let Some(d) = d {
                    assert!(!d.epoch, "{ctx}: epoch reported @{i} [{}]", h.what[i]);
                    for b in &d.blocks {
                        assert!(
                            h.changed(i, *b),
                            "{ctx}: slice ({lo},{hi}] @{i}: #{b} reported, not changed [{}]",
                            h.what[i]
                        );
                    }
                    seg_reported.extend(&d.blocks);
                }
                if i <= last_epoch {
                    continue; // explicit tracking is of the last epoch
                }
                for b in explicit {
                    if h.changed(i, *b) {
                        assert!(
                            d.is_some_and(|d| d.blocks.contains(b)),
                            "{ctx}: slice ({lo},{hi}] @{i} ({}): tracked #{b} changed, not reported [{}]",
                            h.revs[i],
                            h.what[i]
                        );
                    }
                }
            }
            uniform(&seg, &seg_reported);
            // only explicitly tracked
            let sx = ft
                .slice_by_file_rev_ex(
                    file,
                    h.revs[lo],
                    h.revs[hi],
                    SliceOpts {
                        only_explicitly_tracked: true,
                    },
                )
                .unwrap();
            for d in &sx {
                assert!(
                    d.blocks.iter().all(|b| explicit.contains(b)),
                    "{ctx}: OnlyExplicitlyTracked ({lo},{hi}]: {d:?}, explicit {explicit:?} engine {}, history {:?}",
                    ft.explicitly_tracked(file), h.what
                );
            }
        }
    }
}

#[test]
fn ftail_random() {
    common::with_seed("ftail_random", |seed| {
        let mut rng = Rng::new(seed);
        let deadline = Instant::now() + common::budget(Duration::from_secs(20));
        let mut rounds = 0;
        while rounds < 3 || Instant::now() < deadline {
            rounds += 1;
            let kmax = 3 + rng.below(12) as i64;
            let n = 5 + rng.below(20) as usize;
            let h = random_history(&mut rng, n, kmax);
            let i0 = rng.below(h.revs.len() as u64) as usize;
            let ft = DeltaFTail::new(h.revs[i0], h.storage());
            let file = h.gen.file();
            // the explicit set since the last epoch; `ever` for checks
            let mut explicit: BTreeSet<i64> = BTreeSet::new();
            track_some(&h, &ft, &mut rng, kmax, h.revs[i0], &mut explicit);
            for i in i0 + 1..h.revs.len() {
                let df = ft.update(h.revs[i], &h.oids[i]).unwrap();
                let ctx = format!("round {rounds} seed {seed}: Update @{i} [{}]", h.what[i]);
                if let Some(d) = df.by_file.get(&file) {
                    assert_eq!(d.rev, h.revs[i]);
                    if d.epoch {
                        assert!(h.epoch(i), "{ctx}: epoch reported");
                    } else {
                        for b in &d.blocks {
                            assert!(h.changed(i, *b), "{ctx}: #{b} reported, not changed");
                        }
                    }
                }
                if std::env::var("DBG").is_ok() {
                    eprintln!(
                        "@{i} {} epoch={} df={:?} explicit={explicit:?} engine={}",
                        h.what[i],
                        h.epoch(i),
                        df.by_file.get(&file),
                        ft.explicitly_tracked(file)
                    );
                }
                if h.epoch(i) {
                    explicit.clear();
                } else {
                    for b in &explicit {
                        if h.changed(i, *b) {
                            assert!(
                                df.by_file.get(&file).is_some_and(|d| d.blocks.contains(b)),
                                "{ctx}: tracked #{b} changed, not in δF {df:?}"
                            );
                        }
                    }
                }
                if rng.chance(1, 2) {
                    track_some(&h, &ft, &mut rng, kmax, h.revs[i], &mut explicit);
                }
            }
            if ft.slice_by_file_rev(file, ft.tail(), ft.head()).is_err() {
                continue;
            }
            let ctx = format!("round {rounds} seed {seed}");
            // the file must be known for BlkRevAt: track one block if not
            track_some(&h, &ft, &mut Rng::new(1), kmax, ft.head(), &mut explicit);
            if ft.blk_rev_at(file, 0, ft.head()).is_err() {
                continue; // never tracked (deleted at every point we tried)
            }
            check_all(&h, &ft, kmax, &explicit, &ctx);
            let cut = i0 + rng.below((h.revs.len() - i0) as u64) as usize;
            ft.forget_past(h.revs[cut]).unwrap();
            check_all(&h, &ft, kmax, &explicit, &format!("{ctx} forget {cut}"));
        }
        eprintln!("ftail_random: {rounds} rounds, seed {seed}");
    });
}

#[test]
fn ftail_untracked_file() {
    let h = FHistory::new();
    let ft = DeltaFTail::new(h.revs[0], h.storage());
    assert!(ft.blk_rev_at(h.gen.file(), 0, h.revs[0]).is_err());
    assert!(ft
        .slice_by_file_rev(h.gen.file(), h.revs[0], h.revs[0])
        .unwrap()
        .is_empty());
    let _ = RangedKeySet::new();
}

/// `reset(at)`: everything forgotten (coverage `(at, at]`, nothing
/// tracked); from there on the same oracle holds as for a ΔFtail made at
/// `at`.
#[test]
fn ftail_reset() {
    common::with_seed("ftail_reset", |seed| {
        let mut rng = Rng::new(seed);
        for round in 0..20 {
            let kmax = 3 + rng.below(8) as i64;
            let n = 8 + rng.below(12) as usize;
            let h = random_history(&mut rng, n, kmax);
            let file = h.gen.file();
            let ft = DeltaFTail::new(h.revs[0], h.storage());
            let mut explicit: BTreeSet<i64> = BTreeSet::new();
            track_some(&h, &ft, &mut rng, kmax, h.revs[0], &mut explicit);
            let k = 1 + rng.below(h.revs.len() as u64 - 1) as usize;
            for i in 1..=k {
                ft.update(h.revs[i], &h.oids[i]).unwrap();
                track_some(&h, &ft, &mut rng, kmax, h.revs[i], &mut explicit);
            }
            ft.reset(h.revs[k]);
            assert_eq!((ft.tail(), ft.head()), (h.revs[k], h.revs[k]));
            assert_eq!(ft.explicitly_tracked_count(), 0);
            assert!(ft.blk_rev_at(file, 0, h.revs[k]).is_err(), "file forgotten");
            let mut explicit: BTreeSet<i64> = BTreeSet::new();
            track_some(&h, &ft, &mut rng, kmax, h.revs[k], &mut explicit);
            for i in k + 1..h.revs.len() {
                ft.update(h.revs[i], &h.oids[i]).unwrap();
                if h.epoch(i) {
                    explicit.clear();
                }
                if rng.chance(1, 2) {
                    track_some(&h, &ft, &mut rng, kmax, h.revs[i], &mut explicit);
                }
            }
            if ft.slice_by_file_rev(file, ft.tail(), ft.head()).is_err() {
                continue;
            }
            track_some(&h, &ft, &mut Rng::new(1), kmax, ft.head(), &mut explicit);
            if ft.blk_rev_at(file, 0, ft.head()).is_err() {
                continue;
            }
            let ctx = format!("round {round} seed {seed}: reset @{k}");
            check_all(&h, &ft, kmax, &explicit, &ctx);
        }
    });
}

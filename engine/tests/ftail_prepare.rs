//! ΔFtail's Update in two parts (`prepare_update` beside readers,
//! `apply_update` as the writer), against a brute-force oracle: every
//! block of the file loaded at every revision.
//!
//! Between the two parts, as the server's READs and setups do while a
//! commit is being prepared, blocks are tracked as loaded at the old head
//! (some for the first time) and BlkRevAt is asked about tracked blocks
//! (which rebuilds and merges histories at the old head). Then:
//!
//! - every block read (tracked) and not invalidated since, whose content
//!   the transaction changed, is in δF (the server invalidates exactly
//!   those: a miss is stale data in the page cache);
//! - BlkRevAt of every tracked block at every revision is the oracle's
//!   last change of that block at or before it.
//!
//! Seeded (`WCFS_TEST_SEED` replays); blktabs of tiny nodes so that
//! commits split and merge buckets.

mod common;

use engine::ftail::DeltaFTail;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use zodb::zbigfile::{ZBigFile, ZBlkFormat};
use zodb::zwrite::ZWriter;
use zodb::{Oid, Storage, Tid};

const NBLK: i64 = 16;
const BS: u64 = 8;

/// Every block's bytes at one revision.
type Content = Vec<Vec<u8>>;

fn content(stor: &dyn Storage, f: Oid, at: Tid) -> Content {
    let zf = ZBigFile::load(stor, f, at).unwrap();
    (0..NBLK)
        .map(|b| {
            let mut v = zf.load_blk(stor, b, at).unwrap().data.to_vec();
            v.resize(BS as usize, 0);
            v
        })
        .collect()
}

fn track(ft: &DeltaFTail, stor: &dyn Storage, f: Oid, b: i64, at: Tid) {
    let zf = ZBigFile::load(stor, f, at).unwrap();
    let blk = zf.load_blk(stor, b, at).unwrap();
    ft.track(&zf, b, &blk.path, blk.keycov, blk.zblk).unwrap();
}

fn run(seed: u64) {
    let mut rng = common::Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let mut zw = ZWriter::open(&path).unwrap();
    zw.blktab_shape.max_bucket = 2 + rng.below(3) as usize;
    zw.blktab_shape.max_tree = 2 + rng.below(3) as usize;
    let mut ver = 0u32;
    let mut data = |b: i64| {
        ver += 1;
        format!("{b:02}v{ver:05}").into_bytes()
    };
    let init: Vec<(i64, Vec<u8>)> = (0..NBLK).map(|b| (b, data(b))).collect();
    let ch: Vec<_> = init
        .iter()
        .map(|(b, d)| (*b, Some((ZBlkFormat::ZBlk0, &d[..]))))
        .collect();
    let (f, at0) = zw.create_file("f", BS, &ch).unwrap();
    let stor: Arc<dyn Storage> = Arc::new(zodb::fs1::FileStorage::open(&path).unwrap());
    let ft = DeltaFTail::new(at0, stor.clone());
    let mut revs: Vec<Tid> = vec![at0];
    let mut states: BTreeMap<Tid, Content> = BTreeMap::new();
    states.insert(at0, content(&*stor, f, at0));
    // tracked: ever passed to Track (BlkRevAt is asked about these);
    // cached: read (tracked) and not invalidated since, as the kernel holds
    // them: δF must name every one of these that a transaction changes
    let mut tracked: BTreeSet<i64> = BTreeSet::new();
    let mut cached: BTreeSet<i64> = BTreeSet::new();
    for _ in 0..1 + rng.below(4) {
        let b = rng.below(NBLK as u64) as i64;
        track(&ft, &*stor, f, b, at0);
        tracked.insert(b);
        cached.insert(b);
    }
    for step in 0..25 {
        let head = *revs.last().unwrap();
        // a transaction: rewrites, deletions (never the last block) and
        // bulk writes
        let mut changes: BTreeMap<i64, Option<Vec<u8>>> = BTreeMap::new();
        match rng.below(3) {
            0 => {
                for _ in 0..1 + rng.below(3) {
                    let b = rng.below(NBLK as u64) as i64;
                    changes.insert(b, Some(data(b)));
                }
            }
            1 => {
                let lo = rng.below(NBLK as u64 - 1) as i64;
                for b in lo..(lo + 1 + rng.below(6) as i64).min(NBLK - 1) {
                    changes.insert(b, None);
                }
            }
            _ => {
                let lo = rng.below(NBLK as u64) as i64;
                for b in lo..(lo + 1 + rng.below(8) as i64).min(NBLK) {
                    changes.insert(b, Some(data(b)));
                }
            }
        }
        let ch: Vec<_> = changes
            .iter()
            .map(|(b, d)| (*b, d.as_ref().map(|d| (ZBlkFormat::ZBlk0, &d[..]))))
            .collect();
        let tid = zw.update_file(f, &ch).unwrap();
        stor.sync().unwrap();
        let txn = stor.iterate(tid, tid).unwrap().next().unwrap().unwrap();
        states.insert(tid, content(&*stor, f, tid));

        let p = ft.prepare_update(tid, &txn.oids).unwrap();
        // readers meanwhile, at the old head: Tracks (new blocks too) and
        // queries that build histories
        let mut late = Vec::new();
        for _ in 0..rng.below(4) {
            let b = rng.below(NBLK as u64) as i64;
            track(&ft, &*stor, f, b, head);
            tracked.insert(b);
            cached.insert(b);
            late.push(b);
        }
        let ask: Vec<i64> = tracked.iter().copied().collect();
        for b in ask {
            if rng.below(2) == 0 {
                let at = revs[rng.below(revs.len() as u64) as usize];
                ft.blk_rev_at(f, b, at).unwrap();
            }
        }
        let df = ft.apply_update(p).unwrap();
        revs.push(tid);

        let (old, new) = (&states[&head], &states[&tid]);
        let got: BTreeSet<i64> = df
            .by_file
            .get(&f)
            .map(|d| d.blocks.iter().copied().collect())
            .unwrap_or_default();
        for &b in &cached {
            if old[b as usize] != new[b as usize] {
                assert!(
                    got.contains(&b),
                    "seed {seed} step {step}: tracked #{b} changed @{tid} but δF {got:?}; late {late:?}; changes {:?}", changes.keys().collect::<Vec<_>>()
                );
            }
        }
        // what δF names is invalidated: read again (and tracked) later
        for b in &got {
            cached.remove(b);
        }
        for _ in 0..rng.below(3) {
            let b = rng.below(NBLK as u64) as i64;
            track(&ft, &*stor, f, b, tid);
            tracked.insert(b);
            cached.insert(b);
        }
        // BlkRevAt of every tracked block at every revision
        for &b in &tracked {
            for (i, &at) in revs.iter().enumerate() {
                let want = revs[..=i]
                    .windows(2)
                    .rev()
                    .find(|w| states[&w[0]][b as usize] != states[&w[1]][b as usize])
                    .map_or(at0, |w| w[1]);
                let (rev, _) = ft.blk_rev_at(f, b, at).unwrap();
                // BlkRevAt may name a later revision that changed the
                // block's ZBlk or binding without changing its bytes; it
                // must never miss a change
                assert!(
                    rev >= want && rev <= at,
                    "seed {seed} step {step}: BlkRevAt(#{b}, @{at}) = {rev}, oracle {want}"
                );
                if rev != want {
                    assert_eq!(
                        states[&rev][b as usize], states[&want][b as usize],
                        "seed {seed} step {step}: BlkRevAt(#{b}, @{at}) = {rev}: no such change"
                    );
                }
            }
        }
    }
}

#[test]
fn prepare_apply_with_readers_in_between() {
    common::with_seed("prepare_apply_with_readers_in_between", |seed| {
        let mut rng = common::Rng::new(seed);
        for _ in 0..40 {
            run(rng.next());
        }
    });
}

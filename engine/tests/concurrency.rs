//! Many threads Track and query while one thread Updates, under the
//! caller's contract (wcfs's head lock: Update with it held for writing,
//! Track and queries with it held for reading). Every answer must equal the
//! sequential oracle's (the whole tree at every revision). Readers track
//! keys at random, so rebuilds of overlapping and disjoint keys race each
//! other and queries wait for each other's rebuilds.

mod common;

use common::{History, Rng, Step};
use engine::btail::DeltaBTail;
use engine::ftail::DeltaFTail;
use rangeset::{KeyRange, RangedKeySet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBigFile;

#[test]
fn btail_concurrent_track_query_update() {
    common::with_seed("btail_concurrent_track_query_update", |seed| {
        let mut rng = Rng::new(seed);
        let deadline = Instant::now() + common::budget(Duration::from_secs(15));
        let mut rounds = 0;
        while rounds < 2 || Instant::now() < deadline {
            rounds += 1;
            let kmax = 10 + rng.below(30) as i64;
            let mut h = History::new();
            for _ in 0..20 + rng.below(20) {
                let kv = common::random_kv(&mut rng, kmax, 6);
                let s = if rng.chance(1, 8) {
                    Step::Data(vec!["b".into()])
                } else {
                    Step::Tree(common::random_topology(&mut rng, &kv, 3, 3))
                };
                h.step(&s);
            }
            run(&h, rng.next(), kmax);
        }
        eprintln!("concurrency: {rounds} rounds, seed {seed}");
    });
}

/// `head`: index of the ΔBtail's head in `h`; `tail` likewise.
struct Pos {
    head: AtomicUsize,
    tail: AtomicUsize,
}

fn run(h: &History, seed: u64, kmax: i64) {
    let root = h.tree();
    let bt = DeltaBTail::new(h.revs[0], h.storage());
    let zhead = RwLock::new(()); // the caller's head lock
    let pos = Pos {
        head: AtomicUsize::new(0),
        tail: AtomicUsize::new(0),
    };
    let done = AtomicBool::new(false);
    let queries = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (bt, zhead, pos, done, queries) = (&bt, &zhead, &pos, &done, &queries);
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ ((t + 1) * 0x1234_5678));
                while !done.load(Ordering::Acquire) {
                    let _r = zhead.read().unwrap();
                    // the updater moves pos only under the write lock
                    let (ih, it) = (
                        pos.head.load(Ordering::Relaxed),
                        pos.tail.load(Ordering::Relaxed),
                    );
                    let k = rng.below(kmax as u64 + 4) as i64 - 2;
                    let width = rng.below(4) as i64;
                    let mut keys = RangedKeySet::new();
                    keys.add_range(KeyRange::new(k, k + width));
                    bt.track_keys(root, &keys);
                    for _ in 0..4 {
                        let q = k + rng.below(width as u64 + 1) as i64;
                        let i = it + rng.below((ih - it + 1) as u64) as usize;
                        let got = bt.get_at(root, q, h.revs[i]).unwrap();
                        let want = common::get_at(h, q, i, it, ih);
                        assert_eq!(got, want, "GetAt({q}, @{i}) window ({it}, {ih}]");
                        queries.fetch_add(1, Ordering::Relaxed);
                    }
                    if rng.chance(1, 16) {
                        // a whole-history slice for the keys just tracked
                        let sl = bt.slice_by_root_rev(root, h.revs[it], h.revs[ih]).unwrap();
                        for e in sl.iter() {
                            let i = h.index_at(e.rev);
                            for (key, dv) in &e.kv {
                                let d = h.delta(i, &RangedKeySet::from_iter([*key]));
                                assert_eq!(d.get(key), Some(dv), "slice @{i} key {key}");
                            }
                        }
                    }
                }
            });
        }
        // the updater
        let mut rng = Rng::new(seed);
        for i in 1..h.revs.len() {
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
            let _w = zhead.write().unwrap();
            bt.update(h.revs[i], &h.oids[i]).unwrap();
            pos.head.store(i, Ordering::Relaxed);
            if rng.chance(1, 8) {
                let cut = pos.tail.load(Ordering::Relaxed)
                    + rng.below((i - pos.tail.load(Ordering::Relaxed)) as u64 / 2 + 1) as usize;
                bt.forget_past(h.revs[cut]).unwrap();
                pos.tail.store(cut, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        done.store(true, Ordering::Release);
    });
    assert!(queries.load(Ordering::Relaxed) > 0);
}

/// The same for ΔFtail: readers Track blocks as the server does on READ
/// (path and ZBlk of the block loaded at head) and ask BlkRevAt, with and
/// without the head hint, while one thread Updates.
#[test]
fn ftail_concurrent_track_blkrevat_update() {
    common::with_seed("ftail_concurrent_track_blkrevat_update", |seed| {
        let mut rng = Rng::new(seed);
        let deadline = Instant::now() + common::budget(Duration::from_secs(10));
        let mut rounds = 0;
        while rounds < 2 || Instant::now() < deadline {
            rounds += 1;
            let kmax = 10 + rng.below(30) as i64;
            let mut h = History::new();
            for _ in 0..20 + rng.below(20) {
                let kv = common::random_kv(&mut rng, kmax, 6);
                let s = if rng.chance(1, 5) {
                    Step::Data(vec!["b".into(), "d".into()])
                } else {
                    Step::Tree(common::random_topology(&mut rng, &kv, 3, 3))
                };
                h.step(&s);
            }
            run_ftail(&h, rng.next(), kmax);
        }
        eprintln!("ftail concurrency: {rounds} rounds, seed {seed}");
    });
}

/// Oracle: last revision in `(it, i]` that changed block `k` (binding
/// changed, or the bound ZBlk stored); no epochs in these histories.
fn blk_rev(h: &History, k: i64, i: usize, it: usize) -> (zodb::Tid, bool) {
    for j in (it + 1..=i).rev() {
        let z = h.states[j].get(&k);
        if h.states[j - 1].get(&k) != z || z.is_some_and(|z| h.oids[j].contains(z)) {
            return (h.revs[j], true);
        }
    }
    (h.revs[it], false)
}

fn run_ftail(h: &History, seed: u64, kmax: i64) {
    let ft = DeltaFTail::new(h.revs[0], h.storage());
    let db = h.storage();
    let fileoid = h.gen.file();
    let zhead = RwLock::new(());
    let pos = Pos {
        head: AtomicUsize::new(0),
        tail: AtomicUsize::new(0),
    };
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (ft, db, zhead, pos, done) = (&ft, &db, &zhead, &pos, &done);
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ ((t + 1) * 0x8765_4321));
                while !done.load(Ordering::Acquire) {
                    let _r = zhead.read().unwrap();
                    let (ih, it) = (
                        pos.head.load(Ordering::Relaxed),
                        pos.tail.load(Ordering::Relaxed),
                    );
                    let head = h.revs[ih];
                    let f = ZBigFile::load(&**db, fileoid, head).unwrap();
                    let k = rng.below(kmax as u64 + 2) as i64;
                    let b = f.load_blk(&**db, k, head).unwrap();
                    ft.track(&f, k, &b.path, b.keycov, b.zblk).unwrap();
                    for _ in 0..4 {
                        let i = it + rng.below((ih - it + 1) as u64) as usize;
                        let want = blk_rev(h, k, i, it);
                        let got = ft.blk_rev_at(fileoid, k, h.revs[i]).unwrap();
                        assert_eq!(got, want, "BlkRevAt(#{k}, @{i}) window ({it}, {ih}]");
                        let hint = Some(b.zblk.unwrap_or(zodb::Oid::INVALID));
                        let got = ft.blk_rev_at_hint(fileoid, k, h.revs[i], hint).unwrap();
                        assert_eq!(got, want, "BlkRevAt(#{k}, @{i}) with hint");
                        // a block nobody tracked: BlkRevAt tracks it itself
                        let u = rng.below(kmax as u64 + 2) as i64;
                        let got = ft.blk_rev_at(fileoid, u, h.revs[i]).unwrap();
                        assert_eq!(got, blk_rev(h, u, i, it), "BlkRevAt(#{u}, @{i}) untracked");
                    }
                }
            });
        }
        let mut rng = Rng::new(seed);
        for i in 1..h.revs.len() {
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
            let _w = zhead.write().unwrap();
            ft.update(h.revs[i], &h.oids[i]).unwrap();
            pos.head.store(i, Ordering::Relaxed);
            if rng.chance(1, 8) {
                let t = pos.tail.load(Ordering::Relaxed);
                let cut = t + rng.below((i - t) as u64 / 2 + 1) as usize;
                ft.forget_past(h.revs[cut]).unwrap();
                pos.tail.store(cut, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        done.store(true, Ordering::Release);
    });
}

//! Stress: several std threads mix `RcuCell` loads and updates with
//! `JobRegistry` queries (the engine's rebuild protocol, some workers
//! abandoning their job), and check the invariants throughout:
//!
//! - every loaded version is internally consistent (`items` holds exactly
//!   `0..rev`), and versions seen by one reader never go backwards;
//! - no update is lost (the final `rev` is the number of updates);
//! - under the registry lock, `pending`, `in_progress` and `built` are
//!   pairwise disjoint and together cover the universe;
//! - after a query, every key it asked for is built (retrying when a job it
//!   waited for was abandoned).
//!
//! No timing is asserted. The seed is fixed per thread (`WCFS_TEST_SEED`
//! changes it); sizes shrink under Miri.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use rcu::{Abandoned, JobRegistry, KeyRange, RangedKeySet, RcuCell};

/// The cell's value: `items == [0, 1, .., rev-1]`.
#[derive(Clone)]
struct Version {
    rev: u64,
    items: Vec<u64>,
}

/// The registry's user state.
struct Track {
    pending: RangedKeySet,
    built: RangedKeySet,
}

/// Keys `[0, UNIVERSE)`.
const UNIVERSE: i64 = 64;

/// A small xorshift generator, enough for picking ranges.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn seed() -> u64 {
    let s = std::env::var("WCFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("stress: WCFS_TEST_SEED={s}");
    s
}

fn check_track(t: &Track, in_progress: &RangedKeySet) {
    let all = KeyRange::new(0, UNIVERSE - 1);
    assert!(t.pending.intersection(&t.built).is_empty());
    assert!(t.pending.intersection(in_progress).is_empty());
    assert!(t.built.intersection(in_progress).is_empty());
    let u = t.pending.union(&t.built).union(in_progress);
    assert!(u.has_range(all) && u.len_ranges() == 1, "keys lost: {u}");
}

/// One engine-style query for `want`, until all of `want` is built; a
/// quarter of the jobs it starts are dropped instead of finished.
fn query(reg: &JobRegistry<Track, ()>, want: &RangedKeySet, rng: &mut Rng, builds: &AtomicUsize) {
    loop {
        let (job, others) = {
            let mut g = reg.lock();
            check_track(&g, g.in_progress());
            let mine = g.pending.intersection(want);
            g.pending.difference_in_place(&mine);
            let others = g.overlapping(want);
            let job = if mine.is_empty() {
                None
            } else {
                let mut job = g
                    .start(mine.clone())
                    .expect("pending keys are never in progress");
                job.on_abandon(move |s| s.pending.union_in_place(&mine));
                Some(job)
            };
            (job, others)
        };
        let mut abandoned = false;
        if let Some(job) = job {
            if rng.below(4) == 0 {
                drop(job); // the worker failed
                abandoned = true;
            } else {
                builds.fetch_add(1, Ordering::Relaxed);
                let mine = job.keys().clone();
                job.finish_with(move |s| s.built.union_in_place(&mine), ());
            }
        }
        for w in others {
            match w.wait() {
                Ok(()) => {}
                Err(Abandoned) => abandoned = true,
            }
        }
        let g = reg.lock();
        if g.built.intersection(want) == *want {
            return;
        }
        assert!(abandoned, "keys unbuilt though no job was abandoned");
    }
}

#[test]
fn loads_updates_and_jobs() {
    let (threads, rounds) = if cfg!(miri) { (3, 10) } else { (6, 5000) };
    let seed = seed();
    let cell = RcuCell::new(Version {
        rev: 0,
        items: Vec::new(),
    });
    let updates = AtomicUsize::new(0);
    let builds = AtomicUsize::new(0);
    // Repeat the registry part so that many keys get built from scratch.
    let regs: Vec<JobRegistry<Track, ()>> = (0..if cfg!(miri) { 2 } else { 50 })
        .map(|_| {
            let mut pending = RangedKeySet::new();
            pending.add_range(KeyRange::new(0, UNIVERSE - 1));
            JobRegistry::new(Track {
                pending,
                built: RangedKeySet::new(),
            })
        })
        .collect();
    thread::scope(|s| {
        for t in 0..threads {
            let (cell, updates, builds, regs) = (&cell, &updates, &builds, &regs);
            s.spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(t as u64 + 1) | 1);
                let mut last = 0;
                for i in 0..rounds {
                    match rng.below(8) {
                        0 => {
                            cell.update(|v| {
                                let mut n = v.clone();
                                n.items.push(n.rev);
                                n.rev += 1;
                                n
                            });
                            updates.fetch_add(1, Ordering::Relaxed);
                        }
                        1 | 2 => {
                            let reg = &regs[(i * regs.len()) / rounds];
                            let lo = rng.below(UNIVERSE as u64) as i64;
                            let hi = (lo + rng.below(16) as i64).min(UNIVERSE - 1);
                            let mut want = RangedKeySet::new();
                            want.add_range(KeyRange::new(lo, hi));
                            query(reg, &want, &mut rng, builds);
                        }
                        _ => {
                            let v = cell.load();
                            assert_eq!(v.items.len() as u64, v.rev);
                            assert!(v.items.iter().copied().eq(0..v.rev), "torn version");
                            assert!(v.rev >= last, "versions went backwards");
                            last = v.rev;
                        }
                    }
                }
            });
        }
    });
    assert_eq!(cell.load().rev, updates.load(Ordering::Relaxed) as u64);
    for reg in &regs {
        let g = reg.lock();
        assert!(g.in_progress().is_empty());
        check_track(&g, g.in_progress());
    }
    eprintln!(
        "stress: {} updates, {} jobs finished",
        updates.load(Ordering::Relaxed),
        builds.load(Ordering::Relaxed)
    );
}

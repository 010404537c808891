//! [`JobRegistry`]: which pieces of work over key ranges are in progress,
//! and a way to wait for exactly one of them.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
#[cfg(not(loom))]
use std::time::{Duration, Instant};

use rangeset::RangedKeySet;

use crate::sync::{lock, Arc, Condvar, Mutex, MutexGuard};

/// The worker of a job dropped its [`JobHandle`] without publishing a result
/// (an error or a panic in the worker). The keys it covered are no longer in
/// progress; whoever needs them must look again.
#[derive(Debug, Copy, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job abandoned: its worker stopped without publishing a result")]
pub struct Abandoned;

/// [`RegistryGuard::start`] refused keys that an in-progress job covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("keys {keys} are already covered by a job in progress")]
pub struct Overlap {
    /// The requested keys that in-progress jobs cover (non-empty).
    pub keys: RangedKeySet,
}

/// A registry of in-progress jobs over `i64` key ranges, plus user state `S`
/// kept under the same lock.
///
/// A job is a piece of work that covers a [`RangedKeySet`] and ends with a
/// result `R`. Typical use (the engine's ΔBtail rebuild): under one short
/// [`lock`](Self::lock), look at `S`, take the pending keys this query will
/// build itself out of `S`, [`start`](RegistryGuard::start) a job for them
/// and collect [`overlapping`](RegistryGuard::overlapping) jobs of others;
/// then, with no lock held, do the work, [`finish`](JobHandle::finish) (or
/// [`finish_with`](JobHandle::finish_with) to update `S` atomically with the
/// job's removal) and [`wait`](JobWait::wait) for the collected jobs.
///
/// # Invariants
///
/// Under the registry lock:
/// - in-progress jobs cover pairwise disjoint key sets, and
///   [`in_progress`](RegistryGuard::in_progress) is their union;
/// - a job is listed ⇔ its outcome is not published yet. Removal from the
///   list and publication of the outcome happen in one critical section, so
///   a thread that holds the lock sees every job either in progress or done,
///   and any `S` update made by `finish_with` together with that.
/// - every job ends exactly once: finished with its result, or abandoned
///   (handle dropped, or [`cancel`](RegistryGuard::cancel)ed), which wakes
///   its waiters with [`Abandoned`]. No waiter can hang on a job whose
///   handle is gone.
///
/// # Concurrency and locks
///
/// - `registry lock` (one `Mutex` per registry) protects `S`, the job list
///   and the coverage. It is held by a [`RegistryGuard`], and briefly by
///   `finish*`, `abandon_with` and a handle's drop. The only user code that
///   runs under it is the closures given to those (and the caller's own code
///   between `lock()` and dropping the guard); they must be short and must
///   not block or take locks that may be held by someone waiting for this
///   registry.
/// - `job lock` (one `Mutex` + `Condvar` per job) protects that job's
///   outcome. Waiters take only it. `R::clone` runs under it.
///
/// Lock order: `registry lock > job lock`; both are leaf locks otherwise.
/// Hence, while holding a [`RegistryGuard`] of a registry, never
/// [`wait`](JobWait::wait) for one of its jobs and never finish, abandon or
/// drop one of its [`JobHandle`]s: the registry lock is not reentrant and
/// that deadlocks. Use [`RegistryGuard::cancel`] to give up a job while
/// holding the guard.
///
/// All types here are `Send + Sync` when `S: Send` and `R: Send` (`R: Sync`
/// for [`JobWait`] sharing); a [`JobHandle`] may finish on another thread
/// than the one that started it. The registry is a cheap handle
/// (`Clone`) on shared state.
pub struct JobRegistry<S, R> {
    /// Shared with every [`JobHandle`], which must find the registry to
    /// remove itself.
    shared: Arc<Shared<S, R>>,
}

/// The state behind a registry.
struct Shared<S, R> {
    /// The registry lock. See [`JobRegistry`] for what it protects.
    mu: Mutex<Table<S, R>>,
}

/// What the registry lock protects.
struct Table<S, R> {
    /// The user's state.
    state: S,
    /// Job id -> job: exactly the in-progress jobs.
    jobs: BTreeMap<u64, Arc<Job<R>>>,
    /// Union of `jobs[*].keys` (which are pairwise disjoint).
    coverage: RangedKeySet,
    /// The id of the next job to start.
    next_id: u64,
}

/// One job: its keys and, once it ended, its outcome.
struct Job<R> {
    /// Key in `Table::jobs`.
    id: u64,
    /// The keys it covers; immutable.
    keys: RangedKeySet,
    /// `None` while in progress; set exactly once, with the registry lock
    /// held (lock order registry > job).
    outcome: Mutex<Option<Result<R, Abandoned>>>,
    /// Signalled (`notify_all`) after `outcome` is set. Waiters check
    /// `outcome` under its lock before sleeping, so they cannot miss it.
    done_cv: Condvar,
}

/// The registry lock held: access to `S` (through `Deref`/`DerefMut`) and to
/// the job list, all as one critical section.
///
/// Invariant: while it exists, no job starts or ends. Drop it before running
/// or waiting for jobs (see the lock order on [`JobRegistry`]).
pub struct RegistryGuard<'a, S, R> {
    /// The held registry lock.
    table: MutexGuard<'a, Table<S, R>>,
    /// To give new handles a reference to the registry.
    shared: &'a Arc<Shared<S, R>>,
}

/// The right and duty to end one in-progress job.
///
/// Invariant: the job stays in progress (listed, its keys covered, its
/// waiters asleep) until this handle is consumed by
/// [`finish`](Self::finish) / [`finish_with`](Self::finish_with) /
/// [`abandon_with`](Self::abandon_with), dropped, or given to
/// [`RegistryGuard::cancel`]. Dropping it is abandoning: under the registry
/// lock the job is removed and its waiters get [`Abandoned`], then the hook
/// set by [`on_abandon`](Self::on_abandon) runs on `S` (to put back what the
/// starter took out of `S` for this job).
///
/// Ending the job takes the registry lock: see the lock order on
/// [`JobRegistry`].
#[must_use = "dropping a JobHandle abandons its job"]
pub struct JobHandle<S, R> {
    /// The registry the job is listed in.
    shared: Arc<Shared<S, R>>,
    /// The job.
    job: Arc<Job<R>>,
    /// Runs on `S` if the job is abandoned.
    on_abandon: Option<AbandonHook<S>>,
    /// Whether the job is still in progress (false once ended through this
    /// handle, so that `Drop` does nothing).
    armed: bool,
}

/// A closure that repairs `S` when a job is abandoned.
type AbandonHook<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A ticket to wait for one job's outcome.
///
/// Invariant: the outcome, once published, never changes; every `JobWait`
/// of a job sees the same one. Waiting takes only that job's lock, never
/// the registry lock: it waits for exactly that job. Cheap to clone.
pub struct JobWait<R> {
    /// The job waited for.
    job: Arc<Job<R>>,
}

impl<S, R> JobRegistry<S, R> {
    /// An empty registry (no job in progress) holding user state `state`.
    pub fn new(state: S) -> Self {
        JobRegistry {
            shared: Arc::new(Shared {
                mu: Mutex::new(Table {
                    state,
                    jobs: BTreeMap::new(),
                    coverage: RangedKeySet::new(),
                    next_id: 0,
                }),
            }),
        }
    }

    /// Takes the registry lock. Keep the critical section short: it is
    /// shared with every job's start and end.
    pub fn lock(&self) -> RegistryGuard<'_, S, R> {
        RegistryGuard {
            table: lock(&self.shared.mu),
            shared: &self.shared,
        }
    }
}

impl<S, R> Clone for JobRegistry<S, R> {
    /// Another handle on the same registry.
    fn clone(&self) -> Self {
        JobRegistry {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Default, R> Default for JobRegistry<S, R> {
    fn default() -> Self {
        JobRegistry::new(S::default())
    }
}

impl<S, R> fmt::Debug for JobRegistry<S, R> {
    /// Shows the in-progress coverage (takes the registry lock).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.lock();
        f.debug_struct("JobRegistry")
            .field("jobs", &g.table.jobs.len())
            .field("in_progress", &g.table.coverage)
            .finish_non_exhaustive()
    }
}

impl<S, R> RegistryGuard<'_, S, R> {
    /// Handles on every in-progress job whose keys intersect `keys`, in
    /// start order. Jobs are disjoint, so each appears once.
    pub fn overlapping(&self, keys: &RangedKeySet) -> Vec<JobWait<R>> {
        if !keys
            .ranges()
            .any(|r| self.table.coverage.intersects_range(r))
        {
            return Vec::new();
        }
        self.table
            .jobs
            .values()
            .filter(|job| keys.ranges().any(|r| job.keys.intersects_range(r)))
            .map(|job| JobWait { job: job.clone() })
            .collect()
    }

    /// Registers a job covering `keys`, or refuses with the part of `keys`
    /// that in-progress jobs already cover.
    ///
    /// An empty `keys` is allowed: such a job overlaps nothing, so no one
    /// finds it through [`overlapping`](Self::overlapping).
    pub fn start(&mut self, keys: RangedKeySet) -> Result<JobHandle<S, R>, Overlap> {
        let clash = self.table.coverage.intersection(&keys);
        if !clash.is_empty() {
            return Err(Overlap { keys: clash });
        }
        let t = &mut *self.table;
        let id = t.next_id;
        t.next_id += 1;
        t.coverage.union_in_place(&keys);
        let job = Arc::new(Job {
            id,
            keys,
            outcome: Mutex::new(None),
            done_cv: Condvar::new(),
        });
        t.jobs.insert(id, job.clone());
        Ok(JobHandle {
            shared: self.shared.clone(),
            job,
            on_abandon: None,
            armed: true,
        })
    }

    /// Abandons `job` under the lock already held: as dropping the handle
    /// does, but without retaking the lock (the abandon hook runs too).
    ///
    /// # Panics
    ///
    /// If `job` belongs to another registry.
    pub fn cancel(&mut self, mut job: JobHandle<S, R>) {
        assert!(
            Arc::ptr_eq(&job.shared, self.shared),
            "cancel: the job belongs to another registry"
        );
        job.armed = false;
        retire(&mut self.table, &job.job, Err(Abandoned));
        if let Some(hook) = job.on_abandon.take() {
            hook(&mut self.table.state);
        }
        // Waking with the registry lock held is harmless: waiters never
        // take it.
        job.job.done_cv.notify_all();
    }

    /// The union of the keys of all in-progress jobs.
    pub fn in_progress(&self) -> &RangedKeySet {
        &self.table.coverage
    }

    /// The keys of each in-progress job, in start order.
    pub fn jobs(&self) -> impl Iterator<Item = &RangedKeySet> + '_ {
        self.table.jobs.values().map(|job| &job.keys)
    }
}

impl<S, R> Deref for RegistryGuard<'_, S, R> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.table.state
    }
}

impl<S, R> DerefMut for RegistryGuard<'_, S, R> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.table.state
    }
}

/// Ends `job`: unlists it and publishes `outcome`, with the registry lock
/// (`t`) held. The caller notifies `job.done_cv` afterwards.
///
/// Only plain bookkeeping runs here (no user code but moving `R`), so a
/// panic cannot leave the table half-updated.
fn retire<S, R>(t: &mut Table<S, R>, job: &Job<R>, outcome: Result<R, Abandoned>) {
    let listed = t.jobs.remove(&job.id);
    debug_assert!(listed.is_some(), "job ended twice");
    t.coverage.difference_in_place(&job.keys);
    let mut o = lock(&job.outcome);
    debug_assert!(o.is_none(), "job outcome published twice");
    *o = Some(outcome);
}

impl<S, R> JobHandle<S, R> {
    /// The keys this job covers.
    pub fn keys(&self) -> &RangedKeySet {
        &self.job.keys
    }

    /// A ticket to wait for this job's outcome (e.g. to hand to others).
    pub fn waiter(&self) -> JobWait<R> {
        JobWait {
            job: self.job.clone(),
        }
    }

    /// Sets the hook run on `S`, under the registry lock, if this job is
    /// abandoned (handle dropped, [`abandon_with`](Self::abandon_with),
    /// [`RegistryGuard::cancel`], or a panic in `finish_with`'s closure);
    /// replaces any previous hook. It runs after the job is unlisted and its
    /// waiters are marked [`Abandoned`], and it must not panic (it may run
    /// during unwinding, where a panic aborts).
    pub fn on_abandon(&mut self, hook: impl FnOnce(&mut S) + Send + 'static) {
        self.on_abandon = Some(Box::new(hook));
    }

    /// Publishes `result` to the waiters and removes the job.
    pub fn finish(self, result: R) {
        self.finish_with(|_| {}, result);
    }

    /// Runs `f` on `S` and then, in the same critical section of the
    /// registry lock, removes the job and publishes `result`; wakes the
    /// waiters after unlocking. Whoever takes the lock next sees `f`'s
    /// changes and the job gone together.
    ///
    /// If `f` panics, the job is abandoned as if the handle were dropped
    /// (the abandon hook runs after `f`'s partial changes).
    pub fn finish_with(mut self, f: impl FnOnce(&mut S), result: R) {
        {
            let mut t = lock(&self.shared.mu);
            f(&mut t.state);
            // From here on nothing can panic but allocation failure.
            self.armed = false;
            retire(&mut t, &self.job, Ok(result));
        }
        self.job.done_cv.notify_all();
    }

    /// Abandons the job now (waiters get [`Abandoned`]) and runs `f` on `S`
    /// in the same critical section, after the abandon hook if one is set.
    /// For error paths that know how to restore `S`.
    pub fn abandon_with(mut self, f: impl FnOnce(&mut S)) {
        self.abandon(f);
    }

    /// The abandon path: unlist, publish `Abandoned`, run the hook and `f`.
    fn abandon(&mut self, f: impl FnOnce(&mut S)) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let hook = self.on_abandon.take();
        {
            let mut t = lock(&self.shared.mu);
            // Bookkeeping first: if a hook panics, waiters are still woken.
            retire(&mut t, &self.job, Err(Abandoned));
            if let Some(hook) = hook {
                hook(&mut t.state);
            }
            f(&mut t.state);
        }
        self.job.done_cv.notify_all();
    }
}

impl<S, R> Drop for JobHandle<S, R> {
    /// Abandons the job if it has not ended (see [`JobHandle`]).
    fn drop(&mut self) {
        self.abandon(|_| {});
    }
}

impl<S, R> fmt::Debug for JobHandle<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("keys", &self.job.keys)
            .finish_non_exhaustive()
    }
}

impl<R> JobWait<R> {
    /// The keys of the job waited for.
    pub fn keys(&self) -> &RangedKeySet {
        &self.job.keys
    }

    /// Whether the job has ended (finished or abandoned). Takes the job lock
    /// briefly; never blocks on the job itself.
    pub fn is_done(&self) -> bool {
        lock(&self.job.outcome).is_some()
    }

    /// Whether both tickets are for the same job.
    pub fn same_job(&self, other: &JobWait<R>) -> bool {
        Arc::ptr_eq(&self.job, &other.job)
    }
}

impl<R: Clone> JobWait<R> {
    /// Blocks until the job ends; its result, or [`Abandoned`].
    ///
    /// Sleeps on the job's own condvar: wakes when this job ends, not on any
    /// other registry activity. Must not be called while holding the
    /// registry lock (see [`JobRegistry`]).
    pub fn wait(self) -> Result<R, Abandoned> {
        let mut o = lock(&self.job.outcome);
        loop {
            if let Some(outcome) = &*o {
                return outcome.clone();
            }
            o = self
                .job
                .done_cv
                .wait(o)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The outcome if the job has ended, without blocking.
    pub fn try_get(&self) -> Option<Result<R, Abandoned>> {
        lock(&self.job.outcome).clone()
    }

    /// Like [`wait`](Self::wait), but gives up after `timeout`: `None` if
    /// the job is still in progress then. (Not available under loom.)
    #[cfg(not(loom))]
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<R, Abandoned>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut o = lock(&self.job.outcome);
        loop {
            if let Some(outcome) = &*o {
                return Some(outcome.clone());
            }
            let left = match deadline {
                Some(d) => d.checked_duration_since(Instant::now())?,
                None => Duration::MAX,
            };
            o = self
                .job
                .done_cv
                .wait_timeout(o, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

impl<R> Clone for JobWait<R> {
    /// Another ticket for the same job.
    fn clone(&self) -> Self {
        JobWait {
            job: self.job.clone(),
        }
    }
}

impl<R> fmt::Debug for JobWait<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobWait")
            .field("keys", &self.job.keys)
            .field("done", &self.is_done())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use rangeset::KeyRange;

    /// `"[1,3) [5,6)"` as a set.
    fn ks(s: &str) -> RangedKeySet {
        format!("{{{s}}}").parse().unwrap()
    }

    #[test]
    fn start_overlap_finish() {
        let reg: JobRegistry<RangedKeySet, u32> = JobRegistry::new(ks("[0,100)"));
        let mut g = reg.lock();
        let a = g.start(ks("[0,10)")).unwrap();
        let b = g.start(ks("[20,30) [40,50)")).unwrap();
        assert_eq!(g.in_progress(), &ks("[0,10) [20,30) [40,50)"));
        assert_eq!(g.jobs().count(), 2);
        let err = g.start(ks("[5,25)")).unwrap_err();
        assert_eq!(err.keys, ks("[5,10) [20,25)"));
        assert_eq!(
            err.to_string(),
            "keys {[5,10) [20,25)} are already covered by a job in progress"
        );
        assert!(g.overlapping(&ks("[10,20) [50,60)")).is_empty());
        let w = g.overlapping(&ks("[9,10) [45,46)"));
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].keys(), a.keys());
        let wb = g.overlapping(&ks("[21,22)"));
        assert_eq!(wb.len(), 1);
        assert!(wb[0].same_job(&b.waiter()));
        drop(g);

        assert!(!w[0].is_done());
        assert_eq!(w[0].try_get(), None);
        assert_eq!(w[0].wait_timeout(Duration::from_millis(1)), None);
        a.finish_with(|s| s.del_range(KeyRange::new(0, 9)), 7);
        assert!(w[0].is_done());
        assert_eq!(w[0].try_get(), Some(Ok(7)));
        assert_eq!(w[0].clone().wait(), Ok(7));
        {
            let g = reg.lock();
            assert_eq!(&*g, &ks("[10,100)"));
            assert_eq!(g.in_progress(), &ks("[20,30) [40,50)"));
        }
        drop(b);
        assert_eq!(
            w[1].wait_timeout(Duration::from_secs(1000)),
            Some(Err(Abandoned))
        );
        assert_eq!(w[1].clone().wait(), Err(Abandoned));
        let g = reg.lock();
        assert!(g.in_progress().is_empty());
        assert_eq!(g.jobs().count(), 0);
    }

    #[test]
    fn abandon_hook_and_cancel() {
        let reg: JobRegistry<Vec<&'static str>, ()> = JobRegistry::default();
        let mut g = reg.lock();
        let mut a = g.start(ks("[1,2)")).unwrap();
        a.on_abandon(|s| s.push("hook-a"));
        let mut b = g.start(ks("[2,3)")).unwrap();
        b.on_abandon(|s| s.push("hook-b"));
        let c = g.start(ks("[3,4)")).unwrap();
        let d = g.start(RangedKeySet::new()).unwrap();
        let wb = b.waiter();
        g.cancel(b);
        assert_eq!(wb.try_get(), Some(Err(Abandoned)));
        assert_eq!(g.in_progress(), &ks("[1,2) [3,4)"));
        drop(g);
        let wa = a.waiter();
        drop(a);
        assert_eq!(wa.wait(), Err(Abandoned));
        c.abandon_with(|s| s.push("with-c"));
        d.finish(());
        let g = reg.lock();
        assert_eq!(*g, vec!["hook-b", "hook-a", "with-c"]);
        assert!(g.in_progress().is_empty());
    }

    #[test]
    fn panic_in_finish_with_abandons() {
        let reg: JobRegistry<u32, u32> = JobRegistry::new(0);
        let mut h = reg.lock().start(ks("[0,1)")).unwrap();
        h.on_abandon(|s| *s += 10);
        let w = h.waiter();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.finish_with(
                |s| {
                    *s += 1;
                    panic!("boom");
                },
                5,
            )
        }));
        assert!(r.is_err());
        assert_eq!(w.wait(), Err(Abandoned));
        let g = reg.lock();
        assert_eq!(*g, 11);
        assert!(g.in_progress().is_empty());
    }

    #[test]
    fn waiter_on_other_thread_gets_result() {
        let reg: JobRegistry<(), String> = JobRegistry::new(());
        let h = reg.lock().start(ks("[0,5)")).unwrap();
        let w = reg.lock().overlapping(&ks("[4,9)")).pop().unwrap();
        let t = std::thread::spawn(move || w.wait());
        h.finish("built".to_string());
        assert_eq!(t.join().unwrap(), Ok("built".to_string()));
    }

    #[test]
    fn types_are_send_sync() {
        fn check<X: Send + Sync>() {}
        fn check_send<X: Send>() {}
        check::<JobRegistry<RangedKeySet, std::sync::Arc<u8>>>();
        check::<JobWait<std::sync::Arc<u8>>>();
        check_send::<JobHandle<RangedKeySet, std::sync::Arc<u8>>>();
    }

    #[test]
    #[should_panic(expected = "another registry")]
    fn cancel_checks_registry() {
        let r1: JobRegistry<(), ()> = JobRegistry::new(());
        let r2: JobRegistry<(), ()> = JobRegistry::new(());
        let h = r1.lock().start(ks("[0,1)")).unwrap();
        r2.lock().cancel(h);
    }
}

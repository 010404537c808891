//! TEMPORARY stand-in for the `rcu` crate's API while it is being written.
#![allow(dead_code, missing_docs, unreachable_pub)]

use rangeset::RangedKeySet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub type Snapshot<T> = Arc<T>;

pub struct RcuCell<T> {
    cur: Mutex<Arc<T>>,
    w: Mutex<()>,
}

impl<T> RcuCell<T> {
    pub fn new(v: T) -> Self {
        RcuCell {
            cur: Mutex::new(Arc::new(v)),
            w: Mutex::new(()),
        }
    }
    pub fn load(&self) -> Arc<T> {
        self.cur.lock().unwrap().clone()
    }
    pub fn store(&self, v: T) {
        let _w = self.w.lock().unwrap();
        *self.cur.lock().unwrap() = Arc::new(v);
    }
    pub fn update(&self, f: impl FnOnce(&T) -> T) -> Arc<T> {
        let _w = self.w.lock().unwrap();
        let old = self.load();
        let new = Arc::new(f(&old));
        *self.cur.lock().unwrap() = new.clone();
        new
    }
}

#[derive(Debug)]
pub struct Abandoned;

struct Slot<R> {
    done: Mutex<Option<Option<R>>>,
    cv: Condvar,
}

struct Inner<S, R> {
    state: S,
    jobs: Vec<(u64, RangedKeySet, Arc<Slot<R>>)>,
    next: u64,
}

pub struct JobRegistry<S, R> {
    inner: Mutex<Inner<S, R>>,
}

pub struct RegistryGuard<'a, S, R> {
    g: MutexGuard<'a, Inner<S, R>>,
    reg: &'a JobRegistry<S, R>,
}

pub struct JobHandle<'a, S, R> {
    reg: &'a JobRegistry<S, R>,
    id: u64,
    slot: Arc<Slot<R>>,
    done: bool,
}

pub struct JobWait<R> {
    slot: Arc<Slot<R>>,
}

impl<S, R: Clone> JobRegistry<S, R> {
    pub fn new(s: S) -> Self {
        JobRegistry {
            inner: Mutex::new(Inner {
                state: s,
                jobs: vec![],
                next: 0,
            }),
        }
    }
    pub fn lock(&self) -> RegistryGuard<'_, S, R> {
        RegistryGuard {
            g: self.inner.lock().unwrap(),
            reg: self,
        }
    }
}

impl<'a, S, R: Clone> RegistryGuard<'a, S, R> {
    pub fn state(&self) -> &S {
        &self.g.state
    }
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.g.state
    }
    pub fn in_progress(&self) -> RangedKeySet {
        let mut s = RangedKeySet::new();
        for j in &self.g.jobs {
            s.union_in_place(&j.1);
        }
        s
    }
    pub fn overlapping(&self, keys: &RangedKeySet) -> Vec<JobWait<R>> {
        self.g
            .jobs
            .iter()
            .filter(|j| !j.1.intersection(keys).is_empty())
            .map(|j| JobWait { slot: j.2.clone() })
            .collect()
    }
    pub fn start(&mut self, keys: RangedKeySet) -> Result<JobHandle<'a, S, R>, ()> {
        if !self.in_progress().intersection(&keys).is_empty() {
            return Err(());
        }
        let id = self.g.next;
        self.g.next += 1;
        let slot = Arc::new(Slot {
            done: Mutex::new(None),
            cv: Condvar::new(),
        });
        self.g.jobs.push((id, keys, slot.clone()));
        Ok(JobHandle {
            reg: self.reg,
            id,
            slot,
            done: false,
        })
    }
}

impl<S, R: Clone> JobHandle<'_, S, R> {
    pub fn finish_with(mut self, f: impl FnOnce(&mut S), r: R) {
        let mut g = self.reg.inner.lock().unwrap();
        f(&mut g.state);
        g.jobs.retain(|j| j.0 != self.id);
        *self.slot.done.lock().unwrap() = Some(Some(r));
        self.slot.cv.notify_all();
        self.done = true;
    }
}

impl<S, R> Drop for JobHandle<'_, S, R> {
    fn drop(&mut self) {
        if !self.done {
            let mut g = self.reg.inner.lock().unwrap();
            g.jobs.retain(|j| j.0 != self.id);
            *self.slot.done.lock().unwrap() = Some(None);
            self.slot.cv.notify_all();
        }
    }
}

impl<R: Clone> JobWait<R> {
    pub fn wait(self) -> Result<R, Abandoned> {
        let mut d = self.slot.done.lock().unwrap();
        while d.is_none() {
            d = self.slot.cv.wait(d).unwrap();
        }
        d.clone().unwrap().ok_or(Abandoned)
    }
}

//! The READ worker pool: plain threads taking jobs from a queue, as many
//! as the jobs in flight need.
//!
//! Not a rayon pool on purpose: a READ may wait (for a faulty client's pin
//! ack, up to `--pintimeout`), and a rayon worker that waits inside a job
//! runs other queued jobs meanwhile, which would then wait behind it.
//!
//! Elastic: a READ that waits for a faulty client's pin occupies its thread
//! until the pin times out, so a fixed pool lets one faulty client stall
//! every READ of the mount once enough of its READs are stuck. Here a job
//! queued while no thread is idle starts one more (up to [`MAX_THREADS`]);
//! threads beyond the `base` ones end after [`IDLE_EXIT`] without work.
//!
//! # Atomics
//!
//! `queued` counts jobs sent and not yet taken, `idle` threads waiting for
//! a job, `threads` all threads; all `SeqCst`. The rule: a job is never
//! left queued while every thread is busy. [`Pool::spawn`] counts its job
//! in `queued` and then reads `idle`; a thread counts itself in `idle`
//! before it waits and leaves it (and `queued`, for the job it got) after.
//! So `idle < queued` after the increment means fewer idle threads than
//! jobs: start one (at worst one thread too many, never too few). An extra
//! thread that times out leaves `idle` first and then ends only if nothing
//! is queued: of it and a concurrent `spawn` (each writes one counter,
//! then reads the other), one sees the other's write, so either the
//! thread stays or the spawner starts another.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// At most this many READ threads (each parked READ of a faulty client's
/// pin holds one; the kernel's `max_background` bounds them too).
pub const MAX_THREADS: usize = 1024;

/// An extra thread idle this long ends.
const IDLE_EXIT: Duration = Duration::from_secs(10);

struct Shared {
    rx: Mutex<Receiver<Job>>,
    queued: AtomicIsize,
    idle: AtomicIsize,
    threads: AtomicUsize,
    base: usize,
}

/// A set of threads running jobs in submission order.
pub struct Pool {
    tx: Mutex<Sender<Job>>,
    sh: Arc<Shared>,
}

impl Pool {
    /// `base` threads named `wcfs-read-<i>`, more on demand.
    pub fn new(base: usize) -> std::io::Result<Pool> {
        let (tx, rx) = channel::<Job>();
        let sh = Arc::new(Shared {
            rx: Mutex::new(rx),
            queued: AtomicIsize::new(0),
            idle: AtomicIsize::new(0),
            threads: AtomicUsize::new(0),
            base: base.max(1),
        });
        let p = Pool {
            tx: Mutex::new(tx),
            sh,
        };
        for _ in 0..p.sh.base {
            p.start()?;
        }
        Ok(p)
    }

    fn start(&self) -> std::io::Result<()> {
        let i = self.sh.threads.fetch_add(1, Ordering::SeqCst);
        let sh = self.sh.clone();
        let r = std::thread::Builder::new()
            .name(format!("wcfs-read-{i}"))
            .spawn(move || worker(&sh));
        if r.is_err() {
            self.sh.threads.fetch_sub(1, Ordering::SeqCst);
        }
        r.map(|_| ())
    }

    /// Queue `job`; start a thread for it if none is idle.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let queued = self.sh.queued.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            // The base workers live as long as the process: sending cannot fail.
            let _ = tx.send(Box::new(job));
        }
        if self.sh.idle.load(Ordering::SeqCst) < queued
            && self.sh.threads.load(Ordering::SeqCst) < MAX_THREADS
        {
            if let Err(e) = self.start() {
                tracing::warn!("start a READ thread: {e}");
            }
        }
    }

    /// Threads now (for tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn threads(&self) -> usize {
        self.sh.threads.load(Ordering::SeqCst)
    }
}

fn worker(sh: &Shared) {
    loop {
        sh.idle.fetch_add(1, Ordering::SeqCst);
        let job = {
            let rx = sh.rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv_timeout(IDLE_EXIT)
        };
        sh.idle.fetch_sub(1, Ordering::SeqCst);
        match job {
            Ok(job) => {
                sh.queued.fetch_sub(1, Ordering::SeqCst);
                job()
            }
            Err(RecvTimeoutError::Timeout) => {
                // an extra thread ends, unless a job came meanwhile; the
                // base ones stay
                let n = sh.threads.load(Ordering::SeqCst);
                if n > sh.base
                    && sh.queued.load(Ordering::SeqCst) == 0
                    && sh
                        .threads
                        .compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// Jobs that block do not keep a later job from running.
    #[test]
    fn blocked_jobs_do_not_starve_others() {
        let p = Pool::new(2).unwrap();
        let (release_tx, release_rx) = channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        for _ in 0..8 {
            let r = release_rx.clone();
            p.spawn(move || {
                let _ = r.lock().unwrap().recv();
            });
        }
        let (tx, rx) = channel();
        p.spawn(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the 9th job runs while 8 are blocked");
        assert!(p.threads() >= 9);
        drop(release_tx);
    }
}

//! The READ worker pool: plain threads taking jobs from a queue.
//!
//! Not a rayon pool on purpose: a READ job holds `zhead` for reading while
//! it loads, and a rayon worker that waits inside a job (a parallel loop,
//! a scope: ZBlk1 loads use one) runs other queued jobs meanwhile. Were
//! those other READs, they would wait for `zhead` behind a commit that
//! waits for the first READ: a deadlock. Here a job runs to its end on its
//! thread; the loads inside may still use rayon's global pool, whose
//! threads never take `zhead`.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running jobs in submission order.
pub(crate) struct Pool {
    tx: Mutex<Sender<Job>>,
}

impl Pool {
    /// `n` threads named `wcfs-read-<i>`.
    pub(crate) fn new(n: usize) -> std::io::Result<Pool> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("wcfs-read-{i}"))
                .spawn(move || worker(&rx))?;
        }
        Ok(Pool { tx: Mutex::new(tx) })
    }

    /// Queue `job`.
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        // The workers live as long as the process: sending cannot fail.
        let _ = tx.send(Box::new(job));
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

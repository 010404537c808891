//! A pin in flight: what the READ or setup that sent it waits for, and
//! how it ended.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a pin ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinEnd {
    /// `ack`.
    Ack,
    /// Another reply: the client failed the pin (its logical error).
    Nak(String),
    /// The link went down while waiting: `bye`, close, a protocol error or
    /// another pin's failure.
    LinkDown,
}

/// One pin waiting for its reply.
#[derive(Debug)]
pub struct PinWait {
    /// The reply, set once (the first `finish` wins); held only to set or
    /// read it, never while waiting for anything but `cv`.
    end: Mutex<Option<PinEnd>>,
    /// Notified when `end` is set.
    cv: Condvar,
    /// When it was queued (for the round-trip histogram).
    pub sent: Instant,
}

impl Default for PinWait {
    fn default() -> PinWait {
        PinWait {
            end: Mutex::new(None),
            cv: Condvar::new(),
            sent: Instant::now(),
        }
    }
}

impl PinWait {
    /// End the pin with `e` (the first end wins) and wake its waiters.
    pub fn finish(&self, e: PinEnd) {
        let mut g = lock(&self.end);
        if g.is_none() {
            *g = Some(e);
            self.cv.notify_all();
        }
    }

    /// The reply, or `None` if `deadline` passed first.
    pub fn wait(&self, deadline: Instant) -> Option<PinEnd> {
        let mut g = lock(&self.end);
        loop {
            if let Some(e) = &*g {
                return Some(e.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The reply if there is one, without waiting.
    pub fn ended(&self) -> Option<PinEnd> {
        lock(&self.end).clone()
    }

    /// Ended, other than by `ack` (a new pin must be sent).
    pub fn failed(&self) -> bool {
        matches!(&*lock(&self.end), Some(e) if *e != PinEnd::Ack)
    }
}

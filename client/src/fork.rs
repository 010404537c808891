//! Fork handling: a forked child detaches from the server without
//! disturbing the parent's link.
//!
//! A `pthread_atfork` child handler (installed once per process, when the
//! first Conn is made) walks the registry of live Conns and, for each:
//! points the watch-link descriptor, the head descriptors and the cached
//! `@<rev>` descriptors at `/dev/null` (`dup2`: the child's references to
//! the server's files are released, while the descriptor numbers stay
//! owned by their `File`s, so their later drop closes nothing foreign),
//! and remaps every mapping PROT_NONE. It sends nothing.
//!
//! Independently of the handler, every Conn, FileH and Mapping remembers
//! the pid that made it, and in another process all their operations fail
//! with [`Error::Forked`](crate::Error::Forked) and their drops send
//! nothing (and take no lock): that alone guarantees the parent's link is
//! never written by the child.
//!
//! # Locks at fork time
//!
//! The child has one thread; a lock held by another parent thread at fork
//! time stays locked forever. So the handler only *tries* locks: the
//! registry (a std futex mutex: `try_lock`, and unlocking is an atomic
//! swap plus at most a `futex` wake), each Conn's `fileh_mu` and each
//! file's `mmap_mu` (parking_lot `try_*`; their guards are leaked, not
//! unlocked, because parking_lot's unlock slow path takes internal locks;
//! the child never locks those again, see above). Whatever a busy lock
//! guards is skipped: those mappings keep showing the parent's data in the
//! child, still unusable through the API. The handler only does
//! async-signal-safe things: atomics, `open`, `dup2`, `mmap`, `close`.

use crate::conn::ConnInner;
use std::sync::{Arc, Mutex, Once, Weak};

/// Live Conns.
static REGISTRY: Mutex<Vec<Weak<ConnInner>>> = Mutex::new(Vec::new());

static INSTALL: Once = Once::new();

/// Record `c` for the fork child handler (installing it on first use).
pub(crate) fn register(c: &Arc<ConnInner>) {
    INSTALL.call_once(|| {
        // SAFETY: `child` is an `extern "C" fn()` that never unwinds and
        // only does async-signal-safe work (see the module docs).
        let r = unsafe { libc::pthread_atfork(None, None, Some(child)) };
        if r != 0 {
            tracing::error!(
                errno = r,
                "pthread_atfork failed: forked children will not detach"
            );
        }
    });
    let mut reg = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    reg.retain(|w| w.strong_count() > 0);
    reg.push(Arc::downgrade(c));
}

extern "C" fn child() {
    let Ok(reg) = REGISTRY.try_lock() else {
        return;
    };
    // SAFETY: open(2) on a NUL-terminated static path.
    let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if devnull < 0 {
        return;
    }
    for w in reg.iter() {
        if let Some(c) = w.upgrade() {
            c.after_fork(devnull);
            // If a parent thread was dropping the last reference at fork
            // time, ours is now the last: do not run destructors here.
            if Arc::strong_count(&c) == 1 {
                std::mem::forget(c);
            }
        }
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(devnull) };
}

//! Following a `Data.fs` that another process commits to (spec §2.6).
//!
//! A [`FileWatcher`] first reports the transactions already in the
//! transaction table after its starting tid, then waits for the file to
//! change and calls [`Core::sync`] to find new committed transactions (which
//! also makes them visible to loads through the same storage). Waiting uses
//! inotify on the file (`IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB`) with a
//! periodic re-check every [`RECHECK`], so a missed or coalesced event, or an
//! inotify that cannot be set up, delays a report by at most that much.
//! The inotify instance is created on the first wait only (creating and
//! closing one costs an RCU grace period in the kernel, milliseconds).

use super::Core;
use crate::error::{Error, Result};
use crate::storage::{TxnInfo, Watcher};
use crate::types::Tid;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fallback re-check period when no inotify event arrives.
pub const RECHECK: Duration = Duration::from_millis(100);

/// Reports every committed transaction after a given tid, in order, each
/// exactly once; see [`crate::Storage::watch`].
pub struct FileWatcher {
    core: Arc<Core>,
    /// The last tid reported (or the starting point).
    last: Tid,
    /// Set up on the first wait, so that a watcher that only drains what is
    /// already there costs no inotify instance.
    inotify: Notify,
}

/// The inotify state of a watcher.
enum Notify {
    /// Not needed yet.
    Unset,
    Ready(Inotify),
    /// inotify could not be set up: we only poll.
    Failed,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher")
            .field("path", &self.core.path)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl FileWatcher {
    pub(super) fn new(core: Arc<Core>, after: Tid) -> Result<FileWatcher> {
        Ok(FileWatcher {
            core,
            last: after,
            inotify: Notify::Unset,
        })
    }

    fn setup_inotify(core: &Core) -> nix::Result<Inotify> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        ino.add_watch(
            &core.path,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_ATTRIB,
        )?;
        Ok(ino)
    }

    /// The last tid reported so far (initially the `after` given).
    pub fn last_reported(&self) -> Tid {
        self.last
    }

    /// The next already-known transaction after `self.last`, if any.
    fn next_known(&mut self) -> Result<Option<TxnInfo>> {
        let entry = {
            let s = self.core.state();
            s.txns.get(s.first_after(self.last)).copied()
        };
        let Some(entry) = entry else { return Ok(None) };
        let info = self.core.txn_info(&mut self.core.txn_buf(), entry)?;
        self.last = entry.tid;
        Ok(Some(info))
    }

    /// Wait for an inotify event or `d`, whichever comes first; drain events.
    fn wait(&self, d: Duration) -> Result<()> {
        let ino = match &self.inotify {
            Notify::Ready(ino) => ino,
            Notify::Unset | Notify::Failed => {
                std::thread::sleep(d);
                return Ok(());
            }
        };
        let ms = u16::try_from(d.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::io(&self.core.path, "poll inotify", e.into())),
        }
        loop {
            match ino.read_events() {
                Ok(evs) if !evs.is_empty() => continue,
                Ok(_) | Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::io(&self.core.path, "read inotify", e.into())),
            }
        }
        Ok(())
    }
}

impl Watcher for FileWatcher {
    fn next(&mut self, timeout: Option<Duration>) -> Result<Option<TxnInfo>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(info) = self.next_known()? {
                return Ok(Some(info));
            }
            self.core.sync()?;
            if let Some(info) = self.next_known()? {
                return Ok(Some(info));
            }
            let mut d = RECHECK;
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                d = d.min(deadline - now);
            }
            if let Notify::Unset = self.inotify {
                // Set up inotify, then check again before the first wait:
                // a change made before the watch was added has no event.
                self.inotify = match Self::setup_inotify(&self.core) {
                    Ok(i) => Notify::Ready(i),
                    Err(e) => {
                        tracing::warn!(path = %self.core.path.display(), error = %e, "inotify unavailable; polling only");
                        Notify::Failed
                    }
                };
                continue;
            }
            self.wait(d)?;
        }
    }
}

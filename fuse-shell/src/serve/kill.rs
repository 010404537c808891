//! Faulty clients (spec §7): the process behind a link, whether it is
//! alive or dying, and the kill policy for a failed pin (SIGBUS, then
//! SIGKILL, through a pidfd so that a reused pid is never hit).

use super::link::{DownWhy, WatchLink};
use super::pin::PinEnd;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The process that opened a link: the one killed when its pins fail.
#[derive(Debug)]
pub struct ClientProc {
    /// Its process id (the thread group of the opening thread).
    pub pid: i32,
    /// A pidfd, when the kernel gives one: signals then reach this very
    /// process even if its pid is reused.
    pidfd: Option<OwnedFd>,
}

/// The thread group of thread `tid` (`Tgid:` in /proc), if it exists.
fn tgid_of(tid: u32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether thread `tid` is gone or about to die: no such thread, a zombie,
/// or SIGKILL pending (its own or its process's).
pub fn thread_dying(tid: u32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    for l in s.lines() {
        if let Some(v) = l.strip_prefix("State:") {
            if v.trim_start().starts_with('Z') || v.trim_start().starts_with('X') {
                return true;
            }
        }
        for key in ["SigPnd:", "ShdPnd:"] {
            if let Some(v) = l.strip_prefix(key) {
                if u64::from_str_radix(v.trim(), 16).is_ok_and(|m| m & SIGKILL_BIT != 0) {
                    return true;
                }
            }
        }
    }
    false
}

impl ClientProc {
    /// The process of thread `tid` (the pid in a FUSE request header).
    pub fn of_thread(tid: u32) -> Option<ClientProc> {
        let pid = tgid_of(tid)?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or
        // -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: `fd` was just returned by pidfd_open and is owned by
            // nobody else.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        });
        let c = ClientProc { pid, pidfd };
        c.alive().then_some(c)
    }

    /// Send `sig` (0: only check): Ok if it was delivered.
    fn signal(&self, sig: i32) -> std::io::Result<()> {
        let r = match &self.pidfd {
            // SAFETY: pidfd_send_signal takes the pidfd we own, a signal
            // number, a null siginfo (allowed: as kill(2)) and flags.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill(2) takes plain integers.
            None => unsafe { libc::kill(self.pid, sig) as libc::c_long },
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Alive: a signal can reach it and it is not a zombie. (EPERM is an
    /// error, not "dead": spec §7.)
    pub fn alive(&self) -> bool {
        match self.signal(0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return false,
            Err(_) => return true,
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // "pid (comm) S ...": the state follows the last ')'
            Ok(s) => !s
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => false,
        }
    }

    /// Poll until dead, `limit` passed or `stop()`; true if dead.
    fn wait_dead(&self, limit: Duration, stop: &dyn Fn() -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if !self.alive() {
                return true;
            }
            if Instant::now() >= end || stop() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How a failed pin is dealt with (spec §7), from the pin's end: kill the
/// client unless it dies by itself, and wait for it to die (at most
/// `pintimeout / 2` after the signals, or until `stop()`: the READ we run
/// for comes from a thread that is dying itself, e.g. the client's own).
/// Returns true if the client was killed by us.
pub fn bad_pin_kill(
    link: &WatchLink,
    end: Option<PinEnd>,
    pintimeout: Duration,
    stop: &dyn Fn() -> bool,
) -> bool {
    let c = &link.client;
    match &end {
        Some(PinEnd::LinkDown) => match link.down_why() {
            // `bye` / our own epoch shutdown: it is leaving or was told;
            // no kill
            Some(DownWhy::Bye | DownWhy::Epoch) | None => return false,
            // Closed without `bye` while a pin was in flight (spec §7: an
            // unexpected EOF, a failed pin), or the client broke the
            // protocol: it may be a process dying (its fds are closed
            // before it becomes a zombie, and it may write garbage on the
            // way): give it a moment, then kill
            Some(DownWhy::Closed | DownWhy::Protocol | DownWhy::PinFailed) => {
                if c.wait_dead(pintimeout.min(Duration::from_secs(3)), stop) {
                    return false;
                }
            }
        },
        None if !c.alive() => return false,
        _ => {}
    }
    if c.pid == std::process::id() as i32 {
        // the server's own process (only tests open links from in here)
        tracing::warn!(
            link = link.id,
            "head/watch: pin failed on a link of the server itself: not killed"
        );
        return false;
    }
    tracing::warn!(
        link = link.id,
        pid = c.pid,
        "head/watch: pin failed ({}): killing the client with SIGBUS",
        match &end {
            None => "timeout".to_owned(),
            Some(PinEnd::Nak(m)) => format!("reply {m:?}"),
            Some(e) => format!("{e:?}"),
        }
    );
    if let Err(e) = c.signal(libc::SIGBUS) {
        if e.raw_os_error() == Some(libc::ESRCH) {
            return false;
        }
        tracing::error!(
            pid = c.pid,
            "major unexpected event: cannot kill a faulty client: SIGBUS: {e}"
        );
        return false;
    }
    if c.wait_dead(pintimeout / 6, stop) {
        return true;
    }
    let _ = c.signal(libc::SIGKILL);
    if c.wait_dead(pintimeout / 3, stop) {
        return true;
    }
    if stop() {
        // SIGKILL is sent; the thread we serve is dying, the rest of the
        // client goes as soon as that READ is answered
        return true;
    }
    tracing::error!(
        pid = c.pid,
        "major unexpected event: a faulty client survives SIGKILL for {:?}",
        pintimeout / 3
    );
    false
}

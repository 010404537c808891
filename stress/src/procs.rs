//! The harness's processes: how children are started so that none
//! outlives the harness, and the SIGINT/SIGTERM that end a run early.
//!
//! Every child (the server, readers, never-acking clients, the ZEO
//! server) gets
//!
//! - its own process group: a terminal's Ctrl-C (SIGINT to the foreground
//!   group) reaches the harness alone, which then stops everything in
//!   order (readers before the server, the server through `wcfs stop`);
//!   were the children in our group, the server would unmount under
//!   readers still reading and every reader would die at once;
//! - a parent-death signal (`PR_SET_PDEATHSIG`): if the harness itself
//!   dies, even by SIGKILL, the kernel kills the children. The server gets
//!   SIGTERM (it unmounts and exits), the others SIGKILL. The signal comes
//!   when the *thread* that started the child exits, so children are only
//!   started from the main thread.
//!
//! The first SIGINT or SIGTERM sets a flag the run polls (the handler
//! does nothing else); the handler is then reset, so a second one kills
//! the harness at once, and the death signals above clean up.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The signal that asked the harness to stop, 0 if none. Stored by the
/// handler, loaded by the run's loops: a single flag, no data published
/// with it, so relaxed would do; SeqCst costs nothing here.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // an atomic store is all a signal handler may safely do here
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// Catch SIGINT and SIGTERM (once each: see the module doc).
pub(crate) fn catch_signals() -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let sa = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART | SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; no other handler is replaced that anything
        // relies on (the harness installs none).
        unsafe { sigaction(s, &sa) }?;
    }
    Ok(())
}

/// The name of the signal that asked us to stop, if one did.
pub(crate) fn signalled() -> Option<String> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(
            nix::sys::signal::Signal::try_from(s)
                .map_or_else(|_| format!("signal {s}"), |s| s.as_str().to_owned()),
        ),
    }
}

/// Make the child of `cmd` die with the harness (module doc): its own
/// process group, and `death` when the harness goes. Call from the main
/// thread only.
pub(crate) fn tie_to_harness(cmd: &mut Command, death: libc::c_int) -> &mut Command {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec, and
    // calls only async-signal-safe functions (prctl, getppid, _exit); it
    // allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, death as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // the harness died before prctl: nobody will send the signal
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// Kill `c` (SIGKILL) if it still runs, and reap it if it goes within
/// `wait`. A process blocked in a FUSE request dies only once the server
/// answers or the connection is aborted, so callers that still have the
/// server to stop wait briefly here and reap again later.
pub(crate) fn kill_reap(c: &mut Child, wait: Duration) -> bool {
    if c.try_wait().ok().flatten().is_some() {
        return true;
    }
    let _ = c.kill();
    let t0 = Instant::now();
    loop {
        if c.try_wait().ok().flatten().is_some() {
            return true;
        }
        if t0.elapsed() >= wait {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

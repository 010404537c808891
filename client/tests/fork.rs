//! Fork: the child detaches from the server without a byte on the
//! parent's link; its pre-fork objects fail, its mappings are PROT_NONE
//! and it holds no descriptor of the mount or the link; the parent keeps
//! working. Alone in its binary so that the fork happens with few threads.

mod common;

use client::Error;
use common::*;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

/// Everything in /proc/self/fd, as link targets.
fn fd_targets() -> Vec<PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect()
}

/// The checks the child runs; returns a failure code (0 = fine).
fn child_checks(
    conn: std::sync::Arc<client::Conn>,
    f: client::FileH,
    mp: client::Mapping,
    sock: PathBuf,
    mnt: PathBuf,
) -> i32 {
    if !matches!(conn.open(G), Err(Error::Forked)) {
        return 10;
    }
    if !matches!(conn.check(), Err(Error::Forked)) {
        return 11;
    }
    if !matches!(f.mmap(0, 1), Err(Error::Forked)) {
        return 12;
    }
    if !matches!(mp.read_at(0, &mut [0; 1]), Err(Error::Forked)) {
        return 13;
    }
    let addr = mp.as_ptr() as usize;
    for off in [0, BLKSIZE, 2 * BLKSIZE - 1] {
        if prot_of(addr + off).as_deref() != Some("---p") {
            return 20;
        }
    }
    for t in fd_targets() {
        if t == sock {
            return 30; // the watch link is still open in the child
        }
        if t.starts_with(&mnt) {
            return 31; // a head or @rev file is still open in the child
        }
    }
    // Drops send nothing and do not hang (a hang = parent's timeout).
    drop(mp);
    drop(f);
    if conn.close().is_err() {
        return 40;
    }
    drop(conn);
    0
}

#[test]
fn fork_child_detaches() {
    init();
    let m = FakeMount::new(AT1);
    m.set_head(F, 2);
    m.set_rev(AT0, F, 2);
    let (cli, mut srv) = FakeServer::pair();
    let sock = std::fs::read_link(format!("/proc/self/fd/{}", cli.as_raw_fd())).unwrap();
    let conn = std::sync::Arc::new(m.wcfs().connect_with_link(AT1, cli.into()).unwrap());

    let c = conn.clone();
    let op = bg(move || c.open(F));
    let s = srv.expect_req(&format!("watch {F} @{AT1}"));
    srv.pin(2, F, 1, Some(AT0));
    srv.send(s, "ok");
    let f = op.wait().unwrap();
    let mp = f.mmap(0, 2).unwrap();
    let d = mp.to_vec().unwrap();
    assert_blk(&d, 0, head_byte(0), "parent before fork");
    assert_blk(&d, 1, rev_byte(AT0, 1), "parent before fork");
    let mnt = std::fs::canonicalize(&m.mnt).unwrap();

    // SAFETY: the child only runs the checks above and then _exit()s; the
    // allocator (glibc) stays usable in the child.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                child_checks(conn, f, mp, sock, mnt)
            }));
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or flushing its copied stdio buffers.
            unsafe { libc::_exit(r.unwrap_or(99)) };
        }
        ForkResult::Parent { child } => {
            let wait = bg(move || waitpid(child, None).unwrap());
            assert_eq!(
                wait.wait(),
                WaitStatus::Exited(child, 0),
                "child check failed (see code)"
            );
        }
    }

    // Not a byte from the child on the link.
    assert!(srv.quiet_for(Duration::from_millis(100)));

    // The parent's side is intact: mappings readable, pins handled,
    // requests continue on the next stream.
    let d = mp.to_vec().unwrap();
    assert_blk(&d, 1, rev_byte(AT0, 1), "parent after fork");
    srv.pin(4, F, 0, Some(AT0));
    assert_blk(&mp.to_vec().unwrap(), 0, rev_byte(AT0, 0), "pin after fork");
    m.set_head(G, 1);
    let c = conn.clone();
    let op = bg(move || c.open(G));
    let (s, msg) = srv.recv();
    assert_eq!((s, msg.as_str()), (3, format!("watch {G} @{AT1}").as_str()));
    srv.send(s, "ok");
    let g = op.wait().unwrap();

    drop(mp);
    let op = bg(move || {
        drop((f, g));
        conn.close()
    });
    for _ in 0..2 {
        let (s, msg) = srv.recv();
        assert!(msg.ends_with(" -"), "{msg}");
        srv.send(s, "ok");
    }
    srv.expect_bye();
    op.wait().unwrap();
}

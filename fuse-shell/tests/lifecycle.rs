//! `wcfs status` and `wcfs stop` against real mounts of a stand-in server
//! (`support/stub_fuse.rs`, run as a child of this test binary with an argv
//! ending in `<zurl> <mountpoint>` like `wcfs serve`'s, so the pid-finding
//! rule is exercised): clean stop; stop after the server was killed with
//! SIGKILL (mount left behind as ENOTCONN); stop while a client is blocked
//! in a read the server never answers (and the server ignores SIGTERM);
//! stop while a client holds a file open; stop with nothing mounted; the
//! default mountpoint under `/dev/shm/wcfs`. Each scenario ends with no
//! mount entry and no mountpoint directory, and a new mount on the same
//! mountpoint serves again.
//!
//! Needs root and `/dev/fuse` (skipped with a message otherwise). Every
//! mount has a watchdog (abort the connection, lazy unmount, kill the
//! server after a time limit) and a Drop guard doing the same cleanup even
//! when the test panics; that cleanup is written here, independently of
//! the code under test.

#[path = "support/stub_fuse.rs"]
mod stub_fuse;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Entry point of the stub server: a no-op unless this process was
/// started as one (see [`Mount::start`]).
#[test]
fn stub_server() {
    let Ok(modes) = std::env::var("WCFS_STUB_FUSE") else {
        return;
    };
    let args: Vec<String> = std::env::args().collect();
    let n = args.len();
    match std::env::var("WCFS_STUB_MNT") {
        // Like `wcfs serve <zurl>` on the default mountpoint.
        Ok(mnt) => stub_fuse::run(&args[n - 1], &mnt, &modes),
        Err(_) => stub_fuse::run(&args[n - 2], &args[n - 1], &modes),
    }
}

/// The stub mounts with mount(2) itself, and `wcfs stop` falls back to
/// umount2 as root: fuse3's fusermount3 is used when present, not needed.
fn can_mount() -> bool {
    let ok = nix::unistd::geteuid().is_root() && Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("skipped: needs root and /dev/fuse");
    }
    ok
}

fn wcfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wcfs"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wcfs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `(fstype, source, major:minor)` of the topmost mount at `mnt`.
fn mount_of(mnt: &Path) -> Option<(String, String, String)> {
    let t = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let m = mnt.to_str().unwrap();
    t.lines().rev().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let f: Vec<&str> = pre.split(' ').collect();
        let p: Vec<&str> = post.split(' ').collect();
        (f.get(4) == Some(&m)).then(|| (p[0].to_string(), p[1].to_string(), f[2].to_string()))
    })
}

/// Abort whatever FUSE connection is mounted at `mnt` and detach it.
fn force_cleanup(mnt: &Path) {
    for _ in 0..4 {
        let Some((fstype, _, dev)) = mount_of(mnt) else {
            break;
        };
        if fstype.starts_with("fuse") {
            let minor = dev.split(':').nth(1).unwrap_or("");
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), b"1\n");
        }
        let _ = nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(mnt);
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique zurl and explicit mountpoint for one test.
fn names(tag: &str) -> (String, PathBuf) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{tag}-{n}", std::process::id());
    (
        format!("file:///tmp/wcfs-life-{id}.fs"),
        PathBuf::from(format!("/tmp/wcfs-life-mnt-{id}")),
    )
}

/// A running stub server; Drop kills it and cleans the mount up.
struct Mount {
    child: Child,
    mnt: PathBuf,
}

impl Mount {
    fn start(zurl: &str, mnt: &Path, modes: &str, env: &[(&str, &str)]) -> Mount {
        std::fs::create_dir_all(mnt).unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args([
            "stub_server",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .arg(zurl)
        .env("WCFS_STUB_FUSE", modes)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        if !env.iter().any(|(k, _)| *k == "WCFS_STUB_MNT") {
            cmd.arg(mnt); // else argv ends with the zurl only
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn stub server");
        let m = Mount {
            child,
            mnt: mnt.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while mount_of(mnt).is_none_or(|(t, _, _)| t != "fuse.wcfs") {
            assert!(
                Instant::now() < deadline,
                "stub did not mount {}",
                mnt.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(mount_of(mnt).unwrap().1, zurl);
        m
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait for the server to exit (it must, after stop).
    fn wait_exited(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "server still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.child.kill();
        force_cleanup(&self.mnt);
        let _ = self.child.wait();
    }
}

/// After the time limit, abort and detach the mount and kill the server,
/// so that whatever blocks the test fails instead of hanging.
struct Watchdog(Option<mpsc::Sender<()>>);

fn watchdog(mnt: &Path, pid: i32, limit: Duration) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    let mnt = mnt.to_path_buf();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("watchdog: {} over {limit:?}: cleaning up", mnt.display());
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            force_cleanup(&mnt);
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

/// SIGKILL a helper process when the test is done with it, or panics.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

fn stop(zurl: &str, mnt: &Path) -> Output {
    let t = Instant::now();
    let o = wcfs(&["stop", zurl, "--mountpoint", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        t.elapsed() < Duration::from_secs(26),
        "stop took {:?}",
        t.elapsed()
    );
    o
}

fn status(zurl: &str, mnt: &Path) -> Output {
    wcfs(&["status", zurl, "--mountpoint", mnt.to_str().unwrap()])
}

/// Nothing left at `mnt`, and a new server mounts and serves there.
fn assert_gone_and_remountable(zurl: &str, mnt: &Path) {
    assert_eq!(mount_of(mnt), None, "mount entry left at {}", mnt.display());
    assert!(!mnt.exists(), "mountpoint {} left", mnt.display());
    let mut m = Mount::start(zurl, mnt, "serve", &[]);
    let _w = watchdog(mnt, m.pid(), Duration::from_secs(40));
    assert_eq!(
        std::fs::read_to_string(mnt.join(".wcfs/zurl")).unwrap(),
        zurl
    );
    let o = stop(zurl, mnt);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unmounted"),
        "{}",
        text(&o)
    );
    m.wait_exited(Duration::from_secs(5));
    assert_eq!(mount_of(mnt), None);
    assert!(!mnt.exists());
}

#[test]
fn clean_stop_and_status() {
    if !can_mount() {
        return;
    }
    let (zurl, mnt) = names("clean");
    let mut m = Mount::start(&zurl, &mnt, "serve", &[]);
    let _w = watchdog(&mnt, m.pid(), Duration::from_secs(60));

    let o = status(&zurl, &mnt);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("mountpoint: {}\n", mnt.display())),
        "{out}"
    );
    assert!(out.contains(&format!("pid: {}\n", m.pid())), "{out}");
    assert!(
        out.contains(&format!("head/at: {}\n", stub_fuse::HEAD_AT)),
        "{out}"
    );
    assert!(out.contains("ok - serving"), "{out}");

    // Another zurl on the same mountpoint is not ours to report or stop.
    let o = status("file:///other.fs", &mnt);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not by wcfs for"),
        "{}",
        text(&o)
    );
    let o = wcfs(&[
        "stop",
        "file:///other.fs",
        "--mountpoint",
        mnt.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(mount_of(&mnt).is_some());

    let o = stop(&zurl, &mnt);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unmounted"),
        "{}",
        text(&o)
    );
    m.wait_exited(Duration::from_secs(5));
    let o = status(&zurl, &mnt);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not mounted"),
        "{}",
        text(&o)
    );
    assert_gone_and_remountable(&zurl, &mnt);
}

#[test]
fn stop_after_kill9() {
    if !can_mount() {
        return;
    }
    let (zurl, mnt) = names("kill9");
    let mut m = Mount::start(&zurl, &mnt, "serve", &[]);
    let _w = watchdog(&mnt, m.pid(), Duration::from_secs(60));
    nix::sys::signal::kill(Pid::from_raw(m.pid()), Signal::SIGKILL).unwrap();
    m.wait_exited(Duration::from_secs(5));
    // The mount is left behind, dead.
    assert!(mount_of(&mnt).is_some());
    let e = std::fs::read_to_string(mnt.join(".wcfs/zurl")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_enotconn()), "{e}");

    let o = status(&zurl, &mnt);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no server process"),
        "{}",
        text(&o)
    );

    stop(&zurl, &mnt);
    assert_gone_and_remountable(&zurl, &mnt);
}

fn libc_enotconn() -> i32 {
    nix::errno::Errno::ENOTCONN as i32
}

#[test]
fn stop_with_client_stuck_in_read() {
    if !can_mount() {
        return;
    }
    let (zurl, mnt) = names("stuck");
    let mark = PathBuf::from(format!("{}.hang", mnt.display()));
    let _ = std::fs::remove_file(&mark);
    let mut m = Mount::start(
        &zurl,
        &mnt,
        "serve,ignore-term",
        &[("WCFS_STUB_HANG_MARK", mark.to_str().unwrap())],
    );
    let _w = watchdog(&mnt, m.pid(), Duration::from_secs(60));
    // The client is another process, as in real life (a thread of ours
    // blocked in the read would also block our own fork+exec of `wcfs`).
    let mut client = Command::new("cat")
        .arg(mnt.join("head/hang"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _client_guard = KillOnDrop(client.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "read never reached the server");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&mark);

    // status does not hang on a stuck server: it gives up after its timeout.
    let t = Instant::now();
    let o = status(&zurl, &mnt);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no answer"),
        "{}",
        text(&o)
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

    let o = stop(&zurl, &mnt);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("aborted FUSE connection"), "{}", text(&o));
    // The blocked client was woken with an error, not left hanging.
    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        if let Some(st) = client.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "client still blocked");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!st.success(), "{st:?}");
    m.wait_exited(Duration::from_secs(5));
    assert_gone_and_remountable(&zurl, &mnt);
}

#[test]
fn stop_with_client_holding_file_open() {
    if !can_mount() {
        return;
    }
    let (zurl, mnt) = names("open");
    let mut m = Mount::start(&zurl, &mnt, "serve", &[]);
    let _w = watchdog(&mnt, m.pid(), Duration::from_secs(60));
    let f = std::fs::File::open(mnt.join("head/at")).unwrap();
    let cwd_holder = std::fs::read_dir(mnt.join("head")).ok();

    let o = stop(&zurl, &mnt);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unmount failed"),
        "{}",
        text(&o)
    );
    m.wait_exited(Duration::from_secs(5));
    assert_eq!(mount_of(&mnt), None);
    // The client's file is dead, not served by anything.
    use std::io::Read;
    let mut buf = String::new();
    assert!((&f).read_to_string(&mut buf).is_err());
    drop(cwd_holder);
    drop(f);
    assert_gone_and_remountable(&zurl, &mnt);
}

#[test]
fn stop_and_status_with_nothing_mounted() {
    let (zurl, mnt) = names("none");
    let o = stop(&zurl, &mnt);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing to stop"),
        "{}",
        text(&o)
    );
    let o = status(&zurl, &mnt);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not mounted"), "{}", text(&o));
    assert_eq!(err.lines().count(), 1, "{}", text(&o));

    // A leftover empty mountpoint directory is removed.
    std::fs::create_dir_all(&mnt).unwrap();
    stop(&zurl, &mnt);
    assert!(!mnt.exists());

    let o = wcfs(&["stop", "s3://bucket/x"]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).lines().count(),
        1,
        "{}",
        text(&o)
    );
}

#[test]
fn default_mountpoint() {
    if !can_mount() {
        return;
    }
    let (zurl, _) = names("default");
    let o = wcfs(&["status", &zurl]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let mnt = PathBuf::from(
        out.lines()
            .find_map(|l| l.strip_prefix("mountpoint: "))
            .unwrap_or_else(|| panic!("{}", text(&o))),
    );
    assert!(mnt.starts_with("/dev/shm/wcfs"), "{}", mnt.display());
    assert_eq!(mnt.file_name().unwrap().len(), 40);

    // Started like `wcfs serve <zurl>`: argv ends with the zurl.
    let mut m = Mount::start(
        &zurl,
        &mnt,
        "serve",
        &[("WCFS_STUB_MNT", mnt.to_str().unwrap())],
    );
    let _w = watchdog(&mnt, m.pid(), Duration::from_secs(60));
    let o = wcfs(&["status", &zurl]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("pid: {}\n", m.pid())), "{out}");
    let o = wcfs(&["stop", &zurl]);
    assert!(o.status.success(), "{}", text(&o));
    m.wait_exited(Duration::from_secs(5));
    assert_eq!(mount_of(&mnt), None);
    assert!(!mnt.exists());
}

/// A server that cannot open its database says why and leaves no
/// directory behind (it made `a/b` for the mountpoint; both go).
#[test]
fn serve_of_a_missing_database_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("missing/Data.fs");
    let mnt = dir.path().join("a/b");
    let o = wcfs(&["serve", db.to_str().unwrap(), mnt.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Data.fs"), "{}", text(&o));
    assert!(!dir.path().join("a").exists(), "{}", text(&o));
    // a mountpoint that existed before is kept
    std::fs::create_dir(dir.path().join("c")).unwrap();
    let o = wcfs(&[
        "serve",
        db.to_str().unwrap(),
        dir.path().join("c").to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(dir.path().join("c").is_dir());
}

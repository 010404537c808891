//! `wcfs serve` as a child process for the mount tests: a watchdog that
//! aborts the FUSE connection, unmounts and kills after [`TEST_LIMIT`], and
//! a guard that unmounts and kills on drop, even when the test panics.
//! Every wait has a bound. Shared by `serve.rs`, `watch.rs`, `client.rs`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

/// Time limit of one test (the watchdog's).
pub(crate) const TEST_LIMIT: Duration = Duration::from_secs(90);
/// Upper bound for anything that should happen "soon".
pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "these tests mount a FUSE filesystem: /dev/fuse is missing (load the fuse module / run with --device /dev/fuse)"
    );
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests mount with allow_other and abort connections in /sys/fs/fuse: run them as root (CI does)"
    );
    let ok = Command::new("fusermount3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "fusermount3 not found: apt-get install -y fuse3");
}

pub(crate) fn mounted(mnt: &Path) -> bool {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mnt.to_str().unwrap();
    mi.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

pub(crate) fn abort_conn(conn: Option<u64>) {
    if let Some(c) = conn {
        let _ = std::fs::write(format!("/sys/fs/fuse/connections/{c}/abort"), "1");
    }
}

pub(crate) fn umount_lazy(mnt: &Path) {
    let _ = Command::new("umount").arg("-l").arg(mnt).status();
}

pub(crate) fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & 0xfff00)
}

/// A running `wcfs serve` with its watchdog; unmounts and kills on drop.
/// Databases a test serves through another zurl (its ZEO server, see
/// `support/zeo.rs`): Data.fs path -> zurl. [`Server::start_on`] serves
/// that zurl instead of the path.
pub(crate) static ZURL_OF: std::sync::Mutex<Vec<(PathBuf, String)>> =
    std::sync::Mutex::new(Vec::new());

pub(crate) struct Server {
    pub(crate) child: Option<Child>,
    pub(crate) mnt: PathBuf,
    pub(crate) zurl: String,
    pub(crate) log: PathBuf,
    pub(crate) conn: Option<u64>,
    pub(crate) timed_out: Arc<AtomicBool>,
    pub(crate) cancel: Option<mpsc::Sender<()>>,
}

impl Server {
    pub(crate) fn start(dir: &Path, db: &Path) -> Server {
        Self::start_with(dir, db, &[], &[])
    }

    pub(crate) fn start_with(dir: &Path, db: &Path, opts: &[&str], env: &[(&str, &str)]) -> Server {
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        Self::start_on(dir, db, mnt, true, opts, env)
    }

    /// Serve `db` on `mnt`, passing `mnt` on the command line only if
    /// `pass_mnt` (else it must be the default mountpoint).
    pub(crate) fn start_on(
        dir: &Path,
        db: &Path,
        mnt: PathBuf,
        pass_mnt: bool,
        opts: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        require_fuse();
        let log = dir.join("wcfs.log");
        let zurl = ZURL_OF
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(d, _)| d == db)
            .map_or_else(|| db.to_str().unwrap().to_owned(), |(_, z)| z.clone());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wcfs"));
        cmd.args(["--log-level", "debug", "--log-file"])
            .arg(&log)
            .arg("serve")
            .args(opts)
            .envs(env.iter().copied())
            .arg(&zurl);
        if pass_mnt {
            cmd.arg(&mnt);
        }
        let child = cmd.stdin(Stdio::null()).spawn().expect("spawn wcfs serve");
        Self::served(child, mnt, zurl, log)
    }

    /// The Go server's command line, as wendelin.core spawns it: `exe`
    /// (our binary, maybe a copy elsewhere) `[flags] <zurl> <mnt>`, logs
    /// (`-logtostderr -v=2`) to `<dir>/wcfs.log`.
    pub(crate) fn start_go(dir: &Path, db: &Path, exe: &Path, flags: &[&str]) -> Server {
        require_fuse();
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let log = dir.join("wcfs.log");
        let zurl = db.to_str().unwrap().to_owned();
        let child = Command::new(exe)
            .args(["-logtostderr", "-v=2"])
            .args(flags)
            .arg(&zurl)
            .arg(&mnt)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn wcfs (Go form)");
        Self::served(child, mnt, zurl, log)
    }

    /// The server `child` just started: its guard and watchdog, once it
    /// serves (`.wcfs/zurl` reads `zurl`).
    fn served(child: Child, mnt: PathBuf, zurl: String, log: PathBuf) -> Server {
        let mut s = Server {
            child: Some(child),
            mnt,
            zurl,
            log,
            conn: None,
            timed_out: Arc::new(AtomicBool::new(false)),
            cancel: None,
        };
        s.watchdog();
        let t0 = Instant::now();
        loop {
            if let Ok(z) = std::fs::read_to_string(s.mnt.join(".wcfs/zurl")) {
                if z == s.zurl {
                    break;
                }
            }
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("wcfs serve exited ({st}) before serving:\n{}", s.log_text());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "not served after 20 s:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s.conn = Some(minor(std::fs::metadata(&s.mnt).unwrap().dev()));
        s
    }

    /// After TEST_LIMIT: abort the connection (stuck syscalls of the test
    /// return ENOTCONN), unmount lazily, kill the server.
    pub(crate) fn watchdog(&mut self) {
        let (tx, rx) = mpsc::channel::<()>();
        self.cancel = Some(tx);
        let (mnt, pid, flag) = (
            self.mnt.clone(),
            self.child.as_ref().unwrap().id() as i32,
            self.timed_out.clone(),
        );
        std::thread::spawn(move || {
            if rx.recv_timeout(TEST_LIMIT) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            flag.store(true, Ordering::SeqCst);
            eprintln!(
                "TIMEOUT after {TEST_LIMIT:?}: aborting the FUSE connection of {}",
                mnt.display()
            );
            if let Ok(md) = std::fs::metadata(&mnt) {
                abort_conn(Some(minor(md.dev())));
            }
            umount_lazy(&mnt);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            std::thread::sleep(Duration::from_secs(30));
            eprintln!("TIMEOUT: the test did not end after the abort: exiting");
            std::process::exit(101);
        });
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub(crate) fn head_at(&self) -> Tid {
        let s = std::fs::read_to_string(self.p("head/at")).unwrap();
        assert_eq!(s.len(), 16, "head/at {s:?}");
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{s:?}"
        );
        s.parse().unwrap()
    }

    /// Wait until head/at reaches `tid` (or a later state).
    pub(crate) fn wait_head(&self, tid: Tid) {
        let t0 = Instant::now();
        while self.head_at() < tid {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "head/at did not reach {tid}; server threads:\n{}\n{}",
                self.threads(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server's threads: name, wait channel, state, kernel stack.
    pub(crate) fn threads(&self) -> String {
        let Some(c) = &self.child else {
            return String::new();
        };
        let mut out = String::new();
        let dir = format!("/proc/{}/task", c.id());
        for t in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = t.path();
            let rd = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            let stat = rd("stat");
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split(' ')
                .nth(1)
                .unwrap_or("");
            out += &format!(
                "{} {} {state}\n{}\n",
                rd("comm").trim(),
                rd("wchan"),
                rd("stack")
            );
        }
        out
    }

    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    pub(crate) fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                t0.elapsed() < limit,
                "wcfs serve did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: exit 0 and no mount entry left.
    pub(crate) fn finish(mut self) {
        assert!(!self.timed_out.load(Ordering::SeqCst), "timed out");
        self.assert_alive();
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let st = self.wait_exit(Duration::from_secs(15));
        assert!(st.success(), "wcfs serve: {st}:\n{}", self.log_text());
        assert!(!mounted(&self.mnt), "mount entry left behind");
        let log = self.log_text();
        assert!(!log.contains("panicked"), "{log}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .status();
        }
        if mounted(&self.mnt) {
            abort_conn(self.conn);
            umount_lazy(&self.mnt);
        }
        if std::thread::panicking() {
            eprintln!("--- wcfs log ---\n{}", self.log_text());
        }
    }
}

impl Server {
    /// Serve `db` on `<dir>/mnt` with extra `opts` (e.g. `--pintimeout 2`).
    pub(crate) fn start_opts(dir: &Path, db: &Path, opts: &[&str]) -> Server {
        Self::start_with(dir, db, opts, &[])
    }

    /// `head/bigfile/<oid>`.
    pub(crate) fn head_file(&self, oid: Oid) -> PathBuf {
        self.p(&format!("head/bigfile/{oid}"))
    }

    /// `.wcfs/stats` as name -> value.
    pub(crate) fn stats(&self) -> BTreeMap<String, u64> {
        let s = std::fs::read_to_string(self.p(".wcfs/stats")).unwrap();
        s.lines()
            .map(|l| {
                let (k, v) = l
                    .split_once("\t: ")
                    .unwrap_or_else(|| panic!("stats {s:?}"));
                (
                    k.to_owned(),
                    v.parse().unwrap_or_else(|_| panic!("stats {s:?}")),
                )
            })
            .collect()
    }

    pub(crate) fn stat(&self, key: &str) -> u64 {
        let st = self.stats();
        *st.get(key)
            .unwrap_or_else(|| panic!("no {key} in .wcfs/stats: {st:?}"))
    }

    /// Wait until stat `key` reads `want` (counters of closing links move
    /// asynchronously).
    pub(crate) fn wait_stat(&self, key: &str, want: u64) {
        let t0 = Instant::now();
        loop {
            let got = self.stat(key);
            if got == want {
                return;
            }
            assert!(
                t0.elapsed() < WAIT,
                "stats {key}: want {want}, got {got}: {:?}",
                self.stats()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server is still running (it did not exit on its own).
    pub(crate) fn assert_alive(&mut self) {
        if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("wcfs serve exited: {st}:\n{}", self.log_text());
        }
    }
}

/// `len` bytes at `off` (short only at EOF).
pub(crate) fn read_at(f: &std::fs::File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = std::os::unix::fs::FileExt::read_at(f, &mut buf[got..], off + got as u64).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    buf
}

/// Deterministic bytes.
pub(crate) fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

//! Tooling for `watch.rs`: a `wcfs serve` under a watchdog that unmounts
//! and kills on drop (`server.rs`), a watch link that speaks the raw
//! `head/watch` grammar (one reader thread per link turns what the server
//! sends into lines; pins are acked by the test or, in auto mode, by that
//! thread), and child processes of this test binary that hold their own
//! link and behave well or badly on a pin (`child_main`).
//!
//! Nothing here waits without a bound: every wait has a generous limit
//! (`WAIT`) and panics with what was seen, and the watchdog aborts the
//! FUSE connection after `TEST_LIMIT`, so that a hung server or a test
//! bug ends the test instead of the run.

use client::proto::{self, Pin};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

/// How long we watch for something that must not happen (a reply that must
/// wait, a pin that must not come, a read that must stay blocked).
pub(crate) const QUIET: Duration = Duration::from_millis(300);

// ---- the server: support/server.rs ----

pub(crate) use crate::server::{pattern, read_at, Server, WAIT};

// ---- data ----

/// Block `blk` of the file at `path`, read with read(2) on a new fd with
/// readahead off (POSIX_FADV_RANDOM): a readahead into the next blocks
/// would READ, track and pin them too.
pub(crate) fn read_blk(path: &Path, blk: i64, bs: u64) -> Vec<u8> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
    )
    .unwrap();
    read_at(&f, blk as u64 * bs, bs as usize)
}

/// `read_blk` in a thread: the result arrives on the channel (a read that
/// pins blocks until the pins are acked).
pub(crate) fn read_blk_bg(path: PathBuf, blk: i64, bs: u64) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read_blk(&path, blk, bs));
    });
    rx
}

/// Drop the clean pages of a file from the page cache, so that the next
/// read of them is a FUSE READ again.
pub(crate) fn drop_cache(path: &Path) {
    let f = File::open(path).unwrap();
    nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .unwrap();
}

/// Wait for a background read; panic after `limit`.
pub(crate) fn wait_read(rx: &mpsc::Receiver<Vec<u8>>, limit: Duration, what: &str) -> Vec<u8> {
    rx.recv_timeout(limit)
        .unwrap_or_else(|e| panic!("{what}: the read did not complete within {limit:?}: {e}"))
}

/// Pins as blk -> rev (`None` = `@head`), checking that all are for `oid`
/// and no block is pinned twice.
pub(crate) fn pin_map(oid: Oid, pins: &[Pin]) -> BTreeMap<i64, Option<Tid>> {
    let mut m = BTreeMap::new();
    for p in pins {
        assert_eq!(p.oid, oid, "pin for another file: {p} (all: {pins:?})");
        assert!(
            m.insert(p.blk, p.rev).is_none(),
            "block pinned twice: {p} (all: {pins:?})"
        );
    }
    m
}

/// `[(blk, rev)]` as a pin map.
pub(crate) fn pins(v: &[(i64, Option<Tid>)]) -> BTreeMap<i64, Option<Tid>> {
    v.iter().copied().collect()
}

// ---- watch links ----

/// Splits what comes from a link into lines.
#[derive(Default)]
pub(crate) struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// The next line without its LF; `Ok(None)` at EOF.
    pub(crate) fn next(&mut self, f: &File) -> std::io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(String::from_utf8_lossy(&l[..i]).into_owned()));
            }
            let mut b = [0u8; 4096];
            let n = (&*f).read(&mut b)?;
            if n == 0 {
                if !self.buf.is_empty() {
                    let l = String::from_utf8_lossy(&self.buf).into_owned();
                    self.buf.clear();
                    return Ok(Some(format!("{l}<no LF>")));
                }
                return Ok(None);
            }
            self.buf.extend_from_slice(&b[..n]);
        }
    }
}

/// What the reader thread of a link saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ev {
    Line(String),
    Eof,
    Err(String),
}

/// A pin request as received: its stream and the pin.
pub(crate) fn as_pin(line: &str) -> Option<(u64, Pin)> {
    let fr = proto::parse_frame(line).ok()?;
    if fr.stream == 0 || fr.stream % 2 == 1 {
        return None;
    }
    proto::parse_pin(fr.msg).ok().map(|p| (fr.stream, p))
}

/// One open of `head/watch`, speaking the raw grammar.
pub(crate) struct Link {
    f: Arc<File>,
    rx: mpsc::Receiver<Ev>,
    /// Pins the reader thread acked (auto mode), in arrival order.
    log: Arc<Mutex<Vec<Pin>>>,
    auto: bool,
    next: u64,
    eof: bool,
    name: String,
}

impl Link {
    /// Open a link. With `auto_ack`, the reader thread acks every pin at
    /// once and logs it (`take_pins`); otherwise pins come as lines and the
    /// test acks them.
    pub(crate) fn open(srv: &Server, name: &str, auto_ack: bool) -> Link {
        let f = Arc::new(open_watch(srv));
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (rf, rlog) = (f.clone(), log.clone());
        std::thread::spawn(move || {
            let mut lines = Lines::default();
            loop {
                match lines.next(&rf) {
                    Ok(Some(l)) => {
                        if auto_ack {
                            if let Some((s, p)) = as_pin(&l) {
                                rlog.lock().unwrap().push(p);
                                let _ = (&*rf).write_all(proto::format_frame(s, "ack").as_bytes());
                                continue;
                            }
                        }
                        if tx.send(Ev::Line(l)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Ev::Eof);
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Ev::Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        Link {
            f,
            rx,
            log,
            auto: auto_ack,
            next: 1,
            eof: false,
            name: name.to_owned(),
        }
    }

    /// The link's file (to write arbitrary bytes).
    pub(crate) fn file(&self) -> &File {
        &self.f
    }

    /// Write raw bytes (one or more frames, or garbage).
    pub(crate) fn send_raw(&self, s: &str) -> std::io::Result<()> {
        (&*self.f).write_all(s.as_bytes())
    }

    pub(crate) fn send(&self, stream: u64, msg: &str) {
        self.send_raw(&proto::format_frame(stream, msg))
            .unwrap_or_else(|e| panic!("{}: write {stream} {msg:?}: {e}", self.name));
    }

    /// Send `msg` on a new client stream; returns the stream.
    pub(crate) fn request(&mut self, msg: &str) -> u64 {
        let s = self.next;
        self.next += 2;
        self.send(s, msg);
        s
    }

    pub(crate) fn ack(&self, stream: u64) {
        self.send(stream, proto::ACK);
    }

    /// The next event within `limit`, if any.
    pub(crate) fn recv(&mut self, limit: Duration) -> Option<Ev> {
        let ev = self.rx.recv_timeout(limit).ok();
        if matches!(ev, Some(Ev::Eof | Ev::Err(_))) {
            self.eof = true;
        }
        ev
    }

    /// The next line; panics on EOF or after WAIT.
    pub(crate) fn line(&mut self, what: &str) -> String {
        match self.recv(WAIT) {
            Some(Ev::Line(l)) => l,
            ev => panic!("{}: {what}: want a line, got {ev:?}", self.name),
        }
    }

    /// The next event is EOF (the server closed the link).
    pub(crate) fn expect_eof(&mut self, what: &str) {
        match self.recv(WAIT) {
            Some(Ev::Eof) => {}
            ev => panic!("{}: {what}: want EOF, got {ev:?}", self.name),
        }
    }

    /// Nothing arrives for QUIET (and, in auto mode, nothing got pinned).
    pub(crate) fn expect_quiet(&mut self, what: &str) {
        let n0 = self.log.lock().unwrap().len();
        if let Some(ev) = self.recv(QUIET) {
            panic!("{}: {what}: want nothing, got {ev:?}", self.name);
        }
        let log = self.log.lock().unwrap();
        assert_eq!(
            log.len(),
            n0,
            "{}: {what}: pinned {:?}",
            self.name,
            &log[n0..]
        );
    }

    /// The next line is a pin (manual mode): its stream and the pin.
    pub(crate) fn pin(&mut self, what: &str) -> (u64, Pin) {
        let l = self.line(what);
        as_pin(&l).unwrap_or_else(|| panic!("{}: {what}: want a pin, got {l:?}", self.name))
    }

    /// Pins the reader thread acked since the last call (auto mode).
    pub(crate) fn take_pins(&self) -> Vec<Pin> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// Wait for the reply on `stream`, acking pins that come meanwhile;
    /// returns the reply message and those pins (in auto mode: the pins
    /// the reader thread acked since the last `take_pins`).
    pub(crate) fn reply(&mut self, stream: u64, what: &str) -> (String, Vec<Pin>) {
        let mut got = Vec::new();
        loop {
            let l = self.line(what);
            if let Some((s, p)) = as_pin(&l) {
                assert!(!self.auto);
                got.push(p);
                self.ack(s);
                continue;
            }
            let fr = proto::parse_frame(&l)
                .unwrap_or_else(|e| panic!("{}: {what}: bad frame {l:?}: {e}", self.name));
            assert_eq!(fr.stream, stream, "{}: {what}: unexpected {l:?}", self.name);
            if self.auto {
                got = self.take_pins();
            }
            return (fr.msg.to_owned(), got);
        }
    }

    /// `watch <oid> <at>` (`at` as written: `@<tid>` or `-`): the reply and
    /// the pins received (and acked) before it (in auto mode: since the
    /// last `take_pins`, in arrival order).
    pub(crate) fn watch(&mut self, oid: Oid, at: &str) -> (String, Vec<Pin>) {
        let s = self.request(&format!("watch {oid} {at}"));
        self.reply(s, &format!("watch {oid} {at}"))
    }

    /// `watch <oid> @<at>` must succeed; returns its pins as a map.
    pub(crate) fn watch_ok(&mut self, oid: Oid, at: Tid) -> BTreeMap<i64, Option<Tid>> {
        let (r, p) = self.watch(oid, &format!("@{at}"));
        assert_eq!(r, "ok", "{}: watch {oid} @{at}", self.name);
        pin_map(oid, &p)
    }

    /// `bye`: no reply, the server closes the link.
    pub(crate) fn bye(mut self) {
        self.request("bye");
        self.expect_eof("after bye");
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.eof {
            return;
        }
        // Unblock the reader thread (it holds the fd: the link stays open
        // until its read returns).
        let _ = self.send_raw(&proto::format_frame(self.next, "bye"));
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ev::Line(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
        eprintln!("{}: the server did not close the link after bye", self.name);
    }
}

pub(crate) fn open_watch(srv: &Server) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(srv.p("head/watch"))
        .unwrap_or_else(|e| panic!("open head/watch: {e}"))
}

// ---- child processes ----

/// The test that is a child's body (see `child_main`).
pub(crate) const CHILD_TEST: &str = "child_role";

/// A child process of this test binary holding its own watch link (see
/// `child_main` for the roles). Killed and reaped on drop.
pub(crate) struct Proc {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<String>,
    /// Everything the child reported, for failure messages.
    pub(crate) seen: Vec<String>,
    status: Option<ExitStatus>,
    role: String,
}

impl Proc {
    /// Start a child in `role` that watches `oid` at `at` and reports
    /// `ready` once its watch is set up (after acking the setup pins).
    pub(crate) fn spawn(role: &str, srv: &Server, oid: Oid, at: Tid) -> Proc {
        let mut p = Self::spawn_nowait(role, srv, oid, at);
        p.expect("ready", &format!("{role} child: watch set up"));
        p
    }

    /// `spawn` without waiting for `ready`.
    pub(crate) fn spawn_nowait(role: &str, srv: &Server, oid: Oid, at: Tid) -> Proc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                CHILD_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env("WCFS_WATCH_ROLE", role)
            .env("WCFS_WATCH_MNT", &srv.mnt)
            .env("WCFS_WATCH_OID", oid.to_string())
            .env("WCFS_WATCH_AT", at.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if let Some(m) = l.strip_prefix("@@ ") {
                    if tx.send(m.to_owned()).is_err() {
                        return;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child: Some(child),
            stdin,
            rx,
            seen: Vec::new(),
            status: None,
            role: role.to_owned(),
        }
    }

    pub(crate) fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// The next report that starts with `prefix` (others are kept in
    /// `seen`); panics after WAIT.
    pub(crate) fn expect(&mut self, prefix: &str, what: &str) -> String {
        let t0 = Instant::now();
        loop {
            let left = WAIT.saturating_sub(t0.elapsed());
            match self.rx.recv_timeout(left) {
                Ok(m) => {
                    self.seen.push(m.clone());
                    if m.starts_with(prefix) {
                        return m;
                    }
                }
                Err(e) => panic!(
                    "{} child: {what}: no {prefix:?} ({e}); seen {:?}",
                    self.role, self.seen
                ),
            }
        }
    }

    /// Everything reported so far (without waiting).
    pub(crate) fn drain(&mut self) -> &[String] {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
        &self.seen
    }

    /// Reports seen so far that are pins: `pin ...` messages.
    pub(crate) fn pins_seen(&mut self) -> Vec<Pin> {
        self.drain()
            .iter()
            .filter_map(|m| m.strip_prefix("line "))
            .filter_map(as_pin)
            .map(|(_, p)| p)
            .collect()
    }

    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    /// Wait for the child to exit within `limit`.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.status = Some(st);
                return st;
            }
            if t0.elapsed() > limit {
                let seen = self.drain().to_vec();
                panic!(
                    "{} child: still alive after {limit:?}; it reported {seen:?}",
                    self.role
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Write a line to the child's stdin.
    pub(crate) fn tell(&mut self, line: &str) {
        let w = self.stdin.as_mut().expect("stdin closed");
        writeln!(w, "{line}").unwrap();
        w.flush().unwrap();
    }

    /// Close the child's stdin: a `good` child says `bye` and exits 0.
    pub(crate) fn finish(mut self) {
        drop(self.stdin.take());
        let st = self.wait_exit(WAIT);
        assert!(
            st.success(),
            "{} child: {st}; reported {:?}",
            self.role,
            self.seen
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.status.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The signal that ended a process, if one did.
pub(crate) fn term_signal(st: ExitStatus) -> Option<i32> {
    st.signal()
}

/// The body of a child (`Proc::spawn`), run as the test `child_role` of
/// this binary when `$WCFS_WATCH_ROLE` is set. It opens `head/watch` of
/// `$WCFS_WATCH_MNT`, sends `1 watch $WCFS_WATCH_OID @$WCFS_WATCH_AT`,
/// acks the setup pins, reports `ready`, then reports every line it reads
/// (`line <line>`) and answers the first pin after setup by its role:
///
/// - `good`: acks every pin; when its stdin closes it says `bye`, and
///   exits 0 at EOF;
/// - `stop`: like `good` (the test SIGSTOPs it);
/// - `noack`: never answers;
/// - `wrongstream`: acks on the pin's stream + 2;
/// - `nak`: replies `nak: no`;
/// - `garbage`: sends a line without a space;
/// - `close`: closes the link without `bye`, and exits 0 after 500 ms;
/// - `closestay`: closes the link without `bye` and stays (to be killed);
/// - `bye`: says `bye` instead of answering, exits 0 500 ms after EOF;
/// - `setup-noack`: does not ack the pins of its own setup;
/// - `selfread`: on `go <blk> <blksize>` from stdin, reads that block of
///   the head file in the thread that would handle pins (so its own pin
///   is never answered: a client without a pinner thread);
/// - `<role>-thread`: `<role>`, with the link opened by a thread that
///   exits before the watch request (the FUSE OPEN's pid is a thread id
///   that is gone by the time of the pin).
///
/// SIGBUS is reported (`SIGBUS`) and survived, so that a kill by the
/// server shows both of its steps: SIGBUS, then SIGKILL.
///
/// Reports go to stdout as `@@ <report>` (the rest of stdout is libtest's).
pub(crate) fn child_main() {
    let Ok(mut role) = std::env::var("WCFS_WATCH_ROLE") else {
        return;
    };
    let say = |m: &str| println!("@@ {m}");
    // Report SIGBUS and survive it (std's own handler would too, silently):
    // the test sees that the server sent it before SIGKILL.
    let sa = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigbus),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only calls write(2), which is async-signal-safe.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGBUS, &sa) }.unwrap();
    let mnt = PathBuf::from(std::env::var("WCFS_WATCH_MNT").unwrap());
    let oid = std::env::var("WCFS_WATCH_OID").unwrap();
    let at = std::env::var("WCFS_WATCH_AT").unwrap();
    let head_file = mnt.join(format!("head/bigfile/{oid}"));
    let open = move || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(mnt.join("head/watch"))
            .unwrap()
    };
    // `<role>-thread`: the link is opened by a thread that then exits
    let f = match role.strip_suffix("-thread") {
        Some(r) => {
            let f = std::thread::spawn(open).join().unwrap();
            say("opener thread exited");
            role = r.to_owned();
            f
        }
        None => open(),
    };
    let f = Arc::new(f);
    let mut lines = Lines::default();
    // `early-<role>`: ask for early pins first (its `5 ok` comes as a
    // setup line)
    if let Some(r) = role.strip_prefix("early-") {
        send(&f, &format!("5 {}\n", proto::OPTION_EARLY_PINS));
        role = r.to_owned();
    }
    send(&f, &format!("1 watch {oid} @{at}\n"));
    loop {
        let Ok(Some(l)) = lines.next(&f) else {
            say("eof before ok");
            if role == "setup-noack" {
                // wait to be killed
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            return;
        };
        if let Some((s, p)) = as_pin(&l) {
            say(&format!("setup-pin {p}"));
            if role != "setup-noack" {
                send(&f, &proto::format_frame(s, "ack"));
            }
        } else if l == "1 ok" {
            say("ready");
            break;
        } else {
            say(&format!("setup-line {l}"));
        }
    }
    if role == "selfread" {
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
        let v: Vec<u64> = go
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        say("reading");
        let r = File::open(&head_file).and_then(|hf| {
            let mut b = vec![0u8; v[1] as usize];
            hf.read_at(&mut b, v[0] * v[1])
        });
        say(&format!("read returned {r:?}"));
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if role == "good" {
        let wf = f.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = (&*wf).write_all(b"3 bye\n");
        });
    }
    let mut misbehaved = false;
    loop {
        match lines.next(&f) {
            Ok(Some(l)) => {
                say(&format!("line {l}"));
                let Some((s, _)) = as_pin(&l) else { continue };
                if role == "good" || role == "stop" {
                    send(&f, &proto::format_frame(s, "ack"));
                    continue;
                }
                if misbehaved {
                    continue;
                }
                misbehaved = true;
                match role.as_str() {
                    "noack" => {}
                    "wrongstream" => send(&f, &proto::format_frame(s + 2, "ack")),
                    "nak" => send(&f, &proto::format_frame(s, "nak: no")),
                    "garbage" => send(&f, "garbage\n"),
                    "bye" => send(&f, "3 bye\n"),
                    "close" | "closestay" => {
                        match Arc::try_unwrap(f) {
                            Ok(f) => drop(f),
                            Err(_) => say("link fd still shared"),
                        }
                        say("closed");
                        if role == "closestay" {
                            loop {
                                std::thread::sleep(Duration::from_secs(1));
                            }
                        }
                        std::thread::sleep(Duration::from_millis(500));
                        std::process::exit(0);
                    }
                    r => panic!("unknown role {r}"),
                }
                say("misbehaved");
            }
            Ok(None) => {
                say("eof");
                if role == "bye" {
                    std::thread::sleep(Duration::from_millis(500));
                    std::process::exit(0);
                }
                break;
            }
            Err(e) => {
                say(&format!("read error {e}"));
                break;
            }
        }
    }
    if role == "good" {
        return;
    }
    // A faulty client waits to be killed (the test kills it on drop).
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Write to a child's link; errors (the link is down) are what some roles
/// provoke, so they are ignored.
fn send(f: &File, s: &str) {
    let _ = (&*f).write_all(s.as_bytes());
}

extern "C" fn on_sigbus(_: nix::libc::c_int) {
    const MSG: &[u8] = b"\n@@ SIGBUS\n";
    // SAFETY: write(2) of a static buffer to fd 1, async-signal-safe.
    unsafe { nix::libc::write(1, MSG.as_ptr().cast(), MSG.len()) };
}

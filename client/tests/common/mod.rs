//! A fake wcfs for client tests: a temp dir laid out as a mount
//! (`head/at`, `head/bigfile/<oid>`, `@<rev>/bigfile/<oid>`) and a fake
//! server speaking the watch-link grammar over a `UnixStream` pair. Every
//! wait has a timeout, so a client that hangs fails the test instead.

#![allow(dead_code, unreachable_pub)]

use client::{Oid, Tid, WCFS};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Call first in every test: a failing assertion ends the whole test
/// process (exit 101, message on the real stderr) instead of unwinding,
/// because unwinding drops FileHs whose `watch -` would wait for a fake
/// server that is no longer answering: a failure must not turn into a hang.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = format!("\nTEST FAILURE (process exits): {info}\n");
            let _ = std::io::stderr().write_all(msg.as_bytes());
            default(info);
            std::process::exit(101);
        }));
    });
}

pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Two pages per block: remaps must cover whole blocks.
pub const BLKSIZE: usize = 8192;

pub const F: Oid = Oid(0x1);
pub const G: Oid = Oid(0x2);
pub const AT0: Tid = Tid(0x0285cbac00000000);
pub const AT1: Tid = Tid(0x0285cbac10000000);
pub const AT2: Tid = Tid(0x0285cbac20000000);

/// The byte every position of block `blk` of `head/bigfile/<oid>` holds.
pub fn head_byte(blk: usize) -> u8 {
    0x10 + blk as u8
}

/// The byte of block `blk` in `@<rev>/bigfile/<oid>`: distinct per rev.
pub fn rev_byte(rev: Tid, blk: usize) -> u8 {
    0x80 + (((rev.0 >> 28) & 3) as u8) * 0x20 + blk as u8
}

pub struct FakeMount {
    _dir: tempfile::TempDir,
    pub mnt: PathBuf,
}

impl FakeMount {
    pub fn new(head_at: Tid) -> FakeMount {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().to_owned();
        std::fs::create_dir_all(mnt.join("head/bigfile")).unwrap();
        let m = FakeMount { _dir: dir, mnt };
        m.set_head_at(head_at);
        m
    }

    pub fn set_head_at(&self, at: Tid) {
        // Write + rename: a poller never sees a partial file.
        let tmp = self.mnt.join("head/.at.tmp");
        std::fs::write(&tmp, at.to_string()).unwrap();
        std::fs::rename(&tmp, self.mnt.join("head/at")).unwrap();
    }

    /// `head/bigfile/<oid>` with `nblk` blocks of [`head_byte`].
    pub fn set_head(&self, oid: Oid, nblk: usize) {
        write_blocks(
            &self.mnt.join("head/bigfile").join(oid.to_string()),
            nblk,
            head_byte,
        );
    }

    /// `@<rev>/bigfile/<oid>` with `nblk` blocks of [`rev_byte`].
    pub fn set_rev(&self, rev: Tid, oid: Oid, nblk: usize) {
        let d = self.mnt.join(format!("@{rev}/bigfile"));
        std::fs::create_dir_all(&d).unwrap();
        write_blocks(&d.join(oid.to_string()), nblk, |b| rev_byte(rev, b));
    }

    pub fn wcfs(&self) -> WCFS {
        WCFS::open(&self.mnt)
            .unwrap()
            .with_blksize_override(BLKSIZE as u64)
    }
}

fn write_blocks(p: &Path, nblk: usize, byte: impl Fn(usize) -> u8) {
    let mut data = Vec::with_capacity(nblk * BLKSIZE);
    for b in 0..nblk {
        data.extend(std::iter::repeat_n(byte(b), BLKSIZE));
    }
    // In place (not rename): an open head fd must see the growth.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(p)
        .unwrap();
    f.write_all(&data).unwrap();
    f.set_len(data.len() as u64).unwrap();
}

/// The server end of a watch link.
pub struct FakeServer {
    rx: BufReader<UnixStream>,
    tx: UnixStream,
}

impl FakeServer {
    /// A link pair: the client end to hand to `connect_with_link`.
    pub fn pair() -> (UnixStream, FakeServer) {
        let (cli, srv) = UnixStream::pair().unwrap();
        srv.set_read_timeout(Some(TIMEOUT)).unwrap();
        let tx = srv.try_clone().unwrap();
        (
            cli,
            FakeServer {
                rx: BufReader::new(srv),
                tx,
            },
        )
    }

    /// The next line from the client, split into stream and message.
    pub fn recv(&mut self) -> (u64, String) {
        let mut line = String::new();
        let n = self
            .rx
            .read_line(&mut line)
            .expect("fake server: read (timeout?)");
        assert!(n > 0, "fake server: EOF from client");
        assert!(line.ends_with('\n'), "line without LF: {line:?}");
        let line = line.trim_end_matches('\n');
        let (s, m) = line.split_once(' ').expect("frame without space");
        (s.parse().expect("bad stream"), m.to_owned())
    }

    /// Expect `msg` on an odd stream; returns the stream.
    pub fn expect_req(&mut self, msg: &str) -> u64 {
        let (s, m) = self.recv();
        assert_eq!(m, msg);
        assert_eq!(s % 2, 1, "client request on even stream {s}");
        s
    }

    pub fn send(&mut self, stream: u64, msg: &str) {
        self.tx
            .write_all(format!("{stream} {msg}\n").as_bytes())
            .unwrap();
    }

    /// Send a raw line (LF added).
    pub fn send_raw(&mut self, line: &str) {
        self.tx.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// Send a pin and require the exact `ack`.
    pub fn pin(&mut self, stream: u64, oid: Oid, blk: i64, rev: Option<Tid>) {
        self.send_pin(stream, oid, blk, rev);
        let (s, m) = self.recv();
        assert_eq!((s, m.as_str()), (stream, "ack"));
    }

    pub fn send_pin(&mut self, stream: u64, oid: Oid, blk: i64, rev: Option<Tid>) {
        let rev = rev.map_or("head".to_owned(), |r| r.to_string());
        let rev = if rev == "head" {
            "@head".to_owned()
        } else {
            format!("@{rev}")
        };
        self.send(stream, &format!("pin {oid} #{blk} {rev}"));
    }

    /// Expect `bye`, then close the link (what the server does).
    pub fn expect_bye(mut self) {
        self.expect_req("bye");
        drop(self);
    }

    /// True if the client sent nothing within `d`.
    pub fn quiet_for(&mut self, d: Duration) -> bool {
        self.rx.get_ref().set_read_timeout(Some(d)).unwrap();
        let r = self.rx.fill_buf().map(|b| b.is_empty());
        self.rx.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
        match r {
            Ok(_eof) => false,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    /// Close the server end (EOF for the client).
    pub fn hang_up(self) {}
}

/// Run `f` in a thread; [`Bg::wait`] fails the test if it does not finish.
pub struct Bg<T>(mpsc::Receiver<std::thread::Result<T>>);

pub fn bg<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Bg<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    Bg(rx)
}

impl<T> Bg<T> {
    pub fn wait(self) -> T {
        match self.0.recv_timeout(TIMEOUT) {
            Ok(Ok(v)) => v,
            Ok(Err(p)) => std::panic::resume_unwind(p),
            Err(_) => panic!("background operation did not finish in {TIMEOUT:?}"),
        }
    }

    /// Still running after `d`?
    pub fn still_running(&self, d: Duration) -> bool {
        std::thread::sleep(d);
        matches!(self.0.try_recv(), Err(mpsc::TryRecvError::Empty))
    }
}

/// Every byte of block `i` of `data` (blocks of [`BLKSIZE`]) equals `b`.
pub fn assert_blk(data: &[u8], i: usize, b: u8, what: &str) {
    let blk = &data[i * BLKSIZE..(i + 1) * BLKSIZE];
    assert!(
        blk.iter().all(|&x| x == b),
        "{what}: block {i}: want all {b:#04x}, got first {:#04x} (last {:#04x})",
        blk[0],
        blk[BLKSIZE - 1]
    );
}

/// The protection string of the `/proc/self/maps` entry containing `addr`.
pub fn prot_of(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for l in maps.lines() {
        let mut it = l.split_whitespace();
        let range = it.next()?;
        let perms = it.next()?;
        let (a, b) = range.split_once('-')?;
        let (a, b) = (
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        );
        if a <= addr && addr < b {
            return Some(perms.to_owned());
        }
    }
    None
}

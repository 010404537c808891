//! Reader processes (`wcfs-stress reader ...`, started by the harness):
//! each takes a Conn at a recent state from the history log, maps every
//! file, reads random blocks and checks every byte against the expected
//! content as of its own `at`, then resyncs forward and goes on. An "old"
//! reader keeps its `at` for a long time. Reports go to stdout, one line
//! each:
//!
//! ```text
//! S <reads> <bytes> <wrong reads> <wrong bytes> <discarded> <conns> <latency hist>
//!                                  cumulative counters, every ~500 ms
//! WRONG <file> <blk> @<at> <first differing offset> <differing bytes> <seen>
//!                                  an isolation violation; <seen> is what
//!                                  was read: `@<tid>` (the content that
//!                                  transaction wrote), `hole` or `?`
//! ```
//!
//! The reader ends when its stdin closes (dropping everything cleanly).
//!
//! A read whose data differs is discarded, not counted wrong, when its
//! Conn went down (the server shut the link: an epoch) or an epoch of that
//! file was announced after `at`: after an epoch the server no longer pins
//! this view, and the reader may notice only after the read.

use crate::model::{expected, mix, Counters, History};
use anyhow::Result;
use client::{Conn, FileH, Mapping, WCFS};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::Tid;

/// Options of a reader.
pub(crate) struct ReaderOpts {
    pub(crate) mnt: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) seed: u64,
    pub(crate) id: u64,
    /// Keep each `at` this long before moving forward.
    pub(crate) hold: Duration,
    /// Map this many blocks of each file (files grow up to it).
    pub(crate) max_blocks: i64,
    /// The files it reads (indices into the history's files); the harness
    /// gives each reader few, so that a fault on one file leaves the
    /// readers of the others measurable.
    pub(crate) files: Vec<usize>,
}

/// A view: a Conn and the reader's files mapped (in `files` order).
struct View {
    conn: Conn,
    maps: Vec<(FileH, Mapping)>,
}

fn open_view(wc: &WCFS, h: &History, files: &[usize], at: Tid, max_blocks: i64) -> Result<View> {
    let conn = wc.connect(at)?;
    let mut maps = Vec::new();
    for &fi in files {
        let fh = conn.open(h.files[fi].oid)?;
        let m = fh.mmap(0, max_blocks)?;
        maps.push((fh, m));
    }
    Ok(View { conn, maps })
}

/// Pick a state to view: the newest, or one of the few before it.
fn pick_at(h: &History, rng: &mut u64, not_before: Option<Tid>) -> Option<Tid> {
    *rng = mix(*rng);
    let back = (*rng % 4) as usize;
    let n = h.tids.len();
    let at = h.tids[n.saturating_sub(1 + back)];
    Some(match not_before {
        Some(nb) if nb > at => nb,
        _ => at,
    })
}

/// On SIGBUS: write the faulting address to stderr, then die of SIGBUS as
/// before (the harness sees signal 7), so that a death that is not the
/// server's kill (no `killing the client` line for its pid) says where it
/// happened; `/proc/<pid>/maps` is copied to stderr for the mapping.
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let mut buf = [0u8; 64];
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    // SAFETY: si_code is a plain field of that siginfo.
    let code = unsafe { (*info).si_code };
    let mut n = 0;
    put_str(&mut buf, &mut n, b"SIGBUS at 0x");
    for i in (0..16).rev() {
        buf[n] = b"0123456789abcdef"[(addr >> (i * 4)) & 15];
        n += 1;
    }
    put_str(&mut buf, &mut n, b" code ");
    // SI_USER (0) or below: sent by a process (the server's kill);
    // BUS_ADRERR (2): the kernel (an access the file cannot back)
    buf[n] = if code < 0 {
        b'-'
    } else {
        b'0' + (code.min(9) as u8)
    };
    n += 1;
    put_str(&mut buf, &mut n, b" pid ");
    // SAFETY: getpid(2) is async-signal-safe.
    put_num(&mut buf, &mut n, unsafe { libc::getpid() } as u64);
    put_str(&mut buf, &mut n, b"\n");
    // SAFETY: write(2), open(2), read(2) and signal/raise are
    // async-signal-safe; the buffers are on this stack.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        let fd = libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY);
        if fd >= 0 {
            let mut m = [0u8; 4096];
            loop {
                let k = libc::read(fd, m.as_mut_ptr().cast(), m.len());
                if k <= 0 {
                    break;
                }
                libc::write(2, m.as_ptr().cast(), k as usize);
            }
            libc::close(fd);
        }
        sigbus_sizes();
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        libc::raise(libc::SIGBUS);
    }
}

/// Append `s` to `buf` at `n` (as far as it fits).
fn put_str(buf: &mut [u8], n: &mut usize, s: &[u8]) {
    for &b in s {
        if *n < buf.len() {
            buf[*n] = b;
            *n += 1;
        }
    }
}

/// Append `v` in decimal to `buf` at `n`.
fn put_num(buf: &mut [u8], n: &mut usize, mut v: u64) {
    let mut d = [0u8; 20];
    let mut k = 0;
    loop {
        d[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while k > 0 && *n < buf.len() {
        k -= 1;
        buf[*n] = d[k];
        *n += 1;
    }
}

/// For the SIGBUS report: every open regular file's inode and size as
/// the kernel has it cached (`statx` with `AT_STATX_DONT_SYNC`: no
/// getattr), then as the server says now (`fstat`). A cached size below
/// what the mapping covers means the inode was cut; sizes that cover it
/// mean the page's READ failed instead.
fn sigbus_sizes() {
    for fd in 3..1024 {
        let mut buf = [0u8; 128];
        let mut n = 0;
        // SAFETY: statx/fstat/write are syscalls (async-signal-safe) on
        // buffers of this stack frame.
        unsafe {
            let mut sx: libc::statx = std::mem::zeroed();
            let r = libc::statx(
                fd,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
                libc::STATX_SIZE | libc::STATX_INO | libc::STATX_TYPE,
                &mut sx,
            );
            if r != 0 || (sx.stx_mode as u32 & libc::S_IFMT) != libc::S_IFREG {
                continue;
            }
            let mut st: libc::stat = std::mem::zeroed();
            let now = if libc::fstat(fd, &mut st) == 0 {
                st.st_size as u64
            } else {
                u64::MAX
            };
            put_str(&mut buf, &mut n, b"fd ");
            put_num(&mut buf, &mut n, fd as u64);
            put_str(&mut buf, &mut n, b" ino ");
            put_num(&mut buf, &mut n, sx.stx_ino);
            put_str(&mut buf, &mut n, b" cached size ");
            put_num(&mut buf, &mut n, sx.stx_size);
            put_str(&mut buf, &mut n, b" server size ");
            put_num(&mut buf, &mut n, now);
            put_str(&mut buf, &mut n, b"\n");
            libc::write(2, buf.as_ptr().cast(), n);
        }
    }
}

fn install_sigbus_report() {
    // SAFETY: sigaction with a handler that only calls async-signal-safe
    // functions (see on_sigbus); SA_RESETHAND is not used so that the
    // handler itself restores the default before re-raising.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

pub(crate) fn run(o: ReaderOpts) -> Result<()> {
    install_sigbus_report();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
            stop.store(true, Ordering::SeqCst);
        });
    }
    let wc = WCFS::open(&o.mnt)?;
    let mut h = History::default();
    h.refresh(&o.log)?;
    anyhow::ensure!(
        !o.files.is_empty() && o.files.iter().all(|&f| f < h.files.len()),
        "reader {}: files {:?}: the database has {}",
        o.id,
        o.files,
        h.files.len()
    );
    let mut rng = mix(o.seed ^ mix(o.id + 1));
    let mut c = Counters::default();
    let mut out = std::io::stdout();
    let mut last_report = Instant::now();
    let mut buf = Vec::new();
    let mut view: Option<View> = None;
    let mut view_since = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        h.refresh(&o.log)?;
        // (re)connect, or move forward when the hold time is over
        let need_new = match &view {
            None => true,
            Some(v) => v.conn.check().is_err(),
        };
        if need_new {
            view = None;
            let Some(at) = pick_at(&h, &mut rng, None) else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            match open_view(&wc, &h, &o.files, at, o.max_blocks) {
                Ok(v) => {
                    view = Some(v);
                    view_since = Instant::now();
                    c.conns += 1;
                }
                Err(e) => {
                    // e.g. a file epoch between at and head: try a newer at
                    eprintln!("reader {}: view @{at}: {e}", o.id);
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        } else if view_since.elapsed() >= o.hold {
            let v = view.as_ref().expect("view");
            let cur = v.conn.at();
            if let Some(at) = pick_at(&h, &mut rng, Some(cur)) {
                if let Err(e) = v.conn.resync(at) {
                    eprintln!("reader {}: resync @{at}: {e}", o.id);
                    view = None;
                    continue;
                }
                view_since = Instant::now();
            }
        }
        let v = view.as_ref().expect("view");
        let at = v.conn.at();
        // a burst of reads of random blocks
        for _ in 0..16 {
            rng = mix(rng);
            let mi = (rng % o.files.len() as u64) as usize;
            let fi = o.files[mi];
            let f = h.files[fi];
            let blk = ((rng >> 16) % o.max_blocks as u64) as i64;
            let bs = f.blksize as usize;
            buf.resize(bs, 0);
            let t0 = Instant::now();
            if let Err(e) = v.maps[mi].1.read_at(blk as usize * bs, &mut buf) {
                eprintln!("reader {}: read: {e}", o.id);
                break;
            }
            let us = t0.elapsed().as_micros() as u64;
            let want = expected(o.seed, fi as u32, blk, h.writer_at(fi as u32, blk, at), bs);
            if buf == want {
                c.reads += 1;
                c.bytes += bs as u64;
                c.lat.record(us);
                continue;
            }
            // not as of at: is this view still pinned by the server?
            std::thread::sleep(Duration::from_millis(200));
            h.refresh(&o.log)?;
            if v.conn.check().is_err() || h.epoch_after(fi as u32, at) {
                c.discarded += 1;
                break;
            }
            let off = buf.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            let nbad = buf.iter().zip(&want).filter(|(a, b)| a != b).count() as u64;
            c.wrong += 1;
            c.wrong_bytes += nbad;
            let seen = h.identify(o.seed, fi as u32, blk, &buf);
            writeln!(out, "WRONG {fi} {blk} @{at} {off} {nbad} {seen}")?;
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            report(&mut out, &c)?;
            last_report = Instant::now();
        }
    }
    drop(view);
    report(&mut out, &c)
}

fn report(out: &mut impl Write, c: &Counters) -> Result<()> {
    writeln!(out, "{}", c.to_line())?;
    out.flush()?;
    Ok(())
}

/// A faulty client (`wcfs-stress noack ...`): watches file `oid` at `at`
/// on a raw link and never answers a pin. The server must kill it.
pub(crate) fn noack(mnt: PathBuf, oid: zodb::Oid, at: Tid) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let _f = std::fs::File::open(mnt.join(format!("head/bigfile/{oid}")))?;
    let link = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("head/watch"))?;
    (&link).write_all(format!("1 watch {oid} @{at}\n").as_bytes())?;
    let mut r = BufReader::new(&link);
    let mut line = String::new();
    // read (and ignore) pins, until killed; how it ends otherwise is told
    // by the exit code (see [`NoackEnd`])
    let mut epoch = false;
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) if epoch => std::process::exit(NoackEnd::Epoch as i32),
            Ok(0) => {
                // the server shuts the link (`0 fatal: pin ...`) before its
                // signal arrives: stay to be killed
                std::thread::sleep(Duration::from_secs(60));
                std::process::exit(NoackEnd::Closed as i32)
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if line.starts_with("1 error") {
            // the watch was refused (e.g. an epoch between at and head)
            std::process::exit(NoackEnd::Refused as i32);
        }
        if line.starts_with("0 fatal: file ") && line.contains(": epoch @") {
            epoch = true;
        }
    }
}

/// How a never-acking client ended when it was not killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoackEnd {
    /// The server closed the link with no reason given: it should have
    /// killed us.
    Closed = 10,
    /// An epoch of the watched file shut the link (no kill: right).
    Epoch = 11,
    /// The watch was refused: nothing to pin.
    Refused = 12,
}

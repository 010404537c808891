//! `wcfs-stress`: run `wcfs serve` under pressure and check that every
//! client keeps seeing the database exactly as of its own transaction.
//!
//! A run: create a FileStorage with a few ZBigFiles (or use the one named
//! by `--zurl`), start `wcfs serve` on it (with `--zeo`: start a ZEO server
//! on it, commit through it and serve `zeo://`, see `zeo.rs`), then for
//! `--duration`:
//!
//! - a writer thread commits block changes at `--rate` (see `writer.rs`),
//!   appending every committed transaction to a history log;
//! - `--readers` reader processes (the `client` crate, `reader.rs`) view
//!   recent states, read random blocks and check every byte against the
//!   content expected as of their own `at` (computed from the log);
//! - with `--faults`, a fault thread now and then starts a client that
//!   never acks its pins (the server must kill it), SIGSTOPs a reader (it
//!   must be killed, or go on when continued if nothing needed it), and
//!   kills a reader with SIGKILL mid-read (the server must drop its link);
//!   readers that die are replaced.
//!
//! The sizes come from a shape (`--shape`): `default`, small blocks and
//! many commits per byte, or `production`, 2 MiB blocks as wendelin.core
//! writes them, 16 readers, 4 files of 32 blocks growing to 64, 20
//! commits/s. Explicit flags override the shape's values. At 2 MiB blocks
//! the block data alone grows Data.fs by gigabytes a minute, so the writer
//! stops at `--max-db-bytes` and the run then ends early, cleanly (a note,
//! not a problem); a bound rather than packing, which would need a packer
//! for our FileStorage safe against a server reading it.
//!
//! A progress line every `--progress` seconds; at the end a report (or
//! `--json`), with the verified reads per second inside fault windows and
//! outside them (`report.rs`). The exit status is non-zero on any wrong
//! byte, on a hang (no read completing for too long), on a faulty client
//! the server did not kill, on reads collapsing inside fault windows
//! (`--min-fault-rate-ratio`), on an error of the writer or of the server,
//! on SIGINT/SIGTERM, and on a mount entry or mountpoint left behind.
//!
//! # Ending
//!
//! A run ends cleanly (its time is up, or Data.fs is full): the writer
//! stops first, so that nothing commits while readers leave; readers are
//! asked to end (stdin closed) and waited for together; the faulty
//! clients are killed; the server is stopped with `wcfs stop`. A run is
//! aborted (a hang, a fatal problem, SIGINT or SIGTERM): the dump is
//! written first (`hang.txt`, while everything is as it was), then the
//! writer is stopped, readers and faulty clients are killed, the server
//! is stopped and the killed are reaped: seconds, not pin timeouts. The
//! mount is not read after an abort. A hung server can leave processes
//! that no signal ends (readers in page faults on pages the kernel keeps
//! locked for a READ nobody answers, server threads invalidating those
//! pages, an unmount): readers still there 2 s after SIGKILL, or a server
//! `wcfs stop` leaves unreapable, make the harness abort the mount's FUSE
//! connection, which ends them all. Either way no process, mount entry or
//! mountpoint is left, and every child dies with the harness even if the
//! harness is killed (`procs.rs`).

mod model;
mod procs;
mod reader;
mod report;
mod writer;
mod zeo;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use model::Counters;
use report::{FaultRates, Report};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

#[derive(Parser)]
#[command(
    name = "wcfs-stress",
    about = "Stress a WCFS mount: concurrent commits, readers checking every byte of their own view, faulty clients",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunOpts,
}

#[derive(clap::Args, Clone)]
struct RunOpts {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// The sizes below, unless given: `default` (4 readers, 2 files of 64
    /// blocks of 16 KiB growing to 256, 20 commits/s) or `production`
    /// (16 readers, 4 files of 32 blocks of 2 MiB growing to 64, 20
    /// commits/s).
    #[arg(long, value_enum, default_value_t = ShapeName::Default)]
    shape: ShapeName,
    /// Reader processes (default: the --shape one).
    #[arg(long)]
    readers: Option<usize>,
    /// ZBigFiles (default: the --shape one).
    #[arg(long)]
    files: Option<u32>,
    /// Blocks per file at the start (default: the --shape one).
    #[arg(long)]
    blocks: Option<i64>,
    /// Files grow up to this many blocks (default: the --shape one).
    #[arg(long)]
    max_blocks: Option<i64>,
    /// Files each reader maps and reads, from `id mod files` on (0: all).
    /// With few, a fault on one file leaves the readers of the others to
    /// be measured inside fault windows.
    #[arg(long, default_value_t = 1)]
    files_per_reader: u32,
    /// Block size in bytes, a multiple of 4096 (default: the --shape one).
    #[arg(long)]
    blksize: Option<u64>,
    /// Commits per second (default: the --shape one).
    #[arg(long)]
    rate: Option<f64>,
    /// Stop committing, and end the run (cleanly), once Data.fs has this
    /// many bytes (default: 4 GiB or half the free space of its
    /// filesystem, whichever is smaller).
    #[arg(long)]
    max_db_bytes: Option<u64>,
    /// Fail when verified reads/s inside fault windows fall below this
    /// fraction of the rate outside them (judged with at least 2 windows
    /// and 5 s on each side; 0: never).
    #[arg(long, default_value_t = 0.1)]
    min_fault_rate_ratio: f64,
    /// Also print, on stderr, what goes to readers.log: every reader and
    /// faulty client started (with its pid) and every fault.
    #[arg(long)]
    debug: bool,
    /// Seed of every random choice (printed; the same seed, the same run of
    /// the writer).
    #[arg(long)]
    seed: Option<u64>,
    /// Inject faults: clients that never ack, SIGSTOPped and SIGKILLed readers.
    #[arg(long)]
    faults: bool,
    /// Seconds between faults (default: the pin timeout, at least 4). A
    /// client that never acks stalls commits for up to the pin timeout, so
    /// faults this often keep the mount busy with them most of the time.
    #[arg(long, value_parser = positive_secs)]
    fault_every: Option<Duration>,
    /// No epochs (blktab replaced) among the commits.
    #[arg(long)]
    no_epochs: bool,
    /// Epochs per 1000 commits (with the same seed, the other commits are
    /// the same whatever this is, where they are not replaced by epochs).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=1000))]
    epochs_per_1000: u64,
    /// The server's --pintimeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    pintimeout: f64,
    /// Use this FileStorage (a path or file:// zurl) instead of a new one in
    /// a temporary directory; files f0, f1, ... are added to it.
    #[arg(long)]
    zurl: Option<String>,
    /// Serve the database through a ZEO server: the harness starts one
    /// (Python ZEO, `$WCFS_PYTHON`) on a loopback port of the new Data.fs,
    /// the writer commits through it and wcfs serves `zeo://`.
    #[arg(long, conflicts_with = "zurl")]
    zeo: bool,
    /// The `wcfs` binary (default: next to this one).
    #[arg(long)]
    wcfs: Option<PathBuf>,
    /// Seconds between progress lines (on stderr).
    #[arg(long, default_value_t = 2.0)]
    progress: f64,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// The named sets of sizes (`--shape`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ShapeName {
    Default,
    Production,
}

/// The sizes of a run: the shape's, overridden by explicit flags.
#[derive(Copy, Clone, Debug)]
struct Sizes {
    readers: usize,
    files: u32,
    blocks: i64,
    max_blocks: i64,
    blksize: u64,
    rate: f64,
}

impl RunOpts {
    fn sizes(&self) -> Sizes {
        let s = match self.shape {
            ShapeName::Default => Sizes {
                readers: 4,
                files: 2,
                blocks: 64,
                max_blocks: 256,
                blksize: 16384,
                rate: 20.0,
            },
            ShapeName::Production => Sizes {
                readers: 16,
                files: 4,
                blocks: 32,
                max_blocks: 64,
                blksize: 2 << 20,
                rate: 20.0,
            },
        };
        Sizes {
            readers: self.readers.unwrap_or(s.readers),
            files: self.files.unwrap_or(s.files),
            blocks: self.blocks.unwrap_or(s.blocks),
            max_blocks: self.max_blocks.unwrap_or(s.max_blocks),
            blksize: self.blksize.unwrap_or(s.blksize),
            rate: self.rate.unwrap_or(s.rate),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run (the default).
    Run,
    /// (internal) A reader process.
    #[command(hide = true)]
    Reader {
        mnt: PathBuf,
        log: PathBuf,
        seed: u64,
        id: u64,
        hold_ms: u64,
        max_blocks: i64,
        /// The files to read, comma-separated indices.
        files: String,
    },
    /// (internal) A client that never acks.
    #[command(hide = true)]
    Noack { mnt: PathBuf, oid: Oid, at: Tid },
}

/// A positive, finite number of seconds.
fn positive_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(Duration::from_secs_f64(x)),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Some(Cmd::Reader {
            mnt,
            log,
            seed,
            id,
            hold_ms,
            max_blocks,
            files,
        }) => files
            .split(',')
            .map(|f| f.parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("reader files {files:?}: {e}"))
            .and_then(|files| {
                reader::run(reader::ReaderOpts {
                    mnt,
                    log,
                    seed,
                    id,
                    hold: Duration::from_millis(hold_ms),
                    max_blocks,
                    files,
                })
            }),
        Some(Cmd::Noack { mnt, oid, at }) => reader::noack(mnt, oid, at),
        Some(Cmd::Run) | None => run(cli.run).map(|ok| {
            if !ok {
                std::process::exit(1);
            }
        }),
    };
    if let Err(e) = r {
        eprintln!("wcfs-stress: {e:#}");
        std::process::exit(2);
    }
}

// ---- the server ----

struct Server {
    child: Option<Child>,
    mnt: PathBuf,
    zurl: String,
    wcfs: PathBuf,
    /// The mount's FUSE connection (`/sys/fs/fuse/connections/<n>`), as
    /// mountinfo gave it once the server served.
    conn: Option<u32>,
}

impl Server {
    fn start(wcfs: &Path, zurl: &str, mnt: &Path, log: &Path, pintimeout: f64) -> Result<Server> {
        std::fs::create_dir_all(mnt)?;
        let mut cmd = Command::new(wcfs);
        // SIGTERM if we die: it unmounts and exits (started from the main thread)
        procs::tie_to_harness(&mut cmd, libc::SIGTERM);
        let child = cmd
            .args(["--log-level", "warn", "--log-file"])
            .arg(log)
            .args(["serve", "--pintimeout", &pintimeout.to_string(), zurl])
            .arg(mnt)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", wcfs.display()))?;
        let mut s = Server {
            child: Some(child),
            mnt: mnt.to_owned(),
            zurl: zurl.to_owned(),
            wcfs: wcfs.to_owned(),
            conn: None,
        };
        let t0 = Instant::now();
        while std::fs::read_to_string(mnt.join(".wcfs/zurl"))
            .ok()
            .as_deref()
            != Some(zurl)
        {
            if let Some(st) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "wcfs serve exited ({st}) before serving; see {}",
                    log.display()
                );
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("wcfs serve: not serving after 30 s; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        s.conn = fuse_conn(mnt);
        Ok(s)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// `.wcfs/stats`, empty if the server does not answer within
    /// `timeout`: a hung server must not hang the harness's loop, which
    /// is what would notice the hang.
    fn stats(&self, timeout: Duration) -> BTreeMap<String, u64> {
        let path = self.mnt.join(".wcfs/stats");
        let (tx, rx) = std::sync::mpsc::channel();
        // a reader stuck in the mount stays stuck until `wcfs stop`
        // aborts the connection; it holds nothing of ours
        std::thread::spawn(move || {
            let _ = tx.send(std::fs::read_to_string(path).unwrap_or_default());
        });
        rx.recv_timeout(timeout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("\t: "))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect()
    }

    /// Abort the mount's FUSE connection: every request in flight fails,
    /// and whatever waits on them in the kernel (readers in page faults,
    /// the server's own invalidations, an unmount) goes on. The last resort
    /// against a server stuck in the kernel, which neither `wcfs stop` nor
    /// SIGKILL can end otherwise. Only while the server is not reaped: its
    /// open /dev/fuse keeps the connection, so the number is still ours.
    fn abort_conn(&mut self) -> Option<String> {
        let conn = self.conn?;
        if !self.alive() {
            return None;
        }
        let path = format!("/sys/fs/fuse/connections/{conn}/abort");
        Some(match std::fs::write(&path, b"1\n") {
            Ok(()) => format!("aborted FUSE connection {conn}"),
            Err(e) => format!("abort FUSE connection {conn}: {e}"),
        })
    }

    /// Stop: `wcfs stop` (unmount, SIGTERM, abort, SIGKILL as needed,
    /// rmdir), then reap. If the server does not go (threads stuck in the
    /// kernel on its own mount keep even a killed process from being
    /// reaped), abort its FUSE connection and reap again; never waits
    /// without a bound. Returns whether it exited cleanly by itself, and
    /// what had to be done beyond `wcfs stop`.
    fn stop(&mut self) -> (bool, Vec<String>) {
        let mut extra = Vec::new();
        let mut clean = match Command::new(&self.wcfs)
            .args(["stop", &self.zurl, "--mountpoint"])
            .arg(&self.mnt)
            .stdout(Stdio::null())
            .spawn()
        {
            // (wcfs stop bounds its own steps: 25 s in all)
            Ok(mut c) => {
                wait_timeout(&mut c, Duration::from_secs(40)).is_some_and(|st| st.success())
            }
            Err(e) => {
                extra.push(format!("wcfs stop: {e}"));
                false
            }
        };
        if self.child.is_none() {
            return (clean, extra);
        }
        let t = Duration::from_secs(5);
        let mut st = wait_timeout(self.child.as_mut().expect("child"), t);
        if st.is_none() {
            clean = false;
            extra.push(format!("server not gone {t:?} after wcfs stop"));
            extra.extend(self.abort_conn());
            let c = self.child.as_mut().expect("child");
            let _ = c.kill();
            st = wait_timeout(c, t);
        }
        match st {
            Some(s) => {
                clean &= s.success();
                self.child = None;
            }
            None => {
                let pid = self.pid().unwrap_or(0);
                extra.push(format!("server {pid} cannot be reaped: left running"));
                // not waited for: it is gone when its threads leave the kernel
                self.child = None;
            }
        }
        (clean, extra)
    }
}

/// The FUSE connection number of the mount on `mnt` (mountinfo's
/// `major:minor`, as the kernel names `/sys/fs/fuse/connections/`).
fn fuse_conn(mnt: &Path) -> Option<u32> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mnt.to_string_lossy();
    let l = mi.lines().find(|l| l.split(' ').nth(4) == Some(&*want))?;
    let (major, minor) = l.split(' ').nth(2)?.split_once(':')?;
    Some((major.parse::<u32>().ok()? << 20) | minor.parse::<u32>().ok()?)
}

/// Wait up to `t` for `c` to exit.
fn wait_timeout(c: &mut Child, t: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        if t0.elapsed() >= t {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

fn mounted(mnt: &Path) -> bool {
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mnt.to_string_lossy();
    mi.lines().any(|l| l.split(' ').nth(4) == Some(&*want))
}

/// A line `key: N kB` of `/proc/<pid>/status`, bytes.
fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory of `pid`: (all, anonymous). The rest is file pages it
/// maps (Data.fs, which the FileStorage reads through a mapping): shared
/// page cache, not the server's own memory.
fn rss(pid: u32) -> (u64, u64) {
    (status_kb(pid, "VmRSS:"), status_kb(pid, "RssAnon:"))
}

/// Resident bytes of `path` in the page cache (mincore over a mapping).
fn resident(path: &Path) -> u64 {
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let len = f.metadata().map_or(0, |m| m.len()) as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a read-only shared mapping of a file we opened; its address
    // only goes to mincore, nothing reads through it.
    let Ok(m) = (unsafe { memmap2::Mmap::map(&f) }) else {
        return 0;
    };
    let mut v = vec![0u8; len.div_ceil(4096)];
    // SAFETY: [ptr, ptr+len) is the mapping above; v has a byte per page.
    let r = unsafe { libc::mincore(m.as_ptr() as *mut libc::c_void, len, v.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    v.iter().filter(|&&b| b & 1 != 0).count() as u64 * 4096
}

/// Page cache the mount holds for `oids`: head/ and every `@<rev>/` view.
fn mount_cache(mnt: &Path, oids: &[Oid]) -> u64 {
    let mut total: u64 = oids
        .iter()
        .map(|o| resident(&mnt.join(format!("head/bigfile/{o}"))))
        .sum();
    for e in std::fs::read_dir(mnt).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('@') {
            for o in oids {
                let p = mnt.join(&name).join(format!("bigfile/{o}"));
                total += resident(&p);
            }
        }
    }
    total
}

// ---- readers and faulty clients ----

struct Reader {
    id: u64,
    /// The files it reads.
    files: Vec<usize>,
    child: Child,
    stat: Arc<Mutex<Counters>>,
    /// SIGSTOPped by us at this time.
    stopped: Option<Instant>,
    /// SIGCONTed by us (after a stop nobody needed) at this time: a pin
    /// that timed out while it was stopped may still get it killed, a
    /// moment after it continued.
    continued: Option<Instant>,
    /// Killed by us (SIGKILL): its death is expected.
    killed_by_us: bool,
}

impl Reader {
    /// A fault on this reader is not resolved yet (stopped, or killed and
    /// not reaped).
    fn in_fault(&self) -> bool {
        self.stopped.is_some() || self.killed_by_us
    }
}

impl Drop for Reader {
    /// The last resort (an early return): the run's end reaps every reader
    /// itself, so this kills only when something went wrong. Waits briefly:
    /// a reader stuck in a FUSE request goes only with the server.
    fn drop(&mut self) {
        procs::kill_reap(&mut self.child, Duration::from_millis(500));
    }
}

/// A client that never acks (`reader::noack`), started at `since`.
struct Noack {
    child: Child,
    since: Instant,
    /// The file it watches.
    file: usize,
}

impl Drop for Noack {
    /// As for [`Reader`]: the run's end reaps them; this is the last resort.
    fn drop(&mut self) {
        procs::kill_reap(&mut self.child, Duration::from_millis(500));
    }
}

struct Shared {
    wrong_lines: Mutex<Vec<String>>,
}

/// What starting a reader process takes.
struct Spawner {
    exe: PathBuf,
    mnt: PathBuf,
    log: PathBuf,
    seed: u64,
    max_blocks: i64,
    /// Files in the database, and how many each reader reads (0: all).
    nfiles: usize,
    per_reader: usize,
    sh: Arc<Shared>,
    errlog: PathBuf,
}

impl Spawner {
    /// The files reader `id` reads: `per_reader` of them from `id mod
    /// nfiles` on.
    fn files_of(&self, id: u64) -> Vec<usize> {
        let n = self.nfiles.max(1);
        let k = if self.per_reader == 0 {
            n
        } else {
            self.per_reader.min(n)
        };
        (0..k).map(|j| (id as usize + j) % n).collect()
    }

    /// Reader `id`, keeping each view for `hold`.
    fn spawn(&self, id: u64, hold: Duration) -> Result<Reader> {
        let files = self.files_of(id);
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.errlog)?;
        let mut cmd = Command::new(&self.exe);
        procs::tie_to_harness(&mut cmd, libc::SIGKILL);
        let mut child = cmd
            .arg("reader")
            .arg(&self.mnt)
            .arg(&self.log)
            .args([
                self.seed.to_string(),
                id.to_string(),
                hold.as_millis().to_string(),
                self.max_blocks.to_string(),
                files
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .context("start a reader")?;
        let sh = &self.sh;
        let stat = Arc::new(Mutex::new(Counters::default()));
        let out = child.stdout.take().expect("piped");
        {
            let (stat, sh) = (stat.clone(), sh.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if let Some(c) = Counters::from_line(&line) {
                        *stat.lock().unwrap_or_else(|p| p.into_inner()) = c;
                    } else if line.starts_with("WRONG") {
                        eprintln!("wcfs-stress: reader {id}: {line}");
                        sh.wrong_lines
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("reader {id}: {line}"));
                    }
                }
            });
        }
        Ok(Reader {
            id,
            files,
            child,
            stat,
            stopped: None,
            continued: None,
            killed_by_us: false,
        })
    }
}

/// For a hang: every thread of `pids` (name, state, wchan, kernel stack)
/// appended to `path`, so that the report can say where things wait.
fn dump_threads(path: &Path, what: &str, pids: &[(String, u32)]) {
    use std::fmt::Write as _;
    let mut out = format!("==== {what}\n");
    for (name, pid) in pids {
        let _ = writeln!(out, "--- {name} pid {pid}");
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            let _ = writeln!(out, "(gone)");
            continue;
        };
        for t in tasks.flatten() {
            let d = t.path();
            let rd = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
            let state = rd("status")
                .lines()
                .find(|l| l.starts_with("State:"))
                .unwrap_or("")
                .to_owned();
            let _ = writeln!(
                out,
                "tid {} {} {} wchan {}",
                t.file_name().to_string_lossy(),
                rd("comm").trim(),
                state,
                rd("wchan")
            );
            for l in rd("stack").lines() {
                let _ = writeln!(out, "    {l}");
            }
        }
    }
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(out.as_bytes()));
    if let Err(e) = r {
        eprintln!("wcfs-stress: {}: {e}", path.display());
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// How a child ended.
#[derive(Debug)]
enum Exit {
    Signal(i32),
    Code(i32),
}

fn ended_code(c: &mut Child) -> Option<Exit> {
    use std::os::unix::process::ExitStatusExt;
    c.try_wait().ok().flatten().map(|st| match st.signal() {
        Some(s) => Exit::Signal(s),
        None => Exit::Code(st.code().unwrap_or(-1)),
    })
}

/// How a child ended, if it did: Some(Some(sig)) killed by `sig`.
fn ended(c: &mut Child) -> Option<Option<i32>> {
    use std::os::unix::process::ExitStatusExt;
    c.try_wait().ok().flatten().map(|st| st.signal())
}

// ---- the run ----

/// The run's log of clients and faults (`readers.log` in the run
/// directory; with `--debug` also on stderr): every reader and faulty
/// client with its pid, so that a server's `pid=... killing the client
/// with SIGBUS` names one, and every fault with its target.
struct Events {
    f: std::fs::File,
    t0: Instant,
    debug: bool,
}

impl Events {
    fn log(&mut self, msg: &str) {
        let line = format!("{:9.3} {msg}", self.t0.elapsed().as_secs_f64());
        let _ = writeln!(self.f, "{line}");
        if self.debug {
            eprintln!("wcfs-stress: {line}");
        }
    }
}

/// 4 GiB, or half the space free on `dir`'s filesystem if that is less:
/// a run must not fill the disk under the rest of the machine.
fn default_max_db(dir: &Path) -> u64 {
    let cap: u64 = 4 << 30;
    match nix::sys::statvfs::statvfs(dir) {
        Ok(v) => cap.min(v.blocks_available().saturating_mul(v.fragment_size()) / 2),
        Err(_) => cap,
    }
}

/// Sets the writer's stop flag when dropped: on every way out of a run,
/// early returns included, nothing goes on committing.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How the main loop ended.
enum End {
    /// Time is up, or Data.fs is full: everybody leaves in order.
    Clean,
    /// A hang, a fatal problem or a signal: kill, stop, reap, quickly.
    /// `hung`: the server stopped answering (then its FUSE connection is
    /// aborted at once: waiting for it to end by itself would be in vain).
    Abort { hung: bool },
}

fn run(o: RunOpts) -> Result<bool> {
    let sz = o.sizes();
    if sz.blksize % 4096 != 0 || sz.blksize == 0 {
        bail!("--blksize must be a multiple of 4096");
    }
    if sz.files == 0 || sz.blocks < 2 || sz.max_blocks < sz.blocks || sz.readers == 0 {
        bail!("need --readers >= 1, --files >= 1, --blocks >= 2 and --max-blocks >= --blocks");
    }
    procs::catch_signals().context("catch SIGINT/SIGTERM")?;
    let tmp = tempfile::Builder::new().prefix("wcfs-stress.").tempdir()?;
    let r = run_in(o, sz, tmp.path());
    // a clean run leaves nothing; a failed one (or one that could not
    // start) keeps its logs
    let ok = matches!(&r, Ok(rep) if rep.problems.is_empty());
    if ok {
        drop(tmp);
    } else {
        let kept = tmp.keep();
        eprintln!("wcfs-stress: logs kept in {}", kept.display());
    }
    r.map(|_| ok)
}

fn run_in(o: RunOpts, sz: Sizes, dir: &Path) -> Result<Report> {
    let json = o.json;
    let seed = o.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let exe = std::env::current_exe()?;
    let wcfs = match &o.wcfs {
        Some(p) => p.clone(),
        None => exe.with_file_name("wcfs"),
    };
    if !wcfs.exists() {
        bail!(
            "{}: no wcfs binary (build it: cargo build --release -p wcfs, or pass --wcfs)",
            wcfs.display()
        );
    }
    let db = match &o.zurl {
        Some(z) => PathBuf::from(z.strip_prefix("file://").unwrap_or(z)),
        None => dir.join("Data.fs"),
    };
    let max_db = o
        .max_db_bytes
        .unwrap_or_else(|| default_max_db(db.parent().filter(|p| p.is_dir()).unwrap_or(dir)));
    // (declared before the mount: dropped after it, also on errors)
    let zeo = if o.zeo {
        Some(zeo::ZeoServer::start(&db)?)
    } else {
        None
    };
    let zurl = match &zeo {
        Some(z) => format!("zeo://{}", z.addr),
        None => db.to_string_lossy().into_owned(),
    };
    let (log, mnt) = (dir.join("history.log"), dir.join("mnt"));
    eprintln!(
        "wcfs-stress: seed {seed}; {:?} shape: {} files x {} blocks of {} KiB (up to {}), {} readers, {} commits/s, {:.0} s{}; Data.fs up to {:.0} MiB; in {}",
        o.shape,
        sz.files,
        sz.blocks,
        sz.blksize / 1024,
        sz.max_blocks,
        sz.readers,
        sz.rate,
        o.duration,
        if o.faults { ", faults on" } else { "" },
        max_db as f64 / (1 << 20) as f64,
        dir.display()
    );
    type Spawn = Box<
        dyn FnOnce(
            writer::RunOpts,
            Arc<AtomicBool>,
            Arc<writer::WStats>,
        ) -> std::thread::JoinHandle<Result<()>>,
    >;
    let (nf, nb, mb, bs) = (sz.files, sz.blocks, sz.max_blocks, sz.blksize);
    let spawn_writer: Spawn = match &zeo {
        Some(z) => {
            let w = writer::Writer::create_zeo(&z.addr, &log, seed, nf, nb, mb, bs)?;
            Box::new(move |o, s, st| std::thread::spawn(move || writer::run(w, o, s, st)))
        }
        None => {
            let w = writer::Writer::create(&db, &log, seed, nf, nb, mb, bs)?;
            Box::new(move |o, s, st| std::thread::spawn(move || writer::run(w, o, s, st)))
        }
    };
    let db_start_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
    let mut h = model::History::default();
    h.refresh(&log)?;
    let oids: Vec<Oid> = h.files.iter().map(|f| f.oid).collect();
    let srv = Server::start(&wcfs, &zurl, &mnt, &dir.join("wcfs.log"), o.pintimeout)?;
    let srv_pid = srv.pid().unwrap_or(0);
    // the server's history starts at its start: readers begin after it
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = StopOnDrop(stop.clone());
    let wst = Arc::new(writer::WStats::default());
    let wthread = {
        let wo = writer::RunOpts {
            rate: sz.rate,
            epochs: if o.no_epochs { 0 } else { o.epochs_per_1000 },
            db: db.clone(),
            max_db_bytes: max_db,
        };
        spawn_writer(wo, stop.clone(), wst.clone())
    };
    // wait for the first commit after the start to be served
    let t0 = Instant::now();
    while h.tids.len() < sz.files as usize + 1 {
        std::thread::sleep(Duration::from_millis(20));
        h.refresh(&log)?;
        if let Some(sig) = procs::signalled() {
            bail!("interrupted by {sig} before the run started");
        }
        if wthread.is_finished() {
            bail!("the writer stopped before its first commit (Data.fs full, or an error)");
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the writer made no commit in 30 s");
        }
    }

    let sh = Arc::new(Shared {
        wrong_lines: Mutex::new(Vec::new()),
    });
    let errlog = dir.join("readers.err");
    let events = Events {
        f: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("readers.log"))?,
        t0: Instant::now(),
        debug: o.debug,
    };
    let pt = Duration::from_secs_f64(o.pintimeout);
    let start = Instant::now();
    let mut run = Run {
        _writer_stop: writer_stop,
        readers: Vec::new(),
        noacks: Vec::new(),
        srv,
        srv_pid,
        spawner: Spawner {
            exe: exe.clone(),
            mnt: mnt.clone(),
            log: log.clone(),
            seed,
            max_blocks: sz.max_blocks,
            nfiles: sz.files as usize,
            per_reader: o.files_per_reader as usize,
            sh: sh.clone(),
            errlog: errlog.clone(),
        },
        next_id: 0,
        dead: Counters::default(),
        rep: Report {
            seed,
            file_bytes: sz.files as u64 * sz.max_blocks as u64 * sz.blksize,
            db_start_bytes,
            max_db_bytes: max_db,
            min_fault_rate_ratio: o.min_fault_rate_ratio,
            ..Report::default()
        },
        rates: FaultRates::new(),
        events,
        pt,
        fault_every: o.fault_every.unwrap_or(pt.max(Duration::from_secs(4))),
        hang_limit: Duration::from_secs_f64(3.0 * o.pintimeout + 20.0),
        stop,
        wst,
        wthread: Some(wthread),
        start,
        end: start + Duration::from_secs_f64(o.duration),
        last_progress: start,
        last_stats: start,
        stats_seen: BTreeMap::new(),
        last_fault: start,
        last_reads: (0, start),
        frng: model::mix(seed ^ 0xfa017),
        h,
        o,
        sz,
        dir: dir.to_owned(),
        exe,
        mnt,
        log,
        errlog,
        oids,
        db,
        sh,
    };
    let mut end = End::Abort { hung: false };
    for _ in 0..run.sz.readers {
        if let Err(e) = run.spawn_reader() {
            run.rep.problems.push(format!("harness: {e:#}"));
            break;
        }
    }
    if run.rep.problems.is_empty() {
        end = loop {
            std::thread::sleep(Duration::from_millis(100));
            match run.tick() {
                Ok(None) => {}
                Ok(Some(e)) => break e,
                Err(e) => {
                    run.rep.problems.push(format!("harness: {e:#}"));
                    break End::Abort { hung: false };
                }
            }
        };
    }
    let clean = match end {
        End::Clean => run.end_clean(),
        End::Abort { hung } => {
            run.abort(hung);
            false
        }
    };
    let rep = run.finish(clean);
    drop(zeo);
    report::print(&rep, json);
    Ok(rep)
}

/// Everything a run holds once the server serves and the writer commits.
/// (Fields drop in order: the writer is told to stop first, the clients go
/// before the server.)
struct Run {
    _writer_stop: StopOnDrop,
    readers: Vec<Reader>,
    noacks: Vec<Noack>,
    srv: Server,
    srv_pid: u32,
    spawner: Spawner,
    next_id: u64,
    /// What readers that ended had done.
    dead: Counters,
    rep: Report,
    rates: FaultRates,
    events: Events,
    pt: Duration,
    fault_every: Duration,
    /// No read completing for this long is a hang.
    hang_limit: Duration,
    /// The writer's stop flag, its counters and thread (`None` once joined).
    stop: Arc<AtomicBool>,
    wst: Arc<writer::WStats>,
    wthread: Option<std::thread::JoinHandle<Result<()>>>,
    start: Instant,
    end: Instant,
    last_progress: Instant,
    /// When `.wcfs/stats` was last checked, and the counters (lower-case
    /// keys) it showed: they must never decrease.
    last_stats: Instant,
    stats_seen: BTreeMap<String, u64>,
    last_fault: Instant,
    /// (total reads, when that total last grew)
    last_reads: (u64, Instant),
    frng: u64,
    h: model::History,
    o: RunOpts,
    sz: Sizes,
    dir: PathBuf,
    exe: PathBuf,
    mnt: PathBuf,
    log: PathBuf,
    errlog: PathBuf,
    oids: Vec<Oid>,
    db: PathBuf,
    sh: Arc<Shared>,
}

impl Run {
    fn spawn_reader(&mut self) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        // one reader in four holds its view for long
        let hold = if id % 4 == 3 {
            Duration::from_secs(15)
        } else {
            Duration::from_millis(300)
        };
        let r = self.spawner.spawn(id, hold)?;
        self.events.log(&format!(
            "reader {id} pid {} started (holds views {} ms)",
            r.child.id(),
            hold.as_millis()
        ));
        self.readers.push(r);
        Ok(())
    }

    /// Verified reads and wrong reads so far, of every reader that ran.
    fn totals(&self) -> (u64, u64) {
        self.readers
            .iter()
            .fold((self.dead.reads, self.dead.wrong), |(a, b), r| {
                let s = r.stat.lock().unwrap_or_else(|p| p.into_inner());
                (a + s.reads, b + s.wrong)
            })
    }

    /// Each live reader's reads, and whether an unresolved fault involves
    /// it: its own, or one on a file it reads (see [`report::FaultRates`]).
    fn readers_at(&self) -> Vec<report::ReaderAt> {
        let mut faulted: Vec<usize> = self.noacks.iter().map(|n| n.file).collect();
        for r in self.readers.iter().filter(|r| r.in_fault()) {
            faulted.extend(&r.files);
        }
        self.readers
            .iter()
            .map(|r| report::ReaderAt {
                id: r.id,
                reads: r.stat.lock().unwrap_or_else(|p| p.into_inner()).reads,
                involved: r.in_fault() || r.files.iter().any(|f| faulted.contains(f)),
            })
            .collect()
    }

    /// Faults not resolved yet.
    fn active_faults(&self) -> usize {
        self.noacks.len() + self.readers.iter().filter(|r| r.in_fault()).count()
    }

    /// Append every thread of the server, the readers and the faulty
    /// clients to `hang.txt`; its path.
    fn dump(&self, what: &str) -> PathBuf {
        let path = self.dir.join("hang.txt");
        let mut pids = vec![("server".to_owned(), self.srv_pid)];
        pids.extend(
            self.readers
                .iter()
                .map(|r| (format!("reader {}", r.id), r.child.id())),
        );
        pids.extend(
            self.noacks
                .iter()
                .map(|n| ("no-ack client".to_owned(), n.child.id())),
        );
        dump_threads(&path, what, &pids);
        path
    }

    /// One poll of the main loop: how the run ends, if it does now.
    fn tick(&mut self) -> Result<Option<End>> {
        let now = Instant::now();
        if now >= self.end {
            return Ok(Some(End::Clean));
        }
        if let Some(sig) = procs::signalled() {
            self.rep.problems.push(format!(
                "interrupted by {sig} at {:.0} s",
                self.start.elapsed().as_secs_f64()
            ));
            return Ok(Some(End::Abort { hung: false }));
        }
        if self.wthread.as_ref().is_some_and(|t| t.is_finished()) {
            if self.wst.db_full.load(Ordering::SeqCst) {
                self.rep.db_full = true;
                self.rep.notes.push(format!(
                    "Data.fs reached {:.0} MiB (--max-db-bytes {}): the writer stopped, the run ended at {:.0} s of {:.0}",
                    self.wst.db_bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
                    self.rep.max_db_bytes,
                    self.start.elapsed().as_secs_f64(),
                    self.o.duration
                ));
                return Ok(Some(End::Clean));
            }
            // an error: joining the writer says which
            return Ok(Some(End::Abort { hung: false }));
        }
        if !self.srv.alive() {
            self.rep
                .problems
                .push("wcfs serve exited during the run".into());
            return Ok(Some(End::Abort { hung: false }));
        }
        let (all, anon) = rss(self.srv_pid);
        self.rep.server_rss_max = self.rep.server_rss_max.max(all);
        self.rep.server_anon_max = self.rep.server_anon_max.max(anon);
        self.reap_readers()?;
        let pt = self.pt;
        // a SIGSTOPped reader nobody needed: continue it
        for r in &mut self.readers {
            if r.stopped
                .is_some_and(|t| t.elapsed() > 3 * pt + Duration::from_secs(5))
            {
                signal(r.child.id(), nix::sys::signal::Signal::SIGCONT);
                r.stopped = None;
                r.continued = Some(Instant::now());
                self.events.log(&format!(
                    "reader {} pid {} continued (nothing needed it)",
                    r.id,
                    r.child.id()
                ));
            }
        }
        self.judge_noacks();
        // a fault takes up to a pin timeout and the kill to resolve: with
        // two left it is resolved (and its window measured) before the end,
        // which continues or kills what is left anyway
        if self.o.faults && self.last_fault.elapsed() > self.fault_every && now + 2 * pt < self.end
        {
            self.fault()?;
        }
        // rates, hang, progress
        let (reads, wrong) = self.totals();
        let at = self.readers_at();
        self.rates.account(now, &at, self.active_faults());
        if reads > self.last_reads.0 {
            self.last_reads = (reads, now);
        } else if self.last_reads.1.elapsed() > self.hang_limit {
            let dump = self.dump("hang");
            self.rep.problems.push(format!(
                "hang: no read completed for {:?} (threads: {})",
                self.last_reads.1.elapsed(),
                dump.display()
            ));
            return Ok(Some(End::Abort { hung: true }));
        }
        if self.last_stats.elapsed() >= Duration::from_secs(1) {
            self.last_stats = now;
            let st = self.srv.stats(Duration::from_secs(2));
            for p in report::counters_decreased(&self.stats_seen, &st) {
                if !self.rep.problems.contains(&p) {
                    self.rep.problems.push(p);
                }
            }
            if !st.is_empty() {
                self.stats_seen = st;
            }
        }
        if self.last_progress.elapsed().as_secs_f64() >= self.o.progress {
            self.last_progress = now;
            let st = self.srv.stats(Duration::from_secs(2));
            eprintln!(
                "wcfs-stress: {:>5.0} s  commits {:>6}  reads {:>9}  wrong {}  pins {:>6}  killed {}  links {}  server anon {} MiB  Data.fs {} MiB  {}",
                self.start.elapsed().as_secs_f64(),
                self.wst.commits.load(Ordering::Relaxed),
                reads,
                wrong,
                st.get("pin").copied().unwrap_or(0),
                st.get("pinkill").copied().unwrap_or(0),
                st.get("WatchLink").copied().unwrap_or(0),
                rss(self.srv_pid).1 >> 20,
                self.wst.db_bytes.load(Ordering::Relaxed) >> 20,
                self.rates.short(),
            );
        }
        Ok(None)
    }

    /// Readers that ended: account, judge, replace.
    fn reap_readers(&mut self) -> Result<()> {
        let pt = self.pt;
        let mut i = 0;
        while i < self.readers.len() {
            let r = &mut self.readers[i];
            let Some(sig) = ended(&mut r.child) else {
                i += 1;
                continue;
            };
            let s = r.stat.lock().unwrap_or_else(|p| p.into_inner()).clone();
            self.dead.add(&s);
            let lately_stopped = r.stopped.is_some()
                || r.continued
                    .is_some_and(|t| t.elapsed() < 2 * pt + Duration::from_secs(10));
            let how = sig.map_or("exited".to_owned(), |s| format!("signal {s}"));
            let kernel_sigbus = sig == Some(7)
                && std::fs::read_to_string(&self.errlog).is_ok_and(|t| {
                    t.lines().any(|l| {
                        l.starts_with("SIGBUS at ")
                            && l.ends_with(&format!(" code 2 pid {}", r.child.id()))
                    })
                });
            if lately_stopped && matches!(sig, Some(7 | 9)) {
                self.rep.faults_sigstop_killed += 1;
            } else if kernel_sigbus && !r.killed_by_us {
                // An access the kernel refused (past an inode's end, or a
                // failed READ), not the server's kill (code 0): the finding
                // of 2026-12-03, four causes, all fixed
                // (stress/findings/README.md). A failure of the run, named
                // as such; the reader's report has the sizes.
                self.rep.readers_kernel_sigbus += 1;
                self.rep.problems.push(format!(
                    "reader {} pid {} died of a kernel SIGBUS (BUS_ADRERR) in a head/ mapping \
                     (stress/findings/README.md); see {}",
                    r.id,
                    r.child.id(),
                    self.errlog.display()
                ));
            } else if !r.killed_by_us {
                self.rep.readers_died_unexpectedly += 1;
                self.rep.problems.push(format!(
                    "reader {} died unexpectedly ({how}); see {}",
                    r.id,
                    self.errlog.display()
                ));
            }
            let line = format!("reader {} pid {} ended ({how})", r.id, r.child.id());
            self.events.log(&line);
            self.readers.swap_remove(i);
            self.spawn_reader()?;
        }
        Ok(())
    }

    /// Faulty clients that never ack must be killed (or dropped by an epoch).
    fn judge_noacks(&mut self) {
        let pt = self.pt;
        let (rep, events) = (&mut self.rep, &mut self.events);
        self.noacks.retain_mut(|n| {
            let pid = n.child.id();
            let verdict = match ended_code(&mut n.child) {
                Some(Exit::Signal(7 | 9)) => {
                    rep.faults_noack_killed += 1;
                    "killed by the server"
                }
                Some(Exit::Code(c))
                    if c == reader::NoackEnd::Epoch as i32
                        || c == reader::NoackEnd::Refused as i32 =>
                {
                    rep.faults_noack_dropped += 1;
                    "dropped (an epoch, or its watch refused)"
                }
                Some(other) => {
                    rep.problems.push(format!(
                        "a client that never acks (pid {pid}) ended without being killed ({other:?})"
                    ));
                    "ended unkilled"
                }
                None if n.since.elapsed() > 6 * pt + Duration::from_secs(30) => {
                    rep.problems.push(format!(
                        "a client that never acks (pid {pid}) was not killed"
                    ));
                    procs::kill_reap(&mut n.child, Duration::from_secs(1));
                    "not killed by the server: killed by us"
                }
                None => return true,
            };
            events.log(&format!("no-ack client pid {pid}: {verdict}"));
            false
        });
    }

    /// Start one fault.
    fn fault(&mut self) -> Result<()> {
        self.last_fault = Instant::now();
        self.frng = model::mix(self.frng);
        let frng = self.frng;
        self.h.refresh(&self.log)?;
        match frng % 3 {
            0 => {
                let fi = (frng >> 8) as usize % self.oids.len();
                if let Some(at) = self.h.head() {
                    let mut cmd = Command::new(&self.exe);
                    procs::tie_to_harness(&mut cmd, libc::SIGKILL);
                    let c = cmd
                        .args(["noack"])
                        .arg(&self.mnt)
                        .args([self.oids[fi].to_string(), at.to_string()])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()?;
                    self.events.log(&format!(
                        "fault: no-ack client pid {} watches {} @{at}",
                        c.id(),
                        self.oids[fi]
                    ));
                    self.noacks.push(Noack {
                        child: c,
                        since: Instant::now(),
                        file: fi,
                    });
                    self.rep.faults_noack += 1;
                    self.rates.windows += 1;
                }
            }
            1 => {
                let i = (frng >> 8) as usize % self.readers.len();
                let r = &mut self.readers[i];
                if r.stopped.is_none() && !r.killed_by_us {
                    signal(r.child.id(), nix::sys::signal::Signal::SIGSTOP);
                    r.stopped = Some(Instant::now());
                    let line = format!("fault: SIGSTOP reader {} pid {}", r.id, r.child.id());
                    self.events.log(&line);
                    self.rep.faults_sigstop += 1;
                    self.rates.windows += 1;
                }
            }
            _ => {
                let i = (frng >> 8) as usize % self.readers.len();
                let r = &mut self.readers[i];
                if r.stopped.is_none() && !r.killed_by_us {
                    r.killed_by_us = true;
                    signal(r.child.id(), nix::sys::signal::Signal::SIGKILL);
                    let line = format!("fault: SIGKILL reader {} pid {}", r.id, r.child.id());
                    self.events.log(&line);
                    self.rep.faults_sigkill += 1;
                    self.rates.windows += 1;
                }
            }
        }
        Ok(())
    }

    /// Tell the writer to stop and wait up to `wait` for it (it finishes
    /// the commit in progress); its error, if any, is a problem.
    fn stop_writer(&mut self, wait: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let Some(t) = self.wthread.take() else {
            return;
        };
        let t0 = Instant::now();
        while !t.is_finished() {
            if t0.elapsed() > wait {
                self.rep
                    .problems
                    .push(format!("the writer did not stop within {wait:?}"));
                // dropped: it dies with the process
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.rep.problems.push(format!("writer: {e:#}")),
            Err(_) => self.rep.problems.push("writer panicked".into()),
        }
    }

    /// The clean end: the writer stops, readers are asked to leave and
    /// waited for together, faulty clients are killed. Whether it stayed
    /// clean (else it turned into an abort: a reader did not leave, or a
    /// signal came).
    fn end_clean(&mut self) -> bool {
        self.stop_writer(Duration::from_secs(30));
        for r in &mut self.readers {
            if r.stopped.take().is_some() {
                signal(r.child.id(), nix::sys::signal::Signal::SIGCONT);
                r.continued = Some(Instant::now());
            }
            drop(r.child.stdin.take());
        }
        // a reader may wait for a pin to a faulty client: up to a pin
        // timeout and the kill; all of them in the same time
        let deadline = Instant::now() + 2 * self.pt + Duration::from_secs(20);
        while !self.readers.is_empty() {
            if let Some(sig) = procs::signalled() {
                self.rep
                    .problems
                    .push(format!("interrupted by {sig} while readers were ending"));
                self.abort(false);
                return false;
            }
            if Instant::now() > deadline {
                let dump = self.dump("readers did not end");
                let ids: Vec<String> = self.readers.iter().map(|r| r.id.to_string()).collect();
                self.rep.problems.push(format!(
                    "readers {} did not end when asked (threads: {})",
                    ids.join(", "),
                    dump.display()
                ));
                self.abort(true);
                return false;
            }
            let mut i = 0;
            while i < self.readers.len() {
                let r = &mut self.readers[i];
                let Some(sig) = ended(&mut r.child) else {
                    i += 1;
                    continue;
                };
                if r.continued.is_some() && matches!(sig, Some(7 | 9)) {
                    // stopped until just now: a pin it missed meanwhile got it killed
                    self.rep.faults_sigstop_killed += 1;
                } else if sig.is_some() && !r.killed_by_us {
                    self.rep
                        .problems
                        .push(format!("reader {} died at the end (signal {sig:?})", r.id));
                }
                // let the stdout thread see the last line
                std::thread::sleep(Duration::from_millis(50));
                let s = r.stat.lock().unwrap_or_else(|p| p.into_inner()).clone();
                self.dead.add(&s);
                let how = sig.map_or("exited".to_owned(), |s| format!("signal {s}"));
                let line = format!(
                    "reader {} pid {} ended at the end ({how})",
                    r.id,
                    r.child.id()
                );
                self.events.log(&line);
                self.readers.swap_remove(i);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for mut n in self.noacks.drain(..) {
            procs::kill_reap(&mut n.child, Duration::from_secs(5));
        }
        true
    }

    /// The abort: stop the writer (it finishes its commit meanwhile), kill
    /// every reader and faulty client (SIGKILL ends a stopped one too);
    /// if the server `hung`, or readers do not die, abort its FUSE
    /// connection (module doc). `finish` stops the server and reaps them.
    fn abort(&mut self, hung: bool) {
        self.stop.store(true, Ordering::Relaxed);
        for r in &mut self.readers {
            r.killed_by_us = true;
            let _ = r.child.kill();
        }
        for n in &mut self.noacks {
            let _ = n.child.kill();
        }
        self.events.log("abort: readers and faulty clients killed");
        if hung {
            let what = self
                .srv
                .abort_conn()
                .unwrap_or_else(|| "server gone".into());
            self.events.log(&format!("abort: the server hung: {what}"));
            self.rep.notes.push(format!("the server hung: {what}"));
            return;
        }
        // SIGKILL ends a FUSE request wait; readers still there after a
        // moment are in page faults a hung server will never answer (the
        // kernel holds the pages locked): only aborting the connection
        // frees them, and the server's threads waiting on those pages
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if self
                .readers
                .iter_mut()
                .all(|r| ended(&mut r.child).is_some())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let stuck: Vec<String> = self
            .readers
            .iter_mut()
            .filter_map(|r| ended(&mut r.child).is_none().then(|| r.id.to_string()))
            .collect();
        let what = self
            .srv
            .abort_conn()
            .unwrap_or_else(|| "server gone".into());
        self.events.log(&format!(
            "abort: readers {} stuck in the mount: {what}",
            stuck.join(", ")
        ));
        self.rep.notes.push(format!(
            "readers {} could not be killed (stuck in the mount): {what}",
            stuck.join(", ")
        ));
    }

    /// Stop the server, reap what is left, check that nothing is left, and
    /// fill the report.
    fn finish(mut self, clean: bool) -> Report {
        let st = self
            .srv
            .stats(Duration::from_secs(if clean { 5 } else { 1 }));
        let (all, anon) = rss(self.srv_pid);
        self.rep.server_rss_max = self.rep.server_rss_max.max(all);
        self.rep.server_anon_max = self.rep.server_anon_max.max(anon);
        if clean {
            // (after the stats: this looks up every @rev view)
            self.rep.page_cache = Some(mount_cache(&self.mnt, &self.oids));
        }
        let (stopped, extra) = self.srv.stop();
        if !stopped {
            self.rep.problems.push(format!(
                "wcfs serve did not stop cleanly{}; see {}",
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", extra.join("; "))
                },
                self.dir.join("wcfs.log").display()
            ));
        }
        // the killed: with the mount gone none can be stuck in it
        for mut r in std::mem::take(&mut self.readers) {
            if !procs::kill_reap(&mut r.child, Duration::from_secs(5)) {
                self.rep.problems.push(format!(
                    "reader {} (pid {}) did not die",
                    r.id,
                    r.child.id()
                ));
            }
            let s = r.stat.lock().unwrap_or_else(|p| p.into_inner()).clone();
            self.dead.add(&s);
        }
        for mut n in std::mem::take(&mut self.noacks) {
            if !procs::kill_reap(&mut n.child, Duration::from_secs(5)) {
                self.rep.problems.push(format!(
                    "a no-ack client (pid {}) did not die",
                    n.child.id()
                ));
            }
        }
        self.stop_writer(Duration::from_secs(30));
        if mounted(&self.mnt) {
            self.rep
                .problems
                .push(format!("{}: mount entry left behind", self.mnt.display()));
        }
        if self.mnt.exists() {
            self.rep
                .problems
                .push(format!("{}: mountpoint left behind", self.mnt.display()));
        }

        let (rep, dead, wst) = (&mut self.rep, &self.dead, &self.wst);
        rep.duration_s = self.start.elapsed().as_secs_f64();
        rep.commits = wst.commits.load(Ordering::Relaxed);
        rep.epochs = wst.epochs.load(Ordering::Relaxed);
        rep.blocks_written = wst.blocks_written.load(Ordering::Relaxed);
        rep.blocks_deleted = wst.blocks_deleted.load(Ordering::Relaxed);
        rep.db_bytes = std::fs::metadata(&self.db).map_or(0, |m| m.len());
        rep.reads = dead.reads;
        rep.bytes = dead.bytes;
        // a reader killed before its last report still printed its WRONG lines
        let lines = self.sh.wrong_lines.lock().map_or(0, |v| v.len() as u64);
        rep.wrong = dead.wrong.max(lines);
        rep.wrong_bytes = dead.wrong_bytes;
        rep.discarded = dead.discarded;
        rep.conns = dead.conns;
        rep.read_p50_us = dead.lat.quantile(0.5);
        rep.read_p99_us = dead.lat.quantile(0.99);
        rep.pins = st.get("pin").copied().unwrap_or(0);
        rep.pin_p50_us = st.get("PinRtt50us").copied().unwrap_or(0);
        rep.pin_p99_us = st.get("PinRtt99us").copied().unwrap_or(0);
        let q = |k: &str| st.get(k).copied().unwrap_or(0);
        rep.commit_us = [q("Commit50us"), q("Commit99us")];
        rep.head_lag_us = [q("HeadAtLag50us"), q("HeadAtLag99us")];
        rep.kept = [q("kept_blocks"), q("keep_missed")];
        rep.pinkill = st.get("pinkill").copied().unwrap_or(0);
        if rep.wrong > 0 {
            rep.problems
                .push(format!("{} reads saw data not of their view", rep.wrong));
        }
        if rep.reads == 0 {
            rep.problems.push("no read was verified".into());
        }
        if let Some(p) = self.rates.problem(self.o.min_fault_rate_ratio) {
            rep.problems.push(p);
        }
        rep.rates = Some(self.rates.clone());
        std::mem::take(&mut self.rep)
    }
}

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
//! A progress line every `--progress` seconds; at the end a report (or
//! `--json`). The exit status is non-zero on any wrong byte, on a hang (no
//! read completing for too long), on a faulty client the server did not
//! kill, on an error of the writer or of the server, and on a mount entry
//! or mountpoint left behind.

mod model;
mod reader;
mod writer;
mod zeo;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use model::Counters;
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
    /// Reader processes.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// ZBigFiles.
    #[arg(long, default_value_t = 2)]
    files: u32,
    /// Blocks per file at the start.
    #[arg(long, default_value_t = 64)]
    blocks: i64,
    /// Files grow up to this many blocks.
    #[arg(long, default_value_t = 256)]
    max_blocks: i64,
    /// Block size in bytes (a multiple of 4096).
    #[arg(long, default_value_t = 16384)]
    blksize: u64,
    /// Commits per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
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
        }) => reader::run(reader::ReaderOpts {
            mnt,
            log,
            seed,
            id,
            hold: Duration::from_millis(hold_ms),
            max_blocks,
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
}

impl Server {
    fn start(wcfs: &Path, zurl: &str, mnt: &Path, log: &Path, pintimeout: f64) -> Result<Server> {
        std::fs::create_dir_all(mnt)?;
        let child = Command::new(wcfs)
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

    fn stats(&self) -> BTreeMap<String, u64> {
        std::fs::read_to_string(self.mnt.join(".wcfs/stats"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("\t: "))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect()
    }

    /// Stop: `wcfs stop` (unmount, SIGTERM, abort, SIGKILL as needed,
    /// rmdir), then reap. Returns whether it exited cleanly by itself.
    fn stop(&mut self) -> bool {
        let st = Command::new(&self.wcfs)
            .args(["stop", &self.zurl, "--mountpoint"])
            .arg(&self.mnt)
            .stdout(Stdio::null())
            .status();
        let mut clean = st.is_ok_and(|s| s.success());
        if let Some(mut c) = self.child.take() {
            let t0 = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(s)) => {
                        clean &= s.success();
                        break;
                    }
                    _ if t0.elapsed() > Duration::from_secs(10) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        clean = false;
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        clean
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
    sh: Arc<Shared>,
    errlog: PathBuf,
}

impl Spawner {
    /// Reader `id`, keeping each view for `hold`.
    fn spawn(&self, id: u64, hold: Duration) -> Result<Reader> {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.errlog)?;
        let mut child = Command::new(&self.exe)
            .arg("reader")
            .arg(&self.mnt)
            .arg(&self.log)
            .args([
                self.seed.to_string(),
                id.to_string(),
                hold.as_millis().to_string(),
                self.max_blocks.to_string(),
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
enum End {
    Signal(i32),
    Code(i32),
}

fn ended_code(c: &mut Child) -> Option<End> {
    use std::os::unix::process::ExitStatusExt;
    c.try_wait().ok().flatten().map(|st| match st.signal() {
        Some(s) => End::Signal(s),
        None => End::Code(st.code().unwrap_or(-1)),
    })
}

/// How a child ended, if it did: Some(Some(sig)) killed by `sig`.
fn ended(c: &mut Child) -> Option<Option<i32>> {
    use std::os::unix::process::ExitStatusExt;
    c.try_wait().ok().flatten().map(|st| st.signal())
}

// ---- the run ----

#[derive(Default)]
struct Report {
    seed: u64,
    duration_s: f64,
    commits: u64,
    epochs: u64,
    blocks_written: u64,
    blocks_deleted: u64,
    reads: u64,
    bytes: u64,
    wrong: u64,
    wrong_bytes: u64,
    discarded: u64,
    conns: u64,
    read_p50_us: u64,
    read_p99_us: u64,
    pins: u64,
    pin_p50_us: u64,
    pin_p99_us: u64,
    pinkill: u64,
    faults_noack: u64,
    faults_noack_killed: u64,
    /// Never-acking clients whose link an epoch shut, or whose watch was
    /// refused: nothing to kill them for.
    faults_noack_dropped: u64,
    faults_sigstop: u64,
    faults_sigstop_killed: u64,
    faults_sigkill: u64,
    readers_died_unexpectedly: u64,
    server_rss_max: u64,
    server_anon_max: u64,
    page_cache: u64,
    file_bytes: u64,
    problems: Vec<String>,
}

fn run(o: RunOpts) -> Result<bool> {
    if o.blksize % 4096 != 0 || o.blksize == 0 {
        bail!("--blksize must be a multiple of 4096");
    }
    if o.files == 0 || o.blocks < 2 || o.max_blocks < o.blocks {
        bail!("need --files >= 1, --blocks >= 2 and --max-blocks >= --blocks");
    }
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
    let tmp = tempfile::Builder::new().prefix("wcfs-stress.").tempdir()?;
    let dir = tmp.path();
    let db = match &o.zurl {
        Some(z) => PathBuf::from(z.strip_prefix("file://").unwrap_or(z)),
        None => dir.join("Data.fs"),
    };
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
        "wcfs-stress: seed {seed}; {} files x {} blocks of {} KiB (up to {}), {} readers, {} commits/s, {:.0} s{}; in {}",
        o.files,
        o.blocks,
        o.blksize / 1024,
        o.max_blocks,
        o.readers,
        o.rate,
        o.duration,
        if o.faults { ", faults on" } else { "" },
        dir.display()
    );
    type Spawn = Box<
        dyn FnOnce(
            f64,
            u64,
            Arc<AtomicBool>,
            Arc<writer::WStats>,
        ) -> std::thread::JoinHandle<Result<()>>,
    >;
    let (nf, nb, mb, bs) = (o.files, o.blocks, o.max_blocks, o.blksize);
    let spawn_writer: Spawn = match &zeo {
        Some(z) => {
            let w = writer::Writer::create_zeo(&z.addr, &log, seed, nf, nb, mb, bs)?;
            Box::new(move |r, e, s, st| std::thread::spawn(move || writer::run(w, r, e, s, st)))
        }
        None => {
            let w = writer::Writer::create(&db, &log, seed, nf, nb, mb, bs)?;
            Box::new(move |r, e, s, st| std::thread::spawn(move || writer::run(w, r, e, s, st)))
        }
    };
    let mut h = model::History::default();
    h.refresh(&log)?;
    let oids: Vec<Oid> = h.files.iter().map(|f| f.oid).collect();
    let mut srv = Server::start(&wcfs, &zurl, &mnt, &dir.join("wcfs.log"), o.pintimeout)?;
    let srv_pid = srv.pid().unwrap_or(0);
    // the server's history starts at its start: readers begin after it
    let stop = Arc::new(AtomicBool::new(false));
    let wst = Arc::new(writer::WStats::default());
    let wthread = {
        let (stop, wst) = (stop.clone(), wst.clone());
        let epochs = if o.no_epochs { 0 } else { o.epochs_per_1000 };
        spawn_writer(o.rate, epochs, stop, wst)
    };
    // wait for the first commit after the start to be served
    let t0 = Instant::now();
    while h.tids.len() < o.files as usize + 1 {
        std::thread::sleep(Duration::from_millis(20));
        h.refresh(&log)?;
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the writer made no commit in 30 s");
        }
    }

    let sh = Arc::new(Shared {
        wrong_lines: Mutex::new(Vec::new()),
    });
    let errlog = dir.join("readers.err");
    let mut rep = Report {
        seed,
        file_bytes: o.files as u64 * o.max_blocks as u64 * o.blksize,
        ..Report::default()
    };
    let mut readers: Vec<Reader> = Vec::new();
    let mut next_id = 0u64;
    let spawner = Spawner {
        exe: exe.clone(),
        mnt: mnt.clone(),
        log: log.clone(),
        seed,
        max_blocks: o.max_blocks,
        sh: sh.clone(),
        errlog: errlog.clone(),
    };
    let spawn = |next_id: &mut u64| -> Result<Reader> {
        let id = *next_id;
        *next_id += 1;
        // one reader in four holds its view for long
        let hold = if id % 4 == 3 {
            Duration::from_secs(15)
        } else {
            Duration::from_millis(300)
        };
        spawner.spawn(id, hold)
    };
    for _ in 0..o.readers {
        readers.push(spawn(&mut next_id)?);
    }
    let mut dead = Counters::default(); // what readers that ended had done
    let mut noacks: Vec<(Child, Instant)> = Vec::new();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.duration);
    let mut last_progress = Instant::now();
    let mut last_fault = Instant::now();
    let mut last_reads = (0u64, Instant::now());
    let hang_limit = Duration::from_secs_f64(3.0 * o.pintimeout + 20.0);
    let mut frng = model::mix(seed ^ 0xfa017);
    let pt = Duration::from_secs_f64(o.pintimeout);
    let fault_every = o.fault_every.unwrap_or(pt.max(Duration::from_secs(4)));

    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        if wthread.is_finished() {
            break;
        }
        if !srv.alive() {
            rep.problems.push("wcfs serve exited during the run".into());
            break;
        }
        let (all, anon) = rss(srv_pid);
        rep.server_rss_max = rep.server_rss_max.max(all);
        rep.server_anon_max = rep.server_anon_max.max(anon);
        // readers that ended: account, judge, replace
        let mut i = 0;
        while i < readers.len() {
            let r = &mut readers[i];
            let Some(sig) = ended(&mut r.child) else {
                i += 1;
                continue;
            };
            let s = r.stat.lock().unwrap_or_else(|p| p.into_inner()).clone();
            dead.add(&s);
            let lately_stopped = r.stopped.is_some()
                || r.continued
                    .is_some_and(|t| t.elapsed() < 2 * pt + Duration::from_secs(10));
            if lately_stopped && matches!(sig, Some(7 | 9)) {
                rep.faults_sigstop_killed += 1;
            } else if !r.killed_by_us {
                rep.readers_died_unexpectedly += 1;
                rep.problems.push(format!(
                    "reader {} died unexpectedly ({}); see {}",
                    r.id,
                    sig.map_or("exited".to_owned(), |s| format!("signal {s}")),
                    errlog.display()
                ));
            }
            readers.swap_remove(i);
            readers.push(spawn(&mut next_id)?);
        }
        // a SIGSTOPped reader nobody needed: continue it
        for r in &mut readers {
            if r.stopped
                .is_some_and(|t| t.elapsed() > 3 * pt + Duration::from_secs(5))
            {
                signal(r.child.id(), nix::sys::signal::Signal::SIGCONT);
                r.stopped = None;
                r.continued = Some(Instant::now());
            }
        }
        // faulty clients that never ack must be killed
        noacks.retain_mut(|(c, t)| match ended_code(c) {
            Some(End::Signal(7 | 9)) => {
                rep.faults_noack_killed += 1;
                false
            }
            Some(End::Code(c))
                if c == reader::NoackEnd::Epoch as i32 || c == reader::NoackEnd::Refused as i32 =>
            {
                rep.faults_noack_dropped += 1;
                false
            }
            Some(other) => {
                rep.problems.push(format!(
                    "a client that never acks ended without being killed ({other:?})"
                ));
                false
            }
            None if t.elapsed() > 6 * pt + Duration::from_secs(30) => {
                rep.problems
                    .push("a client that never acks was not killed".into());
                let _ = c.kill();
                let _ = c.wait();
                false
            }
            None => true,
        });
        // faults
        if o.faults && last_fault.elapsed() > fault_every && Instant::now() + 3 * pt < end {
            last_fault = Instant::now();
            frng = model::mix(frng);
            h.refresh(&log)?;
            match frng % 3 {
                0 => {
                    let fi = (frng >> 8) as usize % oids.len();
                    if let Some(at) = h.head() {
                        let c = Command::new(&exe)
                            .args(["noack"])
                            .arg(&mnt)
                            .args([oids[fi].to_string(), at.to_string()])
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()?;
                        noacks.push((c, Instant::now()));
                        rep.faults_noack += 1;
                    }
                }
                1 => {
                    let i = (frng >> 8) as usize % readers.len();
                    if readers[i].stopped.is_none() {
                        signal(readers[i].child.id(), nix::sys::signal::Signal::SIGSTOP);
                        readers[i].stopped = Some(Instant::now());
                        rep.faults_sigstop += 1;
                    }
                }
                _ => {
                    let i = (frng >> 8) as usize % readers.len();
                    if readers[i].stopped.is_none() {
                        readers[i].killed_by_us = true;
                        signal(readers[i].child.id(), nix::sys::signal::Signal::SIGKILL);
                        rep.faults_sigkill += 1;
                    }
                }
            }
        }
        // progress, hang
        let (reads, wrong) = readers.iter().fold((dead.reads, dead.wrong), |(a, b), r| {
            let s = r.stat.lock().unwrap_or_else(|p| p.into_inner());
            (a + s.reads, b + s.wrong)
        });
        if reads > last_reads.0 {
            last_reads = (reads, Instant::now());
        } else if last_reads.1.elapsed() > hang_limit {
            let dump = dir.join("hang.txt");
            let mut pids = vec![("server".to_owned(), srv_pid)];
            pids.extend(
                readers
                    .iter()
                    .map(|r| (format!("reader {}", r.id), r.child.id())),
            );
            dump_threads(&dump, "hang", &pids);
            rep.problems.push(format!(
                "hang: no read completed for {:?} (threads: {})",
                last_reads.1.elapsed(),
                dump.display()
            ));
            break;
        }
        if last_progress.elapsed().as_secs_f64() >= o.progress {
            last_progress = Instant::now();
            let st = srv.stats();
            eprintln!(
                "wcfs-stress: {:>5.0} s  commits {:>6}  reads {:>9}  wrong {}  pins {:>6}  killed {}  links {}  server anon {} MiB",
                start.elapsed().as_secs_f64(),
                wst.commits.load(Ordering::Relaxed),
                reads,
                wrong,
                st.get("pin").copied().unwrap_or(0),
                st.get("pinkill").copied().unwrap_or(0),
                st.get("WatchLink").copied().unwrap_or(0),
                rss(srv_pid).1 >> 20,
            );
        }
    }

    // ---- the end: readers leave cleanly, then the writer, then the server ----
    for r in &mut readers {
        if r.stopped.take().is_some() {
            signal(r.child.id(), nix::sys::signal::Signal::SIGCONT);
            r.continued = Some(Instant::now());
        }
        drop(r.child.stdin.take());
    }
    for mut r in readers {
        let t0 = Instant::now();
        let sig = loop {
            if let Some(s) = ended(&mut r.child) {
                break s;
            }
            if t0.elapsed() > 2 * pt + Duration::from_secs(20) {
                let dump = dir.join("hang.txt");
                dump_threads(
                    &dump,
                    &format!("reader {} did not end", r.id),
                    &[
                        ("server".to_owned(), srv_pid),
                        (format!("reader {}", r.id), r.child.id()),
                    ],
                );
                rep.problems.push(format!(
                    "reader {} did not end when asked (threads: {})",
                    r.id,
                    dump.display()
                ));
                let _ = r.child.kill();
                let _ = r.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if r.continued.is_some() && matches!(sig, Some(7 | 9)) {
            // stopped until just now: a pin it missed meanwhile got it killed
            rep.faults_sigstop_killed += 1;
        } else if sig.is_some() && !r.killed_by_us {
            rep.problems
                .push(format!("reader {} died at the end (signal {sig:?})", r.id));
        }
        // let the stdout thread see the last line
        std::thread::sleep(Duration::from_millis(50));
        let s = r.stat.lock().unwrap_or_else(|p| p.into_inner()).clone();
        dead.add(&s);
    }
    for (mut c, _) in noacks {
        if ended(&mut c).is_none() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    stop.store(true, Ordering::Relaxed);
    match wthread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => rep.problems.push(format!("writer: {e:#}")),
        Err(_) => rep.problems.push("writer panicked".into()),
    }
    let st = srv.stats();
    // (before the page-cache scan below, which looks up every @rev view)
    let (all, anon) = rss(srv_pid);
    rep.server_rss_max = rep.server_rss_max.max(all);
    rep.server_anon_max = rep.server_anon_max.max(anon);
    rep.page_cache = mount_cache(&mnt, &oids);
    if !srv.stop() {
        rep.problems.push(format!(
            "wcfs serve did not stop cleanly; see {}",
            dir.join("wcfs.log").display()
        ));
    }
    if mounted(&mnt) {
        rep.problems
            .push(format!("{}: mount entry left behind", mnt.display()));
    }
    if mnt.exists() {
        rep.problems
            .push(format!("{}: mountpoint left behind", mnt.display()));
    }

    rep.duration_s = start.elapsed().as_secs_f64();
    rep.commits = wst.commits.load(Ordering::Relaxed);
    rep.epochs = wst.epochs.load(Ordering::Relaxed);
    rep.blocks_written = wst.blocks_written.load(Ordering::Relaxed);
    rep.blocks_deleted = wst.blocks_deleted.load(Ordering::Relaxed);
    rep.reads = dead.reads;
    rep.bytes = dead.bytes;
    // a reader killed before its last report still printed its WRONG lines
    let lines = sh.wrong_lines.lock().map_or(0, |v| v.len() as u64);
    rep.wrong = dead.wrong.max(lines);
    rep.wrong_bytes = dead.wrong_bytes;
    rep.discarded = dead.discarded;
    rep.conns = dead.conns;
    rep.read_p50_us = dead.lat.quantile(0.5);
    rep.read_p99_us = dead.lat.quantile(0.99);
    rep.pins = st.get("pin").copied().unwrap_or(0);
    rep.pin_p50_us = st.get("pin_rtt_p50_us").copied().unwrap_or(0);
    rep.pin_p99_us = st.get("pin_rtt_p99_us").copied().unwrap_or(0);
    rep.pinkill = st.get("pinkill").copied().unwrap_or(0);
    if rep.wrong > 0 {
        rep.problems
            .push(format!("{} reads saw data not of their view", rep.wrong));
    }
    if rep.reads == 0 {
        rep.problems.push("no read was verified".into());
    }
    let ok = rep.problems.is_empty();
    print_report(&rep, o.json);
    if ok {
        // a clean run leaves nothing; a failed one keeps its logs
        drop(tmp);
    } else {
        let kept = tmp.keep();
        eprintln!("wcfs-stress: logs kept in {}", kept.display());
    }
    Ok(ok)
}

fn print_report(r: &Report, json: bool) {
    if json {
        let v = serde_json::json!({
            "ok": r.problems.is_empty(),
            "seed": r.seed,
            "duration_s": r.duration_s,
            "commits": r.commits,
            "epochs": r.epochs,
            "blocks_written": r.blocks_written,
            "blocks_deleted": r.blocks_deleted,
            "verified_reads": r.reads,
            "verified_bytes": r.bytes,
            "wrong_reads": r.wrong,
            "wrong_bytes": r.wrong_bytes,
            "discarded_reads": r.discarded,
            "conns": r.conns,
            "read_latency_us": {"p50": r.read_p50_us, "p99": r.read_p99_us},
            "pins": r.pins,
            "pin_rtt_us": {"p50": r.pin_p50_us, "p99": r.pin_p99_us},
            "clients_killed": r.pinkill,
            "faults": {
                "noack": r.faults_noack, "noack_killed": r.faults_noack_killed,
                "noack_dropped_by_epoch": r.faults_noack_dropped,
                "sigstop": r.faults_sigstop, "sigstop_killed": r.faults_sigstop_killed,
                "sigkill": r.faults_sigkill,
            },
            "server_rss_max_bytes": r.server_rss_max,
            "server_anon_rss_max_bytes": r.server_anon_max,
            "page_cache_bytes": r.page_cache,
            "files_max_bytes": r.file_bytes,
            "problems": r.problems,
        });
        println!("{v:#}");
        return;
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "wcfs-stress report (seed {})", r.seed);
    let _ = writeln!(out, "  duration            {:.1} s", r.duration_s);
    let _ = writeln!(
        out,
        "  commits             {} ({} epochs; {} blocks written, {} deleted)",
        r.commits, r.epochs, r.blocks_written, r.blocks_deleted
    );
    let _ = writeln!(
        out,
        "  verified reads      {} ({:.1} MiB); wrong: {} reads, {} bytes; discarded after an epoch {}; {} views",
        r.reads,
        mib(r.bytes),
        r.wrong,
        r.wrong_bytes,
        r.discarded,
        r.conns
    );
    let _ = writeln!(
        out,
        "  read latency        p50 {} µs, p99 {} µs",
        r.read_p50_us, r.read_p99_us
    );
    let _ = writeln!(
        out,
        "  pins                {} (round trip p50 {} µs, p99 {} µs)",
        r.pins, r.pin_p50_us, r.pin_p99_us
    );
    let _ = writeln!(
        out,
        "  faults              no-ack clients {} (killed {}, dropped by an epoch {}), SIGSTOP {} (killed {}), SIGKILL {}; clients killed by the server {}",
        r.faults_noack, r.faults_noack_killed, r.faults_noack_dropped, r.faults_sigstop, r.faults_sigstop_killed, r.faults_sigkill, r.pinkill
    );
    let _ = writeln!(
        out,
        "  server RSS (max)    {:.1} MiB anonymous, {:.1} MiB with mapped file pages (Data.fs)",
        mib(r.server_anon_max),
        mib(r.server_rss_max)
    );
    let _ = writeln!(
        out,
        "  page cache (mount)  {:.1} MiB (files up to {:.1} MiB)",
        mib(r.page_cache),
        mib(r.file_bytes)
    );
    if r.problems.is_empty() {
        let _ = writeln!(out, "  result              OK");
    } else {
        for p in &r.problems {
            let _ = writeln!(out, "  PROBLEM             {p}");
        }
    }
}

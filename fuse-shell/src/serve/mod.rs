//! `wcfs serve`: the FUSE filesystem.
//!
//! Serves `head/bigfile/<oid>` (the latest data of every ZBigFile, with the
//! kernel page cache kept across opens and invalidated exactly where a
//! commit changed a block that was served) and `@<tid>/bigfile/<oid>` (the
//! file as of `<tid>`, immutable), plus `head/at`, `.wcfs/zurl`,
//! `.wcfs/pintimeout` and `.wcfs/stats` (spec §2, §3), and `head/watch`,
//! the isolation protocol (spec §4-§7): clients watch a file as of their
//! database state and are told, before any newer data of a block reaches
//! the page cache they map, to pin that block to an older `@<rev>/` file.
//!
//! # Organization
//!
//! - [`fs`]: the filesystem without FUSE (nodes, the head view, READ,
//!   commit processing, watch setups and pins); [`fuse`]: the adapter;
//!   [`pool`]: the READ worker threads (elastic, not rayon: see there
//!   why); [`inval`]: the per-file invalidation lanes that move head/at;
//!   [`early`]: pins sent before a commit's invalidation, for clients that
//!   ask (`option early-pins`: a retried page fault holds its mmap lock);
//!   [`keep`]: a changed block's old data read back from the kernel and
//!   put into `@<rev>/`'s cache before its invalidation;
//!   [`errno`]: errors to errno and log lines; [`stats`] and [`hist`]: the
//!   counters; [`link`]: `head/watch` links and their lines; [`pin`]: pins in
//!   flight; [`kill`]: faulty clients' processes and the kill policy. This file: mount, the commit
//!   follower, the watch reaper, signals and unmount.
//!
//! # The design: nothing waits for what it does not need
//!
//! A faulty client (it never acks a pin, or is SIGSTOPped) may delay only
//! (1) the READs that need its pin, and (2) head/at for a commit that
//! changes a block whose READ is in flight for it (the kernel keeps that
//! page locked until the reply, so its invalidation waits). Nothing else
//! waits for it: no thread holds a lock while it waits for a client. (A
//! client that asked for early pins may also delay head/at once, by at
//! most [`early::EARLY_WAIT`], when it stops answering: see [`early`].)
//!
//! The head view (at, the head/ files and their sizes) is an RCU snapshot
//! ([`rcu::RcuCell`]): READs, getattr, open and lookups load it and never
//! take a lock for it. What still needs exclusion is ΔFtail's contract
//! (one writer or many readers): `Wcfs::ft_rw`, held for writing by the
//! commit thread only to apply an Update prepared beside the readers and
//! to forget old history (both in memory), and for reading by READs and
//! setups while they Track and decide their pins (engine work, storage
//! reads for rebuilds at worst), never while they load block data or wait
//! for an ack.
//!
//! Data flow:
//! 1. READ of head/bigfile/f at `[off, off+len)` (on the read pool): load
//!    the head view V (at = T) → load the covering blocks at T
//!    (`ZBigFile::load_blk`: data, blktab path, key coverage, ZBlk; no
//!    lock) → `ft_rw` R: if ΔFtail's head ≠ T, a commit moved past T:
//!    release, wait for its view, start again; else `ΔFtail.Track` each
//!    block and, for every watch of f whose `at` is older than the block's
//!    revision, queue `pin #blk @BlkRevAt(blk, w.at)` → release `ft_rw` →
//!    wait for the acks (nothing held) → reply T's bytes.
//! 2. Commit δZ = (tid, oids) (the follower thread): prepare ΔFtail's
//!    Update (its storage reads: treediff of copies of the tracked nodes,
//!    the changed files' states; no lock; Tracks made meanwhile are logged)
//!    → `ft_rw` W: `δF = apply` (in memory; a logged Track whose path δZ
//!    stored counts as changed), `ForgetPast(tid - 60 s)` (keeping what the
//!    oldest watch needs), load V → release → refresh the touched head
//!    files (epoch: reload; size: recompute and re-track the path to the
//!    last block; a size never goes down; storage reads, no lock) →
//!    `ft_rw` R: queue the early pins of the changed blocks for
//!    early-pins watches behind tid ([`early`]) → push each grown file's
//!    size into the kernel's inode (a NOTIFY_STORE of one byte ending at
//!    the new end), *before* the view shows it, with no attribute reply
//!    computed meanwhile (`Head::size_seq`): the inode's size must never be
//!    below a size a getattr told (`stress/findings/`) → publish view
//!    (tid, files) → queue
//!    the invalidations of the changed blocks (and sizes) to their files'
//!    lanes ([`inval`]), each file's behind its early pins → next commit.
//!    A lane thread waits for the early pins (bounded), sends the
//!    invalidations; head/at := tid (and a `.wcfs/debug/zhead` line) for
//!    every commit, in order, once every invalidation of it and of every
//!    earlier commit is done; then watch setups waiting for it wake.
//! 3. `watch f @at` (a thread per request): wait for head/at ≥ at (so the
//!    page cache holds nothing newer than what pins account for) →
//!    `ft_rw` R: H = ΔFtail's head; checks; register `at` (bump the
//!    watch's generation) → for every explicitly tracked block changed in
//!    (at, H]: queue its pin to `BlkRevAt(blk, at)`; for every pinned
//!    block not named: unpin if unchanged in (at, H] → release → wait for
//!    the acks (nothing but the link's per-file setup lock held) → `ok`.
//!    No message goes to clients at commit time except early pins: for
//!    other links pins are lazy.
//!
//! # Invariants
//!
//! With `cache(f)` the blocks of head/f the kernel may cache, `pinned(w)`
//! the blocks pinned on watch w and `rev(b, t)` the last revision ≤ t that
//! changed block b:
//!
//! ```text
//! b ∈ cache(f)            ⇒  b's blktab path and ZBlk are tracked in ΔFtail
//! head/at = T             ⇒  ∀ commit t ≤ T: t's invalidations are done
//!                            (head/ holds exactly T's data until the next commit)
//! ∀ w on f, b ∈ cache(f) at state S:
//!     rev(b, S) > w.at    ⇒  b ∈ pinned(w) ∧ pinned(w)[b] = rev(b, w.at)
//! view.at = T ∧ READ holds ft_rw R ∧ ΔFtail.head = T
//!                         ⇒  no commit > T is visible to that READ's Track
//! ```
//!
//! Why a READ may reply after releasing everything: its pages are locked
//! in the kernel from before the request until the reply, and a commit's
//! invalidation of a changed block locks each page of its range. So data
//! of state T that reaches the page cache after state T+1 was published
//! is dropped by T+1's invalidation, which head/at waits for (second
//! invariant). Why a watch sees its own `at`: a READ tracks, then looks up
//! the watches (`watchers` R); a setup registers (`watchers` W), then
//! slices ΔFtail (its track bookkeeping mutex). Of the two, one sees the
//! other's first step: the READ pins for the new `at`, or the setup pins
//! the block. A setup's head H is ΔFtail's head under `ft_rw` R, ≥ the
//! head of every READ that tracked before it, and a READ after it sees
//! the registered `at`. A READ decides a watch's pins for the `(at, gen)`
//! it read and queues them only if the generation is unchanged (else it
//! decides again), so the last pin queued for a block is for the current
//! `at`.
//!
//! # Concurrency
//!
//! | who | holds | may overlap with |
//! | --- | --- | --- |
//! | READ of head/ (pool threads): load | nothing | everything |
//! | READ of head/: track + decide pins | `ft_rw` R, briefly `watchers` R, `Watch::st` | other READs, setups |
//! | READ of head/: wait for acks, record what it served (a watched file: the keeper's `sums`, briefly; the hash with nothing held), reply | nothing | everything |
//! | first lookup of a head/bigfile/ file (pool) | storage I/O with nothing; then `ft_rw` R, the view's writer (after 3 attempts overtaken by commits: `ft_rw` R across the I/O too, as READs) | READs, setups |
//! | getattr/open of head files, lookups of known ones | nothing (view snapshot) | everything |
//! | commit (follower thread): prepare the Update | nothing | everything |
//! | commit: apply the Update, ForgetPast (in memory) | `ft_rw` W | READ loads and waits, getattr, open, `.wcfs/stats` |
//! | commit: refresh files, publish view | the view's writer (brief) | everything |
//! | commit: decide early pins | `ft_rw` R, briefly `watchers` R, `Watch::st` | READs, setups |
//! | invalidation (lane threads) | nothing | everything; waits for its early pins (≤ `EARLY_WAIT`), then for the kernel's answer to the retrieve of a changed block's old data (≤ `keep::RETRIEVE_WAIT`; `ft_rw` R around one BlkRevAt), then in the kernel for a READ of that block in flight |
//! | READ of @rev/ | nothing but `cache_mu` | everything |
//! | watch setup (its own thread) | its link's per-file setup lock; `ft_rw` R while it registers and decides | READs, other setups |
//! | head/watch READ / WRITE / release (session thread) | a link's `st` briefly | everything |
//!
//! The session thread never does storage I/O for head/ nor takes `ft_rw`
//! ([`fuse`]): a client's pinner must be able to look up and open
//! `@<rev>/` files while READs wait for its ack, and it hands the
//! kernel's answers to retrieves to the waiting lane ([`keep`]), which
//! holds no lock while it waits.
//!
//! # Locking order
//!
//! `ft_rw` > link setup lock > `watchers` > `Watch::st` > `WatchLink::st`;
//! `nodes_mu`, `cache_mu`, `loading_mu`, `rev_files`, `last_trim`, the
//! keeper's `sums` and `waiting` ([`keep`]), the
//! view's and ΔFtail's internal locks are leaves (held briefly, nothing
//! taken under them). `Isolation::by_link` and `Isolation::watchers` are held
//! briefly, never while waiting. No lock is held while waiting for a
//! client, and none across storage I/O but `ft_rw` R by queries that
//! rebuild a history (and W in the rare apply of an Update that stored a
//! file first tracked while it was prepared: one object load). Concurrent READs of one block share one
//! load (a `OnceLock` per block being loaded), with no lock held.
//!
//! Notation: δZ (one transaction's changed oids), δF (the tracked files'
//! changed blocks at one revision), ΔFtail = [`engine::ftail::DeltaFTail`].

// The items of this module are `pub` so that the package's tests can reach
// them (`tests/no_mount.rs`, with the `testing` feature, under which this
// module is public); in a normal build the module is private, so they are
// crate-internal all the same.
#![cfg_attr(not(feature = "testing"), allow(unreachable_pub))]

pub mod early;
pub mod errno;
pub mod fs;
pub mod fuse;
pub mod head;
pub mod hist;
pub mod inval;
pub mod isolation;
pub mod keep;
pub mod kill;
pub mod link;
pub mod nodes;
pub mod pin;
pub mod pool;
pub mod read;
pub mod rev;
pub mod stats;
pub mod zhead;

use anyhow::{bail, Context, Result};
use fuser::{Config, INodeNo, MountOption, Notifier, SessionACL};
use nix::sys::signal::{SigSet, Signal};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use zodb::Tid;

/// With `--autoexit`: stop after this long with no open file and no
/// request (`$WCFS_AUTOEXIT_SECS` overrides it, for tests).
const AUTOEXIT_IDLE: Duration = Duration::from_secs(60);

fn autoexit_idle() -> u64 {
    std::env::var("WCFS_AUTOEXIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(AUTOEXIT_IDLE.as_secs())
}
/// After the unmount, how long to wait for the FUSE session to end (clients
/// may still hold files open on a lazily detached mount).
const UNMOUNT_WAIT: Duration = Duration::from_secs(5);

/// The mount's readahead unless told otherwise, KiB: the kernel's own
/// default for a new mount. Below blksize/8 for 2 MiB
/// blocks (the original client assumes that), so a fault near a block's
/// edge pulls in at most 64 KiB of the neighbour block. README
/// "Readahead" has the measurements against 256 and 1024.
pub const DEFAULT_READAHEAD_KB: u32 = 128;

/// Options of `wcfs serve`.
#[derive(Debug)]
pub struct ServeOpts {
    pub zurl: String,
    pub mountpoint: PathBuf,
    pub pintimeout: f64,
    pub autoexit: bool,
    /// Serve `.wcfs/debug/zhead`.
    pub debug: bool,
    /// Mount with `auto_unmount`: fusermount3 removes the mount when the
    /// server dies, even by `kill -9` (our CLI). Without it (the Go
    /// server's command line) a dead server's mount stays, every access
    /// ENOTCONN, for its manager (wendelin.core's Python side) to find
    /// and unmount, as the original leaves it.
    pub auto_unmount: bool,
    /// The mount's readahead in KiB (`read_ahead_kb` of its bdi, set where
    /// we may: root); 0 leaves the kernel's.
    pub readahead_kb: u32,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mount and serve until SIGINT/SIGTERM/SIGHUP, an unmount from outside, or
/// (`--autoexit`) idleness; then unmount.
pub fn serve(o: ServeOpts) -> Result<()> {
    // ---- 0) signals: blocked in every thread, taken by one sigwait ----
    // (before any thread is started, so that all inherit the mask)
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().context("block signals")?;

    let stor = zodb::zurl::open(&o.zurl).with_context(|| format!("open {}", o.zurl))?;
    let fs = Arc::new(fs::Wcfs::new(o.zurl.clone(), stor, o.pintimeout)?);
    if o.debug {
        fs.nodes.add_debug();
    }
    let at0 = fs.head_at();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // READs may wait for pins (up to --pintimeout): the pool grows past
    // these as READs wait (pool.rs), so stuck clients stall no one else
    let pool = pool::Pool::new((4 * threads).max(8)).context("read pool")?;
    let last_use = Arc::new(AtomicU64::new(now_secs()));
    let open_files = Arc::new(AtomicU64::new(0));

    // ---- 1) mount ----
    let session = mount(
        fuse::Fuse::new(fs.clone(), pool, last_use.clone(), open_files.clone()),
        &o.zurl,
        &o.mountpoint,
        o.auto_unmount,
    )?;
    let notifier = session.notifier();
    let bg = session.spawn().context("start the FUSE session")?;
    tracing::info!(zurl = %o.zurl, mountpoint = %o.mountpoint.display(), head = %at0, "mounted");
    if o.readahead_kb > 0 {
        set_readahead(&o.mountpoint, o.readahead_kb);
    }

    // ---- 2) follow the storage ----
    let stop = Arc::new(AtomicBool::new(false));
    {
        // parked head/watch READs of killed threads get EINTR (see watch.rs)
        let (fs, stop) = (fs.clone(), stop.clone());
        std::thread::Builder::new()
            .name("wcfs-reaper".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    fs.iso.links.reap_parked();
                }
            })
            .context("start the watch reaper")?;
    }
    {
        let (fs, stop) = (fs.clone(), stop.clone());
        std::thread::Builder::new()
            .name("wcfs-commit".into())
            .spawn(move || follow(&fs, &notifier, at0, &stop))
            .context("start the commit follower")?;
    }

    // ---- 3) wait for the end ----
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("wcfs-signal".into())
        .spawn(move || {
            if let Ok(sig) = sigs.wait() {
                let _ = tx.send(sig);
            }
        })
        .context("start the signal thread")?;
    let idle_limit = autoexit_idle();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(sig) => {
                tracing::info!("{sig}: unmounting");
                break;
            }
            Err(_) if bg.guard.is_finished() => {
                tracing::info!(
                    "{}: unmounted from outside (wcfs stop, or fusermount3 -u)",
                    o.mountpoint.display()
                );
                break;
            }
            Err(_) => {
                let idle = now_secs().saturating_sub(last_use.load(Ordering::Relaxed));
                if o.autoexit && open_files.load(Ordering::Relaxed) == 0 && idle >= idle_limit {
                    tracing::info!("autoexit: no client for {idle} s: unmounting");
                    break;
                }
            }
        }
    }

    // ---- 4) unmount ----
    stop.store(true, Ordering::Relaxed);
    unmount(bg, &o.mountpoint)
}

fn mount(
    fuse: fuse::Fuse,
    zurl: &str,
    mountpoint: &Path,
    auto_unmount: bool,
) -> Result<fuser::Session<fuse::Fuse>> {
    if !mountpoint.is_dir() {
        bail!("mountpoint {}: not a directory", mountpoint.display());
    }
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName(zurl.to_owned()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
    ];
    if auto_unmount {
        // fusermount3 stays behind and unmounts when we die, even by kill
        // -9 (it needs allow_other, which fuser restricts to root + owner);
        // it sets the subtype (type `fuse.wcfs`)
        cfg.mount_options.push(MountOption::AutoUnmount);
        cfg.mount_options.push(MountOption::Subtype("wcfs".into()));
    } else {
        // fuser mounts itself where it may (root), and passes no subtype
        // then: give it to the kernel (type `fuse.wcfs`, which the Python
        // side of wendelin.core checks)
        cfg.mount_options
            .push(MountOption::CUSTOM("subtype=wcfs".into()));
    }
    cfg.acl = SessionACL::RootAndOwner;
    fuser::Session::new(fuse, mountpoint, &cfg)
        .with_context(|| format!("mount {} on {}", zurl, mountpoint.display()))
}

/// Set the mount's readahead (`read_ahead_kb`) where we may (root). The
/// kernel reads around a page fault and ahead of sequential reads up to
/// it; past a block's end that is the next block's data, which the server
/// must track and pin for every watcher it changed for.
fn set_readahead(mountpoint: &Path, kb: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = md.dev();
    let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
    let p = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&p, kb.to_string()) {
        Ok(()) => tracing::info!("{p}: readahead set to {kb} KiB"),
        Err(e) => tracing::info!("{p}: readahead left as is: {e}"),
    }
}

fn unmount(bg: fuser::BackgroundSession, mountpoint: &Path) -> Result<()> {
    if !bg.guard.is_finished() {
        // Unmount ourselves: fusermount3's auto_unmount acts when we die, but
        // does not unmount when we only close its socket while alive.
        unmount_path(mountpoint);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(bg.umount_and_join());
        });
        match rx.recv_timeout(UNMOUNT_WAIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{}: unmount: {e}", mountpoint.display()),
            Err(_) => tracing::warn!(
                "{}: the FUSE session did not end within {UNMOUNT_WAIT:?}: exiting anyway",
                mountpoint.display(),
            ),
        }
    }
    tracing::info!("{}: unmounted", mountpoint.display());
    Ok(())
}

/// Unmount `mnt`: cleanly if nobody uses it, else lazily (the mount entry
/// goes at once, clients holding files get ENOTCONN once we exit).
/// Without the privilege for umount(2), through `fusermount3 -u [-z]`.
fn unmount_path(mnt: &Path) {
    use nix::mount::{umount2, MntFlags};
    match umount2(mnt, MntFlags::empty()) {
        Ok(()) => return,
        Err(nix::errno::Errno::EPERM) => {}
        Err(e) => {
            tracing::warn!("{}: umount: {e}: unmounting lazily", mnt.display());
            if let Err(e) = umount2(mnt, MntFlags::MNT_DETACH) {
                tracing::error!("{}: umount -l: {e}", mnt.display());
            }
            return;
        }
    }
    for args in [&["-u"][..], &["-u", "-z"][..]] {
        let st = std::process::Command::new("fusermount3")
            .args(args)
            .arg("--")
            .arg(mnt)
            .status();
        if matches!(st, Ok(s) if s.success()) {
            return;
        }
    }
    tracing::error!("{}: fusermount3 -u -z failed", mnt.display());
}

// ---- commit follower ----

/// Invalidations go to the kernel through the session's notifier, each
/// changed block's old data first to `@rev` where it can be kept
/// ([`keep`]).
struct KernelSink {
    notifier: Notifier,
    fs: Arc<fs::Wcfs>,
}

impl keep::PageCache for Notifier {
    fn retrieve(&self, ino: u64, off: u64, size: u32, unique: u64) -> std::io::Result<()> {
        Notifier::retrieve(self, INodeNo(ino), off, size, unique)
    }
    fn store(&self, ino: u64, off: u64, data: &[u8]) -> std::io::Result<()> {
        Notifier::store(self, INodeNo(ino), off, data)
    }
}

impl inval::Sink for KernelSink {
    fn inval(&self, i: &fs::Inval) {
        if let Some(k) = &i.keep {
            let r = self.fs.keep_old_block(&self.notifier, i.ino, k);
            tracing::debug!(oid = %k.oid, blk = k.blk, "keep for @rev: {r:?}");
        }
        match self.notifier.inval_inode(INodeNo(i.ino), i.off, i.len) {
            Ok(()) => {}
            // the kernel forgot the inode: nothing of it is cached
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) => {}
            Err(e) => tracing::warn!(ino = i.ino, off = i.off, "invalidate: {e}"),
        }
    }
}

/// Follow the storage after `at0`: every transaction through
/// [`fs::Wcfs::handle_commit`], its invalidations queued to their files'
/// lanes ([`inval`]), which move head/at. On a storage error head/at stops
/// advancing (cached data stays readable).
fn follow(fs: &Arc<fs::Wcfs>, notifier: &Notifier, at0: Tid, stop: &AtomicBool) {
    let n2 = notifier.clone();
    // one byte ending at the new size: the kernel grows an inode's size
    // only for a store of at least one byte (`handle_commit` has why)
    let _ = fs.size_push.set(Box::new(move |ino, size| {
        match n2.store(INodeNo(ino), size.saturating_sub(1), &[0]) {
            Ok(()) => {}
            // the kernel forgot the inode: it has no size to fix
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) => {}
            Err(e) => tracing::warn!(ino, size, "push the new size: {e}"),
        }
    }));
    let fs2 = fs.clone();
    let inv = inval::Invalidator::new(
        Arc::new(KernelSink {
            notifier: notifier.clone(),
            fs: fs.clone(),
        }),
        Box::new(move |t, lag| {
            fs2.stats.head_lag.record(lag);
            fs2.publish(t)
        }),
    );
    let mut w = match fs.storage().watch(at0) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("watch the storage: {e}: head/at stays at {at0}");
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let txn = match w.next(Some(Duration::from_millis(500))) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(zodb::Error::ChangesUnknown { head, why }) => {
                let _s = tracing::info_span!("changes unknown", %head).entered();
                let inval = fs.handle_unknown(head, &why);
                inv.submit(head, inval, Vec::new());
                continue;
            }
            Err(e) => {
                tracing::error!("watch the storage: {e}: head/at stays at {}", fs.head_at());
                return;
            }
        };
        let _s = tracing::info_span!("commit", tid = %txn.tid).entered();
        let t0 = std::time::Instant::now();
        let c = match fs.handle_commit(txn.tid, &txn.oids) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e:#}: head/at stays at {}", fs.head_at());
                return;
            }
        };
        fs.stats.commit_time.record(t0.elapsed());
        tracing::debug!(
            n = c.inval.len(),
            early = c.early.len(),
            "invalidations queued"
        );
        let gates: Vec<(u64, Arc<dyn inval::Gate>)> = c
            .early
            .into_iter()
            .map(|(ino, jobs)| {
                let g: Arc<dyn inval::Gate> = early::EarlyPins::new(fs.clone(), jobs);
                (ino, g)
            })
            .collect();
        inv.submit(txn.tid, c.inval, gates);
    }
}

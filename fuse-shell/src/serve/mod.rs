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
//!   commit processing); [`fuse`]: the adapter; [`pool`]: the READ worker
//!   threads (not rayon: see there why); [`errno`]: errors to errno and
//!   log lines; [`stats`]: the counters; [`watch`]: `head/watch` links,
//!   their lines and pins in flight, killing faulty clients. This file:
//!   mount, the commit follower, the watch reaper, signals and unmount.
//!
//! Data flow:
//! 1. READ of head/bigfile/f at `[off, off+len)` (on the read pool): take
//!    `zhead` read → load the covering blocks at head (`ZBigFile::load_blk`:
//!    data, blktab path, key coverage, ZBlk) → `ΔFtail.Track` each block →
//!    pin the block on every watch of the file whose `at` is older than the
//!    block's revision (`BlkRevAt(blk, w.at)`) and wait for the acks →
//!    reply → release `zhead`.
//! 2. Commit δZ = (tid, oids) (the follower thread): take `zhead` write →
//!    `δF = ΔFtail.Update(δZ)` → refresh the touched head files (epoch:
//!    reload; size: recompute and re-track the path to the last block) →
//!    head view := tid → `ΔFtail.ForgetPast(tid - 60 s)` → release `zhead`
//!    → invalidate the changed blocks (and sizes) in the kernel cache →
//!    head/at := tid → wake watch setups waiting for it. Forgetting keeps
//!    everything the oldest watch needs.
//! 3. `watch f @at` (a thread per request): wait for head/at ≥ at (so the
//!    page cache holds nothing newer than what pins account for) → `zhead`
//!    read → register `at` → pin every explicitly tracked block changed in
//!    (at, head] to its revision as of at, unpin what is pinned no more →
//!    wait for the acks → `ok`. No message goes to clients at commit time:
//!    pins are lazy.
//!
//! # Invariants
//!
//! - `blk ∈ kernel cache of head/f ⇒ blk's blktab path and ZBlk are tracked
//!   in ΔFtail` (Track happens before the reply, under `zhead` read).
//! - `head/at reads T ⇒ no kernel cache page of head/ holds data older than
//!   T` (head/at is published only after T's invalidations are done).
//!
//! # Concurrency
//!
//! | who | holds | may overlap with |
//! | --- | --- | --- |
//! | READ of head/ (pool threads) | `zhead` R | other READs, lookups |
//! | first lookup of a head/bigfile/ file (pool) | `zhead` R, briefly `files_mu`, `nodes_mu` | READs |
//! | getattr/open of head files, lookups of known ones | briefly `files_mu` | everything |
//! | commit (follower thread) | `zhead` W | nothing that takes `zhead` |
//! | invalidation (follower thread) | nothing | READs of the new head |
//! | READ of @rev/ | nothing but `cache_mu` | everything |
//! | watch setup (its own thread) | `zhead` R, its link's per-file setup lock | READs, other setups |
//! | head/watch READ / WRITE / release (session thread) | a link's `st` briefly | everything |
//!
//! The session thread never waits for `zhead` ([`fuse`]): a client's
//! pinner must be able to look up and open `@<rev>/` files while READs
//! wait for its ack.
//!
//! The invalidations are sent with `zhead` released: the kernel holds the
//! page locks of a READ in flight while it waits for our reply, and an
//! invalidation of those pages waits for them; were the READ waiting for
//! `zhead`, that would deadlock. Between the release and head/at moving,
//! a reader may see some blocks of the new state already; once head/at
//! shows T, it sees exactly T's data (until the next commit).
//!
//! # Locking order
//!
//! `zhead` > `files_mu` > `nodes_mu` > `cache_mu`
//! (> ΔFtail's own locks); `loading_mu` is held alone. Watches:
//! `zhead` > link setup lock > `Watch::at` > `Watch::pinned` >
//! `WatchLink::st`; `WatchLink::byfile` and `Wcfs::watchers` are held
//! briefly, never while waiting and never with `Watch::pinned`;
//! `rev_files` and `last_trim` (the `@<rev>/` page-cache trim, every 10 s
//! at a commit: revisions nobody is pinned to lose their cached pages) are
//! innermost. Pins are
//! waited for with `zhead` R and `Watch::at` R held (the head view and the
//! watch's view cannot move under a pin in flight), never with a mutex. Concurrent READs of
//! one block share one load (a `OnceLock` per block being loaded): the
//! waiters hold `zhead` R as the loader does, so a commit waits for all.
//! The READ workers are plain threads, not rayon ([`pool`]): a rayon
//! worker waiting inside a job runs other jobs, which here could be READs
//! that queue for `zhead` behind a waiting commit.
//!
//! Notation: δZ (one transaction's changed oids), δF (the tracked files'
//! changed blocks at one revision), ΔFtail = [`engine::ftail::DeltaFTail`].

pub(crate) mod errno;
pub(crate) mod fs;
pub(crate) mod fuse;
pub(crate) mod pool;
pub(crate) mod stats;
pub(crate) mod watch;

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

/// Options of `wcfs serve`.
#[derive(Debug)]
pub(crate) struct ServeOpts {
    pub(crate) zurl: String,
    pub(crate) mountpoint: PathBuf,
    pub(crate) pintimeout: f64,
    pub(crate) autoexit: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mount and serve until SIGINT/SIGTERM/SIGHUP, an unmount from outside, or
/// (`--autoexit`) idleness; then unmount.
pub(crate) fn serve(o: ServeOpts) -> Result<()> {
    // ---- 0) signals: blocked in every thread, taken by one sigwait ----
    // (before any thread is started, so that all inherit the mask)
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().context("block signals")?;

    let stor = zodb::zurl::open(&o.zurl).with_context(|| format!("open {}", o.zurl))?;
    let fs = Arc::new(fs::Wcfs::new(o.zurl.clone(), stor, o.pintimeout)?);
    let at0 = fs.head_at();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // READs may wait for pins (up to --pintimeout): enough threads that a
    // few stuck clients do not stall everyone's READs
    let pool = pool::Pool::new((8 * threads).max(16)).context("read pool")?;
    let last_use = Arc::new(AtomicU64::new(now_secs()));
    let open_files = Arc::new(AtomicU64::new(0));

    // ---- 1) mount ----
    let session = mount(
        fuse::Fuse::new(fs.clone(), pool, last_use.clone(), open_files.clone()),
        &o.zurl,
        &o.mountpoint,
    )?;
    let notifier = session.notifier();
    let bg = session.spawn().context("start the FUSE session")?;
    tracing::info!(zurl = %o.zurl, mountpoint = %o.mountpoint.display(), head = %at0, "mounted");
    raise_readahead(&o.mountpoint);

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
                    fs.links.reap_parked();
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
                tracing::warn!("{}: unmounted from outside", o.mountpoint.display());
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

fn mount(fuse: fuse::Fuse, zurl: &str, mountpoint: &Path) -> Result<fuser::Session<fuse::Fuse>> {
    if !mountpoint.is_dir() {
        bail!("mountpoint {}: not a directory", mountpoint.display());
    }
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName(zurl.to_owned()),
        MountOption::Subtype("wcfs".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        // fusermount3 stays behind and unmounts when we die, even by kill -9
        // (it needs allow_other, which fuser restricts to root + owner).
        MountOption::AutoUnmount,
    ];
    cfg.acl = SessionACL::RootAndOwner;
    fuser::Session::new(fuse, mountpoint, &cfg)
        .with_context(|| format!("mount {} on {}", zurl, mountpoint.display()))
}

/// The kernel reads at most `read_ahead_kb` per READ; raise it to 1 MiB
/// (the most the kernel sends in one FUSE READ) where we may (root).
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = md.dev();
    let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
    let p = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&p, "1024") {
        Ok(()) => tracing::info!("{p}: readahead raised to 1024 KiB"),
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

/// Follow the storage after `at0`: every transaction through
/// [`fs::Wcfs::handle_commit`], its invalidations, then head/at. On a
/// storage error head/at stops advancing (cached data stays readable).
fn follow(fs: &fs::Wcfs, notifier: &Notifier, at0: Tid, stop: &AtomicBool) {
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
                send_invals(notifier, &inval);
                fs.publish(head);
                continue;
            }
            Err(e) => {
                tracing::error!("watch the storage: {e}: head/at stays at {}", fs.head_at());
                return;
            }
        };
        let _s = tracing::info_span!("commit", tid = %txn.tid).entered();
        let inval = match fs.handle_commit(txn.tid, &txn.oids) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!("{e:#}: head/at stays at {}", fs.head_at());
                return;
            }
        };
        send_invals(notifier, &inval);
        tracing::debug!(n = inval.len(), "invalidated");
        fs.publish(txn.tid);
    }
}

/// Send the kernel the cache invalidations `inval`.
fn send_invals(notifier: &Notifier, inval: &[fs::Inval]) {
    for i in inval {
        match notifier.inval_inode(INodeNo(i.ino), i.off, i.len) {
            Ok(()) => {}
            // the kernel forgot the inode: nothing of it is cached
            Err(e) if e.raw_os_error() == Some(libc_enoent()) => {}
            Err(e) => tracing::warn!(ino = i.ino, off = i.off, "invalidate: {e}"),
        }
    }
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

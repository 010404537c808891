//! `WCFS` (a mounted server), `Conn` (a view of it as of one database
//! state) and the pinner thread of each Conn.

use crate::error::{Error, Result};
use crate::fileh::{FileH, FileHInner, CLOSED, CLOSING, OPEN};
use crate::proto::{parse_frame, parse_pin, parse_reply, Pin, Reply, Request, ACK};
use crate::wlink::{read_line, WatchLink, MAX_RX_LINE};
use crate::{fork, mountpoint};
use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::BufReader;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use ztypes::{Oid, Tid};

/// How often `connect`/`resync` poll `head/at` while waiting for the
/// server to reach the wanted view.
const HEAD_POLL: Duration = Duration::from_millis(1);

/// How long `close` waits for the server to close the link after `bye`.
const BYE_TIMEOUT: Duration = Duration::from_secs(10);

/// A filesystem-level connection to a mounted wcfs server.
#[derive(Debug, Clone)]
pub struct WCFS {
    mnt: PathBuf,
    /// Test hook: the blksize to use instead of `st_blksize`.
    blksize: Option<u64>,
}

impl WCFS {
    /// A server mounted at `mountpoint` (checks that `head/at` reads).
    pub fn open(mountpoint: impl AsRef<Path>) -> Result<WCFS> {
        let wc = WCFS {
            mnt: mountpoint.as_ref().to_owned(),
            blksize: None,
        };
        wc.head_at()?;
        Ok(wc)
    }

    /// The default mountpoint of `zurl`: `/dev/shm/wcfs/<sha1 of the
    /// normalized zurl>`, as the server computes it.
    pub fn default_mountpoint(zurl: &str) -> Result<PathBuf> {
        mountpoint::default_mountpoint(zurl)
    }

    /// The server of `zurl` on its default mountpoint
    /// `/dev/shm/wcfs/<sha1hex(normalized zurl)>`; `<mnt>/.wcfs/zurl` must
    /// name the same database.
    pub fn from_zurl(zurl: &str) -> Result<WCFS> {
        let mnt = mountpoint::default_mountpoint(zurl)?;
        let p = mnt.join(".wcfs/zurl");
        let served = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, "read", e))?;
        if mountpoint::normalize(&served)? != mountpoint::normalize(zurl)? {
            return Err(Error::Zurl {
                zurl: zurl.to_owned(),
                reason: format!("{} serves {served:?}", mnt.display()),
            });
        }
        WCFS::open(mnt)
    }

    /// Test hook: use `blksize` instead of the head files' `st_blksize`
    /// (regular files of a fake mount all report the page size).
    #[doc(hidden)]
    pub fn with_blksize_override(mut self, blksize: u64) -> WCFS {
        self.blksize = Some(blksize);
        self
    }

    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mnt
    }

    /// The server's current view, `head/at`.
    pub fn head_at(&self) -> Result<Tid> {
        let p = self.mnt.join("head/at");
        let s = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, "read", e))?;
        s.trim_end_matches('\n')
            .parse::<Tid>()
            .map_err(|e| Error::BadFile {
                path: p,
                reason: e.to_string(),
            })
    }

    /// Wait (polling `head/at` every 1 ms) until the server's view is at
    /// least `at`.
    fn wait_head(&self, at: Tid) -> Result<()> {
        loop {
            if self.head_at()? >= at {
                return Ok(());
            }
            std::thread::sleep(HEAD_POLL);
        }
    }

    /// A connection with view `at`: waits until `head/at >= at`, opens a
    /// watch link (`head/watch`, O_RDWR) and starts its pinner thread.
    pub fn connect(&self, at: Tid) -> Result<Conn> {
        self.wait_head(at)?;
        let p = self.mnt.join("head/watch");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, "open", e))?;
        let conn = self.connect_over(at, f.into())?;
        conn.inner.ask_early_pins()?;
        Ok(conn)
    }

    /// Test hook: [`WCFS::connect`] over an already opened link (e.g. one
    /// end of a `UnixStream` pair whose other end plays the server).
    #[doc(hidden)]
    pub fn connect_with_link(&self, at: Tid, link: OwnedFd) -> Result<Conn> {
        self.wait_head(at)?;
        self.connect_over(at, link)
    }

    fn connect_over(&self, at: Tid, link: OwnedFd) -> Result<Conn> {
        let inner = Arc::new(ConnInner {
            wc: self.clone(),
            pid: std::process::id(),
            link: WatchLink::from_fd(link),
            at_mu: RwLock::new(at),
            fileh_mu: RwLock::new(HashMap::new()),
            closed: AtomicBool::new(false),
            pinner: Mutex::new(None),
        });
        let (done_tx, done_rx) = mpsc::sync_channel::<()>(1);
        let c = inner.clone();
        let h = std::thread::Builder::new()
            .name("wcfs-pinner".into())
            .spawn(move || {
                pinner_main(&c);
                let _ = done_tx.send(());
            })
            .map_err(|e| Error::Sys {
                op: "spawn pinner",
                source: e,
            })?;
        *inner.pinner.lock() = Some((h, done_rx));
        fork::register(&inner);
        Ok(Conn { inner })
    }
}

/// The shared part of a [`Conn`], also held by its pinner thread and its
/// [`FileH`]s.
pub(crate) struct ConnInner {
    pub(crate) wc: WCFS,
    /// The process that connected: in a forked child everything fails.
    pid: u32,
    pub(crate) link: WatchLink,
    /// The Conn's view. W: the local part of `resync` (sets `at`, re-stats
    /// files, changes `headfsize`); R: everything that needs `at` stable:
    /// `open`, file close, the watch part of `resync`, `close`, the pinner
    /// (which takes it with `read_recursive`, see the crate docs).
    pub(crate) at_mu: RwLock<Tid>,
    /// oid -> file (opening, open or closing; removed once closed).
    /// Held only for table lookups and updates, never while waiting for the
    /// server. The pinner reads it with `read_recursive`.
    pub(crate) fileh_mu: RwLock<HashMap<Oid, Arc<FileHInner>>>,
    /// Set by `close`; checked by user operations (and under `fileh_mu` W
    /// by `open` before it registers a file, so that `close` misses none).
    closed: AtomicBool,
    /// The pinner and its "I have exited" channel, taken by `close`.
    pinner: Mutex<Option<(JoinHandle<()>, mpsc::Receiver<()>)>>,
}

impl ConnInner {
    fn forked(&self) -> bool {
        std::process::id() != self.pid
    }

    /// Error if this Conn cannot be used (forked, closed, down).
    pub(crate) fn check_usable(&self) -> Result<()> {
        if self.forked() {
            return Err(Error::Forked);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(r) = self.link.down_reason() {
            return Err(Error::Down(r));
        }
        Ok(())
    }

    /// Ask the server to pin this link's watches before it drops changed
    /// blocks from head/'s cache (`option early-pins`, an extension of
    /// our server): without it, a page fault that the kernel retries while
    /// holding this process's mmap lock could need a pin that the pinner
    /// cannot make without that lock (see the crate docs). A server
    /// without the extension (the original) answers `error`: the link
    /// works as before.
    fn ask_early_pins(&self) -> Result<()> {
        match self.link.request(crate::proto::OPTION_EARLY_PINS)? {
            Reply::Ok => {}
            Reply::Error(text) => {
                tracing::debug!(
                    "{}: the server has no early pins: {text}",
                    crate::proto::OPTION_EARLY_PINS
                )
            }
        }
        Ok(())
    }

    /// Send a watch request and require `ok`.
    fn watch(&self, foid: Oid, at: Option<Tid>) -> Result<()> {
        let req = Request::Watch { oid: foid, at }.to_string();
        match self.link.request(&req)? {
            Reply::Ok => Ok(()),
            Reply::Error(text) => Err(Error::Server { req, text }),
        }
    }

    // ---- open ----

    fn open(self: &Arc<Self>, foid: Oid) -> Result<FileH> {
        self.check_usable()?;
        let at = self.at_mu.read();
        loop {
            // An already known file: share it, or wait for its open/close
            // to finish and look again.
            let known = {
                let tab = self.fileh_mu.write();
                match tab.get(&foid) {
                    Some(f) if f.state.load(Ordering::Acquire) == OPEN => {
                        f.nopen.fetch_add(1, Ordering::Relaxed);
                        return Ok(FileH {
                            conn: self.clone(),
                            inner: f.clone(),
                            released: false,
                        });
                    }
                    other => other.cloned(),
                }
            };
            if let Some(f) = known {
                drop(f.watch_mu.lock());
                continue;
            }

            // The file system work without fileh_mu (a FUSE lookup may wait
            // for the server, which may wait for the pinner).
            let f = Arc::new(FileHInner::open(&self.wc.mnt, foid, self.wc.blksize)?);
            let opening = f.watch_mu.lock();
            {
                let mut tab = self.fileh_mu.write();
                if self.closed.load(Ordering::Acquire) {
                    return Err(Error::Closed);
                }
                if tab.contains_key(&foid) {
                    continue; // lost a race with another open: start over
                }
                tab.insert(foid, f.clone());
            }
            // Pins may arrive before the reply: the pinner finds the file
            // in the table and records them.
            let r = self.watch(foid, Some(*at));
            match r {
                Ok(()) => {
                    f.state.store(OPEN, Ordering::Release);
                    drop(opening);
                    return Ok(FileH {
                        conn: self.clone(),
                        inner: f,
                        released: false,
                    });
                }
                Err(e) => {
                    self.forget(&f);
                    f.close_local();
                    drop(opening);
                    return Err(e);
                }
            }
        }
    }

    /// Remove `f` from the table if it is still there.
    fn forget(&self, f: &Arc<FileHInner>) {
        let mut tab = self.fileh_mu.write();
        if tab.get(&f.foid).is_some_and(|g| Arc::ptr_eq(g, f)) {
            tab.remove(&f.foid);
        }
    }

    // ---- close of files ----

    /// A user handle of `f` goes away; on the last one, close the file.
    pub(crate) fn release_fileh(&self, f: &Arc<FileHInner>) -> Result<()> {
        if self.forked() {
            return Ok(()); // a child sends nothing
        }
        let _at = self.at_mu.read();
        let _w = f.watch_mu.lock();
        {
            let _tab = self.fileh_mu.write();
            if f.nopen.fetch_sub(1, Ordering::AcqRel) != 1 {
                return Ok(());
            }
            if f.state.load(Ordering::Acquire) != OPEN {
                return Ok(()); // closed already (by Conn::close)
            }
            f.state.store(CLOSING, Ordering::Release);
        }
        self.close_fileh(f)
    }

    /// Stop watching `f` (it stays in the table meanwhile, so that pins
    /// arriving before the reply are served), then close it locally.
    /// `at_mu` R and `f.watch_mu` held.
    fn close_fileh(&self, f: &Arc<FileHInner>) -> Result<()> {
        let r = if self.link.down_reason().is_none() {
            self.watch(f.foid, None)
        } else {
            Ok(())
        };
        self.forget(f);
        f.close_local();
        r
    }

    // ---- resync ----

    fn resync(&self, at: Tid) -> Result<()> {
        self.check_usable()?;
        {
            let cur = *self.at_mu.read();
            if at < cur {
                return Err(Error::Backwards { from: cur, to: at });
            }
        }
        self.wc.wait_head(at)?;
        let r = self.resync_(at);
        if let Err(e) = &r {
            tracing::error!(%at, %e, "resync failed: closing the connection");
            self.link.down(format!("resync @{at}: {e}"));
        }
        r
    }

    fn resync_(&self, at: Tid) -> Result<()> {
        let mut w = self.at_mu.write();
        if at < *w {
            return Err(Error::Backwards { from: *w, to: at });
        }
        *w = at;
        // Local part: the pinner is blocked on at_mu meanwhile, so nothing
        // here may wait for the server.
        let files: Vec<Arc<FileHInner>> = self
            .fileh_mu
            .read()
            .values()
            .filter(|f| f.state.load(Ordering::Acquire) == OPEN)
            .cloned()
            .collect();
        for f in &files {
            f.resync_local(self.wc.blksize)?;
        }
        // Watch part, with the pinner running: `watch @at` per file.
        let _r = RwLockWriteGuard::downgrade(w);
        for f in &files {
            let _w = f.watch_mu.lock();
            if f.state.load(Ordering::Acquire) != OPEN {
                continue; // closed meanwhile
            }
            self.watch(f.foid, Some(at))?;
        }
        Ok(())
    }

    // ---- close ----

    fn close(&self) -> Result<()> {
        if self.forked() {
            // Nothing to send, nobody to join: the child has no pinner.
            self.closed.store(true, Ordering::Release);
            // try_lock: a parent thread may have held it at fork time.
            if let Some(mut p) = self.pinner.try_lock() {
                std::mem::forget(p.take());
            }
            return Ok(());
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut first_err = None;
        {
            let _at = self.at_mu.read();
            loop {
                let Some(f) = self.fileh_mu.read().values().next().cloned() else {
                    break;
                };
                let _w = f.watch_mu.lock(); // waits for an open in progress
                let was_open = {
                    let _tab = self.fileh_mu.write();
                    let open = f.state.load(Ordering::Acquire) == OPEN;
                    if open {
                        f.state.store(CLOSING, Ordering::Release);
                    }
                    open
                };
                if was_open {
                    if let Err(e) = self.close_fileh(&f) {
                        first_err.get_or_insert(e);
                    }
                } else {
                    self.forget(&f);
                    if f.state.load(Ordering::Acquire) != CLOSED {
                        f.close_local();
                    }
                }
            }
        }
        if let Err(e) = self.link.bye() {
            tracing::debug!(%e, "bye");
        }
        if let Some((h, done)) = self.pinner.lock().take() {
            match done.recv_timeout(BYE_TIMEOUT) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = h.join();
                    // nobody reads the link any more: let go of head/watch
                    // now, not when the last handle of this Conn is dropped
                    // (an open file keeps the mount busy: a server's clean
                    // unmount would fail while a closed Conn's handles live)
                    self.link.release_file();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        "server did not close the watch link after bye; leaving the pinner behind"
                    );
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Fork child handler part (see `fork.rs`): only atomics, dup2, mmap.
    pub(crate) fn after_fork(&self, devnull: RawFd) {
        self.closed.store(true, Ordering::Relaxed);
        // SAFETY: dup2 onto the link's descriptor number, which this Conn
        // owns; the open file description of head/watch is released in the
        // child, and the number stays valid for the File's later close.
        unsafe { libc::dup2(devnull, self.link.raw_fd()) };
        if let Some(tab) = self.fileh_mu.try_read_recursive() {
            for f in tab.values() {
                f.after_fork(devnull);
            }
            // Leaked on purpose (see FileHInner::after_fork).
            std::mem::forget(tab);
        }
    }
}

// ---- the pinner ----

/// Serve the link until EOF: replies to waiters, pins, control messages.
fn pinner_main(c: &Arc<ConnInner>) {
    let link = &c.link;
    let mut r = BufReader::new(link.reader());
    let mut buf = Vec::new();
    loop {
        match read_line(&mut r, &mut buf, MAX_RX_LINE) {
            Ok(true) => {}
            Ok(false) => {
                let why = if c.closed.load(Ordering::Acquire) {
                    "connection closed"
                } else {
                    "watch link: unexpected EOF"
                };
                link.down(why);
                break;
            }
            Err(e) => {
                tracing::error!(%e, "watch link: read");
                link.down(format!("watch link: read: {e}"));
                break;
            }
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            protocol_error(
                link,
                format!("non-UTF-8 line {:?}", String::from_utf8_lossy(&buf)),
            );
            continue;
        };
        let frame = match parse_frame(line) {
            Ok(f) => f,
            Err(e) => {
                protocol_error(link, e.to_string());
                continue;
            }
        };
        match frame.stream {
            0 => {
                tracing::error!(msg = frame.msg, "wcfs server");
                link.down(format!("server: {}", frame.msg));
            }
            s if s % 2 == 1 => match parse_reply(frame.msg) {
                Some(reply) => {
                    if !link.deliver(s, reply) {
                        protocol_error(link, format!("{s}: reply on unexpected stream"));
                    }
                }
                None => protocol_error(link, format!("{s}: bad reply {:?}", frame.msg)),
            },
            s => {
                let res = parse_pin(frame.msg)
                    .map_err(|e| e.to_string())
                    .and_then(|pin| handle_pin(c, pin));
                match res {
                    Ok(()) => {
                        if let Err(e) = link.send(s, ACK) {
                            tracing::error!(%e, "pinner: send ack");
                        }
                    }
                    Err(e) => {
                        tracing::error!(stream = s, msg = frame.msg, err = %e, "pinner: CRITICAL: pin failed; the connection goes down");
                        // Down first: whoever sees the nak sees the Conn down.
                        link.down(format!("pinner: {e}"));
                        let _ = link.send(s, &format!("nak: {e}"));
                    }
                }
            }
        }
    }
}

fn protocol_error(link: &WatchLink, what: String) {
    tracing::error!(%what, "watch link: protocol error");
    link.down(format!("protocol error: {what}"));
}

/// Handle one pin (wcfs-protocol.md §6).
fn handle_pin(c: &ConnInner, pin: Pin) -> std::result::Result<(), String> {
    let _span =
        tracing::debug_span!("pin", oid = %pin.oid, blk = pin.blk, rev = ?pin.rev).entered();
    // Recursive: a writer queued on at_mu (resync) must not block us while
    // a reader (open, resync's watch part) waits for the server, which
    // waits for this pin.
    let _at = c.at_mu.read_recursive();
    let f = c.fileh_mu.read_recursive().get(&pin.oid).cloned();
    let Some(f) = f else {
        return Err(format!("unexpected pin: f<{}> not watched", pin.oid));
    };
    f.pin(pin.blk, pin.rev)
}

/// A view of the database as of one state: opened files are watched at
/// [`Conn::at`] and their mappings show data as of it.
///
/// Dropping it closes it (see [`Conn::close`]).
pub struct Conn {
    inner: Arc<ConnInner>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("mnt", &self.inner.wc.mnt)
            .field("at", &*self.inner.at_mu.read_recursive())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// The view.
    pub fn at(&self) -> Tid {
        *self.inner.at_mu.read_recursive()
    }

    /// Open file `foid` (one shared [`FileH`] per oid): stat
    /// `head/bigfile/<foid>` and watch it at [`Conn::at`].
    pub fn open(&self, foid: Oid) -> Result<FileH> {
        self.inner.open(foid)
    }

    /// Move the view to `at` (not backwards): wait for `head/at >= at`,
    /// re-stat the opened files and map their grown parts, then re-watch
    /// them at `at`. Any failure takes the connection down.
    pub fn resync(&self, at: Tid) -> Result<()> {
        self.inner.resync(at)
    }

    /// Why the connection is unusable, if it is.
    pub fn check(&self) -> Result<()> {
        self.inner.check_usable()
    }

    /// Close: stop watching and close every file (their mappings become
    /// PROT_NONE), send `bye`, wait for the server to close the link, stop
    /// the pinner. Idempotent; in a forked child it only marks the Conn
    /// closed.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Err(e) = self.inner.close() {
            tracing::warn!(%e, "close connection");
        }
    }
}

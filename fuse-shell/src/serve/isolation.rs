//! The isolation protocol's meaning on the server (spec §5, §7): watches
//! and their views, lazy pins on READ, watch setups, what a failed pin
//! does. The links, their lines and the kill policy are [`super::link`].

use super::errno::FsError;
use super::fs::{lock, Wcfs};
use super::head::tid_time;
use super::kill;
use super::link::{self, DownWhy, ReadReply, WatchLink};
use super::pin::{PinEnd, PinWait};
use super::stats::Stats;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use zodb::zbigfile::{Block, ZBigFile};
use zodb::{Oid, Tid};

/// A watch: one link's view of one head/ file as of `at` (spec §5).
pub struct Watch {
    pub link: Weak<WatchLink>,
    pub foid: Oid,
    /// The view and the pins sent for it. Held only to read or change
    /// them and to queue pins (which never blocks): never across an
    /// engine query, storage I/O or a wait for the client.
    pub st: Mutex<WatchState>,
}

/// What [`Watch::st`] guards.
pub struct WatchState {
    /// The view (`Watch.at`). Moved forward only by setups (serialized per
    /// link and file by the link's setup lock).
    pub at: Tid,
    /// Bumped with every move of `at`: a READ that decided its pins for
    /// one `at` sends them only if the generation is still the one it
    /// read, else it decides again (so the last pin queued for a block is
    /// always for the current `at`).
    pub gen: u64,
    /// Blocks pinned (or being pinned) on the client: blk -> (rev, the
    /// pin). A block not here shows head data on the client.
    pub pinned: HashMap<i64, (Tid, Arc<PinWait>)>,
    /// The watch was removed (`watch <oid> -`, or its link went down):
    /// nothing more is queued for it. Set before the removal's `ok` is
    /// sent, so no pin for it follows that `ok` on the link (a client
    /// forgets the file at `ok` and would fail a later pin; found as a
    /// well-behaved wcfs-stress reader killed with SIGBUS).
    pub removed: bool,
}

impl Watch {
    pub fn at(&self) -> Tid {
        lock(&self.st).at
    }

    /// `(at, generation)`.
    pub fn view(&self) -> (Tid, u64) {
        let st = lock(&self.st);
        (st.at, st.gen)
    }

    /// Decide this watch's pins for its current view with `decide(at)`
    /// (blocks and the revisions to pin them to), then queue them if the
    /// view did not move meanwhile (a setup moving it bumps the
    /// generation), else decide again: so the last pin queued for a block
    /// is always for the current `at`. `decide` runs with no lock of the
    /// watch held, `before_queue` (a test hook) right before the queueing.
    /// Returns the pins to wait for.
    pub fn pin_for_view(
        self: &Arc<Self>,
        stats: &Stats,
        mut decide: impl FnMut(Tid) -> Vec<(i64, Tid)>,
        before_queue: impl Fn(),
    ) -> Vec<PinJob> {
        loop {
            let (at, gen) = self.view();
            let want = decide(at);
            before_queue();
            let mut st = lock(&self.st);
            if st.gen != gen {
                continue;
            }
            return want
                .into_iter()
                .filter_map(|(blk, rev)| self.pin_locked(&mut st, blk, Some(rev), stats))
                .collect();
        }
    }

    /// Ask the client to show block `blk` as of `rev` (`None`: head), with
    /// `st` held. Returns the pin to wait for, or `None` if nothing is to
    /// be sent (the link is gone, or the block is not pinned and `rev` is
    /// head). A pin to the same rev in force or in flight is shared, not
    /// re-sent.
    pub fn pin_locked(
        self: &Arc<Self>,
        st: &mut WatchState,
        blk: i64,
        rev: Option<Tid>,
        stats: &Stats,
    ) -> Option<PinJob> {
        if st.removed {
            return None;
        }
        let link = self.link.upgrade()?;
        let job = |pw: &Arc<PinWait>| PinJob {
            w: self.clone(),
            link: link.clone(),
            blk,
            rev,
            pw: pw.clone(),
        };
        match (rev, st.pinned.get(&blk)) {
            (Some(r), Some((pr, pw))) if *pr == r && !pw.failed() => return Some(job(pw)),
            (None, None) => return None,
            _ => {}
        }
        let msg = wire::Pin {
            oid: self.foid,
            blk,
            rev,
        }
        .to_string();
        let pw = link.send_pin(&msg);
        stats.pin.fetch_add(1, Ordering::Relaxed);
        match rev {
            Some(r) => st.pinned.insert(blk, (r, pw.clone())),
            None => st.pinned.remove(&blk),
        };
        Some(job(&pw))
    }
}

/// A pin being waited for. It holds its link: a link closed meanwhile
/// (without `bye`) leaves the registry, but its client must still be dealt
/// with when the pin fails (spec §7).
pub struct PinJob {
    pub w: Arc<Watch>,
    pub link: Arc<WatchLink>,
    pub blk: i64,
    pub rev: Option<Tid>,
    pub pw: Arc<PinWait>,
}

/// The isolation state of the filesystem.
#[derive(Default)]
pub struct Isolation {
    /// The open `head/watch` links.
    pub links: link::Registry,
    /// Every watch by file (`BigFile.watchTab`): READs of head/ look here
    /// for the watches to pin. Held briefly, never while waiting or
    /// querying the engine; before `Watch::st` in the lock order.
    pub watchers: RwLock<HashMap<Oid, Vec<Arc<Watch>>>>,
    /// The watches of each link: link id -> foid -> watch (`byfileMu` of
    /// the spec's server locking). Changed by setups, dropped when the
    /// link goes down. Held briefly, never with `watchers`.
    pub by_link: Mutex<HashMap<u64, HashMap<Oid, Arc<Watch>>>>,
    /// Notified whenever head/at moves or a link goes down, for setups
    /// waiting for head/at to reach their at.
    pub head_cv: (Mutex<()>, Condvar),
}

impl Wcfs {
    pub fn pintimeout(&self) -> Duration {
        Duration::from_secs_f64(self.pintimeout.max(0.001))
    }

    /// Before `blocks` of `zf` (as of head `head`) reach the kernel: queue
    /// the pins of every watch of the file whose view is older than the
    /// block's revision (spec §5 "lazy pins"), and return them for the
    /// caller to wait for once it has released ΔFtail; `None` if the file
    /// has no watch. Called with ΔFtail held for reading and at `head`.
    pub fn pin_watchers(
        &self,
        zf: &ZBigFile,
        head: Tid,
        blocks: &[Arc<Block>],
    ) -> Option<Vec<PinJob>> {
        let ws = match self
            .iso
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&zf.oid)
        {
            Some(ws) if !ws.is_empty() => ws.clone(),
            _ => return None,
        };
        let mut jobs: Vec<PinJob> = Vec::new();
        for w in &ws {
            let decide = |at: Tid| {
                let mut want: Vec<(i64, Tid)> = Vec::new();
                for b in blocks {
                    if b.rev_max <= at {
                        continue; // the cheap upper bound says: unchanged since at
                    }
                    let hint = Some(b.zblk.unwrap_or(Oid::INVALID));
                    let r =
                        self.ft
                            .blk_rev_at_hint(zf.oid, b.blk, head, hint)
                            .and_then(|(rh, _)| {
                                if rh <= at {
                                    Ok(None)
                                } else {
                                    self.ft.blk_rev_at(zf.oid, b.blk, at).map(|(r, _)| Some(r))
                                }
                            });
                    match r {
                        Ok(None) => {}
                        Ok(Some(rev)) => want.push((b.blk, rev)),
                        Err(e) => tracing::error!(
                            oid = %zf.oid, blk = b.blk,
                            "pin for a watch @{at}: BlkRevAt: {e}: this watch is not pinned"
                        ),
                    }
                }
                want
            };
            jobs.extend(w.pin_for_view(&self.stats, decide, || {
                #[cfg(any(test, feature = "testing"))]
                self.hook("read-pin");
            }));
        }
        Some(jobs)
    }

    /// Wait for all `jobs` (sent in parallel) until the pin timeout; deal
    /// with each that failed. True if all were acked.
    pub fn wait_pins(&self, jobs: Vec<PinJob>, requester: u32) -> bool {
        let deadline = Instant::now() + self.pintimeout();
        let mut ok = true;
        for j in jobs {
            match j.pw.wait(deadline) {
                Some(PinEnd::Ack) => {}
                end => {
                    ok = false;
                    self.pin_failed(&j, end, requester);
                }
            }
        }
        ok
    }

    /// Wait for each of `jobs` until its pin timeout (counted from when it
    /// was sent) and deal with each that failed; for pins nobody else
    /// waits for (early pins a lane stopped waiting for).
    pub fn settle_pins(&self, jobs: Vec<PinJob>) {
        let pt = self.pintimeout();
        for j in jobs {
            match j.pw.wait(j.pw.sent + pt) {
                Some(PinEnd::Ack) => {}
                end => self.pin_failed(&j, end, 0),
            }
        }
    }

    /// A pin failed (`end`: its reply, `None` on timeout): shut the link
    /// down with `0 fatal: ...`, drop its watches, kill the client unless it
    /// is leaving (spec §7), and return only once it is dead, so that the
    /// data that needed the pin never reaches a page cache the faulty
    /// client still maps. Waiting stops early when `requester` (the thread
    /// the READ is for; 0 = none) is dying: it may be the client itself,
    /// which cannot die while its READ waits for us.
    pub fn pin_failed(&self, j: &PinJob, end: Option<PinEnd>, requester: u32) {
        let (w, link, blk) = (&j.w, &j.link, j.blk);
        let why = match &end {
            // the original's texts (its sendReq's context and Go's)
            None => "sendReq: waiting for reply: context deadline exceeded".to_owned(),
            Some(PinEnd::Nak(m)) => format!(
                "expect {}; got {}",
                wire::go_quote(wire::ACK),
                wire::go_quote(m)
            ),
            Some(PinEnd::LinkDown) => "link is down".to_owned(),
            Some(PinEnd::Ack) => return,
        };
        let rev = j.rev.map_or("head".to_owned(), |r| r.to_string());
        if end != Some(PinEnd::LinkDown) {
            let msg = format!("fatal: pin #{blk} @{rev}: {why}");
            tracing::warn!(link = link.id, pid = link.client.pid, oid = %w.foid, "head/watch: {msg}");
            link.shutdown(Some(&msg), DownWhy::PinFailed);
        }
        self.drop_watches(link);
        let pt = self.pintimeout();
        let stop = || requester != 0 && kill::thread_dying(requester);
        if !link.claim_kill() {
            // another waiter deals with the client: wait for its verdict
            if matches!(
                link.down_why(),
                Some(DownWhy::PinFailed | DownWhy::Protocol | DownWhy::Closed)
            ) {
                link.wait_kill(pt + Duration::from_secs(3), &stop);
            }
            return;
        }
        if kill::bad_pin_kill(link, end, pt, &stop) {
            self.stats.pinkill.fetch_add(1, Ordering::Relaxed);
        }
        link.kill_finished();
    }

    /// Remove all watches of `link` (it is down).
    pub fn drop_watches(&self, link: &Arc<WatchLink>) {
        let ws: Vec<Arc<Watch>> = lock(&self.iso.by_link)
            .remove(&link.id)
            .map(|m| m.into_values().collect())
            .unwrap_or_default();
        if ws.is_empty() {
            return;
        }
        for w in &ws {
            lock(&w.st).removed = true;
        }
        let mut all = self.iso.watchers.write().unwrap_or_else(|p| p.into_inner());
        for w in ws {
            if let Some(v) = all.get_mut(&w.foid) {
                v.retain(|x| !Arc::ptr_eq(x, &w));
                if v.is_empty() {
                    all.remove(&w.foid);
                }
            }
        }
    }

    /// The oldest view of any watch (history must be kept for it).
    pub fn min_watch_at(&self) -> Option<Tid> {
        let all = self.iso.watchers.read().unwrap_or_else(|p| p.into_inner());
        all.values().flatten().map(|w| w.at()).min()
    }

    /// OPEN of `head/watch` by thread `tid`: a new link, its id is the
    /// file handle. Fails if the opener is gone already.
    pub fn watch_open(&self, tid: u32) -> Result<u64, FsError> {
        let l = self
            .iso
            .links
            .open(tid)
            .ok_or(FsError::Errno(fuser::Errno::ESRCH))?;
        tracing::debug!(link = l.id, pid = l.client.pid, "head/watch: open");
        Ok(l.id)
    }

    /// READ of `head/watch` link `fh` by thread `tid`: answered when a
    /// line is there (at once if queued), EOF once the link is down.
    pub fn watch_read(&self, fh: u64, size: u32, tid: u32, reply: ReadReply) {
        match self.iso.links.get(fh) {
            Some(l) => l.read(size, tid, reply),
            None => reply(Err(fuser::Errno::EBADF)),
        }
    }

    /// WRITE to `head/watch` link `fh`: replies are taken at once; watch
    /// requests run in their own threads (they wait for head/at and for
    /// pins). Never blocks.
    pub fn watch_write(self: &Arc<Self>, fh: u64, data: &[u8]) -> Result<(), FsError> {
        let l = self
            .iso
            .links
            .get(fh)
            .ok_or(FsError::Errno(fuser::Errno::EBADF))?;
        for i in l.input(data) {
            match i {
                link::Input::Down => {
                    self.drop_watches(&l);
                    self.wake_setups();
                }
                link::Input::Watch { stream, oid, at } => {
                    let (fs, l2) = (self.clone(), l.clone());
                    l.setups.fetch_add(1, Ordering::Relaxed);
                    let r =
                        std::thread::Builder::new()
                            .name("wcfs-watch".into())
                            .spawn(move || {
                                fs.setup_watch(&l2, stream, oid, at);
                                l2.setups.fetch_sub(1, Ordering::Relaxed);
                            });
                    if let Err(e) = r {
                        l.setups.fetch_sub(1, Ordering::Relaxed);
                        tracing::error!("start a watch setup: {e}");
                        l.send(stream, &format!("error {e}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// RELEASE of `head/watch` link `fh`: the link goes down, its watches
    /// go, pins in flight to it end (without a kill).
    pub fn watch_release(&self, fh: u64) {
        if let Some(l) = self.iso.links.remove(fh) {
            l.shutdown(None, DownWhy::Closed);
            self.drop_watches(&l);
            self.wake_setups();
            tracing::debug!(link = l.id, "head/watch: closed");
        }
    }

    pub fn wake_setups(&self) {
        let _g = lock(&self.iso.head_cv.0);
        self.iso.head_cv.1.notify_all();
    }

    /// File `foid` changed as a whole at `tid` (re-created, blksize or
    /// blktab replaced): block numbers of views before `tid` no longer
    /// mean the same bytes, so its watches cannot be kept isolated by pins.
    /// Their links are shut down with `0 fatal: ...` (no kill: the client
    /// did nothing wrong; it sees its link end).
    pub fn epoch_watchers(&self, foid: Oid, tid: Tid) {
        let ws = self
            .iso
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&foid)
            .cloned()
            .unwrap_or_default();
        for w in ws {
            if let Some(l) = w.link.upgrade() {
                let msg = format!("fatal: file {foid}: epoch @{tid}: the watch cannot be kept");
                tracing::warn!(link = l.id, pid = l.client.pid, "head/watch: {msg}");
                l.shutdown(Some(&msg), DownWhy::Epoch);
                self.drop_watches(&l);
            }
        }
    }

    /// `watch <oid> @<at>` / `watch <oid> -` on `stream` of `link`:
    /// set the watch up or move it (`at_prev → at`, pins and unpins), or
    /// remove it; reply `ok` or `error ...` (spec §5). Runs on its own
    /// thread; holds ΔFtail for reading while it registers and decides its
    /// pins, and nothing but its link's per-file setup lock while it waits
    /// for head/at and for the acks.
    pub fn setup_watch(&self, link: &Arc<WatchLink>, stream: u64, foid: Oid, at: Option<Tid>) {
        let setup = link.setup_lock(foid);
        let _setup = lock(&setup);
        let at_text = at.map_or_else(|| Tid(u64::MAX).to_string(), |t| t.to_string());
        let fail = |why: &str| {
            link.send(
                stream,
                &format!("error setup watch f<{foid}> @{at_text}: {why}"),
            )
        };
        let known = || {
            self.head
                .view
                .with(|v| v.files.get(&foid).and_then(|hf| hf.zfile.clone()))
        };
        const UNKNOWN: &str = "file not yet known to wcfs or is not a ZBigFile";
        let Some(at) = at else {
            // removal
            if known().is_none() {
                return fail(UNKNOWN);
            }
            let w = lock(&self.iso.by_link)
                .get_mut(&link.id)
                .and_then(|m| m.remove(&foid));
            if let Some(w) = w {
                lock(&w.st).removed = true;
                let mut all = self.iso.watchers.write().unwrap_or_else(|p| p.into_inner());
                if let Some(v) = all.get_mut(&foid) {
                    v.retain(|x| !Arc::ptr_eq(x, &w));
                    if v.is_empty() {
                        all.remove(&foid);
                    }
                }
            }
            return link.send(stream, "ok");
        };
        if known().is_none() {
            return fail(UNKNOWN);
        }
        // wait for head/at ≥ at (published: its invalidations are done)
        {
            let mut g = lock(&self.iso.head_cv.0);
            while self.head_at() < at {
                if link.is_down() {
                    return;
                }
                g = self
                    .iso
                    .head_cv
                    .1
                    .wait_timeout(g, Duration::from_millis(200))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        let jobs = match self.setup_pins(link, foid, at) {
            Ok(Some(jobs)) => jobs,
            Ok(None) => return, // the link went down
            Err(why) => return fail(&why),
        };
        if self.wait_pins(jobs, 0) {
            link.send(stream, "ok");
        }
    }

    /// The part of a setup done with ΔFtail held for reading (so at one
    /// ΔFtail head, which is ≥ head/at ≥ `at`): checks, registration of
    /// `at`, and the pins and unpins that make the client's view `at`,
    /// queued. Returns them to wait for; `None` if the link went down;
    /// `Err` with the text of the `error` reply.
    pub fn setup_pins(
        &self,
        link: &Arc<WatchLink>,
        foid: Oid,
        at: Tid,
    ) -> Result<Option<Vec<PinJob>>, String> {
        let _g = self.ft_read();
        let head = self.ft.head();
        if self
            .head
            .view
            .with(|v| v.files.get(&foid).is_none_or(|hf| hf.zfile.is_none()))
        {
            return Err("file not yet known to wcfs or is not a ZBigFile".into());
        }
        if at < self.ft.tail() {
            let dt = tid_time(head)
                .duration_since(tid_time(at))
                .unwrap_or_default();
            return Err(format!(
                "too far away back from head/at (@{head}); δt = {}",
                wire::go_duration(dt)
            ));
        }
        let existing = lock(&self.iso.by_link)
            .get(&link.id)
            .and_then(|m| m.get(&foid).cloned());
        if let Some(w) = &existing {
            if at < w.at() {
                return Err("going back in history is forbidden".into());
            }
        }
        let opts = engine::ftail::SliceOpts {
            only_explicitly_tracked: true,
        };
        // epochs depend on the file's history only, not on what is tracked
        let c = self
            .ft
            .slice_by_file_rev_ex(foid, at, head, opts)
            .map_err(|e| e.to_string())?;
        if let Some(e) = c.iter().find(|d| d.epoch) {
            return Err(format!(
                "file epoch detected @{} in between (at,head=@{head}]",
                e.rev
            ));
        }
        // Register the new at *before* asking which tracked blocks changed
        // in (at, head]: a READ Tracks its blocks and then looks for the
        // registered watches. Each block a READ Tracks is either Tracked
        // before the slice below (so we pin it) or pinned by that READ for
        // this at. (`watchers` and ΔFtail's track bookkeeping are both
        // mutexes: of a READ's "track, then look up watches" and our
        // "register, then slice", one sees the other's first step.) Asking
        // first left a window where a READ Tracked a block for the first
        // time and did not know this at: that block reached the page cache
        // unpinned for this watch (found by wcfs-stress: a readahead READ
        // of 30 blocks right after an epoch, when no block of the file was
        // tracked).
        #[cfg(any(test, feature = "testing"))]
        self.hook("register");
        let (w, gen) = match existing {
            Some(w) => {
                let gen = {
                    let mut st = lock(&w.st);
                    st.at = at;
                    st.gen += 1;
                    st.gen
                };
                (w, gen)
            }
            None => {
                let w = Arc::new(Watch {
                    link: Arc::downgrade(link),
                    foid,
                    st: Mutex::new(WatchState {
                        at,
                        gen: 0,
                        pinned: HashMap::new(),
                        removed: false,
                    }),
                });
                if link.is_down() {
                    return Ok(None);
                }
                lock(&self.iso.by_link)
                    .entry(link.id)
                    .or_default()
                    .insert(foid, w.clone());
                self.iso
                    .watchers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(foid)
                    .or_default()
                    .push(w.clone());
                (w, 0)
            }
        };
        let changed = self
            .ft
            .slice_by_file_rev_ex(foid, at, head, opts)
            .map_err(|e| e.to_string())?;
        let blocks: std::collections::BTreeSet<i64> = changed
            .iter()
            .flat_map(|d| d.blocks.iter().copied())
            .collect();
        let mut want: Vec<(i64, Option<Tid>)> = Vec::new();
        for &blk in &blocks {
            let (rev, _) = self
                .ft
                .blk_rev_at(foid, blk, at)
                .map_err(|e| format!("pin #{blk}: {e}"))?;
            want.push((blk, Some(rev)));
        }
        #[cfg(any(test, feature = "testing"))]
        self.hook("unpin");
        // Pinned blocks the slice did not name: unpin those unchanged in
        // (at, head]. Not named is not enough: a READ may have Tracked a
        // block after the slice and pinned it for this at (it sees the
        // registered at); so each is asked about on its own.
        let unpin: Vec<i64> = lock(&w.st)
            .pinned
            .keys()
            .copied()
            .filter(|b| !blocks.contains(b))
            .collect();
        for blk in unpin {
            let (rh, _) = self
                .ft
                .blk_rev_at(foid, blk, head)
                .map_err(|e| format!("pin #{blk}: {e}"))?;
            let rev = if rh <= at {
                None
            } else {
                let (r, _) = self
                    .ft
                    .blk_rev_at(foid, blk, at)
                    .map_err(|e| format!("pin #{blk}: {e}"))?;
                Some(r)
            };
            want.push((blk, rev));
        }
        let mut jobs: Vec<PinJob> = Vec::new();
        let mut st = lock(&w.st);
        // setups of one watch are serialized by the setup lock: nobody
        // moved it since we registered
        debug_assert_eq!(st.gen, gen);
        for (blk, rev) in want {
            jobs.extend(w.pin_locked(&mut st, blk, rev, &self.stats));
        }
        Ok(Some(jobs))
    }
}

//! The head: the database state head/ files are served at, published as
//! RCU snapshots ([`HeadView`]), head/at as clients see it, and commit
//! processing (ΔFtail update, files refreshed, view published; the
//! invalidations go to [`super::inval`], which moves head/at). See the
//! module docs of [`super`] for the protocol and its invariants.

use super::errno::{lookup_error, FsError};
use super::fs::{db_err, lock, Inval, Wcfs};
use super::isolation::PinJob;
use super::keep::Keep;
use super::link::{DownWhy, WatchLink};
use super::nodes::{Attr, Kind, Node, HEAD_BIGFILE};
use super::read::READ_RETRIES;
use super::rev::TRIM_EVERY;
use rcu::RcuCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};
use zodb::btree::{self, Family};
use zodb::zbigfile::ZBigFile;
use zodb::{Oid, Storage, Tid};

/// How far behind head ΔFtail keeps history.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(60);

/// What processing a commit leaves to its caller.
pub struct Commit {
    /// The kernel cache invalidations to send.
    pub inval: Vec<Inval>,
    /// Per inode, the early pins its invalidations must wait for.
    pub early: Vec<(u64, Vec<PinJob>)>,
}

/// A file of `head/bigfile/` as of the head view.
#[derive(Debug, Clone)]
pub struct HeadFile {
    pub ino: u64,
    /// `None` once the object stopped being a ZBigFile.
    pub zfile: Option<ZBigFile>,
    pub size: u64,
    /// The largest size put into the kernel's inode by a commit, shared by
    /// every view's copy of the file: getattr never tells less (see
    /// `handle_commit`, "A file that grew"). SeqCst: stored by the commit
    /// thread before its push (a write(2) to /dev/fuse), loaded by getattr;
    /// a getattr that loads the old value was received, so its request
    /// made, before that push.
    pub kernel_size: Arc<AtomicU64>,
    /// The last revision known to have touched it (mtime).
    pub rev: Tid,
}

/// The head view: the database state head/ files are served at and the
/// files as of it. Immutable: each processed commit publishes a new one
/// ([`Wcfs::head`]); lookups publish one with a file added.
#[derive(Debug, Clone)]
pub struct HeadView {
    pub at: Tid,
    /// head/ files looked up so far: oid -> its state at `at`.
    pub files: Arc<HashMap<Oid, HeadFile>>,
}

/// The head's state.
pub struct Head {
    /// The head view, an RCU snapshot: READs, getattr, open and lookups
    /// load it without any lock. Published by the commit thread after
    /// ΔFtail's update and the files' refresh; updated by lookups (a file
    /// added) only while ΔFtail is at the view's `at`.
    pub view: RcuCell<HeadView>,
    /// Notified whenever a new head view is published, for READs and
    /// lookups that found ΔFtail ahead of the view they loaded.
    pub view_cv: (Mutex<()>, Condvar),
    /// head/at as clients see it: set after the commit's invalidations are
    /// done (Release), read by `head/at` readers (Acquire).
    pub at: AtomicU64,
    /// Odd while the commit thread puts grown sizes into the kernel's
    /// inodes (a seqlock over those pushes: see `handle_commit`, "A file
    /// that grew"). Attribute replies of head/ files are computed between
    /// two equal even loads ([`Wcfs::head_attr_stable`]), so that none is
    /// computed while a push is in progress. SeqCst, as `kernel_size`.
    pub size_seq: AtomicU64,
}

impl Head {
    /// The head at `at0`, no file known.
    pub fn new(at0: Tid) -> Head {
        Head {
            view: RcuCell::new(HeadView {
                at: at0,
                files: Arc::new(HashMap::new()),
            }),
            view_cv: (Mutex::new(()), Condvar::new()),
            at: AtomicU64::new(at0.0),
            size_seq: AtomicU64::new(0),
        }
    }
}

pub fn tid_time(t: Tid) -> SystemTime {
    t.to_time().unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Wcfs {
    /// head/at as clients see it.
    pub fn head_at(&self) -> Tid {
        Tid(self.head.at.load(Ordering::Acquire))
    }

    /// Wait until the head view is no longer at `at` (a commit moved
    /// ΔFtail past it and is about to publish the next view).
    pub fn wait_view_past(&self, at: Tid) {
        let mut g = lock(&self.head.view_cv.0);
        while self.head.view.with(|v| v.at) == at {
            g = self
                .head
                .view_cv
                .1
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// ΔFtail held for reading, once the view has caught up with it (a
    /// commit publishes its view after it moved ΔFtail, without the lock):
    /// its guard. For the fallbacks of READs and lookups
    /// that commits kept overtaking: with it, their next attempt cannot
    /// fail (a commit waits for them meanwhile, bounded by storage I/O).
    pub fn ft_read_at_view(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        let g = self.ft_read();
        let h = self.ft.head();
        loop {
            let at = self.head.view.with(|v| v.at);
            if at >= h {
                return g;
            }
            self.wait_view_past(at);
        }
    }

    /// Publish head view `v` and wake those waiting for it.
    pub fn publish_view(&self, f: impl FnOnce(&HeadView) -> HeadView) {
        self.head.view.update(f);
        let _g = lock(&self.head.view_cv.0);
        self.head.view_cv.1.notify_all();
    }

    pub fn lookup_head_file(&self, name: &str) -> Result<Attr, FsError> {
        let oid = Self::parse_oid("head/bigfile", name)?;
        for attempt in 0.. {
            if let Some(a) = self.known_head_file(oid)? {
                return Ok(a);
            }
            // After a few commits overtook our loads, load with ΔFtail held
            // for reading, as READs do (`read_for`), so that a lookup ends.
            let held = (attempt >= READ_RETRIES).then(|| self.ft_read_at_view());
            let at = self.head.view.with(|v| v.at);
            // load it at the view's head (storage I/O, no lock held) ...
            let zf = ZBigFile::load(&*self.stor, oid, at).map_err(|e| lookup_error(oid, e))?;
            let size = zf
                .size(&*self.stor, at)
                .map_err(|e| db_err(oid, format!("@{at}: size"), e))?;
            let l = btree::lookup(&*self.stor, Family::LO, zf.blktab, i64::MAX, at)
                .map_err(|e| db_err(oid, format!("@{at}: blktab lookup of the last block"), e))?;
            // ... then track it and add it to the view, both at that head:
            // ΔFtail cannot move while we hold it for reading, and a view
            // at `at` with ΔFtail at `at` is the current one (a commit
            // publishes its view only after moving ΔFtail).
            let g = held.unwrap_or_else(|| self.ft_read());
            if self.ft.head() != at {
                drop(g);
                self.wait_view_past(at);
                continue;
            }
            self.ft
                .track(&zf, -1, &l.path, l.keycov, None)
                .map_err(|e| db_err(oid, "track", e))?;
            let ino = self
                .nodes
                .child(HEAD_BIGFILE, &oid.to_string(), || Node::HeadFile(oid));
            let hf = HeadFile {
                ino,
                rev: zf.serial,
                zfile: Some(zf),
                size,
                kernel_size: Arc::new(AtomicU64::new(0)),
            };
            let added = self.head.view.update_with(|v| {
                if v.at != at || v.files.contains_key(&oid) {
                    return (v.clone(), false); // another lookup was first
                }
                let mut files = (*v.files).clone();
                files.insert(oid, hf);
                (
                    HeadView {
                        at,
                        files: Arc::new(files),
                    },
                    true,
                )
            });
            drop(g);
            if added {
                self.stats.bigfile.fetch_add(1, Ordering::Relaxed);
            }
        }
        unreachable!("the attempts under ft_rw end")
    }

    /// `f` (which computes a head/ file's attributes from the view) run
    /// with no size push in progress: again if one started or ended
    /// meanwhile (see `handle_commit`, "A file that grew"). A push takes
    /// microseconds (a notification to the kernel for a page past the
    /// file's old end, which no READ can hold), so this spins briefly.
    pub fn head_attr_stable<T>(&self, mut f: impl FnMut() -> T) -> T {
        let mut spins = 0u32;
        loop {
            let s = self.head.size_seq.load(Ordering::SeqCst);
            if s & 1 == 0 {
                let r = f();
                if self.head.size_seq.load(Ordering::SeqCst) == s {
                    return r;
                }
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// The attributes of head/ file `oid` if it was looked up before
    /// (EINVAL if it is no ZBigFile any more). Takes no lock.
    pub fn known_head_file(&self, oid: Oid) -> Result<Option<Attr>, FsError> {
        self.head_attr_stable(|| self.known_head_file_now(oid))
    }

    fn known_head_file_now(&self, oid: Oid) -> Result<Option<Attr>, FsError> {
        self.head.view.with(|v| {
            let Some(hf) = v.files.get(&oid) else {
                return Ok(None);
            };
            if hf.zfile.is_none() {
                return Err(FsError::Inval(format!(
                    "head/bigfile/{oid}: not a ZBigFile @{}",
                    hf.rev
                )));
            }
            Ok(Some(self.head_file_attr(hf)))
        })
    }

    /// Whether a lookup of `name` in `parent` may do storage I/O (a head/
    /// file not looked up before: it is loaded at head).
    pub fn lookup_may_block(&self, parent: u64, name: &str) -> bool {
        parent == HEAD_BIGFILE
            && name
                .parse::<Oid>()
                .is_ok_and(|oid| !self.head.view.with(|v| v.files.contains_key(&oid)))
    }

    /// Track the blktab path to the last block, so that ΔFtail reports
    /// blocks added past the end (the file's size) even when no block near
    /// the end was read. Called by the commit thread (ΔFtail's only writer,
    /// so no writer runs meanwhile).
    pub fn track_size(&self, zf: &ZBigFile, at: Tid) -> Result<(), FsError> {
        let l = btree::lookup(&*self.stor, Family::LO, zf.blktab, i64::MAX, at)
            .map_err(|e| db_err(zf.oid, format!("@{at}: blktab lookup of the last block"), e))?;
        self.ft
            .track(zf, -1, &l.path, l.keycov, None)
            .map_err(|e| db_err(zf.oid, "track", e))
    }

    pub fn head_file_attr(&self, hf: &HeadFile) -> Attr {
        Attr {
            ino: hf.ino,
            kind: Kind::File,
            size: hf.size.max(hf.kernel_size.load(Ordering::SeqCst)),
            perm: 0o444,
            mtime: tid_time(hf.rev),
            blksize: hf.zfile.as_ref().map_or(4096, |z| z.blksize as u32),
            volatile: true,
        }
    }

    /// Process transaction `tid` (which stored `oids`): prepare ΔFtail's
    /// update beside READs (its storage reads), apply it with ΔFtail's lock
    /// held for writing (in memory: READs' Track sections wait only for
    /// that; their loads and pin waits never wait), refresh
    /// the head files it touched (storage I/O, no lock), publish the new
    /// head view, forget old history. Returns the kernel cache
    /// invalidations to send and the early pins queued for them
    /// ([`super::early`]): the caller sends each file's invalidations once
    /// its early pins are answered, then calls [`publish`](Self::publish).
    pub fn handle_commit(&self, tid: Tid, oids: &[Oid]) -> anyhow::Result<Commit> {
        // ΔFtail's storage reads, beside READs and setups (they keep seeing
        // the old head; Tracks they make meanwhile are logged)
        let prepared = self.ft.prepare_update(tid, oids)?;
        let (df, view) = {
            let _w = self.ft_rw.write().unwrap_or_else(|p| p.into_inner());
            let df = self.ft.apply_update(prepared)?;
            if let Some(t) = tid.to_time().and_then(|t| t.checked_sub(HISTORY_WINDOW)) {
                // keep what every watch still needs
                let cut = match self.min_watch_at() {
                    Some(m) => Tid::from_time(t).min(m),
                    None => Tid::from_time(t),
                };
                if cut > self.ft.tail() && cut < tid {
                    self.ft.forget_past(cut)?;
                }
            }
            // No lookup can add a file from here until the view below is
            // published: lookups add only while ΔFtail is at the view's at.
            (df, self.head.view.load())
        };
        let mut inval = Vec::new();
        let mut nblk = 0;
        let mut refreshed: Vec<(Oid, HeadFile)> = Vec::new();
        // (file, inode, its invalidated blocks) for the early pins
        let mut changed: Vec<(Oid, u64, Vec<i64>)> = Vec::new();
        for (foid, d) in &df.by_file {
            let Some(hf) = view.files.get(foid) else {
                continue;
            };
            let mut hf = hf.clone();
            hf.rev = tid;
            let ino = hf.ino;
            if d.epoch {
                self.epoch_watchers(*foid, tid);
                self.keeper.forget_file(*foid);
                inval.push(Inval {
                    ino,
                    off: 0,
                    len: 0,
                    keep: None,
                });
                self.reload_head_file(*foid, &mut hf, tid);
                refreshed.push((*foid, hf));
                continue;
            }
            let Some(zf) = hf.zfile.clone() else {
                refreshed.push((*foid, hf));
                continue;
            };
            let bs = zf.blksize;
            let mut blks = Vec::new();
            for &b in &d.blocks {
                let o = (b as u64).saturating_mul(bs);
                if b >= 0 && o < hf.size {
                    // its old data, for @rev (serve::keep), if a READ
                    // recorded what it served
                    let keep = self.keeper.has(*foid, b).then(|| Keep {
                        oid: *foid,
                        blk: b,
                        blksize: bs,
                        old: view.at,
                    });
                    inval.push(Inval {
                        ino,
                        off: o as i64,
                        len: bs as i64,
                        keep,
                    });
                    blks.push(b);
                    nblk += 1;
                }
            }
            if !blks.is_empty() {
                changed.push((*foid, ino, blks));
            }
            if d.size {
                match zf.size(&*self.stor, tid) {
                    Ok(new) => {
                        // A head/ file never shrinks (nor at an epoch, see
                        // `reload_head_file`): when
                        // a commit deletes its last blocks, the kernel would
                        // cut the inode, and a client whose older view still
                        // has those blocks, mapped from head/, would die of
                        // SIGBUS there: past the end the kernel sends no
                        // READ, so no pin can move them to @rev (found by
                        // wcfs-stress, whose writer deletes runs of blocks;
                        // stress/findings). Past the ZBigFile's own size the
                        // file reads as zeros, as a bigfile does; the
                        // deleted blocks are invalidated as any change.
                        //
                        // Growth drops the pages past the old end: a kernel
                        // that read there may have cached zeros.
                        if new > hf.size {
                            inval.push(Inval {
                                ino,
                                off: hf.size as i64,
                                len: 0,
                                keep: None,
                            });
                            hf.size = new;
                        } else if new < hf.size {
                            tracing::debug!(
                                oid = %foid,
                                "@{tid}: the file's data ends at {new}; head/ keeps its size {}",
                                hf.size
                            );
                        }
                    }
                    Err(e) => {
                        tracing::error!(oid = %foid, "@{tid}: size: {e}");
                        inval.push(Inval {
                            ino,
                            off: 0,
                            len: 0,
                            keep: None,
                        });
                    }
                }
                if let Err(e) = self.track_size(&zf, tid) {
                    tracing::error!("{e}");
                }
            }
            refreshed.push((*foid, hf));
        }
        let early: Vec<(u64, Vec<PinJob>)> = {
            let _r = self.ft_rw.read().unwrap_or_else(|p| p.into_inner());
            changed
                .iter()
                .map(|(foid, ino, blks)| (*ino, self.pin_early(*foid, tid, blks)))
                .filter(|(_, jobs)| !jobs.is_empty())
                .collect()
        };
        let grown: Vec<&HeadFile> = refreshed
            .iter()
            .filter(|(foid, hf)| {
                hf.zfile.is_some() && hf.size > view.files.get(foid).map_or(0, |o| o.size)
            })
            .map(|(_, hf)| hf)
            .collect();
        // A file that grew: its new size goes into the kernel's inode
        // *before* the view showing it is published, and from then on no
        // getattr tells less (`kernel_size`). Both are needed: the kernel
        // ignores a getattr reply whose request is older than the inode's
        // last attribute change, and yet returns it to the caller. With
        // getattrs in flight across a size change, the one that read the
        // old view could land first and make the new one's be ignored:
        // fstat said the new size, the inode kept the old one, and a client
        // that mapped that far died of SIGBUS past the inode's end
        // (wcfs-stress; `serve.rs` `inode_size_never_below_what_fstat_said`
        // shows it within a few hundred commits). So:
        //
        //   inode size ≥ every size a getattr reply ever carried
        //
        // holds because (1) the push really sets the inode's size: a
        // NOTIFY_STORE of one byte ending at the new size (the kernel grows
        // the size only for a store of at least one byte; with a size that
        // is a multiple of the page size the byte is at offset 4095 of its
        // page, which the kernel then leaves not up to date, for a READ to
        // fill; in any case the page is past the old size, and this
        // commit's invalidation drops it), (2) it is done before any
        // getattr can see the new view, and (3) a getattr that saw
        // `kernel_size` before it was raised has an older request, whose
        // reply the kernel ignores once the push has changed the inode. A READ meanwhile still sees the
        // old view; it is never short (`read_for` pads with zeros), since a
        // short READ would make the kernel cut the size again, and whatever
        // it puts past the old size is dropped by this commit's
        // invalidation.
        //
        // And no attribute reply is computed while a push is in progress
        // (`size_seq`, a seqlock: `head_attr_stable`). Else one computed
        // between the raise of `kernel_size` and the push's landing would
        // tell the new size while the inode still has the old one, and if
        // the kernel ignored it (stale) the caller would map past the
        // inode's end until the push lands; and one computed just after the
        // push landed but before the raise would tell the old size with a
        // fresh request, which the kernel applies: a cut.
        if !grown.is_empty() {
            self.head.size_seq.fetch_add(1, Ordering::SeqCst); // odd
            for hf in &grown {
                hf.kernel_size.fetch_max(hf.size, Ordering::SeqCst);
            }
            if let Some(push) = self.size_push.get() {
                for hf in &grown {
                    push(hf.ino, hf.size);
                }
            }
            self.head.size_seq.fetch_add(1, Ordering::SeqCst); // even
        }
        self.publish_view(|v| {
            let mut files = (*v.files).clone();
            for (foid, hf) in refreshed {
                files.insert(foid, hf);
            }
            HeadView {
                at: tid,
                files: Arc::new(files),
            }
        });
        if lock(&self.revs.last_trim).elapsed() >= TRIM_EVERY {
            inval.extend(self.trim_revs());
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .invalidated_blocks
            .fetch_add(nblk, Ordering::Relaxed);
        Ok(Commit { inval, early })
    }

    /// Head file `foid` changed as a whole at `tid`: load it (and its size)
    /// again and track its size path, or mark it gone.
    pub fn reload_head_file(&self, foid: Oid, hf: &mut HeadFile, tid: Tid) {
        let re = ZBigFile::load(&*self.stor, foid, tid).and_then(|zf| {
            let size = zf.size(&*self.stor, tid)?;
            Ok((zf, size))
        });
        match re {
            Ok((zf, size)) => {
                if let Err(e) = self.track_size(&zf, tid) {
                    tracing::error!("{e}");
                }
                // Not smaller than before, even now (rounded up to the new
                // blksize): clients of the old file keep their mappings
                // after their links were shut, and a shrunk inode would
                // kill them with SIGBUS on their next access (wcfs-stress,
                // at an epoch that re-created a file shorter).
                let bs = zf.blksize.max(1);
                hf.size = size.max(hf.size.div_ceil(bs) * bs);
                hf.zfile = Some(zf);
            }
            Err(e) => {
                tracing::warn!(oid = %foid, "@{tid}: head/bigfile/{foid} is gone: {e}");
                hf.zfile = None;
                hf.size = 0;
            }
        }
    }

    /// The storage moved to `head` without saying what changed (its
    /// watcher's [`zodb::Error::ChangesUnknown`]): assume everything did.
    /// Under the head view write lock: ΔFtail forgets all (its history
    /// restarts at `head`), every head/ file is reloaded and its whole page
    /// cache is to be dropped, and every watch link is shut down with
    /// `0 fatal: ...` (no pin can keep an older view isolated across
    /// changes nobody knows; the clients did nothing wrong, so nobody is
    /// killed). Returns the invalidations to send; the caller then
    /// publishes `head`.
    pub fn handle_unknown(&self, head: Tid, why: &str) -> Vec<Inval> {
        let links: Vec<Arc<WatchLink>> = self
            .iso
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .filter_map(|w| w.link.upgrade())
            .collect();
        for l in links {
            let msg =
                format!("fatal: storage changes up to @{head} unknown: the watch cannot be kept");
            if l.shutdown(Some(&msg), DownWhy::Epoch) {
                tracing::warn!(link = l.id, pid = l.client.pid, "head/watch: {msg}");
            }
            self.drop_watches(&l);
        }
        let view = {
            let _w = self.ft_rw.write().unwrap_or_else(|p| p.into_inner());
            self.ft.reset(head);
            self.head.view.load()
        };
        let mut inval = Vec::new();
        let mut files = (*view.files).clone();
        for (foid, hf) in files.iter_mut() {
            hf.rev = head;
            inval.push(Inval {
                ino: hf.ino,
                off: 0,
                len: 0,
                keep: None,
            });
            self.reload_head_file(*foid, hf, head);
        }
        tracing::warn!(
            %head, n = inval.len(),
            "storage changes unknown ({why}): every head/ file invalidated, history restarted"
        );
        self.publish_view(|v| {
            let mut all = (*v.files).clone();
            all.extend(files);
            HeadView {
                at: head,
                files: Arc::new(all),
            }
        });
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        inval
    }

    /// Show `tid` in head/at (after its invalidations were sent).
    pub fn publish(&self, tid: Tid) {
        self.head.at.store(tid.0, Ordering::Release);
        self.zhead.publish(tid);
        self.wake_setups();
    }

    /// The storage served.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.stor
    }
}

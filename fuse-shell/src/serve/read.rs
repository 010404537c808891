//! READ: head/ and `@<rev>/` files, block loads shared by concurrent
//! READs, and the small cache of recently loaded blocks (the kernel sends
//! a 2 MiB block as several READs).

use super::errno::FsError;
use super::fs::{db_err, lock, Wcfs};
use super::head::HeadFile;
use super::nodes::Node;
use bytes::Bytes;
use rayon::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLockReadGuard};
use zodb::zbigfile::{Block, ZBigFile};
use zodb::{Oid, Storage, Tid};

/// Blocks kept loaded for READs that come in pieces (the kernel sends at
/// most 1 MiB per READ; a block is usually 2 MiB). Keyed by state, so an
/// entry never goes stale.
pub const BLK_CACHE_ENTRIES: usize = 16;

/// A READ of head/ whose loads were overtaken by this many commits loads
/// with ΔFtail held for reading (see `read_for`).
pub const READ_RETRIES: u32 = 3;

/// A loaded block's identity: (file, state, block).
pub type BlkKey = (Oid, Tid, i64);

/// A block load shared by concurrent READs: the block, or the error text.
pub type LoadSlot = std::sync::OnceLock<Result<Arc<Block>, String>>;

pub fn slice_at(data: &[u8], off: u64, len: u32) -> &[u8] {
    let lo = (off.min(data.len() as u64)) as usize;
    let hi = (off.saturating_add(len as u64).min(data.len() as u64)) as usize;
    &data[lo..hi]
}

/// Loaded blocks: the recent ones, and the loads in progress.
#[derive(Default)]
pub struct BlockCache {
    /// (oid, at, blk) -> Block, most recent last. A leaf lock.
    pub cache_mu: Mutex<VecDeque<(BlkKey, Arc<Block>)>>,
    /// Loads in progress: (oid, at, blk) -> the result, once there. Like
    /// `cache_mu`, held briefly and never together with it.
    pub loading_mu: Mutex<HashMap<BlkKey, Arc<LoadSlot>>>,
}

impl BlockCache {
    /// Block `blk` of `zf` as of `at`: from the cache, or loaded from
    /// `stor` once for all concurrent READs that want it. No lock is held
    /// while it loads.
    ///
    /// On a rayon worker (the parallel loads of a READ of several blocks)
    /// it never waits for another thread's load of the same block: it
    /// loads the block itself. The loading thread may be waiting for rayon
    /// (a ZBlk1's chunks load in parallel), and rayon's workers waiting
    /// for it would then be a deadlock (found by wcfs-stress at 2 MiB
    /// blocks: every READ stuck, no request left in the kernel). So rayon
    /// workers wait only for storage I/O.
    pub fn load(
        &self,
        stor: &dyn Storage,
        zf: &ZBigFile,
        blk: i64,
        at: Tid,
    ) -> Result<Arc<Block>, FsError> {
        let key = (zf.oid, at, blk);
        let load = || {
            let r = zf.load_blk(stor, blk, at).map(Arc::new).map_err(|e| {
                let off = (blk as u64).saturating_mul(zf.blksize);
                format!("@{at}: read blk #{blk} (file offset {off}): {e}")
            });
            if let Ok(b) = &r {
                let mut c = lock(&self.cache_mu);
                if c.len() >= BLK_CACHE_ENTRIES {
                    c.pop_front();
                }
                c.push_back((key, b.clone()));
            }
            r
        };
        let slot = {
            let c = lock(&self.cache_mu);
            if let Some((_, b)) = c.iter().find(|(k, _)| *k == key) {
                return Ok(b.clone());
            }
            drop(c);
            let mut l = lock(&self.loading_mu);
            if rayon::current_thread_index().is_none() {
                Some(l.entry(key).or_default().clone())
            } else {
                // a finished load is taken; one in progress is not waited for
                l.get(&key).filter(|s| s.get().is_some()).cloned()
            }
        };
        let r = match slot {
            // The first caller loads; the others wait in get_or_init.
            Some(slot) => slot
                .get_or_init(|| {
                    let r = load();
                    lock(&self.loading_mu).remove(&key);
                    r
                })
                .clone(),
            None => load(),
        };
        r.map_err(|msg| FsError::Db {
            what: "load".into(),
            oid: zf.oid,
            err: anyhow::anyhow!(msg),
        })
    }
}

impl Wcfs {
    /// [`read_for`](Self::read_for) with no requester (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn read_with<R>(
        &self,
        ino: u64,
        off: u64,
        len: u32,
        reply: impl FnOnce(Result<&[u8], FsError>) -> R,
    ) -> R {
        self.read_for(ino, off, len, 0, reply)
    }

    /// READ(off, len) of `ino` for thread `requester` (the FUSE header pid;
    /// 0 if unknown): `reply` gets the bytes of one head state, whose
    /// blocks were tracked and pinned before (never mixed with a commit).
    /// Pins to a faulty client stop waiting for its death if the requester
    /// itself is dying.
    ///
    /// Nothing is held while the pins are waited for and the reply is
    /// sent: a commit may move the head meanwhile. That is safe because
    /// the kernel keeps the pages of a READ in flight locked until our
    /// reply, and the commit's invalidation of a changed block waits for
    /// those page locks: data of the old head that reaches the page cache
    /// after the new head was published is dropped before head/at moves.
    pub fn read_for<R>(
        &self,
        ino: u64,
        off: u64,
        len: u32,
        requester: u32,
        reply: impl FnOnce(Result<&[u8], FsError>) -> R,
    ) -> R {
        let Some(node) = self.nodes.get(ino) else {
            return reply(Err(FsError::NoEnt));
        };
        match node {
            Node::HeadAt => reply(Ok(slice_at(
                self.head_at().to_string().as_bytes(),
                off,
                len,
            ))),
            Node::Stats => reply(Ok(slice_at(self.stats_text().as_bytes(), off, len))),
            Node::HeadWatch => reply(Err(FsError::Errno(fuser::Errno::EBADF))),
            Node::Zurl => reply(Ok(slice_at(self.zurl.as_bytes(), off, len))),
            Node::PinTimeout => reply(Ok(slice_at(self.pintimeout_text().as_bytes(), off, len))),
            Node::HeadFile(oid) => {
                for attempt in 0.. {
                    // After a few commits overtook our loads, load under
                    // `ft_rw` R (a commit then waits for this load: bounded
                    // by storage I/O), so that a READ always ends.
                    // (held, the view is at ΔFtail's head and cannot move)
                    let g = (attempt >= READ_RETRIES).then(|| self.ft_read_at_view());
                    let (at, hf) = self.head.view.with(|v| (v.at, v.files.get(&oid).cloned()));
                    let Some(HeadFile {
                        zfile: Some(zf),
                        size,
                        ..
                    }) = hf
                    else {
                        return reply(Err(FsError::NoEnt));
                    };
                    match self.read_head(&zf, size, at, off, len, requester, g) {
                        // Never short: the kernel takes a short READ for the
                        // end of the file and cuts the inode's size, which
                        // may already be this commit's larger one (pushed
                        // before the view is published, see
                        // `handle_commit`). Past our size the file reads as
                        // zeros, as a bigfile does.
                        Ok(Some(b)) if b.len() < len as usize => {
                            let mut v = b.to_vec();
                            v.resize(len as usize, 0);
                            return reply(Ok(&v));
                        }
                        Ok(Some(b)) => return reply(Ok(&b)),
                        Ok(None) => continue, // ΔFtail moved past `at`: again at the new head
                        Err(e) => return reply(Err(e)),
                    }
                }
                unreachable!("the attempts under ft_rw end")
            }
            Node::RevFile(rf) => {
                rf.read.store(true, Ordering::Relaxed);
                match self.read_blocks(&rf.zfile, rf.size, rf.at, off, len) {
                    Ok((b, _)) => reply(Ok(&b)),
                    Err(e) => reply(Err(e)),
                }
            }
            _ => reply(Err(FsError::Errno(fuser::Errno::EISDIR))),
        }
    }

    /// A READ of head/ file `zf` as of head view `at`: load the blocks (no
    /// lock), then with ΔFtail held for reading and at `at`, track them
    /// and queue the pins the watches need; then wait for the pins with
    /// nothing held. `None`: ΔFtail had moved past `at` (a commit is being
    /// published); the caller reads again at the new head.
    #[allow(clippy::too_many_arguments)]
    pub fn read_head(
        &self,
        zf: &ZBigFile,
        size: u64,
        at: Tid,
        off: u64,
        len: u32,
        requester: u32,
        held: Option<RwLockReadGuard<'_, ()>>,
    ) -> Result<Option<Bytes>, FsError> {
        let (data, blocks) = self.read_blocks(zf, size, at, off, len)?;
        if blocks.is_empty() {
            return Ok(Some(data));
        }
        let jobs = {
            let g = held.unwrap_or_else(|| self.ft_read());
            if self.ft.head() != at {
                drop(g);
                self.wait_view_past(at);
                return Ok(None);
            }
            for b in &blocks {
                self.ft
                    .track(zf, b.blk, &b.path, b.keycov, b.zblk)
                    .map_err(|e| db_err(zf.oid, format!("@{at}: track blk #{}", b.blk), e))?;
            }
            self.pin_watchers(zf, at, &blocks)
        };
        let watched = jobs.is_some();
        self.wait_pins(jobs.unwrap_or_default(), requester);
        // what the kernel caches now, for keeping it in @rev once a commit
        // changes it (serve::keep); only where a watch may pin to @rev
        if watched {
            for b in &blocks {
                self.keeper.record(zf.oid, at, b);
            }
        }
        Ok(Some(data))
    }

    /// Bytes `[off, off+len)` of `zf` as of `at`, clamped to `size`, and
    /// the blocks they came from.
    pub fn read_blocks(
        &self,
        zf: &ZBigFile,
        size: u64,
        at: Tid,
        off: u64,
        len: u32,
    ) -> Result<(Bytes, Vec<Arc<Block>>), FsError> {
        let end = off.saturating_add(len as u64).min(size);
        if end <= off {
            return Ok((Bytes::new(), Vec::new()));
        }
        let bs = zf.blksize;
        let (b0, b1) = ((off / bs) as i64, ((end - 1) / bs) as i64);
        let blocks: Vec<Arc<Block>> = (b0..=b1)
            .into_par_iter()
            .map(|blk| self.blocks.load(&*self.stor, zf, blk, at))
            .collect::<Result<_, _>>()?;
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_read
            .fetch_add(end - off, Ordering::Relaxed);
        if b0 == b1 {
            let base = b0 as u64 * bs;
            let (lo, hi) = ((off - base) as usize, (end - base) as usize);
            if hi <= blocks[0].data.len() {
                let data = blocks[0].data.slice(lo..hi); // no copy
                return Ok((data, blocks));
            }
        }
        let mut out = Vec::with_capacity((end - off) as usize);
        for b in &blocks {
            let base = b.blk as u64 * bs;
            let lo = (off.max(base) - base) as usize;
            let hi = (end.min(base + bs) - base) as usize;
            let dhi = hi.min(b.data.len());
            if lo < dhi {
                out.extend_from_slice(&b.data[lo..dhi]);
            }
            out.resize(out.len() + (hi - lo.max(dhi)), 0);
        }
        Ok((out.into(), blocks))
    }
}

//! Old data kept for `@<rev>/` on invalidation: before a lane drops a
//! changed block of `head/bigfile/<oid>` from the kernel's cache, it reads
//! the block back from the kernel (FUSE `NOTIFY_RETRIEVE`) and stores it
//! into the cache of `@<rev>/bigfile/<oid>` (`NOTIFY_STORE`), `rev` being
//! the block's revision before the commit. A client pinned to that
//! revision then finds the block in the page cache instead of having the
//! server load it from the database again. The Go server does the same.
//!
//! # What is stored is the old block, whatever raced with it
//!
//! The pages the kernel returns are not necessarily the old block:
//!
//! - the new view is published before the lane runs, so a READ at the new
//!   view may have filled some of the block's missing pages with new data;
//! - the kernel hands out pages that are still being read (locked, not yet
//!   up to date), and pages it added for a READ that it has not sent yet;
//! - pages may be missing (evicted, never read).
//!
//! So nothing is stored on the kernel's word alone. Every head/ READ of a
//! watched file records, per block, the view it served and a 128-bit hash
//! (XXH3) of the whole block at that view ([`Keeper::record`]; once per
//! change of the block, not per commit that moves the view; the hash
//! computed with no lock held). The lane stores
//! the retrieved bytes only if all of these hold:
//!
//! 1. the record's view `v` satisfies `rev(b, old) ≤ v ≤ old`, with `old`
//!    the head before the commit and `rev(b, old)` the block's last change
//!    up to it (ΔFtail): the block at `v` *is* the block at `old`;
//! 2. the kernel returned the whole block;
//! 3. the bytes hash to the recorded hash.
//!
//! Then the bytes are the block at `old` (up to a 128-bit collision), which
//! is what `@rev(b, old)/bigfile/<oid>` holds there. Any failed condition
//! only skips the store (counted in `keep_missed`); `@rev` then loads the
//! block from the database on demand, as without this module.
//!
//! The store goes to the `@rev` inode only if the kernel has looked it up
//! (a node exists in our table; the kernel may have forgotten it since:
//! ENOENT, skipped): a client that will pin to it has it open already
//! (early pins run before the lane, `serve::early`), or got it from an
//! earlier pin. Stored files are marked read, so that the periodic trim
//! drops them once no watch is pinned to them ([`super::rev`]).
//!
//! # Locks and waits
//!
//! `sums` and `waiting` are leaf mutexes held only to look up, insert or
//! remove one entry: never while hashing, sending to the kernel or
//! waiting. A lane waits for the kernel's answer with no lock held, at
//! most [`RETRIEVE_WAIT`] (the answer is read by the session thread, which
//! never waits for a lane). ΔFtail's `ft_rw` is held for reading around
//! the one `BlkRevAt` query, as every query does.

use super::fs::{lock, Wcfs};
use super::nodes::{Node, ROOT};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;
use xxhash_rust::xxh3::Xxh3;
use zodb::zbigfile::Block;
use zodb::{Oid, Tid};

/// How long a lane waits for the kernel's answer to a retrieve.
pub const RETRIEVE_WAIT: Duration = Duration::from_secs(1);

/// Bytes asked for per retrieve: the kernel answers at most `max_write`
/// (1 MiB with the default `max_pages_limit`) at a time.
pub const RETRIEVE_CHUNK: u32 = 1 << 20;

/// A lane's request to keep a changed block's old data for `@rev`: the
/// block and the head before the commit that changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub oid: Oid,
    pub blk: i64,
    pub blksize: u64,
    /// The head before the commit (the old data's view).
    pub old: Tid,
}

/// The kernel's page cache, as the lanes use it (the mount's notifier; a
/// fake in tests).
pub trait PageCache: Send + Sync {
    /// Ask for `size` bytes of inode `ino` at `off`; the answer comes to
    /// [`Keeper::answer`] with `unique`.
    fn retrieve(&self, ino: u64, off: u64, size: u32, unique: u64) -> std::io::Result<()>;
    /// Put `data` into inode `ino`'s cache at `off`.
    fn store(&self, ino: u64, off: u64, data: &[u8]) -> std::io::Result<()>;
}

/// What became of a [`Keep`] (for the stats and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Stored into `@rev`.
    Stored,
    /// No READ served this block at a view showing the old data (or
    /// ΔFtail has forgotten that past: a lane far behind).
    NoRecord,
    /// The kernel has no `@rev` file for it.
    NoRevFile,
    /// The kernel did not return the whole block.
    Partial,
    /// The bytes returned are not the old block.
    Mismatch,
    /// An error (logged).
    Failed,
}

/// A block as a READ served it: the view and the hash of its bytes.
#[derive(Debug, Clone, Copy)]
struct Sum {
    at: Tid,
    hash: u128,
}

/// Per-block hashes recorded by READs, and the retrieves in flight.
#[derive(Default)]
pub struct Keeper {
    /// (file, block) -> the last view a head/ READ served it at, with the
    /// block's hash. Leaf lock.
    sums: Mutex<HashMap<(Oid, i64), Sum>>,
    /// Retrieves waiting for the kernel: unique -> where the answer goes.
    /// Leaf lock.
    waiting: Mutex<HashMap<u64, mpsc::SyncSender<Vec<u8>>>>,
    /// Unique numbers of retrieves. Relaxed: only uniqueness matters.
    next: AtomicU64,
}

/// XXH3-128 of a block's bytes padded with zeros to `blksize`.
pub fn block_hash(data: &[u8], blksize: usize) -> u128 {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut h = Xxh3::new();
    h.update(data);
    let mut pad = blksize.saturating_sub(data.len());
    while pad > 0 {
        let n = pad.min(ZEROS.len());
        h.update(&ZEROS[..n]);
        pad -= n;
    }
    h.digest128()
}

impl Keeper {
    /// A head/ READ of a watched file served `b` at view `at`: record its
    /// hash, unless the record there is as good: at a view `s.at ≤ at`
    /// from which the block did not change (`b.rev_max ≤ s.at`: its data
    /// at `at` is its data at `s.at`, so the record still holds for every
    /// later keep), or newer. So a block is hashed once per change, not
    /// once per commit that moves the view.
    pub fn record(&self, oid: Oid, at: Tid, b: &Block) {
        if lock(&self.sums)
            .get(&(oid, b.blk))
            .is_some_and(|s| s.at >= at || b.rev_max <= s.at)
        {
            return;
        }
        let hash = block_hash(&b.data, b.blksize);
        lock(&self.sums).insert((oid, b.blk), Sum { at, hash });
    }

    /// Whether a READ recorded this block (a cheap test before queueing a
    /// [`Keep`]).
    pub fn has(&self, oid: Oid, blk: i64) -> bool {
        lock(&self.sums).contains_key(&(oid, blk))
    }

    /// Forget the records of a file (an epoch: its blocks start over).
    pub fn forget_file(&self, oid: Oid) {
        lock(&self.sums).retain(|(o, _), _| *o != oid);
    }

    /// The session thread got the kernel's answer to retrieve `unique`.
    pub fn answer(&self, unique: u64, data: &[u8]) {
        if let Some(tx) = lock(&self.waiting).remove(&unique) {
            let _ = tx.try_send(data.to_vec());
        }
    }

    /// Block bytes `[off, off + len)` of inode `ino` from the kernel's
    /// cache, if it has all of them and they hash to `hash`.
    fn fetch_verified(
        &self,
        pc: &dyn PageCache,
        ino: u64,
        off: u64,
        len: u64,
        hash: u128,
    ) -> Result<Vec<u8>, Kept> {
        let data = self.retrieve(pc, ino, off, len);
        if data.len() as u64 != len {
            return Err(Kept::Partial);
        }
        if block_hash(&data, len as usize) != hash {
            return Err(Kept::Mismatch);
        }
        Ok(data)
    }

    /// Put a verified block into `@rev` inode `rev_ino` at `off`.
    fn store_block(&self, pc: &dyn PageCache, rev_ino: u64, off: u64, data: &[u8]) -> Kept {
        for (i, c) in data.chunks(RETRIEVE_CHUNK as usize).enumerate() {
            let at = off + (i * RETRIEVE_CHUNK as usize) as u64;
            match pc.store(rev_ino, at, c) {
                Ok(()) => {}
                // the kernel forgot the inode
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) => {
                    return Kept::NoRevFile;
                }
                Err(e) => {
                    tracing::warn!(rev_ino, off = at, "keep for @rev: store: {e}");
                    return Kept::Failed;
                }
            }
        }
        Kept::Stored
    }

    /// Bytes `[off, off + len)` of inode `ino` as far as the kernel has
    /// them cached from `off` on, in as many retrieves as it takes.
    fn retrieve(&self, pc: &dyn PageCache, ino: u64, off: u64, len: u64) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::with_capacity(len as usize);
        while (out.len() as u64) < len {
            let at = off + out.len() as u64;
            let want = (len - out.len() as u64).min(RETRIEVE_CHUNK as u64) as u32;
            let unique = self.next.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = mpsc::sync_channel(1);
            lock(&self.waiting).insert(unique, tx);
            if let Err(e) = pc.retrieve(ino, at, want, unique) {
                lock(&self.waiting).remove(&unique);
                if e.raw_os_error() != Some(nix::errno::Errno::ENOENT as i32) {
                    tracing::warn!(ino, off = at, "retrieve: {e}");
                }
                break;
            }
            let got = match rx.recv_timeout(RETRIEVE_WAIT) {
                Ok(d) => d,
                Err(_) => {
                    lock(&self.waiting).remove(&unique);
                    tracing::warn!(ino, off = at, "retrieve: no answer in {RETRIEVE_WAIT:?}");
                    break;
                }
            };
            if got.is_empty() {
                break;
            }
            let n = got.len().min(want as usize);
            out.extend_from_slice(&got[..n]);
        }
        out
    }
}

impl Wcfs {
    /// Keep the old data of a changed block of head/ file `ino` for
    /// `@rev` (module docs), before the lane invalidates it.
    pub fn keep_old_block(&self, pc: &dyn PageCache, ino: u64, k: &Keep) -> Kept {
        let r = self.keep_old_block_(pc, ino, k);
        let c = match r {
            Kept::Stored => &self.stats.kept_blocks,
            _ => &self.stats.keep_missed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        r
    }

    fn keep_old_block_(&self, pc: &dyn PageCache, ino: u64, k: &Keep) -> Kept {
        let Some(sum) = lock(&self.keeper.sums).get(&(k.oid, k.blk)).copied() else {
            return Kept::NoRecord;
        };
        if sum.at > k.old {
            return Kept::NoRecord; // served at the new view already
        }
        // the block's revision as of the old head: the `@rev` to keep it in
        let rev = {
            let _r = self.ft_read();
            match self.ft.blk_rev_at(k.oid, k.blk, k.old) {
                Ok((rev, _)) => rev,
                // a lane far behind: ΔFtail forgot that past already
                Err(engine::Error::RevOutOfRange { .. }) => return Kept::NoRecord,
                Err(e) => {
                    tracing::warn!(oid = %k.oid, blk = k.blk, "keep @{}: BlkRevAt: {e}", k.old);
                    return Kept::Failed;
                }
            }
        };
        if sum.at < rev {
            return Kept::NoRecord; // served before the block's last change
        }
        let Some((rev_ino, rf)) = self.rev_file_node(rev, k.oid) else {
            return Kept::NoRevFile;
        };
        let off = (k.blk as u64).saturating_mul(k.blksize);
        if off.saturating_add(k.blksize) > rf.size {
            return Kept::Partial; // a block past @rev's end is not kept
        }
        let data = match self
            .keeper
            .fetch_verified(pc, ino, off, k.blksize, sum.hash)
        {
            Ok(d) => d,
            Err(why) => return why,
        };
        rf.read.store(true, Ordering::Relaxed); // for the trim
        self.keeper.store_block(pc, rev_ino, off, &data)
    }

    /// `@<rev>/bigfile/<oid>`, if a lookup made it.
    fn rev_file_node(
        &self,
        rev: Tid,
        oid: Oid,
    ) -> Option<(u64, std::sync::Arc<super::rev::RevFile>)> {
        let d = self.nodes.existing_child(ROOT, &format!("@{rev}"))?;
        let bd = self.nodes.existing_child(d, "bigfile")?;
        let f = self.nodes.existing_child(bd, &oid.to_string())?;
        match self.nodes.get(f)? {
            Node::RevFile(rf) => Some((f, rf)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A page cache of one inode whose cached bytes are `pages` from
    /// offset 0, answering retrieves like the kernel (at most `max` bytes
    /// per answer, from the offset up to the first missing byte), on
    /// another thread as the session thread would.
    struct Fake {
        keeper: Arc<Keeper>,
        pages: Vec<u8>,
        max: usize,
        stored: Mutex<Vec<(u64, u64, Vec<u8>)>>,
        answer: bool,
    }

    impl PageCache for Fake {
        fn retrieve(&self, ino: u64, off: u64, size: u32, unique: u64) -> std::io::Result<()> {
            assert_eq!(ino, 7);
            let lo = (off as usize).min(self.pages.len());
            let hi = (lo + (size as usize).min(self.max)).min(self.pages.len());
            let data = self.pages[lo..hi].to_vec();
            let (k, answer) = (self.keeper.clone(), self.answer);
            std::thread::spawn(move || {
                if answer {
                    k.answer(unique, &data)
                }
            });
            Ok(())
        }
        fn store(&self, ino: u64, off: u64, data: &[u8]) -> std::io::Result<()> {
            lock(&self.stored).push((ino, off, data.to_vec()));
            Ok(())
        }
    }

    fn fake(keeper: &Arc<Keeper>, pages: Vec<u8>, max: usize) -> Fake {
        Fake {
            keeper: keeper.clone(),
            pages,
            max,
            stored: Mutex::new(Vec::new()),
            answer: true,
        }
    }

    fn block(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// The whole block, in several answers of at most 256 KiB (the kernel's
    /// `max_write`), hashing to the record: stored, in chunks, as read.
    #[test]
    fn a_whole_matching_block_is_stored() {
        let k = Arc::new(Keeper::default());
        let bs = 3 << 20;
        let b = block(bs, 1);
        let pc = fake(&k, b.clone(), 256 << 10);
        let d = k
            .fetch_verified(&pc, 7, 0, bs as u64, block_hash(&b, bs))
            .unwrap();
        assert_eq!(d, b);
        assert_eq!(k.store_block(&pc, 9, 0, &d), Kept::Stored);
        let st = lock(&pc.stored);
        let joined: Vec<u8> = st.iter().flat_map(|(_, _, c)| c.clone()).collect();
        assert_eq!(joined, b);
        assert!(st.iter().all(|(ino, _, _)| *ino == 9));
        assert_eq!(st[1].1, RETRIEVE_CHUNK as u64);
        assert!(lock(&k.waiting).is_empty());
    }

    /// Bytes that are not the recorded block (new data, pages still being
    /// read) are refused; so is a block the kernel has only part of, or
    /// does not answer for.
    #[test]
    fn anything_but_the_recorded_block_is_refused() {
        let k = Arc::new(Keeper::default());
        let bs = 1 << 20;
        let (old, new) = (block(bs, 1), block(bs, 2));
        let h = block_hash(&old, bs);
        let mut mixed = old.clone();
        mixed[bs / 2..].copy_from_slice(&new[bs / 2..]);
        for (what, pages) in [("new", new.clone()), ("mixed", mixed)] {
            let pc = fake(&k, pages, bs);
            assert_eq!(
                k.fetch_verified(&pc, 7, 0, bs as u64, h).unwrap_err(),
                Kept::Mismatch,
                "{what}"
            );
        }
        let pc = fake(&k, old[..bs - 4096].to_vec(), 128 << 10);
        assert_eq!(
            k.fetch_verified(&pc, 7, 0, bs as u64, h).unwrap_err(),
            Kept::Partial
        );
        let mut pc = fake(&k, old.clone(), bs);
        pc.answer = false;
        assert_eq!(
            k.fetch_verified(&pc, 7, 0, bs as u64, h).unwrap_err(),
            Kept::Partial
        );
        assert!(
            lock(&k.waiting).is_empty(),
            "a lost answer's entry is removed"
        );
    }

    fn blk(data: &[u8], rev_max: u64) -> Block {
        Block {
            blk: 3,
            data: bytes::Bytes::copy_from_slice(data),
            blksize: 4096,
            path: Vec::new(),
            keycov: zodb::btree::KeyRange { lo: 0, hi: 10 },
            zblk: None,
            rev_max: Tid(rev_max),
        }
    }

    /// A record is redone only when the block changed since it, never for
    /// an older view: the hash is that of the block as of `s.at`.
    #[test]
    fn a_block_is_recorded_once_per_change() {
        let k = Keeper::default();
        let oid = Oid(7);
        let rec = |k: &Keeper| lock(&k.sums).get(&(oid, 3)).map(|s| (s.at.0, s.hash));
        k.record(oid, Tid(10), &blk(b"a", 5));
        let h_a = block_hash(b"a", 4096);
        assert_eq!(rec(&k), Some((10, h_a)));
        // a later view, the block unchanged since 10: kept as is
        k.record(oid, Tid(20), &blk(b"a", 5));
        assert_eq!(rec(&k), Some((10, h_a)));
        // an older view: kept
        k.record(oid, Tid(8), &blk(b"x", 5));
        assert_eq!(rec(&k), Some((10, h_a)));
        // changed at 25, read at 30: recorded anew
        k.record(oid, Tid(30), &blk(b"b", 25));
        assert_eq!(rec(&k), Some((30, block_hash(b"b", 4096))));
        assert!(k.has(oid, 3) && !k.has(oid, 4));
        k.forget_file(oid);
        assert!(!k.has(oid, 3));
    }

    /// The hash pads short block data with zeros to the block size, as a
    /// READ serves it.
    #[test]
    fn hash_pads_to_the_block_size() {
        let mut full = vec![5u8; 1000];
        full.resize(8192, 0);
        assert_eq!(block_hash(&[5u8; 1000], 8192), block_hash(&full, 8192));
        assert_ne!(
            block_hash(&[5u8; 1000], 8192),
            block_hash(&[5u8; 1000], 4096)
        );
    }
}

//! ΔFtail: which blocks of which ZBigFiles changed when.
//!
//! [`DeltaFTail`] semantically is
//!
//! ```text
//! []δF            rev ∈ (tail, head]
//! δF = {rev, {file -> δfile}}
//! δfile = {blocks, epoch, size}
//! ```
//!
//! built from [`DeltaBTail`] (the blktab trees: which block is bound to
//! which ZBlk when) and ΔZtail (the ZBlk objects and the ZBigFile objects
//! themselves). A block changes at `r` when its blktab binding changes at `r`
//! or the ZBlk it is bound to as of `r` is stored at `r`. Only the history
//! ΔFtail keeps itself is the file *epochs*: a transaction that creates or
//! deletes a file, or changes its block size or its blktab root; at an epoch
//! the whole file counts as changed and earlier explicit tracking of it is
//! forgotten.
//!
//! Everything else is merged on the fly from the ΔBtail and ΔZtail
//! snapshots at query time, so tracking more blocks later needs no
//! recomputation here (ΔBtail rebuilds what it must).
//!
//! # Concurrency
//!
//! The ΔBtail contract: one writer ([`update`](DeltaFTail::update),
//! [`forget_past`](DeltaFTail::forget_past)) or many readers
//! ([`track`](DeltaFTail::track), the queries). An Update can be split:
//! [`prepare_update`](DeltaFTail::prepare_update) does its storage reads
//! beside readers, [`apply_update`](DeltaFTail::apply_update) publishes in
//! memory as the writer; Tracks made in between are logged and, where the
//! transaction stored their path, reported as changed. Per-file epoch histories
//! are RCU snapshots: [`blk_rev_at`](DeltaFTail::blk_rev_at) for a block
//! whose ΔBtail history is built takes no lock (snapshot loads, the ΔBtail
//! fast path, and at most a read of the storage for a block whose binding did
//! not change in the window). `mu` guards the track bookkeeping (which
//! files use which root, the explicitly tracked blocks, the ZBlk ->
//! blocks bindings); it is held briefly by Track and by writers, and by
//! slices while they copy what they need, never across storage I/O.
//!
//! Lock order: `mu`, then ΔBtail's locks (see [`crate::btail`]).

use crate::btail::DeltaBTail;
use crate::error::{Error, Result};
use crate::treediff::DeltaKV;
use hashbrown::{HashMap, HashSet};
use rangeset::{KeyRange, RangedKeySet};
use rcu::RcuCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use zodb::btree::{self, Family};
use zodb::zbigfile::ZBigFile;
use zodb::{Oid, Storage, Tid};

/// What a file is at one state: `(blksize, blktab root)`, `None` if the
/// object is absent, deleted or not a ZBigFile.
pub type FileState = Option<(u64, Oid)>;

/// One file's change at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeltaFile {
    /// The revision.
    pub rev: Tid,
    /// Changed blocks (empty for an epoch).
    pub blocks: BTreeSet<i64>,
    /// An epoch: the whole file changed.
    pub epoch: bool,
    /// The file's size may have changed (set on any blktab change).
    pub size: bool,
}

/// δF: every tracked file's change at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeltaF {
    /// The revision.
    pub rev: Tid,
    /// Files with a change.
    pub by_file: BTreeMap<Oid, DeltaFile>,
}

/// An epoch of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Epoch {
    rev: Tid,
    old: FileState,
    new: FileState,
}

/// A file's epoch history: an immutable snapshot.
#[derive(Debug, Clone)]
struct FileHist {
    /// The file at head.
    head: FileState,
    /// Epochs in `(tail, head]`, `rev↑`.
    epochs: Vec<Epoch>,
}

impl FileHist {
    /// The file as of `at`, and the revision of the epoch covering `at`.
    fn state_at(&self, at: Tid) -> (FileState, Option<Tid>) {
        let i = self.epochs.partition_point(|e| e.rev <= at);
        if i > 0 {
            let e = &self.epochs[i - 1];
            (e.new, Some(e.rev))
        } else if let Some(e) = self.epochs.first() {
            (e.old, None)
        } else {
            (self.head, None)
        }
    }
}

/// Track bookkeeping of one blktab root.
#[derive(Debug, Default, Clone)]
struct RootIdx {
    /// Files whose blktab this is at head.
    files: BTreeSet<Oid>,
    /// Block -> ZBlk at head, for the blocks whose binding is known
    /// (tracked with their ZBlk, or changed since).
    zblk_of: HashMap<i64, Oid>,
    /// The inverse of `zblk_of`.
    blks_of: HashMap<Oid, Blks>,
}

/// The blocks bound to one ZBlk: nearly always one (wendelin.core makes a
/// ZBlk per block), so that case takes no allocation of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Blks {
    One(i64),
    /// Sorted, at least two.
    Many(Vec<i64>),
}

impl Blks {
    fn as_slice(&self) -> &[i64] {
        match self {
            Blks::One(b) => std::slice::from_ref(b),
            Blks::Many(v) => v,
        }
    }

    fn insert(&mut self, blk: i64) {
        match self {
            Blks::One(b) if *b == blk => {}
            Blks::One(b) => {
                let mut v = vec![*b, blk];
                v.sort_unstable();
                *self = Blks::Many(v);
            }
            Blks::Many(v) => {
                if let Err(i) = v.binary_search(&blk) {
                    v.insert(i, blk);
                }
            }
        }
    }

    /// Remove `blk`; `false` if nothing is left.
    fn remove(&mut self, blk: i64) -> bool {
        match self {
            Blks::One(b) => *b != blk,
            Blks::Many(v) => {
                if let Ok(i) = v.binary_search(&blk) {
                    v.remove(i);
                }
                if v.len() == 1 {
                    *self = Blks::One(v[0]);
                }
                true
            }
        }
    }
}

impl RootIdx {
    fn bind(&mut self, blk: i64, zblk: Oid) {
        if let Some(old) = self.zblk_of.remove(&blk) {
            if let Some(s) = self.blks_of.get_mut(&old) {
                if !s.remove(blk) {
                    self.blks_of.remove(&old);
                }
            }
        }
        if zblk != Oid::INVALID {
            self.zblk_of.insert(blk, zblk);
            match self.blks_of.entry(zblk) {
                hashbrown::hash_map::Entry::Occupied(mut e) => e.get_mut().insert(blk),
                hashbrown::hash_map::Entry::Vacant(e) => {
                    e.insert(Blks::One(blk));
                }
            }
        }
    }

    /// The blocks bound to `zblk` at head.
    fn blks(&self, zblk: Oid) -> &[i64] {
        self.blks_of.get(&zblk).map_or(&[], |b| b.as_slice())
    }
}

/// What `mu` protects.
#[derive(Debug, Default)]
struct Index {
    by_root: HashMap<Oid, RootIdx>,
    /// Blocks passed to `track` with `blk ≥ 0` since the file's last epoch.
    explicit: HashMap<Oid, RangedKeySet>,
    /// While an Update is being prepared: the Tracks made meanwhile, as
    /// (blktab root, blk, path). They were loaded at the old head and are
    /// not in the prepared step; [`DeltaFTail::apply_update`] treats those
    /// whose path the transaction changed as changed blocks.
    late: Option<Vec<(Oid, i64, Vec<Oid>)>>,
}

/// ΔFtail; see the [module docs](self).
pub struct DeltaFTail {
    btail: DeltaBTail,
    files: RcuCell<HashMap<Oid, Arc<RcuCell<FileHist>>>>,
    mu: Mutex<Index>,
}

impl std::fmt::Debug for DeltaFTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaFTail")
            .field("btail", &self.btail)
            .field("files", &self.files.load().len())
            .finish()
    }
}

/// An Update of ΔFtail computed beside readers
/// ([`DeltaFTail::prepare_update`]), to be published by
/// [`DeltaFTail::apply_update`].
#[derive(Debug)]
pub struct PreparedF {
    b: crate::btail::PreparedB,
    rev: Tid,
    oids: Vec<Oid>,
    /// The new state of each file known at preparation that `oids` holds.
    states: HashMap<Oid, FileState>,
}

/// Options of [`DeltaFTail::slice_by_file_rev_ex`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SliceOpts {
    /// Report only blocks passed to `track` (with `blk ≥ 0`) since the
    /// file's last epoch.
    pub only_explicitly_tracked: bool,
}

impl DeltaFTail {
    /// An empty ΔFtail with coverage `(at0, at0]` over `db`.
    pub fn new(at0: Tid, db: Arc<dyn Storage>) -> DeltaFTail {
        DeltaFTail {
            btail: DeltaBTail::new(at0, db),
            files: RcuCell::new(HashMap::new()),
            mu: Mutex::new(Index::default()),
        }
    }

    /// The ΔBtail underneath.
    pub fn btail(&self) -> &DeltaBTail {
        &self.btail
    }

    /// The newest covered revision.
    pub fn head(&self) -> Tid {
        self.btail.head()
    }

    /// The oldest covered revision.
    pub fn tail(&self) -> Tid {
        self.btail.tail()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.mu.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Track block `blk` of `file` (loaded at head), reached through the
    /// blktab `path` (root first) whose leaf covers `keycov`, bound to
    /// `zblk` (`None` for a hole). `blk < 0` tracks only the path (as for
    /// the lookup of the last block, which gives the file size). Reader.
    pub fn track(
        &self,
        file: &ZBigFile,
        blk: i64,
        path: &[Oid],
        keycov: KeyRange,
        zblk: Option<Oid>,
    ) -> Result<()> {
        if path.first() != Some(&file.blktab) {
            return Err(Error::BadPath {
                path: path.to_vec(),
                why: "does not start at the file's blktab",
            });
        }
        self.file_or_new(file)?;
        self.btail.track(path, keycov)?;
        let mut ix = self.lock();
        if let Some(late) = ix.late.as_mut() {
            late.push((file.blktab, blk, path.to_vec()));
        }
        let r = ix.by_root.entry(file.blktab).or_default();
        r.files.insert(file.oid);
        if blk >= 0 {
            r.bind(blk, zblk.unwrap_or(Oid::INVALID));
            ix.explicit.entry(file.oid).or_default().add(blk);
        }
        Ok(())
    }

    /// How many blocks of all files were passed to [`track`](Self::track)
    /// since their files' last epochs.
    pub fn explicitly_tracked_count(&self) -> u64 {
        let ix = self.lock();
        ix.explicit
            .values()
            .flat_map(|s| s.ranges())
            .map(|r| (r.hi as i128 - r.lo as i128 + 1) as u64)
            .sum()
    }

    /// The blocks of `file` passed to [`track`](Self::track) since its last
    /// epoch.
    pub fn explicitly_tracked(&self, file: Oid) -> RangedKeySet {
        self.lock().explicit.get(&file).cloned().unwrap_or_default()
    }

    /// The file's epoch history, made on its first Track: the window's
    /// revisions that stored the file object, replayed from the storage.
    fn file_or_new(&self, file: &ZBigFile) -> Result<()> {
        // fast path (every READ): the file is known; read the map in place
        if self.files.with(|m| m.contains_key(&file.oid)) {
            return Ok(());
        }
        let db = self.btail.db();
        let ztail = self.btail.ztail();
        let mut prev = load_state(&**db, file.oid, ztail.tail())?;
        let mut epochs = Vec::new();
        for dz in ztail.entries() {
            if dz.oids.contains(&file.oid) {
                let st = load_state(&**db, file.oid, dz.rev)?;
                if st != prev {
                    epochs.push(Epoch {
                        rev: dz.rev,
                        old: prev,
                        new: st,
                    });
                    prev = st;
                }
            }
        }
        let hist = FileHist { head: prev, epochs };
        self.files.update(|m| {
            let mut m = m.clone();
            m.entry(file.oid)
                .or_insert_with(|| Arc::new(RcuCell::new(hist)));
            m
        });
        Ok(())
    }

    /// Apply transaction `rev` that stored `oids`: returns the changes of
    /// the tracked files. Writer.
    pub fn update(&self, rev: Tid, oids: &[Oid]) -> Result<DeltaF> {
        let p = self.prepare_update(rev, oids)?;
        self.apply_update(p)
    }

    /// The storage-reading part of an Update, which may run beside readers
    /// (Track and the queries): ΔBtail's preparation
    /// ([`DeltaBTail::prepare_update`]) and the new state of every known
    /// file the transaction stored. Nothing is published. Tracks made from
    /// now until [`apply_update`](Self::apply_update) are logged (they are
    /// at the old head). One preparation at a time (the writer's).
    pub fn prepare_update(&self, rev: Tid, oids: &[Oid]) -> Result<PreparedF> {
        self.lock().late = Some(Vec::new());
        let r = (|| {
            let b = self.btail.prepare_update(rev, oids)?;
            let db = self.btail.db();
            let changed: HashSet<Oid> = oids.iter().copied().collect();
            let mut states: HashMap<Oid, FileState> = HashMap::new();
            for foid in self.files.load().keys() {
                if changed.contains(foid) {
                    states.insert(*foid, load_state(&**db, *foid, rev)?);
                }
            }
            Ok(PreparedF {
                b,
                rev,
                oids: oids.to_vec(),
                states,
            })
        })();
        if r.is_err() {
            self.lock().late = None;
        }
        r
    }

    /// Publish a prepared Update and return the changes of the tracked
    /// files. Writer, exclusive with readers. In memory, except for a file
    /// first tracked while the Update was prepared and stored by it: its
    /// new state is read here (rare: one object).
    pub fn apply_update(&self, p: PreparedF) -> Result<DeltaF> {
        let PreparedF {
            b,
            rev,
            oids,
            mut states,
        } = p;
        let oids = &oids[..];
        let delta_b = match self.btail.apply_update(b) {
            Ok(d) => d,
            Err(e) => {
                self.lock().late = None;
                return Err(e);
            }
        };
        let db = self.btail.db().clone();
        let changed: HashSet<Oid> = oids.iter().copied().collect();
        let files = self.files.load();
        for foid in files.keys() {
            if changed.contains(foid) && !states.contains_key(foid) {
                states.insert(*foid, load_state(&*db, *foid, rev)?);
            }
        }
        let mut ix = self.lock();
        let late = ix.late.take().unwrap_or_default();
        let mut out = DeltaF {
            rev,
            by_file: BTreeMap::new(),
        };

        // bindings follow the blktab changes
        for (root, kv) in &delta_b.by_root {
            if let Some(r) = ix.by_root.get_mut(root) {
                for (k, dv) in kv {
                    r.bind(*k, dv.new);
                }
            }
        }
        // epochs
        for (foid, fh) in files.iter() {
            let Some(&new) = states.get(foid) else {
                continue;
            };
            let h = fh.load();
            if new == h.head {
                continue; // re-saved unchanged
            }
            fh.update(|h| {
                let mut h = h.clone();
                h.epochs.push(Epoch {
                    rev,
                    old: h.head,
                    new,
                });
                h.head = new;
                h
            });
            if let Some((_, root)) = h.head {
                if let Some(r) = ix.by_root.get_mut(&root) {
                    r.files.remove(foid);
                }
            }
            if let Some((_, root)) = new {
                ix.by_root.entry(root).or_default().files.insert(*foid);
            }
            ix.explicit.remove(foid);
            out.by_file.insert(
                *foid,
                DeltaFile {
                    rev,
                    epoch: true,
                    ..DeltaFile::default()
                },
            );
        }
        // blocks: blktab changes and changed ZBlks
        for (root, r) in &ix.by_root {
            let mut blocks: BTreeSet<i64> = BTreeSet::new();
            let tree = delta_b.by_root.get(root);
            if let Some(kv) = tree {
                blocks.extend(kv.keys());
            }
            for o in oids {
                blocks.extend(r.blks(*o));
            }
            if blocks.is_empty() && tree.is_none() {
                continue;
            }
            for foid in &r.files {
                let e = out.by_file.entry(*foid).or_insert_with(|| DeltaFile {
                    rev,
                    ..DeltaFile::default()
                });
                if e.epoch {
                    continue;
                }
                e.blocks.extend(&blocks);
                e.size |= tree.is_some();
            }
        }
        // Tracks made while the Update was prepared were loaded at the old
        // head and not stepped: one whose path this transaction stored may
        // have a stale binding and misses its change. Such a block counts
        // as changed (the caller invalidates it; its next READ tracks it
        // again at the new head) and forgets its binding; the file's size
        // counts as changed too.
        for (root, blk, path) in late {
            if !path.iter().any(|o| changed.contains(o)) {
                continue;
            }
            let Some(r) = ix.by_root.get_mut(&root) else {
                continue;
            };
            if blk >= 0 {
                r.bind(blk, Oid::INVALID);
            }
            for foid in r.files.clone() {
                let e = out.by_file.entry(foid).or_insert_with(|| DeltaFile {
                    rev,
                    ..DeltaFile::default()
                });
                if e.epoch {
                    continue;
                }
                if blk >= 0 {
                    e.blocks.insert(blk);
                }
                e.size = true;
            }
        }
        out.by_file
            .retain(|_, d| d.epoch || !d.blocks.is_empty() || d.size);
        Ok(out)
    }

    /// Forget everything, tracking included: coverage becomes `(at, at]`
    /// (the storage moved to `at` and cannot say what changed; see
    /// [`DeltaBTail::reset`]). Files are known again at their next Track.
    /// Writer.
    pub fn reset(&self, at: Tid) {
        self.btail.reset(at);
        self.files.store(HashMap::new());
        *self.lock() = Index::default();
    }

    /// Forget history `≤ rev_cut`. Writer.
    pub fn forget_past(&self, rev_cut: Tid) -> Result<()> {
        self.btail.forget_past(rev_cut)?;
        for fh in self.files.load().values() {
            fh.update(|h| {
                let mut h = h.clone();
                h.epochs.retain(|e| e.rev > rev_cut);
                h
            });
        }
        Ok(())
    }

    /// The last revision `≤ at` that changed block `blk` of `file`, for
    /// `at ∈ [tail, head]`: `(rev, exact)`; `(tail, false)` when the last
    /// change is at or before `tail`. The file must have been tracked
    /// ([`Error::NotTracked`] otherwise); the block need not be: its history
    /// is then rebuilt first. Reader.
    pub fn blk_rev_at(&self, file: Oid, blk: i64, at: Tid) -> Result<(Tid, bool)> {
        self.blk_rev_at_hint(file, blk, at, None)
    }

    /// [`blk_rev_at`](Self::blk_rev_at) for a caller that knows the block's
    /// ZBlk at head (the server, which just loaded the block to serve it):
    /// `head_zblk` is `Some(zblk)` (`Some(Oid::INVALID)` for a hole). Saves
    /// the blktab lookup for a block whose binding did not change in the
    /// window. A wrong hint gives a wrong answer.
    pub fn blk_rev_at_hint(
        &self,
        file: Oid,
        blk: i64,
        at: Tid,
        head_zblk: Option<Oid>,
    ) -> Result<(Tid, bool)> {
        // snapshots are read in place (no lock, no shared counter touched):
        // the file's state as of `at`, the epoch covering it, its head root
        let file_at = self.files.with(|m| {
            m.get(&file).map(|f| {
                f.with(|fh| {
                    let (st, e) = fh.state_at(at);
                    (st, e, fh.head.map(|(_, r)| r))
                })
            })
        });
        let Some((state, epoch, head_root)) = file_at else {
            return Err(Error::NotTracked {
                what: format!("file {file}"),
            });
        };
        let (tail, head) = self.btail.with_ztail(|z| (z.tail(), z.head()));
        if at < tail || at > head {
            return Err(Error::RevOutOfRange {
                op: "BlkRevAt",
                rev: at,
                tail,
                head,
            });
        }
        let mut rev = epoch.unwrap_or(tail);
        let Some((_, root)) = state else {
            return Ok((rev, rev > tail));
        };
        let g = match self.btail.get_at(root, blk, at) {
            Ok(g) => g,
            Err(Error::NotTracked { .. }) => {
                let mut k = RangedKeySet::new();
                k.add(blk);
                self.btail.track_keys(root, &k);
                self.btail.get_at(root, blk, at)?
            }
            Err(e) => return Err(e),
        };
        rev = rev.max(g.rev);
        let zblk = if g.value_exact {
            g.value
        } else if let (Some(z), true) = (head_zblk, head_root == Some(root)) {
            z
        } else {
            // no binding change in the window: as at head
            let db = self.btail.db();
            let l = btree::lookup(&**db, Family::LO, root, blk, head)?;
            match l.value {
                Some(v) => zodb::record::decode_ref(root, &v)?.oid,
                None => Oid::INVALID,
            }
        };
        if zblk != Oid::INVALID {
            let (zrev, _) = self.btail.with_ztail(|z| z.last_rev_of(zblk, at))?;
            rev = rev.max(zrev);
        }
        Ok((rev, rev > tail))
    }

    /// The changes of `file` with `rev ∈ (lo, hi]`, ascending, no empty
    /// entries. Reader.
    pub fn slice_by_file_rev(&self, file: Oid, lo: Tid, hi: Tid) -> Result<Vec<DeltaFile>> {
        self.slice_by_file_rev_ex(file, lo, hi, SliceOpts::default())
    }

    /// [`slice_by_file_rev`](Self::slice_by_file_rev) with options.
    ///
    /// Blocks tracked only implicitly (in the same blktab bucket as a
    /// tracked one) are reported uniformly: at every revision of the slice
    /// where they changed, or never.
    pub fn slice_by_file_rev_ex(
        &self,
        file: Oid,
        lo: Tid,
        hi: Tid,
        opts: SliceOpts,
    ) -> Result<Vec<DeltaFile>> {
        let ztail = self.btail.ztail();
        let (tail, head) = (ztail.tail(), ztail.head());
        if !(tail <= lo && lo <= hi && hi <= head) {
            return Err(Error::BadSlice { lo, hi, tail, head });
        }
        let Some(fh) = self.files.load().get(&file).cloned() else {
            return Ok(vec![]);
        };
        let fh = fh.load();
        let mut out: BTreeMap<Tid, DeltaFile> = BTreeMap::new();
        // intervals of constant root: (a, b] with the file's state there
        let mut bounds: Vec<(Tid, Tid, FileState)> = Vec::new();
        let mut a = lo;
        let (mut st, _) = fh.state_at(lo);
        for e in fh.epochs.iter().filter(|e| e.rev > lo && e.rev <= hi) {
            // the epoch's own revision belongs to no interval: the whole
            // file changed there
            bounds.push((a, Tid(e.rev.0 - 1), st));
            out.insert(
                e.rev,
                DeltaFile {
                    rev: e.rev,
                    epoch: true,
                    ..DeltaFile::default()
                },
            );
            a = e.rev;
            st = e.new;
        }
        bounds.push((a, hi, st));

        let explicit = self.lock().explicit.get(&file).cloned();
        for (a, b, st) in bounds {
            let Some((_, root)) = st else { continue };
            if a >= b {
                continue;
            }
            // bindings at head, rolled back through the tree's history
            let vdt = self.btail.slice_by_root_rev(root, a, head)?;
            let vdz = ztail.slice_by_rev(a, head)?;
            // Only blocks bound to objects stored in (a, b] can be reported
            // for a data change: copy just their head bindings (not the
            // whole index, which holds every tracked block).
            let stored: HashSet<Oid> = vdz
                .iter()
                .filter(|dz| dz.rev <= b)
                .flat_map(|dz| dz.oids.iter().copied())
                .collect();
            let mut idx = RootIdx::default();
            if let Some(r) = self.lock().by_root.get(&root) {
                for z in &stored {
                    for blk in r.blks(*z) {
                        idx.bind(*blk, *z);
                    }
                }
            }
            // a binding that changed in the window is known from its
            // latest change, tracked explicitly or not
            let mut latest: BTreeMap<i64, Oid> = BTreeMap::new();
            for e in vdt.iter() {
                for (k, dv) in &e.kv {
                    latest.insert(*k, dv.new);
                }
            }
            for (k, v) in latest {
                idx.bind(k, v);
            }
            let mut ti = vdt.len();
            for dz in vdz.iter().rev() {
                let r = dz.rev;
                let dt: Option<&DeltaKV> = if ti > 0 && vdt[ti - 1].rev == r {
                    ti -= 1;
                    Some(&vdt[ti].kv)
                } else {
                    None
                };
                if r <= b {
                    let mut blocks = BTreeSet::new();
                    for o in &dz.oids {
                        blocks.extend(idx.blks(*o));
                    }
                    if let Some(kv) = dt {
                        blocks.extend(kv.keys());
                    }
                    if opts.only_explicitly_tracked {
                        match &explicit {
                            Some(ex) => blocks.retain(|k| ex.has(*k)),
                            None => blocks.clear(),
                        }
                    }
                    if !blocks.is_empty() || dt.is_some() {
                        let d = out.entry(r).or_insert_with(|| DeltaFile {
                            rev: r,
                            ..DeltaFile::default()
                        });
                        if !d.epoch {
                            d.blocks.extend(blocks);
                            d.size |= dt.is_some();
                        }
                    }
                }
                if let Some(kv) = dt {
                    for (k, dv) in kv {
                        idx.bind(*k, dv.old);
                    }
                }
            }
        }
        Ok(out
            .into_values()
            .filter(|d| d.epoch || !d.blocks.is_empty() || d.size)
            .collect())
    }

    /// The changes of every tracked file with `rev ∈ (lo, hi]`. Reader.
    pub fn slice_by_rev(&self, lo: Tid, hi: Tid) -> Result<Vec<DeltaF>> {
        let mut by_rev: BTreeMap<Tid, DeltaF> = BTreeMap::new();
        let files: Vec<Oid> = self.files.load().keys().copied().collect();
        for f in files {
            for d in self.slice_by_file_rev(f, lo, hi)? {
                by_rev
                    .entry(d.rev)
                    .or_insert_with(|| DeltaF {
                        rev: d.rev,
                        by_file: BTreeMap::new(),
                    })
                    .by_file
                    .insert(f, d);
            }
        }
        Ok(by_rev.into_values().collect())
    }
}

/// The file `oid` as of `at`.
fn load_state(db: &dyn Storage, oid: Oid, at: Tid) -> Result<FileState> {
    match ZBigFile::load(db, oid, at) {
        Ok(f) => Ok(Some((f.blksize, f.blktab))),
        Err(e) if e.is_no_object() => Ok(None),
        Err(zodb::Error::WrongClass { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

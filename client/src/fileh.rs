//! `FileH` (one watched file of a [`Conn`](crate::Conn)) and `Mapping`
//! (one memory mapping of it), with the remapping the pinner does on them.

use crate::conn::ConnInner;
use crate::error::{Error, Result};
use crate::mm;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use ztypes::{Oid, Tid};

/// How many `@<rev>/bigfile/<oid>` descriptors a file keeps open for
/// pinning (the oldest opened is closed first).
const REV_FD_CACHE: usize = 16;

/// `FileHInner::state` values. Written under `Conn::fileh_mu` W (or by
/// the opener/closer holding `watch_mu`); read anywhere.
pub(crate) const OPENING: u8 = 0;
pub(crate) const OPEN: u8 = 1;
pub(crate) const CLOSING: u8 = 2;
pub(crate) const CLOSED: u8 = 3;

/// The shared part of a file handle: lives while a [`FileH`] or a
/// [`Mapping`] refers to it.
pub(crate) struct FileHInner {
    pub(crate) foid: Oid,
    /// `<mnt>/head/bigfile/<oid>`.
    pub(crate) path: PathBuf,
    /// `<mnt>`, to find `@<rev>/bigfile/<oid>`.
    mnt: PathBuf,
    pub(crate) blksize: u64,
    /// The process that opened it: in a forked child everything fails.
    pid: u32,
    /// Serializes the watch requests of this file (open's `watch @at`,
    /// resync's `watch @at'`, close's `watch -`), held across the whole
    /// open and the whole close, so that they reach the server in the
    /// order their effects are applied here; someone finding the file
    /// opening or closing waits on it. Taken under `Conn::at_mu` R, before
    /// `Conn::fileh_mu`. The pinner never takes it.
    pub(crate) watch_mu: Mutex<()>,
    /// `OPENING`/`OPEN`/`CLOSING`/`CLOSED`; see the constants.
    pub(crate) state: AtomicU8,
    /// User handles ([`FileH`]s). Decided "last" under `Conn::fileh_mu` W.
    pub(crate) nopen: AtomicUsize,
    /// Set (before the mappings become PROT_NONE) when the file is closed;
    /// [`Mapping::read_at`] checks it.
    closed: AtomicBool,
    /// The head descriptor number, -1 once closed: for the fork child
    /// handler, which cannot take `mmap_mu`.
    head_fd_raw: AtomicI32,
    /// Mappings, pins and the descriptors they are made from.
    pub(crate) mmap_mu: Mutex<MmapState>,
}

/// Protected by `FileHInner::mmap_mu`; `headfsize` changes only with
/// `Conn::at_mu` W held as well.
pub(crate) struct MmapState {
    /// `head/bigfile/<oid>`, `None` once closed.
    head: Option<File>,
    /// Size of the head file as of the Conn's view (a multiple of blksize).
    pub(crate) headfsize: u64,
    /// Live mappings.
    mmaps: Vec<MapRange>,
    /// blk -> rev of the pins in force (`@head` ones are not kept).
    pub(crate) pinned: BTreeMap<i64, Tid>,
    /// rev -> (`@<rev>/bigfile/<oid>`, its size), oldest first.
    revs: Vec<(Tid, File, u64)>,
    next_id: u64,
}

/// One live mapping as the file sees it.
#[derive(Clone, Copy)]
struct MapRange {
    id: u64,
    addr: usize,
    len: usize,
    blk_start: i64,
    blk_len: i64,
}

impl MapRange {
    fn covers(&self, blk: i64) -> bool {
        self.blk_start <= blk && blk - self.blk_start < self.blk_len
    }
}

impl FileHInner {
    /// Open and stat `head/bigfile/<foid>`: `blksize` is the override if
    /// given, else `st_blksize`; the size must be a multiple of it.
    pub(crate) fn open(mnt: &Path, foid: Oid, blksize_override: Option<u64>) -> Result<FileHInner> {
        let path = mnt.join("head/bigfile").join(foid.to_string());
        let file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        let md = file.metadata().map_err(|e| Error::io(&path, "fstat", e))?;
        let blksize = blksize_override.unwrap_or(md.blksize());
        let bad = |reason: String| Error::BadFile {
            path: path.clone(),
            reason,
        };
        let page = mm::page_size() as u64;
        if blksize == 0 || blksize % page != 0 {
            return Err(bad(format!(
                "blksize {blksize} is not a multiple of the page size {page}"
            )));
        }
        let size = md.size();
        if size % blksize != 0 {
            return Err(bad(format!(
                "size {size} is not a multiple of blksize {blksize}"
            )));
        }
        let raw = file.as_raw_fd();
        Ok(FileHInner {
            foid,
            path,
            mnt: mnt.to_owned(),
            blksize,
            pid: std::process::id(),
            watch_mu: Mutex::new(()),
            state: AtomicU8::new(OPENING),
            nopen: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
            head_fd_raw: AtomicI32::new(raw),
            mmap_mu: Mutex::new(MmapState {
                head: Some(file),
                headfsize: size,
                mmaps: Vec::new(),
                pinned: BTreeMap::new(),
                revs: Vec::new(),
                next_id: 0,
            }),
        })
    }

    fn forked(&self) -> bool {
        std::process::id() != self.pid
    }

    /// Make `blk` of every mapping show `rev` (`None`: head) and record the
    /// pin. Called by the pinner with `Conn::at_mu` R.
    pub(crate) fn pin(&self, blk: i64, rev: Option<Tid>) -> std::result::Result<(), String> {
        let mut st = self.mmap_mu.lock();
        if st.head.is_none() {
            return Err(format!("f<{}>: file is closed", self.foid));
        }
        if blk < 0
            || blk
                .checked_add(1)
                .and_then(|b| b.checked_mul(self.blksize as i64))
                .is_none()
        {
            return Err(format!("f<{}>: invalid block #{blk}", self.foid));
        }
        let mmaps: Vec<MapRange> = st.mmaps.iter().copied().filter(|m| m.covers(blk)).collect();
        for m in mmaps {
            self.remap_blk(&mut st, m, blk, rev)
                .map_err(|e| format!("f<{}>: remap #{blk}: {e}", self.foid))?;
        }
        match rev {
            Some(r) => st.pinned.insert(blk, r),
            None => st.pinned.remove(&blk),
        };
        Ok(())
    }

    /// Map `blk` (covered by `m`) from `@rev` (or head), or zeros if that
    /// file ends before the block does.
    fn remap_blk(&self, st: &mut MmapState, m: MapRange, blk: i64, rev: Option<Tid>) -> Result<()> {
        let bs = self.blksize;
        let (fd, fsize) = match rev {
            None => match &st.head {
                Some(h) => (h.as_raw_fd(), st.headfsize),
                None => return Err(Error::FileClosed(self.foid)),
            },
            Some(rev) => self.rev_file(st, rev)?,
        };
        let addr = m.addr + ((blk - m.blk_start) as u64 * bs) as usize;
        let end = (blk as u64 + 1) * bs;
        if end > fsize {
            // SAFETY: [addr, addr+bs) is block `blk` of mapping `m`, which
            // is registered in `st.mmaps` (so not unmapped: Mapping::drop
            // unregisters under mmap_mu, which we hold, before munmap).
            unsafe { mm::map_zero_fixed(addr, bs as usize) }
        } else {
            // SAFETY: as above.
            unsafe { mm::map_file_fixed(addr, bs as usize, fd, blk as u64 * bs) }
        }
    }

    /// The descriptor and size of `@<rev>/bigfile/<oid>`, opened once.
    fn rev_file(&self, st: &mut MmapState, rev: Tid) -> Result<(RawFd, u64)> {
        if let Some((_, f, size)) = st.revs.iter().find(|(r, _, _)| *r == rev) {
            return Ok((f.as_raw_fd(), *size));
        }
        let path = self
            .mnt
            .join(format!("@{rev}"))
            .join("bigfile")
            .join(self.foid.to_string());
        let f = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        let size = f
            .metadata()
            .map_err(|e| Error::io(&path, "fstat", e))?
            .size();
        if st.revs.len() >= REV_FD_CACHE {
            st.revs.remove(0);
        }
        let fd = f.as_raw_fd();
        st.revs.push((rev, f, size));
        Ok((fd, size))
    }

    /// Resync, local part (`Conn::at_mu` W held): re-stat the head file;
    /// blksize must not change and the size must not shrink; map head data
    /// over the former zero tail of every mapping (except pinned blocks).
    pub(crate) fn resync_local(&self, blksize_override: Option<u64>) -> Result<()> {
        let mut st = self.mmap_mu.lock();
        let Some(head) = &st.head else {
            return Ok(());
        };
        let fd = head.as_raw_fd();
        let md = head
            .metadata()
            .map_err(|e| Error::io(&self.path, "fstat", e))?;
        let bad = |reason: String| Error::BadFile {
            path: self.path.clone(),
            reason,
        };
        let blksize = blksize_override.unwrap_or(md.blksize());
        if blksize != self.blksize {
            return Err(bad(format!(
                "blksize changed: {} -> {blksize}",
                self.blksize
            )));
        }
        let size = md.size();
        if size < st.headfsize {
            return Err(bad(format!("file shrank: {} -> {size}", st.headfsize)));
        }
        if size % blksize != 0 {
            return Err(bad(format!(
                "size {size} is not a multiple of blksize {blksize}"
            )));
        }
        let (old, bs) = (st.headfsize, self.blksize);
        st.headfsize = size;
        for m in st.mmaps.clone() {
            let mstart = m.blk_start as u64 * bs;
            let mend = mstart + m.len as u64;
            let (lo, hi) = (old.max(mstart), size.min(mend));
            if lo >= hi {
                continue;
            }
            let mut blk = (lo / bs) as i64;
            while (blk as u64) * bs < hi {
                if !st.pinned.contains_key(&blk) {
                    let addr = m.addr + ((blk - m.blk_start) as u64 * bs) as usize;
                    // SAFETY: block `blk` of the registered mapping `m`
                    // (see remap_blk); mmap_mu held.
                    unsafe { mm::map_file_fixed(addr, bs as usize, fd, blk as u64 * bs)? };
                }
                blk += 1;
            }
        }
        Ok(())
    }

    /// Close locally: no more pins, the head and @rev descriptors closed,
    /// every mapping turned PROT_NONE (a stale access faults instead of
    /// reading wrong data). The mappings stay reserved until their
    /// [`Mapping`] is dropped.
    pub(crate) fn close_local(&self) {
        self.closed.store(true, Ordering::Release);
        self.state.store(CLOSED, Ordering::Release);
        let mut st = self.mmap_mu.lock();
        self.head_fd_raw.store(-1, Ordering::Relaxed);
        st.head = None;
        st.revs.clear();
        for m in &st.mmaps {
            // SAFETY: a registered mapping, mmap_mu held (see remap_blk).
            if let Err(e) = unsafe { mm::map_none_fixed(m.addr, m.len) } {
                tracing::error!(foid = %self.foid, %e, "close: cannot disable mapping");
            }
        }
    }

    /// Fork child handler part: point the head and @rev descriptors at
    /// `devnull` and make the mappings PROT_NONE, if `mmap_mu` is free
    /// (a lock held by a parent thread at fork time stays locked forever in
    /// the child: then the mappings are left as they are). The guard is
    /// leaked on purpose: unlocking could enter parking_lot's slow path.
    /// Only async-signal-safe operations: atomics, dup2, mmap.
    pub(crate) fn after_fork(&self, devnull: RawFd) {
        self.closed.store(true, Ordering::Relaxed);
        let fd = self.head_fd_raw.load(Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: dup2 onto a descriptor number we own; no memory effects.
            unsafe { libc::dup2(devnull, fd) };
        }
        if let Some(st) = self.mmap_mu.try_lock() {
            for m in &st.mmaps {
                // SAFETY: a registered mapping of ours; the child has one
                // thread, and the registry cannot change under us.
                let _ = unsafe { mm::map_none_fixed(m.addr, m.len) };
            }
            for (_, f, _) in &st.revs {
                // SAFETY: as above for the head descriptor.
                unsafe { libc::dup2(devnull, f.as_raw_fd()) };
            }
            std::mem::forget(st);
        }
    }
}

/// An opened file of a [`Conn`](crate::Conn): `head/bigfile/<oid>` watched
/// at the Conn's view. Clones share it; the last drop (or
/// [`FileH::close`]) stops watching, closes the head file and turns its
/// remaining mappings PROT_NONE.
pub struct FileH {
    pub(crate) conn: Arc<ConnInner>,
    pub(crate) inner: Arc<FileHInner>,
    /// Set by [`FileH::close`], which released already.
    pub(crate) released: bool,
}

impl std::fmt::Debug for FileH {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileH")
            .field("foid", &self.inner.foid)
            .field("blksize", &self.inner.blksize)
            .finish_non_exhaustive()
    }
}

impl Clone for FileH {
    fn clone(&self) -> FileH {
        // We hold a handle, so nopen >= 1 and nobody can be deciding that
        // the count reached zero (that happens under fileh_mu W from 1).
        self.inner.nopen.fetch_add(1, Ordering::Relaxed);
        FileH {
            conn: self.conn.clone(),
            inner: self.inner.clone(),
            released: false,
        }
    }
}

impl Drop for FileH {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Err(e) = self.conn.release_fileh(&self.inner) {
            tracing::warn!(foid = %self.inner.foid, %e, "close file");
        }
    }
}

impl FileH {
    /// The file's oid.
    pub fn foid(&self) -> Oid {
        self.inner.foid
    }

    /// The block size (`st_blksize` of the head file).
    pub fn blksize(&self) -> u64 {
        self.inner.blksize
    }

    /// The size of the file as of the Conn's view (more exactly: as of the
    /// head at open or last resync; blocks past the view's size read as
    /// zeros through pins).
    pub fn size(&self) -> u64 {
        self.inner.mmap_mu.lock().headfsize
    }

    /// Release this handle now, returning the error of the final `watch -`
    /// if this was the last handle (dropping does the same, logging it).
    pub fn close(mut self) -> Result<()> {
        self.released = true;
        self.conn.release_fileh(&self.inner)
    }

    /// Map blocks `[blk_start, blk_start+blk_len)` read-only: head data,
    /// zeros past the file's size, and the pins in force. The pinner keeps
    /// the mapping up to date until it or the file is dropped.
    pub fn mmap(&self, blk_start: i64, blk_len: i64) -> Result<Mapping> {
        let f = &self.inner;
        if f.forked() {
            return Err(Error::Forked);
        }
        self.conn.check_usable()?;
        let bs = f.blksize;
        let bad = || Error::InvalidArg(format!("mmap #[{blk_start}, +{blk_len})"));
        if blk_start < 0 || blk_len <= 0 {
            return Err(bad());
        }
        let end_blk = blk_start.checked_add(blk_len).ok_or_else(bad)?;
        let start = (blk_start as u64).checked_mul(bs).ok_or_else(bad)?;
        let end = (end_blk as u64).checked_mul(bs).ok_or_else(bad)?;
        if end > i64::MAX as u64 {
            return Err(bad());
        }
        let len = usize::try_from(end - start).map_err(|_| bad())?;

        let mut st = f.mmap_mu.lock();
        if f.state.load(Ordering::Acquire) != OPEN {
            return Err(Error::FileClosed(f.foid));
        }
        let Some(head) = &st.head else {
            return Err(Error::FileClosed(f.foid));
        };
        let addr = mm::map_file(head.as_raw_fd(), start, len).map_err(|e| Error::BadFile {
            path: f.path.clone(),
            reason: e.to_string(),
        })?;
        let m = MapRange {
            id: st.next_id,
            addr,
            len,
            blk_start,
            blk_len,
        };
        let setup = (|| -> Result<()> {
            if st.headfsize < end {
                let z = st.headfsize.max(start);
                // SAFETY: [z, end) lies inside the range we just mapped and
                // nobody else knows about yet.
                unsafe { mm::map_zero_fixed(addr + (z - start) as usize, (end - z) as usize)? };
            }
            let pins: Vec<(i64, Tid)> = st
                .pinned
                .range(blk_start..end_blk)
                .map(|(b, r)| (*b, *r))
                .collect();
            for (blk, rev) in pins {
                f.remap_blk(&mut st, m, blk, Some(rev))?;
            }
            Ok(())
        })();
        if let Err(e) = setup {
            // SAFETY: our fresh, unregistered range.
            unsafe { mm::unmap(addr, len) };
            return Err(e);
        }
        st.next_id += 1;
        st.mmaps.push(m);
        Ok(Mapping {
            fileh: f.clone(),
            id: m.id,
            addr,
            len,
            blk_start,
            blk_len,
        })
    }
}

/// A read-only memory mapping of blocks `[blk_start, +blk_len)` of a
/// [`FileH`], showing the file as of its Conn's view. Dropping it unmaps.
pub struct Mapping {
    fileh: Arc<FileHInner>,
    id: u64,
    addr: usize,
    len: usize,
    blk_start: i64,
    blk_len: i64,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("foid", &self.fileh.foid)
            .field("blk_start", &self.blk_start)
            .field("blk_len", &self.blk_len)
            .field("addr", &format_args!("{:#x}", self.addr))
            .finish()
    }
}

impl Mapping {
    /// First block.
    pub fn blk_start(&self) -> i64 {
        self.blk_start
    }

    /// Number of blocks.
    pub fn blk_len(&self) -> i64 {
        self.blk_len
    }

    /// Start address.
    pub fn as_ptr(&self) -> *const u8 {
        self.addr as *const u8
    }

    /// Length in bytes (`blk_len * blksize`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: mappings have at least one block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes.
    ///
    /// # Safety
    ///
    /// The memory changes under the slice when the pinner handles a pin or
    /// the Conn resyncs, and becomes inaccessible (access = SIGSEGV) once
    /// the file is closed or the process forks. The caller must not hold
    /// the slice across those events, or must accept both.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: [addr, addr+len) stays mapped (readable until the file
        // closes) for the lifetime of self; the rest is the caller's
        // obligation, stated above.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// Copy `buf.len()` bytes at offset `off` into `buf`.
    ///
    /// Fails if the range is out of bounds, the file is closed, or in a
    /// forked child. (A close racing with the copy can still fault.)
    pub fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        if self.fileh.forked() {
            return Err(Error::Forked);
        }
        if self.fileh.closed.load(Ordering::Acquire) {
            return Err(Error::FileClosed(self.fileh.foid));
        }
        if off.checked_add(buf.len()).is_none_or(|e| e > self.len) {
            return Err(Error::InvalidArg(format!(
                "read_at {off}+{} > {}",
                buf.len(),
                self.len
            )));
        }
        // SAFETY: [addr+off, addr+off+buf.len()) lies inside the mapping,
        // which stays mapped for the lifetime of self and is readable
        // while the file is open (checked above); `buf` is a distinct
        // Rust allocation. Pages remapped concurrently by the pinner are
        // replaced atomically by the kernel: we read old or new data.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.addr + off) as *const u8,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    /// The mapped bytes, copied.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = vec![0; self.len];
        self.read_at(0, &mut v)?;
        Ok(v)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.fileh.forked() {
            // The child has no pinner; the registry may be locked forever.
            // SAFETY: our range; no other user in the child process.
            unsafe { mm::unmap(self.addr, self.len) };
            return;
        }
        let mut st = self.fileh.mmap_mu.lock();
        st.mmaps.retain(|m| m.id != self.id);
        // SAFETY: our range, unregistered above under mmap_mu, so the
        // pinner cannot remap it any more; nothing borrows from self.
        unsafe { mm::unmap(self.addr, self.len) };
    }
}

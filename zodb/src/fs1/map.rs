//! The committed part of `Data.fs`, mapped read-only.
//!
//! Loads read record headers and object data straight from a shared
//! read-only mapping of the file: no syscall per load, and object data is
//! handed out as [`Bytes`] that point into the page cache (zero copy), so a
//! 2 MiB block is never copied by the storage layer. The mapping is replaced
//! by a longer one when the committed part grows past its end; data handed
//! out keeps the mapping it came from alive.
//!
//! # Why this is sound
//!
//! Creating a mapping is `unsafe` because Rust assumes the bytes behind a
//! `&[u8]` do not change, and a mapped file can be changed by anyone. We
//! only ever make slices of `[0, top)`, the committed part, and FileStorage
//! never rewrites committed bytes: it is append-only; a writer overwrites a
//! status byte and truncates only above its own committed end (which is >=
//! ours); pack writes a new file and renames it over the path, leaving our
//! inode untouched. The remaining hazard is a process that truncates or
//! rewrites committed data against the format's rules: a read of truncated
//! pages raises SIGBUS, as for every mmap-based database (LMDB has the same
//! contract). Once a sync sees the file shrink below `top`, the storage is
//! marked broken and loads stop touching the mapping (`Core::broken`).

#![allow(unsafe_code)]

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

/// A read-only mapping of the first `len` bytes of the file.
pub(super) struct Mapping {
    /// `None` for a zero-length mapping (mmap refuses length 0).
    mmap: Option<Mmap>,
}

impl Mapping {
    /// An empty mapping, for a file with no committed data yet.
    pub(super) fn empty() -> Mapping {
        Mapping { mmap: None }
    }

    /// Map the first `len` bytes of `file` (which must be at least that long).
    pub(super) fn new(file: &File, len: u64) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping::empty());
        }
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
        // SAFETY: the mapping is read-only and we only ever slice the part of
        // it below the committed end `top`, bytes that FileStorage never
        // changes or truncates (see the module docs for the full argument and
        // for the one hazard left: a foreign process breaking the format).
        let mmap = unsafe { MmapOptions::new().len(len).map(file)? };
        // No madvise(WILLNEED): on a database of many GiB it would start
        // reading all of it; faults bring in what loads touch.
        Ok(Mapping { mmap: Some(mmap) })
    }

    /// Mapped length.
    pub(super) fn len(&self) -> u64 {
        self.mmap.as_ref().map_or(0, |m| m.len() as u64)
    }

    /// The bytes of `range`, if it lies inside the mapping.
    pub(super) fn get(&self, range: Range<u64>) -> Option<&[u8]> {
        let m = self.mmap.as_ref()?;
        let (a, b) = (
            usize::try_from(range.start).ok()?,
            usize::try_from(range.end).ok()?,
        );
        m.get(a..b)
    }
}

/// A slice of a mapping that keeps the mapping alive: the owner behind
/// zero-copy [`Bytes`].
struct MapSlice {
    map: Arc<Mapping>,
    range: Range<usize>,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        // `bytes()` checked the range when the slice was made.
        &self.map.mmap.as_ref().expect("non-empty mapping")[self.range.clone()]
    }
}

/// `range` of `map` as [`Bytes`] sharing the mapping; `None` if out of range.
pub(super) fn bytes(map: &Arc<Mapping>, range: Range<u64>) -> Option<Bytes> {
    if range.is_empty() {
        return Some(Bytes::new());
    }
    map.get(range.clone())?;
    Some(Bytes::from_owner(MapSlice {
        map: map.clone(),
        range: range.start as usize..range.end as usize,
    }))
}

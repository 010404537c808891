//! `@<rev>/` files: immutable views of a file as of a revision, and the
//! trim that drops the page cache of those nobody is pinned to.

use super::errno::{lookup_error, FsError};
use super::fs::{db_err, lock, Inval, Wcfs};
use super::nodes::{Node, ROOT};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zodb::zbigfile::ZBigFile;
use zodb::Tid;

/// How often the page cache of `@<rev>/` files nobody is pinned to is
/// dropped ([`Wcfs::trim_revs`]).
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// A file of `@<tid>/bigfile/`.
#[derive(Debug)]
pub struct RevFile {
    pub at: Tid,
    pub zfile: ZBigFile,
    pub size: u64,
    /// Read since the last trim (the kernel may cache some of it).
    /// Relaxed: a hint; a missed trim only keeps pages longer.
    pub read: std::sync::atomic::AtomicBool,
}

/// The `@<rev>/` files made so far.
pub struct Revs {
    /// Every `@<rev>/bigfile/<oid>` made, with its inode (for trims).
    /// A leaf lock, held briefly.
    pub files: Mutex<Vec<(u64, Arc<RevFile>)>>,
    /// When `@<rev>/` page cache was last trimmed.
    pub last_trim: Mutex<Instant>,
}

impl Default for Revs {
    fn default() -> Revs {
        Revs::new()
    }
}

impl Revs {
    pub fn new() -> Revs {
        Revs {
            files: Mutex::new(Vec::new()),
            last_trim: Mutex::new(Instant::now()),
        }
    }
}

impl Wcfs {
    /// `@<tid>` in `/`: EINVAL unless `@` + 16 hex digits; a tid beyond
    /// head/at is ENOENT (the state does not exist yet; a later lookup,
    /// once head/at reached it, succeeds).
    pub fn lookup_rev(&self, name: &str) -> Result<u64, FsError> {
        let at: Tid = name
            .strip_prefix('@')
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| FsError::Inval(format!("/{name}: not @rev")))?;
        if at > self.head_at() {
            return Err(FsError::NoEnt);
        }
        let mut made = false;
        let ino = self.nodes.child(ROOT, name, || {
            made = true;
            Node::RevDir(at)
        });
        if made {
            self.stats.rev_head.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ino)
    }

    pub fn lookup_rev_file(&self, parent: u64, at: Tid, name: &str) -> Result<u64, FsError> {
        let oid = Self::parse_oid(&format!("@{at}/bigfile"), name)?;
        if let Some(ino) = self.nodes.existing_child(parent, name) {
            return Ok(ino);
        }
        let zf = ZBigFile::load(&*self.stor, oid, at).map_err(|e| lookup_error(oid, e))?;
        let size = zf
            .size(&*self.stor, at)
            .map_err(|e| db_err(oid, format!("@{at}: size"), e))?;
        let rf = Arc::new(RevFile {
            at,
            zfile: zf,
            size,
            read: Default::default(),
        });
        let mut made = false;
        let ino = self.nodes.child(parent, name, || {
            made = true;
            Node::RevFile(rf.clone())
        });
        if made {
            lock(&self.revs.files).push((ino, rf));
        }
        Ok(ino)
    }

    /// The `@<rev>/` files read since the last trim whose revision no
    /// watch has pinned: their page cache is to be dropped (the caller
    /// sends the invalidations). Nobody is told to map them, so this costs
    /// at most a re-read; without it every revision a client was ever
    /// pinned to keeps its pages (they pile up with the commits).
    pub fn trim_revs(&self) -> Vec<Inval> {
        *lock(&self.revs.last_trim) = Instant::now();
        let pinned: std::collections::HashSet<Tid> = self
            .iso
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .flat_map(|w| {
                lock(&w.st)
                    .pinned
                    .values()
                    .map(|(r, _)| *r)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut out = Vec::new();
        for (ino, rf) in lock(&self.revs.files).iter() {
            if pinned.contains(&rf.at) || !rf.read.swap(false, Ordering::Relaxed) {
                continue;
            }
            out.push(Inval {
                ino: *ino,
                off: 0,
                len: 0,
                keep: None,
            });
        }
        self.stats
            .rev_trimmed
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }
}

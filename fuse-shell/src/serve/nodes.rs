//! The inode table: what each inode is, names in directories, the
//! attributes and open modes the FUSE adapter turns into replies. Its own
//! mutex, held briefly (a leaf lock).

use super::fs::lock;
use super::rev::RevFile;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use zodb::{Oid, Tid};

// ---- inodes ----

/// `/`.
pub const ROOT: u64 = 1;

/// `head/`.
pub const HEAD: u64 = 2;

/// `head/at`.
pub const HEAD_AT: u64 = 3;

/// `head/bigfile/`.
pub const HEAD_BIGFILE: u64 = 4;

/// `.wcfs/`.
pub const DOT_WCFS: u64 = 5;

/// `.wcfs/zurl`.
pub const ZURL: u64 = 6;

/// `.wcfs/stats`.
pub const STATS: u64 = 7;

/// `.wcfs/pintimeout`.
pub const PINTIMEOUT: u64 = 8;

/// `head/watch`.
pub const HEAD_WATCH: u64 = 9;

/// `.wcfs/debug/` (with `--debug`).
pub const DEBUG_DIR: u64 = 10;

/// `.wcfs/debug/zhead` (with `--debug`).
pub const DEBUG_ZHEAD: u64 = 11;

/// The first inode number handed out on lookup.
pub const FIRST_DYNAMIC: u64 = 16;

/// What an inode is.
#[derive(Debug, Clone)]
pub enum Node {
    Root,
    Head,
    HeadAt,
    HeadWatch,
    HeadBigDir,
    DotWcfs,
    Zurl,
    Stats,
    PinTimeout,
    /// `.wcfs/debug/`.
    DebugDir,
    /// `.wcfs/debug/zhead`: a stream of processed transactions.
    DebugZhead,
    /// `@<tid>/`.
    RevDir(Tid),
    /// `@<tid>/bigfile/`.
    RevBigDir(Tid),
    /// `head/bigfile/<oid>`: its state lives in the head view ([`super::head::HeadView`]).
    HeadFile(Oid),
    /// `@<tid>/bigfile/<oid>`: immutable.
    RevFile(Arc<RevFile>),
}

#[derive(Debug, Default)]
pub struct Nodes {
    /// ino -> Node
    pub by_ino: HashMap<u64, Node>,
    /// (parent ino, name) -> ino
    pub by_name: HashMap<(u64, String), u64>,
    pub next: u64,
}

/// The kind of an inode, as stat shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Attributes of an inode, independent of the FUSE library.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub mtime: SystemTime,
    pub blksize: u32,
    /// The attributes may change (head/ files, small files): no caching.
    pub volatile: bool,
}

/// How a file is to be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Data files and static files: keep the kernel page cache across opens.
    KeepCache,
    /// Small files computed on read (`head/at`, `.wcfs/stats`).
    DirectIo,
    /// `head/watch`: a stream (no offsets, no cache), opened read-write.
    Stream,
}

/// The inode table.
pub struct NodeTable {
    pub mu: Mutex<Nodes>,
}

impl Default for NodeTable {
    fn default() -> NodeTable {
        NodeTable::new()
    }
}

impl NodeTable {
    /// The fixed inodes of a new mount.
    pub fn new() -> NodeTable {
        let mut nodes = Nodes {
            next: FIRST_DYNAMIC,
            ..Nodes::default()
        };
        for (ino, parent, name, node) in [
            (ROOT, 0, "", Node::Root),
            (HEAD, ROOT, "head", Node::Head),
            (HEAD_AT, HEAD, "at", Node::HeadAt),
            (HEAD_WATCH, HEAD, "watch", Node::HeadWatch),
            (HEAD_BIGFILE, HEAD, "bigfile", Node::HeadBigDir),
            (DOT_WCFS, ROOT, ".wcfs", Node::DotWcfs),
            (ZURL, DOT_WCFS, "zurl", Node::Zurl),
            (STATS, DOT_WCFS, "stats", Node::Stats),
            (PINTIMEOUT, DOT_WCFS, "pintimeout", Node::PinTimeout),
        ] {
            nodes.by_ino.insert(ino, node);
            if parent != 0 {
                nodes.by_name.insert((parent, name.to_owned()), ino);
            }
        }
        NodeTable {
            mu: Mutex::new(nodes),
        }
    }

    /// Add `.wcfs/debug/zhead` (`--debug`).
    pub fn add_debug(&self) {
        let mut n = lock(&self.mu);
        for (ino, parent, name, node) in [
            (DEBUG_DIR, DOT_WCFS, "debug", Node::DebugDir),
            (DEBUG_ZHEAD, DEBUG_DIR, "zhead", Node::DebugZhead),
        ] {
            n.by_ino.insert(ino, node);
            n.by_name.insert((parent, name.to_owned()), ino);
        }
    }

    /// What inode `ino` is.
    pub fn get(&self, ino: u64) -> Option<Node> {
        lock(&self.mu).by_ino.get(&ino).cloned()
    }

    /// The inode of `name` in `parent`, made by `make` if it is not there.
    pub fn child(&self, parent: u64, name: &str, make: impl FnOnce() -> Node) -> u64 {
        let mut n = lock(&self.mu);
        if let Some(&ino) = n.by_name.get(&(parent, name.to_owned())) {
            return ino;
        }
        let ino = n.next;
        n.next += 1;
        n.by_ino.insert(ino, make());
        n.by_name.insert((parent, name.to_owned()), ino);
        ino
    }

    /// The inode of `name` in `parent`, if it was made.
    pub fn existing_child(&self, parent: u64, name: &str) -> Option<u64> {
        lock(&self.mu)
            .by_name
            .get(&(parent, name.to_owned()))
            .copied()
    }

    /// The entries of directory `ino` made so far, by name.
    pub fn entries(&self, ino: u64) -> Vec<(u64, Kind, String)> {
        let n = lock(&self.mu);
        let mut out: Vec<(u64, Kind, String)> = n
            .by_name
            .iter()
            .filter(|((p, _), _)| *p == ino)
            .map(|((_, name), &c)| {
                let kind = match n.by_ino.get(&c) {
                    Some(
                        Node::HeadFile(_)
                        | Node::RevFile(_)
                        | Node::HeadAt
                        | Node::HeadWatch
                        | Node::Zurl
                        | Node::Stats
                        | Node::PinTimeout
                        | Node::DebugZhead,
                    ) => Kind::File,
                    _ => Kind::Dir,
                };
                (c, kind, name.clone())
            })
            .collect();
        out.sort_by(|a, b| a.2.cmp(&b.2));
        out
    }
}

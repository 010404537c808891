//! The writer: creates the files, then commits block changes at a given
//! rate and appends every committed transaction to the history log.
//!
//! Transactions (chosen by the seeded generator): a few blocks rewritten;
//! files grown by several blocks; many blocks written or deleted at once
//! (the blktab splits and merges; deletions leave holes); now and then one
//! file's blktab replaced by a new tree with the same blocks (an epoch).
//! The last block of a file is never deleted: files only grow, as clients
//! assume.
//!
//! Block changes are committed as ZODB would commit them
//! ([`ZWriter::update_file_incremental`]): the ZBlks written and only the
//! blktab nodes that change, so that the database grows by what a real
//! application would add. (At 2 MiB blocks that is almost all block data:
//! the blktab nodes were never the bulk; see `--max-db-bytes`.)

use crate::model::{content, mix};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::btree::{self, Family};
use zodb::zbigfile::{self, NewObject, ZBigFile, ZBlkFormat};
use zodb::zeo::ZeoWriter;
use zodb::zwrite::{ZBackend, ZWriter};
use zodb::{Oid, Storage, Tid};

/// One file as the writer sees it.
struct WFile {
    oid: Oid,
    blksize: u64,
    /// Blocks `[0, nblk)` may exist; `nblk - 1` always does.
    nblk: i64,
}

/// The writer's state; it commits to a FileStorage (the default) or
/// through a ZEO server (`B` = [`ZeoWriter`]).
pub(crate) struct Writer<B: ZBackend = zodb::fs1::Writer> {
    zw: ZWriter<B>,
    log: std::fs::File,
    seed: u64,
    files: Vec<WFile>,
    max_blocks: i64,
    seq: u64,
    rng: u64,
}

/// What the writer did so far (read by the progress reports).
#[derive(Default)]
pub(crate) struct WStats {
    pub(crate) commits: AtomicU64,
    pub(crate) epochs: AtomicU64,
    pub(crate) blocks_written: AtomicU64,
    pub(crate) blocks_deleted: AtomicU64,
    /// Size of Data.fs after the last commit.
    pub(crate) db_bytes: AtomicU64,
    /// The writer stopped because Data.fs reached its limit.
    pub(crate) db_full: AtomicBool,
}

impl Writer {
    /// Open `db` (creating it), create `nfiles` files of `blocks` blocks of
    /// `blksize` bytes, and start the log at `log`.
    pub(crate) fn create(
        db: &Path,
        log: &Path,
        seed: u64,
        nfiles: u32,
        blocks: i64,
        max_blocks: i64,
        blksize: u64,
    ) -> Result<Writer> {
        let zw = ZWriter::open(db).with_context(|| format!("open {}", db.display()))?;
        Writer::init(zw, log, seed, nfiles, blocks, max_blocks, blksize)
    }
}

impl Writer<ZeoWriter> {
    /// As [`Writer::create`], committing through the ZEO server at `addr`.
    pub(crate) fn create_zeo(
        addr: &str,
        log: &Path,
        seed: u64,
        nfiles: u32,
        blocks: i64,
        max_blocks: i64,
        blksize: u64,
    ) -> Result<Writer<ZeoWriter>> {
        let zw = ZWriter::open_zeo(addr, "1").with_context(|| format!("zeo://{addr}"))?;
        Writer::init(zw, log, seed, nfiles, blocks, max_blocks, blksize)
    }
}

impl<B: ZBackend> Writer<B> {
    fn init(
        mut zw: ZWriter<B>,
        log: &Path,
        seed: u64,
        nfiles: u32,
        blocks: i64,
        max_blocks: i64,
        blksize: u64,
    ) -> Result<Writer<B>> {
        // a small fanout: deep trees that split and merge as blocks come and go
        zw.blktab_shape.max_bucket = 8;
        zw.blktab_shape.max_tree = 4;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut w = Writer {
            zw,
            log,
            seed,
            files: Vec::new(),
            max_blocks,
            seq: 0,
            rng: mix(seed ^ 0x5752_4954_4552),
        };
        for f in 0..nfiles {
            w.seq += 1;
            let seq = w.seq;
            let data: Vec<Vec<u8>> = (0..blocks)
                .map(|b| content(seed, f, b, seq, blksize as usize))
                .collect();
            let ch: Vec<_> = data
                .iter()
                .enumerate()
                .map(|(b, d)| (b as i64, Some((ZBlkFormat::ZBlk0, d.as_slice()))))
                .collect();
            let (oid, tid) = w.zw.create_file(&format!("f{f}"), blksize, &ch)?;
            writeln!(w.log, "F {f} {oid} {blksize}")?;
            let ops: Vec<String> = (0..blocks).map(|b| format!("W {f} {b}")).collect();
            w.log_txn(tid, &ops)?;
            w.files.push(WFile {
                oid,
                blksize,
                nblk: blocks,
            });
        }
        Ok(w)
    }

    fn rand(&mut self) -> u64 {
        self.rng = mix(self.rng);
        self.rng
    }

    fn log_txn(&mut self, tid: Tid, ops: &[String]) -> Result<()> {
        let mut s = format!("T {tid} {}\n", self.seq);
        for o in ops {
            s += o;
            s.push('\n');
        }
        s += "C\n";
        self.log.write_all(s.as_bytes())?;
        self.log.flush()?;
        Ok(())
    }

    /// One transaction; an epoch with probability `epochs`/1000 (the
    /// other choices do not depend on it: the same seed gives the same
    /// writes, with some replaced by epochs).
    pub(crate) fn step(&mut self, epochs: u64, st: &WStats) -> Result<Tid> {
        let fi = (self.rand() % self.files.len() as u64) as usize;
        let r = self.rand() % 1000;
        if r < epochs {
            return self.epoch(fi, st);
        }
        let (nblk, bs) = (self.files[fi].nblk, self.files[fi].blksize as usize);
        let mut writes: Vec<i64> = Vec::new();
        let mut deletes: Vec<i64> = Vec::new();
        match r {
            // grow by 1..8 blocks
            4..=99 if nblk < self.max_blocks => {
                let k = 1 + (self.rand() % 8) as i64;
                let new = (nblk + k).min(self.max_blocks);
                writes.extend(nblk..new);
                self.files[fi].nblk = new;
            }
            // many at once: write 16..48 blocks, or delete a run of them
            100..=179 => {
                let k = 16 + (self.rand() % 33) as i64;
                if self.rand() % 2 == 0 {
                    for _ in 0..k {
                        writes.push((self.rand() % nblk as u64) as i64);
                    }
                } else if nblk > 2 {
                    let lo = (self.rand() % (nblk as u64 - 1)) as i64;
                    deletes.extend(lo..(lo + k).min(nblk - 1));
                }
            }
            // a hole or two
            180..=259 if nblk > 2 => {
                for _ in 0..1 + self.rand() % 2 {
                    deletes.push((self.rand() % (nblk as u64 - 1)) as i64);
                }
            }
            // a few blocks rewritten
            _ => {
                for _ in 0..1 + self.rand() % 4 {
                    writes.push((self.rand() % nblk as u64) as i64);
                }
            }
        }
        writes.sort_unstable();
        writes.dedup();
        deletes.sort_unstable();
        deletes.dedup();
        deletes.retain(|b| writes.binary_search(b).is_err());
        let seq = self.seq + 1;
        let data: Vec<Vec<u8>> = writes
            .iter()
            .map(|&b| content(self.seed, fi as u32, b, seq, bs))
            .collect();
        let mut ch: Vec<_> = writes
            .iter()
            .zip(&data)
            .map(|(&b, d)| {
                let fmt = if mix(seq ^ b as u64) % 3 == 0 {
                    ZBlkFormat::ZBlk1
                } else {
                    ZBlkFormat::ZBlk0
                };
                (b, Some((fmt, d.as_slice())))
            })
            .collect();
        ch.extend(deletes.iter().map(|&b| (b, None)));
        let tid = self.zw.update_file_incremental(self.files[fi].oid, &ch)?;
        self.seq = seq;
        let mut ops: Vec<String> = writes.iter().map(|b| format!("W {fi} {b}")).collect();
        ops.extend(deletes.iter().map(|b| format!("D {fi} {b}")));
        self.log_txn(tid, &ops)?;
        st.commits.fetch_add(1, Ordering::Relaxed);
        st.blocks_written
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        st.blocks_deleted
            .fetch_add(deletes.len() as u64, Ordering::Relaxed);
        Ok(tid)
    }

    /// Replace file `fi`'s blktab with a new tree holding the same blocks.
    fn epoch(&mut self, fi: usize, st: &WStats) -> Result<Tid> {
        writeln!(self.log, "P {fi}")?;
        self.log.flush()?;
        let oid = self.files[fi].oid;
        let stor = self.zw.reader();
        let head = stor.last_tid()?;
        let f = ZBigFile::load(&stor, oid, head)?;
        let items = btree::items(&stor, Family::LO, f.blktab, head)?;
        let root = self.zw.new_oid();
        let shape = self.zw.blktab_shape;
        let mut objs: Vec<NewObject> = Vec::new();
        let zw = &mut self.zw;
        objs.extend(btree::build(Family::LO, &items, shape, root, &mut || {
            zw.new_oid()
        }));
        objs.push(NewObject {
            oid,
            class: zbigfile::ZBIGFILE,
            state: zbigfile::zbigfile_state(f.blksize, root),
        });
        let tid = self.zw.commit_objects("stress: blktab replaced", objs)?;
        self.seq += 1;
        self.log_txn(tid, &[format!("E {fi}")])?;
        st.commits.fetch_add(1, Ordering::Relaxed);
        st.epochs.fetch_add(1, Ordering::Relaxed);
        Ok(tid)
    }
}

/// How the writer runs.
pub(crate) struct RunOpts {
    /// Commits per second.
    pub(crate) rate: f64,
    /// Epochs per 1000 commits.
    pub(crate) epochs: u64,
    /// The Data.fs the commits go to (also through ZEO), watched for size.
    pub(crate) db: PathBuf,
    /// Stop committing once it is this big.
    pub(crate) max_db_bytes: u64,
}

/// Commit at `o.rate` transactions per second until `stop`, or until
/// Data.fs reaches `o.max_db_bytes` (then `st.db_full` is set: the run is
/// to end, cleanly).
pub(crate) fn run<B: ZBackend>(
    mut w: Writer<B>,
    o: RunOpts,
    stop: Arc<AtomicBool>,
    st: Arc<WStats>,
) -> Result<()> {
    let period = Duration::from_secs_f64(1.0 / o.rate.max(0.01));
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        w.step(o.epochs, &st)?;
        let size = std::fs::metadata(&o.db)
            .with_context(|| format!("stat {}", o.db.display()))?
            .len();
        st.db_bytes.store(size, Ordering::Relaxed);
        if size >= o.max_db_bytes {
            st.db_full.store(true, Ordering::SeqCst);
            return Ok(());
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    Ok(())
}

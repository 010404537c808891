//! wendelin.core ZBigFile data (`wendelin.bigfile.file_zodb`).
//!
//! A `ZBigFile` is `(blksize, blktab)`: `blktab` is an `LOBTree` mapping
//! block number to a `ZBlk0` (the block's bytes in one object) or a `ZBlk1`
//! (an `IOBTree` of offset -> `ZData` chunk). Missing blocks are holes (all
//! zeros); every block is zero-padded to `blksize`; the file's size is
//! `(max block + 1) * blksize`. See wendelin-formats.md.
//!
//! Loading a block also reports what the engine needs to track it later: the
//! blktab path that led to it, the key coverage of the reached bucket, the
//! ZBlk oid, and `rev_max`, the max serial along the path and of the ZBlk: an
//! upper bound of the block's revision.

use crate::btree::{self, Family, KeyRange, Shape};
use crate::error::{Error, Result};
use crate::pickle::Value;
use crate::record::{self, Ref};
use crate::storage::Storage;
use crate::types::{Oid, Tid};
use bytes::Bytes;
use std::collections::{HashSet, VecDeque};
use std::io::{self, Write};

/// Class path of ZBigFile.
pub const ZBIGFILE: &str = "wendelin.bigfile.file_zodb.ZBigFile";
/// Class path of ZBlk0.
pub const ZBLK0: &str = "wendelin.bigfile.file_zodb.ZBlk0";
/// Early name of ZBlk0, still found in old databases.
pub const ZBLK_ALIAS: &str = "wendelin.bigfile.file_zodb.ZBlk";
/// Class path of ZBlk1.
pub const ZBLK1: &str = "wendelin.bigfile.file_zodb.ZBlk1";
/// Class path of ZData.
pub const ZDATA: &str = "wendelin.bigfile.file_zodb.ZData";

/// A ZBigFile object as of some database state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZBigFile {
    /// The file's oid.
    pub oid: Oid,
    /// The ZBigFile object's revision.
    pub serial: Tid,
    /// Block size in bytes (> 0).
    pub blksize: u64,
    /// Root of the blktab `LOBTree`.
    pub blktab: Oid,
}

/// One block of a file, as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Block number.
    pub blk: i64,
    /// The block's bytes without its zero padding: `data.len() <= blksize`,
    /// the remaining bytes up to `blksize` are zeros. Kept unpadded so that
    /// a 2 MiB ZBlk0 is served without copying it again.
    pub data: Bytes,
    /// The file's block size.
    pub blksize: usize,
    /// blktab nodes visited to reach the block, root first (see [`btree::Lookup::path`]).
    pub path: Vec<Oid>,
    /// Keys covered by the blktab bucket that was reached.
    pub keycov: KeyRange,
    /// The ZBlk holding the block, `None` for a hole.
    pub zblk: Option<Oid>,
    /// Max serial of the path nodes and of the ZBlk: an upper bound of the
    /// block's revision.
    pub rev_max: Tid,
}

impl Block {
    /// The block's full `blksize` bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.blksize);
        v.extend_from_slice(&self.data);
        v.resize(self.blksize, 0);
        v
    }

    /// Write the full `blksize` bytes to `w`.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&self.data)?;
        write_zeros(w, (self.blksize - self.data.len()) as u64)
    }
}

/// Write `n` zero bytes to `w`.
pub fn write_zeros(w: &mut dyn Write, mut n: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

impl ZBigFile {
    /// Load ZBigFile `oid` as of `at`.
    pub fn load(stor: &dyn Storage, oid: Oid, at: Tid) -> Result<ZBigFile> {
        let obj = record::load(stor, oid, at)?;
        Self::from_object(&obj)
    }

    /// Interpret a decoded object as a ZBigFile.
    pub fn from_object(obj: &record::Object) -> Result<ZBigFile> {
        let oid = obj.oid;
        if obj.class != ZBIGFILE {
            return Err(Error::WrongClass {
                oid,
                expected: "ZBigFile",
                class: obj.class.clone(),
            });
        }
        let bad = |what: String| Error::bad_state(oid, format!("ZBigFile: {what}"));
        let [blksize, blktab] = obj.state.as_tuple().unwrap_or_default() else {
            return Err(bad(format!(
                "state is not (blksize, blktab): {:?}",
                obj.state
            )));
        };
        let blksize = blksize
            .as_i64()
            .filter(|&b| b > 0 && usize::try_from(b).is_ok())
            .ok_or_else(|| bad(format!("invalid blksize {blksize:?}")))?;
        let blktab = record::decode_ref(oid, blktab)?;
        if let Some(c) = &blktab.class {
            if c != Family::LO.tree_class() {
                return Err(bad(format!("blktab is a {c}, not an LOBTree")));
            }
        }
        Ok(ZBigFile {
            oid,
            serial: obj.serial,
            blksize: blksize as u64,
            blktab: blktab.oid,
        })
    }

    /// The file size as of `at`: `(max block + 1) * blksize`, 0 when blktab is empty.
    pub fn size(&self, stor: &dyn Storage, at: Tid) -> Result<u64> {
        match btree::max_key(stor, Family::LO, self.blktab, at)? {
            None => Ok(0),
            Some(k) if k < 0 => Err(Error::bad_state(
                self.blktab,
                format!("blktab: negative block {k}"),
            )),
            Some(k) => (k as u64 + 1).checked_mul(self.blksize).ok_or_else(|| {
                Error::bad_state(
                    self.oid,
                    format!("file size overflows: ({k} + 1) * {}", self.blksize),
                )
            }),
        }
    }

    /// The whole blktab as of `at`: block number -> ZBlk oid, in block
    /// order, read with one tree walk (cheaper than a lookup per block when
    /// most blocks are wanted).
    pub fn blktab(&self, stor: &dyn Storage, at: Tid) -> Result<Vec<(i64, Oid)>> {
        btree::items(stor, Family::LO, self.blktab, at)?
            .into_iter()
            .map(|(k, v)| Ok((k, record::decode_ref(self.blktab, &v)?.oid)))
            .collect()
    }

    /// Load block `blk` as of `at`.
    pub fn load_blk(&self, stor: &dyn Storage, blk: i64, at: Tid) -> Result<Block> {
        if blk < 0 {
            return Err(Error::bad_state(self.oid, format!("invalid block #{blk}")));
        }
        let l = btree::lookup(stor, Family::LO, self.blktab, blk, at)?;
        let blksize = self.blksize as usize;
        let mut b = Block {
            blk,
            data: Bytes::new(),
            blksize,
            path: l.path,
            keycov: l.keycov,
            zblk: None,
            rev_max: l.rev_max,
        };
        let Some(v) = l.value else { return Ok(b) };
        let zref = record::decode_ref(self.blktab, &v)?;
        let (data, serial) = load_zblk(stor, zref.oid, at)?;
        if data.len() > blksize {
            return Err(Error::bad_state(
                zref.oid,
                format!(
                    "invalid blk #{blk}: size = {} (> blksize = {blksize})",
                    data.len()
                ),
            ));
        }
        b.data = data;
        b.zblk = Some(zref.oid);
        b.rev_max = b.rev_max.max(serial);
        Ok(b)
    }
}

/// Load the data of a ZBlk0 or ZBlk1 as of `at` (without zero padding) and
/// the ZBlk's serial.
pub fn load_zblk(stor: &dyn Storage, oid: Oid, at: Tid) -> Result<(Bytes, Tid)> {
    let obj = record::load(stor, oid, at)?;
    let data = match obj.class.as_str() {
        ZBLK0 | ZBLK_ALIAS => obj.state.as_bytes().ok_or_else(|| {
            Error::bad_state(
                oid,
                format!("ZBlk0: state is {}, not bytes", obj.state.kind()),
            )
        })?,
        ZBLK1 => {
            let chunktab = record::decode_ref(oid, &obj.state)?;
            zblk1_data(stor, oid, chunktab.oid, at)?
        }
        _ => {
            return Err(Error::WrongClass {
                oid,
                expected: "ZBlk0 or ZBlk1",
                class: obj.class,
            })
        }
    };
    Ok((data, obj.serial))
}

/// Assemble a ZBlk1's data from its chunktab (wendelin-formats §4).
fn zblk1_data(stor: &dyn Storage, zblk: Oid, chunktab: Oid, at: Tid) -> Result<Bytes> {
    let items = btree::items_oids(stor, Family::IO, chunktab, at)?;
    let bad = |what: String| Error::bad_state(zblk, format!("ZBlk1: {what}"));
    let mut refs = Vec::with_capacity(items.len());
    for (off, oid) in items {
        if off < 0 {
            return Err(bad(format!("negative chunk offset {off}")));
        }
        refs.push((off as usize, oid));
    }
    // keys come sorted and unique from the tree walk
    // Parallel for when the chunks must come from disk, in tasks of
    // CHUNK_TASK chunks (from the page cache a load is a few hundred ns and
    // finer tasks cost more in wake-ups than they save). The calling thread
    // loads the first task itself instead of waiting for the pool to pick
    // everything up: a caller outside the pool would otherwise sleep and be
    // woken per block (measured: ~15% of a ZBlk1 load went to that).
    let mut slots: Vec<Option<Result<Bytes>>> = (0..refs.len()).map(|_| None).collect();
    let load_part = |refs: &[(usize, Oid)], out: &mut [Option<Result<Bytes>>]| {
        for (&(_, oid), slot) in refs.iter().zip(out) {
            *slot = Some(load_zdata(stor, oid, at));
        }
    };
    rayon::in_place_scope(|s| {
        let mut parts = refs.chunks(CHUNK_TASK).zip(slots.chunks_mut(CHUNK_TASK));
        let first = parts.next();
        for (r, out) in parts {
            s.spawn(move |_| load_part(r, out));
        }
        if let Some((r, out)) = first {
            load_part(r, out);
        }
    });
    let chunks: Vec<Bytes> = slots
        .into_iter()
        .map(|c| c.expect("every slot is loaded"))
        .collect::<Result<_>>()?;
    let Some((tail_off, tail)) = refs.last().map(|r| r.0).zip(chunks.last()) else {
        return Ok(Bytes::new());
    };
    let blklen = tail_off
        .checked_add(tail.len())
        .ok_or_else(|| bad("chunk offset overflows".into()))?;
    // Each byte is written once: holes are zero-filled as they are passed,
    // chunks are appended (no zeroed buffer copied over afterwards).
    let mut buf = Vec::with_capacity(blklen);
    for ((off, _), chunk) in refs.iter().zip(&chunks) {
        let (start, stop) = (*off, off + chunk.len());
        if start < buf.len() {
            return Err(bad(format!(
                "chunk @{start} overlaps previous chunk ending @{}",
                buf.len()
            )));
        }
        if stop > blklen {
            return Err(bad(format!(
                "blkdata overrun: chunk @{start} ends @{stop} > {blklen}"
            )));
        }
        buf.resize(start, 0);
        buf.extend_from_slice(chunk);
    }
    debug_assert_eq!(buf.len(), blklen);
    Ok(Bytes::from(buf))
}

/// Least number of ZData chunks one parallel task of [`zblk1_data`] loads.
const CHUNK_TASK: usize = 128;

/// Load a ZData chunk's bytes.
fn load_zdata(stor: &dyn Storage, oid: Oid, at: Tid) -> Result<Bytes> {
    let l = stor.load(oid, at)?;
    // The usual shape, without even making the class path (one allocation
    // per chunk); anything else, errors included, takes the general path.
    if let Some(r) = crate::pickle::bytes_record(&l.data) {
        if let (true, Value::Str8(b) | Value::Bytes(b)) =
            (record::class_is(r.module, r.name, ZDATA), &r.state)
        {
            return Ok(b.clone());
        }
    }
    let obj = record::decode(oid, l.serial, &l.data)?;
    if obj.class != ZDATA {
        return Err(Error::WrongClass {
            oid,
            expected: "ZData",
            class: obj.class,
        });
    }
    match obj.state {
        Value::Str8(b) | Value::Bytes(b) => Ok(b),
        state => state.as_bytes().ok_or_else(|| {
            Error::bad_state(oid, format!("ZData: state is {}, not bytes", state.kind()))
        }),
    }
}

/// Every ZBigFile reachable from the root object as of `at`, ordered by oid.
///
/// ZODB has no class index, so we walk the object graph from oid 0,
/// following persistent references; ZBigFile internals (blktab, ZBlk*,
/// ZData) are not entered. Objects that are missing or deleted at `at` are
/// skipped; an empty database has no files.
pub fn list(stor: &dyn Storage, at: Tid) -> Result<Vec<ZBigFile>> {
    const SKIP: &[&str] = &[
        ZBLK0,
        ZBLK_ALIAS,
        ZBLK1,
        ZDATA,
        "BTrees.IOBTree.IOBTree",
        "BTrees.IOBTree.IOBucket",
    ];
    let mut files = Vec::new();
    let mut seen = HashSet::from([Oid(0)]);
    let mut todo = VecDeque::from([Oid(0)]);
    while let Some(oid) = todo.pop_front() {
        let obj = match record::load(stor, oid, at) {
            Ok(o) => o,
            Err(e) if e.is_no_object() => continue,
            Err(e) => return Err(e),
        };
        if obj.class == ZBIGFILE {
            files.push(ZBigFile::from_object(&obj)?);
            continue;
        }
        let mut refs = Vec::new();
        record::refs_in(oid, &obj.state, &mut refs);
        for r in refs {
            if r.class.as_deref().is_some_and(|c| SKIP.contains(&c)) {
                continue;
            }
            if seen.insert(r.oid) {
                todo.push_back(r.oid);
            }
        }
    }
    files.sort_by_key(|f| f.oid);
    Ok(files)
}

// ---- encoding: building ZBigFile objects for the writer ----

/// Size of the chunks the Python writer cuts ZBlk1 data into.
pub const CHUNKSIZE: usize = 4096;

/// How a block is stored.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub enum ZBlkFormat {
    /// One object with all the bytes.
    ZBlk0,
    /// An IOBTree of 4 KiB `ZData` chunks.
    ZBlk1,
}

/// An object to store: oid, class path and state.
pub type NewObject = btree::NewNode;

/// State of a ZBigFile.
pub fn zbigfile_state(blksize: u64, blktab: Oid) -> Value {
    Value::Tuple(vec![
        Value::Int(blksize as i64),
        Ref::new(blktab, Family::LO.tree_class()).to_value(),
    ])
}

/// Reference to a ZBlk of `format`.
pub fn zblk_ref(oid: Oid, format: ZBlkFormat) -> Ref {
    Ref::new(
        oid,
        match format {
            ZBlkFormat::ZBlk0 => ZBLK0,
            ZBlkFormat::ZBlk1 => ZBLK1,
        },
    )
}

/// The objects of a new ZBlk holding `data` (trailing zeros are dropped, as
/// the Python writer does): one ZBlk0, or a ZBlk1 with its chunktab and
/// ZData objects (all-zero chunks omitted). `oid` is the ZBlk's own oid.
pub fn zblk_objects(
    oid: Oid,
    format: ZBlkFormat,
    data: &[u8],
    alloc: &mut dyn FnMut() -> Oid,
) -> Vec<NewObject> {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let data = &data[..end];
    match format {
        ZBlkFormat::ZBlk0 => vec![NewObject {
            oid,
            class: ZBLK0,
            state: Value::Bytes(Bytes::copy_from_slice(data)),
        }],
        ZBlkFormat::ZBlk1 => {
            let chunktab = alloc();
            let mut out = vec![NewObject {
                oid,
                class: ZBLK1,
                state: Ref::new(chunktab, Family::IO.tree_class()).to_value(),
            }];
            let mut items = Vec::new();
            let mut zdata = Vec::new();
            for (i, chunk) in data.chunks(CHUNKSIZE).enumerate() {
                let cend = chunk.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                if cend == 0 {
                    continue;
                }
                let zoid = alloc();
                items.push(((i * CHUNKSIZE) as i64, Ref::new(zoid, ZDATA).to_value()));
                zdata.push(NewObject {
                    oid: zoid,
                    class: ZDATA,
                    state: Value::Bytes(Bytes::copy_from_slice(&chunk[..cend])),
                });
            }
            out.extend(btree::build(
                Family::IO,
                &items,
                Shape::default(),
                chunktab,
                alloc,
            ));
            out.extend(zdata);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zblk_objects_trim_and_chunk() {
        let mut data = vec![0u8; 3 * CHUNKSIZE + 10];
        data[5] = 1;
        data[2 * CHUNKSIZE + 7] = 2; // chunk 1 all zero
        let mut n = 100;
        let objs = zblk_objects(Oid(1), ZBlkFormat::ZBlk1, &data, &mut || {
            n += 1;
            Oid(n)
        });
        let zd: Vec<&NewObject> = objs.iter().filter(|o| o.class == ZDATA).collect();
        assert_eq!(zd.len(), 2);
        assert_eq!(zd[0].state.as_bytes().unwrap().len(), 6);
        assert_eq!(zd[1].state.as_bytes().unwrap().len(), 8);
        let z0 = zblk_objects(Oid(1), ZBlkFormat::ZBlk0, &data, &mut || unreachable!());
        assert_eq!(z0[0].state.as_bytes().unwrap().len(), 2 * CHUNKSIZE + 8);
    }
}

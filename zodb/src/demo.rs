//! The demo database `wcfs mkdemo` creates: two ZBigFiles with the same
//! content, one stored as ZBlk0 blocks and one as ZBlk1, built over three
//! transactions (create, overwrite, punch holes) so that older states differ.

use crate::error::{Error, Result};
use crate::types::{Oid, Tid};
use crate::zbigfile::ZBlkFormat;
use crate::zwrite::ZWriter;
use std::path::Path;

/// Block size of the demo files.
pub const BLKSIZE: usize = 2 << 20;

/// Content of block `blk` in version `v`: the first quarter is a big-endian
/// u32 counter tagged with block and version, the rest zeros.
pub fn block(blk: i64, v: u32) -> Vec<u8> {
    let mut b = vec![0u8; BLKSIZE];
    for (j, w) in b[..BLKSIZE / 4].chunks_exact_mut(4).enumerate() {
        let x = (v << 28) ^ ((blk as u32) << 20) ^ j as u32;
        w.copy_from_slice(&x.to_be_bytes());
    }
    b
}

/// Whether block `blk` is a hole in the final state.
fn is_hole(blk: i64) -> bool {
    blk % 3 == 2
}

/// The files' final content: `blocks` blocks, version 2, every third block a hole.
pub fn expected_content(blocks: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks as usize * BLKSIZE);
    for blk in 0..blocks as i64 {
        if is_hole(blk) && blk + 1 != blocks as i64 {
            out.resize(out.len() + BLKSIZE, 0);
        } else {
            out.extend(block(blk, 2));
        }
    }
    out
}

/// Create the demo database at `path` (which must not exist) with files of
/// `blocks` blocks. Returns the head tid and the two files' oids.
pub fn create(path: &Path, blocks: u32) -> Result<(Tid, Vec<Oid>)> {
    if path.exists() {
        return Err(Error::io(
            path,
            "create",
            std::io::ErrorKind::AlreadyExists.into(),
        ));
    }
    let mut zw = ZWriter::open(path)?;
    let n = blocks as i64;
    let mut oids = Vec::new();
    for (name, format) in [
        ("zblk0-file", ZBlkFormat::ZBlk0),
        ("zblk1-file", ZBlkFormat::ZBlk1),
    ] {
        // version 1 of every block
        let v1: Vec<Vec<u8>> = (0..n).map(|b| block(b, 1)).collect();
        let changes: Vec<_> = v1
            .iter()
            .enumerate()
            .map(|(b, d)| (b as i64, Some((format, &d[..]))))
            .collect();
        let (oid, _) = zw.create_file(name, BLKSIZE as u64, &changes)?;
        // version 2 of every block
        let v2: Vec<Vec<u8>> = (0..n).map(|b| block(b, 2)).collect();
        let changes: Vec<_> = v2
            .iter()
            .enumerate()
            .map(|(b, d)| (b as i64, Some((format, &d[..]))))
            .collect();
        zw.update_file(oid, &changes)?;
        // holes (the last block stays, so the size is unchanged)
        let holes: Vec<_> = (0..n - 1)
            .filter(|&b| is_hole(b))
            .map(|b| (b, None))
            .collect();
        zw.update_file(oid, &holes)?;
        oids.push(oid);
    }
    Ok((zw.head(), oids))
}

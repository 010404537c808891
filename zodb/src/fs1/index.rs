//! The in-memory index and the forward scan that builds and extends it
//! (spec §2.5, §2.6).
//!
//! [`read_txn`] parses and validates one transaction record;
//! [`scan_forward`] walks records from a position up to a file size and
//! collects what the index needs. Both read through [`BufAt`], a small
//! positional read-ahead buffer, so that walking many small records costs few
//! syscalls and large data is skipped without being read.

use super::format::{
    check_back, decode_u64, DataHeader, TxnHeader, DATA_HDR_LEN, STATUS_CHECKPOINT, STATUS_UNDONE,
    TXN_HDR_LEN,
};
use crate::error::{Error, Result};
use crate::types::{Oid, Tid};
use bytes::Bytes;
use hashbrown::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One committed transaction in the transaction table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TxnEntry {
    pub(super) tid: Tid,
    /// Position of the transaction record.
    pub(super) pos: u64,
}

/// What the storage knows about the committed part of the file.
///
/// Invariants: `txns` is sorted by `tid` (strictly) and by `pos`; every
/// `index` value is the position of a data record inside a transaction of
/// `txns`; `top` is the end of the last committed transaction (the start of
/// the next one); `last_tid` is the tid of the last entry of `txns` (or 0).
#[derive(Debug, Default)]
pub(super) struct State {
    /// oid -> position of its newest committed data record.
    pub(super) index: super::oidindex::OidIndex,
    /// Committed transactions, by tid.
    pub(super) txns: Vec<TxnEntry>,
    /// End of the committed part of the file.
    pub(super) top: u64,
    /// The head: tid of the last committed transaction.
    pub(super) last_tid: Tid,
    /// The largest oid in `index`.
    pub(super) max_oid: Option<Oid>,
}

impl State {
    /// Merge the result of a scan that started at `self.top`.
    pub(super) fn merge(&mut self, out: ScanOut) {
        if out.txns.is_empty() && out.top == self.top {
            return;
        }
        debug_assert!(out.txns.first().is_none_or(|e| e.tid > self.last_tid));
        for (&oid, &pos) in &out.updates {
            self.index.insert(oid, pos);
        }
        self.max_oid = self.max_oid.max(out.max_oid);
        self.txns.extend_from_slice(&out.txns);
        self.top = out.top;
        self.last_tid = out.last_tid;
    }

    /// Index in `txns` of the first transaction with tid > `tid`.
    pub(super) fn first_after(&self, tid: Tid) -> usize {
        self.txns.partition_point(|e| e.tid <= tid)
    }

    /// Bounds of transaction `tid`: its position and the end of its data
    /// records (where its redundant length starts). `None` if `tid` is not a
    /// committed transaction.
    pub(super) fn txn_span(&self, tid: Tid) -> Option<(u64, u64)> {
        let i = self.txns.binary_search_by_key(&tid, |e| e.tid).ok()?;
        let end = match self.txns.get(i + 1) {
            Some(next) => next.pos,
            None => self.top,
        };
        Some((self.txns[i].pos, end.saturating_sub(8)))
    }
}

/// A positional read-ahead buffer over a file, never reading at or beyond
/// `limit`.
pub(super) struct BufAt<'f> {
    file: &'f File,
    path: &'f Path,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    start: u64,
    chunk: usize,
    limit: u64,
}

impl<'f> BufAt<'f> {
    pub(super) fn new(file: &'f File, path: &'f Path, limit: u64, chunk: usize) -> Self {
        BufAt {
            file,
            path,
            buf: Vec::new(),
            start: 0,
            chunk,
            limit,
        }
    }

    /// Move the limit. Bytes already buffered stay valid: they lie below
    /// the old limit, and the committed part of the file never changes.
    pub(super) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
        if self.start.saturating_add(self.buf.len() as u64) > limit {
            self.buf.clear();
        }
    }

    /// Up to `len` bytes at `pos`; fewer only if `pos + len` is beyond the
    /// limit (then all bytes up to the limit).
    pub(super) fn get(&mut self, pos: u64, len: usize) -> Result<&[u8]> {
        let avail = self.limit.saturating_sub(pos);
        let len = len.min(usize::try_from(avail).unwrap_or(usize::MAX));
        let have = pos >= self.start
            && pos - self.start <= self.buf.len() as u64
            && (pos - self.start) as usize + len <= self.buf.len();
        if !have {
            let want = len
                .max(self.chunk)
                .min(usize::try_from(avail).unwrap_or(usize::MAX));
            self.buf.resize(want, 0);
            let n = read_full_at(self.file, &mut self.buf, pos)
                .map_err(|e| Error::io(self.path, "read", e))?;
            self.buf.truncate(n);
            self.start = pos;
        }
        let off = (pos - self.start) as usize;
        let end = (off + len).min(self.buf.len());
        Ok(&self.buf[off..end])
    }
}

/// `pread` until `buf` is full or end of file; returns the bytes read.
pub(super) fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], pos + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A committed transaction as parsed by [`read_txn`].
#[derive(Debug)]
pub(super) struct ParsedTxn {
    pub(super) pos: u64,
    pub(super) hdr: TxnHeader,
    /// user, description, extension (only if asked for).
    pub(super) meta: Option<(Bytes, Bytes, Bytes)>,
    /// `(oid, record position)` in record order.
    pub(super) records: Vec<(Oid, u64)>,
    /// Position of the next transaction.
    pub(super) next: u64,
}

/// What is at a position where a transaction record should start.
#[derive(Debug)]
pub(super) enum TxnRead {
    /// Exactly at the limit: nothing more.
    End,
    /// A complete committed transaction (`' '` or `'p'`).
    Committed(ParsedTxn),
    /// A complete transaction with status `'u'`, to be skipped.
    Undone { next: u64 },
    /// A transaction with status `'c'`: voted, not finished. Not committed.
    Checkpoint,
    /// The header, or the record it announces, extends beyond the limit:
    /// a write in progress, or garbage if it stays that way.
    Incomplete,
}

/// Parse the transaction record at `pos`, reading no further than the
/// buffer's limit. `prev_tid` is the tid of the preceding transaction (tids
/// must increase). Validates everything that can be checked inside the
/// record; errors are [`Error::Corrupt`] at the offending offset.
pub(super) fn read_txn(
    buf: &mut BufAt<'_>,
    pos: u64,
    prev_tid: Tid,
    want_meta: bool,
) -> Result<TxnRead> {
    let path = buf.path;
    let corrupt = |off: u64, what: String| Error::corrupt(path, off, what);
    if pos >= buf.limit {
        return Ok(TxnRead::End);
    }
    let hbytes = buf.get(pos, TXN_HDR_LEN as usize)?;
    let Some(hdr) = TxnHeader::decode_slice(hbytes) else {
        return Ok(TxnRead::Incomplete);
    };
    hdr.check().map_err(|w| corrupt(pos, w))?;
    if hdr.status == STATUS_CHECKPOINT {
        return Ok(TxnRead::Checkpoint);
    }
    let tend = match pos.checked_add(hdr.tlen) {
        Some(e) if e.checked_add(8).is_some_and(|e8| e8 <= buf.limit) => e,
        _ => return Ok(TxnRead::Incomplete),
    };
    if hdr.tid <= prev_tid {
        return Err(corrupt(
            pos,
            format!(
                "transaction id {} is not after the previous one {}",
                hdr.tid, prev_tid
            ),
        ));
    }
    let next = tend + 8;
    if hdr.status == STATUS_UNDONE {
        check_redundant_len(buf, pos, tend, hdr.tlen)?;
        return Ok(TxnRead::Undone { next });
    }
    let meta_start = pos + TXN_HDR_LEN;
    let meta = if want_meta {
        let m = buf.get(meta_start, hdr.meta_len() as usize)?;
        let (u, rest) = m.split_at(hdr.ulen as usize);
        let (d, e) = rest.split_at(hdr.dlen as usize);
        Some((
            Bytes::copy_from_slice(u),
            Bytes::copy_from_slice(d),
            Bytes::copy_from_slice(e),
        ))
    } else {
        None
    };
    let mut records = Vec::new();
    let mut rpos = meta_start + hdr.meta_len();
    while rpos < tend {
        if tend - rpos < DATA_HDR_LEN {
            return Err(corrupt(
                rpos,
                "data record header crosses the end of its transaction".into(),
            ));
        }
        let b = buf.get(rpos, DATA_HDR_LEN as usize + 8)?;
        let dh = DataHeader::decode_slice(b).expect("inside limit");
        let back = b
            .get(DATA_HDR_LEN as usize..)
            .and_then(|s| <[u8; 8]>::try_from(s).ok());
        dh.check(rpos).map_err(|w| corrupt(rpos, w))?;
        if dh.tid != hdr.tid {
            return Err(corrupt(
                rpos,
                format!(
                    "data record tid {} != its transaction's tid {}",
                    dh.tid, hdr.tid
                ),
            ));
        }
        if dh.tloc != pos {
            return Err(corrupt(
                rpos,
                format!("data record's transaction position {} != {pos}", dh.tloc),
            ));
        }
        let rlen = dh.record_len();
        if rlen.is_none_or(|l| l > tend - rpos) {
            return Err(corrupt(
                rpos,
                format!("data record (length {}) exceeds its transaction", dh.plen),
            ));
        }
        if dh.plen == 0 {
            let back = back
                .map(|b| decode_u64(&b))
                .ok_or_else(|| corrupt(rpos, "no backpointer".into()))?;
            check_back(back, rpos).map_err(|w| corrupt(rpos + DATA_HDR_LEN, w))?;
        }
        records.push((dh.oid, rpos));
        rpos += rlen.expect("checked");
    }
    // Checked last, so that walking the records and reading the length
    // proceed forward through the read-ahead buffer.
    check_redundant_len(buf, pos, tend, hdr.tlen)?;
    Ok(TxnRead::Committed(ParsedTxn {
        pos,
        hdr,
        meta,
        records,
        next,
    }))
}

/// The 8 bytes at `tend` must repeat `tlen` of the transaction at `pos`.
fn check_redundant_len(buf: &mut BufAt<'_>, pos: u64, tend: u64, tlen: u64) -> Result<()> {
    let red = buf.get(tend, 8)?;
    let red = decode_u64(red.try_into().expect("inside limit"));
    if red != tlen {
        return Err(Error::corrupt(
            buf.path,
            tend,
            format!("redundant transaction length {red} != {tlen} (of transaction at {pos})"),
        ));
    }
    Ok(())
}

/// Why a forward scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Clean end exactly at the scanned size.
    End,
    /// A checkpoint (`'c'`) transaction at `top`.
    Checkpoint,
    /// An incomplete header or record at `top`.
    Incomplete,
}

/// The result of a forward scan: what to merge into the [`State`].
#[derive(Debug)]
pub(super) struct ScanOut {
    pub(super) txns: Vec<TxnEntry>,
    /// oid -> newest record position among the scanned transactions.
    pub(super) updates: HashMap<Oid, u64>,
    pub(super) max_oid: Option<Oid>,
    /// End of the last committed transaction scanned.
    pub(super) top: u64,
    pub(super) last_tid: Tid,
    pub(super) stop: Stop,
}

/// Scan committed transactions from `pos` (a transaction boundary) up to
/// `size`, the file size. `last_tid` is the tid of the transaction before
/// `pos`. Stops at the first checkpoint or incomplete transaction.
pub(super) fn scan_forward(
    file: &File,
    path: &Path,
    mut pos: u64,
    size: u64,
    mut last_tid: Tid,
    chunk: usize,
) -> Result<ScanOut> {
    let mut buf = BufAt::new(file, path, size, chunk);
    let mut out = ScanOut {
        txns: Vec::new(),
        updates: HashMap::new(),
        max_oid: None,
        top: pos,
        last_tid,
        stop: Stop::End,
    };
    loop {
        match read_txn(&mut buf, pos, last_tid, false)? {
            TxnRead::End => break,
            TxnRead::Checkpoint => {
                out.stop = Stop::Checkpoint;
                break;
            }
            TxnRead::Incomplete => {
                out.stop = Stop::Incomplete;
                break;
            }
            TxnRead::Undone { next } => {
                // Not committed for readers: skipped, but it still sits in the
                // committed part of the file.
                tracing::debug!(path = %path.display(), pos, "skipping undone ('u') transaction");
                pos = next;
                out.top = pos;
            }
            TxnRead::Committed(t) => {
                for &(oid, rpos) in &t.records {
                    out.updates.insert(oid, rpos);
                    out.max_oid = out.max_oid.max(Some(oid));
                }
                out.txns.push(TxnEntry {
                    tid: t.hdr.tid,
                    pos: t.pos,
                });
                last_tid = t.hdr.tid;
                out.last_tid = last_tid;
                pos = t.next;
                out.top = pos;
            }
        }
    }
    Ok(out)
}

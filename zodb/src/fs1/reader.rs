//! Loads and iteration: everything that reads committed records.
//!
//! None of this holds `Core::state` across I/O: each function copies what it
//! needs out of the index or the transaction table under a short read lock
//! and then reads the file with `pread`.

use super::format::{check_back, decode_u64, DataHeader, DATA_HDR_LEN};
use super::index::{read_txn, BufAt, TxnEntry, TxnRead};
use super::map::{self, Mapping};
use super::Core;
use crate::error::{Error, Result};
use crate::storage::{Loaded, TxnInfo};
use crate::types::{Oid, Tid};
use bytes::Bytes;
use hashbrown::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Read-ahead when reading committed transactions (iteration, watchers).
const TXN_READ_CHUNK: usize = 64 * 1024;

/// A data record header read from the file and checked, with the bytes
/// that came along with it.
pub(super) struct Record {
    pub(super) pos: u64,
    pub(super) hdr: DataHeader,
    /// The backpointer, if `plen == 0`.
    pub(super) back: u64,
    /// The mapping the record was read from.
    map: Arc<Mapping>,
}

impl Core {
    /// Read and validate the data record of `oid` at `pos`.
    ///
    /// Checks: the record lies inside the committed part (`< top`); its oid
    /// is `oid`; its tid is a committed transaction that starts at `tloc`
    /// and contains the whole record; `prev` and the backpointer point
    /// backwards; no version.
    pub(super) fn read_record(&self, pos: u64, oid: Oid) -> Result<Record> {
        let top = self.state().top; // a short read lock, released at once
        self.read_record_below(pos, oid, top)
    }

    /// [`Core::read_record`] with `top`, the committed end, already read
    /// (under the same lock as `pos` came from).
    fn read_record_below(&self, pos: u64, oid: Oid, top: u64) -> Result<Record> {
        let corrupt = |off: u64, what: String| Error::corrupt(&self.path, off, what);
        if pos.checked_add(DATA_HDR_LEN).is_none_or(|end| end > top) {
            return Err(corrupt(
                pos,
                format!("data record of {oid} is beyond the committed end {top}"),
            ));
        }
        let map = self.mapping(top)?;
        let hdr_bytes = map
            .get(pos..pos + DATA_HDR_LEN)
            .expect("pos + header <= top <= mapped");
        let hdr = DataHeader::decode_slice(hdr_bytes).expect("header length");
        if hdr.oid != oid {
            return Err(corrupt(
                pos,
                format!("data record is of {} instead of {oid}", hdr.oid),
            ));
        }
        hdr.check(pos).map_err(|w| corrupt(pos, w))?;
        let span = self.state().txn_span(hdr.tid);
        let Some((tpos, tend)) = span else {
            return Err(corrupt(
                pos,
                format!("data record tid {} is not a committed transaction", hdr.tid),
            ));
        };
        if tpos != hdr.tloc {
            return Err(corrupt(
                pos,
                format!(
                    "data record's transaction position {} != {tpos} (of {})",
                    hdr.tloc, hdr.tid
                ),
            ));
        }
        if pos <= tpos
            || hdr
                .record_len()
                .is_none_or(|l| l > tend.saturating_sub(pos))
        {
            return Err(corrupt(
                pos,
                format!("data record is not inside its transaction {}", hdr.tid),
            ));
        }
        // From here the whole record lies in [pos, tend) with tend <= top.
        let mut back = 0;
        if hdr.plen == 0 {
            let b = map
                .get(pos + DATA_HDR_LEN..pos + DATA_HDR_LEN + 8)
                .expect("record inside its committed transaction");
            back = decode_u64(b.try_into().expect("8 bytes"));
            check_back(back, pos).map_err(|w| corrupt(pos + DATA_HDR_LEN, w))?;
        }
        Ok(Record {
            pos,
            hdr,
            back,
            map,
        })
    }

    /// A mapping that covers `[0, top)`: the current one, or a new one if
    /// the committed part has grown past it.
    fn mapping(&self, top: u64) -> Result<Arc<Mapping>> {
        // Acquire pairs with the Release store in sync: once broken, the
        // pages past the shrunk end must not be touched.
        if self.broken.load(Ordering::Acquire) {
            return Err(Error::corrupt(
                &self.path,
                top,
                "the file shrank below its committed part; reopen it",
            ));
        }
        let cur = self.map.load_full();
        if cur.len() >= top {
            return Ok(cur);
        }
        let _g = self.map_mu.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.map.load_full();
        if cur.len() >= top {
            return Ok(cur); // another thread remapped meanwhile
        }
        let size = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?
            .len();
        if size < top {
            return Err(Error::corrupt(
                &self.path,
                size,
                format!("the file shrank to {size} bytes, below its committed end {top}"),
            ));
        }
        let m =
            Arc::new(Mapping::new(&self.file, size).map_err(|e| Error::io(&self.path, "mmap", e))?);
        self.map.store(m.clone());
        Ok(m)
    }

    /// The data of a record with `plen > 0`, as bytes sharing the mapping.
    fn record_data(&self, rec: Record) -> Result<Bytes> {
        let start = rec.pos + DATA_HDR_LEN;
        // read_record checked that the record lies inside its committed
        // transaction, hence inside the mapping.
        Ok(map::bytes(&rec.map, start..start + rec.hdr.plen).expect("record inside the mapping"))
    }

    /// `load(oid, at)`: see [`crate::Storage::load`] and spec §2.4.
    pub(super) fn load(&self, oid: Oid, at: Tid) -> Result<Loaded> {
        // One short read lock for the index entry and the committed end.
        let (pos, top) = {
            let s = self.state();
            (s.index.get(&oid).copied(), s.top)
        };
        let Some(pos) = pos else {
            return Err(Error::NoSuchObject { oid });
        };
        let mut rec = self.read_record_below(pos, oid, top)?;
        // Walk back to the newest revision with tid <= at. Each step goes to a
        // smaller position (checked by read_record), so this terminates.
        while rec.hdr.tid > at {
            if rec.hdr.prev == 0 {
                return Err(Error::NotYet {
                    oid,
                    at,
                    created: rec.hdr.tid,
                });
            }
            let older = self.read_record(rec.hdr.prev, oid)?;
            if older.hdr.tid >= rec.hdr.tid {
                return Err(Error::corrupt(
                    &self.path,
                    rec.pos,
                    format!(
                        "previous record of {oid} has tid {} >= {}",
                        older.hdr.tid, rec.hdr.tid
                    ),
                ));
            }
            rec = older;
        }
        let serial = rec.hdr.tid;
        // Follow backpointers to the record holding the data; positions
        // decrease strictly along the chain.
        while rec.hdr.plen == 0 {
            if rec.back == 0 {
                return Err(Error::Deleted {
                    oid,
                    at,
                    deleted_at: serial,
                });
            }
            let target = self.read_record(rec.back, oid)?;
            if target.hdr.tid >= rec.hdr.tid {
                return Err(Error::corrupt(
                    &self.path,
                    rec.pos + DATA_HDR_LEN,
                    format!(
                        "backpointer of {oid} goes to tid {} >= {}",
                        target.hdr.tid, rec.hdr.tid
                    ),
                ));
            }
            rec = target;
        }
        let data = self.record_data(rec)?;
        Ok(Loaded { data, serial })
    }

    /// A read-ahead buffer for reading committed transactions.
    pub(super) fn txn_buf(&self) -> BufAt<'_> {
        BufAt::new(&self.file, &self.path, self.state().top, TXN_READ_CHUNK)
    }

    /// The committed transaction `entry` (from the transaction table),
    /// parsed and checked, with its metadata if `want_meta`. Reads through
    /// `buf` (from [`Core::txn_buf`]), which may be reused for the next
    /// transactions: bytes below `top` never change.
    pub(super) fn read_txn_at(
        &self,
        buf: &mut BufAt<'_>,
        entry: TxnEntry,
        want_meta: bool,
    ) -> Result<super::index::ParsedTxn> {
        buf.set_limit(self.state().top);
        match read_txn(buf, entry.pos, Tid::ZERO, want_meta)? {
            TxnRead::Committed(t) if t.hdr.tid == entry.tid => Ok(t),
            other => Err(Error::corrupt(
                &self.path,
                entry.pos,
                format!(
                    "committed transaction {} no longer reads back as such: {other:?}",
                    entry.tid
                ),
            )),
        }
    }

    /// [`TxnInfo`] of the committed transaction `entry`.
    pub(super) fn txn_info(&self, buf: &mut BufAt<'_>, entry: TxnEntry) -> Result<TxnInfo> {
        let t = self.read_txn_at(buf, entry, true)?;
        let (user, description, extension) = t.meta.expect("asked for meta");
        let mut seen = HashSet::with_capacity(t.records.len());
        let oids = t
            .records
            .iter()
            .map(|r| r.0)
            .filter(|oid| seen.insert(*oid))
            .collect();
        Ok(TxnInfo {
            tid: t.hdr.tid,
            status: t.hdr.status,
            user,
            description,
            extension,
            oids,
        })
    }
}

/// Iterator over committed transactions `lo <= tid <= hi`, see
/// [`crate::Storage::iterate`]. Takes the state lock once per step, to find
/// the next table entry, and reads through one read-ahead buffer.
pub(super) struct TxnIter<'a> {
    pub(super) core: &'a Core,
    pub(super) buf: BufAt<'a>,
    /// Next index in the transaction table.
    pub(super) i: usize,
    pub(super) hi: Tid,
    pub(super) failed: bool,
}

impl Iterator for TxnIter<'_> {
    type Item = Result<TxnInfo>;

    fn next(&mut self) -> Option<Result<TxnInfo>> {
        if self.failed {
            return None;
        }
        let entry = self.core.state().txns.get(self.i).copied()?;
        if entry.tid > self.hi {
            return None;
        }
        self.i += 1;
        let r = self.core.txn_info(&mut self.buf, entry);
        self.failed = r.is_err();
        Some(r)
    }
}

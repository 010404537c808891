//! The FileStorage on-disk format: file magic, transaction and data record
//! headers (spec `zodb-formats.md` §2.1–2.3).
//!
//! Only fixed-size headers are decoded here, from byte arrays; no I/O and no
//! validation beyond what the bytes alone can tell (see
//! [`TxnHeader::check`] and [`DataHeader::check`]). Record layout:
//!
//! ```text
//! txn  @tpos: tid(8) tlen(8) status(1) ulen(2) dlen(2) elen(2)   = 23 bytes
//!             user(ulen) description(dlen) extension(elen)
//!             data records ...                                  up to tpos+tlen
//!             tlen(8)                                           redundant copy
//! data @pos:  oid(8) tid(8) prev(8) tloc(8) vlen(2) plen(8)      = 42 bytes
//!             data(plen)  if plen > 0
//!             back(8)     if plen == 0 (0 = deletion, else backpointer)
//! ```
//!
//! All integers are big-endian.

use crate::types::{Oid, Tid};

/// Magic of a FileStorage written by ZODB on Python 2.
pub const MAGIC_FS21: [u8; 4] = *b"FS21";
/// Magic of a FileStorage written by ZODB on Python 3 (what we write).
pub const MAGIC_FS30: [u8; 4] = *b"FS30";
/// Offset of the first transaction record, right after the magic.
pub const FIRST_TXN_POS: u64 = 4;

/// Length of a transaction record header.
pub const TXN_HDR_LEN: u64 = 23;
/// Length of a data record header.
pub const DATA_HDR_LEN: u64 = 42;

/// Transaction status: committed.
pub const STATUS_COMMITTED: u8 = b' ';
/// Transaction status: committed, rewritten by pack.
pub const STATUS_PACKED: u8 = b'p';
/// Transaction status: checkpoint: voted, not yet finished, **not** committed.
pub const STATUS_CHECKPOINT: u8 = b'c';
/// Transaction status: legacy "undone"; readers skip such transactions.
pub const STATUS_UNDONE: u8 = b'u';

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A transaction record header (`TRANS_HDR = ">8sQcHHH"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeader {
    /// Transaction id.
    pub tid: Tid,
    /// Record length from the header start to the end of the last data
    /// record, without the trailing redundant copy of `tlen`.
    pub tlen: u64,
    /// Status byte, one of the `STATUS_*` constants.
    pub status: u8,
    /// Length of the user name.
    pub ulen: u16,
    /// Length of the description.
    pub dlen: u16,
    /// Length of the extension.
    pub elen: u16,
}

impl TxnHeader {
    /// Decode the 23 header bytes.
    pub fn decode(b: &[u8; TXN_HDR_LEN as usize]) -> TxnHeader {
        TxnHeader {
            tid: Tid(be64(&b[0..8])),
            tlen: be64(&b[8..16]),
            status: b[16],
            ulen: be16(&b[17..19]),
            dlen: be16(&b[19..21]),
            elen: be16(&b[21..23]),
        }
    }

    /// Decode from the start of `b`, which must hold at least 23 bytes.
    pub fn decode_slice(b: &[u8]) -> Option<TxnHeader> {
        let a: &[u8; TXN_HDR_LEN as usize] = b.get(..TXN_HDR_LEN as usize)?.try_into().ok()?;
        Some(Self::decode(a))
    }

    /// Append the 23 header bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tid.to_bytes());
        out.extend_from_slice(&self.tlen.to_be_bytes());
        out.push(self.status);
        out.extend_from_slice(&self.ulen.to_be_bytes());
        out.extend_from_slice(&self.dlen.to_be_bytes());
        out.extend_from_slice(&self.elen.to_be_bytes());
    }

    /// Length of user + description + extension.
    pub fn meta_len(&self) -> u64 {
        self.ulen as u64 + self.dlen as u64 + self.elen as u64
    }

    /// Checks that need nothing but the header: a known status byte, a tid
    /// in the valid range and a `tlen` that covers the header and metadata.
    /// Returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if !matches!(
            self.status,
            STATUS_COMMITTED | STATUS_PACKED | STATUS_CHECKPOINT | STATUS_UNDONE
        ) {
            return Err(format!(
                "invalid transaction status byte {:#04x}",
                self.status
            ));
        }
        if self.tid == Tid::ZERO || self.tid > Tid::MAX {
            return Err(format!("invalid transaction id {}", self.tid));
        }
        if self.tlen < TXN_HDR_LEN + self.meta_len() {
            return Err(format!(
                "transaction length {} < header + metadata {}",
                self.tlen,
                TXN_HDR_LEN + self.meta_len()
            ));
        }
        Ok(())
    }
}

/// A data record header (`DATA_HDR = ">8s8sQQHQ"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// The object.
    pub oid: Oid,
    /// The enclosing transaction's tid.
    pub tid: Tid,
    /// Position of the previous data record of this object, 0 if none.
    pub prev: u64,
    /// Position of the enclosing transaction record.
    pub tloc: u64,
    /// Legacy version length; must be 0.
    pub vlen: u16,
    /// Length of the data; 0 means an 8-byte backpointer follows instead.
    pub plen: u64,
}

impl DataHeader {
    /// Decode the 42 header bytes.
    pub fn decode(b: &[u8; DATA_HDR_LEN as usize]) -> DataHeader {
        DataHeader {
            oid: Oid(be64(&b[0..8])),
            tid: Tid(be64(&b[8..16])),
            prev: be64(&b[16..24]),
            tloc: be64(&b[24..32]),
            vlen: be16(&b[32..34]),
            plen: be64(&b[34..42]),
        }
    }

    /// Decode from the start of `b`, which must hold at least 42 bytes.
    pub fn decode_slice(b: &[u8]) -> Option<DataHeader> {
        let a: &[u8; DATA_HDR_LEN as usize] = b.get(..DATA_HDR_LEN as usize)?.try_into().ok()?;
        Some(Self::decode(a))
    }

    /// Append the 42 header bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.oid.to_bytes());
        out.extend_from_slice(&self.tid.to_bytes());
        out.extend_from_slice(&self.prev.to_be_bytes());
        out.extend_from_slice(&self.tloc.to_be_bytes());
        out.extend_from_slice(&self.vlen.to_be_bytes());
        out.extend_from_slice(&self.plen.to_be_bytes());
    }

    /// Whole record length: header plus data, or header plus backpointer.
    /// `None` on overflow (a corrupt `plen`).
    pub fn record_len(&self) -> Option<u64> {
        if self.plen == 0 {
            Some(DATA_HDR_LEN + 8)
        } else {
            DATA_HDR_LEN.checked_add(self.plen)
        }
    }

    /// Checks of a record at `pos` that need nothing but its header:
    /// `vlen == 0` and pointers that go backwards. Returns what is wrong.
    pub fn check(&self, pos: u64) -> Result<(), String> {
        if self.vlen != 0 {
            return Err(format!(
                "data record has version length {} (versions are not supported)",
                self.vlen
            ));
        }
        if self.tloc >= pos {
            return Err(format!(
                "data record's transaction position {} is not before it",
                self.tloc
            ));
        }
        if self.prev != 0 && (self.prev >= pos || self.prev < FIRST_TXN_POS + TXN_HDR_LEN) {
            return Err(format!(
                "data record's previous-record pointer {} is out of range",
                self.prev
            ));
        }
        Ok(())
    }
}

/// Check a backpointer read at the data record at `pos`: it must point
/// before the record (chains therefore always terminate). 0 is a deletion.
pub fn check_back(back: u64, pos: u64) -> Result<(), String> {
    if back != 0 && (back >= pos || back < FIRST_TXN_POS + TXN_HDR_LEN) {
        return Err(format!("backpointer {back} is out of range"));
    }
    Ok(())
}

/// Decode an 8-byte big-endian integer (a backpointer, a redundant length).
pub fn decode_u64(b: &[u8; 8]) -> u64 {
    u64::from_be_bytes(*b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_header_roundtrip() {
        let h = TxnHeader {
            tid: Tid(0x0285cbac3851eb99),
            tlen: 151,
            status: b' ',
            ulen: 1,
            dlen: 25,
            elen: 0,
        };
        let mut v = Vec::new();
        h.encode(&mut v);
        assert_eq!(v.len(), TXN_HDR_LEN as usize);
        assert_eq!(TxnHeader::decode_slice(&v), Some(h));
        assert!(h.check().is_ok());
        assert!(TxnHeader { status: b'x', ..h }.check().is_err());
        assert!(TxnHeader { tlen: 23 + 25, ..h }.check().is_err());
        assert!(TxnHeader { tid: Tid(0), ..h }.check().is_err());
        assert!(TxnHeader {
            tid: Tid(u64::MAX),
            ..h
        }
        .check()
        .is_err());
        assert_eq!(TxnHeader::decode_slice(&v[..22]), None);
    }

    #[test]
    fn data_header_roundtrip() {
        let h = DataHeader {
            oid: Oid(7),
            tid: Tid(5),
            prev: 100,
            tloc: 200,
            vlen: 0,
            plen: 3,
        };
        let mut v = Vec::new();
        h.encode(&mut v);
        assert_eq!(v.len(), DATA_HDR_LEN as usize);
        assert_eq!(DataHeader::decode_slice(&v), Some(h));
        assert_eq!(h.record_len(), Some(45));
        assert_eq!(DataHeader { plen: 0, ..h }.record_len(), Some(50));
        assert_eq!(
            DataHeader {
                plen: u64::MAX,
                ..h
            }
            .record_len(),
            None
        );
        assert!(h.check(223).is_ok());
        assert!(h.check(200).is_err(), "tloc must be before the record");
        assert!(DataHeader { prev: 223, ..h }.check(223).is_err());
        assert!(DataHeader { vlen: 1, ..h }.check(223).is_err());
        assert!(check_back(0, 100).is_ok());
        assert!(check_back(100, 100).is_err());
        assert!(check_back(50, 100).is_ok());
        assert!(check_back(3, 100).is_err());
    }
}

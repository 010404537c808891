//! What every process of a run agrees on: the block contents (a pure
//! function of seed, file, block and the tid that wrote it), the history
//! log the writer appends and readers follow, and a latency histogram.
//!
//! # The history log
//!
//! One line per fact, a transaction's lines before its `C` line:
//!
//! ```text
//! F <idx> <oid> <blksize>      file idx is ZBigFile <oid>
//! P <idx>                      an epoch of file idx is about to be committed
//! T <tid> <seq>                transaction number seq (1, 2, ...) is tid
//! W <idx> <blk>                block written: content(seed, idx, blk, seq)
//! D <idx> <blk>                block deleted (a hole)
//! E <idx>                      the file's blktab replaced (same blocks): an epoch
//! C                            the transaction is committed
//! ```
//!
//! The writer appends a transaction only after it is committed, and
//! readers take their `at` from the log (never from `head/at`), so a
//! reader always knows everything up to its `at`. An epoch is announced
//! (`P`) before it is committed: a reader whose link the server shut for
//! it may have read unpinned data before it noticed, and the announcement
//! tells it so.

use std::collections::HashMap;
use std::io::{BufRead, Seek};
use std::path::Path;
use zodb::{Oid, Tid};

/// splitmix64: the mixing step of every pseudo-random choice here.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The bytes of block `blk` of file `file` written by transaction number
/// `seq` (unpadded: sometimes shorter than a block, the rest reads as
/// zeros).
pub(crate) fn content(seed: u64, file: u32, blk: i64, seq: u64, blksize: usize) -> Vec<u8> {
    let h = mix(seed ^ mix((file as u64) << 48 ^ blk as u64) ^ mix(seq));
    let len = if h % 4 == 0 {
        1 + (h >> 8) as usize % blksize
    } else {
        blksize
    };
    let mut out = Vec::with_capacity(len + 8);
    let mut x = h | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The expected block (full `blksize`, zero padded).
pub(crate) fn expected(seed: u64, file: u32, blk: i64, w: Option<u64>, blksize: usize) -> Vec<u8> {
    let mut v = match w {
        Some(t) => content(seed, file, blk, t, blksize),
        None => Vec::new(),
    };
    v.resize(blksize, 0);
    v
}

/// One file of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileInfo {
    pub(crate) oid: Oid,
    pub(crate) blksize: u64,
}

/// One change of a block: (tid, the writing transaction's number; `None`
/// for a deletion).
type Change = (Tid, Option<u64>);

/// The history as a reader knows it: per (file, blk) the writes and
/// deletes in tid order; per file its epochs.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub(crate) files: Vec<FileInfo>,
    /// (file, blk) -> its changes ascending.
    blocks: HashMap<(u32, i64), Vec<Change>>,
    /// Files with an epoch announced (`P`), and the tid it became, if any.
    pub(crate) announced: Vec<u32>,
    /// file -> epoch tids ascending.
    pub(crate) epochs: HashMap<u32, Vec<Tid>>,
    /// Committed transactions, ascending.
    pub(crate) tids: Vec<Tid>,
    /// Bytes of the log consumed.
    pos: u64,
    /// The transaction being read (not committed yet in the log).
    pending: Option<(Tid, u64, Vec<String>)>,
}

impl History {
    /// The number of the transaction that last wrote `blk` of `file` as of
    /// `at` (`None`: a hole).
    pub(crate) fn writer_at(&self, file: u32, blk: i64, at: Tid) -> Option<u64> {
        let v = self.blocks.get(&(file, blk))?;
        let i = v.partition_point(|(t, _)| *t <= at);
        match i {
            0 => None,
            _ => v[i - 1].1,
        }
    }

    /// Which state of block `blk` of `file` the bytes `buf` are: the tid
    /// of the write whose content they are (`@<tid>`), `hole`, or `?`.
    pub(crate) fn identify(&self, seed: u64, file: u32, blk: i64, buf: &[u8]) -> String {
        if buf.iter().all(|&b| b == 0) {
            return "hole".into();
        }
        let v = self.blocks.get(&(file, blk)).map_or(&[][..], |v| &v[..]);
        for (tid, w) in v.iter().rev() {
            if w.is_some() && expected(seed, file, blk, *w, buf.len()) == buf {
                return format!("@{tid}");
            }
        }
        "?".into()
    }

    /// Whether an epoch of `file` was announced, or happened, after `at`.
    pub(crate) fn epoch_after(&self, file: u32, at: Tid) -> bool {
        self.announced.contains(&file)
            || self
                .epochs
                .get(&file)
                .is_some_and(|v| v.last().is_some_and(|t| *t > at))
    }

    /// The newest committed tid.
    pub(crate) fn head(&self) -> Option<Tid> {
        self.tids.last().copied()
    }

    /// Read what was appended to the log since the last call.
    pub(crate) fn refresh(&mut self, log: &Path) -> anyhow::Result<()> {
        let mut f = std::fs::File::open(log)?;
        f.seek(std::io::SeekFrom::Start(self.pos))?;
        let mut r = std::io::BufReader::new(f);
        let mut line = String::new();
        loop {
            line.clear();
            let n = r.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                return Ok(()); // a partial line is read again next time
            }
            self.pos += n as u64;
            self.apply(line.trim_end())?;
        }
    }

    fn apply(&mut self, line: &str) -> anyhow::Result<()> {
        let mut it = line.split(' ');
        let bad = || anyhow::anyhow!("history log: bad line {line:?}");
        match it.next() {
            Some("F") => {
                let idx: usize = it.next().ok_or_else(bad)?.parse()?;
                let oid: Oid = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
                let blksize: u64 = it.next().ok_or_else(bad)?.parse()?;
                if idx != self.files.len() {
                    return Err(bad());
                }
                self.files.push(FileInfo { oid, blksize });
            }
            Some("P") => {
                let idx: u32 = it.next().ok_or_else(bad)?.parse()?;
                self.announced.push(idx);
            }
            Some("T") => {
                let t: Tid = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
                let seq: u64 = it.next().ok_or_else(bad)?.parse()?;
                self.pending = Some((t, seq, Vec::new()));
            }
            Some("W" | "D" | "E") => {
                let (_, _, ops) = self.pending.as_mut().ok_or_else(bad)?;
                ops.push(line.to_owned());
            }
            Some("C") => {
                let (t, seq, ops) = self.pending.take().ok_or_else(bad)?;
                for op in ops {
                    let mut o = op.split(' ');
                    let kind = o.next();
                    let file: u32 = o.next().ok_or_else(bad)?.parse()?;
                    match kind {
                        Some("E") => {
                            self.epochs.entry(file).or_default().push(t);
                            self.announced.retain(|f| *f != file);
                        }
                        Some(k) => {
                            let blk: i64 = o.next().ok_or_else(bad)?.parse()?;
                            self.blocks
                                .entry((file, blk))
                                .or_default()
                                .push((t, (k == "W").then_some(seq)));
                        }
                        None => return Err(bad()),
                    }
                }
                self.tids.push(t);
            }
            _ => return Err(bad()),
        }
        Ok(())
    }
}

/// What a reader did, cumulative: sent by the reader as one `S ...` line
/// (`S <reads> <bytes> <wrong reads> <wrong bytes> <discarded> <conns>
/// <latency hist>`), summed by the harness.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub(crate) reads: u64,
    pub(crate) bytes: u64,
    pub(crate) wrong: u64,
    pub(crate) wrong_bytes: u64,
    pub(crate) discarded: u64,
    pub(crate) conns: u64,
    pub(crate) lat: Hist,
}

impl Counters {
    pub(crate) fn add(&mut self, s: &Counters) {
        self.reads += s.reads;
        self.bytes += s.bytes;
        self.wrong += s.wrong;
        self.wrong_bytes += s.wrong_bytes;
        self.discarded += s.discarded;
        self.conns += s.conns;
        self.lat.merge(&s.lat);
    }

    /// The `S ...` line (without LF).
    pub(crate) fn to_line(&self) -> String {
        format!(
            "S {} {} {} {} {} {} {}",
            self.reads,
            self.bytes,
            self.wrong,
            self.wrong_bytes,
            self.discarded,
            self.conns,
            self.lat.to_line()
        )
    }

    /// Parse an `S ...` line; `None` if it is not one.
    pub(crate) fn from_line(line: &str) -> Option<Counters> {
        let f: Vec<&str> = line.strip_prefix("S ")?.splitn(7, ' ').collect();
        let n = |i: usize| f.get(i)?.parse::<u64>().ok();
        Some(Counters {
            reads: n(0)?,
            bytes: n(1)?,
            wrong: n(2)?,
            wrong_bytes: n(3)?,
            discarded: n(4)?,
            conns: n(5)?,
            lat: Hist::from_line(f.get(6).copied().unwrap_or("")),
        })
    }
}

/// Latencies in log-linear buckets of microseconds (exact below 16, then 8
/// buckets per power of two), mergeable and printable as one line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hist {
    counts: HashMap<usize, u64>,
}

impl Hist {
    fn index(us: u64) -> usize {
        if us < 16 {
            return us as usize;
        }
        let e = 63 - us.leading_zeros() as usize;
        16 + (e - 4) * 8 + ((us >> (e - 3)) & 7) as usize
    }

    fn upper(i: usize) -> u64 {
        if i < 16 {
            return i as u64;
        }
        let (e, sub) = ((i - 16) / 8 + 4, ((i - 16) % 8) as u64);
        ((8 + sub + 1) << (e - 3)) - 1
    }

    pub(crate) fn record(&mut self, us: u64) {
        *self.counts.entry(Self::index(us)).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, o: &Hist) {
        for (k, v) in &o.counts {
            *self.counts.entry(*k).or_default() += v;
        }
    }

    /// The `q` quantile in µs (a bucket's upper bound), 0 if empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.counts.values().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut keys: Vec<_> = self.counts.keys().copied().collect();
        keys.sort_unstable();
        let mut seen = 0;
        for k in keys {
            seen += self.counts[&k];
            if seen >= rank {
                return Self::upper(k);
            }
        }
        0
    }

    /// `idx:count,...`
    pub(crate) fn to_line(&self) -> String {
        let mut v: Vec<_> = self.counts.iter().collect();
        v.sort();
        v.iter()
            .map(|(k, c)| format!("{k}:{c}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(crate) fn from_line(s: &str) -> Hist {
        let mut h = Hist::default();
        for p in s.split(',').filter(|p| !p.is_empty()) {
            if let Some((k, c)) = p.split_once(':') {
                if let (Ok(k), Ok(c)) = (k.parse(), c.parse::<u64>()) {
                    *h.counts.entry(k).or_default() += c;
                }
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_a_function_of_its_inputs() {
        let a = content(1, 0, 5, 77, 4096);
        assert_eq!(a, content(1, 0, 5, 77, 4096));
        assert_ne!(a, content(1, 0, 5, 78, 4096));
        assert_ne!(a, content(1, 1, 5, 77, 4096));
        assert_ne!(a, content(2, 0, 5, 77, 4096));
        assert!(!a.is_empty() && a.len() <= 4096);
        assert_eq!(expected(1, 0, 5, None, 64), vec![0; 64]);
    }

    #[test]
    fn history_follows_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.log");
        std::fs::write(&p, "F 0 0000000000000001 4096\nT 0000000000000010 1\nW 0 1\nW 0 2\nC\nP 0\nT 0000000000000020 2\nD 0 1\n").unwrap();
        let mut h = History::default();
        h.refresh(&p).unwrap();
        assert_eq!(
            h.head(),
            Some(Tid(0x10)),
            "the open transaction is not there yet"
        );
        assert!(h.epoch_after(0, Tid(0x10)), "announced");
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"E 0\nC\n").unwrap();
        h.refresh(&p).unwrap();
        assert_eq!(h.head(), Some(Tid(0x20)));
        assert_eq!(h.writer_at(0, 1, Tid(0x10)), Some(1));
        assert_eq!(h.writer_at(0, 1, Tid(0x20)), None);
        assert_eq!(h.writer_at(0, 2, Tid(0x30)), Some(1));
        assert!(h.epoch_after(0, Tid(0x1f)) && !h.epoch_after(0, Tid(0x20)));
        assert_eq!(h.writer_at(0, 2, Tid(0x0f)), None);
    }

    #[test]
    fn counters_lines() {
        let mut c = Counters {
            reads: 3,
            bytes: 48,
            wrong: 1,
            wrong_bytes: 7,
            discarded: 2,
            conns: 5,
            lat: Hist::default(),
        };
        c.lat.record(100);
        let back = Counters::from_line(&c.to_line()).unwrap();
        assert_eq!(back.to_line(), c.to_line());
        assert!(Counters::from_line("S 1 2").is_none());
        assert!(Counters::from_line("WRONG 0 1").is_none());
    }

    #[test]
    fn hist_quantiles_and_lines() {
        let mut h = Hist::default();
        for us in 1..=1000 {
            h.record(us);
        }
        let h2 = Hist::from_line(&h.to_line());
        assert_eq!(h2.quantile(0.5), h.quantile(0.5));
        assert!((500..=563).contains(&h.quantile(0.5)));
        assert!((990..=1114).contains(&h.quantile(0.99)));
    }
}

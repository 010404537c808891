//! `.wcfs/stats`: plain atomic counters, as wcfs `Stats`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The counters users read. Each is independent (no ordering between
/// them is promised), so every access is `Relaxed`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Files under head/bigfile (instantaneous).
    pub(crate) bigfile: AtomicU64,
    /// `@<rev>` directories (instantaneous).
    pub(crate) rev_head: AtomicU64,
    /// READs of bigfile data served (cumulative).
    pub(crate) reads: AtomicU64,
    /// Bytes of bigfile data served (cumulative).
    pub(crate) bytes_read: AtomicU64,
    /// Block ranges invalidated in the kernel cache (cumulative).
    pub(crate) invalidated_blocks: AtomicU64,
    /// Transactions processed (cumulative).
    pub(crate) commits: AtomicU64,
}

impl Stats {
    /// The text of `.wcfs/stats`: the spec's keys first, in its order (the
    /// watch ones are 0 until the isolation protocol exists), then ours;
    /// `tracked_blocks` (blocks of head/ files tracked in ΔFtail since
    /// their last epoch) is the engine's count, passed in.
    pub(crate) fn render(&self, tracked_blocks: u64) -> String {
        let rows: [(&str, u64); 13] = [
            ("BigFile", self.bigfile.load(Relaxed)),
            ("RevHead", self.rev_head.load(Relaxed)),
            ("ZHeadLink", 0),
            ("WatchLink", 0),
            ("Watch", 0),
            ("PinnedBlk", 0),
            ("pin", 0),
            ("pinkill", 0),
            ("reads", self.reads.load(Relaxed)),
            ("bytes_read", self.bytes_read.load(Relaxed)),
            ("invalidated_blocks", self.invalidated_blocks.load(Relaxed)),
            ("commits", self.commits.load(Relaxed)),
            ("tracked_blocks", tracked_blocks),
        ];
        let mut s = String::new();
        for (k, v) in rows {
            let _ = writeln!(s, "{k}\t: {v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn format() {
        let s = super::Stats::default();
        s.reads.fetch_add(3, super::Relaxed);
        let r = s.render(0);
        assert!(
            r.starts_with("BigFile\t: 0\nRevHead\t: 0\nZHeadLink\t: 0\n"),
            "{r}"
        );
        assert!(r.contains("\nreads\t: 3\n"), "{r}");
        assert_eq!(r.lines().count(), 13);
    }
}

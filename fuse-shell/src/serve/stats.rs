//! `.wcfs/stats`: plain atomic counters, as wcfs `Stats`.

use super::hist::LatencyHist;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The instantaneous values, computed by the caller when rendering.
#[derive(Debug, Default, Clone, Copy)]
pub struct Instant {
    /// Open `.wcfs/debug/zhead` streams.
    pub zhead_link: u64,
    /// Open `head/watch` links.
    pub watch_link: u64,
    /// Watches (established or being set up).
    pub watch: u64,
    /// Blocks pinned on clients.
    pub pinned_blk: u64,
    /// Blocks of head/ files tracked in ΔFtail since their last epoch.
    pub tracked_blocks: u64,
    /// Pin round trip (sent → acked), median and 99th percentile, µs.
    pub pin_rtt_p50_us: u64,
    pub pin_rtt_p99_us: u64,
}

/// The counters users read. Each is independent (no ordering between
/// them is promised), so every access is `Relaxed`.
#[derive(Default)]
pub struct Stats {
    /// Files under head/bigfile (instantaneous).
    pub bigfile: AtomicU64,
    /// `@<rev>` directories (instantaneous).
    pub rev_head: AtomicU64,
    /// READs of bigfile data served (cumulative).
    pub reads: AtomicU64,
    /// Bytes of bigfile data served (cumulative).
    pub bytes_read: AtomicU64,
    /// Block ranges invalidated in the kernel cache (cumulative).
    pub invalidated_blocks: AtomicU64,
    /// Transactions processed (cumulative).
    pub commits: AtomicU64,
    /// `@<rev>/` files whose page cache was dropped by a trim (cumulative).
    pub rev_trimmed: AtomicU64,
    /// Changed blocks whose old data went into `@rev`'s cache before
    /// their invalidation (cumulative; `serve::keep`).
    pub kept_blocks: AtomicU64,
    /// Changed blocks with a READ's record whose old data could not be
    /// kept (cumulative).
    pub keep_missed: AtomicU64,
    /// Pin requests sent (cumulative).
    pub pin: AtomicU64,
    /// Clients killed for failing a pin (cumulative; shared with the
    /// killer threads).
    pub pinkill: Arc<AtomicU64>,
    /// Commit processing on the commit thread (ΔFtail update, files
    /// refreshed, view published), per transaction.
    pub commit_time: LatencyHist,
    /// From a commit's processing start to head/at showing it (its
    /// invalidations and those of all earlier commits done).
    pub head_lag: LatencyHist,
}

impl Stats {
    /// The text of `.wcfs/stats`: the spec's keys first, in its order,
    /// then ours. As in the
    /// original, a key in lower case is a counter that never decreases,
    /// one that starts with a capital an instantaneous value (the
    /// original's tools check that on every read).
    pub fn render(&self, now: Instant) -> String {
        let tracked_blocks = now.tracked_blocks;
        let rows: [(&str, u64); 22] = [
            ("BigFile", self.bigfile.load(Relaxed)),
            ("RevHead", self.rev_head.load(Relaxed)),
            ("ZHeadLink", now.zhead_link),
            ("WatchLink", now.watch_link),
            ("Watch", now.watch),
            ("PinnedBlk", now.pinned_blk),
            ("pin", self.pin.load(Relaxed)),
            ("pinkill", self.pinkill.load(Relaxed)),
            ("reads", self.reads.load(Relaxed)),
            ("bytes_read", self.bytes_read.load(Relaxed)),
            ("invalidated_blocks", self.invalidated_blocks.load(Relaxed)),
            ("commits", self.commits.load(Relaxed)),
            ("TrackedBlk", tracked_blocks),
            ("PinRtt50us", now.pin_rtt_p50_us),
            ("PinRtt99us", now.pin_rtt_p99_us),
            ("rev_trimmed", self.rev_trimmed.load(Relaxed)),
            ("Commit50us", self.commit_time.quantile(0.5)),
            ("Commit99us", self.commit_time.quantile(0.99)),
            ("HeadAtLag50us", self.head_lag.quantile(0.5)),
            ("HeadAtLag99us", self.head_lag.quantile(0.99)),
            ("kept_blocks", self.kept_blocks.load(Relaxed)),
            ("keep_missed", self.keep_missed.load(Relaxed)),
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
        let r = s.render(super::Instant::default());
        assert!(
            r.starts_with("BigFile\t: 0\nRevHead\t: 0\nZHeadLink\t: 0\n"),
            "{r}"
        );
        assert!(r.contains("\nreads\t: 3\n"), "{r}");
        assert_eq!(r.lines().count(), 22);
    }
}

//! A latency histogram (pin round trips, commit processing, head/at lag).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Durations in log-linear buckets of microseconds: exact below 16 µs,
/// then 8 buckets per power of two (≤ 12.5 % wide). Counters only:
/// `Relaxed` (a quantile read while others record is approximate).
#[derive(Debug)]
pub struct LatencyHist {
    buckets: Vec<AtomicU64>,
}

impl Default for LatencyHist {
    fn default() -> LatencyHist {
        LatencyHist {
            buckets: (0..LatencyHist::N).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHist {
    const N: usize = 16 + 8 * 40;

    fn index(us: u64) -> usize {
        if us < 16 {
            return us as usize;
        }
        let e = 63 - us.leading_zeros() as usize; // ≥ 4
        let sub = ((us >> (e - 3)) & 7) as usize;
        (16 + (e - 4) * 8 + sub).min(Self::N - 1)
    }

    /// The largest value of bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < 16 {
            return i as u64;
        }
        let (e, sub) = ((i - 16) / 8 + 4, ((i - 16) % 8) as u64);
        ((8 + sub + 1) << (e - 3)) - 1
    }

    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[Self::index(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q`-quantile (0..1) in µs (a bucket's upper bound), 0 if empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i);
            }
        }
        Self::upper(Self::N - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let h = LatencyHist::default();
        assert_eq!(h.quantile(0.5), 0);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        // within a bucket (12.5 %) of the exact quantiles 500 and 990
        let (p50, p99) = (h.quantile(0.5), h.quantile(0.99));
        assert!((500..=563).contains(&p50), "{p50}");
        assert!((990..=1114).contains(&p99), "{p99}");
        for us in [0u64, 5, 15, 16, 17, 100, 1 << 20, u64::MAX >> 1] {
            let i = LatencyHist::index(us);
            assert!(
                LatencyHist::upper(i) >= us.min(LatencyHist::upper(LatencyHist::N - 1)),
                "{us}"
            );
            assert!(i == 0 || LatencyHist::upper(i - 1) < us, "{us}");
        }
    }
}

//! What a run found: the counters of the final report (text or JSON), and
//! the read rates inside and outside fault windows.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// Verified reads per second and reader inside fault windows and outside
/// them.
///
/// A fault window lasts from a fault's start until it is resolved: a
/// never-acking client killed (or dropped by an epoch), a stopped reader
/// continued or killed, a killed reader reaped. Inside a window only the
/// readers the fault cannot legitimately hold up are counted: those whose
/// files no unresolved fault involves (a never-acking client's file, a
/// faulty reader's files: their READs may rightly wait for its pin). A
/// server that keeps other clients going while one is faulty reads about
/// as fast per reader inside windows as outside; one that lets a faulty
/// client stall everybody's READs collapses inside them.
///
/// Time is cut at the harness's polls (every 100 ms) and each slice goes,
/// with the reads that completed in it, to one side: inside if some fault
/// was unresolved at the poll that ends it. Readers report their counts
/// every ~500 ms, so reads can land up to that late; the minimum times
/// below keep that small against the whole.
#[derive(Debug, Clone)]
pub(crate) struct FaultRates {
    /// Faults started (each opens a window; windows may overlap).
    pub(crate) windows: u64,
    /// Wall time inside and outside windows.
    pub(crate) in_time: Duration,
    pub(crate) out_time: Duration,
    /// Reads of the counted readers, and their reader-time (seconds
    /// times readers counted), on each side.
    pub(crate) in_reads: u64,
    pub(crate) in_reader_s: f64,
    pub(crate) out_reads: u64,
    pub(crate) out_reader_s: f64,
    /// The previous poll's time, and each reader's total reads then.
    last: Option<Instant>,
    last_reads: HashMap<u64, u64>,
}

/// One reader at a poll: its id, its total verified reads, and whether an
/// unresolved fault involves it (its own, or one on a file it reads).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReaderAt {
    pub(crate) id: u64,
    pub(crate) reads: u64,
    pub(crate) involved: bool,
}

/// The least of each side for the rates to be judged.
pub(crate) const MIN_WINDOWS: u64 = 2;
pub(crate) const MIN_SIDE_TIME: Duration = Duration::from_secs(5);

impl FaultRates {
    pub(crate) fn new() -> FaultRates {
        FaultRates {
            windows: 0,
            in_time: Duration::ZERO,
            out_time: Duration::ZERO,
            in_reads: 0,
            in_reader_s: 0.0,
            out_reads: 0,
            out_reader_s: 0.0,
            last: None,
            last_reads: HashMap::new(),
        }
    }

    /// A poll at `now`: the live readers, `active` faults unresolved.
    /// A reader first seen here is counted from the next poll on.
    pub(crate) fn account(&mut self, now: Instant, readers: &[ReaderAt], active: usize) {
        if let Some(t) = self.last {
            let dt = now - t;
            if active > 0 {
                self.in_time += dt;
            } else {
                self.out_time += dt;
            }
            for r in readers {
                let Some(&r0) = self.last_reads.get(&r.id) else {
                    continue;
                };
                let dr = r.reads.saturating_sub(r0);
                if active == 0 {
                    self.out_reads += dr;
                    self.out_reader_s += dt.as_secs_f64();
                } else if !r.involved {
                    self.in_reads += dr;
                    self.in_reader_s += dt.as_secs_f64();
                }
            }
        }
        self.last = Some(now);
        self.last_reads = readers.iter().map(|r| (r.id, r.reads)).collect();
    }

    /// Reads per second and counted reader, inside windows.
    pub(crate) fn in_rate(&self) -> f64 {
        rate(self.in_reads, self.in_reader_s)
    }

    /// Reads per second and reader, outside windows.
    pub(crate) fn out_rate(&self) -> f64 {
        rate(self.out_reads, self.out_reader_s)
    }

    /// Whether there is enough on both sides to compare (inside: some
    /// reader not involved in the faults was counted).
    pub(crate) fn judgeable(&self) -> bool {
        self.windows >= MIN_WINDOWS
            && self.in_time >= MIN_SIDE_TIME
            && self.out_time >= MIN_SIDE_TIME
            && self.in_reader_s >= MIN_SIDE_TIME.as_secs_f64()
    }

    /// The problem, if the rate inside windows is below `min_ratio` of the
    /// rate outside (judged only with enough of both; `min_ratio` 0: never).
    pub(crate) fn problem(&self, min_ratio: f64) -> Option<String> {
        if min_ratio <= 0.0 || !self.judgeable() {
            return None;
        }
        let (i, o) = (self.in_rate(), self.out_rate());
        (i < min_ratio * o).then(|| {
            format!(
                "verified reads collapse inside fault windows: {i:.0}/s per reader not involved \
                 ({:.1} s in {} windows) against {o:.0}/s per reader outside ({:.1} s); the limit is \
                 {min_ratio} x (--min-fault-rate-ratio)",
                self.in_time.as_secs_f64(),
                self.windows,
                self.out_time.as_secs_f64()
            )
        })
    }

    /// For progress lines.
    pub(crate) fn short(&self) -> String {
        format!(
            "r/s/reader in faults {:.0} ({:.0} s) outside {:.0} ({:.0} s)",
            self.in_rate(),
            self.in_time.as_secs_f64(),
            self.out_rate(),
            self.out_time.as_secs_f64()
        )
    }
}

/// `.wcfs/stats` keys in lower case are counters that never decrease (the
/// original's convention, which its tools check on every read): the
/// problems, one per counter that went down from `prev` to `cur`.
pub(crate) fn counters_decreased(
    prev: &std::collections::BTreeMap<String, u64>,
    cur: &std::collections::BTreeMap<String, u64>,
) -> Vec<String> {
    cur.iter()
        .filter(|(k, _)| k.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter_map(|(k, &v)| {
            let &p = prev.get(k)?;
            (v < p).then(|| format!(".wcfs/stats: counter {k} went down from {p} to {v}"))
        })
        .collect()
}

fn rate(n: u64, reader_s: f64) -> f64 {
    if reader_s <= 0.0 {
        0.0
    } else {
        n as f64 / reader_s
    }
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) seed: u64,
    pub(crate) duration_s: f64,
    pub(crate) commits: u64,
    pub(crate) epochs: u64,
    pub(crate) blocks_written: u64,
    pub(crate) blocks_deleted: u64,
    pub(crate) reads: u64,
    pub(crate) bytes: u64,
    pub(crate) wrong: u64,
    pub(crate) wrong_bytes: u64,
    pub(crate) discarded: u64,
    pub(crate) conns: u64,
    pub(crate) read_p50_us: u64,
    pub(crate) read_p99_us: u64,
    pub(crate) pins: u64,
    pub(crate) pin_p50_us: u64,
    pub(crate) pin_p99_us: u64,
    /// The server's commit processing and commit -> head/at lag, p50 and
    /// p99 (µs, from `.wcfs/stats`).
    pub(crate) commit_us: [u64; 2],
    pub(crate) head_lag_us: [u64; 2],
    /// Changed blocks whose old data the server kept for `@rev`, and those
    /// it could not keep (`kept_blocks`, `keep_missed`).
    pub(crate) kept: [u64; 2],
    pub(crate) pinkill: u64,
    pub(crate) faults_noack: u64,
    pub(crate) faults_noack_killed: u64,
    /// Never-acking clients whose link an epoch shut, or whose watch was
    /// refused: nothing to kill them for.
    pub(crate) faults_noack_dropped: u64,
    pub(crate) faults_sigstop: u64,
    pub(crate) faults_sigstop_killed: u64,
    pub(crate) faults_sigkill: u64,
    pub(crate) readers_died_unexpectedly: u64,
    /// Readers that died of a SIGBUS from the kernel (the finding of
    /// 2026-12-03, fixed), counted apart from the other deaths; each is a
    /// problem.
    pub(crate) readers_kernel_sigbus: u64,
    pub(crate) server_rss_max: u64,
    pub(crate) server_anon_max: u64,
    /// `None`: not measured (the run was aborted; the mount is not
    /// touched then).
    pub(crate) page_cache: Option<u64>,
    pub(crate) file_bytes: u64,
    /// Data.fs once the files were created, and at the end.
    pub(crate) db_start_bytes: u64,
    pub(crate) db_bytes: u64,
    pub(crate) max_db_bytes: u64,
    /// The writer stopped at `--max-db-bytes`, ending the run early.
    pub(crate) db_full: bool,
    pub(crate) rates: Option<FaultRates>,
    pub(crate) min_fault_rate_ratio: f64,
    /// Not problems: why the run ended as it did.
    pub(crate) notes: Vec<String>,
    pub(crate) problems: Vec<String>,
}

impl Report {
    /// Data.fs growth per 1000 commits, MB (10^6 bytes).
    fn mb_per_1000_commits(&self) -> f64 {
        if self.commits == 0 {
            return 0.0;
        }
        self.db_bytes.saturating_sub(self.db_start_bytes) as f64 / 1e6 * 1000.0
            / self.commits as f64
    }
}

pub(crate) fn print(r: &Report, json: bool) {
    let rates = r.rates.clone().unwrap_or_else(FaultRates::new);
    if json {
        let v = serde_json::json!({
            "ok": r.problems.is_empty(),
            "seed": r.seed,
            "duration_s": r.duration_s,
            "commits": r.commits,
            "epochs": r.epochs,
            "blocks_written": r.blocks_written,
            "blocks_deleted": r.blocks_deleted,
            "verified_reads": r.reads,
            "verified_bytes": r.bytes,
            "wrong_reads": r.wrong,
            "wrong_bytes": r.wrong_bytes,
            "discarded_reads": r.discarded,
            "conns": r.conns,
            "read_latency_us": {"p50": r.read_p50_us, "p99": r.read_p99_us},
            "fault_windows": {
                "windows": rates.windows,
                "in_s": rates.in_time.as_secs_f64(),
                "in_reads": rates.in_reads,
                "in_reads_per_s": rates.in_rate(),
                "out_s": rates.out_time.as_secs_f64(),
                "out_reads": rates.out_reads,
                "out_reads_per_s": rates.out_rate(),
                "judged": rates.judgeable() && r.min_fault_rate_ratio > 0.0,
                "min_ratio": r.min_fault_rate_ratio,
            },
            "pins": r.pins,
            "pin_rtt_us": {"p50": r.pin_p50_us, "p99": r.pin_p99_us},
            "commit_us": {"p50": r.commit_us[0], "p99": r.commit_us[1]},
            "head_at_lag_us": {"p50": r.head_lag_us[0], "p99": r.head_lag_us[1]},
            "kept_for_rev": {"kept": r.kept[0], "missed": r.kept[1]},
            "clients_killed": r.pinkill,
            "faults": {
                "noack": r.faults_noack, "noack_killed": r.faults_noack_killed,
                "noack_dropped_by_epoch": r.faults_noack_dropped,
                "sigstop": r.faults_sigstop, "sigstop_killed": r.faults_sigstop_killed,
                "sigkill": r.faults_sigkill,
            },
            "server_rss_max_bytes": r.server_rss_max,
            "server_anon_rss_max_bytes": r.server_anon_max,
            "page_cache_bytes": r.page_cache,
            "files_max_bytes": r.file_bytes,
            "db": {
                "start_bytes": r.db_start_bytes,
                "end_bytes": r.db_bytes,
                "max_bytes": r.max_db_bytes,
                "full": r.db_full,
                "mb_per_1000_commits": r.mb_per_1000_commits(),
            },
            "notes": r.notes,
            "problems": r.problems,
        });
        println!("{v:#}");
        return;
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "wcfs-stress report (seed {})", r.seed);
    let _ = writeln!(out, "  duration            {:.1} s", r.duration_s);
    let _ = writeln!(
        out,
        "  commits             {} ({} epochs; {} blocks written, {} deleted)",
        r.commits, r.epochs, r.blocks_written, r.blocks_deleted
    );
    let _ = writeln!(
        out,
        "  verified reads      {} ({:.1} MiB); wrong: {} reads, {} bytes; discarded after an epoch {}; {} views",
        r.reads,
        mib(r.bytes),
        r.wrong,
        r.wrong_bytes,
        r.discarded,
        r.conns
    );
    let judged = if r.min_fault_rate_ratio <= 0.0 {
        "not judged: --min-fault-rate-ratio 0".to_owned()
    } else if rates.judgeable() {
        format!("must stay >= {} x outside", r.min_fault_rate_ratio)
    } else {
        format!(
            "not judged: needs >= {MIN_WINDOWS} windows and {} s on each side",
            MIN_SIDE_TIME.as_secs()
        )
    };
    let _ = writeln!(
        out,
        "  reads/s per reader  {:.0} in faults (readers not involved; {:.1} s, {} windows) vs {:.0} outside ({:.1} s); {judged}",
        rates.in_rate(),
        rates.in_time.as_secs_f64(),
        rates.windows,
        rates.out_rate(),
        rates.out_time.as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "  read latency        p50 {} µs, p99 {} µs",
        r.read_p50_us, r.read_p99_us
    );
    let _ = writeln!(
        out,
        "  pins                {} (round trip p50 {} µs, p99 {} µs)",
        r.pins, r.pin_p50_us, r.pin_p99_us
    );
    let _ = writeln!(
        out,
        "  commits (server)    processing p50 {} µs, p99 {} µs; to head/at p50 {} µs, p99 {} µs",
        r.commit_us[0], r.commit_us[1], r.head_lag_us[0], r.head_lag_us[1]
    );
    let _ = writeln!(
        out,
        "  kept for @rev       {} changed blocks' old data (not kept: {})",
        r.kept[0], r.kept[1]
    );
    let _ = writeln!(
        out,
        "  faults              no-ack clients {} (killed {}, dropped by an epoch {}), SIGSTOP {} (killed {}), SIGKILL {}; clients killed by the server {}",
        r.faults_noack, r.faults_noack_killed, r.faults_noack_dropped, r.faults_sigstop, r.faults_sigstop_killed, r.faults_sigkill, r.pinkill
    );
    let _ = writeln!(
        out,
        "  server RSS (max)    {:.1} MiB anonymous, {:.1} MiB with mapped file pages (Data.fs)",
        mib(r.server_anon_max),
        mib(r.server_rss_max)
    );
    let _ = match r.page_cache {
        Some(pc) => writeln!(
            out,
            "  page cache (mount)  {:.1} MiB (files up to {:.1} MiB)",
            mib(pc),
            mib(r.file_bytes)
        ),
        None => writeln!(out, "  page cache (mount)  not measured (run aborted)"),
    };
    let _ = writeln!(
        out,
        "  Data.fs             {:.1} MiB ({:.1} at the start; {:.1} MB per 1000 commits; limit {:.1} MiB{})",
        mib(r.db_bytes),
        mib(r.db_start_bytes),
        r.mb_per_1000_commits(),
        mib(r.max_db_bytes),
        if r.db_full { ", reached" } else { "" }
    );
    for n in &r.notes {
        let _ = writeln!(out, "  note                {n}");
    }
    if r.problems.is_empty() {
        let _ = writeln!(out, "  result              OK");
    } else {
        for p in &r.problems {
            let _ = writeln!(out, "  PROBLEM             {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_never_decrease() {
        let m = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        let prev = m(&[("pin", 5), ("Watch", 3), ("reads", 10)]);
        assert!(
            counters_decreased(&prev, &m(&[("pin", 5), ("Watch", 1), ("reads", 11)])).is_empty()
        );
        let p = counters_decreased(&prev, &m(&[("pin", 4), ("reads", 11)]));
        assert_eq!(p, vec![".wcfs/stats: counter pin went down from 5 to 4"]);
    }

    #[test]
    fn fault_rates_split_time_and_reads() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let at = |id, reads, involved| ReaderAt {
            id,
            reads,
            involved,
        };
        let mut f = FaultRates::new();
        f.account(t0, &[at(1, 0, false), at(2, 0, false)], 0);
        // outside: 2 readers x 10 s, 100/s each
        f.account(t0 + 10 * s, &[at(1, 1000, false), at(2, 1000, false)], 0);
        // inside: reader 2 is involved (it may rightly stall): not counted;
        // reader 1 reads 10/s
        f.account(t0 + 16 * s, &[at(1, 1060, false), at(2, 1000, true)], 1);
        assert_eq!(f.out_reads, 2000);
        assert_eq!(f.in_reads, 60);
        assert_eq!(f.out_rate(), 100.0);
        assert_eq!(f.in_rate(), 10.0);
        assert!(f.problem(0.1).is_none(), "one window is not enough");
        f.windows = 2;
        assert!(f.problem(0.1).is_none(), "10/s is 0.1 x 100/s");
        f.account(t0 + 17 * s, &[at(1, 1061, false), at(2, 1000, true)], 1);
        assert!(f.problem(0.1).is_some());
        assert!(f.problem(0.0).is_none(), "0 disables the check");
        // a new reader counts from its second poll
        f.account(t0 + 18 * s, &[at(1, 1061, false), at(3, 500, false)], 1);
        assert_eq!(f.in_reads, 61);
    }
}

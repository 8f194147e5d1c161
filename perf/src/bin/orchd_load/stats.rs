//! What a run measures: latency histograms (`Stats`), shared counters, token timing.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use hdrhistogram::Histogram;

pub struct Stats {
    /// From the task's start (`t0`) to its `202` (retries after 429s included).
    pub submit_us: Histogram<u64>,
    pub ttft_us: Histogram<u64>,
    pub itl_us: Histogram<u64>,
    pub task_us: Histogram<u64>,
    /// With --cancel-after: cancel sent -> terminal frame received.
    pub cancel_us: Histogram<u64>,
    /// Submit and first-token latency by the shard that answered the POST (orchd's
    /// `X-Orchd-Shard`): where admission ran in place, and where it crossed cores.
    /// Made when the users' stats merge, from `shard_samples`.
    pub by_shard: Vec<(Histogram<u64>, Histogram<u64>)>,
    /// (shard, which: 0 submit | 1 first token, us), pushed while the load runs. A
    /// histogram is ~160 KB to make; made on a user's first `202`, as it once was, it
    /// cost the generator ~0.3 ms per user inside the other users' measurements, which
    /// only orchd (the server that names its shard) paid: 4-5x its submit p50 and 3x
    /// its first-token p99 in a wave of 256
    /// (`perf/results/2026-12-05-issue16-load-generator-artifact.md`).
    shard_samples: Vec<(u16, u8, u64)>,
}

/// Shards beyond this (a server naming absurd ones) are not reported.
const MAX_SHARDS: u16 = 1024;

impl Stats {
    pub fn new() -> Stats {
        let h = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
        Stats {
            submit_us: h(),
            ttft_us: h(),
            itl_us: h(),
            task_us: h(),
            cancel_us: h(),
            by_shard: Vec::new(),
            shard_samples: Vec::new(),
        }
    }

    /// Records the submit latency of a task `shard` answered.
    pub fn shard_submit(&mut self, shard: usize, us: u64) {
        self.shard_sample(shard, 0, us);
    }

    /// Records the first-token latency of a task `shard` answered.
    pub fn shard_ttft(&mut self, shard: usize, us: u64) {
        self.shard_sample(shard, 1, us);
    }

    fn shard_sample(&mut self, shard: usize, which: u8, us: u64) {
        if let Ok(n) = u16::try_from(shard) {
            if n < MAX_SHARDS {
                self.shard_samples.push((n, which, us));
            }
        }
    }

    /// The (submit, first token) histograms of `shard`.
    fn shard(&mut self, shard: usize) -> &mut (Histogram<u64>, Histogram<u64>) {
        while self.by_shard.len() <= shard {
            let h = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
            self.by_shard.push((h(), h()));
        }
        &mut self.by_shard[shard]
    }

    /// Records a token arriving at `now`: time to first token from `t0` for the first,
    /// else the gap since the previous one.
    pub fn token(&mut self, t0: Instant, last: &mut Option<Instant>, now: Instant) {
        let (h, since) = match *last {
            None => (&mut self.ttft_us, t0),
            Some(prev) => (&mut self.itl_us, prev),
        };
        let _ = h.record((now - since).as_micros().max(1) as u64);
        *last = Some(now);
    }

    pub fn merge(&mut self, other: &Stats) {
        self.submit_us.add(&other.submit_us).expect("same bounds");
        self.ttft_us.add(&other.ttft_us).expect("same bounds");
        self.itl_us.add(&other.itl_us).expect("same bounds");
        self.task_us.add(&other.task_us).expect("same bounds");
        self.cancel_us.add(&other.cancel_us).expect("same bounds");
        for (i, (submit, ttft)) in other.by_shard.iter().enumerate() {
            let mine = self.shard(i);
            mine.0.add(submit).expect("same bounds");
            mine.1.add(ttft).expect("same bounds");
        }
        for &(shard, which, us) in &other.shard_samples {
            let (submit, ttft) = self.shard(usize::from(shard));
            let h = if which == 0 { submit } else { ttft };
            let _ = h.record(us);
        }
    }
}

#[derive(Default)]
pub struct Counters {
    pub done: AtomicU64,
    pub tokens: AtomicU64,
    pub rejected: AtomicU64,
    pub errors: AtomicU64,
    pub violations: AtomicU64,
    pub started: AtomicU64,
    /// 429s without Retry-After/X-Backoff-Ms, or whose advice disagrees with the body.
    pub malformed_refusals: AtomicU64,
    /// Open loop: arrivals dropped because --max-in-flight tasks were running.
    pub dropped: AtomicU64,
}

pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_by_shard_become_histograms_when_merged() {
        let mut user = Stats::new();
        user.shard_submit(1, 500);
        user.shard_submit(1, 700);
        user.shard_ttft(1, 900);
        user.shard_submit(usize::from(MAX_SHARDS), 1);
        assert!(
            user.by_shard.is_empty(),
            "no histogram is made while the load runs"
        );
        let mut all = Stats::new();
        all.merge(&user);
        all.merge(&user);
        assert_eq!(
            all.by_shard.len(),
            2,
            "shards 0 and 1; the absurd one dropped"
        );
        assert_eq!(all.by_shard[0].0.len(), 0);
        assert_eq!(all.by_shard[1].0.len(), 4);
        assert_eq!(all.by_shard[1].1.len(), 2);
        assert_eq!(all.by_shard[1].0.max(), 700);
    }
}

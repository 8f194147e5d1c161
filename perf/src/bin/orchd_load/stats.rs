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
    pub by_shard: Vec<(Histogram<u64>, Histogram<u64>)>,
}

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
        }
    }

    /// The (submit, first token) histograms of `shard`.
    pub fn shard(&mut self, shard: usize) -> &mut (Histogram<u64>, Histogram<u64>) {
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

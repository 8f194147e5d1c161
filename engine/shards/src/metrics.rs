//! Shard-local probes: plain cells and HDR histograms, read by a scrape on the same
//! core and merged across shards by `/metrics` (SPEC section 5). No atomics, no locks:
//! a per-token increment is a load and a store in this core's cache.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use hdrhistogram::Histogram;

use orchd_engine::{ApiError, CancelReason, Engine, ErrorKind, Policy};

/// Upper bounds of the latency histograms' buckets, in ms: 0.25 ms doubling to
/// 131 s (20 buckets), enough for sub-millisecond hops and minute-long decodes.
pub const BUCKETS_MS: [f64; 20] = {
    let mut b = [0.0; 20];
    let mut i = 0;
    let mut v = 0.25;
    while i < 20 {
        b[i] = v;
        v *= 2.0;
        i += 1;
    }
    b
};

/// A latency distribution: an HDR histogram in microseconds (for quantiles and for
/// bucket counts at any bound) plus the exact sum.
pub struct Latency {
    hdr: Histogram<u64>,
    sum_us: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            hdr: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("histogram bounds"),
            sum_us: 0,
        }
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.hdr.record(us);
        self.sum_us += us;
    }

    /// Bins the recorded values into [`BUCKETS_MS`] in one pass over the distinct
    /// values recorded (not over the histogram's whole range).
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut per_bucket = [0u64; 20];
        for v in self.hdr.iter_recorded() {
            // The value this HDR bucket stands for, in ms; it counts in the first
            // Prometheus bucket whose bound holds it.
            let ms = self.hdr.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
            if let Some(i) = BUCKETS_MS.iter().position(|le| ms <= *le) {
                per_bucket[i] += v.count_at_value();
            }
        }
        let mut cumulative = [0u64; 20];
        let mut running = 0;
        for (c, n) in cumulative.iter_mut().zip(per_bucket) {
            running += n;
            *c = running;
        }
        LatencySnapshot {
            cumulative,
            count: self.hdr.len(),
            sum_ms: self.sum_us as f64 / 1000.0,
        }
    }
}

/// Cumulative bucket counts (`le` = [`BUCKETS_MS`]), count and sum.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySnapshot {
    pub cumulative: [u64; 20],
    pub count: u64,
    pub sum_ms: f64,
}

impl LatencySnapshot {
    /// Adds another shard's distribution of the same thing.
    pub fn merge(&mut self, other: &LatencySnapshot) {
        for (a, b) in self.cumulative.iter_mut().zip(other.cumulative) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ms += other.sum_ms;
    }
}

/// Latencies of recent tasks: the current window and the one before it, so a reading
/// always covers between one and two windows (`GET /v1/pools/{id}/health`).
pub struct Recent {
    current: Histogram<u64>,
    previous: Histogram<u64>,
}

impl Default for Recent {
    fn default() -> Self {
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("histogram bounds");
        Recent {
            current: h(),
            previous: h(),
        }
    }
}

impl Recent {
    fn record(&mut self, d: Duration) {
        let _ = self
            .current
            .record((d.as_micros() as u64).clamp(1, 3_600_000_000));
    }

    fn rotate(&mut self) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.reset();
    }

    /// (p50 ms, p99 ms, count).
    pub fn summary(&self) -> (f64, f64, u64) {
        let mut h = self.previous.clone();
        let _ = h.add(&self.current);
        let ms = |q| h.value_at_quantile(q) as f64 / 1000.0;
        (ms(0.5), ms(0.99), h.len())
    }
}

/// How long one window of [`Recent`] lasts.
pub const RECENT_WINDOW: Duration = Duration::from_secs(60);

/// Counters and histograms of one pool, kept by its owner shard and shared (`Rc`) with
/// the pool's running tasks. Index 0 is interactive, 1 batch.
#[derive(Default)]
pub struct PoolProbe {
    pub enqueued: [Cell<u64>; 2],
    pub started: [Cell<u64>; 2],
    /// By [`CancelReason::index`].
    pub canceled: [Cell<u64>; 8],
    pub tokens_in: Cell<u64>,
    pub tokens_out: Cell<u64>,
    first_token: [RefCell<Latency>; 2],
    decode: [RefCell<Latency>; 2],
    pub queue_wait: [RefCell<Latency>; 2],
    pub inter_token: RefCell<Latency>,
    /// DNS refreshes of a pool that discovers its replicas: [answered, failed].
    pub discovery: [Cell<u64>; 2],
    /// Replicas that [joined, left] its set.
    pub replica_changes: [Cell<u64>; 2],
    /// Tasks started on a replica of a set, by what chose it: [session, prompt prefix,
    /// most free slots].
    pub routed: [Cell<u64>; 3],
    /// Of those routed by [session, prefix], started away from their own replica (the
    /// first by rendezvous weight among the ready ones), which was full.
    pub affinity_missed: [Cell<u64>; 2],
    /// The same first-token and decode latencies over the last minutes, for health.
    recent_first_token: RefCell<Recent>,
    recent_decode: RefCell<Recent>,
}

pub fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

impl PoolProbe {
    /// A task's latencies, recorded once for both `/metrics` (per class, since start)
    /// and pool health (recent windows): admission to first token, first to last.
    pub fn record_task(&self, class: usize, first_token: Duration, decode: Option<Duration>) {
        self.first_token[class].borrow_mut().record(first_token);
        self.recent_first_token.borrow_mut().record(first_token);
        if let Some(d) = decode {
            self.decode[class].borrow_mut().record(d);
            self.recent_decode.borrow_mut().record(d);
        }
    }

    /// A task cut short, counted under its reason.
    pub fn count_canceled(&self, reason: CancelReason) {
        bump(&self.canceled[reason.index()]);
    }

    /// Starts a new window of the recent latencies.
    pub fn rotate_recent(&self) {
        self.recent_first_token.borrow_mut().rotate();
        self.recent_decode.borrow_mut().rotate();
    }

    /// Recent (first token, decode) latencies: (p50 ms, p99 ms, count) each.
    pub fn recent(&self) -> ((f64, f64, u64), (f64, f64, u64)) {
        (
            self.recent_first_token.borrow().summary(),
            self.recent_decode.borrow().summary(),
        )
    }

    pub fn snapshot(&self) -> PoolProbeSnapshot {
        let two = |f: &[RefCell<Latency>; 2]| [f[0].borrow().snapshot(), f[1].borrow().snapshot()];
        PoolProbeSnapshot {
            enqueued: [self.enqueued[0].get(), self.enqueued[1].get()],
            started: [self.started[0].get(), self.started[1].get()],
            canceled: std::array::from_fn(|i| self.canceled[i].get()),
            tokens_in: self.tokens_in.get(),
            tokens_out: self.tokens_out.get(),
            first_token: two(&self.first_token),
            decode: two(&self.decode),
            queue_wait: two(&self.queue_wait),
            inter_token: self.inter_token.borrow().snapshot(),
            discovery: [self.discovery[0].get(), self.discovery[1].get()],
            replica_changes: [self.replica_changes[0].get(), self.replica_changes[1].get()],
            routed: std::array::from_fn(|i| self.routed[i].get()),
            affinity_missed: std::array::from_fn(|i| self.affinity_missed[i].get()),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct PoolProbeSnapshot {
    pub enqueued: [u64; 2],
    pub started: [u64; 2],
    /// By [`CancelReason::index`].
    pub canceled: [u64; 8],
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub first_token: [LatencySnapshot; 2],
    pub decode: [LatencySnapshot; 2],
    pub queue_wait: [LatencySnapshot; 2],
    pub inter_token: LatencySnapshot,
    /// DNS refreshes [answered, failed] (pools with `discover`).
    pub discovery: [u64; 2],
    /// Replicas that [joined, left] the set (pools with `discover`).
    pub replica_changes: [u64; 2],
    /// Tasks started on a replica by [session, prefix, free slots] (replica sets).
    pub routed: [u64; 3],
    /// Of those by [session, prefix], away from their own replica.
    pub affinity_missed: [u64; 2],
}

/// One pool as a scrape sees it.
#[derive(Clone, Debug)]
pub struct PoolSample {
    pub pool: usize,
    pub queue_depth: [u64; 2],
    pub slots_busy: u32,
    pub slots_total: u32,
    pub probe: PoolProbeSnapshot,
    /// Every replica the pool has had (one that left DNS's answer keeps its counters).
    pub replicas: Vec<ReplicaSample>,
}

/// What ran on one engine replica of a pool (issue 20), kept by the pool's owner and
/// shared (`Rc`) with the tasks running there. A task counts its start (and its prompt)
/// on the replica it first started on; its tokens on the one that streamed them.
#[derive(Default)]
pub struct ReplicaProbe {
    pub started: [Cell<u64>; 2],
    /// By [`CancelReason::index`].
    pub canceled: [Cell<u64>; 8],
    pub tokens_in: Cell<u64>,
    pub tokens_out: Cell<u64>,
}

/// One replica as a scrape sees it.
#[derive(Clone, Debug, Default)]
pub struct ReplicaSample {
    /// `replica_id`: host:port, or `mock`.
    pub id: String,
    pub started: [u64; 2],
    pub canceled: [u64; 8],
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Busy slots / slots of this replica.
    pub busy_share: f64,
    /// KV bytes of the tasks running on it (the mock's simulated device memory).
    pub vram_used_bytes: u64,
}

/// Admission outcomes counted where the request was served.
#[derive(Default)]
pub struct AdmissionProbe {
    /// `tasks_rejected_total{engine, reason}`: [engine][ErrorKind].
    pub rejected: [[Cell<u64>; 12]; 4],
    /// `admission_backpressure_events_total{engine, policy}`: [engine][reject, drop-lru].
    pub backpressure: [[Cell<u64>; 2]; 4],
    /// SSE responses being streamed from this shard.
    pub active_streams: Cell<u64>,
}

pub fn engine_index(e: Engine) -> usize {
    Engine::ALL
        .iter()
        .position(|x| *x == e)
        .expect("every engine is listed")
}

pub fn kind_index(k: ErrorKind) -> usize {
    ErrorKind::ALL
        .iter()
        .position(|x| *x == k)
        .expect("every kind is listed")
}

impl AdmissionProbe {
    pub fn snapshot(&self) -> AdmissionSnapshot {
        AdmissionSnapshot {
            rejected: std::array::from_fn(|e| std::array::from_fn(|k| self.rejected[e][k].get())),
            backpressure: std::array::from_fn(|e| {
                std::array::from_fn(|p| self.backpressure[e][p].get())
            }),
            active_streams: self.active_streams.get(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct AdmissionSnapshot {
    pub rejected: [[u64; 12]; 4],
    pub backpressure: [[u64; 2]; 4],
    pub active_streams: u64,
}

/// Refusal reasons of `tenant_rejected_total`: the policy that refused (a 429's
/// `policy_label`), else the error code.
pub const REFUSALS: usize = Policy::ALL.len() + ErrorKind::ALL.len();

/// The reason a refusal is counted under (an index into [`REFUSALS`]).
pub fn refusal_index(e: &ApiError) -> usize {
    match e.policy_label {
        Some(p) => p.index(),
        None => Policy::ALL.len() + kind_index(e.kind),
    }
}

/// The `reason` label of refusal index `i`.
pub fn refusal_label(i: usize) -> &'static str {
    match Policy::ALL.get(i) {
        Some(p) => p.as_str(),
        None => ErrorKind::ALL[i - Policy::ALL.len()].as_str(),
    }
}

/// One tenant's name and its counters on one shard (issue 19): admissions and refusals
/// where its requests were served, tokens, slot time and queue waits where its tasks
/// run.
pub struct TenantProbe {
    pub name: String,
    pub admitted: Cell<u64>,
    /// By [`refusal_index`].
    pub rejected: [Cell<u64>; REFUSALS],
    pub tokens_out: Cell<u64>,
    /// Microseconds its ended tasks held slots.
    pub slot_us: Cell<u64>,
    /// Admission to start, of its tasks that queued or not; allocated on first use
    /// (a histogram is some KiB, and most tenants never run on most shards).
    queue_wait: RefCell<Option<Box<Latency>>>,
}

impl TenantProbe {
    pub fn new(name: &str) -> TenantProbe {
        TenantProbe {
            name: name.to_string(),
            admitted: Cell::new(0),
            rejected: std::array::from_fn(|_| Cell::new(0)),
            tokens_out: Cell::new(0),
            slot_us: Cell::new(0),
            queue_wait: RefCell::new(None),
        }
    }

    pub fn record_queue_wait(&self, d: Duration) {
        self.queue_wait
            .borrow_mut()
            .get_or_insert_with(Box::default)
            .record(d);
    }

    pub fn snapshot(&self) -> TenantSnapshot {
        TenantSnapshot {
            admitted: self.admitted.get(),
            rejected: std::array::from_fn(|i| self.rejected[i].get()),
            tokens_out: self.tokens_out.get(),
            slot_seconds: self.slot_us.get() as f64 / 1e6,
            queue_wait: self.queue_wait.borrow().as_ref().map(|l| l.snapshot()),
        }
    }
}

/// A copy of one tenant's counters on one shard, sent across cores.
#[derive(Clone, Debug)]
pub struct TenantSnapshot {
    pub admitted: u64,
    pub rejected: [u64; REFUSALS],
    pub tokens_out: u64,
    pub slot_seconds: f64,
    pub queue_wait: Option<LatencySnapshot>,
}

/// CPU time this thread has used (for per-shard busy ratios).
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_bins_into_cumulative_buckets() {
        let mut l = Latency::default();
        for us in [100, 200, 300, 900, 1500, 5_000_000] {
            l.record(Duration::from_micros(us));
        }
        let s = l.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.cumulative[0], 2, "<= 0.25 ms");
        assert_eq!(s.cumulative[1], 3, "<= 0.5 ms");
        assert_eq!(s.cumulative[2], 4, "<= 1 ms");
        assert_eq!(s.cumulative[3], 5, "<= 2 ms");
        assert_eq!(s.cumulative[19], 6);
        assert!((s.sum_ms - 5_003.0).abs() < 0.01);
    }
}

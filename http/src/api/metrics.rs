//! `GET /metrics` (SPEC section 5): Prometheus text format 0.0.4, merged at scrape time
//! from every shard's probes (a map-reduce over shards) and the dispatcher's model
//! states. Every contracted series is present from startup, with zero samples for
//! every configured pool, engine, priority and reason.
//!
//! The probes stay plain shard-local cells and HDR histograms (no collector of the
//! `prometheus` crate on the hot path); only here, once per scrape, do their snapshots
//! become the crate's metric families, which its `TextEncoder` writes, escaping
//! included. No registry: the values are already merged.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::TextEncoder;

use orchd_engine::config::PoolConfig;
use orchd_engine::{ApiError, CancelReason, Config, Engine, ErrorKind, ModelState};
use orchd_shards::metrics::{
    refusal_label, LatencySnapshot, PoolSample, ReplicaSample, TenantSnapshot, BUCKETS_MS, REFUSALS,
};
use orchd_shards::{rt, DispatcherSnapshot, ShardSnapshot};

use crate::app::ShardApp;
use crate::body::Body;

const PRIORITIES: [&str; 2] = ["interactive", "batch"];
const POLICIES: [&str; 2] = ["reject", "drop-lru"];
const RESULTS: [&str; 2] = ["ok", "failed"];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The mock engine's one simulated device.
const DEVICE: [&str; 1] = ["mock0"];
/// Histogram scales: the contracted histograms are in ms, the others in seconds.
const MS: f64 = 1.0;
const SECONDS: f64 = 0.001;

/// `tasks_canceled_total{reason}` values, in the order of the probe's `canceled` cells.
fn cancel_reasons() -> Vec<&'static str> {
    CancelReason::ALL.iter().map(|r| r.as_str()).collect()
}

/// `model_state{state}` of a model in state `now`: every state's label value, and
/// whether it is `now`.
fn model_states(now: ModelState) -> impl Iterator<Item = (&'static str, bool)> {
    ModelState::ALL.iter().map(move |s| (s.as_str(), *s == now))
}

pub(crate) async fn get(app: &ShardApp) -> Result<Response<Body>, ApiError> {
    let shards = app.shard.scrape_all().await?;
    let dispatcher = app.shard.dispatcher().scrape().await?;
    let runtime = rt::current().expect("scrapes are served on a shard");
    let tenants: Vec<&str> = app.app.keys.names().collect();
    let text = render(&app.app.config, &tenants, runtime, &shards, &dispatcher).await;
    let mut r = Response::new(Body::full(text));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn counter(v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::default();
    m.set_counter(c);
    m
}

fn gauge(v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    Metric::from_gauge(g)
}

/// A latency histogram in ms (`scale` [`MS`]) or in seconds ([`SECONDS`]); the
/// encoder adds the `+Inf` bucket from the count.
fn histogram(h: &LatencySnapshot, scale: f64) -> Metric {
    let buckets = BUCKETS_MS
        .iter()
        .zip(h.cumulative)
        .map(|(le, n)| {
            let mut b = Bucket::default();
            b.set_upper_bound(le * scale);
            b.set_cumulative_count(n);
            b
        })
        .collect();
    let mut x = Histogram::default();
    x.set_bucket(buckets);
    x.set_sample_count(h.count);
    x.set_sample_sum(h.sum_ms * scale);
    let mut m = Metric::default();
    m.set_histogram(x);
    m
}

fn labeled(mut m: Metric, labels: Vec<LabelPair>) -> Metric {
    m.set_label(labels);
    m
}

/// A configured pool and its sample from the shard that owns it.
#[derive(Clone)]
struct Pool<'a> {
    cfg: &'a PoolConfig,
    /// `replica_id`: the pool's engine replica ([`PoolConfig::replica_id`]).
    replica: String,
    sample: &'a PoolSample,
}

impl Pool<'_> {
    /// engine, engine_version, pool_id, then `replica_id` if given, then `extra`.
    fn labels(&self, replica: Option<&str>, extra: Option<(&str, &str)>) -> Vec<LabelPair> {
        let mut l = Vec::with_capacity(5);
        l.push(label("engine", self.cfg.engine.as_str()));
        l.push(label("engine_version", &self.cfg.engine_version));
        l.push(label("pool_id", &self.cfg.id));
        if let Some(r) = replica {
            l.push(label("replica_id", r));
        }
        if let Some((k, v)) = extra {
            l.push(label(k, v));
        }
        l
    }
}

/// A value of a pool's sample, for the value index of a label.
type OfPool<'a> = &'a dyn Fn(&PoolSample, usize) -> f64;
/// A value of a replica's sample, for the value index of a label.
type OfReplica<'a> = &'a dyn Fn(&ReplicaSample, usize) -> f64;

/// The samples of a family labeled `replica_id` (issue 20), per pool and value of the
/// label `by` (if any): one per replica the pool has had, what ran on it
/// (`on_replica`); and, when `on_pool` is given, what no replica holds (tasks enqueued,
/// or ended while queued: the pool's count less its replicas') under the pool's own
/// `replica_id` ([`PoolConfig::replica_id`]: its one replica's id, its replicas' ids
/// joined, or the name it discovers). Samples with equal labels are summed, so a pool of
/// one replica shows one sample, as before replica sets.
fn per_replica(
    pools: &[Pool<'_>],
    by: Option<(&str, &[&str])>,
    on_pool: Option<OfPool<'_>>,
    on_replica: Option<OfReplica<'_>>,
    make: fn(f64) -> Metric,
) -> Vec<Metric> {
    let mut out = Vec::new();
    for p in pools {
        let values: Vec<Option<&str>> = match by {
            Some((_, vs)) => vs.iter().map(|v| Some(*v)).collect(),
            None => vec![None],
        };
        for (i, v) in values.into_iter().enumerate() {
            let mut samples: Vec<(&str, f64)> = Vec::new();
            fn add<'a>(samples: &mut Vec<(&'a str, f64)>, id: &'a str, x: f64) {
                match samples.iter_mut().find(|(k, _)| *k == id) {
                    Some((_, sum)) => *sum += x,
                    None => samples.push((id, x)),
                }
            }
            let mut on_replicas = 0.0;
            for r in p.sample.replicas.iter().filter(|_| on_replica.is_some()) {
                let x = on_replica.map_or(0.0, |f| f(r, i));
                on_replicas += x;
                add(&mut samples, &r.id, x);
            }
            if let Some(f) = on_pool {
                let rest = (f(p.sample, i) - on_replicas).max(0.0);
                if rest > 0.0 || samples.is_empty() {
                    add(&mut samples, &p.replica, rest);
                }
            }
            let extra = by.zip(v).map(|((name, _), v)| (name, v));
            for (id, x) in samples {
                out.push(labeled(make(x), p.labels(Some(id), extra)));
            }
        }
    }
    out
}

/// One sample per pool.
fn per_pool(pools: &[Pool<'_>], f: impl Fn(&PoolSample) -> Metric) -> Vec<Metric> {
    pools
        .iter()
        .map(|p| labeled(f(p.sample), p.labels(None, None)))
        .collect()
}

/// One sample per pool and value of label `name`; `f` gets the value's index.
fn per_pool_by(
    pools: &[Pool<'_>],
    (name, values): (&str, &[&str]),
    f: impl Fn(&PoolSample, usize) -> Metric,
) -> Vec<Metric> {
    let mut out = Vec::with_capacity(pools.len() * values.len());
    for p in pools {
        for (i, v) in values.iter().enumerate() {
            out.push(labeled(f(p.sample, i), p.labels(None, Some((name, v)))));
        }
    }
    out
}

/// The pools whose config `keep` accepts.
fn only<'a>(pools: &[Pool<'a>], keep: impl Fn(&PoolConfig) -> bool) -> Vec<Pool<'a>> {
    pools.iter().filter(|p| keep(p.cfg)).cloned().collect()
}

/// One counter per engine and value of label `name`: `f(engine index, value index)`.
fn per_engine(name: &str, values: &[&str], f: impl Fn(usize, usize) -> u64) -> Vec<Metric> {
    let mut out = Vec::with_capacity(Engine::ALL.len() * values.len());
    for (e, engine) in Engine::ALL.iter().enumerate() {
        for (i, v) in values.iter().enumerate() {
            let labels = vec![label("engine", engine.as_str()), label(name, v)];
            out.push(labeled(counter(f(e, i) as f64), labels));
        }
    }
    out
}

/// One sample per shard, labeled `shard`.
fn per_shard(shards: &[ShardSnapshot], f: impl Fn(&ShardSnapshot) -> Metric) -> Vec<Metric> {
    shards
        .iter()
        .enumerate()
        .map(|(i, s)| labeled(f(s), vec![label("shard", &i.to_string())]))
        .collect()
}

/// The exposition being written, one family at a time.
struct Exposition {
    text: String,
    encoder: TextEncoder,
}

impl Exposition {
    /// Encodes one family, then lets the shard's other tasks (streams) run: a scrape
    /// never holds this core for more than one family.
    async fn family(&mut self, name: &str, kind: MetricType, help: &str, metrics: Vec<Metric>) {
        // The encoder refuses a family without samples (no pools or no models
        // configured): there is nothing to say about it.
        if !metrics.is_empty() {
            let mut f = MetricFamily::default();
            f.set_name(name.to_owned());
            f.set_help(help.to_owned());
            f.set_field_type(kind);
            f.set_metric(metrics);
            self.encoder
                .encode_utf8(std::slice::from_ref(&f), &mut self.text)
                .expect("a named family with samples encodes into a String");
        }
        rt::yield_now().await;
    }
}

/// Renders the exposition, yielding to the shard's other tasks between families.
pub(crate) async fn render(
    config: &Config,
    tenants: &[&str],
    runtime: rt::Kind,
    shards: &[ShardSnapshot],
    d: &DispatcherSnapshot,
) -> String {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    // Each pool lives on exactly one shard: pair every configured pool with its sample.
    let mut pools: Vec<Pool<'_>> = shards
        .iter()
        .flat_map(|snap| {
            snap.pools.iter().map(move |sample| Pool {
                cfg: &config.pools[sample.pool],
                replica: config.pools[sample.pool].replica_id(),
                sample,
            })
        })
        .collect();
    pools.sort_by(|a, b| a.cfg.id.cmp(&b.cfg.id));
    let p = &pools[..];
    let prio = ("priority", &PRIORITIES[..]);
    let device = ("device", &DEVICE[..]);
    let reasons = cancel_reasons();
    let kinds = ErrorKind::ALL.map(ErrorKind::as_str);
    let mut x = Exposition {
        text: String::with_capacity(64 * 1024),
        encoder: TextEncoder::new(),
    };

    x.family(
        "tasks_enqueued_total",
        COUNTER,
        "Tasks admitted into a pool's queue.",
        per_replica(
            p,
            Some(prio),
            Some(&|s, i| s.probe.enqueued[i] as f64),
            None,
            counter,
        ),
    )
    .await;
    x.family(
        "tasks_started_total",
        COUNTER,
        "Tasks that got a slot and began running.",
        per_replica(
            p,
            Some(prio),
            Some(&|s, i| s.probe.started[i] as f64),
            Some(&|r, i| r.started[i] as f64),
            counter,
        ),
    )
    .await;
    x.family(
        "tasks_canceled_total",
        COUNTER,
        "Tasks ended before completion, by reason (client, orphaned, deadline, drop-lru, drain, shutdown, watchdog, engine).",
        per_replica(
            p,
            Some(("reason", &reasons)),
            Some(&|s, i| s.probe.canceled[i] as f64),
            Some(&|r, i| r.canceled[i] as f64),
            counter,
        ),
    )
    .await;
    x.family(
        "tasks_rejected_total",
        COUNTER,
        "Task submissions refused, by engine asked for and error kind.",
        per_engine("reason", &kinds, |e, k| {
            shards.iter().map(|s| s.admission.rejected[e][k]).sum()
        }),
    )
    .await;
    x.family(
        "queue_depth",
        GAUGE,
        "Tasks waiting in a pool's queue.",
        per_pool_by(p, prio, |s, i| gauge(s.queue_depth[i] as f64)),
    )
    .await;
    x.family(
        "kv_cache_usage_ratio",
        GAUGE,
        "Share of the engine's KV cache in use (mock: busy slots / slots).",
        per_replica(p, None, None, Some(&|r, _| r.busy_share), gauge),
    )
    .await;
    x.family(
        "gpu_utilization",
        GAUGE,
        "Device utilization reported by the engine (mock: busy slots / slots).",
        per_replica(p, Some(device), None, Some(&|r, _| r.busy_share), gauge),
    )
    .await;
    x.family(
        "vram_used_bytes",
        GAUGE,
        "Device memory in use reported by the engine (mock: KV bytes of running tasks).",
        per_replica(
            p,
            Some(device),
            None,
            Some(&|r, _| r.vram_used_bytes as f64),
            gauge,
        ),
    )
    .await;
    x.family(
        "latency_first_token_ms",
        HISTOGRAM,
        "Admission to first token, ms.",
        per_pool_by(p, prio, |s, i| histogram(&s.probe.first_token[i], MS)),
    )
    .await;
    x.family(
        "latency_decode_ms",
        HISTOGRAM,
        "First to last token, ms.",
        per_pool_by(p, prio, |s, i| histogram(&s.probe.decode[i], MS)),
    )
    .await;
    x.family(
        "tokens_in_total",
        COUNTER,
        "Prompt tokens of started tasks (whitespace words for the mock).",
        per_replica(
            p,
            None,
            Some(&|s, _| s.probe.tokens_in as f64),
            Some(&|r, _| r.tokens_in as f64),
            counter,
        ),
    )
    .await;
    x.family(
        "tokens_out_total",
        COUNTER,
        "Tokens streamed.",
        per_replica(
            p,
            None,
            Some(&|s, _| s.probe.tokens_out as f64),
            Some(&|r, _| r.tokens_out as f64),
            counter,
        ),
    )
    .await;
    // Pools that discover their replicas through DNS (issue 20); none, no series.
    let discovering = only(&pools, |c| c.adapter.discover.is_some());
    if !discovering.is_empty() {
        x.family(
            "replica_discovery_total",
            COUNTER,
            "DNS refreshes of a pool's replica set (adapter.discover), by outcome.",
            per_pool_by(
                &discovering,
                ("outcome", &["answered", "failed"]),
                |s, i| counter(s.probe.discovery[i] as f64),
            ),
        )
        .await;
        x.family(
            "replica_set_changes_total",
            COUNTER,
            "Replicas that joined or left a pool's set as DNS listed them.",
            per_pool_by(&discovering, ("change", &["joined", "left"]), |s, i| {
                counter(s.probe.replica_changes[i] as f64)
            }),
        )
        .await;
    }
    // Pools over a set of replicas (`urls`, or `discover`): how their tasks were routed.
    let sets = only(&pools, PoolConfig::is_replica_set);
    if !sets.is_empty() {
        x.family(
            "replica_routing_total",
            COUNTER,
            "Tasks started on a replica of a set, by what chose the replica: the task's \
             session, its prompt's first adapter.prefix_bytes bytes, or the most free slots.",
            per_pool_by(
                &sets,
                ("by", &["session", "prefix", "free_slots"]),
                |s, i| counter(s.probe.routed[i] as f64),
            ),
        )
        .await;
        x.family(
            "replica_affinity_missed_total",
            COUNTER,
            "Tasks routed by session or prefix that started away from their own replica \
             (the first by rendezvous weight among the ready ones), because it was full.",
            per_pool_by(&sets, ("by", &["session", "prefix"]), |s, i| {
                counter(s.probe.affinity_missed[i] as f64)
            }),
        )
        .await;
    }
    x.family(
        "admission_backpressure_events_total",
        COUNTER,
        "Queue-full events: refusals (reject) and evictions or refusals (drop-lru).",
        per_engine("policy", &POLICIES, |e, i| {
            shards.iter().map(|s| s.admission.backpressure[e][i]).sum()
        }),
    )
    .await;
    let mut verifications = Vec::new();
    for (e, engine) in Engine::ALL.iter().enumerate() {
        for (i, result) in RESULTS.iter().enumerate() {
            let labels = vec![
                label("result", result),
                label("reason", "reload"),
                label("engine", engine.as_str()),
            ];
            verifications.push(labeled(counter(d.catalog[e][i] as f64), labels));
        }
    }
    x.family(
        "catalog_verifications_total",
        COUNTER,
        "Model verifications: engines loading a model on reload.",
        verifications,
    )
    .await;
    let mut models = Vec::new();
    for &(ref model, now) in &d.models {
        for (state, is) in model_states(now) {
            let labels = vec![label("model_id", model), label("state", state)];
            models.push(labeled(gauge(f64::from(u8::from(is))), labels));
        }
    }
    x.family(
        "model_state",
        GAUGE,
        "1 for the state each model is in (ready, loading, draining, drained, failed, retired).",
        models,
    )
    .await;

    // Beyond the contract, in Prometheus base units.
    x.family(
        "runtime_info",
        GAUGE,
        "1 for the runtime the shards run on (io_uring or epoll; server.runtime resolved at startup).",
        vec![labeled(gauge(1.0), vec![label("runtime", runtime.as_str())])],
    )
    .await;
    x.family(
        "queue_wait_seconds",
        HISTOGRAM,
        "Admission to start of execution.",
        per_pool_by(p, prio, |s, i| histogram(&s.probe.queue_wait[i], SECONDS)),
    )
    .await;
    x.family(
        "inter_token_seconds",
        HISTOGRAM,
        "Time between consecutive tokens of a task.",
        per_pool(p, |s| histogram(&s.probe.inter_token, SECONDS)),
    )
    .await;
    x.family(
        "pool_slots_busy",
        GAUGE,
        "Slots running a task.",
        per_pool(p, |s| gauge(s.slots_busy.into())),
    )
    .await;
    x.family(
        "pool_ready",
        GAUGE,
        "1 if the pool admits tasks: ready (not draining, drained or reloading a drained pool) and its engine answers its health probe.",
        per_pool(p, |s| {
            gauge(f64::from(u8::from(
                d.pools_ready.get(s.pool).copied().unwrap_or(false),
            )))
        }),
    )
    .await;
    x.family(
        "active_streams",
        GAUGE,
        "SSE responses being streamed, by the shard serving them.",
        per_shard(shards, |s| gauge(s.admission.active_streams as f64)),
    )
    .await;
    x.family(
        "shard_tasks",
        GAUGE,
        "Live tasks owned by each shard.",
        per_shard(shards, |s| gauge(s.live_tasks as f64)),
    )
    .await;
    x.family(
        "shard_cpu_seconds_total",
        COUNTER,
        "CPU time of each shard's thread; its rate is the shard's busy ratio.",
        per_shard(shards, |s| counter(s.cpu_seconds)),
    )
    .await;
    tenant_families(&mut x, tenants, shards).await;
    let mut responses = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        for (class, n) in STATUS_CLASSES.iter().zip(s.http.responses) {
            let labels = vec![label("shard", &i.to_string()), label("class", class)];
            responses.push(labeled(counter(n as f64), labels));
        }
    }
    x.family(
        "http_responses_total",
        COUNTER,
        "HTTP responses sent, by shard and status class.",
        responses,
    )
    .await;
    x.family(
        "connections_accepted_total",
        COUNTER,
        "TCP connections accepted, by shard.",
        per_shard(shards, |s| counter(s.http.connections_accepted as f64)),
    )
    .await;
    x.family(
        "connections_open",
        GAUGE,
        "Open TCP connections, by shard.",
        per_shard(shards, |s| gauge(s.http.connections_open as f64)),
    )
    .await;
    x.family(
        "connections_refused_total",
        COUNTER,
        "TCP connections answered 503 and closed: over server.max_connections, by shard.",
        per_shard(shards, |s| counter(s.http.connections_refused as f64)),
    )
    .await;
    x.text
}

/// The per-tenant series (issue 19), summed over shards: counters for every tenant
/// (`tenants`: their names in `TenantId` order) from startup; refusal reasons and queue
/// waits once a tenant has some.
async fn tenant_families(x: &mut Exposition, tenants: &[&str], shards: &[ShardSnapshot]) {
    use MetricType::{COUNTER, HISTOGRAM};
    let sum = |f: &dyn Fn(&TenantSnapshot) -> f64| -> Vec<Metric> {
        tenants
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = shards.iter().filter_map(|s| s.tenants.get(i)).map(f).sum();
                labeled(counter(v), vec![label("tenant", t)])
            })
            .collect()
    };
    x.family(
        "tenant_tasks_admitted_total",
        COUNTER,
        "Tasks admitted, by tenant.",
        sum(&|t| t.admitted as f64),
    )
    .await;
    x.family(
        "tenant_tokens_out_total",
        COUNTER,
        "Tokens streamed, by tenant.",
        sum(&|t| t.tokens_out as f64),
    )
    .await;
    x.family(
        "tenant_slot_seconds_total",
        COUNTER,
        "Time the tenant's ended tasks held slots, in seconds.",
        sum(&|t| t.slot_seconds),
    )
    .await;
    let mut rejected = Vec::new();
    let mut waits = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        let mine: Vec<&TenantSnapshot> = shards.iter().filter_map(|s| s.tenants.get(i)).collect();
        for r in 0..REFUSALS {
            let n: u64 = mine.iter().map(|s| s.rejected[r]).sum();
            if n > 0 {
                let labels = vec![label("tenant", t), label("reason", refusal_label(r))];
                rejected.push(labeled(counter(n as f64), labels));
            }
        }
        let mut wait: Option<LatencySnapshot> = None;
        for w in mine.iter().filter_map(|s| s.queue_wait.as_ref()) {
            wait.get_or_insert_with(LatencySnapshot::default).merge(w);
        }
        if let Some(w) = wait {
            waits.push(labeled(histogram(&w, SECONDS), vec![label("tenant", t)]));
        }
    }
    x.family(
        "tenant_rejected_total",
        COUNTER,
        "Task submissions refused, by tenant and reason (the policy that refused, else the error code).",
        rejected,
    )
    .await;
    x.family(
        "tenant_queue_wait_seconds",
        HISTOGRAM,
        "Admission to start of execution, by tenant.",
        waits,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use orchd_shards::metrics::{AdmissionSnapshot, PoolProbeSnapshot};
    use orchd_shards::{ProbeSnapshot, ShardId};

    use super::*;

    fn one_pool(engine_version: &str) -> (Config, Vec<ShardSnapshot>, DispatcherSnapshot) {
        let mut config = Config::default();
        config.pools[0].engine_version = engine_version.into();
        let mut probe = PoolProbeSnapshot::default();
        probe.first_token[0].cumulative[0] = 1;
        probe.first_token[0].cumulative[1..].fill(2);
        probe.first_token[0].count = 3;
        probe.first_token[0].sum_ms = 1000.5;
        let sample = PoolSample {
            pool: 0,
            queue_depth: [4, 0],
            slots_busy: 1,
            slots_total: 2,
            probe,
            replicas: vec![ReplicaSample {
                id: "mock".into(),
                busy_share: 0.5,
                vram_used_bytes: 1 << 33,
                ..ReplicaSample::default()
            }],
        };
        let shard = ShardSnapshot {
            http: ProbeSnapshot {
                shard: ShardId(0),
                responses: [0, 7, 0, 1, 0],
                connections_accepted: 2,
                connections_open: 1,
                connections_refused: 0,
            },
            admission: AdmissionSnapshot::default(),
            pools: vec![sample],
            live_tasks: 1,
            cpu_seconds: 0.25,
            tenants: vec![tenant_sample()],
        };
        let d = DispatcherSnapshot {
            models: Vec::new(),
            catalog: [[0; 2]; 4],
            pools_ready: vec![true],
        };
        (config, vec![shard], d)
    }

    /// The tenant `default` on one shard: 3 admitted, 2 refused by a full queue, one
    /// queue wait of 3 ms.
    fn tenant_sample() -> TenantSnapshot {
        let probe = orchd_shards::metrics::TenantProbe::new("default");
        probe.admitted.set(3);
        let full = ApiError::invalid("x").policy(orchd_engine::Policy::Reject);
        probe.rejected[orchd_shards::metrics::refusal_index(&full)].set(2);
        probe.tokens_out.set(24);
        probe.slot_us.set(1_500_000);
        probe.record_queue_wait(std::time::Duration::from_millis(3));
        probe.snapshot()
    }

    #[test]
    fn per_tenant_series_sum_over_shards() {
        let (config, mut shards, d) = one_pool("v1");
        shards.push(shards[0].clone());
        let text = futures_lite::future::block_on(render(
            &config,
            &["default"],
            rt::Kind::Epoll,
            &shards,
            &d,
        ));
        for line in [
            "tenant_tasks_admitted_total{tenant=\"default\"} 6",
            "tenant_tokens_out_total{tenant=\"default\"} 48",
            "tenant_slot_seconds_total{tenant=\"default\"} 3",
            "tenant_rejected_total{tenant=\"default\",reason=\"reject\"} 4",
            "tenant_queue_wait_seconds_bucket{tenant=\"default\",le=\"0.002\"} 0",
            "tenant_queue_wait_seconds_bucket{tenant=\"default\",le=\"0.004\"} 2",
            "tenant_queue_wait_seconds_count{tenant=\"default\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let rejected = text
            .lines()
            .filter(|l| l.starts_with("tenant_rejected_total{"));
        assert_eq!(rejected.count(), 1, "reasons never seen are not written");
    }

    #[test]
    fn histograms_counters_and_escaping_in_the_text_format() {
        let (config, shards, d) = one_pool("v\"1\\");
        let text = futures_lite::future::block_on(render(
            &config,
            &["default"],
            rt::Kind::Epoll,
            &shards,
            &d,
        ));
        let pool = r#"engine="llamacpp",engine_version="v\"1\\",pool_id="default""#;
        let ttft = |rest: &str| format!("latency_first_token_ms{rest}");
        let block = [
            "# HELP latency_first_token_ms Admission to first token, ms.".to_string(),
            "# TYPE latency_first_token_ms histogram".into(),
            ttft(&format!(
                "_bucket{{{pool},priority=\"interactive\",le=\"0.25\"}} 1"
            )),
            ttft(&format!(
                "_bucket{{{pool},priority=\"interactive\",le=\"0.5\"}} 2"
            )),
        ]
        .join("\n");
        assert!(text.contains(&block), "{text}");
        let tail = [
            ttft(&format!(
                "_bucket{{{pool},priority=\"interactive\",le=\"131072\"}} 2"
            )),
            ttft(&format!(
                "_bucket{{{pool},priority=\"interactive\",le=\"+Inf\"}} 3"
            )),
            ttft(&format!("_sum{{{pool},priority=\"interactive\"}} 1000.5")),
            ttft(&format!("_count{{{pool},priority=\"interactive\"}} 3")),
            ttft(&format!(
                "_bucket{{{pool},priority=\"batch\",le=\"0.25\"}} 0"
            )),
        ]
        .join("\n");
        assert!(text.contains(&tail), "{text}");
        for line in [
            format!("queue_wait_seconds_bucket{{{pool},priority=\"batch\",le=\"0.00025\"}} 0"),
            format!("queue_depth{{{pool},priority=\"interactive\"}} 4"),
            format!("vram_used_bytes{{{pool},replica_id=\"mock\",device=\"mock0\"}} 8589934592"),
            format!("pool_ready{{{pool}}} 1"),
            "runtime_info{runtime=\"epoll\"} 1".into(),
            "tasks_rejected_total{engine=\"triton\",reason=\"INTERNAL\"} 0".into(),
            "http_responses_total{shard=\"0\",class=\"2xx\"} 7".into(),
            "shard_cpu_seconds_total{shard=\"0\"} 0.25".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // No models yet: the family has no samples, so it is not written at all.
        assert!(!text.contains("model_state"), "{text}");
    }
}

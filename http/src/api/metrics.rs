//! `GET /metrics` (SPEC section 5): Prometheus text format 0.0.4, merged at scrape time
//! from every shard's probes (a map-reduce over shards) and the dispatcher's model
//! states. Every contracted series is present from startup, with zero samples for
//! every configured pool, engine, priority and reason.

use std::fmt::Write;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;

use orchd_engine::config::PoolConfig;
use orchd_engine::{ApiError, Config, Engine, ErrorKind};
use orchd_engine::{CancelReason, ModelState};
use orchd_shards::metrics::{LatencySnapshot, BUCKETS_MS};
use orchd_shards::{rt, DispatcherSnapshot, ShardSnapshot};

use crate::app::ShardApp;
use crate::body::Body;

const PRIORITIES: [&str; 2] = ["interactive", "batch"];
const POLICIES: [&str; 2] = ["reject", "drop-lru"];
const RESULTS: [&str; 2] = ["ok", "failed"];
/// The mock engine's one simulated device.
const DEVICE: &str = "mock0";

pub(crate) async fn get(app: &ShardApp) -> Result<Response<Body>, ApiError> {
    let shards = app.shard.scrape_all().await?;
    let dispatcher = app.shard.dispatcher().scrape().await?;
    let text = render(&app.app.config, &shards, &dispatcher).await;
    let mut r = Response::new(Body::full(text));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// A label value, escaped per the text format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn pool_labels(p: &PoolConfig) -> String {
    format!(
        "engine=\"{}\",engine_version=\"{}\",pool_id=\"{}\"",
        p.engine.as_str(),
        esc(&p.engine_version),
        p.id
    )
}

/// Writes a histogram in ms (`scale` 1) or in seconds (`scale` 0.001).
fn histogram(out: &mut String, name: &str, labels: &str, h: &LatencySnapshot, scale: f64) {
    for (le, n) in BUCKETS_MS.iter().zip(h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {n}", le * scale);
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_ms * scale);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// A pool's label strings, built once per scrape.
struct Row<'a> {
    labels: String,
    replica: String,
    cfg: &'a PoolConfig,
}

/// Renders the exposition, yielding to the shard's other tasks (streams) between
/// metric families: a scrape never holds this core for more than one family.
pub(crate) async fn render(
    config: &Config,
    shards: &[ShardSnapshot],
    d: &DispatcherSnapshot,
) -> String {
    let mut out = String::with_capacity(64 * 1024);
    // Each pool lives on exactly one shard: pair every configured pool with its sample.
    let mut pools = Vec::new();
    for (shard, snap) in shards.iter().enumerate() {
        for sample in &snap.pools {
            let cfg = &config.pools[sample.pool];
            let labels = pool_labels(cfg);
            let replica = format!("replica_id=\"shard-{shard}\"");
            pools.push((
                shard,
                Row {
                    labels,
                    replica,
                    cfg,
                },
                sample,
            ));
        }
    }
    pools.sort_by(|a, b| a.1.cfg.id.cmp(&b.1.cfg.id));

    head(
        &mut out,
        "tasks_enqueued_total",
        "counter",
        "Tasks admitted into a pool's queue.",
    );
    for (_, p, x) in &pools {
        for (i, prio) in PRIORITIES.iter().enumerate() {
            let _ = writeln!(
                out,
                "tasks_enqueued_total{{{},{},priority=\"{prio}\"}} {}",
                p.labels, p.replica, x.probe.enqueued[i]
            );
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "tasks_started_total",
        "counter",
        "Tasks that got a slot and began running.",
    );
    for (_, p, x) in &pools {
        for (i, prio) in PRIORITIES.iter().enumerate() {
            let _ = writeln!(
                out,
                "tasks_started_total{{{},{},priority=\"{prio}\"}} {}",
                p.labels, p.replica, x.probe.started[i]
            );
        }
    }
    rt::yield_now().await;
    head(&mut out, "tasks_canceled_total", "counter", "Tasks ended before completion, by reason (client, orphaned, deadline, drop-lru, drain, shutdown, watchdog).");
    for (_, p, x) in &pools {
        for reason in CancelReason::ALL {
            let _ = writeln!(
                out,
                "tasks_canceled_total{{{},{},reason=\"{}\"}} {}",
                p.labels,
                p.replica,
                reason.as_str(),
                x.probe.canceled[reason.index()]
            );
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "tasks_rejected_total",
        "counter",
        "Task submissions refused, by engine asked for and error kind.",
    );
    for (e, engine) in Engine::ALL.iter().enumerate() {
        for (k, kind) in ErrorKind::ALL.iter().enumerate() {
            let n: u64 = shards.iter().map(|s| s.admission.rejected[e][k]).sum();
            let _ = writeln!(
                out,
                "tasks_rejected_total{{engine=\"{}\",reason=\"{}\"}} {n}",
                engine.as_str(),
                kind.as_str()
            );
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "queue_depth",
        "gauge",
        "Tasks waiting in a pool's queue.",
    );
    for (_, p, x) in &pools {
        for (i, prio) in PRIORITIES.iter().enumerate() {
            let _ = writeln!(
                out,
                "queue_depth{{{},priority=\"{prio}\"}} {}",
                p.labels, x.queue_depth[i]
            );
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "kv_cache_usage_ratio",
        "gauge",
        "Share of the engine's KV cache in use (mock: busy slots / slots).",
    );
    for (_, p, x) in &pools {
        let _ = writeln!(
            out,
            "kv_cache_usage_ratio{{{},{}}} {}",
            p.labels, p.replica, x.kv_cache_usage_ratio
        );
    }
    rt::yield_now().await;
    head(
        &mut out,
        "gpu_utilization",
        "gauge",
        "Device utilization reported by the engine (mock: busy slots / slots).",
    );
    for (_, p, x) in &pools {
        let _ = writeln!(
            out,
            "gpu_utilization{{{},{},device=\"{DEVICE}\"}} {}",
            p.labels, p.replica, x.gpu_utilization
        );
    }
    rt::yield_now().await;
    head(
        &mut out,
        "vram_used_bytes",
        "gauge",
        "Device memory in use reported by the engine (mock: KV bytes of running tasks).",
    );
    for (_, p, x) in &pools {
        let _ = writeln!(
            out,
            "vram_used_bytes{{{},{},device=\"{DEVICE}\"}} {}",
            p.labels, p.replica, x.vram_used_bytes
        );
    }
    rt::yield_now().await;
    head(
        &mut out,
        "latency_first_token_ms",
        "histogram",
        "Admission to first token, ms.",
    );
    for (_, p, x) in &pools {
        for (i, prio) in PRIORITIES.iter().enumerate() {
            histogram(
                &mut out,
                "latency_first_token_ms",
                &format!("{},priority=\"{prio}\"", p.labels),
                &x.probe.first_token[i],
                1.0,
            );
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "latency_decode_ms",
        "histogram",
        "First to last token, ms.",
    );
    for (_, p, x) in &pools {
        for (i, prio) in PRIORITIES.iter().enumerate() {
            histogram(
                &mut out,
                "latency_decode_ms",
                &format!("{},priority=\"{prio}\"", p.labels),
                &x.probe.decode[i],
                1.0,
            );
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "tokens_in_total",
        "counter",
        "Prompt tokens of started tasks (whitespace words for the mock).",
    );
    for (_, p, x) in &pools {
        let _ = writeln!(
            out,
            "tokens_in_total{{{},{}}} {}",
            p.labels, p.replica, x.probe.tokens_in
        );
    }
    rt::yield_now().await;
    head(&mut out, "tokens_out_total", "counter", "Tokens streamed.");
    for (_, p, x) in &pools {
        let _ = writeln!(
            out,
            "tokens_out_total{{{},{}}} {}",
            p.labels, p.replica, x.probe.tokens_out
        );
    }
    rt::yield_now().await;
    head(
        &mut out,
        "admission_backpressure_events_total",
        "counter",
        "Queue-full events: refusals (reject) and evictions or refusals (drop-lru).",
    );
    for (e, engine) in Engine::ALL.iter().enumerate() {
        for (i, policy) in POLICIES.iter().enumerate() {
            let n: u64 = shards.iter().map(|s| s.admission.backpressure[e][i]).sum();
            let _ = writeln!(
                out,
                "admission_backpressure_events_total{{engine=\"{}\",policy=\"{policy}\"}} {n}",
                engine.as_str()
            );
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "catalog_verifications_total",
        "counter",
        "Model verifications: engines loading a model on reload.",
    );
    for (e, engine) in Engine::ALL.iter().enumerate() {
        for (i, result) in RESULTS.iter().enumerate() {
            let _ = writeln!(out, "catalog_verifications_total{{result=\"{result}\",reason=\"reload\",engine=\"{}\"}} {}", engine.as_str(), d.catalog[e][i]);
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "model_state",
        "gauge",
        "1 for the state each model is in (ready, loading, draining, drained, failed, retired).",
    );
    for (model, state) in &d.models {
        for s in ModelState::ALL {
            let _ = writeln!(
                out,
                "model_state{{model_id=\"{}\",state=\"{}\"}} {}",
                esc(model),
                s.as_str(),
                u8::from(*state == s)
            );
        }
    }

    // Beyond the contract, in Prometheus base units.
    rt::yield_now().await;
    head(
        &mut out,
        "queue_wait_seconds",
        "histogram",
        "Admission to start of execution.",
    );
    for (_, p, x) in &pools {
        for (i, prio) in PRIORITIES.iter().enumerate() {
            histogram(
                &mut out,
                "queue_wait_seconds",
                &format!("{},priority=\"{prio}\"", p.labels),
                &x.probe.queue_wait[i],
                0.001,
            );
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "inter_token_seconds",
        "histogram",
        "Time between consecutive tokens of a task.",
    );
    for (_, p, x) in &pools {
        histogram(
            &mut out,
            "inter_token_seconds",
            &p.labels,
            &x.probe.inter_token,
            0.001,
        );
    }
    rt::yield_now().await;
    head(
        &mut out,
        "pool_slots_busy",
        "gauge",
        "Slots running a task.",
    );
    for (_, p, x) in &pools {
        let _ = writeln!(out, "pool_slots_busy{{{}}} {}", p.labels, x.slots_busy);
    }
    rt::yield_now().await;
    head(
        &mut out,
        "pool_ready",
        "gauge",
        "1 if the pool admits tasks.",
    );
    for (_, p, _) in &pools {
        let i = config
            .pools
            .iter()
            .position(|c| c.id == p.cfg.id)
            .unwrap_or(0);
        let ready = d.pool_states.get(i).is_some_and(|s| {
            matches!(
                s,
                orchd_engine::admission::PoolState::Ready
                    | orchd_engine::admission::PoolState::Reloading { was_drained: false }
            )
        });
        let _ = writeln!(out, "pool_ready{{{}}} {}", p.labels, u8::from(ready));
    }
    rt::yield_now().await;
    head(
        &mut out,
        "active_streams",
        "gauge",
        "SSE responses being streamed, by the shard serving them.",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "active_streams{{shard=\"{i}\"}} {}",
            s.admission.active_streams
        );
    }
    rt::yield_now().await;
    head(
        &mut out,
        "shard_tasks",
        "gauge",
        "Live tasks owned by each shard.",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(out, "shard_tasks{{shard=\"{i}\"}} {}", s.live_tasks);
    }
    rt::yield_now().await;
    head(
        &mut out,
        "shard_cpu_seconds_total",
        "counter",
        "CPU time of each shard's thread; its rate is the shard's busy ratio.",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "shard_cpu_seconds_total{{shard=\"{i}\"}} {}",
            s.cpu_seconds
        );
    }
    rt::yield_now().await;
    head(
        &mut out,
        "http_responses_total",
        "counter",
        "HTTP responses sent, by shard and status class.",
    );
    for (i, s) in shards.iter().enumerate() {
        for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .zip(s.http.responses)
        {
            let _ = writeln!(
                out,
                "http_responses_total{{shard=\"{i}\",class=\"{class}\"}} {n}"
            );
        }
    }
    rt::yield_now().await;
    head(
        &mut out,
        "connections_accepted_total",
        "counter",
        "TCP connections accepted, by shard.",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "connections_accepted_total{{shard=\"{i}\"}} {}",
            s.http.connections_accepted
        );
    }
    rt::yield_now().await;
    head(
        &mut out,
        "connections_open",
        "gauge",
        "Open TCP connections, by shard.",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "connections_open{{shard=\"{i}\"}} {}",
            s.http.connections_open
        );
    }
    head(
        &mut out,
        "connections_refused_total",
        "counter",
        "TCP connections answered 503 and closed: over server.max_connections, by shard.",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "connections_refused_total{{shard=\"{i}\"}} {}",
            s.http.connections_refused
        );
    }
    out
}

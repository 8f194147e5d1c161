//! `GET /v1/capabilities` (SPEC section 3): what the configured pools offer, per engine.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;

use orchd_engine::config::{AdapterKind, QueuePolicy};
use orchd_engine::{Config, Engine, Workload};

use crate::app::ShardApp;
use crate::body::Body;
use crate::respond;

pub(crate) const API_VERSION: &str = "1.0.0";

#[derive(Serialize)]
struct Capabilities {
    api_version: &'static str,
    engines: Vec<EngineCaps>,
}

#[derive(Serialize)]
struct EngineCaps {
    engine: Engine,
    /// Largest ctx any pool of this engine accepts.
    ctx_max: u32,
    supported_workloads: Vec<Workload>,
    /// Declared concurrency: total slots over this engine's pools.
    concurrency: u64,
    rate_limits: RateLimits,
    features: Vec<&'static str>,
    pools: Vec<String>,
}

#[derive(Serialize)]
struct RateLimits {
    /// Tasks that may wait beyond the slots, over this engine's pools.
    queue_capacity: u64,
    /// What a full queue does, per pool policy present.
    queue_policies: Vec<&'static str>,
    max_body_bytes: usize,
}

/// Renders the capabilities document from the configured pools.
pub(crate) fn render(config: &Config) -> Bytes {
    let mut engines: Vec<EngineCaps> = Vec::new();
    for pool in &config.pools {
        let i = match engines.iter().position(|e| e.engine == pool.engine) {
            Some(i) => i,
            None => {
                engines.push(EngineCaps {
                    engine: pool.engine,
                    ctx_max: 0,
                    supported_workloads: Vec::new(),
                    concurrency: 0,
                    rate_limits: RateLimits {
                        queue_capacity: 0,
                        queue_policies: Vec::new(),
                        max_body_bytes: config.server.max_body_bytes,
                    },
                    features: Vec::new(),
                    pools: Vec::new(),
                });
                engines.len() - 1
            }
        };
        let e = &mut engines[i];
        e.ctx_max = e.ctx_max.max(pool.ctx_max);
        for w in &pool.workloads {
            if !e.supported_workloads.contains(w) {
                e.supported_workloads.push(*w);
            }
        }
        e.concurrency += u64::from(pool.slots);
        e.rate_limits.queue_capacity += u64::from(pool.queue_capacity);
        let policy = match pool.policy {
            QueuePolicy::Reject => "reject",
            QueuePolicy::DropLru => "drop-lru",
        };
        if !e.rate_limits.queue_policies.contains(&policy) {
            e.rate_limits.queue_policies.push(policy);
        }
        let feature = match pool.adapter.kind {
            AdapterKind::Mock => "deterministic-mock",
        };
        if !e.features.contains(&feature) {
            e.features.push(feature);
        }
        e.pools.push(pool.id.clone());
    }
    let doc = Capabilities {
        api_version: API_VERSION,
        engines,
    };
    Bytes::from(serde_json::to_vec(&doc).expect("capabilities serialize"))
}

pub(crate) fn get(app: &ShardApp) -> Response<Body> {
    respond::json(StatusCode::OK, app.app.capabilities.clone())
}

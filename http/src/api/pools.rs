//! `GET /v1/pools/{id}/health`, `POST /v1/pools/{id}/drain`,
//! `POST /v1/pools/{id}/reload` (SPEC section 3).

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Deserialize;

use orchd_engine::admission::PoolState;
use orchd_engine::{parse_json, ApiError};

use crate::app::ShardApp;
use crate::body::Body;
use crate::respond;

/// Longest drain deadline accepted (a day).
const MAX_DRAIN_MS: u64 = 86_400_000;

/// Longest replica id a drain names (a host name and a port fit).
const MAX_REPLICA_ID: usize = 300;

pub(crate) async fn health(app: &ShardApp, id: &str) -> Result<Response<Body>, ApiError> {
    let (index, state, ready) = app
        .shard
        .dispatcher()
        .pool_state(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pool {id} is not known")))?;
    let owner = orchd_shards::shard_for(index, app.shard.shard_count());
    let stats = app
        .shard
        .pool_stats(index)
        .await?
        .ok_or_else(|| ApiError::internal(format!("pool {id} is missing on its shard")))?;
    let cfg = &app.app.config.pools[index];

    let replicas: Vec<serde_json::Value> = stats
        .replicas
        .iter()
        .map(|r| {
            let mut replica = serde_json::json!({
                "id": r.id,
                "state": match (r.drained, r.draining, r.up) {
                    (true, _, _) => "drained",
                    (false, true, _) => "draining",
                    (false, false, true) => "up",
                    (false, false, false) => "down",
                },
                "slots": r.slots,
                "busy": r.busy,
                "engine_version": r.reported_version.as_deref().unwrap_or(&cfg.engine_version),
                "shard": r.shard,
            });
            if let Some(ago) = r.checked_ms_ago {
                replica["last_probe_ms_ago"] = ago.into();
            }
            replica
        })
        .collect();
    let doc = serde_json::json!({
        "live": true,
        "ready": ready,
        "draining": matches!(state, PoolState::Draining),
        "metrics": {
            "state": state.as_str(),
            "queue_depth": stats.queue_depth,
            "slots_total": stats.slots_total,
            "slots_busy": stats.slots_busy,
            "tasks_running": stats.slots_busy,
            "model_ref": stats.model_ref,
            "engine": cfg.engine,
            "engine_version": stats.reported_version.as_deref().unwrap_or(&cfg.engine_version),
            "engine_version_configured": cfg.engine_version,
            "shard": owner.0,
            "latency_first_token_ms": {"p50": stats.first_token_ms.0, "p99": stats.first_token_ms.1, "count": stats.first_token_ms.2},
            "latency_decode_ms": {"p50": stats.decode_ms.0, "p99": stats.decode_ms.1, "count": stats.decode_ms.2},
        },
        // The pool's engine replicas (issue 20), in config order.
        "replicas": replicas,
    });
    Ok(respond::json(
        StatusCode::OK,
        serde_json::to_vec(&doc).expect("serializes"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    deadline_ms: u64,
    /// One replica of the pool (`replicas[].id` of its health) instead of the pool
    /// (issue 20). A string when present: `null` is refused, as the contract says.
    #[serde(default, deserialize_with = "present_string")]
    replica: Option<String>,
}

fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

pub(crate) async fn drain(
    app: &ShardApp,
    id: &str,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let b: DrainBody = parse_json(&body)?;
    if b.deadline_ms > MAX_DRAIN_MS {
        return Err(ApiError::invalid(format!(
            "deadline_ms: at most {MAX_DRAIN_MS}"
        )));
    }
    if let Some(replica) = b.replica {
        if replica.chars().count() > MAX_REPLICA_ID {
            return Err(ApiError::invalid(format!(
                "replica: at most {MAX_REPLICA_ID} characters (a replica's host:port)"
            )));
        }
        return drain_replica(app, id, replica, b.deadline_ms).await;
    }
    let left = app.shard.dispatcher().drain(id, b.deadline_ms).await?;
    tracing::info!(pool = %id, deadline_ms = left, "pool draining");
    let doc = serde_json::json!({"pool_id": id, "draining": true, "deadline_ms": left});
    Ok(respond::json(
        StatusCode::ACCEPTED,
        serde_json::to_vec(&doc).expect("serializes"),
    ))
}

/// Drains one replica: it takes no new task (its sessions go to their next replica),
/// its running tasks finish or end at the deadline; the pool goes on with the others.
async fn drain_replica(
    app: &ShardApp,
    id: &str,
    replica: String,
    deadline_ms: u64,
) -> Result<Response<Body>, ApiError> {
    let (index, _, _) = app
        .shard
        .dispatcher()
        .pool_state(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pool {id} is not known")))?;
    let deadline = std::time::Duration::from_millis(deadline_ms);
    let left = app
        .shard
        .drain_replica(index, replica.clone(), deadline)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("replica: pool {id} has no replica {replica:?}"))
        })?;
    let left = left.as_millis() as u64;
    let doc = serde_json::json!({"pool_id": id, "replica": replica, "draining": true, "deadline_ms": left});
    Ok(respond::json(
        StatusCode::ACCEPTED,
        serde_json::to_vec(&doc).expect("serializes"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    new_model_ref: String,
}

pub(crate) async fn reload(
    app: &ShardApp,
    id: &str,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let b: ReloadBody = parse_json(&body)?;
    let m = &b.new_model_ref;
    // Characters, as the document's `maxLength` (and the message) count them.
    if m.is_empty() || m.chars().count() > orchd_engine::task::MAX_MODEL_REF || m == "*" {
        return Err(ApiError::invalid(
            "new_model_ref: must name a model (1 to 512 characters, not *)",
        ));
    }
    let model = app.shard.dispatcher().reload(id, b.new_model_ref).await?;
    let doc = serde_json::json!({"pool_id": id, "model_ref": model});
    Ok(respond::json(
        StatusCode::OK,
        serde_json::to_vec(&doc).expect("serializes"),
    ))
}

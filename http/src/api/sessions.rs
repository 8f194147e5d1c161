//! `GET /v1/sessions/{id}`, `DELETE /v1/sessions/{id}` (SPEC section 2).

use http::{Response, StatusCode};
use serde::Serialize;

use orchd_engine::frame::BudgetRemaining;
use orchd_engine::ApiError;

use crate::api::tasks::id_of;
use crate::app::ShardApp;
use crate::auth::Caller;
use crate::body::Body;
use crate::respond;

#[derive(Serialize)]
struct SessionDoc {
    ttl_ms_remaining: u64,
    turns: u32,
    kv_bytes: u64,
    kv_warmth: bool,
    #[serde(flatten)]
    budgets: BudgetRemaining,
}

pub(crate) async fn get(
    app: &ShardApp,
    who: &Caller,
    raw_id: &str,
) -> Result<Response<Body>, ApiError> {
    // Another tenant's session of the same id is not this one.
    let (_, id) = id_of(who, raw_id, "session id")?;
    let v = app.shard.dispatcher().session(id).await?;
    let doc = SessionDoc {
        ttl_ms_remaining: v.ttl_ms_remaining,
        turns: v.turns,
        kv_bytes: v.kv_bytes,
        kv_warmth: v.kv_warmth,
        budgets: v.budgets,
    };
    Ok(respond::json(
        StatusCode::OK,
        serde_json::to_vec(&doc).expect("serializes"),
    ))
}

pub(crate) async fn delete(
    app: &ShardApp,
    who: &Caller,
    raw_id: &str,
) -> Result<Response<Body>, ApiError> {
    // Another tenant's session of the same id is not this one.
    let (_, id) = id_of(who, raw_id, "session id")?;
    app.shard.dispatcher().delete_session(id).await?;
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

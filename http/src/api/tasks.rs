//! `POST /v1/tasks`, `GET /v1/tasks/{id}/stream`, `POST /v1/tasks/{id}/cancel`
//! (SPEC section 2).

use std::rc::Rc;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use uuid::Uuid;

use orchd_engine::admission::Admitted;
use orchd_engine::task::TaskSpec;
use orchd_engine::tenant::scoped;
use orchd_engine::{ApiError, ErrorClass, ErrorKind, Policy};
use orchd_shards::metrics::{bump, engine_index, kind_index, refusal_index};
use orchd_shards::{unavailable, MeshError, ShardId, Subscribed};

use crate::app::ShardApp;
use crate::auth::Caller;
use crate::body::{subscribe, Body, SseBody};
use crate::chunks::{Chunks, Route};
use crate::respond;

#[derive(Serialize)]
struct Accepted {
    task_id: Uuid,
    queue_position: u32,
    predicted_start_ms: u64,
    backoff_ms: u64,
}

pub(crate) fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::invalid(format!("{what}: {raw:?} is not a UUID")))
}

pub(crate) async fn create(
    app: &Rc<ShardApp>,
    who: &Caller,
    body: Bytes,
    cid: &HeaderValue,
) -> Result<Response<Body>, ApiError> {
    if app.shard.stopping() {
        return Err(unavailable(MeshError::Gone));
    }
    let spec = TaskSpec::parse(&body).inspect_err(|e| count_refusal(app, who, e))?;
    let client_id = spec.task_id;
    let admitted = admit(app, who, spec, cid).await?;
    let body = Accepted {
        task_id: client_id,
        queue_position: admitted.queue_position,
        predicted_start_ms: admitted.predicted_start_ms,
        backoff_ms: admitted.backoff_ms,
    };
    let mut r = respond::json(
        StatusCode::ACCEPTED,
        serde_json::to_vec(&body).expect("serializes"),
    );
    budget_headers(r.headers_mut(), &admitted);
    Ok(r)
}

/// Admits a task from either front door (one admission path): the task made the
/// caller's own (its ids scoped to its tenant), refusals and evictions counted, the
/// owner shard remembered for its stream, the admission logged. The answer's
/// `task_id` is the scoped id, orchd's key for the task.
pub(crate) async fn admit(
    app: &Rc<ShardApp>,
    who: &Caller,
    mut spec: TaskSpec,
    cid: &HeaderValue,
) -> Result<Admitted, ApiError> {
    if app.shard.stopping() {
        return Err(unavailable(MeshError::Gone));
    }
    spec.scope(who.id, &who.name);
    let client_id = spec.client.task_id;
    let correlation_id = cid.to_str().unwrap_or_default().to_string();
    let admitted = app
        .shard
        .dispatcher()
        .admit(spec, correlation_id.clone())
        .await
        .inspect_err(|e| count_refusal(app, who, e))?;
    let pool = &app.app.config.pools[admitted.pool];
    if admitted.evict {
        bump(&app.shard.probe.admission.backpressure[engine_index(pool.engine)][1]);
    }
    app.remember_owner(
        admitted.task_id,
        orchd_shards::shard_for(admitted.pool, app.shard.shard_count()),
    );
    if !admitted.duplicate {
        bump(&app.shard.probe.tenant(who.id).admitted);
    }
    tracing::info!(
        correlation_id = %correlation_id, tenant = %who.name, task_id = %client_id, pool = %pool.id,
        queue_position = admitted.queue_position, predicted_start_ms = admitted.predicted_start_ms,
        duplicate = admitted.duplicate, evicted = admitted.evict, "task admitted"
    );
    Ok(admitted)
}

/// Counts a refused submission: for its tenant (`tenant_rejected_total`), and where
/// its engine is known (`tasks_rejected_total`, and queue-full refusals in
/// `admission_backpressure_events_total`; bodies that do not parse name no engine).
pub(crate) fn count_refusal(app: &ShardApp, who: &Caller, e: &ApiError) {
    bump(&app.shard.probe.tenant(who.id).rejected[refusal_index(e)]);
    let Some(engine) = e.engine else { return };
    let probe = &app.shard.probe.admission;
    let engine = engine_index(engine);
    bump(&probe.rejected[engine][kind_index(e.kind)]);
    match e.policy_label {
        Some(Policy::Reject) => bump(&probe.backpressure[engine][0]),
        Some(Policy::DropLru) => bump(&probe.backpressure[engine][1]),
        Some(
            Policy::SessionsFull
            | Policy::SessionTurns
            | Policy::BudgetTokens
            | Policy::BudgetTime
            | Policy::BudgetCost
            | Policy::TenantQueued
            | Policy::TenantTokens
            | Policy::Overloaded
            | Policy::ShardOverloaded,
        )
        | None => {}
    }
}

fn budget_headers(h: &mut HeaderMap, a: &Admitted) {
    let Some(b) = &a.budgets else { return };
    if let Some(t) = b.tokens_budget_remaining {
        h.insert("x-budget-tokens-remaining", HeaderValue::from(t));
    }
    if let Some(t) = b.time_budget_remaining_ms {
        h.insert("x-budget-time-remaining-ms", HeaderValue::from(t));
    }
    if let Some(c) = b.cost_budget_remaining {
        if let Ok(v) = HeaderValue::from_str(&format!("{c}")) {
            h.insert("x-budget-cost-remaining", v);
        }
    }
}

/// The owner shard of the task orchd keeps as `task` (the client's `client_id`).
async fn locate(app: &ShardApp, client_id: Uuid, task: Uuid) -> Result<ShardId, ApiError> {
    if let Some(owner) = app.known_owner(&task) {
        return Ok(owner);
    }
    app.shard
        .dispatcher()
        .locate(task)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {client_id} is not known")))
}

/// An id of the path (a task's or a session's, `what`) as the caller's tenant knows it
/// (400 if not a UUID), and the scoped id orchd keeps it by: another tenant's is never
/// found.
pub(crate) fn id_of(who: &Caller, raw_id: &str, what: &str) -> Result<(Uuid, Uuid), ApiError> {
    let id = parse_id(raw_id, what)?;
    Ok((id, scoped(&who.name, id)))
}

pub(crate) async fn stream(
    app: &Rc<ShardApp>,
    who: &Caller,
    raw_id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let (client_id, task) = id_of(who, raw_id, "task id")?;
    let openai = match query_param(query, "format") {
        None => false,
        Some("openai") => true,
        Some(_) => return Err(ApiError::invalid("format: must be openai, or absent")),
    };
    let from = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| {
                ApiError::invalid("Last-Event-ID: must be a frame id (an integer >= 0)")
            })?,
    };
    let owner = locate(app, client_id, task).await?;
    // Re-attaching in OpenAI's format (issue 17): the chunks as the first stream had
    // them (a task of this door renders as a text completion).
    let chunks = match openai {
        false => None,
        true => {
            let r = app
                .shard
                .rendering(owner, task)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("task {client_id} is not known")))?;
            let route = if r.chat {
                Route::Chat
            } else {
                Route::Completions
            };
            let created = r.created.unwrap_or(app.app.started_secs);
            let id = client_id.to_string();
            Some(Box::new(Chunks::new(
                route,
                &id,
                created,
                &r.model,
                r.include_usage,
            )))
        }
    };
    let (subscribed, rx) = subscribe(Rc::clone(app), task, owner, from)
        .await
        .ok_or_else(|| unavailable(MeshError::Gone))?;
    let body = match subscribed {
        Subscribed::NotFound => {
            return Err(ApiError::not_found(format!(
                "task {client_id} is not known"
            )))
        }
        Subscribed::Ended => Body::empty(),
        Subscribed::Live => Body::Sse(Box::new(SseBody::new(
            Rc::clone(app),
            task,
            owner,
            from,
            rx,
            chunks,
        ))),
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// The value of `name` in a query string (`a=1&b=2`), as sent.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(crate) async fn cancel(
    app: &Rc<ShardApp>,
    who: &Caller,
    raw_id: &str,
) -> Result<Response<Body>, ApiError> {
    let (client_id, task) = id_of(who, raw_id, "task id")?;
    let owner = locate(app, client_id, task).await?;
    let tokens = app
        .shard
        .cancel(owner, task)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {client_id} is not known")))?;
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r.headers_mut()
        .insert("x-tokens-out", HeaderValue::from(tokens));
    Ok(r)
}

/// Reads a request body up to `limit` bytes; more is 413.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(
                ErrorClass::PayloadTooLarge,
                ErrorKind::InvalidParams,
                format!("body: more than the limit of {limit} bytes (server.max_body_bytes)"),
            ))
        }
        Err(_) => Err(ApiError::invalid("body: could not be read")),
    }
}

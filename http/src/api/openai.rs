//! The OpenAI-compatible routes (issue 17): `POST /v1/completions`,
//! `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`, `GET /health`. A second front door
//! onto the same queue: each request becomes an ordinary task (one admission path,
//! one frame log, the same metrics, logs and transcripts), rendered in OpenAI's format
//! by [`crate::chunks`].
//!
//! What OpenAI's fields cannot say comes in headers: `X-Deadline-Ms` (else
//! `openai.default_deadline_ms`), `X-Priority` (`interactive`, the default, or
//! `batch`), `X-Session-Id` (joins that session: turns, budgets, KV affinity; without
//! it nothing is stored). The task id is generated and answered in `X-Request-Id` and as
//! every chunk's `id`, so `POST /v1/tasks/{id}/cancel` stops it race-free.

use std::rc::Rc;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use orchd_engine::admission::Admitted;
use orchd_engine::config::AdapterKind;
use orchd_engine::error::{from_value, parse_json};
use orchd_engine::generation::{ChatMessage, Role};
use orchd_engine::task::{Extras, TaskSpec, MAX_DEADLINE_MS};
use orchd_engine::{ApiError, ErrorClass, ErrorKind, Priority, Workload};
use orchd_shards::{unavailable, MeshError, ShardId, Subscribed};

use super::tasks::admit;
use crate::app::{unix_secs, ShardApp};
use crate::auth::Caller;
use crate::body::{subscribe, Body, SseBody};
use crate::chunks::{self, Chunks, Parsed, Route};
use crate::respond;

/// OpenAI's default `max_tokens` of a completion.
const COMPLETION_MAX_TOKENS: u32 = 16;
/// Most stop sequences a request may give (OpenAI's limit).
const MAX_STOP: usize = 4;

/// The fields both generation routes share; the rest of the body is kept in `rest`.
#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    ignore_eos: Option<bool>,
    /// An end-user id: not a session (one session per request would fill
    /// `sessions.max_sessions`), not stored, not forwarded.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// What `/v1/completions` adds to [`Common`].
#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Value,
}

/// What `/v1/chat/completions` adds to [`Common`].
#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<Message>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

/// A request body read once, then in parts: the fields both routes share, the route's
/// own, and the object itself (whose other fields are forwarded). Parts are read from
/// the object rather than flattened into one struct, which would lose the path of a
/// bad field (`seed: ...` would be reported as `body: ...`).
fn read_request<T: DeserializeOwned>(
    body: &[u8],
) -> Result<(Common, T, Map<String, Value>), ApiError> {
    let object = Value::Object(parse_json::<Map<String, Value>>(body)?);
    let common = from_value(&object)?;
    let own = from_value(&object)?;
    let Value::Object(map) = object else {
        unreachable!("parsed as an object")
    };
    Ok((common, own, map))
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Value,
}

/// Fields of `Common` and the route bodies: whatever else a body has is forwarded (or
/// judged on the mock).
const INTERPRETED: [&str; 14] = [
    "model",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "ignore_eos",
    "user",
    "prompt",
    "messages",
];

/// Fields that never change what is generated: accepted on the mock too.
const NO_EFFECT: [&str; 3] = ["metadata", "store", "service_tier"];

/// What a generation request asked, whichever route it came by.
struct Asked {
    route: Route,
    model: String,
    stream: bool,
    include_usage: bool,
    /// Unix seconds, every chunk's `created`.
    created: u64,
}

pub(crate) async fn completions(
    app: &Rc<ShardApp>,
    who: &Caller,
    body: Bytes,
    headers: &HeaderMap,
    cid: &HeaderValue,
) -> Result<Response<Body>, ApiError> {
    let (common, req, rest) = read_request::<CompletionRequest>(&body)?;
    let prompt = completion_prompt(&req.prompt)?;
    let words = prompt.split_whitespace().count() as u64;
    let max_tokens = common.max_tokens.unwrap_or(COMPLETION_MAX_TOKENS);
    let (spec, asked) = task(
        app,
        headers,
        Route::Completions,
        common,
        max_tokens,
        words,
        Some(prompt),
        None,
        rest,
    )?;
    generate(app, who, spec, asked, cid).await
}

pub(crate) async fn chat(
    app: &Rc<ShardApp>,
    who: &Caller,
    body: Bytes,
    headers: &HeaderMap,
    cid: &HeaderValue,
) -> Result<Response<Body>, ApiError> {
    let (common, req, rest) = read_request::<ChatRequest>(&body)?;
    let messages = chat_messages(&req.messages)?;
    let words = messages
        .iter()
        .map(|m| m.content.split_whitespace().count() as u64)
        .sum::<u64>();
    let limit = req.max_completion_tokens.or(common.max_tokens);
    let max_tokens = match limit {
        Some(n) => n,
        // Until the engine stops or the context is full: the room the smallest
        // context of the pools leaves after the prompt.
        None => {
            let ctx = app.app.config.pools.iter().map(|p| p.ctx_max).min();
            let room = u64::from(ctx.unwrap_or(1)).saturating_sub(words);
            room.clamp(1, u64::from(u32::MAX)) as u32
        }
    };
    let (mut spec, asked) = task(
        app,
        headers,
        Route::Chat,
        common,
        max_tokens,
        words,
        None,
        Some(messages),
        rest,
    )?;
    if let Some(x) = &mut spec.extras {
        x.open_ended = limit.is_none();
    }
    generate(app, who, spec, asked, cid).await
}

/// The task a generation request asks for: every field checked and named as OpenAI
/// names it, the headers read, and what orchd does not interpret forwarded (or, when
/// only the mock can run it, refused if it would change the output).
#[allow(clippy::too_many_arguments)]
fn task(
    app: &ShardApp,
    headers: &HeaderMap,
    route: Route,
    c: Common,
    max_tokens: u32,
    prompt_words: u64,
    prompt: Option<String>,
    chat: Option<Vec<ChatMessage>>,
    mut rest: Map<String, Value>,
) -> Result<(TaskSpec, Asked), ApiError> {
    for k in INTERPRETED {
        rest.remove(k);
    }
    if max_tokens == 0 {
        return Err(ApiError::invalid("max_tokens: must be >= 1"));
    }
    if c.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n: only 1 is supported"));
    }
    if let Some(t) = c.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid("temperature: must be in 0..=2"));
        }
    }
    if let Some(p) = c.top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::invalid("top_p: must be in 0..=1"));
        }
    }
    let stop = match c.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > MAX_STOP || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(format!(
            "stop: at most {MAX_STOP} sequences, none empty"
        )));
    }
    let stream = c.stream.unwrap_or(false);
    if c.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options: only allowed when stream is true",
        ));
    }
    if only_mock(app, &c.model) {
        if let Some((k, _)) = rest
            .iter()
            .find(|(k, v)| !NO_EFFECT.contains(&k.as_str()) && !is_unset(v))
        {
            return Err(ApiError::invalid(format!(
                "{k}: not supported by the mock engine, where it would change the output \
                 (pools with an HTTP engine forward it)"
            )));
        }
        rest.clear();
    }
    let (deadline_ms, priority, session_id) = task_headers_in(app, headers)?;
    let ctx = u64::from(max_tokens) + prompt_words;
    let created = unix_secs();
    let asked = Asked {
        route,
        model: c.model.clone(),
        stream,
        include_usage: c
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        created,
    };
    let spec = TaskSpec {
        task_id: app.new_uuid(),
        session_id,
        workload: Workload::Completion,
        model_ref: c.model,
        engine: None,
        ctx: ctx.min(u64::from(u32::MAX)) as u32,
        priority,
        max_tokens,
        deadline_ms,
        seed: c.seed,
        determinism: None,
        sampler_profile_version: None,
        prompt,
        inputs: None,
        expected_tokens: None,
        kv_hint: None,
        extras: Some(Box::new(Extras {
            chat,
            temperature: c.temperature,
            top_p: c.top_p,
            stop,
            ignore_eos: c.ignore_eos,
            open_ended: false,
            forward: rest,
            orphan_timeout_ms: app.app.config.openai.disconnect_grace_ms,
            created,
            include_usage: asked.include_usage,
            ..Extras::default()
        })),
        // Set when it is admitted (`tasks::admit` scopes it to its tenant).
        tenant: Default::default(),
        client: Default::default(),
    };
    spec.validate().map_err(openai_names)?;
    Ok((spec, asked))
}

/// What the request's headers ask of its task: `X-Deadline-Ms` (else
/// `openai.default_deadline_ms`), `X-Priority`, `X-Session-Id`.
fn task_headers_in(
    app: &ShardApp,
    headers: &HeaderMap,
) -> Result<(u64, Priority, Option<Uuid>), ApiError> {
    let deadline_ms = match header(headers, "x-deadline-ms")? {
        None => app.app.config.openai.default_deadline_ms,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| (1..=MAX_DEADLINE_MS).contains(ms))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "X-Deadline-Ms: must be an integer in 1..={MAX_DEADLINE_MS}"
                ))
            })?,
    };
    let priority = match header(headers, "x-priority")? {
        None | Some("interactive") => Priority::Interactive,
        Some("batch") => Priority::Batch,
        Some(_) => {
            return Err(ApiError::invalid(
                "X-Priority: must be interactive or batch",
            ))
        }
    };
    let session_id = header(headers, "x-session-id")?
        .map(|v| {
            Uuid::try_parse(v)
                .map_err(|_| ApiError::invalid(format!("X-Session-Id: {v:?} is not a UUID")))
        })
        .transpose()?;
    Ok((deadline_ms, priority, session_id))
}

/// A header's value as text, if present.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::invalid(format!("{name}: not visible ASCII")))
        })
        .transpose()
}

/// Null, false, 0, "" or an empty list or object: a field that asks for nothing.
fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Whether every configured pool that can serve `model` runs the mock engine (so a
/// field orchd does not interpret would reach no engine).
fn only_mock(app: &ShardApp, model: &str) -> bool {
    app.app
        .config
        .pools
        .iter()
        .filter(|p| p.model_ref == "*" || p.model_ref == model)
        .all(|p| p.adapter.kind == AdapterKind::Mock)
}

/// A completion's `prompt`: a string, or a list holding one string.
fn completion_prompt(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(a) => match a.as_slice() {
            [Value::String(s)] => Ok(s.clone()),
            [] => Err(ApiError::invalid("prompt: must not be an empty list")),
            [Value::Number(_), ..] | [Value::Array(_), ..] => Err(ApiError::invalid(
                "prompt: token ids are not supported; send the prompt as text",
            )),
            _ => Err(ApiError::invalid(
                "prompt: one prompt per request (a list of several is not supported)",
            )),
        },
        _ => Err(ApiError::invalid("prompt: must be a string")),
    }
}

/// A chat's messages, each with a known role and text content (a string, or a list of
/// `{"type": "text", "text": ...}` parts, joined).
fn chat_messages(messages: &[Message]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages: at least one message is required",
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(ApiError::invalid(format!(
                    "messages[{i}].role: {other:?} is not one of system, developer, user, assistant, tool"
                )))
            }
        };
        let content = match &m.content {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Array(parts) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(format!(
                                "messages[{i}].content[{j}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported"
                            )))
                        }
                    }
                }
                text
            }
            _ => {
                return Err(ApiError::invalid(format!(
                    "messages[{i}].content: must be a string or a list of text parts"
                )))
            }
        };
        out.push(ChatMessage { role, content });
    }
    Ok(out)
}

/// An admission error in OpenAI's names: the task's fields as the request named them.
fn openai_names(mut e: ApiError) -> ApiError {
    let Some((field, rest)) = e.message.split_once(": ") else {
        return e;
    };
    let renamed = match field {
        "model_ref" => format!("model: {rest}"),
        "ctx" => format!(
            "max_tokens: the prompt and max_tokens need more context than the pools have ({rest})"
        ),
        "workload" => format!("model: {rest}"),
        "deadline_ms" => format!("X-Deadline-Ms: {rest}"),
        "session_id" => format!("X-Session-Id: {rest}"),
        _ => return e,
    };
    e.message = renamed.into();
    e
}

/// Admits the task, then answers: a stream of chunks, or the whole object.
async fn generate(
    app: &Rc<ShardApp>,
    who: &Caller,
    spec: TaskSpec,
    asked: Asked,
    cid: &HeaderValue,
) -> Result<Response<Body>, ApiError> {
    // The id the client sees; `task` is its tenant's scoped id, orchd's key.
    let client_id = spec.task_id;
    let admitted = admit(app, who, spec, cid).await.map_err(openai_names)?;
    let task = admitted.task_id;
    let owner = orchd_shards::shard_for(admitted.pool, app.shard.shard_count());
    let created = asked.created;
    let mut r = if asked.stream {
        let (subscribed, rx) = subscribe(Rc::clone(app), task, owner, 0)
            .await
            .ok_or_else(|| unavailable(MeshError::Gone))?;
        if subscribed != Subscribed::Live {
            return Err(ApiError::internal(format!(
                "task {client_id} was admitted but its owner does not stream it"
            )));
        }
        let id = client_id.to_string();
        let chunks = Chunks::new(asked.route, &id, created, &asked.model, asked.include_usage);
        let body = SseBody::new(Rc::clone(app), task, owner, 0, rx, Some(Box::new(chunks)));
        let mut r = Response::new(Body::Sse(Box::new(body)));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        r
    } else {
        whole(app, task, client_id, owner, &asked, created).await?
    };
    task_headers(r.headers_mut(), client_id, &admitted);
    Ok(r)
}

/// `X-Request-Id` (the task id, as the client knows it) and the task's place when
/// admitted.
fn task_headers(h: &mut HeaderMap, client_id: Uuid, a: &Admitted) {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = client_id.hyphenated().encode_lower(&mut buf);
    h.insert(
        "x-request-id",
        HeaderValue::from_str(id).expect("a UUID is a valid header value"),
    );
    h.insert("x-queue-position", HeaderValue::from(a.queue_position));
    h.insert(
        "x-predicted-start-ms",
        HeaderValue::from(a.predicted_start_ms),
    );
}

/// The text of a task's tokens and its `end` frame, its frames read to the end (an
/// `error` frame is the error it names).
async fn read_to_end(
    app: &Rc<ShardApp>,
    task: Uuid,
    owner: ShardId,
) -> Result<(String, chunks::EndData), ApiError> {
    let mut text = String::new();
    let mut next = 0;
    loop {
        // A subscriber that falls behind is dropped by the owner: pick up from the
        // cursor, as a stream does.
        let (subscribed, rx) = subscribe(Rc::clone(app), task, owner, next)
            .await
            .ok_or_else(|| unavailable(MeshError::Gone))?;
        if subscribed != Subscribed::Live {
            return Err(ApiError::internal("the task ended before it was read"));
        }
        while let Ok((frame, _)) = rx.recv_async().await {
            let Some((id, parsed)) = chunks::parse(&frame) else {
                continue;
            };
            if id < next {
                continue;
            }
            next = id + 1;
            match parsed {
                Parsed::Token(t, _) => text.push_str(&t),
                Parsed::End(end) => return Ok((text, end)),
                Parsed::Error(e) => {
                    let class = match e.code {
                        ErrorKind::DeadlineUnmet => ErrorClass::BadRequest,
                        _ => ErrorClass::Unavailable,
                    };
                    let retriable =
                        matches!(e.code, ErrorKind::WorkerReset | ErrorKind::DecodeTimeout);
                    return Err(ApiError::new(class, e.code, e.message).retriable(retriable));
                }
                Parsed::Queued { .. } | Parsed::Nothing => {}
            }
        }
    }
}

/// A non-streaming answer: the task's frames read to its end, as one object.
async fn whole(
    app: &Rc<ShardApp>,
    task: Uuid,
    client_id: Uuid,
    owner: ShardId,
    asked: &Asked,
    created: u64,
) -> Result<Response<Body>, ApiError> {
    let (text, end) = read_to_end(app, task, owner).await?;
    let id = client_id.to_string();
    let choice = match asked.route {
        Route::Completions => serde_json::json!({
            "index": 0, "text": text, "logprobs": null, "finish_reason": end.finish_reason(),
        }),
        Route::Chat => serde_json::json!({
            "index": 0, "message": {"role": "assistant", "content": text},
            "logprobs": null, "finish_reason": end.finish_reason(),
        }),
    };
    let object = match asked.route {
        Route::Completions => "text_completion",
        Route::Chat => "chat.completion",
    };
    let doc = serde_json::json!({
        "id": id, "object": object, "created": created, "model": asked.model,
        "choices": [choice], "usage": end.usage(),
    });
    Ok(respond::json(
        StatusCode::OK,
        serde_json::to_vec(&doc).expect("serializes"),
    ))
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// Most inputs one embeddings request may hold (OpenAI's limit).
const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Most vector components one request may ask for (inputs x `dimensions`): the answer
/// is held in the task's `end` frame for its retention, so it is bounded (4 Mi floats,
/// about 40 MB of JSON).
const MAX_EMBEDDING_COMPONENTS: u64 = 1 << 22;

/// `POST /v1/embeddings`: a task of workload `embedding` on a pool that takes them (an
/// HTTP engine's `/v1/embeddings`, or the mock's deterministic unit vectors); the
/// vectors come back in its `end` frame. `encoding_format` `float` (the default) or
/// `base64` (little-endian f32, what the openai SDK asks for).
pub(crate) async fn embeddings(
    app: &Rc<ShardApp>,
    who: &Caller,
    body: Bytes,
    headers: &HeaderMap,
    cid: &HeaderValue,
) -> Result<Response<Body>, ApiError> {
    let object = Value::Object(parse_json::<Map<String, Value>>(&body)?);
    let req: EmbeddingRequest = from_value(&object)?;
    let Value::Object(mut rest) = object else {
        unreachable!("parsed as an object")
    };
    let texts: Vec<String> = match &req.input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_EMBEDDING_INPUTS => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                ApiError::invalid(
                    "input: a string or a list of strings (token ids are not supported)",
                )
            })?,
        Value::Array(_) => {
            return Err(ApiError::invalid(format!(
                "input: 1 to {MAX_EMBEDDING_INPUTS} strings"
            )))
        }
        _ => return Err(ApiError::invalid("input: a string or a list of strings")),
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err(ApiError::invalid("encoding_format: float or base64")),
    };
    if req.dimensions.is_some_and(|d| !(1..=65536).contains(&d)) {
        return Err(ApiError::invalid("dimensions: must be in 1..=65536"));
    }
    if let Some(d) = req.dimensions {
        if texts.len() as u64 * u64::from(d) > MAX_EMBEDDING_COMPONENTS {
            return Err(ApiError::invalid(format!(
                "dimensions: inputs x dimensions must be at most {MAX_EMBEDDING_COMPONENTS}"
            )));
        }
    }
    for k in ["model", "input", "encoding_format", "dimensions", "user"] {
        rest.remove(k);
    }
    if only_mock(app, &req.model) {
        if let Some((k, _)) = rest.iter().find(|(_, v)| !is_unset(v)) {
            return Err(ApiError::invalid(format!(
                "{k}: not supported by the mock engine (pools with an HTTP engine forward it)"
            )));
        }
        rest.clear();
    }
    let words = texts
        .iter()
        .map(|t| t.split_whitespace().count() as u64)
        .sum::<u64>();
    let (deadline_ms, priority, session_id) = task_headers_in(app, headers)?;
    let spec = TaskSpec {
        task_id: app.new_uuid(),
        session_id,
        workload: Workload::Embedding,
        model_ref: req.model.clone(),
        engine: None,
        ctx: (words + 1).min(u64::from(u32::MAX)) as u32,
        priority,
        max_tokens: 1,
        deadline_ms,
        seed: None,
        determinism: None,
        sampler_profile_version: None,
        prompt: None,
        inputs: None,
        expected_tokens: None,
        kv_hint: None,
        extras: Some(Box::new(Extras {
            embed: Some(texts),
            dimensions: req.dimensions,
            forward: rest,
            orphan_timeout_ms: app.app.config.openai.disconnect_grace_ms,
            created: unix_secs(),
            ..Extras::default()
        })),
        tenant: Default::default(),
        client: Default::default(),
    };
    spec.validate().map_err(openai_names)?;
    let client_id = spec.task_id;
    let admitted = admit(app, who, spec, cid).await.map_err(openai_names)?;
    let owner = orchd_shards::shard_for(admitted.pool, app.shard.shard_count());
    let (_, end) = read_to_end(app, admitted.task_id, owner).await?;
    let vectors = end.embeddings.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorClass::Unavailable,
            ErrorKind::WorkerReset,
            "the engine answered no embeddings",
        )
    })?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                Value::String(base64_f32(v))
            } else {
                serde_json::json!(v)
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let prompt = end.prompt_tokens.unwrap_or(words);
    let doc = serde_json::json!({
        "object": "list", "data": data, "model": req.model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    });
    let mut r = respond::json(
        StatusCode::OK,
        serde_json::to_vec(&doc).expect("serializes"),
    );
    task_headers(r.headers_mut(), client_id, &admitted);
    Ok(r)
}

/// Little-endian f32s in standard base64 (RFC 4648, padded), as OpenAI answers
/// `encoding_format: "base64"`.
fn base64_f32(v: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `GET /v1/models`: each model the pools serve now (a pool serving any model is
/// listed by its id), `created` when this orchd started.
pub(crate) async fn models(app: &ShardApp) -> Result<Response<Body>, ApiError> {
    let models = app.shard.dispatcher().models().await?;
    let created = app.app.started_secs;
    let data: Vec<Value> = models
        .into_iter()
        .map(|m| serde_json::json!({"id": m, "object": "model", "created": created, "owned_by": "orchd"}))
        .collect();
    let doc = serde_json::json!({"object": "list", "data": data});
    Ok(respond::json(
        StatusCode::OK,
        serde_json::to_vec(&doc).expect("serializes"),
    ))
}

/// `GET /health`, as llama.cpp server answers it: `{"status": "ok"}` when ready.
pub(crate) async fn health(app: &ShardApp) -> Result<Response<Body>, ApiError> {
    super::ops::readyz(app).await?;
    Ok(respond::json(StatusCode::OK, r#"{"status":"ok"}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_floats_is_standard_padded_base64() {
        // 1.0f32 = 00 00 80 3f; 1.0, -2.0 = 00 00 80 3f 00 00 00 c0.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64_f32(&[]), "");
    }
}

//! The request pipeline: correlation id, auth, body limit, routing, error rendering.

use std::borrow::Cow;
use std::rc::Rc;
use std::time::Instant;

use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH};
use http::{Method, Request, Response};
use hyper::body::Incoming;

use orchd_engine::{ApiError, ErrorClass, ErrorKind};

use crate::api;
use crate::app::ShardApp;
use crate::auth::{require_operator, Caller, Keys};
use crate::body::Body;
use crate::respond;

const CORRELATION_ID: &str = "x-correlation-id";

/// Serves one request. Never fails: every error becomes an envelope response, and every
/// response carries the request's correlation id.
pub(crate) async fn handle(app: Rc<ShardApp>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let cid = correlation_id(&app, &req);
    let method = req.method().clone();
    // The OpenAI-compatible routes answer errors in OpenAI's shape, auth and body-limit
    // refusals included.
    let render = if openai_path(req.uri().path()) {
        respond::openai_error
    } else {
        respond::error
    };
    // A browser's preflight from an allowed origin is answered before auth (it
    // carries no credentials); every answer to an allowed origin names it.
    let cors = cors_origin(&app, req.headers());
    if let (Some(origin), true) = (&cors, is_preflight(&req)) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = http::StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        cors_headers(h, origin.clone());
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static(CORS_ALLOW_HEADERS),
        );
        h.insert("access-control-max-age", HeaderValue::from_static("600"));
        h.insert(CORRELATION_ID, cid);
        h.insert("x-orchd-shard", HeaderValue::from(app.shard.id().0));
        app.shard.probe.count_response(204);
        return r;
    }
    let mut resp = match route(&app, req, &cid).await {
        Ok(r) => r,
        Err(Refusal::Error(e)) => render(&e),
        Err(Refusal::Method(allow)) => {
            let e = ApiError::new(
                ErrorClass::MethodNotAllowed,
                ErrorKind::InvalidParams,
                format!("method {method} is not allowed here; allowed: {allow}"),
            );
            let mut r = render(&e);
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            r
        }
    };
    let status = resp.status().as_u16();
    app.shard.probe.count_response(status);
    let cid_str = cid.to_str().unwrap_or("");
    if status >= 500 {
        tracing::warn!(correlation_id = cid_str, %method, status, shard = app.shard.id().0,
            elapsed_us = started.elapsed().as_micros() as u64, "request failed");
    } else {
        tracing::debug!(correlation_id = cid_str, %method, status, shard = app.shard.id().0,
            elapsed_us = started.elapsed().as_micros() as u64, "request");
    }
    let h = resp.headers_mut();
    h.insert(CORRELATION_ID, cid);
    h.insert("x-orchd-shard", HeaderValue::from(app.shard.id().0));
    if let Some(origin) = cors {
        cors_headers(h, origin);
    }
    resp
}

/// Request headers a page may send (named: a wildcard would not cover `Authorization`).
const CORS_ALLOW_HEADERS: &str = "authorization, content-type, x-api-key, x-correlation-id, \
     x-deadline-ms, x-priority, x-session-id, last-event-id";

/// Response headers a page may read.
const CORS_EXPOSE_HEADERS: &str = "x-request-id, retry-after, retry-after-ms, x-backoff-ms, \
     x-correlation-id, x-queue-position, x-predicted-start-ms, x-tokens-out, x-should-retry";

/// The request's `Origin` if `server.cors_allow_origins` allows it.
fn cors_origin(app: &ShardApp, headers: &http::HeaderMap) -> Option<HeaderValue> {
    let allowed = &app.app.config.server.cors_allow_origins;
    if allowed.is_empty() {
        return None;
    }
    let origin = headers.get(http::header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a == "*" || a == text)
        .then(|| origin.clone())
}

/// A CORS preflight: `OPTIONS` asking for a method.
fn is_preflight(req: &Request<Incoming>) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key("access-control-request-method")
}

fn cors_headers(h: &mut http::HeaderMap, origin: HeaderValue) {
    h.insert("access-control-allow-origin", origin);
    h.insert(http::header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static(CORS_EXPOSE_HEADERS),
    );
}

pub(crate) enum Refusal {
    Error(ApiError),
    /// 405, with the methods the path does allow.
    Method(&'static str),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Error(e)
    }
}

/// The client's correlation id if it is sane (1 to 128 visible ASCII characters),
/// else a fresh UUIDv4. Anything else a client sends is not echoed.
fn correlation_id(app: &ShardApp, req: &Request<Incoming>) -> HeaderValue {
    if let Some(v) = req.headers().get(CORRELATION_ID) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len()) && b.iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = app.new_uuid().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).expect("a UUID is a valid header value")
}

/// Paths exempt from auth (SPEC section 1): scrapers and probes carry no key (`/health`
/// is the OpenAI-style servers' probe, exempt there too).
fn exempt(path: &str) -> bool {
    matches!(path, "/metrics" | "/livez" | "/readyz" | "/health")
}

/// The routes of the OpenAI-compatible front door (issue 17).
pub(crate) fn openai_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/completions" | "/v1/chat/completions" | "/v1/embeddings" | "/v1/models" | "/health"
    )
}

/// Checks the keys a request presents: `X-API-Key` and `Authorization: Bearer KEY` (as
/// the OpenAI SDKs and harnesses send it). None is 401, and so is an `Authorization`
/// that is not `Bearer KEY`; each key presented must be known (403), so a wrong
/// credential is never outweighed by a right one beside it, and two keys must be of one
/// tenant. Returns the caller.
fn check_keys<'k>(keys: &'k Keys, headers: &http::HeaderMap) -> Result<&'k Caller, ApiError> {
    if !keys.enabled() {
        return Ok(keys.keyless());
    }
    let api_key = headers.get("x-api-key").map(HeaderValue::as_bytes);
    let bearer = match headers.get(http::header::AUTHORIZATION) {
        None => None,
        Some(a) => {
            let a = a.as_bytes();
            // hyper trims the space after a bare `Bearer`: an empty, unknown key.
            let at = a.iter().position(|&b| b == b' ').unwrap_or(a.len());
            let (scheme, token) = a.split_at(at);
            if !scheme.eq_ignore_ascii_case(b"bearer") {
                return Err(ApiError::new(
                    ErrorClass::Unauthenticated,
                    ErrorKind::InvalidParams,
                    "Authorization: must be `Bearer KEY`",
                ));
            }
            Some(token.trim_ascii())
        }
    };
    match (api_key, bearer) {
        (Some(a), Some(b)) => {
            let (a, b) = (keys.check(Some(a))?, keys.check(Some(b))?);
            if a != b {
                return Err(ApiError::new(
                    ErrorClass::Forbidden,
                    ErrorKind::InvalidParams,
                    "X-API-Key and Authorization are keys of two different tenants",
                ));
            }
            Ok(a)
        }
        (one, other) => keys.check(one.or(other)),
    }
}

async fn route(
    app: &Rc<ShardApp>,
    req: Request<Incoming>,
    cid: &HeaderValue,
) -> Result<Response<Body>, Refusal> {
    let (head, body) = req.into_parts();
    let path = head.uri.path();
    let caller = if exempt(path) {
        None
    } else {
        Some(check_keys(&app.app.keys, &head.headers)?)
    };
    // Exempt routes take no caller; every other route has one.
    let who = caller.unwrap_or(app.app.keys.keyless());
    let operator = |what: &str| require_operator(who, what);
    check_declared_length(app, &head.headers)?;
    let method = head.method.clone();
    let mut segs = path.split('/').skip(1);
    let raw: [&str; 4] = std::array::from_fn(|_| segs.next().unwrap_or(""));
    if segs.next().is_some() {
        return Err(not_found(path));
    }
    let decoded = raw.map(decode_segment);
    let parts: [&str; 4] = std::array::from_fn(|i| decoded[i].as_ref());
    let allow = |m: &'static str| Refusal::Method(m);
    let r = match (parts, &method) {
        (["livez", "", "", ""], &Method::GET) => api::ops::livez(),
        (["readyz", "", "", ""], &Method::GET) => api::ops::readyz(app).await?,
        (["metrics", "", "", ""], &Method::GET) => api::metrics::get(app).await?,
        (["livez" | "readyz" | "metrics", "", "", ""], _) => return Err(allow("GET")),
        (["v1", "capabilities", "", ""], &Method::GET) => api::capabilities::get(app).await?,
        (["v1", "pools", id, "health"], &Method::GET) if !id.is_empty() => {
            api::pools::health(app, id).await?
        }
        (["v1", "pools", id, "health"], _) if !id.is_empty() => return Err(allow("GET")),
        (["v1", "pools", id, "drain"], &Method::POST) if !id.is_empty() => {
            operator("pool drain")?;
            let body = api::tasks::read_body(body, app.app.config.server.max_body_bytes).await?;
            api::pools::drain(app, id, body).await?
        }
        (["v1", "pools", id, "reload"], &Method::POST) if !id.is_empty() => {
            operator("pool reload")?;
            let body = api::tasks::read_body(body, app.app.config.server.max_body_bytes).await?;
            api::pools::reload(app, id, body).await?
        }
        (["v1", "pools", id, "drain" | "reload"], _) if !id.is_empty() => {
            return Err(allow("POST"))
        }
        (["v1", "capabilities", "", ""], _) => return Err(allow("GET")),
        (["v1", "tasks", "", ""], &Method::POST) => {
            let limit = app.app.config.server.max_body_bytes;
            let body = api::tasks::read_body(body, limit).await?;
            api::tasks::create(app, who, body, cid).await?
        }
        (["v1", "tasks", "", ""], _) => return Err(allow("POST")),
        (["v1", "completions", "", ""], &Method::POST) => {
            let body = api::tasks::read_body(body, app.app.config.server.max_body_bytes).await?;
            api::openai::completions(app, who, body, &head.headers, cid).await?
        }
        (["v1", "chat", "completions", ""], &Method::POST) => {
            let body = api::tasks::read_body(body, app.app.config.server.max_body_bytes).await?;
            api::openai::chat(app, who, body, &head.headers, cid).await?
        }
        (["v1", "embeddings", "", ""], &Method::POST) => {
            let body = api::tasks::read_body(body, app.app.config.server.max_body_bytes).await?;
            api::openai::embeddings(app, who, body, &head.headers, cid).await?
        }
        (
            ["v1", "completions", "", ""]
            | ["v1", "chat", "completions", ""]
            | ["v1", "embeddings", "", ""],
            _,
        ) => return Err(allow("POST")),
        (["v1", "models", "", ""], &Method::GET) => api::openai::models(app).await?,
        (["v1", "models", "", ""], _) => return Err(allow("GET")),
        (["health", "", "", ""], &Method::GET) => api::openai::health(app).await?,
        (["health", "", "", ""], _) => return Err(allow("GET")),
        (["v1", "tasks", id, "stream"], &Method::GET) if !id.is_empty() => {
            api::tasks::stream(app, who, id, &head.headers, head.uri.query()).await?
        }
        (["v1", "tasks", id, "stream"], _) if !id.is_empty() => return Err(allow("GET")),
        (["v1", "tasks", id, "cancel"], &Method::POST) if !id.is_empty() => {
            api::tasks::cancel(app, who, id).await?
        }
        (["v1", "tasks", id, "cancel"], _) if !id.is_empty() => return Err(allow("POST")),
        (["v1", "sessions", id, ""], &Method::GET) if !id.is_empty() => {
            api::sessions::get(app, who, id).await?
        }
        (["v1", "sessions", id, ""], &Method::DELETE) if !id.is_empty() => {
            api::sessions::delete(app, who, id).await?
        }
        (["v1", "sessions", id, ""], _) if !id.is_empty() => return Err(allow("GET, DELETE")),
        (["v1", "artifacts", id, ""], &Method::GET) if !id.is_empty() => {
            api::artifacts::get(app, who, id).await?
        }
        (["v1", "artifacts", id, ""], _) if !id.is_empty() => return Err(allow("GET")),
        (["v1", "artifacts", "", ""], &Method::POST) => {
            let body = api::tasks::read_body(body, app.app.config.server.max_body_bytes).await?;
            api::artifacts::create(app, who, body).await?
        }
        (["v1", "artifacts", "", ""], _) => return Err(allow("POST")),
        _ => return Err(not_found(path)),
    };
    Ok(r)
}

/// A path segment with its percent-escapes decoded (RFC 3986 section 2.1). OpenAPI
/// clients encode reserved characters of path parameters (RFC 6570 simple expansion), so
/// `GET /v1/artifacts/sha256:...` arrives as `sha256%3A...`. A segment with a malformed
/// escape, or that would decode to something other than UTF-8 text without control
/// characters, is kept as sent: its handler then refuses it by name.
fn decode_segment(seg: &str) -> Cow<'_, str> {
    if !seg.contains('%') {
        return Cow::Borrowed(seg);
    }
    let hex = |c: Option<&u8>| c.and_then(|&c| char::from(c).to_digit(16));
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(hi), Some(lo)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) else {
                return Cow::Borrowed(seg);
            };
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    match String::from_utf8(out) {
        Ok(s) if !s.chars().any(char::is_control) => Cow::Owned(s),
        _ => Cow::Borrowed(seg),
    }
}

fn not_found(path: &str) -> Refusal {
    Refusal::Error(ApiError::not_found(format!("no route for {path}")))
}

/// Refuses a declared body larger than `server.max_body_bytes` before reading any of
/// it, on every route (like a proxy's client body limit). Bodies without a length are
/// limited while they are read.
fn check_declared_length(app: &ShardApp, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let max = app.app.config.server.max_body_bytes;
    let Some(len) = headers.get(CONTENT_LENGTH) else {
        return Ok(());
    };
    match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
        Some(n) if n <= max as u64 => Ok(()),
        Some(n) => Err(ApiError::new(
            ErrorClass::PayloadTooLarge,
            ErrorKind::InvalidParams,
            format!("body: {n} bytes is more than the limit of {max} (server.max_body_bytes)"),
        )),
        None => Err(ApiError::invalid("Content-Length: not a number")),
    }
}

//! Building responses, and the one mapping from the engine's errors to HTTP.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use orchd_engine::{ApiError, ErrorClass};

use crate::body::Body;

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r
}

/// The status code of an error class. Exhaustive: a new class must choose its status.
pub(crate) fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorClass::Forbidden => StatusCode::FORBIDDEN,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorClass::Conflict => StatusCode::CONFLICT,
        ErrorClass::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
    }
}

/// The error envelope response, with `Retry-After` and `X-Backoff-Ms` when the error
/// carries retry advice (the body's `retry_after_ms` is the same number).
pub(crate) fn error(e: &ApiError) -> Response<Body> {
    let mut r = json(status_of(e.class), e.envelope_json());
    if let (Some(ms), Some(secs)) = (e.retry_after_ms, e.retry_after_secs()) {
        let h = r.headers_mut();
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
        h.insert("x-backoff-ms", HeaderValue::from(ms));
    }
    r
}

/// An error as the OpenAI-compatible routes answer it (issue 17): OpenAI's
/// `{"error": {"message", "type", "param", "code"}}` with orchd's `ErrorKind` as `code`
/// and its retry advice as `retry_after_ms`, the status and retry headers as
/// [`error`] sends them, `retry-after-ms` (what the openai SDK reads first) and
/// `x-should-retry` (so the SDK does not retry what orchd says is not retriable).
pub(crate) fn openai_error(e: &ApiError) -> Response<Body> {
    let mut r = json(status_of(e.class), openai_body(e));
    let h = r.headers_mut();
    if let (Some(ms), Some(secs)) = (e.retry_after_ms, e.retry_after_secs()) {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
        h.insert("retry-after-ms", HeaderValue::from(ms));
        h.insert("x-backoff-ms", HeaderValue::from(ms));
    }
    let retry = if e.retriable { "true" } else { "false" };
    h.insert("x-should-retry", HeaderValue::from_static(retry));
    r
}

/// OpenAI's error body of `e`.
fn openai_body(e: &ApiError) -> Vec<u8> {
    let kind = match status_of(e.class).as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    let mut err = serde_json::json!({
        "message": e.message, "type": kind, "param": param_of(&e.message), "code": e.kind,
    });
    if let Some(ms) = e.retry_after_ms {
        err["retry_after_ms"] = ms.into();
    }
    serde_json::to_vec(&serde_json::json!({ "error": err })).expect("serializes")
}

/// The field an error message names (every message starts `field: ...`), for
/// OpenAI's `param`; `None` when it names the body or no field.
fn param_of(message: &str) -> Option<&str> {
    let (field, rest) = message.split_once(": ")?;
    if let Some(missing) = rest.strip_prefix("missing field `") {
        return missing.strip_suffix('`');
    }
    let plausible = !field.is_empty()
        && field != "body"
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.[]".contains(&b));
    plausible.then_some(field)
}

/// The error as a whole HTTP/1.1 response that closes the connection, for a
/// connection orchd will not serve (so hyper never reads from it): OrchQueue's
/// envelope, or OpenAI's error for a request to the OpenAI-compatible routes.
pub(crate) fn error_and_close(
    e: &ApiError,
    correlation_id: &str,
    shard: usize,
    openai: bool,
) -> Vec<u8> {
    let status = status_of(e.class);
    let body = if openai {
        openai_body(e)
    } else {
        e.envelope_json()
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-correlation-id: {correlation_id}\r\nx-orchd-shard: {shard}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    if let (Some(ms), Some(secs)) = (e.retry_after_ms, e.retry_after_secs()) {
        head.push_str(&format!("retry-after: {secs}\r\nx-backoff-ms: {ms}\r\n"));
        if openai {
            head.push_str(&format!("retry-after-ms: {ms}\r\n"));
        }
    }
    if openai {
        let retry = if e.retriable { "true" } else { "false" };
        head.push_str(&format!("x-should-retry: {retry}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    out
}

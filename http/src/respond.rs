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

/// The error envelope as a whole HTTP/1.1 response that closes the connection, for a
/// connection orchd will not serve (so hyper never reads from it).
pub(crate) fn error_and_close(e: &ApiError, correlation_id: &str, shard: usize) -> Vec<u8> {
    let status = status_of(e.class);
    let body = e.envelope_json();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-correlation-id: {correlation_id}\r\nx-orchd-shard: {shard}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    if let (Some(ms), Some(secs)) = (e.retry_after_ms, e.retry_after_secs()) {
        head.push_str(&format!("retry-after: {secs}\r\nx-backoff-ms: {ms}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    out
}

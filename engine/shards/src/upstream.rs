//! HTTP adapters for real engines (SPEC section 4): an HTTP/1.1 client on the owner
//! shard's executor (hyper's client over the same glommio socket adapter as the server),
//! a small keep-alive pool per engine, and an incremental parser of the engines' SSE.
//!
//! Wire formats: OpenAI-compatible `/v1/completions` streams `data: {json}` events with
//! `choices[0].text` and `finish_reason`, then `data: [DONE]`; llama.cpp's native
//! `/completion` streams `data: {json}` events with `content` and `stop`. Both may
//! split an event across reads, send `:` comment pings, and use `\r\n` line ends.

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};

use orchd_engine::config::{parse_http_url, AdapterConfig, AdapterKind, HttpUrl};
use orchd_engine::task::{Determinism, TaskSpec};

use crate::rt;

/// Most idle connections kept per engine.
const IDLE_MAX: usize = 16;
/// Largest SSE event accepted from an engine.
const MAX_EVENT: usize = 1 << 20;

/// How a call to an engine failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, or no response head in time: nothing was generated.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    /// The engine answered with an error status before streaming.
    #[error("engine answered {status}: {body}")]
    Status { status: u16, body: String },
    /// The connection broke while streaming.
    #[error("engine connection lost: {0}")]
    Reset(String),
    /// The engine sent something that is not its protocol.
    #[error("engine sent malformed data: {0}")]
    Malformed(String),
}

impl UpstreamError {
    /// Worth another try before the first token.
    pub fn retriable(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_) => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            UpstreamError::Reset(_) | UpstreamError::Malformed(_) => false,
        }
    }
}

/// One engine endpoint and its idle connections. Lives on the pool's owner shard.
pub struct Upstream {
    kind: AdapterKind,
    url: HttpUrl,
    addr: SocketAddr,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    pub retries: u32,
    pub health_interval: Duration,
    idle: RefCell<Vec<SendRequest<Full<Bytes>>>>,
}

impl Upstream {
    pub fn new(cfg: &AdapterConfig) -> Result<Upstream, String> {
        let raw = cfg.url.as_deref().ok_or("no url")?;
        let url = parse_http_url(raw)?;
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", url.host))?;
        let host = HeaderValue::from_str(&format!("{}:{}", url.host, url.port))
            .map_err(|e| e.to_string())?;
        let auth = match &cfg.api_key {
            Some(k) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose()))
                    .map_err(|_| "api_key: not a valid header value")?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Upstream {
            kind: cfg.kind,
            url,
            addr,
            host,
            auth,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            first_byte_timeout: Duration::from_millis(cfg.first_byte_timeout_ms),
            retries: cfg.retries,
            health_interval: Duration::from_millis(cfg.health_interval_ms),
            idle: RefCell::new(Vec::new()),
        })
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
        loop {
            let Some(mut s) = self.idle.borrow_mut().pop() else {
                break;
            };
            if !s.is_closed() && s.ready().await.is_ok() {
                return Ok(s);
            }
        }
        let conn = rt::connect(self.addr, self.connect_timeout)
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("{}: {e}", self.addr)))?;
        let (sender, connection) = http1::handshake(conn)
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        rt::spawn_detached(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < IDLE_MAX && !sender.is_closed() {
            idle.push(sender);
        }
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(body));
        *r.method_mut() = method;
        *r.uri_mut() = format!("{}{path}", self.url.base_path)
            .parse()
            .expect("a valid path");
        let h = r.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(a) = &self.auth {
            h.insert(AUTHORIZATION, a.clone());
        }
        r
    }

    /// The engine's request body for a task.
    fn body(&self, spec: &TaskSpec, model: &str) -> Bytes {
        let prompt = match (&spec.prompt, &spec.inputs) {
            (Some(p), _) => p.clone(),
            (None, Some(inputs)) => inputs.join("\n"),
            (None, None) => String::new(),
        };
        let mut v = match self.kind {
            AdapterKind::Llamacpp => serde_json::json!({
                "prompt": prompt, "n_predict": spec.max_tokens, "stream": true,
            }),
            AdapterKind::Openai | AdapterKind::Mock => serde_json::json!({
                "model": model, "prompt": prompt, "max_tokens": spec.max_tokens, "stream": true,
            }),
        };
        if let Some(seed) = spec.seed {
            v["seed"] = seed.into();
        }
        if spec.determinism == Some(Determinism::Strict) {
            v["temperature"] = 0.into();
        }
        Bytes::from(serde_json::to_vec(&v).expect("serializes"))
    }

    /// Starts a generation: connection (pooled or new), request, response head.
    pub async fn open(
        &self,
        spec: &TaskSpec,
        model: &str,
    ) -> Result<UpstreamStream, UpstreamError> {
        let mut sender = self.sender().await?;
        let path = match self.kind {
            AdapterKind::Llamacpp => "/completion",
            AdapterKind::Openai | AdapterKind::Mock => "/v1/completions",
        };
        let req = self.request(Method::POST, path, self.body(spec, model));
        let resp = rt::timeout(self.first_byte_timeout, sender.send_request(req))
            .await
            .ok_or_else(|| {
                UpstreamError::Unreachable(format!(
                    "no response head in {:?}",
                    self.first_byte_timeout
                ))
            })?
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = rt::timeout(self.first_byte_timeout, resp.into_body().collect()).await;
            let body = match body {
                Some(Ok(b)) => String::from_utf8_lossy(&b.to_bytes())
                    .chars()
                    .take(512)
                    .collect(),
                _ => String::new(),
            };
            return Err(UpstreamError::Status {
                status: status.as_u16(),
                body,
            });
        }
        Ok(UpstreamStream {
            kind: self.kind,
            body: resp.into_body(),
            buf: Vec::new(),
            sender: Some(sender),
            ended: false,
        })
    }

    /// Finishes a stream that ended cleanly: reads the rest of the body (openai's
    /// `[DONE]`) so that the connection can serve the next task.
    pub async fn recycle(&self, mut stream: UpstreamStream) {
        let drained = rt::timeout(Duration::from_secs(1), async {
            while let Some(f) = stream.body.frame().await {
                if f.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        if drained == Some(true) {
            if let Some(s) = stream.sender.take() {
                self.give_back(s);
            }
        }
    }

    /// `GET path` on a pooled connection: the status was 200, and the body.
    async fn get(&self, path: &str) -> Option<(bool, Bytes)> {
        let mut s = self.sender().await.ok()?;
        let resp = s
            .send_request(self.request(Method::GET, path, Bytes::new()))
            .await
            .ok()?;
        let ok = resp.status() == StatusCode::OK;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        self.give_back(s);
        Some((ok, body))
    }

    /// The version the engine reports: llama.cpp's `/props` `build_info`, vLLM's
    /// `/version`; `None` when the engine does not say.
    pub async fn version(&self) -> Option<String> {
        let (path, field) = match self.kind {
            AdapterKind::Llamacpp => ("/props", "build_info"),
            AdapterKind::Openai | AdapterKind::Mock => ("/version", "version"),
        };
        let ask = async {
            let (ok, body) = self.get(path).await?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok().filter(|_| ok)?;
            v.get(field)?.as_str().map(|s| s.chars().take(64).collect())
        };
        rt::timeout(self.connect_timeout + Duration::from_secs(2), ask)
            .await
            .flatten()
    }

    /// Probes the engine's health endpoint (`/health` for llama.cpp, `/v1/models` for
    /// OpenAI-compatible servers).
    pub async fn healthy(&self) -> bool {
        let path = match self.kind {
            AdapterKind::Llamacpp => "/health",
            AdapterKind::Openai | AdapterKind::Mock => "/v1/models",
        };
        let limit = self.connect_timeout + self.first_byte_timeout.min(Duration::from_secs(5));
        rt::timeout(limit, self.get(path))
            .await
            .flatten()
            .is_some_and(|(ok, _)| ok)
    }
}

/// One piece of a generation.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text of one token (or a few, as the engine sends them).
    Text(String),
    /// The engine says the generation is complete.
    End,
}

/// A generation being streamed from an engine.
pub struct UpstreamStream {
    kind: AdapterKind,
    body: Incoming,
    buf: Vec<u8>,
    sender: Option<SendRequest<Full<Bytes>>>,
    ended: bool,
}

impl UpstreamStream {
    /// The next piece; `Ok(None)` if the body ended without the engine saying so.
    pub async fn next(&mut self) -> Result<Option<Piece>, UpstreamError> {
        loop {
            if self.ended {
                return Ok(Some(Piece::End));
            }
            if let Some(event) = take_event(&mut self.buf) {
                if let Some(p) = parse_event(self.kind, &event)? {
                    if p == Piece::End {
                        self.ended = true;
                    }
                    return Ok(Some(p));
                }
                continue;
            }
            if self.buf.len() > MAX_EVENT {
                return Err(UpstreamError::Malformed(
                    "an event larger than 1 MiB".into(),
                ));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(UpstreamError::Reset(e.to_string())),
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
            }
        }
    }
}

/// Removes one complete SSE event (up to a blank line) from `buf`.
fn take_event(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let next = &buf[i + 1..];
            let blank = if next.first() == Some(&b'\n') {
                Some(i + 2)
            } else if next.starts_with(b"\r\n") {
                Some(i + 3)
            } else {
                None
            };
            if let Some(end) = blank {
                let event: Vec<u8> = buf.drain(..end).collect();
                return Some(event);
            }
        }
        i += 1;
    }
    None
}

/// The text of an event's `data:` lines, or `None` for comments and empty events.
fn event_data(event: &[u8]) -> Result<Option<String>, UpstreamError> {
    let text =
        std::str::from_utf8(event).map_err(|_| UpstreamError::Malformed("not UTF-8".into()))?;
    let mut data: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_string()),
            }
        }
    }
    Ok(data)
}

fn parse_event(kind: AdapterKind, event: &[u8]) -> Result<Option<Piece>, UpstreamError> {
    let Some(data) = event_data(event)? else {
        return Ok(None);
    };
    if data.trim() == "[DONE]" {
        return Ok(Some(Piece::End));
    }
    let v: serde_json::Value = serde_json::from_str(&data).map_err(|e| {
        UpstreamError::Malformed(format!(
            "{e}: {}",
            data.chars().take(200).collect::<String>()
        ))
    })?;
    let (text, done) = match kind {
        AdapterKind::Llamacpp => (
            v.get("content").and_then(|c| c.as_str()),
            v.get("stop")
                .and_then(|s| s.as_bool())
                .ok_or_else(|| UpstreamError::Malformed("no `stop` field".into()))?,
        ),
        AdapterKind::Openai | AdapterKind::Mock => {
            let choice = v
                .get("choices")
                .and_then(|c| c.get(0))
                .ok_or_else(|| UpstreamError::Malformed("no `choices[0]`".into()))?;
            (
                choice.get("text").and_then(|t| t.as_str()),
                choice.get("finish_reason").is_some_and(|f| !f.is_null()),
            )
        }
    };
    Ok(match (text, done) {
        (Some(t), _) if !t.is_empty() => Some(Piece::Text(t.to_string())),
        (_, true) => Some(Piece::End),
        _ => None,
    })
}

/// The SSE parser above, for the fuzz targets in `engine/shards/fuzz` (not an API).
#[doc(hidden)]
pub mod fuzzing {
    use super::{AdapterKind, Piece, UpstreamError};

    /// Largest event [`super::UpstreamStream::next`] buffers before giving up.
    pub const MAX_EVENT: usize = super::MAX_EVENT;

    /// Removes one complete SSE event (up to a blank line) from `buf`.
    pub fn take_event(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        super::take_event(buf)
    }

    /// The piece one event carries, if any.
    pub fn parse_event(kind: AdapterKind, event: &[u8]) -> Result<Option<Piece>, UpstreamError> {
        super::parse_event(kind, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(kind: AdapterKind, wire: &str) -> Vec<Piece> {
        let mut buf = wire.as_bytes().to_vec();
        let mut out = Vec::new();
        while let Some(e) = take_event(&mut buf) {
            if let Some(p) = parse_event(kind, &e).unwrap() {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn openai_stream() {
        let wire = "data: {\"choices\":[{\"text\":\" hi\",\"index\":0,\"finish_reason\":null}]}\n\n\
                    : ping\n\n\
                    data: {\"choices\":[{\"text\":\"!\",\"index\":0,\"finish_reason\":null}]}\r\n\r\n\
                    data: {\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}],\"usage\":{}}\n\n\
                    data: [DONE]\n\n";
        assert_eq!(
            pieces(AdapterKind::Openai, wire),
            [
                Piece::Text(" hi".into()),
                Piece::Text("!".into()),
                Piece::End,
                Piece::End
            ]
        );
    }

    #[test]
    fn llamacpp_stream() {
        let wire = "data: {\"content\":\" a\",\"tokens\":[1],\"stop\":false}\n\n\
                    data: {\"content\":\"\",\"stop\":true,\"stop_type\":\"limit\"}\n\n";
        assert_eq!(
            pieces(AdapterKind::Llamacpp, wire),
            [Piece::Text(" a".into()), Piece::End]
        );
    }

    #[test]
    fn partial_events_wait_for_more_bytes() {
        let mut buf = b"data: {\"content\":\"x\",\"st".to_vec();
        assert!(take_event(&mut buf).is_none());
        buf.extend_from_slice(b"op\":false}\n\n");
        assert!(take_event(&mut buf).is_some());
        assert!(buf.is_empty());
    }

    #[test]
    fn garbage_is_malformed() {
        let mut buf = b"data: {not json\n\n".to_vec();
        let e = take_event(&mut buf).unwrap();
        assert!(matches!(
            parse_event(AdapterKind::Openai, &e),
            Err(UpstreamError::Malformed(_))
        ));
    }
}

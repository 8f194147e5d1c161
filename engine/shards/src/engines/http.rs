//! Real engines over HTTP (SPEC section 4): an HTTP/1.1 client on one shard's executor
//! (the pool owner's, or the one its replica is homed on; hyper's client over the same
//! socket adapter as the server), a small keep-alive pool per engine endpoint, and an
//! incremental parser of the engines' SSE.
//! What differs between engines (paths, request bodies, event fields) is a [`Wire`];
//! see `openai.rs` and `llamacpp.rs`.
//!
//! Both wire formats may split an event across reads, send `:` comment pings, and use
//! `\r\n` line ends.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use uuid::Uuid;

use orchd_engine::config::{parse_http_url, AdapterConfig, HttpUrl};
use orchd_engine::generation::{Generation, Input};
use orchd_engine::EngineError;

use super::{EngineAdapter, Health, Piece, TokenStream};
use crate::rt;

/// Most idle connections kept per engine.
const IDLE_MAX: usize = 16;
/// Largest SSE event accepted from an engine.
const MAX_EVENT: usize = 1 << 20;

/// Reads one decoded `data:` payload of an engine's stream.
pub type ParseFn = fn(&serde_json::Value) -> Result<Option<Piece>, EngineError>;

/// What one engine family's HTTP API looks like.
pub trait Wire {
    /// The path a generation is posted to, and the parser of its events.
    fn endpoint(input: &Input) -> (&'static str, ParseFn);
    /// The request body of a generation.
    fn body(g: &Generation) -> serde_json::Value;
    /// The path of the health probe (200 = up).
    const HEALTH: &'static str;
    /// Where the engine says its version: (path, field), and optionally the field of
    /// the same document that holds its slot count.
    const VERSION: (&'static str, &'static str, Option<&'static str>);
}

/// Largest embeddings answer read from an engine.
const MAX_EMBEDDINGS_BODY: usize = 64 << 20;

/// One engine endpoint and its idle connections, on one shard (each shard that talks to
/// the endpoint has its own).
pub struct Client {
    url: HttpUrl,
    addr: SocketAddr,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    idle: RefCell<Vec<SendRequest<Full<Bytes>>>>,
}

/// An engine of wire format `W` at one URL.
pub struct HttpEngine<W> {
    client: Rc<Client>,
    retries: u32,
    health_interval: Duration,
    wire: PhantomData<W>,
}

impl<W: Wire> HttpEngine<W> {
    pub fn new(cfg: &AdapterConfig) -> Result<HttpEngine<W>, String> {
        let raw = cfg.url.as_deref().ok_or("no url")?;
        let url = parse_http_url(raw)?;
        // An IPv6 literal is bracketed in a URL (`http://[::1]:8080`), not in a lookup.
        let name = url.host.trim_start_matches('[').trim_end_matches(']');
        let addr = (name, url.port)
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
        Ok(HttpEngine {
            client: Rc::new(Client {
                url,
                addr,
                host,
                auth,
                connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
                first_byte_timeout: Duration::from_millis(cfg.first_byte_timeout_ms),
                idle: RefCell::new(Vec::new()),
            }),
            retries: cfg.retries,
            health_interval: Duration::from_millis(cfg.health_interval_ms),
            wire: PhantomData,
        })
    }

    /// The version (and slots) the engine reports, when it says.
    async fn version(&self) -> (Option<String>, Option<u32>) {
        let (path, field, slots) = W::VERSION;
        let c = &self.client;
        let ask = async {
            let (ok, body) = c.get(path).await?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok().filter(|_| ok)?;
            let version = v
                .get(field)
                .and_then(|f| f.as_str())
                .map(|s| s.chars().take(64).collect());
            let slots = slots
                .and_then(|f| v.get(f))
                .and_then(|n| n.as_u64())
                .and_then(|n| u32::try_from(n).ok());
            Some((version, slots))
        };
        rt::timeout(c.connect_timeout + Duration::from_secs(2), ask)
            .await
            .flatten()
            .unwrap_or_default()
    }
}

impl Client {
    /// A kept-alive connection (`true`) if one is idle, else a new one.
    async fn sender(&self) -> Result<(SendRequest<Full<Bytes>>, bool), EngineError> {
        loop {
            let Some(mut s) = self.idle.borrow_mut().pop() else {
                break;
            };
            if !s.is_closed() && s.ready().await.is_ok() {
                return Ok((s, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, EngineError> {
        let conn = rt::connect(self.addr, self.connect_timeout)
            .await
            .map_err(|e| EngineError::Unreachable(format!("{}: {e}", self.addr)))?;
        let (sender, connection) = http1::handshake(conn)
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        rt::spawn(rt::Class::Throughput, async move {
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

    /// Sends a request on a kept-alive connection if one is idle, else on a new one;
    /// returns the connection (to give back) and the response head. A kept-alive
    /// connection the engine closed meanwhile (llama.cpp's server closes after every
    /// streamed answer, whatever its Keep-Alive header says, and the close can arrive
    /// after the check in `sender`) is replaced by a new one and the request sent again
    /// at once: not a failure to retry after a backoff, which cost the tail 100 ms and
    /// more and marked a probed engine down (perf/results/2026-12-05-issue17-openai.md).
    async fn send(
        &self,
        request: impl Fn() -> Request<Full<Bytes>>,
    ) -> Result<(SendRequest<Full<Bytes>>, hyper::Response<Incoming>), EngineError> {
        let (mut sender, mut kept) = self.sender().await?;
        loop {
            match rt::timeout(self.first_byte_timeout, sender.send_request(request())).await {
                None => {
                    let why = format!("no response head in {:?}", self.first_byte_timeout);
                    return Err(EngineError::Unreachable(why));
                }
                Some(Ok(resp)) => return Ok((sender, resp)),
                Some(Err(_)) if kept => {
                    sender = self.connect().await?;
                    kept = false;
                }
                Some(Err(e)) => return Err(EngineError::Unreachable(e.to_string())),
            }
        }
    }

    /// `GET path` on a pooled connection: the status was 200, and the body.
    async fn get(&self, path: &str) -> Option<(bool, Bytes)> {
        let (s, resp) = self
            .send(|| self.request(Method::GET, path, Bytes::new()))
            .await
            .ok()?;
        let ok = resp.status() == StatusCode::OK;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        self.give_back(s);
        Some((ok, body))
    }
}

impl<W: Wire> EngineAdapter for HttpEngine<W> {
    type Stream = HttpStream;

    /// Connection (pooled or new), request, response head.
    async fn open(&self, _task: Uuid, g: &Generation) -> Result<HttpStream, EngineError> {
        let c = &self.client;
        let (path, parse) = W::endpoint(&g.input);
        let body = Bytes::from(serde_json::to_vec(&W::body(g)).expect("serializes"));
        let (sender, resp) = c
            .send(|| c.request(Method::POST, path, body.clone()))
            .await?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = rt::timeout(c.first_byte_timeout, resp.into_body().collect()).await;
            let body = match body {
                Some(Ok(b)) => String::from_utf8_lossy(&b.to_bytes())
                    .chars()
                    .take(512)
                    .collect(),
                _ => String::new(),
            };
            return Err(EngineError::Status {
                status: status.as_u16(),
                body,
            });
        }
        if let Input::Embed(_) = g.input {
            // An embeddings answer is one JSON document, not a stream (bounded: it is
            // held whole).
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_EMBEDDINGS_BODY);
            let body = rt::timeout(c.first_byte_timeout, limited.collect())
                .await
                .ok_or_else(|| EngineError::Reset("embeddings: the answer did not end".into()))?
                .map_err(|e| EngineError::Malformed(format!("embeddings: {e}")))?
                .to_bytes();
            c.give_back(sender);
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| EngineError::Malformed(format!("embeddings: {e}")))?;
            let (vectors, usage) = super::openai::parse_embeddings(&v)?;
            return Ok(HttpStream {
                client: Rc::clone(c),
                parse,
                body: None,
                buf: Vec::new(),
                sender: None,
                queued: Some(Piece::Embeddings(vectors)),
                ended: Some(usage),
            });
        }
        Ok(HttpStream {
            client: Rc::clone(c),
            parse,
            body: Some(resp.into_body()),
            buf: Vec::new(),
            sender: Some(sender),
            queued: None,
            ended: None,
        })
    }

    fn retries(&self) -> u32 {
        self.retries
    }

    fn health_interval(&self) -> Option<Duration> {
        Some(self.health_interval)
    }

    async fn health(&self) -> Health {
        let c = &self.client;
        let limit = c.connect_timeout + c.first_byte_timeout.min(Duration::from_secs(5));
        let up = rt::timeout(limit, c.get(W::HEALTH))
            .await
            .flatten()
            .is_some_and(|(ok, _)| ok);
        let (version, slots) = if up {
            self.version().await
        } else {
            (None, None)
        };
        Health { up, version, slots }
    }

    /// The engine serves the models it was started with; orchd sends the new name
    /// as `model` from now on.
    async fn load(&self, _model: &str) -> Result<(), String> {
        Ok(())
    }
}

/// A generation being streamed from an engine.
pub struct HttpStream {
    client: Rc<Client>,
    parse: ParseFn,
    /// The streamed answer; `None` for one read whole (embeddings).
    body: Option<Incoming>,
    buf: Vec<u8>,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// A piece read already (an embeddings answer), handed out first.
    queued: Option<Piece>,
    /// The engine said it was done (with this usage): `next` answers that from now on.
    ended: Option<super::Usage>,
}

impl TokenStream for HttpStream {
    async fn next(&mut self) -> Result<Option<Piece>, EngineError> {
        if let Some(p) = self.queued.take() {
            return Ok(Some(p));
        }
        loop {
            if let Some(usage) = self.ended {
                return Ok(Some(Piece::End(usage)));
            }
            if let Some(event) = take_event(&mut self.buf) {
                if let Some(p) = parse_event(self.parse, &event)? {
                    if let Piece::End(usage) = p {
                        self.ended = Some(usage);
                    }
                    return Ok(Some(p));
                }
                continue;
            }
            if self.buf.len() > MAX_EVENT {
                return Err(EngineError::Malformed("an event larger than 1 MiB".into()));
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            match body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(EngineError::Reset(e.to_string())),
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
            }
        }
    }

    /// Reads the rest of the body (openai's `[DONE]`) so that the connection can serve
    /// the next task.
    async fn finish(mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        let drained = rt::timeout(Duration::from_secs(1), async {
            while let Some(f) = body.frame().await {
                if f.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        if drained == Some(true) {
            if let Some(s) = self.sender.take() {
                self.client.give_back(s);
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
fn event_data(event: &[u8]) -> Result<Option<String>, EngineError> {
    let text =
        std::str::from_utf8(event).map_err(|_| EngineError::Malformed("not UTF-8".into()))?;
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

/// The piece one event carries, if any: `[DONE]` ends the stream, JSON goes to the
/// wire format's parser.
fn parse_event(parse: ParseFn, event: &[u8]) -> Result<Option<Piece>, EngineError> {
    let Some(data) = event_data(event)? else {
        return Ok(None);
    };
    if data.trim() == "[DONE]" {
        return Ok(Some(Piece::End(super::Usage::default())));
    }
    let v: serde_json::Value = serde_json::from_str(&data).map_err(|e| {
        EngineError::Malformed(format!(
            "{e}: {}",
            data.chars().take(200).collect::<String>()
        ))
    })?;
    parse(&v)
}

/// A text piece, or the end, from an event's text and whether it says it is done.
pub(super) fn piece(text: Option<&str>, done: bool, usage: super::Usage) -> Option<Piece> {
    match (text, done) {
        (Some(t), _) if !t.is_empty() => Some(Piece::Text(t.to_string().into())),
        (_, true) => Some(Piece::End(usage)),
        _ => None,
    }
}

/// The SSE parser above, for the fuzz targets in `engine/shards/fuzz` and the wire
/// formats' tests (not an API).
#[doc(hidden)]
pub mod fuzzing {
    use orchd_engine::config::AdapterKind;
    use orchd_engine::generation::Input;
    use orchd_engine::EngineError;

    use super::super::{LlamaCpp, OpenAi, Piece};
    use super::Wire;

    /// Largest event [`super::HttpStream::next`] buffers before giving up.
    pub const MAX_EVENT: usize = super::MAX_EVENT;

    /// Removes one complete SSE event (up to a blank line) from `buf`.
    pub fn take_event(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        super::take_event(buf)
    }

    /// The piece one event of a completion stream carries, if any.
    pub fn parse_event(kind: AdapterKind, event: &[u8]) -> Result<Option<Piece>, EngineError> {
        let input = Input::Completion {
            prompt: None,
            inputs: Vec::new(),
        };
        let (_, parse) = match kind {
            AdapterKind::Llamacpp => LlamaCpp::endpoint(&input),
            AdapterKind::Openai | AdapterKind::Mock => OpenAi::endpoint(&input),
        };
        super::parse_event(parse, event)
    }

    /// The same for a chat stream.
    pub fn parse_chat_event(kind: AdapterKind, event: &[u8]) -> Result<Option<Piece>, EngineError> {
        let (_, parse) = match kind {
            AdapterKind::Llamacpp => LlamaCpp::endpoint(&Input::Chat(Vec::new())),
            AdapterKind::Openai | AdapterKind::Mock => OpenAi::endpoint(&Input::Chat(Vec::new())),
        };
        super::parse_event(parse, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_events_wait_for_more_bytes() {
        let mut buf = b"data: {\"content\":\"x\",\"st".to_vec();
        assert!(take_event(&mut buf).is_none());
        buf.extend_from_slice(b"op\":false}\n\n");
        assert!(take_event(&mut buf).is_some());
        assert!(buf.is_empty());
    }
}

//! An HTTP/1.1 client for the suites: hyper over tokio, one connection per request (as
//! a curl user would), and its event streams read through the shared SSE parser of
//! `orchd_testkit` (the blocking client of the `orchd-http` tests feeds the same one).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use orchd_testkit::sse::{Event, Parser};
use tokio::net::TcpStream;

/// How long any single read may take before the suite calls it a hang.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one orchd: its address and the API key it sends, if any.
#[derive(Clone, Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub api_key: Option<String>,
}

/// A whole response.
#[derive(Clone, Debug)]
pub struct Response {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; `Null` when it is empty or not JSON (the contract check says
    /// which, with the body).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    pub fn new(addr: SocketAddr, api_key: Option<&str>) -> Client {
        Client {
            addr,
            api_key: api_key.map(str::to_string),
        }
    }

    /// One request on a fresh connection, the whole response read.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        let head = self.head(method.clone(), path, headers, body).await?;
        let (parts, incoming) = head.into_parts();
        let body = tokio::time::timeout(READ_TIMEOUT, incoming.collect())
            .await
            .map_err(|_| format!("{method} {path}: body not complete in {READ_TIMEOUT:?}"))?
            .map_err(|e| format!("{method} {path}: body: {e}"))?
            .to_bytes();
        Ok(Response {
            method,
            path: path.to_string(),
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Response, String> {
        self.send(Method::GET, path, &[], b"").await
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Response, String> {
        let body = serde_json::to_vec(body).expect("JSON encodes");
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            &body,
        )
        .await
    }

    /// Opens `GET path` and returns once the response head is in: a 200 with an event
    /// stream becomes an [`SseStream`], anything else is read whole.
    pub async fn stream(&self, path: &str, headers: &[(&str, &str)]) -> Result<Opened, String> {
        let head = self.head(Method::GET, path, headers, b"").await?;
        let (parts, incoming) = head.into_parts();
        let is_sse = parts
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if parts.status == StatusCode::OK && is_sse {
            return Ok(Opened::Events(SseStream {
                head: Response {
                    method: Method::GET,
                    path: path.to_string(),
                    status: parts.status,
                    headers: parts.headers,
                    body: Bytes::new(),
                },
                body: incoming,
                parser: Parser::new(),
                done: false,
            }));
        }
        let body = tokio::time::timeout(READ_TIMEOUT, incoming.collect())
            .await
            .map_err(|_| format!("GET {path}: body not complete in {READ_TIMEOUT:?}"))?
            .map_err(|e| format!("GET {path}: body: {e}"))?
            .to_bytes();
        Ok(Opened::Refused(Response {
            method: Method::GET,
            path: path.to_string(),
            status: parts.status,
            headers: parts.headers,
            body,
        }))
    }

    async fn head(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<hyper::Response<Incoming>, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(key) = &self.api_key {
            req = req.header("x-api-key", key.as_str());
        }
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
            req = req.header(name, value);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(READ_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| format!("{method} {path}: no response head in {READ_TIMEOUT:?}"))?
            .map_err(|e| format!("{method} {path}: {e}"))
    }
}

/// What `GET` of a stream gave: the event stream, or a whole other answer (404, ...).
pub enum Opened {
    Events(SseStream),
    Refused(Response),
}

/// An open event stream, parsed as bytes arrive by the shared parser
/// ([`orchd_testkit::sse::Parser`]: frames may span reads and reads may hold many
/// frames).
pub struct SseStream {
    /// The 200 head (status and headers; empty body).
    pub head: Response,
    body: Incoming,
    parser: Parser,
    done: bool,
}

impl SseStream {
    /// The next event, or `None` once the server has closed the stream. Errors when the
    /// server sends nothing for `READ_TIMEOUT`, or a frame the parser refuses.
    pub async fn next(&mut self) -> Result<Option<Event>, String> {
        self.next_within(READ_TIMEOUT).await
    }

    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Event>, String> {
        loop {
            let path = &self.head.path;
            if let Some(ev) = self
                .parser
                .next_event()
                .map_err(|e| format!("stream {path}: {e}"))?
            {
                return Ok(Some(ev));
            }
            if self.done {
                if !self.parser.pending().is_empty() {
                    return Err(format!(
                        "stream {path} ended inside a frame: {:?}",
                        String::from_utf8_lossy(self.parser.pending())
                    ));
                }
                return Ok(None);
            }
            let frame = tokio::time::timeout(limit, self.body.frame())
                .await
                .map_err(|_| format!("stream {path}: nothing for {limit:?}"))?;
            match frame {
                None => self.done = true,
                Some(Err(e)) => return Err(format!("stream {path}: {e}")),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.parser.push(&data);
                    }
                }
            }
        }
    }

    /// Comment lines seen so far (`: hb` heartbeats), without the colon.
    pub fn comments(&self) -> &[String] {
        self.parser.comments()
    }

    /// Every remaining event, up to the server's close.
    pub async fn collect(mut self) -> Result<Vec<Event>, String> {
        let mut out = Vec::new();
        while let Some(ev) = self.next().await? {
            out.push(ev);
        }
        Ok(out)
    }
}

//! Test support: a real orchd on 127.0.0.1:0 and a minimal blocking HTTP/1.1 client
//! that shows the exact bytes on the wire.

#![allow(dead_code)]

pub mod fake_engine;
pub mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use orchd_http::{serve, Config, Server};

/// An in-process orchd, shut down when dropped.
pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start(mut config: Config) -> TestServer {
        config.server.addr = "127.0.0.1:0".parse().unwrap();
        let server = serve(config).expect("orchd starts");
        let addr = server.local_addr();
        TestServer {
            server: Some(server),
            addr,
        }
    }

    /// A config with `shards` shards and everything else default.
    pub fn config(shards: usize) -> Config {
        let mut c = Config::default();
        c.server.shards = shards;
        c
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.client().send("GET", path, headers, b"")
    }

    pub fn shutdown(mut self) {
        self.server
            .take()
            .unwrap()
            .shutdown()
            .expect("clean shutdown");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            reader: BufReader::new(s),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: orchd\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let s = self.reader.get_mut();
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        self.read_response()
    }

    /// Sends only a request head declaring a body of `len` bytes, then reads the answer:
    /// for limits the server applies before reading a body.
    pub fn send_head_only(&mut self, method: &str, path: &str, len: usize) -> Response {
        let req =
            format!("{method} {path} HTTP/1.1\r\nHost: orchd\r\nContent-Length: {len}\r\n\r\n");
        self.reader.get_mut().write_all(req.as_bytes()).unwrap();
        self.read_response()
    }

    /// Reads a status line and headers.
    fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("bad status line {line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        (status, headers)
    }

    /// Reads one response (Content-Length or chunked body).
    pub fn read_response(&mut self) -> Response {
        let (status, headers) = self.read_head();
        let mut line = String::new();
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(n) = resp.header("content-length") {
            let mut body = vec![0; n.parse().unwrap()];
            self.reader.read_exact(&mut body).unwrap();
            resp.body = body;
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                resp.body.extend_from_slice(&chunk[..n]);
            }
        }
        resp
    }
}

/// True if `s` is a lowercase hyphenated UUIDv4.
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && b.iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || c.is_ascii_hexdigit())
}

/// One SSE event as read off the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: u64,
    pub event: String,
    pub data: serde_json::Value,
    /// The exact bytes of the frame, `id:` line to blank line.
    pub raw: String,
}

/// An open `text/event-stream` response, read incrementally (chunked encoding).
pub struct SseReader {
    pub client: Client,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    buf: Vec<u8>,
    pub heartbeats: usize,
    /// Body chunks (of the chunked encoding) read so far.
    pub chunks: usize,
    ended: bool,
}

impl Client {
    /// Sends a GET and returns the stream once the response head is read.
    pub fn open_stream(mut self, path: &str, headers: &[(&str, &str)]) -> SseReader {
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: orchd\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.reader.get_mut().write_all(req.as_bytes()).unwrap();
        let (status, headers) = self.read_head();
        SseReader {
            client: self,
            status,
            headers,
            buf: Vec::new(),
            heartbeats: 0,
            chunks: 0,
            ended: false,
        }
    }
}

impl SseReader {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads one more chunk of the body; false at the end of the body.
    fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let mut line = String::new();
        if self.client.reader.read_line(&mut line).unwrap_or(0) == 0 {
            self.ended = true;
            return false;
        }
        let n = usize::from_str_radix(line.trim(), 16).expect("chunk size");
        let mut chunk = vec![0; n + 2];
        self.client.reader.read_exact(&mut chunk).unwrap();
        if n == 0 {
            self.ended = true;
            return false;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        self.chunks += 1;
        true
    }

    /// The next event (heartbeat comments are counted and skipped); `None` at the end.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let raw = String::from_utf8(raw).unwrap();
                if raw.starts_with(':') {
                    self.heartbeats += 1;
                    continue;
                }
                let mut id = None;
                let mut event = String::new();
                let mut data = String::new();
                for l in raw.lines() {
                    if let Some(v) = l.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = l.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = l.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("bad data {data:?}: {e}"));
                return Some(Event {
                    id: id.expect("every frame has an id"),
                    event,
                    data,
                    raw,
                });
            }
            if !self.fill() {
                assert!(
                    self.buf.is_empty(),
                    "stream ended inside a frame: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        }
    }

    /// Every remaining event, to the end of the stream.
    pub fn collect(mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = self.next_event() {
            out.push(e);
        }
        out
    }
}

/// A task request body with the given ids and overrides merged in.
pub fn task_body(task: &str, session: &str, extra: serde_json::Value) -> Vec<u8> {
    let mut v = serde_json::json!({
        "task_id": task, "session_id": session, "workload": "completion", "model_ref": "m",
        "engine": "llamacpp", "ctx": 4096, "priority": "interactive", "max_tokens": 8,
        "deadline_ms": 60000, "prompt": "hello", "seed": 7
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::to_vec(&v).unwrap()
}

/// A fresh random UUID string.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One request on a fresh connection; `None` when the server is not there (refused,
/// reset, or closed before answering), as during a crash.
pub fn try_send(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<Response> {
    std::panic::catch_unwind(|| Client::connect(addr).send(method, path, &[], body)).ok()
}

/// Submits a task (task_body with `extra`), asserts the 202, and streams it to its end.
pub fn submit_and_stream(addr: SocketAddr, extra: serde_json::Value) -> Vec<Event> {
    let task = uuid();
    let r = Client::connect(addr).send("POST", "/v1/tasks", &[], &task_body(&task, &uuid(), extra));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    Client::connect(addr)
        .open_stream(&format!("/v1/tasks/{task}/stream"), &[])
        .collect()
}

//! A minimal blocking HTTP/1.1 client on `std::net` that shows the exact bytes on the
//! wire, its Server-Sent Events reader, and the steps every data-plane test takes:
//! [`submit`] a task, [`stream`] it to its end (held to the frame rules), or both
//! ([`submit_and_stream`]); [`open_stream`] to read part of one, [`cancel`] it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::frames::assert_well_formed;
use crate::sse::{Event, Parser};
use crate::task::{task_body, uuid};

/// How long any single read may take before the test calls it a hang.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A whole response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(s),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    fn write_head(&mut self, method: &str, path: &str, headers: &[(&str, &str)], extra: &str) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: orchd\r\n{extra}");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.reader.get_mut().write_all(req.as_bytes()).unwrap();
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let length = if !body.is_empty() || method == "POST" {
            format!("Content-Length: {}\r\n", body.len())
        } else {
            String::new()
        };
        self.write_head(method, path, headers, &length);
        self.reader.get_mut().write_all(body).unwrap();
        self.read_response()
    }

    /// Sends only a request head declaring a body of `len` bytes, then reads the answer:
    /// for limits the server applies before reading a body.
    pub fn send_head_only(&mut self, method: &str, path: &str, len: usize) -> Response {
        self.write_head(method, path, &[], &format!("Content-Length: {len}\r\n"));
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

    /// One chunk of a chunked body; `None` after the last (empty) chunk, and at EOF
    /// when `eof_ok` (a stream the server stopped writing), else EOF panics.
    fn read_chunk(&mut self, eof_ok: bool) -> Option<Vec<u8>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
            assert!(eof_ok, "the connection closed inside a chunked body");
            return None;
        }
        let n = usize::from_str_radix(line.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        let mut chunk = vec![0; n + 2];
        self.reader.read_exact(&mut chunk).unwrap();
        chunk.truncate(n);
        (n > 0).then_some(chunk)
    }

    /// Reads one response (Content-Length or chunked body).
    pub fn read_response(&mut self) -> Response {
        let (status, headers) = self.read_head();
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
            while let Some(chunk) = self.read_chunk(false) {
                resp.body.extend_from_slice(&chunk);
            }
        }
        resp
    }

    /// Sends a GET and returns the stream once the response head is read.
    pub fn open_stream(self, path: &str, headers: &[(&str, &str)]) -> SseReader {
        self.open_stream_with("GET", path, headers, b"")
    }

    /// Sends a request (a POST of the OpenAI routes) and returns its response as a
    /// stream once the head is read.
    pub fn open_stream_with(
        mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> SseReader {
        let extra = if method == "GET" {
            "Accept: text/event-stream\r\n".to_string()
        } else {
            format!(
                "Accept: text/event-stream\r\nContent-Length: {}\r\n",
                body.len()
            )
        };
        self.write_head(method, path, headers, &extra);
        self.reader.get_mut().write_all(body).unwrap();
        let (status, headers) = self.read_head();
        SseReader {
            client: self,
            status,
            headers,
            parser: Parser::new(),
            chunks: 0,
            ended: false,
        }
    }
}

/// An open `text/event-stream` response, read incrementally (chunked encoding) through
/// [`Parser`]. A frame that breaks the parser's rules panics.
pub struct SseReader {
    pub client: Client,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    parser: Parser,
    /// Body chunks (of the chunked encoding) read so far.
    pub chunks: usize,
    ended: bool,
}

impl SseReader {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// `: hb` comments read so far.
    pub fn heartbeats(&self) -> usize {
        self.parser.heartbeats()
    }

    /// Comment lines read so far, without the colon and leading spaces.
    pub fn comments(&self) -> &[String] {
        self.parser.comments()
    }

    /// Reads one more chunk of the body; false at the end of the body.
    fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match self.client.read_chunk(true) {
            Some(chunk) => {
                self.parser.push(&chunk);
                self.chunks += 1;
                true
            }
            None => {
                self.ended = true;
                false
            }
        }
    }

    /// The next event (comments are kept aside); `None` at the end of the stream.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.parser.next_event().unwrap_or_else(|e| panic!("{e}")) {
                return Some(e);
            }
            if !self.fill() {
                assert!(
                    self.parser.pending().is_empty(),
                    "stream ended inside a frame: {:?}",
                    String::from_utf8_lossy(self.parser.pending())
                );
                return None;
            }
        }
    }

    /// The frames up to and including the first `event` frame; panics if the stream
    /// ends before one.
    pub fn read_until(&mut self, event: &str) -> Vec<Event> {
        let mut read = Vec::new();
        loop {
            let e = self
                .next_event()
                .unwrap_or_else(|| panic!("the stream ended before a {event} frame: {read:?}"));
            let found = e.event == event;
            read.push(e);
            if found {
                return read;
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

/// One request on a fresh connection; `None` when the server is not there (refused,
/// reset, or closed before answering), as during a crash.
pub fn try_send(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<Response> {
    std::panic::catch_unwind(|| Client::connect(addr).send(method, path, &[], body)).ok()
}

/// `POST /v1/tasks` with `body` (JSON, or anything a test wants refused) on a fresh
/// connection, with `headers` (an API key, say).
pub fn submit(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    Client::connect(addr).send("POST", "/v1/tasks", &h, body)
}

/// `POST /v1/tasks/{task}/cancel` on a fresh connection.
pub fn cancel(addr: SocketAddr, task: &str) -> Response {
    Client::connect(addr).send("POST", &format!("/v1/tasks/{task}/cancel"), &[], b"")
}

/// Opens the stream of `task` on a fresh connection, to be read as far as a test likes
/// (or resumed, with a `Last-Event-ID` in `headers`).
pub fn open_stream(addr: SocketAddr, headers: &[(&str, &str)], task: &str) -> SseReader {
    Client::connect(addr).open_stream(&format!("/v1/tasks/{task}/stream"), headers)
}

/// Streams `task` from frame 0 to the server's close on a fresh connection: a `200`
/// `text/event-stream`, and frames that keep the rules ([`assert_well_formed`]).
pub fn stream(addr: SocketAddr, headers: &[(&str, &str)], task: &str) -> Vec<Event> {
    let r = open_stream(addr, headers, task);
    assert_eq!(r.status, 200, "GET the stream of {task}");
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let frames = r.collect();
    assert_well_formed(&frames);
    frames
}

/// Submits a new task (the defaults of [`crate::task_request`] with `extra`), asserts
/// the `202`, and [`stream`]s it: its id and frames.
pub fn submit_and_stream(addr: SocketAddr, extra: Value) -> (String, Vec<Event>) {
    let task = uuid();
    let r = submit(addr, &[], &task_body(&task, &uuid(), extra));
    assert_eq!(r.status, 202, "{}", r.text());
    let frames = stream(addr, &[], &task);
    (task, frames)
}

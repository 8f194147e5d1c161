//! An in-test engine speaking the streaming wire formats of an OpenAI-compatible server
//! (`POST /v1/completions`) and of llama.cpp's server (`POST /completion`) byte for
//! byte: chunked `text/event-stream`, one `data: {json}` event per token, events split
//! across TCP writes, keep-alive, `data: [DONE]` (OpenAI), plus the faults a real
//! engine shows: refusing, dying mid-stream, stalling, sending garbage, 5xx, 4xx.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Normal,
    /// Close the connection after this many tokens.
    DieAfter(usize),
    /// Send this many tokens, then nothing (connection held open).
    StallAfter(usize),
    /// Send one event that is not JSON.
    Garbage,
    /// Answer with this status and a JSON error body.
    Status(u16),
    /// Stream normally, then close the connection soon after each streamed answer,
    /// whatever keep-alive said (llama.cpp's server does).
    CloseAfterAnswer,
}

/// A request as the engine saw it: method, path, headers (lowercase names), body.
pub type Seen = (String, String, Vec<(String, String)>, String);

#[derive(Default)]
pub struct Log {
    pub requests: Vec<Seen>,
}

pub struct FakeEngine {
    pub addr: SocketAddr,
    pub mode: Arc<Mutex<Mode>>,
    /// Time between tokens.
    pub tpot: Arc<Mutex<Duration>>,
    pub log: Arc<Mutex<Log>>,
    pub connections: Arc<AtomicUsize>,
    /// Set when a client closed the connection while tokens were still being sent.
    pub client_went_away: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl FakeEngine {
    pub fn start() -> FakeEngine {
        FakeEngine::start_on(0)
    }

    /// Listens on a given loopback port (0 = any).
    pub fn start_on(port: u16) -> FakeEngine {
        FakeEngine::start_at(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Listens on `addr` (another loopback address: one engine per address, as one
    /// per host).
    pub fn start_at(addr: SocketAddr) -> FakeEngine {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let e = FakeEngine {
            addr,
            mode: Arc::new(Mutex::new(Mode::Normal)),
            tpot: Arc::new(Mutex::new(Duration::from_millis(1))),
            log: Arc::new(Mutex::new(Log::default())),
            connections: Arc::new(AtomicUsize::new(0)),
            client_went_away: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, tpot, log, conns, gone, stop) = (
            e.mode.clone(),
            e.tpot.clone(),
            e.log.clone(),
            e.connections.clone(),
            e.client_went_away.clone(),
            e.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        conns.fetch_add(1, Ordering::Relaxed);
                        let (mode, tpot, log, gone, stop) = (
                            mode.clone(),
                            tpot.clone(),
                            log.clone(),
                            gone.clone(),
                            stop.clone(),
                        );
                        std::thread::spawn(move || serve(s, mode, tpot, log, gone, stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        e
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn set_tpot(&self, d: Duration) {
        *self.tpot.lock().unwrap() = d;
    }

    /// Generation requests received (method, path, headers, body).
    pub fn generations(&self) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.0 == "POST")
            .cloned()
            .collect()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The text of token `i` of every stream the engine sends.
pub fn token(i: usize) -> String {
    format!(" tok{i}")
}

fn serve(
    s: TcpStream,
    mode: Arc<Mutex<Mode>>,
    tpot: Arc<Mutex<Duration>>,
    log: Arc<Mutex<Log>>,
    gone: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    s.set_nodelay(true).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut line = String::new();
        // A dropped engine is gone: a request on a connection it kept alive finds it
        // closed, as a dead server's would be.
        if r.read_line(&mut line).unwrap_or(0) == 0 || stop.load(Ordering::Relaxed) {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        let mut len = 0;
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let body = String::from_utf8(body).unwrap();
        log.lock()
            .unwrap()
            .requests
            .push((method.clone(), path.clone(), headers, body.clone()));
        let m = *mode.lock().unwrap();
        let ok = match (method.as_str(), path.as_str()) {
            ("GET", "/health") => plain(&mut w, 200, r#"{"status":"ok"}"#),
            ("GET", "/v1/models") => plain(
                &mut w,
                200,
                r#"{"object":"list","data":[{"id":"fake","object":"model","owned_by":"fake"}]}"#,
            ),
            ("POST", "/v1/completions") | ("POST", "/completion") => {
                let openai = path == "/v1/completions";
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let n = v[if openai { "max_tokens" } else { "n_predict" }]
                    .as_u64()
                    .unwrap() as usize;
                let d = *tpot.lock().unwrap();
                let ok = stream(&mut w, openai, n, m, d, &gone);
                if m == Mode::CloseAfterAnswer {
                    // Closed a little after the answer, as a loaded server does: the
                    // client has taken the connection back for its next request.
                    std::thread::sleep(Duration::from_millis(50));
                    return;
                }
                ok
            }
            _ => plain(&mut w, 404, r#"{"error":"not found"}"#),
        };
        if !ok {
            return;
        }
    }
}

fn plain(w: &mut TcpStream, status: u16, body: &str) -> bool {
    let reason = if status == 200 { "OK" } else { "Error" };
    let head = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
    w.write_all(head.as_bytes()).is_ok() && w.write_all(body.as_bytes()).is_ok()
}

/// Writes one chunk of a chunked body, split in two TCP writes at an odd place.
fn chunk(w: &mut TcpStream, data: &[u8]) -> bool {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    let cut = c.len() / 3;
    let a = w.write_all(&c[..cut]).and_then(|_| w.flush());
    std::thread::sleep(Duration::from_micros(200));
    a.is_ok() && w.write_all(&c[cut..]).is_ok()
}

fn stream(
    w: &mut TcpStream,
    openai: bool,
    n: usize,
    mode: Mode,
    tpot: Duration,
    gone: &AtomicBool,
) -> bool {
    if let Mode::Status(code) = mode {
        let body = format!(
            r#"{{"error":{{"code":{code},"message":"fake failure","type":"server_error"}}}}"#
        );
        return plain(w, code, &body);
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for i in 0..n {
        match mode {
            Mode::DieAfter(k) if i == k => return false,
            Mode::StallAfter(k) if i == k => {
                std::thread::sleep(Duration::from_secs(10));
                return false;
            }
            Mode::Garbage if i == 1 => {
                let _ = chunk(w, b"data: {\"choices\": [ this is not json\n\n");
                continue;
            }
            _ => {}
        }
        let t = token(i);
        let event = if openai {
            format!(
                "data: {{\"id\":\"cmpl-fake\",\"object\":\"text_completion\",\"created\":1,\"model\":\"fake\",\"choices\":[{{\"text\":{},\"index\":0,\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
                serde_json::to_string(&t).unwrap()
            )
        } else {
            format!(
                "data: {{\"content\":{},\"tokens\":[{}],\"stop\":false,\"id_slot\":0}}\n\n",
                serde_json::to_string(&t).unwrap(),
                100 + i
            )
        };
        if !chunk(w, event.as_bytes()) {
            gone.store(true, Ordering::Relaxed);
            return false;
        }
        std::thread::sleep(tpot);
    }
    let last = if openai {
        format!("data: {{\"id\":\"cmpl-fake\",\"object\":\"text_completion\",\"created\":1,\"model\":\"fake\",\"choices\":[{{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}}],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n", n + 1)
    } else {
        format!("data: {{\"content\":\"\",\"stop\":true,\"stop_type\":\"limit\",\"tokens_predicted\":{n},\"timings\":{{}}}}\n\n")
    };
    chunk(w, last.as_bytes()) && w.write_all(b"0\r\n\r\n").is_ok()
}

//! Slow and hostile clients (issue 9): clients that never read, trickle their headers,
//! send oversized heads, half-close, or hold thousands of idle connections. Other
//! clients keep being served, the limits hold, no shard stalls.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use orchd_testkit::{submit, submit_and_stream, task_body, tokens, uuid, wait_until, Client};
use serde_json::json;
use support::process::{start_ready_with, temp_file, wait_bounded, KillOnDrop};
use support::TestServer;

fn config(toml: &str) -> orchd_http::Config {
    orchd_http::Config::from_toml_str(toml).unwrap()
}

/// Streams one task to its end (held to the frame rules): every token, then `end`.
fn stream_whole(addr: SocketAddr, max_tokens: u64) {
    let (_, events) = submit_and_stream(addr, json!({"max_tokens": max_tokens, "engine": "vllm"}));
    assert_eq!(tokens(&events).len() as u64, max_tokens);
    assert_eq!(events.last().unwrap().event, "end");
}

/// One answer on a raw socket: its head and `Content-Length` body, or whatever came
/// before the server closed, reset, or `limit` passed.
fn read_answer(s: &mut TcpStream, limit: Duration) -> String {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            // glommio's threads in this process take signals; a read may be interrupted.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| out.len() >= end + 4 + n) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_thousand_clients_that_never_read_do_not_hold_up_others() {
    let s = TestServer::start(config(
        "[server]\nshards = 2\n\
         [[pools]]\nid = \"bulk\"\nslots = 1000\nqueue_capacity = 16\n[pools.adapter]\nttft_ms = 0\ntpot_ms = 2\n\
         [[pools]]\nid = \"ref\"\nengine = \"vllm\"\n[pools.adapter]\nttft_ms = 0\ntpot_ms = 5\n",
    ));
    let mut stuck = Vec::new();
    for _ in 0..1000 {
        let task = uuid();
        let body = task_body(&task, &uuid(), json!({"max_tokens": 400}));
        assert_eq!(submit(s.addr, &[], &body).status, 202);
        let mut c = TcpStream::connect(s.addr).unwrap();
        write!(
            c,
            "GET /v1/tasks/{task}/stream HTTP/1.1\r\nHost: orchd\r\n\r\n"
        )
        .unwrap();
        stuck.push(c); // never read
    }
    // Meanwhile a client that reads gets every token of its own stream, in order.
    stream_whole(s.addr, 200);
    // And the server still answers everything else.
    assert_eq!(s.get("/v1/pools/bulk/health", &[]).status, 200);
    drop(stuck);
}

#[test]
fn trickled_headers_are_cut_off_while_others_are_served() {
    let s = TestServer::start(config(
        "[server]\nshards = 2\nheader_read_timeout_ms = 300\n",
    ));
    let mut tricklers: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    let head = b"GET /v1/capabilities HTTP/1.1\r\nHost: orchd\r\nX-Slow: ";
    let t = Instant::now();
    let mut cut = 0;
    'trickle: for i in 0..head.len() {
        for c in tricklers.iter_mut() {
            if c.write_all(&head[i..i + 1]).is_err() {
                cut += 1;
            }
        }
        // Served meanwhile, promptly enough to be a live server (not a timing claim).
        assert_eq!(s.get("/livez", &[]).status, 200);
        std::thread::sleep(Duration::from_millis(20));
        if t.elapsed() > Duration::from_secs(2) {
            break 'trickle;
        }
    }
    // Every trickler is closed by the server: reading gives EOF (or a reset).
    for c in tricklers.iter_mut() {
        let answer = read_answer(c, Duration::from_secs(3));
        assert!(
            !answer.starts_with("HTTP/1.1 200"),
            "a trickler was served: {answer}"
        );
    }
    let _ = cut;
    let m = s.get("/metrics", &[]).body;
    assert!(String::from_utf8_lossy(&m).contains("connections_open{shard=\"0\"}"));
}

#[test]
fn oversized_heads_get_431_and_oversized_bodies_413() {
    let s = TestServer::start(config("[server]\nshards = 1\nmax_header_bytes = 16384\n"));
    let mut c = TcpStream::connect(s.addr).unwrap();
    let big = "x".repeat(64 * 1024);
    write!(
        c,
        "GET /v1/capabilities HTTP/1.1\r\nHost: orchd\r\nX-Big: {big}\r\n\r\n"
    )
    .unwrap_or(());
    let answer = read_answer(&mut c, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A head just under the limit is fine.
    let fits = "y".repeat(8 * 1024);
    let r = Client::connect(s.addr).send("GET", "/v1/capabilities", &[("X-Fits", &fits)], b"");
    assert_eq!(r.status, 200);
    let r = Client::connect(s.addr).send_head_only("POST", "/v1/tasks", 2 * 1024 * 1024);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["code"], "INVALID_PARAMS");
}

#[test]
fn half_closed_clients_get_their_answer_and_their_connection_back() {
    let s = TestServer::start(config(
        "[server]\nshards = 2\n[[pools]]\nid = \"p\"\n[pools.adapter]\nttft_ms = 0\ntpot_ms = 1\n",
    ));
    let task = uuid();
    let body = task_body(&task, &uuid(), json!({"max_tokens": 20}));
    assert_eq!(submit(s.addr, &[], &body).status, 202);
    for path in [
        "/v1/capabilities".to_string(),
        format!("/v1/tasks/{task}/stream"),
    ] {
        let mut c = TcpStream::connect(s.addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: orchd\r\n\r\n").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut all = String::new();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.read_to_string(&mut all).unwrap();
        assert!(all.starts_with("HTTP/1.1 200"), "{path}: {all}");
        if path.ends_with("stream") {
            assert!(all.contains("event: end"), "{all}");
        }
    }
    // Both connections are gone from the server's books.
    wait_until(
        Duration::from_secs(5),
        "both connections to be closed",
        || {
            let m = String::from_utf8(s.get("/metrics", &[]).body).unwrap();
            let open: u64 = m
                .lines()
                .filter(|l| l.starts_with("connections_open{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum();
            // The scrape's own connection is open.
            match open <= 1 {
                true => Ok(()),
                false => Err(format!("{open} connections open")),
            }
        },
    );
}

#[test]
fn the_connection_limit_holds_and_refusals_are_well_formed() {
    let s = TestServer::start(config("[server]\nshards = 2\nmax_connections = 64\n"));
    // Clients as they come: connect, ask, read; a served connection stays open (idle
    // keep-alive), so the limit fills up.
    let mut conns = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..200 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        let _ = c.write_all(b"GET /livez HTTP/1.1\r\nHost: orchd\r\n\r\n");
        let answer = read_answer(&mut c, Duration::from_secs(3));
        if answer.starts_with("HTTP/1.1 200") {
            served += 1;
            conns.push(c);
        } else {
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            let lower = answer.to_ascii_lowercase();
            assert!(lower.contains("retry-after: 1\r\n"), "{answer}");
            assert!(lower.contains("x-backoff-ms: 1000\r\n"), "{answer}");
            assert!(lower.contains("x-correlation-id: "), "{answer}");
            assert!(
                answer.contains("\"code\":\"REPLICA_EXHAUSTED\""),
                "{answer}"
            );
            assert!(answer.contains("\"retry_after_ms\":1000"), "{answer}");
            refused += 1;
        }
    }
    assert!(
        served <= 64,
        "{served} connections served over a limit of 64"
    );
    assert!(refused >= 200 - 64, "{refused} refused");
    drop(conns);
    // Once they are closed, new connections are served again.
    wait_until(
        Duration::from_secs(5),
        "new connections to be served",
        || {
            let status = s.client().send("GET", "/livez", &[], b"").status;
            match status {
                200 => Ok(()),
                other => Err(format!("status {other}")),
            }
        },
    );
}

/// `n` answers in a row on a raw socket (each a head and its `Content-Length` body),
/// however the reads split them; fewer if the server closes or `limit` passes.
fn read_answers(s: &mut TcpStream, n: usize, limit: Duration) -> Vec<String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = |out: &[u8]| {
        let mut answers = Vec::new();
        let mut rest = out;
        while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if rest.len() < end + 4 + length {
                break;
            }
            answers.push(String::from_utf8_lossy(&rest[..end + 4 + length]).into_owned());
            rest = &rest[end + 4 + length..];
        }
        answers
    };
    loop {
        let answers = complete(&out);
        if answers.len() >= n {
            return answers;
        }
        match s.read(&mut buf) {
            Ok(0) => return answers,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return answers,
            Ok(k) => out.extend_from_slice(&buf[..k]),
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_idle_keep_alive_connections_cost_little_and_block_nothing() {
    let cfg = temp_file(
        "idle10k",
        "[server]\nmax_connections = 12000\nheader_read_timeout_ms = 60000\n\
         [[pools]]\nid = \"p\"\nengine = \"vllm\"\n[pools.adapter]\nttft_ms = 0\ntpot_ms = 1\n",
    );
    let args = [std::ffi::OsStr::new("--config"), cfg.as_os_str()];
    let (child, addr, _log) = start_ready_with(&[], &args);
    let mut child = KillOnDrop(child);
    let addr: SocketAddr = addr.parse().unwrap();
    let before = rss_kib(child.0.id());
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let mut c = Client::connect(addr);
        assert_eq!(c.send("GET", "/livez", &[], b"").status, 200);
        idle.push(c); // kept alive, idle
    }
    let after = rss_kib(child.0.id());
    let per_conn = (after.saturating_sub(before)) * 1024 / 10_000;
    eprintln!(
        "10,000 idle keep-alive connections: RSS {before} KiB -> {after} KiB, {per_conn} B each"
    );
    assert!(
        per_conn < 16 * 1024,
        "{per_conn} bytes of RSS per idle connection"
    );
    // New clients are served, streams run whole.
    stream_whole(addr, 100);
    drop(idle);
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(
        wait_bounded(&mut child.0, Duration::from_secs(20)).code(),
        Some(0)
    );
}

/// A connection's reads start small and grow (orchd_shards::rt::Conn): a body far
/// larger than the first read window arrives whole, and a request pipelined behind it
/// in the same write is answered after it, on the same connection.
#[test]
fn a_large_body_and_a_request_pipelined_behind_it_are_both_served() {
    let s = TestServer::start(config("[server]\nshards = 1\n"));
    let pad = "z".repeat(600 * 1024);
    let body = json!({"kind": "other", "content": {"pad": pad}}).to_string();
    let mut c = TcpStream::connect(s.addr).unwrap();
    let mut bytes = format!(
        "POST /v1/artifacts HTTP/1.1\r\nHost: orchd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(b"GET /v1/capabilities HTTP/1.1\r\nHost: orchd\r\n\r\n");
    c.write_all(&bytes).unwrap();
    // Both answers may come in one read: split them by their Content-Length.
    let both = read_answers(&mut c, 2, Duration::from_secs(5));
    assert_eq!(both.len(), 2, "{both:?}");
    let (first, second) = (&both[0], &both[1]);
    assert!(first.starts_with("HTTP/1.1 201"), "{first}");
    let id = first
        .split("\"id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an artifact id")
        .to_string();
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("\"api_version\""), "{second}");
    let stored = s.get(&format!("/v1/artifacts/{id}"), &[]);
    assert_eq!(stored.status, 200);
    assert_eq!(
        stored.json()["content"]["pad"].as_str().map(str::len),
        Some(pad.len())
    );
}

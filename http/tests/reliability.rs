//! Reliability and security of the `orchd` process (issue 9): secrets never leak,
//! acknowledged artifacts survive `kill -9` under load, SIGTERM under load ends every
//! stream with a terminal frame and persists its transcript.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchd_testkit::fake_engine::{FakeEngine, Mode};
use orchd_testkit::{
    assert_well_formed, open_stream, stream, submit, task_body, try_send, uuid, Client,
};
use serde_json::json;
use support::process::{fresh_dir, start_ready_with, temp_file, wait_bounded, KillOnDrop};

fn sigterm(child: &std::process::Child) {
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

fn sigkill(child: &std::process::Child) {
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
}

#[test]
fn api_keys_never_reach_logs_metrics_artifacts_or_answers() {
    const CLIENT_KEYS: [&str; 2] = ["k-alpha-7f3e0c", "k-beta-91c2d4"];
    const WRONG_KEY: &str = "k-wrong-33440f";
    const UPSTREAM_KEY: &str = "sk-upstream-5aa5e1";
    let engine = FakeEngine::start();
    let cfg = temp_file(
        "secrets",
        &format!(
            "[[pools]]\nid = \"mock\"\n[pools.adapter]\nttft_ms = 0\ntpot_ms = 0\n\
             [[pools]]\nid = \"real\"\nengine = \"vllm\"\n[pools.adapter]\nkind = \"openai\"\n\
             url = \"{}\"\napi_key = \"{UPSTREAM_KEY}\"\n",
            engine.url()
        ),
    );
    // Trace level: the most a log can say.
    let args = [std::ffi::OsStr::new("--config"), cfg.as_os_str()];
    let (child, addr, mut log) = start_ready_with(
        &[
            ("ORCHD_API_KEYS", &CLIENT_KEYS.join(",")),
            ("ORCHD_LOG", "trace"),
        ],
        &args,
    );
    let mut child = KillOnDrop(child);
    // Drain the log while the traffic runs, so a full pipe never blocks orchd.
    let log_text = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log_text = log_text.clone();
        std::thread::spawn(move || {
            let mut all = String::new();
            let _ = std::io::Read::read_to_string(&mut log, &mut all);
            log_text.lock().unwrap().push_str(&all);
        })
    };
    let addr: SocketAddr = addr.parse().unwrap();
    let mut seen = String::new(); // every answer: status line, headers, body
    let mut keep = |r: &orchd_testkit::Response| {
        seen.push_str(&format!(
            "{} {:?} {}\n",
            r.status,
            r.headers,
            String::from_utf8_lossy(&r.body)
        ));
    };
    let key = |k: &'static str| [("X-API-Key", k)];
    let mut transcripts = Vec::new();
    for (i, engine_name) in ["llamacpp", "vllm", "llamacpp", "vllm"].iter().enumerate() {
        let task = uuid();
        let body = task_body(
            &task,
            &uuid(),
            json!({"engine": engine_name, "max_tokens": 4}),
        );
        let r = submit(addr, &key(CLIENT_KEYS[i % 2]), &body);
        keep(&r);
        assert_eq!(r.status, 202, "{}", r.text());
        let events = stream(addr, &key(CLIENT_KEYS[0]), &task);
        let last = events.last().expect("frames");
        assert_eq!(last.event, "end", "{:?}", last.data);
        transcripts.push(last.data["transcript_id"].as_str().unwrap().to_string());
    }
    // Refusals and errors, each with a key in hand.
    for (k, path, body) in [
        (WRONG_KEY, "/v1/capabilities", &b""[..]),
        (CLIENT_KEYS[0], "/v1/tasks", &b"{not json"[..]),
        (CLIENT_KEYS[1], "/v1/pools/nope/health", &b""[..]),
        (
            CLIENT_KEYS[0],
            "/v1/artifacts",
            br#"{"kind":"plan","content":{"k":1}}"#,
        ),
    ] {
        let method = if body.is_empty() { "GET" } else { "POST" };
        keep(&Client::connect(addr).send(method, path, &key(k), body));
    }
    keep(&Client::connect(addr).send("GET", "/v1/capabilities", &[("X-API-Key", "")], b""));
    // Correlation ids are logged only when sane (1 to 128 visible ASCII characters);
    // anything else is replaced by a generated one, in the answer and in the log.
    let long_cid = "c".repeat(300);
    let r = Client::connect(addr).send(
        "POST",
        "/v1/tasks",
        &[
            ("X-API-Key", CLIENT_KEYS[0]),
            ("X-Correlation-Id", &long_cid),
        ],
        b"{}",
    );
    assert_ne!(r.header("x-correlation-id"), Some(long_cid.as_str()));
    // The upstream fails with its own error body: what orchd says of it must not carry
    // the key it sent upstream.
    engine.set_mode(Mode::Status(401));
    let task = uuid();
    let body = task_body(&task, &uuid(), json!({"engine": "vllm"}));
    keep(&submit(addr, &key(CLIENT_KEYS[0]), &body));
    let events = stream(addr, &key(CLIENT_KEYS[0]), &task);
    for e in &events {
        seen.push_str(&format!("{} {}\n", e.event, e.data));
    }
    let metrics = Client::connect(addr).send("GET", "/metrics", &[], b"");
    seen.push_str(&String::from_utf8_lossy(&metrics.body));
    for id in &transcripts {
        let r = Client::connect(addr).send(
            "GET",
            &format!("/v1/artifacts/{id}"),
            &key(CLIENT_KEYS[1]),
            b"",
        );
        assert_eq!(r.status, 200);
        seen.push_str(&String::from_utf8_lossy(&r.body));
    }
    // The engine did receive the upstream key: the test would see a leak if one happened.
    let sent_upstream = engine
        .generations()
        .iter()
        .any(|(_, _, headers, _)| headers.iter().any(|(_, v)| v.contains(UPSTREAM_KEY)));
    assert!(sent_upstream, "the upstream key was never sent");

    sigterm(&child.0);
    assert_eq!(
        wait_bounded(&mut child.0, Duration::from_secs(15)).code(),
        Some(0)
    );
    reader.join().unwrap();
    let log = log_text.lock().unwrap().clone();
    assert!(log.lines().count() > 20, "a trace log has lines: {log}");
    assert!(
        !log.contains(&long_cid),
        "an oversized correlation id reached the log"
    );
    for secret in CLIENT_KEYS.iter().chain([&WRONG_KEY, &UPSTREAM_KEY]) {
        assert!(!log.contains(secret), "{secret} reached the log");
        assert!(
            !seen.contains(secret),
            "{secret} reached an answer, metrics or an artifact"
        );
    }
}

#[test]
fn acknowledged_artifacts_survive_kill_9_under_load() {
    let dir = fresh_dir("kill9-load");
    let cfg = temp_file(
        "kill9-load",
        &format!(
            "[artifacts]\nbackend = \"fs\"\ndir = {:?}\n[[pools]]\nid = \"p\"\n\
             [pools.adapter]\nttft_ms = 0\ntpot_ms = 1\n",
            dir.to_str().unwrap()
        ),
    );
    let args = [std::ffi::OsStr::new("--config"), cfg.as_os_str()];
    let (child, addr, _err) = start_ready_with(&[], &args);
    let mut child = KillOnDrop(child);
    let addr: SocketAddr = addr.parse().unwrap();

    // Writers store artifacts and stream tasks (whose transcripts are written too) until
    // the kill; every artifact answered 201 is recorded.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, killed) = (acked.clone(), killed.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !killed.load(Ordering::Relaxed) {
                    let body = json!({"kind": "other", "content": {"w": w, "i": i, "pad": "z".repeat(2000)}});
                    let Some(r) = try_send(addr, "POST", "/v1/artifacts", &serde_json::to_vec(&body).unwrap()) else {
                        break; // the server is gone
                    };
                    if r.status == 201 {
                        acked.lock().unwrap().push((r.json()["id"].as_str().unwrap().to_string(), body["content"].clone()));
                    }
                    if w == 0 {
                        let task = uuid();
                        let _ = try_send(addr, "POST", "/v1/tasks", &task_body(&task, &uuid(), json!({"max_tokens": 16})));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    sigkill(&child.0);
    let _ = child.0.wait();
    killed.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "only {} artifacts acknowledged before the kill",
        acked.len()
    );

    let (child, addr, _err) = start_ready_with(&[], &args);
    let mut child = KillOnDrop(child);
    let addr: SocketAddr = addr.parse().unwrap();
    let mut client = Client::connect(addr);
    for (id, content) in &acked {
        // orchd checks every file against its id when reading (500 if they differ).
        let r = client.send("GET", &format!("/v1/artifacts/{id}"), &[], b"");
        assert_eq!(r.status, 200, "{id} lost after kill -9");
        assert_eq!(&r.json()["content"], content);
    }
    sigterm(&child.0);
    assert_eq!(
        wait_bounded(&mut child.0, Duration::from_secs(15)).code(),
        Some(0)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_under_load_ends_every_stream_and_persists_every_transcript() {
    let dir = fresh_dir("sigterm-load");
    let cfg = temp_file(
        "sigterm-load",
        &format!(
            "[server]\nshutdown_grace_ms = 500\n[artifacts]\nbackend = \"fs\"\ndir = {:?}\n\
             [[pools]]\nid = \"p\"\nslots = 16\n[pools.adapter]\nttft_ms = 0\ntpot_ms = 10\n",
            dir.to_str().unwrap()
        ),
    );
    let args = [std::ffi::OsStr::new("--config"), cfg.as_os_str()];
    let (child, addr, _err) = start_ready_with(&[], &args);
    let mut child = KillOnDrop(child);
    let addr: SocketAddr = addr.parse().unwrap();
    // 16 streams: short ones finish within the grace period, long ones do not.
    let mut streams = Vec::new();
    for i in 0..16 {
        let task = uuid();
        let max_tokens = if i % 2 == 0 { 20 } else { 3000 };
        let body = task_body(
            &task,
            &uuid(),
            json!({"max_tokens": max_tokens, "deadline_ms": 600000}),
        );
        assert_eq!(submit(addr, &[], &body).status, 202);
        let mut s = open_stream(addr, &[], &task);
        let started = s.next_event().unwrap();
        assert_eq!(started.event, "started");
        streams.push((started, s));
    }
    sigterm(&child.0);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|(started, s)| {
            std::thread::spawn(move || {
                let mut all = vec![started];
                all.extend(s.collect());
                all
            })
        })
        .collect();
    let mut ended = 0;
    for r in readers {
        let events = r.join().unwrap();
        assert_well_formed(&events);
        let last = events.last().expect("a terminal frame");
        match last.event.as_str() {
            "end" => ended += 1,
            _ => assert_eq!(last.data["code"], "POOL_UNAVAILABLE"),
        }
    }
    assert_eq!(
        wait_bounded(&mut child.0, Duration::from_secs(15)).code(),
        Some(0)
    );
    assert!(
        ended >= 1,
        "no short stream finished within the grace period"
    );
    // One trace artifact per task, on disk.
    let traces = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .filter(|b| {
            serde_json::from_slice::<serde_json::Value>(b).is_ok_and(|v| v["kind"] == "trace")
        })
        .count();
    assert_eq!(traces, 16, "transcripts persisted");
    std::fs::remove_dir_all(&dir).unwrap();
}

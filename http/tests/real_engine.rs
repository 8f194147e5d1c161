//! The HTTP adapters against a real llama.cpp server (built from PyPI by
//! `../shared/tools/real-engine/setup.sh`, tiny random model). They need that server:
//! each is `#[ignore]`d, and `.ci/run` starts the engine, sets `ORCHD_REAL_ENGINE_URL`
//! and runs them with `cargo test -p orchd-http --test real_engine -- --ignored`. The
//! replica-set test (issue 20) starts three servers of its own from the same binary
//! and model (`ORCHD_REAL_ENGINE_BIN`, `ORCHD_REAL_ENGINE_MODEL`, also set by `.ci/run`).

mod support;

use std::time::Duration;

use orchd_engine::config::{AdapterKind, PoolConfig};
use orchd_engine::Engine;
use orchd_testkit::{
    cancel, open_stream, stream, submit, submit_and_stream, task_body, token_text, uuid,
    wait_until, Event,
};
use serde_json::json;
use support::TestServer;

const NEEDS_ENGINE: &str =
    "needs a real llama.cpp server: ORCHD_REAL_ENGINE_URL (.ci/run starts one)";

fn engine_url() -> String {
    std::env::var("ORCHD_REAL_ENGINE_URL")
        .unwrap_or_else(|_| panic!("ORCHD_REAL_ENGINE_URL is not set: {NEEDS_ENGINE}"))
}

fn server(url: &str) -> TestServer {
    let mut c = TestServer::config(2);
    c.pools = [
        ("native", AdapterKind::Llamacpp),
        ("openai", AdapterKind::Openai),
    ]
    .into_iter()
    .map(|(id, kind)| {
        let mut p = PoolConfig {
            id: id.into(),
            engine: Engine::Llamacpp,
            model_ref: id.into(),
            slots: 1,
            ..PoolConfig::default()
        };
        p.adapter.kind = kind;
        p.adapter.url = Some(url.to_string());
        p.adapter.decode_timeout_ms = 10_000;
        p
    })
    .collect();
    c.sessions.max_turns = 100;
    TestServer::start(c)
}

fn run(s: &TestServer, model: &str, extra: serde_json::Value) -> Vec<Event> {
    let mut body = json!({"model_ref": model, "determinism": "strict", "seed": 1});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    submit_and_stream(s.addr, body).1
}

#[test]
#[ignore = "needs a real llama.cpp server: ORCHD_REAL_ENGINE_URL (.ci/run starts one)"]
fn real_llama_cpp_streams_through_both_adapters_deterministically() {
    let url = engine_url();
    let s = server(&url);
    // The health probe fills in the version llama.cpp reports (`/props` build_info).
    wait_until(
        Duration::from_secs(10),
        "llama.cpp's version in pool health",
        || {
            let v =
                s.get("/v1/pools/native/health", &[]).json()["metrics"]["engine_version"].clone();
            match v.as_str().is_some_and(|v| v.starts_with('b')) {
                true => Ok(()),
                false => Err(format!("engine_version {v}")),
            }
        },
    );
    for model in ["native", "openai"] {
        let a = run(
            &s,
            model,
            json!({"max_tokens": 16, "prompt": "hello world"}),
        );
        let end = a.last().unwrap();
        assert_eq!(end.event, "end", "{model}: {end:?}");
        assert!(!token_text(&a).is_empty());
        // temperature 0 (determinism: strict): the same text again.
        let b = run(
            &s,
            model,
            json!({"max_tokens": 16, "prompt": "hello world"}),
        );
        assert_eq!(token_text(&a), token_text(&b), "{model}");
    }
}

#[test]
#[ignore = "needs a real llama.cpp server: ORCHD_REAL_ENGINE_URL (.ci/run starts one)"]
fn cancel_stops_the_real_engine() {
    let url = engine_url();
    let s = server(&url);
    let task = uuid();
    let body = task_body(
        &task,
        &uuid(),
        json!({"model_ref": "native", "max_tokens": 1500, "prompt": "count"}),
    );
    assert_eq!(submit(s.addr, &[], &body).status, 202);
    let mut r = open_stream(s.addr, &[], &task);
    r.read_until("token");
    let c = cancel(s.addr, &task);
    assert_eq!(c.status, 204);
    assert_eq!(r.collect().last().unwrap().data["canceled"], true);
    assert_eq!(
        stream(s.addr, &[], &task).last().unwrap().data["canceled"],
        true
    );
    // llama.cpp's own gauge shows its slot freed: the engine stopped generating.
    let metrics_url = format!("{url}/metrics");
    wait_until(
        Duration::from_secs(10),
        "llama.cpp to free its slot",
        || {
            let out = std::process::Command::new("curl")
                .args(["-s", &metrics_url])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let busy = text
                .lines()
                .find(|l| l.starts_with("llamacpp:requests_processing"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok());
            match busy {
                Some(0.0) => Ok(()),
                other => Err(format!("requests_processing {other:?}")),
            }
        },
    );
}

#[test]
#[ignore = "needs a real llama.cpp server: ORCHD_REAL_ENGINE_URL (.ci/run starts one)"]
fn a_prompt_longer_than_the_engine_context_is_invalid_params() {
    let url = engine_url();
    let s = server(&url);
    let long = "word ".repeat(6000);
    let events = run(&s, "native", json!({"max_tokens": 4, "prompt": long}));
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "INVALID_PARAMS", "{last:?}");
}

// ---- Replica sets (issue 20): three real llama.cpp servers behind one pool ----

const NEEDS_BINARY: &str = "needs llama-server and its model: ORCHD_REAL_ENGINE_BIN and \
     ORCHD_REAL_ENGINE_MODEL (.ci/run sets them after building the real engine)";

/// A llama-server of the test's own on a loopback address of its own (127.0.0.2 and
/// up: one replica per address, as one per host), killed when dropped.
struct Llama {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Llama {
    fn start(host: &str) -> Llama {
        let var =
            |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: {NEEDS_BINARY}"));
        let (bin, model) = (var("ORCHD_REAL_ENGINE_BIN"), var("ORCHD_REAL_ENGINE_MODEL"));
        let addr = std::net::TcpListener::bind((host, 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("loopback address {host}: {e}"));
        let port = addr.port().to_string();
        let child = std::process::Command::new(bin)
            .args(["-m", &model, "--host", host, "--port", &port])
            .args(["-c", "8192", "-np", "2", "-t", "1", "--no-ui", "--metrics"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("llama-server starts");
        let l = Llama { child, addr };
        wait_until(
            Duration::from_secs(60),
            "llama-server to answer /health",
            || {
                // Connect first: a refused connect is the usual answer while it loads.
                std::net::TcpStream::connect(l.addr).is_ok()
                    && orchd_testkit::try_send(l.addr, "GET", "/health", b"")
                        .is_some_and(|r| r.status == 200)
            },
        );
        l
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tokens it has generated, by its own count (`llamacpp:tokens_predicted_total`).
    fn predicted(&self) -> u64 {
        let r = orchd_testkit::try_send(self.addr, "GET", "/metrics", b"")
            .expect("llama-server /metrics");
        let text = r.text();
        let line = text
            .lines()
            .find(|l| l.starts_with("llamacpp:tokens_predicted_total "))
            .unwrap_or_else(|| panic!("no tokens_predicted_total in {text}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    }
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica_set(engines: &[&Llama]) -> TestServer {
    let mut c = TestServer::config(2);
    let mut p = PoolConfig {
        id: "set".into(),
        engine: Engine::Llamacpp,
        model_ref: "tiny".into(),
        // Declared 1; each server says 2 (`-np 2`), and that is what counts.
        slots: 1,
        ..PoolConfig::default()
    };
    p.adapter.kind = AdapterKind::Llamacpp;
    p.adapter.slots_from_engine = true;
    p.adapter.urls = engines.iter().map(|e| e.url()).collect();
    p.adapter.health_interval_ms = 200;
    p.adapter.decode_timeout_ms = 10_000;
    p.adapter.retries = 0;
    c.pools = vec![p];
    c.sessions.max_turns = 100;
    TestServer::start(c)
}

/// Which engine generated a task of `session` (the one whose own count moved, by
/// exactly the task's tokens), and the task's frames.
fn turn_on(s: &TestServer, engines: &[&Llama], session: &str, n: u64) -> (usize, Vec<Event>) {
    let before: Vec<u64> = engines.iter().map(|e| e.predicted()).collect();
    let task = uuid();
    let body = json!({"model_ref": "tiny", "max_tokens": n, "seed": 1, "prompt": "replica"});
    let r = submit(s.addr, &[], &task_body(&task, session, body));
    assert_eq!(r.status, 202, "{}", r.text());
    let frames = stream(s.addr, &[], &task);
    let grew: Vec<(usize, u64)> = engines
        .iter()
        .enumerate()
        .map(|(i, e)| (i, e.predicted() - before[i]))
        .filter(|(_, d)| *d > 0)
        .collect();
    assert_eq!(grew.len(), 1, "one engine generated the task: {grew:?}");
    assert_eq!(grew[0].1, n, "{grew:?}");
    (grew[0].0, frames)
}

#[test]
#[ignore = "needs llama-server and its model: ORCHD_REAL_ENGINE_BIN and ORCHD_REAL_ENGINE_MODEL (.ci/run sets them)"]
fn three_real_llama_cpp_replicas_keep_sessions_and_move_them_when_one_dies() {
    let engines = [
        Llama::start("127.0.0.2"),
        Llama::start("127.0.0.3"),
        Llama::start("127.0.0.4"),
    ];
    let refs: Vec<&Llama> = engines.iter().collect();
    let s = replica_set(&refs);
    // Each replica's slots are its engine's `total_slots` once probed.
    wait_until(Duration::from_secs(5), "the engines' own slots", || {
        s.get("/v1/pools/set/health", &[]).json()["metrics"]["slots_total"] == 6
    });
    let h = s.get("/v1/pools/set/health", &[]).json();
    assert!(
        h["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["slots"] == 2),
        "{h}"
    );

    // Every turn of a session on one engine, by the engines' own counts; the sessions
    // spread over the set.
    let mut homes = Vec::new();
    for _ in 0..9 {
        let session = uuid();
        let (home, frames) = turn_on(&s, &refs, &session, 8);
        assert_eq!(frames.last().unwrap().event, "end");
        let (again, _) = turn_on(&s, &refs, &session, 8);
        assert_eq!(
            again, home,
            "a session's second turn on its first turn's engine"
        );
        homes.push((session, home));
    }
    let used: std::collections::HashSet<usize> = homes.iter().map(|(_, h)| *h).collect();
    assert!(
        used.len() >= 2,
        "nine sessions over three engines: {homes:?}"
    );

    // One engine dies while streams run on it and on another.
    let (a, dead) = homes[0].clone();
    let (b, b_home) = homes
        .iter()
        .find(|(_, h)| *h != dead)
        .cloned()
        .expect("a session on another engine");
    let long = json!({"model_ref": "tiny", "max_tokens": 3000, "ctx": 4096, "prompt": "long"});
    let (ta, tb) = (uuid(), uuid());
    assert_eq!(
        submit(s.addr, &[], &task_body(&ta, &a, long.clone())).status,
        202
    );
    assert_eq!(submit(s.addr, &[], &task_body(&tb, &b, long)).status, 202);
    let (mut ra, rb) = (open_stream(s.addr, &[], &ta), open_stream(s.addr, &[], &tb));
    let mut fa = Vec::new();
    while fa.iter().filter(|e: &&Event| e.event == "token").count() < 5 {
        fa.push(ra.next_event().expect("a's stream runs"));
    }
    let mut engines = engines;
    let killed_at = std::time::Instant::now();
    let _ = engines[dead].child.kill();
    let _ = engines[dead].child.wait();
    fa.extend(ra.collect());
    let last = fa.last().unwrap();
    assert_eq!(last.event, "error", "{last:?}");
    assert_eq!(last.data["code"], "WORKER_RESET", "{last:?}");
    // Its probe finds it gone (the time until then is what its sessions wait).
    let dead_id = engines[dead].addr.to_string();
    wait_until(
        Duration::from_secs(10),
        "the dead replica to be down",
        || {
            let h = s.get("/v1/pools/set/health", &[]).json();
            h["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == dead_id.as_str() && r["state"] == "down")
        },
    );
    let down_after = killed_at.elapsed();
    let fb = rb.collect();
    assert_eq!(
        fb.last().unwrap().event,
        "end",
        "the other engine's stream is undisturbed"
    );
    assert_eq!(token_count(&fb), 3000);

    // Its sessions run on the next engine of their order.
    let live: Vec<&Llama> = engines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .map(|(_, e)| e)
        .collect();
    let (moved, frames) = turn_on(&s, &live, &a, 8);
    assert_eq!(frames.last().unwrap().event, "end");
    let (again, _) = turn_on(&s, &live, &a, 8);
    assert_eq!(again, moved, "the moved session stays on its new engine");
    let b_live = if b_home < dead { b_home } else { b_home - 1 };
    assert_eq!(
        turn_on(&s, &live, &b, 8).0,
        b_live,
        "a session whose engine lives stays"
    );
    assert_eq!(
        s.get("/v1/pools/set/health", &[]).json()["metrics"]["slots_total"],
        4
    );
    eprintln!(
        "replica death to its sessions moving: down after {} ms (probe every 200 ms)",
        down_after.as_millis()
    );
}

fn token_count(frames: &[Event]) -> usize {
    frames.iter().filter(|e| e.event == "token").count()
}

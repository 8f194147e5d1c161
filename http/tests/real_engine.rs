//! The HTTP adapters against a real llama.cpp server (built from PyPI by
//! `../shared/tools/real-engine/setup.sh`, tiny random model). `.ci/run` starts it and
//! sets `ORCHD_REAL_ENGINE_URL`; without it these tests say so and pass locally, and
//! fail in CI.

mod support;

use std::time::{Duration, Instant};

use orchd_engine::config::{AdapterKind, PoolConfig};
use orchd_engine::Engine;
use serde_json::json;
use support::{task_body, uuid, Event, TestServer};

fn engine_url() -> Option<String> {
    match std::env::var("ORCHD_REAL_ENGINE_URL") {
        Ok(u) => Some(u),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI must start a real engine (ORCHD_REAL_ENGINE_URL)")
        }
        Err(_) => {
            eprintln!("no ORCHD_REAL_ENGINE_URL: real-engine test not run (see .ci/run)");
            None
        }
    }
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
    let task = uuid();
    let mut body = json!({"model_ref": model, "determinism": "strict", "seed": 1});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = s
        .client()
        .send("POST", "/v1/tasks", &[], &task_body(&task, &uuid(), body));
    assert_eq!(r.status, 202);
    s.client()
        .open_stream(&format!("/v1/tasks/{task}/stream"), &[])
        .collect()
}

fn text(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.data["t"].as_str().unwrap())
        .collect()
}

#[test]
fn real_llama_cpp_streams_through_both_adapters_deterministically() {
    let Some(url) = engine_url() else { return };
    let s = server(&url);
    // The health probe fills in the version llama.cpp reports (`/props` build_info).
    let t = Instant::now();
    loop {
        let v = s.get("/v1/pools/native/health", &[]).json()["metrics"]["engine_version"].clone();
        if v.as_str().is_some_and(|v| v.starts_with('b')) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no engine version reported: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for model in ["native", "openai"] {
        let a = run(
            &s,
            model,
            json!({"max_tokens": 16, "prompt": "hello world"}),
        );
        let end = a.last().unwrap();
        assert_eq!(end.event, "end", "{model}: {end:?}");
        assert_eq!(
            end.data["tokens_out"],
            a.iter().filter(|e| e.event == "token").count()
        );
        assert!(!text(&a).is_empty());
        let idx: Vec<u64> = a
            .iter()
            .filter(|e| e.event == "token")
            .map(|e| e.data["i"].as_u64().unwrap())
            .collect();
        assert_eq!(idx, (0..idx.len() as u64).collect::<Vec<_>>());
        // temperature 0 (determinism: strict): the same text again.
        let b = run(
            &s,
            model,
            json!({"max_tokens": 16, "prompt": "hello world"}),
        );
        assert_eq!(text(&a), text(&b), "{model}");
    }
}

#[test]
fn cancel_stops_the_real_engine() {
    let Some(url) = engine_url() else { return };
    let s = server(&url);
    let task = uuid();
    let body = task_body(
        &task,
        &uuid(),
        json!({"model_ref": "native", "max_tokens": 1500, "prompt": "count"}),
    );
    assert_eq!(s.client().send("POST", "/v1/tasks", &[], &body).status, 202);
    let mut r = s
        .client()
        .open_stream(&format!("/v1/tasks/{task}/stream"), &[]);
    while r.next_event().unwrap().event != "token" {}
    let c = s
        .client()
        .send("POST", &format!("/v1/tasks/{task}/cancel"), &[], b"");
    assert_eq!(c.status, 204);
    assert_eq!(r.collect().last().unwrap().data["canceled"], true);
    // llama.cpp's own gauge shows its slot freed: the engine stopped generating.
    let metrics_url = format!("{url}/metrics");
    let t = Instant::now();
    loop {
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
        if busy == Some(0.0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "llama.cpp still processing: {busy:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_prompt_longer_than_the_engine_context_is_invalid_params() {
    let Some(url) = engine_url() else { return };
    let s = server(&url);
    let long = "word ".repeat(6000);
    let events = run(&s, "native", json!({"max_tokens": 4, "prompt": long}));
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "INVALID_PARAMS", "{last:?}");
}

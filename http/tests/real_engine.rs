//! The HTTP adapters against a real llama.cpp server (built from PyPI by
//! `../shared/tools/real-engine/setup.sh`, tiny random model). They need that server:
//! each is `#[ignore]`d, and `.ci/run` starts the engine, sets `ORCHD_REAL_ENGINE_URL`
//! and runs them with `cargo test -p orchd-http --test real_engine -- --ignored`.

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

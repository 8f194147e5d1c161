//! SPEC section 3 against a live orchd: pool health, drain, reload, capabilities.

mod support;

use std::time::Duration;

use orchd_engine::config::PoolConfig;
use orchd_engine::Config;
use orchd_testkit::{
    assert_well_formed, open_stream, submit_and_stream, task_body, tokens, uuid, wait_until, Event,
    Response,
};
use serde_json::json;
use support::TestServer;

fn submit(s: &TestServer, body: &[u8]) -> Response {
    orchd_testkit::submit(s.addr, &[], body)
}

fn post(s: &TestServer, path: &str, body: serde_json::Value) -> Response {
    s.client()
        .send("POST", path, &[], &serde_json::to_vec(&body).unwrap())
}

/// The whole stream of `task`, held to the frame rules.
fn stream(s: &TestServer, task: &str) -> Vec<Event> {
    orchd_testkit::stream(s.addr, &[], task)
}

/// A new task for `model`, submitted (202) and streamed to its end.
fn run(s: &TestServer, model: &str) -> Vec<Event> {
    submit_and_stream(s.addr, json!({"model_ref": model})).1
}

fn pool(id: &str, model: &str, tpot: u64) -> PoolConfig {
    let mut p = PoolConfig {
        id: id.into(),
        model_ref: model.into(),
        slots: 2,
        ..PoolConfig::default()
    };
    p.adapter.ttft_ms = 0;
    p.adapter.tpot_ms = tpot;
    p
}

fn with_pools(pools: Vec<PoolConfig>) -> Config {
    let mut c = TestServer::config(2);
    c.pools = pools;
    c
}

#[test]
fn health_has_its_shape_and_unknown_pools_are_404() {
    let s = TestServer::start(with_pools(vec![pool("a", "m1", 0)]));
    run(&s, "m1");
    let h = s.get("/v1/pools/a/health", &[]);
    assert_eq!(h.status, 200);
    let h = h.json();
    assert_eq!(
        (h["live"].clone(), h["ready"].clone(), h["draining"].clone()),
        (json!(true), json!(true), json!(false))
    );
    let m = &h["metrics"];
    for key in [
        "queue_depth",
        "slots_total",
        "slots_busy",
        "tasks_running",
        "model_ref",
        "engine",
        "engine_version",
    ] {
        assert!(m.get(key).is_some(), "{key} missing: {h}");
    }
    assert_eq!(m["slots_total"], 2);
    assert_eq!(m["model_ref"], "m1");
    assert_eq!(m["engine"], "llamacpp");
    assert_eq!(m["engine_version"], "mock-1");
    assert_eq!(m["latency_first_token_ms"]["count"], 1);
    // One replica, the mock: up, never probed (no last_probe_ms_ago), on its owner.
    assert_eq!(
        h["replicas"],
        json!([{"id": "mock", "state": "up", "slots": 2, "busy": 0, "engine_version": "mock-1",
            "shard": m["shard"]}])
    );
    assert!(m["latency_decode_ms"]["p99"].as_f64().unwrap() >= 0.0);
    let r = s.get("/v1/pools/nope/health", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "INVALID_PARAMS");
}

#[test]
fn drain_closes_admission_and_ends_tasks_at_the_deadline() {
    let s = TestServer::start(with_pools(vec![pool("a", "m1", 20)]));
    let running = uuid();
    assert_eq!(
        submit(
            &s,
            &task_body(
                &running,
                &uuid(),
                json!({"model_ref": "m1", "max_tokens": 1000})
            )
        )
        .status,
        202
    );
    let mut live = open_stream(s.addr, &[], &running);
    let started = live.next_event().unwrap();
    assert_eq!(started.event, "started");

    let r = post(&s, "/v1/pools/a/drain", json!({"deadline_ms": 400}));
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["draining"], true);
    let h = s.get("/v1/pools/a/health", &[]).json();
    assert_eq!(
        (h["ready"].clone(), h["draining"].clone()),
        (json!(false), json!(true))
    );
    // New tasks are refused at once, with retry advice.
    let r = submit(&s, &task_body(&uuid(), &uuid(), json!({"model_ref": "m1"})));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], "POOL_UNREADY");
    assert!(r.header("retry-after").is_some() && r.header("x-backoff-ms").is_some());
    // Capabilities follow.
    let caps = s.get("/v1/capabilities", &[]).json();
    assert_eq!(caps["engines"][0]["concurrency"], 0);
    assert_eq!(caps["engines"][0]["pools"][0]["state"], "draining");
    // The running stream goes on until the deadline, then ends with POOL_UNAVAILABLE.
    let mut all = vec![started];
    all.extend(live.collect());
    assert_well_formed(&all);
    let tokens_before_end = tokens(&all).len();
    assert!(
        tokens_before_end > 3,
        "tokens kept coming during the drain: {tokens_before_end}"
    );
    let last = all.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "POOL_UNAVAILABLE");
    // Bad bodies.
    assert_eq!(
        post(&s, "/v1/pools/a/drain", json!({"deadline": 1})).status,
        400
    );
    assert_eq!(
        post(&s, "/v1/pools/a/drain", json!({"deadline_ms": -1})).status,
        400
    );
    assert_eq!(
        post(&s, "/v1/pools/zz/drain", json!({"deadline_ms": 1})).status,
        404
    );
}

#[test]
fn a_drained_pool_hands_new_tasks_to_another_pool_of_the_model() {
    let s = TestServer::start(with_pools(vec![pool("a", "m1", 0), pool("b", "m1", 0)]));
    assert_eq!(
        post(&s, "/v1/pools/a/drain", json!({"deadline_ms": 10})).status,
        202
    );
    for _ in 0..4 {
        assert_eq!(run(&s, "m1").last().unwrap().event, "end");
    }
    let b = s.get("/v1/pools/b/health", &[]).json();
    assert_eq!(b["metrics"]["latency_first_token_ms"]["count"], 4);
}

#[test]
fn reload_switches_models_atomically_and_running_tasks_keep_theirs() {
    let body = |task: &str, model: &str| {
        task_body(
            task,
            "0b7e8f6a-1111-4222-8333-944455556666",
            json!({"model_ref": model, "max_tokens": 60, "seed": 3, "kv_hint": "cold"}),
        )
    };
    // Reference token streams of each model, from a server that never reloads.
    let reference = TestServer::start(with_pools(vec![pool("a", "m1", 0), pool("z", "m2", 0)]));
    let mut refs = Vec::new();
    for model in ["m1", "m2"] {
        let t = uuid();
        submit(&reference, &body(&t, model));
        refs.push(tokens(&stream(&reference, &t)));
    }
    assert_ne!(refs[0], refs[1]);

    let mut cfg = with_pools(vec![pool("a", "m1", 10)]);
    cfg.sessions.max_turns = 100;
    let s = TestServer::start(cfg);
    let long = uuid();
    assert_eq!(submit(&s, &body(&long, "m1")).status, 202);
    let mut live = open_stream(s.addr, &[], &long);
    live.read_until("token");
    let r = post(&s, "/v1/pools/a/reload", json!({"new_model_ref": "m2"}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"pool_id": "a", "model_ref": "m2"}));
    // The task that was running finishes on the old model, every token of it.
    let rest = live.collect();
    assert_eq!(rest.last().unwrap().event, "end");
    assert_eq!(tokens(&stream(&s, &long)), refs[0]);
    // New tasks use the new model; the old one is no longer served here.
    let next = uuid();
    assert_eq!(submit(&s, &body(&next, "m2")).status, 202);
    assert_eq!(tokens(&stream(&s, &next)), refs[1]);
    assert_eq!(
        submit(&s, &body(&uuid(), "m1")).json()["code"],
        "POOL_UNAVAILABLE"
    );
    let caps = s.get("/v1/capabilities", &[]).json();
    assert_eq!(caps["engines"][0]["pools"][0]["model_ref"], "m2");
    assert_eq!(
        s.get("/v1/pools/a/health", &[]).json()["metrics"]["model_ref"],
        "m2"
    );
}

#[test]
fn a_model_that_fails_to_load_rolls_back_with_409() {
    let s = TestServer::start(with_pools(vec![pool("a", "m1", 0)]));
    let r = post(
        &s,
        "/v1/pools/a/reload",
        json!({"new_model_ref": "fail:broken"}),
    );
    assert_eq!(r.status, 409);
    let e = r.json();
    assert_eq!(e["code"], "INVALID_PARAMS");
    assert_eq!(e["pool_id"], "a");
    assert!(
        e["message"].as_str().unwrap().contains("rolled back to m1"),
        "{e}"
    );
    let h = s.get("/v1/pools/a/health", &[]).json();
    assert_eq!(
        (h["ready"].clone(), h["metrics"]["model_ref"].clone()),
        (json!(true), json!("m1"))
    );
    assert_eq!(run(&s, "m1").last().unwrap().event, "end");
    // Bad bodies and unknown pools.
    assert_eq!(
        post(&s, "/v1/pools/a/reload", json!({"model": "x"})).status,
        400
    );
    assert_eq!(
        post(&s, "/v1/pools/a/reload", json!({"new_model_ref": ""})).status,
        400
    );
    assert_eq!(
        post(&s, "/v1/pools/nope/reload", json!({"new_model_ref": "x"})).status,
        404
    );
}

/// Found by schemathesis (contracts/schemathesis/run.sh): `new_model_ref` is 1 to 512
/// characters, as the document's `maxLength` and the message count them, not bytes;
/// and path segments are percent-decoded, as OpenAPI clients encode them.
#[test]
fn reload_counts_characters_and_pool_ids_may_be_percent_encoded() {
    let s = TestServer::start(with_pools(vec![pool("a", "m1", 0)]));
    let model = "\u{e9}".repeat(512); // 1024 bytes
    let r = post(&s, "/v1/pools/a/reload", json!({"new_model_ref": model}));
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["model_ref"], model.as_str());
    let long = "\u{e9}".repeat(513);
    let r = post(&s, "/v1/pools/a/reload", json!({"new_model_ref": long}));
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("new_model_ref:"));
    let h = s.get("/v1/pools/%61/health", &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["metrics"]["model_ref"], model.as_str());
    assert_eq!(s.get("/v1/pools/%6/health", &[]).status, 404);
}

#[test]
fn a_reload_during_a_reload_or_a_drain_is_409() {
    let mut p = pool("a", "m1", 0);
    p.adapter.load_ms = 500;
    let s = TestServer::start(with_pools(vec![p]));
    std::thread::scope(|scope| {
        let first = scope.spawn(|| post(&s, "/v1/pools/a/reload", json!({"new_model_ref": "m2"})));
        std::thread::sleep(Duration::from_millis(150));
        let second = post(&s, "/v1/pools/a/reload", json!({"new_model_ref": "m3"}));
        assert_eq!(second.status, 409);
        assert!(second.json()["message"]
            .as_str()
            .unwrap()
            .contains("reload"));
        let drain = post(&s, "/v1/pools/a/drain", json!({"deadline_ms": 1000}));
        assert_eq!(drain.status, 409);
        // Admission goes on while the model loads.
        let h = s.get("/v1/pools/a/health", &[]).json();
        assert_eq!(h["ready"], true);
        assert_eq!(h["metrics"]["state"], "reloading");
        assert_eq!(first.join().unwrap().status, 200);
    });
    assert_eq!(
        post(&s, "/v1/pools/a/drain", json!({"deadline_ms": 1000})).status,
        202
    );
    let r = post(&s, "/v1/pools/a/reload", json!({"new_model_ref": "m3"}));
    assert_eq!(r.status, 409);
    assert!(r.json()["message"].as_str().unwrap().contains("drain"));
}

#[test]
fn a_reload_brings_a_drained_pool_back() {
    let s = TestServer::start(with_pools(vec![pool("a", "m1", 0)]));
    assert_eq!(
        post(&s, "/v1/pools/a/drain", json!({"deadline_ms": 1})).status,
        202
    );
    wait_until(Duration::from_millis(400), "pool a to be drained", || {
        let h = s.get("/v1/pools/a/health", &[]).json();
        match h["metrics"]["state"] == "drained" {
            true => Ok(()),
            false => Err(format!("state {}", h["metrics"]["state"])),
        }
    });
    assert_eq!(
        post(&s, "/v1/pools/a/reload", json!({"new_model_ref": "m9"})).status,
        200
    );
    assert_eq!(run(&s, "m9").last().unwrap().event, "end");
}

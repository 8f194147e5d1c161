//! HTTP engine adapters (SPEC section 4) against in-test engines that speak the real
//! wire formats: streams frame for frame, cancel reaching the engine, failure mapping.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use orchd_engine::config::{AdapterKind, ApiKey, PoolConfig};
use orchd_testkit::fake_engine::{self, FakeEngine, Mode};
use orchd_testkit::{
    cancel, open_stream, stream, submit, submit_and_stream, task_body, tokens, uuid, wait_until,
    Event,
};
use serde_json::json;
use support::TestServer;

fn server(kind: AdapterKind, url: &str, tweak: impl FnOnce(&mut PoolConfig)) -> TestServer {
    let mut c = TestServer::config(2);
    let mut p = PoolConfig {
        id: "real".into(),
        ..PoolConfig::default()
    };
    p.adapter.kind = kind;
    p.adapter.url = Some(url.to_string());
    p.adapter.api_key = Some(ApiKey::new("sk-upstream"));
    p.adapter.health_interval_ms = 100;
    p.adapter.connect_timeout_ms = 500;
    tweak(&mut p);
    c.pools = vec![p];
    TestServer::start(c)
}

fn run(s: &TestServer, extra: serde_json::Value) -> Vec<Event> {
    submit_and_stream(s.addr, extra).1
}

/// The tokens the fake engine sends first, `n` of them.
fn engine_tokens(n: usize) -> Vec<String> {
    (0..n).map(fake_engine::token).collect()
}

fn both_protocols(check: impl Fn(AdapterKind, &FakeEngine)) {
    for kind in [AdapterKind::Openai, AdapterKind::Llamacpp] {
        let engine = FakeEngine::start();
        check(kind, &engine);
    }
}

#[test]
fn streams_through_both_adapters_match_the_engine_token_for_token() {
    both_protocols(|kind, engine| {
        let s = server(kind, &engine.url(), |_| {});
        let events = run(
            &s,
            json!({"max_tokens": 12, "seed": 5, "determinism": "strict", "model_ref": "llama-x"}),
        );
        assert_eq!(tokens(&events), engine_tokens(12), "{kind:?}");
        let end = events.last().unwrap();
        assert_eq!(end.event, "end");
        assert_eq!(end.data["tokens_out"], 12);
        // What the engine was asked for.
        let gens = engine.generations();
        let (_, path, headers, body) = gens.last().unwrap();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["prompt"], "hello");
        assert_eq!(body["seed"], 5);
        assert_eq!(body["temperature"], 0);
        match kind {
            AdapterKind::Openai => {
                assert_eq!(path, "/v1/completions");
                assert_eq!(
                    (body["model"].clone(), body["max_tokens"].clone()),
                    (json!("llama-x"), json!(12))
                );
            }
            _ => {
                assert_eq!(path, "/completion");
                assert_eq!(body["n_predict"], 12);
            }
        }
        assert!(headers.contains(&("authorization".into(), "Bearer sk-upstream".into())));
        // Keep-alive: more tasks, few connections.
        for _ in 0..5 {
            let ev = run(&s, json!({"max_tokens": 3}));
            assert_eq!(ev.last().unwrap().event, "end");
        }
        let conns = engine.connections.load(Ordering::Relaxed);
        assert!(conns < 6, "{conns} connections for 6 tasks and some probes");
        // The pool's series name its replica: the engine's host:port (issue 20).
        let replica = engine.url().trim_start_matches("http://").to_string();
        let text = s.get("/metrics", &[]).text();
        let line = text
            .lines()
            .find(|l| l.starts_with("tokens_out_total{"))
            .expect("tokens_out_total");
        assert!(
            line.contains(&format!("replica_id=\"{replica}\"")),
            "{line}"
        );
        assert!(line.ends_with(" 27"), "12 + 5 x 3 tokens: {line}");
    });
}

#[test]
fn cancel_closes_the_upstream_request() {
    both_protocols(|kind, engine| {
        engine.set_tpot(Duration::from_millis(10));
        let s = server(kind, &engine.url(), |_| {});
        let task = uuid();
        let body = task_body(&task, &uuid(), json!({"max_tokens": 2000}));
        assert_eq!(submit(s.addr, &[], &body).status, 202);
        let mut r = open_stream(s.addr, &[], &task);
        let mut seen = 0;
        while seen < 5 {
            if r.next_event().unwrap().event == "token" {
                seen += 1;
            }
        }
        let c = cancel(s.addr, &task);
        assert_eq!(c.status, 204);
        let n: usize = c.header("x-tokens-out").unwrap().parse().unwrap();
        let rest = r.collect();
        assert_eq!(rest.last().unwrap().data["canceled"], true);
        let all = stream(s.addr, &[], &task);
        assert_eq!(tokens(&all).len(), n, "no token after the cancel");
        wait_until(
            Duration::from_secs(5),
            "the engine to see its client go away (not stream to nobody)",
            || engine.client_went_away.load(Ordering::Relaxed),
        );
    });
}

#[test]
fn a_connection_lost_mid_stream_is_worker_reset() {
    both_protocols(|kind, engine| {
        engine.set_mode(Mode::DieAfter(3));
        let s = server(kind, &engine.url(), |_| {});
        let events = run(&s, json!({"max_tokens": 10}));
        assert_eq!(tokens(&events).len(), 3);
        assert_eq!(events.last().unwrap().data["code"], "WORKER_RESET");
        assert_eq!(
            engine.generations().len(),
            1,
            "no retry once tokens were streamed"
        );
    });
}

#[test]
fn a_stalled_engine_is_decode_timeout() {
    both_protocols(|kind, engine| {
        engine.set_mode(Mode::StallAfter(2));
        let s = server(kind, &engine.url(), |p| p.adapter.decode_timeout_ms = 300);
        let events = run(&s, json!({"max_tokens": 10}));
        assert_eq!(tokens(&events).len(), 2);
        assert_eq!(events.last().unwrap().data["code"], "DECODE_TIMEOUT");
    });
}

#[test]
fn garbage_from_the_engine_is_worker_reset() {
    both_protocols(|kind, engine| {
        engine.set_mode(Mode::Garbage);
        let s = server(kind, &engine.url(), |_| {});
        let events = run(&s, json!({"max_tokens": 10}));
        assert_eq!(events.last().unwrap().data["code"], "WORKER_RESET");
        assert!(events.last().unwrap().data["message"]
            .as_str()
            .unwrap()
            .contains("malformed"));
    });
}

#[test]
fn server_errors_are_retried_before_the_first_token_then_pool_unavailable() {
    both_protocols(|kind, engine| {
        engine.set_mode(Mode::Status(503));
        let s = server(kind, &engine.url(), |p| p.adapter.retries = 2);
        let events = run(&s, json!({"max_tokens": 5}));
        assert_eq!(events.last().unwrap().data["code"], "POOL_UNAVAILABLE");
        assert_eq!(engine.generations().len(), 3, "one try and two retries");
        // A 4xx is the task's fault, not the engine's: no retry.
        engine.set_mode(Mode::Status(400));
        let before = engine.generations().len();
        let events = run(&s, json!({"max_tokens": 5}));
        assert_eq!(events.last().unwrap().data["code"], "INVALID_PARAMS");
        assert_eq!(engine.generations().len(), before + 1);
    });
}

#[test]
fn a_refused_engine_makes_the_pool_unready_until_it_answers_again() {
    // Reserve a port, then close it: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = server(
        AdapterKind::Openai,
        &format!("http://127.0.0.1:{port}"),
        |p| p.adapter.retries = 1,
    );
    let events = run(&s, json!({"max_tokens": 5}));
    assert_eq!(events.last().unwrap().data["code"], "POOL_UNAVAILABLE");
    let h = s.get("/v1/pools/real/health", &[]).json();
    assert_eq!(h["ready"], false);
    // Its replica says why: the engine at that address is down, as last probed.
    let r = &h["replicas"][0];
    assert_eq!(
        (r["id"].as_str(), r["state"].as_str()),
        (Some(format!("127.0.0.1:{port}").as_str()), Some("down")),
        "{h}"
    );
    assert!(r["last_probe_ms_ago"].as_u64().is_some(), "{h}");
    let r = submit(s.addr, &[], &task_body(&uuid(), &uuid(), json!({})));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], "POOL_UNREADY");
    assert!(r.header("retry-after").is_some());
    // Its pool_ready says so too (what the OrchdPoolNotReady alert reads).
    let ready = |s: &TestServer| {
        let text = s.get("/metrics", &[]).text();
        let line = text
            .lines()
            .find(|l| l.starts_with("pool_ready{"))
            .map(str::to_string);
        line.expect("pool_ready")
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(ready(&s), "0");
    // The engine comes back: the health probe notices and admission resumes.
    let _engine = FakeEngine::start_on(port);
    wait_until(Duration::from_secs(5), "the pool to be ready again", || {
        s.get("/v1/pools/real/health", &[]).json()["ready"] == true
    });
    assert_eq!(ready(&s), "1");
    let h = s.get("/v1/pools/real/health", &[]).json();
    assert_eq!(h["replicas"][0]["state"], "up", "{h}");
    let events = run(&s, json!({"max_tokens": 4}));
    assert_eq!(tokens(&events), engine_tokens(4));
}

#[test]
fn an_engine_that_closes_after_each_answer_costs_no_task() {
    // llama.cpp's server closes the connection after every streamed answer whatever its
    // Keep-Alive header says. A request sent on such a kept-alive connection is sent
    // again on a new one at once; with no retries allowed, any failure would end a task
    // with an error frame.
    both_protocols(|kind, engine| {
        engine.set_mode(Mode::CloseAfterAnswer);
        let s = server(kind, &engine.url(), |p| p.adapter.retries = 0);
        for i in 0..20 {
            let ev = run(&s, json!({"max_tokens": 2}));
            let last = ev.last().unwrap();
            assert_eq!(last.event, "end", "{kind:?} task {i}: {}", last.data);
        }
    });
}

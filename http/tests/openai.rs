//! The OpenAI-compatible routes (issue 17) against a live orchd: the exact chunk
//! format, errors in OpenAI's shape, backpressure headers, cancel through the request
//! id, disconnect, sessions only when asked, models and health. The official `openai`
//! Python SDK drives the same routes in `openai_sdk.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use orchd_engine::config::{AdapterKind, PoolConfig};
use orchd_engine::Engine;
use orchd_testkit::{
    cancel, submit_and_stream, token_text, uuid, wait_until, Client, Event, Response, SseReader,
};
use serde_json::{json, Value};
use support::TestServer;

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Response {
    let body = serde_json::to_vec(body).unwrap();
    Client::connect(addr).send("POST", path, headers, &body)
}

fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> SseReader {
    let body = serde_json::to_vec(body).unwrap();
    let r = Client::connect(addr).open_stream_with("POST", path, headers, &body);
    assert_eq!(r.status, 200, "{path}: {}", r.status);
    r
}

/// A config of one mock pool (`fast`: no latency) serving any model, with `f` applied
/// to the pool.
fn server(f: impl FnOnce(&mut PoolConfig), g: impl FnOnce(&mut orchd_http::Config)) -> TestServer {
    let mut c = TestServer::config(2);
    let mut p = PoolConfig::default();
    p.adapter.ttft_ms = 0;
    p.adapter.tpot_ms = 0;
    f(&mut p);
    c.pools = vec![p];
    g(&mut c);
    TestServer::start(c)
}

fn data(events: &[Event]) -> Vec<&Value> {
    events.iter().map(|e| &e.data).collect()
}

/// The text of a stream's chunks (completions: `text`; chat: `delta.content`).
fn chunk_text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| {
            let c = e.data.get("choices")?.get(0)?;
            c.get("text")
                .or_else(|| c.get("delta")?.get("content"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn a_streamed_completion_is_openais_chunk_format_exactly() {
    let s = server(|_| {}, |_| {});
    let body = json!({"model": "m", "prompt": "hello world", "max_tokens": 4, "seed": 5,
        "stream": true, "stream_options": {"include_usage": true}});
    let r = open(s.addr, "/v1/completions", &[], &body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let id = r.header("x-request-id").expect("X-Request-Id").to_string();
    let events = r.collect();
    let d = data(&events);
    assert_eq!(d.len(), 4 + 3, "{d:?}");
    for (i, c) in d[..4].iter().enumerate() {
        assert_eq!(c["id"], id.as_str(), "the task id is every chunk's id");
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["model"], "m");
        assert!(c["created"].as_u64().unwrap() > 1_700_000_000);
        let choice = &c["choices"][0];
        assert_eq!(choice["index"], 0);
        assert!(
            !choice["text"].as_str().unwrap().is_empty(),
            "chunk {i}: {c}"
        );
        assert_eq!(choice["finish_reason"], Value::Null);
        assert_eq!(choice["logprobs"], Value::Null);
        assert_eq!(
            c["usage"],
            Value::Null,
            "usage is null until the last chunk"
        );
    }
    assert_eq!(d[4]["choices"][0]["text"], "");
    assert_eq!(d[4]["choices"][0]["finish_reason"], "length");
    assert_eq!(d[5]["choices"], json!([]));
    assert_eq!(
        d[5]["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6})
    );
    assert_eq!(*d[6], json!("[DONE]"));
    // Every event carries its frame's id; the tail shares the end frame's.
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2)
            .all(|w| w[0] < w[1] || w[0] == w[1] && w[0] == ids[6]),
        "{ids:?}"
    );
    // One queue, one engine: the same text as the OrchQueue task asking the same.
    let (_, frames) = submit_and_stream(
        s.addr,
        json!({"model_ref": "m", "prompt": "hello world", "max_tokens": 4, "seed": 5}),
    );
    assert_eq!(chunk_text(&events), token_text(&frames));
    // Without include_usage: no usage chunk, no usage field.
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("stream_options");
    let events = open(s.addr, "/v1/completions", &[], &plain).collect();
    assert_eq!(events.len(), 4 + 2);
    assert!(events.iter().all(|e| e.data.get("usage").is_none()));
}

#[test]
fn a_chat_streams_and_answers_whole_the_same_text() {
    let s = server(|_| {}, |_| {});
    let body = json!({"model": "m", "max_tokens": 6, "seed": 3,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
    let whole = post(s.addr, "/v1/chat/completions", &[], &body);
    assert_eq!(whole.status, 200, "{}", whole.text());
    let w = whole.json();
    assert_eq!(w["object"], "chat.completion");
    assert_eq!(w["id"], whole.header("x-request-id").unwrap());
    assert_eq!(w["choices"][0]["message"]["role"], "assistant");
    assert_eq!(w["choices"][0]["finish_reason"], "length");
    assert_eq!(
        w["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9})
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = open(s.addr, "/v1/chat/completions", &[], &streamed).collect();
    let d = data(&events);
    assert_eq!(d[0]["object"], "chat.completion.chunk");
    assert_eq!(
        d[0]["choices"][0]["delta"]["role"], "assistant",
        "the first delta says the role"
    );
    assert!(
        d[0]["choices"][0]["delta"]["content"].is_string(),
        "and carries the first token"
    );
    assert!(d[1]["choices"][0]["delta"].get("role").is_none());
    assert_eq!(
        chunk_text(&events),
        w["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(d[d.len() - 2]["choices"][0]["delta"], json!({}));
    assert_eq!(d[d.len() - 2]["choices"][0]["finish_reason"], "length");
}

#[test]
fn a_chat_without_max_tokens_runs_until_the_engine_stops() {
    let s = server(|p| p.ctx_max = 64, |_| {});
    let body =
        json!({"model": "m", "seed": 11, "messages": [{"role": "user", "content": "tell me"}]});
    let w = post(s.addr, "/v1/chat/completions", &[], &body).json();
    // The mock's end of sequence is the end of its first sentence.
    let text = w["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(w["choices"][0]["finish_reason"], "stop", "{w}");
    assert!(text.ends_with(['.', '!', '?']), "{text:?}");
    assert!(
        !text[..text.len() - 1].contains(['.', '!', '?']),
        "{text:?}"
    );
    // ignore_eos: until the context is full (ctx_max 64 less the two prompt words).
    let mut body = body;
    body["ignore_eos"] = json!(true);
    let w = post(s.addr, "/v1/chat/completions", &[], &body).json();
    assert_eq!(w["choices"][0]["finish_reason"], "length", "{w}");
    assert_eq!(w["usage"]["completion_tokens"], 62);
}

#[test]
fn stop_sequences_end_the_text_before_them() {
    let s = server(|_| {}, |_| {});
    let body = json!({"model": "m", "prompt": "p", "max_tokens": 16, "seed": 42});
    let full = post(s.addr, "/v1/completions", &[], &body).json();
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    // The mock's tokens are words with a leading space: stop at the third one.
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let third = text.match_indices(' ').nth(2).map(|(i, _)| i).unwrap();
    let stop = text[third..].split(' ').nth(1).unwrap();
    assert!(!stop.is_empty(), "{text:?} {words:?}");
    let at = text.find(&format!(" {stop}")).unwrap();
    let mut cut = body.clone();
    cut["stop"] = json!([format!(" {stop}")]);
    let r = post(s.addr, "/v1/completions", &[], &cut).json();
    assert_eq!(
        r["choices"][0]["text"],
        &text[..at],
        "{text:?} stop {stop:?}"
    );
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
}

fn error_of(r: &Response) -> Value {
    let e = r.json();
    let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["error"], "{e}");
    e["error"].clone()
}

#[test]
fn errors_are_openais_shape_and_name_the_field() {
    let s = server(|_| {}, |_| {});
    let cases = [
        (json!({"prompt": "x"}), "model"),
        (json!({"model": "m", "prompt": "x", "n": 2}), "n"),
        (json!({"model": "m", "prompt": ["a", "b"]}), "prompt"),
        (json!({"model": "m", "prompt": [1, 2, 3]}), "prompt"),
        (
            json!({"model": "m", "prompt": "x", "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "prompt": "x", "temperature": 3}),
            "temperature",
        ),
        (
            json!({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
        ),
        (
            json!({"model": "m", "prompt": "x", "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (
            json!({"model": "m", "prompt": "x", "max_tokens": 9000}),
            "max_tokens",
        ),
        // Found by schemathesis: a seed beyond i64 was reported as `body`.
        (json!({"model": "m", "prompt": "x", "seed": 1e30}), "seed"),
        (
            json!({"model": "m", "prompt": "x", "stream": "yes"}),
            "stream",
        ),
        // On the mock, a field that would change the output is refused by name.
        (
            json!({"model": "m", "prompt": "x", "logit_bias": {"1": 5}}),
            "logit_bias",
        ),
    ];
    for (body, param) in cases {
        let r = post(s.addr, "/v1/completions", &[], &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = error_of(&r);
        assert_eq!(e["param"], param, "{body}: {e}");
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["code"], "INVALID_PARAMS");
        assert!(e["message"].as_str().unwrap().contains(param), "{e}");
        assert_eq!(r.header("x-should-retry"), Some("false"));
    }
    // Fields that ask for nothing are fine on the mock.
    let r = post(
        s.addr,
        "/v1/completions",
        &[],
        &json!({"model": "m", "prompt": "x", "logprobs": null, "echo": false, "user": "u1", "presence_penalty": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
    );
    assert_eq!(error_of(&r)["param"], "messages[0].role");
    for (name, value) in [
        ("X-Deadline-Ms", "0"),
        ("X-Priority", "urgent"),
        ("X-Session-Id", "s1"),
    ] {
        let r = post(
            s.addr,
            "/v1/completions",
            &[(name, value)],
            &json!({"model": "m", "prompt": "x"}),
        );
        assert_eq!(r.status, 400, "{name}");
        assert_eq!(error_of(&r)["param"], name);
    }
    // Refusals before routing are in OpenAI's shape too: 405, 413.
    let r = s.get("/v1/completions", &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(error_of(&r)["code"], "INVALID_PARAMS");
    let r = Client::connect(s.addr).send_head_only("POST", "/v1/chat/completions", 10 << 20);
    assert_eq!(r.status, 413);
    assert_eq!(error_of(&r)["code"], "INVALID_PARAMS");
    // The OrchQueue routes keep their envelope.
    let r = s.get("/v1/tasks", &[]);
    assert!(r.json().get("code").is_some(), "{}", r.text());
}

#[test]
fn bearer_keys_work_on_every_route_and_refusals_are_openai_shaped() {
    let s = server(
        |_| {},
        |c| c.server.api_keys = vec![orchd_engine::config::ApiKey::new("sk-right")],
    );
    let body = json!({"model": "m", "prompt": "x", "max_tokens": 2});
    let r = post(s.addr, "/v1/completions", &[], &body);
    assert_eq!(r.status, 401);
    assert_eq!(error_of(&r)["type"], "authentication_error");
    let r = post(
        s.addr,
        "/v1/completions",
        &[("Authorization", "Bearer sk-wrong")],
        &body,
    );
    assert_eq!(r.status, 403);
    assert_eq!(error_of(&r)["type"], "permission_error");
    for auth in [
        ("Authorization", "Bearer sk-right"),
        ("Authorization", "bearer  sk-right"),
        ("X-API-Key", "sk-right"),
    ] {
        let r = post(s.addr, "/v1/completions", &[auth], &body);
        assert_eq!(r.status, 200, "{auth:?}: {}", r.text());
    }
    // A wrong credential is not outweighed by a right one; only Bearer is a scheme.
    let r = post(
        s.addr,
        "/v1/completions",
        &[
            ("X-API-Key", "sk-right"),
            ("Authorization", "Bearer sk-wrong"),
        ],
        &body,
    );
    assert_eq!(r.status, 403);
    let r = post(
        s.addr,
        "/v1/completions",
        &[("X-API-Key", "sk-right"), ("Authorization", "Basic c2s=")],
        &body,
    );
    assert_eq!(r.status, 401);
    assert_eq!(error_of(&r)["param"], "Authorization");
    // On the OrchQueue routes too, and the probes stay open.
    assert_eq!(
        s.get("/v1/capabilities", &[("Authorization", "Bearer sk-right")])
            .status,
        200
    );
    assert_eq!(s.get("/v1/capabilities", &[]).status, 401);
    let h = s.get("/health", &[]);
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
    assert_eq!(s.get("/v1/models", &[]).status, 401);
    assert_eq!(
        s.get("/v1/models", &[("Authorization", "Bearer sk-right")])
            .status,
        200
    );
}

#[test]
fn a_full_queue_is_429_with_the_retry_headers_the_sdks_read() {
    let s = server(
        |p| {
            p.slots = 1;
            p.queue_capacity = 1;
            p.adapter.tpot_ms = 20;
        },
        |_| {},
    );
    let body = json!({"model": "m", "prompt": "x", "max_tokens": 100, "stream": true});
    let running = open(s.addr, "/v1/completions", &[], &body);
    let queued = open(s.addr, "/v1/completions", &[], &body);
    assert_eq!(queued.header("x-queue-position"), Some("1"));
    let r = post(s.addr, "/v1/completions", &[], &body);
    assert_eq!(r.status, 429, "{}", r.text());
    let e = error_of(&r);
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(e["code"], "ADMISSION_REJECT");
    let ms = e["retry_after_ms"].as_u64().expect("retry advice");
    assert!(ms > 0);
    assert_eq!(r.header("retry-after-ms"), Some(ms.to_string().as_str()));
    assert_eq!(r.header("x-backoff-ms"), Some(ms.to_string().as_str()));
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(secs, ms.div_ceil(1000).max(1));
    assert_eq!(r.header("x-should-retry"), Some("true"));
    // The queued stream was told its place in a comment, which clients skip.
    let mut queued = queued;
    let first = queued.next_event().unwrap();
    assert!(first.data["choices"][0]["text"].is_string());
    assert!(
        queued
            .comments()
            .iter()
            .any(|c| c.starts_with("queue_position=1 predicted_start_ms=")),
        "{:?}",
        queued.comments()
    );
    drop((running, queued));
}

#[test]
fn cancel_through_the_request_id_ends_the_stream_race_free() {
    let s = server(|p| p.adapter.tpot_ms = 20, |_| {});
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 500,
        "stream": true, "stream_options": {"include_usage": true}});
    let mut r = open(s.addr, "/v1/chat/completions", &[], &body);
    let id = r.header("x-request-id").unwrap().to_string();
    let first = r.next_event().unwrap();
    assert!(first.data["choices"][0]["delta"]["content"].is_string());
    let c = cancel(s.addr, &id);
    assert_eq!(c.status, 204);
    let tokens: usize = c.header("x-tokens-out").unwrap().parse().unwrap();
    let mut rest = vec![first];
    rest.extend(r.collect());
    let content = rest
        .iter()
        .filter(|e| e.data["choices"][0]["delta"]["content"].is_string())
        .count();
    assert_eq!(content, tokens, "no text after the cancel's answer");
    let d = data(&rest);
    let n = d.len();
    assert_eq!(d[n - 3]["choices"][0]["finish_reason"], "abort");
    assert_eq!(d[n - 2]["usage"]["completion_tokens"], tokens);
    assert_eq!(*d[n - 1], json!("[DONE]"));
}

fn orphaned(s: &TestServer) -> u64 {
    s.get("/metrics", &[])
        .text()
        .lines()
        .filter(|l| l.starts_with("tasks_canceled_total") && l.contains("reason=\"orphaned\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_client_that_leaves_cancels_its_task_after_the_grace() {
    let s = server(
        |p| p.adapter.tpot_ms = 20,
        |c| c.openai.disconnect_grace_ms = 100,
    );
    assert_eq!(orphaned(&s), 0);
    let body = json!({"model": "m", "prompt": "x", "max_tokens": 1000, "stream": true});
    let mut r = open(s.addr, "/v1/completions", &[], &body);
    r.next_event().unwrap();
    drop(r);
    wait_until(
        Duration::from_secs(5),
        "the task canceled as orphaned",
        || match orphaned(&s) {
            1 => Ok(()),
            n => Err(format!("{n} orphaned")),
        },
    );
    // A non-streaming request whose client leaves runs to its end (max_tokens, its
    // deadline): orchd keeps half-closed connections (a client may shut down its
    // sending side and wait for the answer), and a closed one looks the same until
    // the answer is written.
}

#[test]
fn sessions_only_when_asked() {
    let s = server(|_| {}, |c| c.sessions.max_sessions = 1);
    let body = json!({"model": "m", "prompt": "x", "max_tokens": 1});
    // Without X-Session-Id nothing is stored: many requests, no session room taken.
    for _ in 0..3 {
        assert_eq!(post(s.addr, "/v1/completions", &[], &body).status, 200);
    }
    let a = uuid();
    let r = post(s.addr, "/v1/completions", &[("X-Session-Id", &a)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get(&format!("/v1/sessions/{a}"), &[]).json()["turns"], 1);
    let r = post(
        s.addr,
        "/v1/completions",
        &[("X-Session-Id", &uuid())],
        &body,
    );
    assert_eq!(r.status, 429, "the one session room is taken");
    assert_eq!(error_of(&r)["code"], "ADMISSION_REJECT");
}

#[test]
fn models_lists_what_the_pools_serve() {
    let mut c = TestServer::config(1);
    let mut concrete = PoolConfig {
        id: "llama".into(),
        engine: Engine::Vllm,
        model_ref: "llama-3-8b".into(),
        ..PoolConfig::default()
    };
    concrete.adapter.kind = AdapterKind::Mock;
    c.pools.push(concrete);
    let s = TestServer::start(c);
    let m = s.get("/v1/models", &[]).json();
    assert_eq!(m["object"], "list");
    let ids: Vec<&str> = m["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", "llama-3-8b"]);
    assert!(m["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["object"] == "model"));
    // A model is routed to a pool serving it, on any engine.
    let r = post(
        s.addr,
        "/v1/completions",
        &[],
        &json!({"model": "llama-3-8b", "prompt": "x", "max_tokens": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_client_that_re_attaches_in_time_resumes_in_the_same_format() {
    let s = server(
        |p| p.adapter.tpot_ms = 20,
        |c| c.openai.disconnect_grace_ms = 2000,
    );
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 30,
        "seed": 9, "stream": true, "stream_options": {"include_usage": true}});
    let mut r = open(s.addr, "/v1/chat/completions", &[], &body);
    let id = r.header("x-request-id").unwrap().to_string();
    let first: Vec<Event> = (0..3).map(|_| r.next_event().unwrap()).collect();
    drop(r);
    let last = first[2].id.to_string();
    let resumed = Client::connect(s.addr)
        .open_stream(
            &format!("/v1/tasks/{id}/stream?format=openai"),
            &[("Last-Event-ID", &last)],
        )
        .collect();
    assert!(resumed.iter().all(|e| e.id > first[2].id));
    let d = data(&resumed);
    assert_eq!(d[0]["object"], "chat.completion.chunk");
    assert_eq!(d[0]["id"], id.as_str());
    assert_eq!(d[0]["created"], first[0].data["created"]);
    assert!(
        d[0]["choices"][0]["delta"].get("role").is_none(),
        "the role was said already"
    );
    let n = d.len();
    assert_eq!(
        d[n - 3]["choices"][0]["finish_reason"],
        "length",
        "not canceled"
    );
    assert_eq!(d[n - 2]["usage"]["completion_tokens"], 30);
    assert_eq!(*d[n - 1], json!("[DONE]"));
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    whole.as_object_mut().unwrap().remove("stream_options");
    let w = post(s.addr, "/v1/chat/completions", &[], &whole).json();
    let text = chunk_text(&first) + &chunk_text(&resumed);
    assert_eq!(
        text,
        w["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // Another format is refused by name.
    let r = s.get(&format!("/v1/tasks/{id}/stream?format=xml"), &[]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("format"));
}

#[test]
fn browsers_on_allowed_origins_get_cors_answers() {
    let page = "http://127.0.0.1:3000";
    let s = server(
        |_| {},
        |c| {
            c.server.cors_allow_origins = vec![page.into()];
            c.server.api_keys = vec![orchd_engine::config::ApiKey::new("sk-right")];
        },
    );
    // A preflight is answered before auth (it carries no key).
    let r = Client::connect(s.addr).send(
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("Origin", page),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(page));
    let allowed = r.header("access-control-allow-headers").unwrap();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    // The answer names the origin and exposes orchd's headers, errors included.
    let body = json!({"model": "m", "prompt": "x", "max_tokens": 1});
    let ok = post(
        s.addr,
        "/v1/completions",
        &[("Origin", page), ("Authorization", "Bearer sk-right")],
        &body,
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some(page));
    let exposed = ok.header("access-control-expose-headers").unwrap();
    for h in [
        "x-request-id",
        "retry-after",
        "retry-after-ms",
        "x-backoff-ms",
        "x-correlation-id",
    ] {
        assert!(exposed.contains(h), "{h} not in {exposed}");
    }
    let refused = post(s.addr, "/v1/completions", &[("Origin", page)], &body);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("access-control-allow-origin"), Some(page));
    // Another origin gets no CORS answer (the browser then blocks the page).
    let other = "http://evil.example";
    let r = Client::connect(s.addr).send(
        "OPTIONS",
        "/v1/chat/completions",
        &[("Origin", other), ("Access-Control-Request-Method", "POST")],
        b"",
    );
    assert_ne!(
        r.status, 204,
        "not a preflight answer (401 here: keys are on)"
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = post(
        s.addr,
        "/v1/completions",
        &[("Origin", other), ("Authorization", "Bearer sk-right")],
        &body,
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn embeddings_are_deterministic_vectors_as_floats_or_base64() {
    let s = server(
        |p| {
            p.workloads = vec![
                orchd_engine::Workload::Completion,
                orchd_engine::Workload::Embedding,
            ]
        },
        |_| {},
    );
    let body = json!({"model": "m", "input": ["hello world", "bye"]});
    let r = post(s.addr, "/v1/embeddings", &[], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.json();
    assert_eq!(e["object"], "list");
    let data = e["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let first: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(first.len(), 16, "the mock's default dimensions");
    let norm: f64 = first.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    assert_eq!(data[1]["index"], 1);
    assert_eq!(e["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    assert_eq!(
        post(s.addr, "/v1/embeddings", &[], &body).json()["data"],
        e["data"],
        "deterministic"
    );
    // base64: the same floats, little-endian f32.
    let b = post(
        s.addr,
        "/v1/embeddings",
        &[],
        &json!({"model": "m", "input": "hello world", "encoding_format": "base64", "dimensions": 4}),
    )
    .json();
    let text = b["data"][0]["embedding"].as_str().unwrap().to_string();
    assert_eq!(
        text.len(),
        24,
        "4 floats = 16 bytes = 24 base64 characters: {text}"
    );
    let f = post(
        s.addr,
        "/v1/embeddings",
        &[],
        &json!({"model": "m", "input": "hello world", "dimensions": 4}),
    )
    .json();
    let floats: Vec<f32> = f["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let decoded = decode_base64(&text);
    let from_b64: Vec<f32> = decoded
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(from_b64, floats);
    // Errors name the field; a model whose pools take no embeddings is refused by name.
    for (bad, param) in [
        (json!({"model": "m", "input": [1, 2]}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (
            json!({"model": "m", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "m", "input": "x", "dimensions": 0}),
            "dimensions",
        ),
        // The answer is held whole: inputs x dimensions is bounded.
        (
            json!({"model": "m", "input": vec!["x"; 100], "dimensions": 65536}),
            "dimensions",
        ),
    ] {
        let r = post(s.addr, "/v1/embeddings", &[], &bad);
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(error_of(&r)["param"], param, "{bad}");
    }
    let plain = server(|_| {}, |_| {});
    let r = post(
        plain.addr,
        "/v1/embeddings",
        &[],
        &json!({"model": "m", "input": "x"}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r)["param"], "model", "{}", r.text());
}

fn decode_base64(s: &str) -> Vec<u8> {
    let abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.chars().filter(|c| *c != '=') {
        bits = bits << 6 | abc.find(c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn the_connection_limit_refuses_in_openais_shape_on_its_routes() {
    use std::io::{Read, Write};
    let s = server(
        |_| {},
        |c| {
            c.server.shards = 1;
            c.server.max_connections = 2;
        },
    );
    // Two served connections, kept open, fill the limit.
    let held: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(s.addr);
            assert_eq!(c.send("GET", "/livez", &[], b"").status, 200);
            c
        })
        .collect();
    let refusal = |request: &str| {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut all = String::new();
        let _ = c.read_to_string(&mut all);
        all
    };
    let body = r#"{"model":"m","prompt":"x"}"#;
    let openai = refusal(&format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert!(openai.starts_with("HTTP/1.1 503"), "{openai}");
    let lower = openai.to_ascii_lowercase();
    assert!(lower.contains("retry-after-ms: 1000\r\n"), "{openai}");
    assert!(lower.contains("x-should-retry: true\r\n"), "{openai}");
    let json: Value = serde_json::from_str(openai.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["error"]["code"], "REPLICA_EXHAUSTED");
    assert_eq!(json["error"]["type"], "server_error");
    // OrchQueue's routes keep their envelope.
    let plain = refusal("GET /v1/capabilities HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.contains("\"code\":\"REPLICA_EXHAUSTED\""), "{plain}");
    assert!(!plain.contains("\"error\""), "{plain}");
    drop(held);
}

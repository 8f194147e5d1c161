//! SPEC section 2 against a live orchd: admission, streaming, replay, cancel, sessions.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use orchd_engine::config::QueuePolicy;
use orchd_engine::Config;
use orchd_testkit::{
    assert_well_formed, cancel, open_stream, stream, submit_and_stream, task_body, token_text,
    tokens, uuid, Event, Response,
};
use serde_json::json;
use support::TestServer;

/// A config whose mock engine runs as fast as it can.
fn fast(shards: usize) -> Config {
    let mut c = TestServer::config(shards);
    c.pools[0].adapter.ttft_ms = 0;
    c.pools[0].adapter.tpot_ms = 0;
    c
}

/// One slot, a small queue, and tasks slow enough to stay queued.
fn slow_one_slot(queue: u32, policy: QueuePolicy) -> Config {
    let mut c = TestServer::config(2);
    c.pools[0].slots = 1;
    c.pools[0].queue_capacity = queue;
    c.pools[0].policy = policy;
    c.pools[0].adapter.ttft_ms = 0;
    c.pools[0].adapter.tpot_ms = 50;
    c
}

fn submit(s: &TestServer, body: &[u8]) -> Response {
    orchd_testkit::submit(s.addr, &[], body)
}

/// The whole stream of `task`, held to the frame rules.
fn stream_of(s: &TestServer, task: &str) -> Vec<Event> {
    stream(s.addr, &[], task)
}

/// Submits a task of `max_tokens` and streams it to its end: its id and frames.
fn run_to_end(s: &TestServer, max_tokens: u64) -> (String, Vec<Event>) {
    submit_and_stream(s.addr, json!({"max_tokens": max_tokens}))
}

#[test]
fn exact_bytes_of_a_short_deterministic_stream() {
    let s = TestServer::start(fast(2));
    let task = "6f1c3c7e-2b4a-4c1e-9c1d-1a2b3c4d5e6f";
    let r = submit(
        &s,
        &task_body(task, &uuid(), json!({"max_tokens": 3, "seed": 42})),
    );
    assert_eq!(r.status, 202);
    assert_eq!(
        r.json(),
        json!({"task_id": task, "queue_position": 0, "predicted_start_ms": 0, "backoff_ms": 0})
    );

    let resp = open_stream(s.addr, &[], task);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    let events = resp.collect();
    assert_well_formed(&events);
    let raw: String = events[..events.len() - 1]
        .iter()
        .map(|e| e.raw.as_str())
        .collect();
    assert_eq!(
        raw,
        "id: 0\nevent: started\ndata: {\"queue_position\":0,\"predicted_start_ms\":0}\n\n\
         id: 1\nevent: metrics\ndata: {\"queue_depth\":0,\"on_time_probability\":1.0,\"kv_warmth\":false,\"tokens_out\":0}\n\n\
         id: 2\nevent: token\ndata: {\"t\":\" dark\",\"i\":0}\n\n\
         id: 3\nevent: token\ndata: {\"t\":\" left\",\"i\":1}\n\n\
         id: 4\nevent: token\ndata: {\"t\":\" a\",\"i\":2}\n\n"
    );
    let end = events.last().unwrap();
    assert_eq!(end.id, 5);
    assert_eq!(end.event, "end");
    assert_eq!(end.data["tokens_out"], 3);
    assert!(end.data["decode_ms"].is_u64());
    assert!(end.data.get("canceled").is_none());
    let tid = end.data["transcript_id"].as_str().unwrap();
    assert!(tid.starts_with("sha256:"));

    // The transcript is stored, holds the frames, and is addressed by its content.
    let t = s.get(&format!("/v1/artifacts/{tid}"), &[]);
    assert_eq!(t.status, 200);
    let doc = t.json();
    assert_eq!(doc["kind"], "trace");
    assert_eq!(doc["id"], tid);
    let frames = doc["content"]["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 5);
    assert_eq!(
        frames[2],
        "id: 2\nevent: token\ndata: {\"t\":\" dark\",\"i\":0}\n\n"
    );
    assert!(doc["tags"]
        .as_array()
        .unwrap()
        .contains(&json!(format!("task:{task}"))));
}

#[test]
fn replay_from_zero_and_last_event_id_resume() {
    let s = TestServer::start(fast(2));
    let (task, full) = run_to_end(&s, 20);
    // A late second subscriber gets the whole stream from frame 0, byte for byte.
    let again = stream_of(&s, &task);
    assert_eq!(full, again);
    // Resume after frame 5.
    let r = open_stream(s.addr, &[("Last-Event-ID", "5")], &task);
    let rest = r.collect();
    assert_eq!(rest[0].id, 6);
    assert_eq!(rest, full[6..]);
    // Resume after the last frame: nothing more.
    let last = full.last().unwrap().id.to_string();
    let r = open_stream(s.addr, &[("Last-Event-ID", &last)], &task);
    assert_eq!(r.status, 200);
    assert!(r.collect().is_empty());
    // A malformed Last-Event-ID is a 400.
    let r = open_stream(s.addr, &[("Last-Event-ID", "x")], &task);
    assert_eq!(r.status, 400);
}

/// A subscriber behind the frame log (here: a replay of a finished task) gets the
/// frames waiting for it joined into large body chunks, not one chunk per frame, and
/// still every frame, in order, byte for byte.
#[test]
fn a_replayed_backlog_is_sent_in_a_few_large_chunks() {
    let s = TestServer::start(fast(2));
    let (task, full) = run_to_end(&s, 256);
    assert!(full.len() > 256);
    let mut r = open_stream(s.addr, &[], &task);
    let mut again = Vec::new();
    while let Some(e) = r.next_event() {
        again.push(e);
    }
    assert_eq!(again, full);
    // The first frame goes out alone; the ~12 KB behind it fit a few 4 KiB chunks.
    assert!(
        r.chunks <= 8,
        "{} frames in {} chunks",
        full.len(),
        r.chunks
    );
}

/// Found by schemathesis (contracts/schemathesis/run.sh): a client resuming a live task
/// with a Last-Event-ID beyond the frames produced so far was sent the frames produced
/// from then on (ids 2, 3, ... after `Last-Event-ID: 1921`), not only those after n.
#[test]
fn resuming_a_live_task_past_its_frames_sends_none_it_claims_to_have() {
    let mut c = TestServer::config(2);
    c.pools[0].adapter.ttft_ms = 0;
    c.pools[0].adapter.tpot_ms = 20;
    let s = TestServer::start(c);
    let task = uuid();
    assert_eq!(
        submit(&s, &task_body(&task, &uuid(), json!({"max_tokens": 10}))).status,
        202
    );
    // While the task runs (about 200 ms of tokens): ids after 8 only, up to the end.
    let tail = open_stream(s.addr, &[("Last-Event-ID", "8")], &task);
    let beyond = open_stream(s.addr, &[("Last-Event-ID", "1921")], &task);
    let full = stream_of(&s, &task);
    assert_eq!(full.last().unwrap().event, "end");
    assert_eq!(tail.collect(), full[9..]);
    // Past the end: nothing, and the stream ends with the task.
    assert_eq!(beyond.status, 200);
    assert!(beyond.collect().is_empty());
}

#[test]
fn subscribers_on_different_shards_get_identical_frames() {
    let mut c = TestServer::config(2);
    c.pools[0].adapter.ttft_ms = 0;
    c.pools[0].adapter.tpot_ms = 2;
    let s = TestServer::start(c);
    let task = uuid();
    assert_eq!(
        submit(&s, &task_body(&task, &uuid(), json!({"max_tokens": 40}))).status,
        202
    );
    let mut by_shard = std::collections::HashMap::new();
    for _ in 0..64 {
        let r = open_stream(s.addr, &[], &task);
        let shard = r.header("x-orchd-shard").unwrap().to_string();
        by_shard.entry(shard).or_insert(r);
        if by_shard.len() == 2 {
            break;
        }
    }
    assert_eq!(by_shard.len(), 2, "could not land a stream on each shard");
    let mut all: Vec<Vec<Event>> = by_shard.into_values().map(|r| r.collect()).collect();
    let b = all.pop().unwrap();
    let a = all.pop().unwrap();
    assert_well_formed(&a);
    assert_eq!(a, b);
}

#[test]
fn queue_positions_are_0_1_2_and_429_carries_retry_advice() {
    let s = TestServer::start(slow_one_slot(2, QueuePolicy::Reject));
    let ids: Vec<String> = (0..3).map(|_| uuid()).collect();
    let positions: Vec<u64> = ids
        .iter()
        .map(|id| {
            let r = submit(&s, &task_body(id, &uuid(), json!({"max_tokens": 100})));
            assert_eq!(r.status, 202);
            r.json()["queue_position"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(positions, [0, 1, 2]);
    let r = submit(&s, &task_body(&uuid(), &uuid(), json!({"max_tokens": 100})));
    assert_eq!(r.status, 429);
    let body = r.json();
    assert_eq!(body["code"], "ADMISSION_REJECT");
    assert_eq!(body["policy_label"], "reject");
    assert_eq!(body["retriable"], true);
    assert_eq!(body["pool_id"], "default");
    let backoff: u64 = r.header("x-backoff-ms").unwrap().parse().unwrap();
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(body["retry_after_ms"].as_u64(), Some(backoff));
    assert!(backoff > 0);
    assert_eq!(retry_after, backoff.div_ceil(1000).max(1));
    // The queued task's stream says where it stands, and moves up when the first ends.
    cancel(s.addr, &ids[0]);
    let mut r = open_stream(s.addr, &[], &ids[2]);
    let started = r.next_event().unwrap();
    assert_eq!(
        started.data,
        json!({"queue_position": 2, "predicted_start_ms": started.data["predicted_start_ms"]})
    );
    let mut seen = Vec::new();
    while let Some(e) = r.next_event() {
        if e.event == "metrics" {
            if let Some(p) = e.data.get("queue_position") {
                seen.push(p.as_u64().unwrap());
            }
            let p = e.data["on_time_probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p));
        }
        if e.event == "token" {
            break;
        }
    }
    assert_eq!(seen.first(), Some(&2));
    assert!(seen.contains(&1), "moved up: {seen:?}");
}

#[test]
fn drop_lru_evicts_the_oldest_batch_task_with_an_error_frame() {
    let s = TestServer::start(slow_one_slot(2, QueuePolicy::DropLru));
    let running = uuid();
    let batch = uuid();
    let inter = uuid();
    assert_eq!(
        submit(
            &s,
            &task_body(&running, &uuid(), json!({"max_tokens": 100}))
        )
        .status,
        202
    );
    assert_eq!(
        submit(
            &s,
            &task_body(
                &batch,
                &uuid(),
                json!({"max_tokens": 100, "priority": "batch"})
            )
        )
        .status,
        202
    );
    assert_eq!(
        submit(&s, &task_body(&inter, &uuid(), json!({"max_tokens": 100}))).status,
        202
    );
    let r = submit(&s, &task_body(&uuid(), &uuid(), json!({"max_tokens": 100})));
    assert_eq!(r.status, 202, "admitted by evicting");
    let victim = stream_of(&s, &batch);
    let last = victim.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "QUEUE_FULL_DROP_LRU");
    // Interactive tasks are not evicted while a batch task was there to take.
    let mut r = open_stream(s.addr, &[], &inter);
    assert_eq!(r.next_event().unwrap().event, "started");
}

#[test]
fn tokens_are_the_same_on_every_shard_and_every_run() {
    let text = |s: &TestServer, seed: u64| {
        let extra = json!({"max_tokens": 16, "seed": seed, "prompt": "determinism"});
        token_text(&submit_and_stream(s.addr, extra).1)
    };
    let mut texts = HashSet::new();
    for _ in 0..2 {
        let s = TestServer::start(fast(2));
        for _ in 0..4 {
            texts.insert(text(&s, 99));
        }
    }
    assert_eq!(texts.len(), 1, "{texts:?}");
    // Another seed gives another text.
    let s = TestServer::start(fast(2));
    assert!(!texts.contains(&text(&s, 100)));
}

#[test]
fn cancel_racing_token_production_never_leaks_a_token() {
    let mut c = fast(2);
    c.pools[0].adapter.tpot_ms = 1;
    c.sessions.max_turns = 1000;
    let s = TestServer::start(c);
    let mut canceled = 0;
    for round in 0..200 {
        let task = uuid();
        let r = submit(&s, &task_body(&task, &uuid(), json!({"max_tokens": 32})));
        assert_eq!(r.status, 202);
        let mut reader = open_stream(s.addr, &[], &task);
        // Read a varying number of frames before canceling.
        for _ in 0..(round % 7) {
            reader.next_event();
        }
        let r = cancel(s.addr, &task);
        assert_eq!(r.status, 204);
        let n: u64 = r.header("x-tokens-out").unwrap().parse().unwrap();
        let mut rest = Vec::new();
        while let Some(e) = reader.next_event() {
            rest.push(e);
        }
        let all_tokens = stream_of(&s, &task);
        let produced = tokens(&all_tokens).len() as u64;
        assert_eq!(
            produced, n,
            "round {round}: X-Tokens-Out is the exact count"
        );
        let end = all_tokens.last().unwrap();
        assert_eq!(end.data["tokens_out"].as_u64(), Some(n));
        if end.data.get("canceled") == Some(&json!(true)) {
            canceled += 1;
        } else {
            assert_eq!(n, 32, "only a finished task ends without canceled");
        }
        // Canceling again is a no-op with the same count.
        let again = cancel(s.addr, &task);
        assert_eq!(again.status, 204);
        assert_eq!(
            again
                .header("x-tokens-out")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
            n
        );
    }
    assert!(canceled > 0, "no round canceled mid-stream");
}

#[test]
fn a_client_that_stops_reading_does_not_hold_up_others() {
    let mut c = fast(1);
    c.pools[0].slots = 8;
    let s = TestServer::start(c);
    let big = uuid();
    assert_eq!(
        submit(
            &s,
            &task_body(
                &big,
                &uuid(),
                json!({"max_tokens": 4000, "prompt": "x".repeat(2000)})
            )
        )
        .status,
        202
    );
    // This client opens the stream and never reads it.
    let stalled = open_stream(s.addr, &[], &big);
    for _ in 0..5 {
        let (_, events) = run_to_end(&s, 200);
        assert_eq!(events.last().unwrap().event, "end");
    }
    // The stalled client, once it reads, still gets a complete, gap-free stream.
    let events = stalled.collect();
    assert_well_formed(&events);
    assert_eq!(tokens(&events).len(), 4000);
}

#[test]
fn concurrent_tasks_of_one_session_never_overspend_its_budget() {
    let mut c = slow_one_slot(100, QueuePolicy::Reject);
    c.pools[0].slots = 4;
    c.sessions.tokens_budget = 100;
    c.sessions.max_turns = 100;
    let s = TestServer::start(c);
    let session = uuid();
    let results: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let s = &s;
                let session = session.clone();
                scope.spawn(move || {
                    submit(s, &task_body(&uuid(), &session, json!({"max_tokens": 10})))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted: Vec<&Response> = results.iter().filter(|r| r.status == 202).collect();
    assert_eq!(admitted.len(), 10);
    for r in results.iter().filter(|r| r.status != 202) {
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["policy_label"], "budget-tokens");
        assert_eq!(r.json()["retriable"], false);
    }
    let remaining: HashSet<u64> = admitted
        .iter()
        .map(|r| {
            r.header("x-budget-tokens-remaining")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(remaining, (0..10).map(|i| i * 10).collect::<HashSet<u64>>());
    let view = s.get(&format!("/v1/sessions/{session}"), &[]).json();
    assert_eq!(view["tokens_budget_remaining"], 0);
    assert_eq!(view["turns"], 10);
}

#[test]
fn sessions_turns_defaults_and_delete() {
    let s = TestServer::start(fast(2));
    let session = uuid();
    let fresh = s.get(&format!("/v1/sessions/{session}"), &[]).json();
    assert_eq!(
        fresh,
        json!({"ttl_ms_remaining": 600000, "turns": 0, "kv_bytes": 0, "kv_warmth": false})
    );
    for i in 0..8 {
        let task = uuid();
        let r = submit(&s, &task_body(&task, &session, json!({})));
        assert_eq!(r.status, 202, "turn {i}");
        stream_of(&s, &task);
    }
    let r = submit(&s, &task_body(&uuid(), &session, json!({})));
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], "ADMISSION_REJECT");
    assert_eq!(r.json()["policy_label"], "session-turns");
    assert!(r.header("retry-after").is_none());
    let view = s.get(&format!("/v1/sessions/{session}"), &[]).json();
    assert_eq!(view["turns"], 8);
    assert_eq!(view["kv_warmth"], true);
    assert!(view["kv_bytes"].as_u64().unwrap() > 0);
    assert!(view["ttl_ms_remaining"].as_u64().unwrap() <= 600000);
    let d = s
        .client()
        .send("DELETE", &format!("/v1/sessions/{session}"), &[], b"");
    assert_eq!(d.status, 204);
    assert_eq!(
        s.get(&format!("/v1/sessions/{session}"), &[]).json()["turns"],
        0
    );
    assert_eq!(
        submit(&s, &task_body(&uuid(), &session, json!({}))).status,
        202
    );
    assert_eq!(s.get("/v1/sessions/not-a-uuid", &[]).status, 400);
}

#[test]
fn resubmission_is_idempotent_and_a_different_body_conflicts() {
    let s = TestServer::start(slow_one_slot(4, QueuePolicy::Reject));
    let task = uuid();
    let session = uuid();
    let body = task_body(&task, &session, json!({}));
    let a = submit(&s, &body);
    let b = submit(&s, &body);
    assert_eq!((a.status, b.status), (202, 202));
    assert_eq!(a.json(), b.json());
    let c = submit(&s, &task_body(&task, &session, json!({"seed": 8})));
    assert_eq!(c.status, 409);
    assert_eq!(c.json()["code"], "INVALID_PARAMS");
    assert_eq!(
        s.get(&format!("/v1/sessions/{session}"), &[]).json()["turns"],
        1
    );
}

#[test]
fn bad_requests_are_refused_naming_the_field() {
    let mut c = fast(2);
    c.pools[0].adapter.ttft_ms = 50;
    c.pools[0].adapter.tpot_ms = 10;
    c.pools[0].model_ref = "llama-3".into();
    c.pools[0].ctx_max = 4096;
    let s = TestServer::start(c);
    let base = |extra| task_body(&uuid(), &uuid(), extra);
    let cases = [
        (
            json!({"model_ref": "llama-3", "ctx": 0}),
            400,
            "INVALID_PARAMS",
            "ctx",
        ),
        (
            json!({"model_ref": "llama-3", "ctx": 8192}),
            400,
            "INVALID_PARAMS",
            "ctx",
        ),
        (
            json!({"model_ref": "llama-3", "max_tokens": 5000}),
            400,
            "INVALID_PARAMS",
            "max_tokens",
        ),
        (
            json!({"model_ref": "llama-3", "workload": "embedding"}),
            400,
            "INVALID_PARAMS",
            "workload",
        ),
        (
            json!({"model_ref": "llama-3", "engine": "vllm"}),
            503,
            "POOL_UNAVAILABLE",
            "model",
        ),
        (
            json!({"model_ref": "other"}),
            503,
            "POOL_UNAVAILABLE",
            "model",
        ),
        (
            json!({"model_ref": "llama-3", "deadline_ms": 60}),
            400,
            "DEADLINE_UNMET",
            "deadline_ms",
        ),
        (
            json!({"model_ref": "llama-3", "priority": "urgent"}),
            400,
            "INVALID_PARAMS",
            "priority",
        ),
        (
            json!({"model_ref": "llama-3", "task_id": "123"}),
            400,
            "INVALID_PARAMS",
            "task_id",
        ),
        (
            json!({"model_ref": "llama-3", "seed": "x"}),
            400,
            "INVALID_PARAMS",
            "seed",
        ),
    ];
    for (extra, status, code, field) in cases {
        let r = submit(&s, &base(extra.clone()));
        assert_eq!(r.status, status, "{extra}");
        let b = r.json();
        assert_eq!(b["code"], code, "{extra}");
        assert!(
            b["message"].as_str().unwrap().contains(field),
            "{extra}: {b}"
        );
        assert_eq!(b["retriable"], false, "{extra}");
    }
    let r = submit(&s, &base(json!({"model_ref": "llama-3", "ctx": 8192})));
    assert_eq!(r.json()["engine"], "llamacpp");
    for garbage in [&b"{\"task_id\": "[..], b"not json", b"[1,2]", b""] {
        let r = submit(&s, garbage);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["code"], "INVALID_PARAMS");
    }
    // Unknown task: 404 for stream and cancel; a bad id is 400.
    assert_eq!(
        s.get(&format!("/v1/tasks/{}/stream", uuid()), &[]).status,
        404
    );
    assert_eq!(
        s.client()
            .send("POST", &format!("/v1/tasks/{}/cancel", uuid()), &[], b"")
            .status,
        404
    );
    assert_eq!(s.get("/v1/tasks/nope/stream", &[]).status, 400);
}

#[test]
fn orphaned_tasks_are_canceled_and_idle_streams_get_heartbeats() {
    let mut c = slow_one_slot(4, QueuePolicy::Reject);
    c.stream.orphan_timeout_ms = 300;
    c.stream.heartbeat_ms = 50;
    let s = TestServer::start(c);
    // Nobody ever subscribes: canceled after the orphan timeout, counted from admission.
    let lonely = uuid();
    assert_eq!(
        submit(
            &s,
            &task_body(&lonely, &uuid(), json!({"max_tokens": 1000}))
        )
        .status,
        202
    );
    std::thread::sleep(Duration::from_millis(900));
    let events = stream_of(&s, &lonely);
    assert_eq!(events.last().unwrap().data["canceled"], true);
    // A queued task with a subscriber is kept, gets heartbeats and queued metrics.
    let first = uuid();
    let second = uuid();
    submit(&s, &task_body(&first, &uuid(), json!({"max_tokens": 20})));
    submit(&s, &task_body(&second, &uuid(), json!({"max_tokens": 2})));
    let mut keep = open_stream(s.addr, &[], &first);
    let mut r = open_stream(s.addr, &[], &second);
    let mut queued_metrics = 0;
    let mut rest = Vec::new();
    while let Some(e) = r.next_event() {
        if e.event == "metrics" && e.data.get("queue_position").is_some() {
            queued_metrics += 1;
        }
        rest.push(e);
    }
    assert!(r.heartbeats() > 0, "no heartbeat while queued for ~1s");
    assert!(
        queued_metrics >= 2,
        "metrics while queued: {queued_metrics}"
    );
    assert_well_formed(&rest);
    assert_eq!(rest.last().unwrap().event, "end");
    while keep.next_event().is_some() {}
}

#[test]
fn a_deadline_that_passes_during_decode_ends_the_stream_with_an_error() {
    let mut c = fast(2);
    c.pools[0].adapter.tpot_ms = 20;
    let s = TestServer::start(c);
    // The prediction (5 expected tokens, ~100 ms) fits; the real run (100 tokens) does not.
    let (_, events) = submit_and_stream(
        s.addr,
        json!({"max_tokens": 100, "expected_tokens": 5, "deadline_ms": 400}),
    );
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "DEADLINE_UNMET");
    assert_eq!(last.data["engine"], "llamacpp");
}

#[test]
fn an_engine_slower_than_the_watchdog_ends_with_decode_timeout() {
    let mut c = fast(2);
    c.pools[0].adapter.ttft_ms = 600;
    c.pools[0].adapter.decode_timeout_ms = 150;
    let s = TestServer::start(c);
    let (_, events) = run_to_end(&s, 4);
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "DECODE_TIMEOUT");
    assert!(tokens(&events).is_empty());
}

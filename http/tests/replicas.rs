//! Replica sets (issue 20): a pool over several engine replicas (`adapter.urls`), each
//! with its own slots and health probe; a session's tasks go to one replica and move
//! when it dies. Against in-test engines that speak the OpenAI wire format (the real
//! llama.cpp servers are in `real_engine.rs`).

mod support;

use std::time::Duration;

use orchd_engine::config::{AdapterKind, PoolConfig};
use orchd_testkit::fake_engine::{FakeEngine, Mode};
use orchd_testkit::{
    cancel, open_stream, stream, submit, task_body, tokens, uuid, wait_until, Event,
};
use serde_json::json;
use support::TestServer;

const SLOTS: u32 = 2;

fn server(engines: &[FakeEngine]) -> TestServer {
    server_probing(engines, 100)
}

fn server_probing(engines: &[FakeEngine], health_interval_ms: u64) -> TestServer {
    server_with(engines, health_interval_ms, true)
}

fn server_with(engines: &[FakeEngine], health_interval_ms: u64, spread: bool) -> TestServer {
    let mut c = TestServer::config(2);
    let mut p = PoolConfig {
        id: "set".into(),
        slots: SLOTS,
        ..PoolConfig::default()
    };
    p.adapter.kind = AdapterKind::Openai;
    p.adapter.urls = engines.iter().map(|e| e.url()).collect();
    p.adapter.health_interval_ms = health_interval_ms;
    p.adapter.connect_timeout_ms = 500;
    p.adapter.retries = 0;
    p.adapter.spread_replicas = spread;
    c.pools = vec![p];
    c.sessions.max_turns = 1000;
    TestServer::start(c)
}

/// How many generations each engine has been asked for.
fn asked(engines: &[FakeEngine]) -> Vec<usize> {
    engines.iter().map(|e| e.generations().len()).collect()
}

/// Runs one task of `session` to its end: the engine that was asked for it (the one
/// whose count moved, exactly one) and the task's frames.
fn turn(s: &TestServer, engines: &[FakeEngine], session: &str, n: u32) -> (usize, Vec<Event>) {
    let before = asked(engines);
    let task = uuid();
    let r = submit(
        s.addr,
        &[],
        &task_body(&task, session, json!({"max_tokens": n})),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let frames = stream(s.addr, &[], &task);
    (the_one_asked(engines, &before), frames)
}

/// The one engine asked for a generation since `before` (exactly one, exactly once).
fn the_one_asked(engines: &[FakeEngine], before: &[usize]) -> usize {
    let after = asked(engines);
    let moved: Vec<usize> = (0..engines.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "one engine answers a task: {before:?} -> {after:?}"
    );
    assert_eq!(after[moved[0]], before[moved[0]] + 1);
    moved[0]
}

fn replica_states(s: &TestServer) -> Vec<(String, String)> {
    let h = s.get("/v1/pools/set/health", &[]).json();
    h["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn concurrency(s: &TestServer) -> u64 {
    let caps = s.get("/v1/capabilities", &[]).json();
    caps["engines"][0]["concurrency"].as_u64().unwrap()
}

/// Runs one completion of the OpenAI door (no session) to its end: the engine that was
/// asked for it.
fn completion(s: &TestServer, engines: &[FakeEngine], prompt: &str) -> usize {
    let before = asked(engines);
    let body = json!({"model": "m", "prompt": prompt, "max_tokens": 2});
    let r = s.post("/v1/completions", &[], body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    the_one_asked(engines, &before)
}

#[test]
fn prompts_that_start_alike_go_to_one_replica_without_a_session() {
    let engines = [
        FakeEngine::start(),
        FakeEngine::start(),
        FakeEngine::start(),
    ];
    let s = server(&engines);
    // `adapter.prefix_bytes` is 256 by default: prompts sharing their first 256 bytes
    // meet on one replica, whatever follows.
    let document = |k: usize| format!("Document {k}: {}", "the same long instructions ".repeat(12));
    let mut homes = Vec::new();
    for k in 0..9 {
        let home = completion(&s, &engines, &format!("{} question 0", document(k)));
        for q in 1..3 {
            let again = completion(&s, &engines, &format!("{} question {q}", document(k)));
            assert_eq!(again, home, "document {k}, question {q}");
        }
        homes.push(home);
    }
    homes.sort();
    homes.dedup();
    assert!(homes.len() > 1, "nine prefixes, one replica: {homes:?}");
    // A short prompt has no prefix to keep: the replica with the most free slots (all
    // idle: the first).
    assert_eq!(completion(&s, &engines, "short"), 0);
    assert_eq!(
        routing(&s),
        [0, 27, 1, 0, 0],
        "by session, prefix, free slots; missed"
    );

    // Its own replica full (two slow completions hold its two slots), a prompt goes to
    // the next one, and the miss is counted.
    let home = homes_of(&s, &engines, &document(0));
    // 1.5 s a token: the slots stay taken well past the next request on a busy machine.
    engines[home].set_tpot(Duration::from_millis(1500));
    let seen = engines[home].generations().len();
    let slow: Vec<_> = (0..2)
        .map(|q| {
            let addr = s.addr;
            let body = json!({"model": "m", "prompt": format!("{} slow {q}", document(0)), "max_tokens": 2});
            std::thread::spawn(move || {
                let r = orchd_testkit::Client::connect(addr).send(
                    "POST",
                    "/v1/completions",
                    &[],
                    body.to_string().as_bytes(),
                );
                assert_eq!(r.status, 200, "{}", r.text());
            })
        })
        .collect();
    wait_until(Duration::from_secs(5), "its own replica full", || {
        engines[home].generations().len() == seen + 2
    });
    let elsewhere = completion(&s, &engines, &format!("{} question 9", document(0)));
    assert_ne!(elsewhere, home);
    for t in slow {
        t.join().unwrap();
    }
    assert_eq!(
        routing(&s),
        [0, 31, 1, 0, 1],
        "27, the look-up, the two slow, the one elsewhere"
    );
    s.shutdown();
}

/// The replica prompts starting with `prefix` go to while all have room.
fn homes_of(s: &TestServer, engines: &[FakeEngine], prefix: &str) -> usize {
    completion(s, engines, &format!("{prefix} which replica?"))
}

/// `replica_routing_total` by session, prefix and free slots, then
/// `replica_affinity_missed_total` by session and prefix, of the pool "set".
fn routing(s: &TestServer) -> [u64; 5] {
    let text = s.get("/metrics", &[]).text();
    let value = |family: &str, by: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&format!("by=\"{by}\"")))
            .unwrap_or_else(|| panic!("no {family} by {by} in {text}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    };
    [
        value("replica_routing_total", "session"),
        value("replica_routing_total", "prefix"),
        value("replica_routing_total", "free_slots"),
        value("replica_affinity_missed_total", "session"),
        value("replica_affinity_missed_total", "prefix"),
    ]
}

#[test]
fn a_sessions_tasks_stay_on_one_replica_and_sessions_spread_over_the_set() {
    let engines = [
        FakeEngine::start(),
        FakeEngine::start(),
        FakeEngine::start(),
    ];
    let s = server(&engines);
    // Each replica is listed with its own slots, and the pool has all of them.
    let h = s.get("/v1/pools/set/health", &[]).json();
    let ids: Vec<String> = engines.iter().map(|e| e.addr.to_string()).collect();
    let listed: Vec<&str> = h["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "{h}");
    assert!(h["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["slots"] == SLOTS));
    assert_eq!(h["metrics"]["slots_total"], 3 * SLOTS, "{h}");
    assert_eq!(concurrency(&s), u64::from(3 * SLOTS));

    let mut used = [0usize; 3];
    for _ in 0..12 {
        let session = uuid();
        let (first, frames) = turn(&s, &engines, &session, 3);
        assert_eq!(tokens(&frames).len(), 3);
        for _ in 0..2 {
            let (again, _) = turn(&s, &engines, &session, 3);
            assert_eq!(again, first, "every turn of a session on its replica");
        }
        used[first] += 1;
    }
    assert!(
        used.iter().filter(|&&n| n > 0).count() >= 2,
        "twelve sessions over three replicas: {used:?}"
    );

    assert_eq!(
        routing(&s),
        [36, 0, 0, 0, 0],
        "every turn on its session's replica"
    );

    // Series labeled replica_id are kept per replica: what ran on each, by its id; what
    // no replica holds (tasks enqueued) under the pool's set of ids.
    let text = s.get("/metrics", &[]).text();
    let samples = |family: &str| -> Vec<(String, u64)> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter(|l| !l.contains("priority=\"batch\""))
            .map(|l| {
                let id = l
                    .split("replica_id=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                let v = l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64;
                (id.to_string(), v)
            })
            .collect()
    };
    let tokens_out = samples("tokens_out_total");
    let mut by_id: Vec<(String, u64)> = tokens_out.clone();
    by_id.sort();
    let mut want: Vec<(String, u64)> = (0..3)
        .map(|i| (ids[i].clone(), used[i] as u64 * 9))
        .collect();
    want.sort();
    assert_eq!(
        by_id, want,
        "3 tokens x 3 turns per session, on its replica: {text}"
    );
    let started: u64 = samples("tasks_started_total").iter().map(|(_, v)| v).sum();
    assert_eq!(started, 36);
    let set = ids.join(",");
    assert_eq!(samples("tasks_enqueued_total"), vec![(set, 36)], "{text}");
}

#[test]
fn a_replica_that_dies_ends_its_streams_with_worker_reset_and_its_sessions_move() {
    let mut engines = vec![
        FakeEngine::start(),
        FakeEngine::start(),
        FakeEngine::start(),
    ];
    let s = server(&engines);
    let a = uuid();
    let (home, _) = turn(&s, &engines, &a, 2);
    // A session that lives on another replica.
    let (b, b_home) = (0..50)
        .map(|_| {
            let b = uuid();
            let (at, _) = turn(&s, &engines, &b, 1);
            (b, at)
        })
        .find(|(_, at)| *at != home)
        .expect("a session on another replica");

    // a's replica dies three tokens into a's next task, while b's task streams on another.
    for e in &engines {
        e.set_tpot(Duration::from_millis(20));
    }
    engines[home].set_mode(Mode::DieAfter(3));
    let (ta, tb) = (uuid(), uuid());
    let body = |t: &str, session: &str| task_body(t, session, json!({"max_tokens": 20}));
    assert_eq!(submit(s.addr, &[], &body(&ta, &a)).status, 202);
    assert_eq!(submit(s.addr, &[], &body(&tb, &b)).status, 202);
    let (ra, rb) = (open_stream(s.addr, &[], &ta), open_stream(s.addr, &[], &tb));
    let (fa, fb) = (ra.collect(), rb.collect());
    let last = fa.last().unwrap();
    assert_eq!(last.event, "error", "{fa:?}");
    assert_eq!(last.data["code"], "WORKER_RESET", "{fa:?}");
    assert_eq!(
        fb.last().unwrap().event,
        "end",
        "the other replica's stream is undisturbed"
    );
    assert_eq!(tokens(&fb).len(), 20);

    // It stays dead: its probe finds nobody listening, and the pool loses its slots.
    let dead = engines.remove(home);
    let dead_id = dead.addr.to_string();
    drop(dead);
    wait_until(
        Duration::from_secs(5),
        "the dead replica to be down",
        || {
            replica_states(&s)
                .iter()
                .any(|(id, state)| *id == dead_id && state == "down")
        },
    );
    let states = replica_states(&s);
    assert_eq!(
        states.iter().filter(|(_, st)| st == "up").count(),
        2,
        "{states:?}"
    );
    assert_eq!(concurrency(&s), u64::from(2 * SLOTS));

    // a's next task goes to a live replica and runs; b stays where it was.
    for e in &engines {
        e.set_tpot(Duration::from_millis(1));
    }
    let (_, frames) = turn(&s, &engines, &a, 4);
    assert_eq!(tokens(&frames).len(), 4);
    assert_eq!(frames.last().unwrap().event, "end");
    let b_now = if b_home < home { b_home } else { b_home - 1 };
    let (again, _) = turn(&s, &engines, &b, 2);
    assert_eq!(again, b_now, "a session whose replica lives stays on it");
}

/// Stops engine `home` (the replica of `session`) and runs the session's next turn:
/// refused by its replica, it runs whole on another, and the refusal marks the stopped
/// one down. The replica it ran on (an index into what is left of `engines`).
fn refused_and_moved(
    s: &TestServer,
    engines: &mut Vec<FakeEngine>,
    home: usize,
    session: &str,
) -> usize {
    let dead = engines.remove(home);
    let dead_id = dead.addr.to_string();
    drop(dead);
    let (ran_on, frames) = turn(s, engines, session, 5);
    assert_eq!(tokens(&frames).len(), 5);
    assert_eq!(frames.last().unwrap().event, "end", "{frames:?}");
    let states = replica_states(s);
    assert!(
        states.iter().any(|(id, st)| *id == dead_id && st == "down"),
        "the refusal marked it down: {states:?}"
    );
    ran_on
}

#[test]
fn a_task_its_replica_refuses_before_any_token_runs_on_another() {
    // Probes too rare to notice anything here: only the task finds its replica gone.
    let mut engines = vec![
        FakeEngine::start(),
        FakeEngine::start(),
        FakeEngine::start(),
    ];
    let s = server_probing(&engines, 60_000);
    let session = uuid();
    let (home, _) = turn(&s, &engines, &session, 2);
    let ran_on = refused_and_moved(&s, &mut engines, home, &session);
    // And the session stays on the replica it moved to.
    assert_eq!(turn(&s, &engines, &session, 2).0, ran_on);
}

#[test]
fn a_drained_replica_finishes_its_tasks_and_takes_no_new_one() {
    let engines = vec![
        FakeEngine::start(),
        FakeEngine::start(),
        FakeEngine::start(),
    ];
    let s = server(&engines);
    let session = uuid();
    let (home, _) = turn(&s, &engines, &session, 2);
    let home_id = engines[home].addr.to_string();
    for e in &engines {
        e.set_tpot(Duration::from_millis(20));
    }
    // A task runs on the replica when it is drained: it finishes.
    let task = uuid();
    let body = task_body(&task, &session, json!({"max_tokens": 30}));
    assert_eq!(submit(s.addr, &[], &body).status, 202);
    let running = open_stream(s.addr, &[], &task);
    let drain = |replica: &str, deadline_ms: u64| {
        let body = json!({"deadline_ms": deadline_ms, "replica": replica}).to_string();
        s.post(
            "/v1/pools/set/drain",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    };
    let r = drain(&home_id, 10_000);
    assert_eq!(r.status, 202, "{}", r.text());
    let doc = r.json();
    assert_eq!(
        (&doc["replica"], &doc["draining"]),
        (&json!(home_id), &json!(true)),
        "{doc}"
    );
    let frames = running.collect();
    assert_eq!(
        frames.last().unwrap().event,
        "end",
        "a drained replica's task finishes"
    );
    assert_eq!(tokens(&frames).len(), 30);
    let states = replica_states(&s);
    assert!(
        states.contains(&(home_id.clone(), "draining".into())),
        "{states:?}"
    );
    assert_eq!(concurrency(&s), u64::from(2 * SLOTS));
    // Its session goes on elsewhere; the pool stays ready.
    for e in &engines {
        e.set_tpot(Duration::from_millis(1));
    }
    let (now, _) = turn(&s, &engines, &session, 2);
    assert_ne!(now, home);
    assert_eq!(s.get("/v1/pools/set/health", &[]).json()["ready"], true);
    // Not a string: 400 naming the field (null included).
    let null = json!({"deadline_ms": 0, "replica": null}).to_string();
    let r = s.post(
        "/v1/pools/set/drain",
        &[("content-type", "application/json")],
        null.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["message"].as_str().unwrap().contains("replica"),
        "{}",
        r.text()
    );
    // No such replica: 404, the replica named.
    let r = drain("10.9.9.9:1", 0);
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].as_str().unwrap().contains("10.9.9.9:1"));
    // A deadline that passes ends what still runs there.
    let other = (0..3).find(|&i| i != home && i != now).unwrap();
    let other_session = (0..100)
        .map(|_| uuid())
        .find(|sess| turn(&s, &engines, sess, 1).0 == other)
        .expect("a session on the third replica");
    engines[other].set_tpot(Duration::from_millis(50));
    let task = uuid();
    let body = task_body(&task, &other_session, json!({"max_tokens": 100}));
    assert_eq!(submit(s.addr, &[], &body).status, 202);
    let running = open_stream(s.addr, &[], &task);
    assert_eq!(drain(&engines[other].addr.to_string(), 0).status, 202);
    let frames = running.collect();
    let last = frames.last().unwrap();
    assert_eq!(last.event, "error", "{last:?}");
    assert_eq!(last.data["code"], "POOL_UNAVAILABLE");
    assert!(
        last.data["message"]
            .as_str()
            .unwrap()
            .contains("was drained"),
        "{last:?}"
    );
}

/// The shard each replica's engine is talked to from, and the pool owner's.
fn shards_of(s: &TestServer) -> (Vec<u64>, u64) {
    let h = s.get("/v1/pools/set/health", &[]).json();
    let of = |r: &serde_json::Value| r["shard"].as_u64().unwrap();
    let replicas = h["replicas"].as_array().unwrap().iter().map(of).collect();
    (replicas, h["metrics"]["shard"].as_u64().unwrap())
}

/// A set's replicas are spread over the shards (issue 20): each engine is talked to from
/// one core, the fewest from the pool's owner, which keeps the queue and the tasks. What
/// a replica driven from another shard streams reaches the client whole and in order,
/// cancel stays exact (no token after it, `X-Tokens-Out` the count streamed), and its
/// failures end tasks as on the owner: a stream cut mid-way `WORKER_RESET`, a refusal
/// before the first token moves the task to another replica and marks this one down.
#[test]
fn a_sets_replicas_are_driven_from_every_shard() {
    let mut engines = vec![
        FakeEngine::start(),
        FakeEngine::start(),
        FakeEngine::start(),
    ];
    // Probes too rare to notice anything here: only tasks find a replica gone.
    let s = server_probing(&engines, 60_000);
    let (shards, owner) = shards_of(&s);
    let other = 1 - owner;
    assert_eq!(shards, vec![other, owner, other]);

    // A session whose replica is driven from the other shard.
    let (session, at) = (0..50)
        .map(|_| {
            let session = uuid();
            let (at, _) = turn(&s, &engines, &session, 1);
            (session, at)
        })
        .find(|(_, at)| shards[*at] == other)
        .expect("a session on a replica of the other shard");
    // Tokens as fast as the engine writes them: all, in order.
    engines[at].set_tpot(Duration::ZERO);
    let (again, frames) = turn(&s, &engines, &session, 300);
    assert_eq!(again, at);
    let want: Vec<String> = (0..300).map(orchd_testkit::fake_engine::token).collect();
    assert_eq!(tokens(&frames), want);
    orchd_testkit::assert_well_formed(&frames);

    // Canceled after a varying number of frames: nothing leaks past the cancel.
    engines[at].set_tpot(Duration::from_millis(2));
    let mut canceled = 0;
    for round in 0..12 {
        let task = uuid();
        let body = task_body(&task, &session, json!({"max_tokens": 40}));
        let r = submit(s.addr, &[], &body);
        assert_eq!(r.status, 202, "{}", r.text());
        let mut reader = open_stream(s.addr, &[], &task);
        for _ in 0..(round % 6) {
            reader.next_event();
        }
        let r = cancel(s.addr, &task);
        assert_eq!(r.status, 204);
        let n: usize = r.header("x-tokens-out").unwrap().parse().unwrap();
        while reader.next_event().is_some() {}
        let frames = stream(s.addr, &[], &task);
        assert_eq!(tokens(&frames).len(), n, "round {round}");
        if frames.last().unwrap().data.get("canceled") == Some(&json!(true)) {
            canceled += 1;
        }
    }
    assert!(canceled > 0, "no round canceled mid-stream");

    // Its engine cuts the stream three tokens in.
    engines[at].set_mode(Mode::DieAfter(3));
    let task = uuid();
    let body = task_body(&task, &session, json!({"max_tokens": 20}));
    assert_eq!(submit(s.addr, &[], &body).status, 202);
    let frames = stream(s.addr, &[], &task);
    let last = frames.last().unwrap();
    assert_eq!(
        (last.event.as_str(), &last.data["code"]),
        ("error", &json!("WORKER_RESET")),
        "{frames:?}"
    );
    assert_eq!(tokens(&frames).len(), 3);

    // It is gone: the next turn is refused there and runs on another replica.
    refused_and_moved(&s, &mut engines, at, &session);
    s.shutdown();

    // `spread_replicas = false`: every replica on the owner.
    let s = server_with(&engines, 100, false);
    let (shards, owner) = shards_of(&s);
    assert_eq!(shards, vec![owner; 2]);
    let (_, frames) = turn(&s, &engines, &uuid(), 3);
    assert_eq!(tokens(&frames).len(), 3);
    s.shutdown();
}

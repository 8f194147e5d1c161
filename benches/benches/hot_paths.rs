//! The hot primitives, one bench each: SSE frame encoding, the admission decision
//! (accept and each kind of refusal), mock token generation, and a mailbox round trip
//! between two threads (the cross-shard hop).
//!
//! `cargo bench -p orchd-benches --bench hot_paths` (see benches/README.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use orchd_engine::admission::{Admission, Eta, Outcome};
use orchd_engine::frame::{self, BudgetRemaining, Event};
use orchd_engine::mock::MockTokens;
use orchd_engine::task::TaskSpec;
use orchd_engine::Config;
use orchd_shards::mesh::{self, Reply};
use uuid::Uuid;

fn spec(task: u128, session: u128) -> TaskSpec {
    let body = serde_json::json!({
        "task_id": Uuid::from_u128(task), "session_id": Uuid::from_u128(session), "workload": "completion",
        "model_ref": "m", "engine": "llamacpp", "ctx": 4096, "priority": "interactive", "max_tokens": 64,
        "deadline_ms": 60000, "prompt": "hello there, how are you", "seed": 7
    });
    TaskSpec::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    g.bench_function("token", |b| {
        b.iter(|| frame::token(black_box(1234), black_box(1200), black_box(" hello")))
    });
    let budgets = BudgetRemaining {
        tokens_budget_remaining: Some(100),
        ..Default::default()
    };
    g.bench_function("metrics", |b| {
        b.iter(|| {
            let m = frame::Metrics {
                queue_depth: 3,
                on_time_probability: 0.987,
                kv_warmth: true,
                queue_position: None,
                predicted_start_ms: None,
                tokens_out: Some(black_box(64)),
                budgets: &budgets,
            };
            frame::encode(black_box(70), Event::Metrics, &m)
        })
    });
    g.finish();
}

fn parse(c: &mut Criterion) {
    let body = serde_json::to_vec(&serde_json::json!({
        "task_id": Uuid::from_u128(1), "session_id": Uuid::from_u128(2), "workload": "completion",
        "model_ref": "meta-llama/Llama-3.1-8B-Instruct", "engine": "vllm", "ctx": 8192, "priority": "interactive",
        "max_tokens": 256, "deadline_ms": 30000, "prompt": "Summarize the following text in three sentences please.",
        "seed": 42, "determinism": "strict", "kv_hint": "reuse"
    }))
    .unwrap();
    c.bench_function(&format!("task_request/parse_{}B", body.len()), |b| {
        b.iter(|| TaskSpec::parse(black_box(&body)).unwrap())
    });
}

fn admission(c: &mut Criterion) {
    let mut g = c.benchmark_group("admission");
    let mut config = Config::default();
    config.pools[0].slots = 1_000_000;
    config.pools[0].queue_capacity = 0;
    config.sessions.max_turns = u32::MAX;
    // Accept: a fresh task each time, then its end, so the pool never fills.
    let eta0 = Eta::new(
        config.pools[0].adapter.ttft_ms,
        config.pools[0].adapter.tpot_ms,
    );
    g.bench_function("accept", |b| {
        let mut a = Admission::new(&config);
        let mut n = 0u128;
        b.iter_batched(
            || {
                n += 1;
                spec(n, n)
            },
            |s| {
                let r = a.admit(&s, 0).unwrap();
                let outcome = Outcome {
                    ran: true,
                    ..Outcome::default()
                };
                let mut eta = eta0;
                eta.observe(&outcome);
                a.on_finished(s.task_id, outcome, eta, 0);
                r
            },
            BatchSize::SmallInput,
        )
    });
    // Refusals: queue full (reject), unknown model, deadline.
    let mut full = Config::default();
    full.pools[0].slots = 1;
    full.pools[0].queue_capacity = 0;
    full.pools[0].model_ref = "m".into();
    let mut a = Admission::new(&full);
    a.admit(&spec(1, 1), 0).unwrap();
    let refused = spec(2, 2);
    g.bench_function("refuse_queue_full", |b| {
        b.iter(|| a.admit(black_box(&refused), 0).unwrap_err())
    });
    let mut other = spec(3, 3);
    other.model_ref = "other".into();
    g.bench_function("refuse_no_pool", |b| {
        b.iter(|| a.admit(black_box(&other), 0).unwrap_err())
    });
    let mut late = spec(4, 4);
    late.deadline_ms = 1;
    g.bench_function("refuse_deadline", |b| {
        b.iter(|| a.admit(black_box(&late), 0).unwrap_err())
    });
    g.finish();
}

fn mock(c: &mut Criterion) {
    let s = spec(1, 1);
    let mut m = MockTokens::new(&s, "m");
    c.bench_function("mock/next_token", |b| b.iter(|| black_box(m.next_token())));
}

enum Cmd {
    Echo(u64, Reply<u64>),
}

fn mailbox(c: &mut Criterion) {
    let (mb, inbox) = mesh::mailbox::<Cmd>(1024);
    let worker = std::thread::spawn(move || {
        futures_lite::future::block_on(async {
            while let Some(Cmd::Echo(x, reply)) = inbox.recv().await {
                let _ = reply.send(x);
            }
        })
    });
    c.bench_function("mesh/request_round_trip_cross_thread", |b| {
        b.iter(|| {
            futures_lite::future::block_on(mb.request(|r| Cmd::Echo(black_box(7), r))).unwrap()
        })
    });
    drop(mb);
    worker.join().unwrap();
}

criterion_group!(benches, frames, parse, admission, mock, mailbox);
criterion_main!(benches);

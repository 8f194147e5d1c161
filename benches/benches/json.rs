//! Request-body JSON: serde_json (what orchd parses with) against simd-json's serde API,
//! for the two bodies orchd parses whose sizes differ most: a typical `POST /v1/tasks`
//! (~360 bytes) and a large `POST /v1/artifacts` (~64 KiB). simd-json rewrites its
//! input, and a request body arrives as immutable `Bytes`, so its figures include the
//! copy: into a fresh `Vec` per parse, or into a buffer kept per shard together with
//! simd-json's own parse buffers (the best it could do inside orchd). The decision
//! these figures made is `docs/why-serde-json.md`.
//!
//! `cargo bench -p orchd-benches --bench json`

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use orchd_engine::artifact::NewArtifact;
use orchd_engine::task::TaskSpec;
use serde_json::json;
use uuid::Uuid;

/// A `POST /v1/tasks` as clients send it: every common field, a one-line prompt.
fn task_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "task_id": Uuid::from_u128(1), "session_id": Uuid::from_u128(2), "workload": "completion",
        "model_ref": "meta-llama/Llama-3.1-8B-Instruct", "engine": "vllm", "ctx": 8192,
        "priority": "interactive", "max_tokens": 256, "deadline_ms": 30000,
        "prompt": "Summarize the following text in three sentences please.", "seed": 42,
        "kv_hint": "cold"
    }))
    .unwrap()
}

/// A `POST /v1/artifacts` of about 64 KiB: a plan whose steps carry prose with escapes
/// (quotes, newlines), numbers and booleans, plus tags and metadata.
fn artifact_body() -> Vec<u8> {
    let steps: Vec<_> = (0..216)
        .map(|i| {
            json!({
                "id": i,
                "title": format!("Step {i}: refactor the \"admission\" path"),
                "detail": "Read the queue mirror, decide, then send the start notice.\n\
                           Keep the owner's RefCell borrow short; yield before the next pop.\n\
                           Check: p99 stays under 2 ms at 1,000 streams.",
                "tokens": 120 + i,
                "ratio": 0.125 * f64::from(i % 8),
                "done": i % 3 == 0,
                "deps": [i / 2, i / 3],
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "kind": "plan",
        "content": {"title": "orchd structure pass", "steps": steps},
        "tags": ["plan", "structure", "task:0b5e"],
        "metadata": {"author": "bench", "version": 3},
    }))
    .unwrap()
}

/// What `TaskSpec::parse` does, with simd-json in place of serde_json.
fn simd_task(body: &mut [u8], buffers: Option<&mut simd_json::Buffers>) -> TaskSpec {
    let spec: TaskSpec = match buffers {
        Some(b) => simd_json::serde::from_slice_with_buffers(body, b),
        None => simd_json::serde::from_slice(body),
    }
    .unwrap();
    spec.validate().unwrap();
    spec
}

/// What `NewArtifact::parse` does, with simd-json in place of serde_json (its checks
/// are on `content`'s type and on the tags, a few ns at this size).
fn simd_artifact(body: &mut [u8], buffers: Option<&mut simd_json::Buffers>) -> NewArtifact {
    let a: NewArtifact = match buffers {
        Some(b) => simd_json::serde::from_slice_with_buffers(body, b),
        None => simd_json::serde::from_slice(body),
    }
    .unwrap();
    assert!(a.content.is_object());
    a
}

/// serde_json and both simd-json variants on `body`, in group `g`.
fn compare<T>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    body: &[u8],
    serde: impl Fn(&[u8]) -> T,
    simd: impl Fn(&mut [u8], Option<&mut simd_json::Buffers>) -> T,
) {
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("serde_json", |b| b.iter(|| serde(black_box(body))));
    g.bench_function("simd_json_copy", |b| {
        b.iter(|| simd(&mut black_box(body).to_vec(), None))
    });
    let mut scratch = Vec::with_capacity(body.len());
    let mut buffers = simd_json::Buffers::new(body.len());
    g.bench_function("simd_json_reused_buffers", |b| {
        b.iter(|| {
            scratch.clear();
            scratch.extend_from_slice(black_box(body));
            simd(&mut scratch, Some(&mut buffers))
        })
    });
}

fn bench(c: &mut Criterion) {
    let task = task_body();
    let artifact = artifact_body();
    // Both parsers must agree before their speed means anything.
    assert_eq!(
        TaskSpec::parse(&task).unwrap(),
        simd_task(&mut task.clone(), None)
    );
    assert_eq!(
        NewArtifact::parse(&artifact).unwrap().content,
        simd_artifact(&mut artifact.clone(), None).content
    );

    let mut g = c.benchmark_group(format!("json/task_{}B", task.len()));
    compare(&mut g, &task, |b| TaskSpec::parse(b).unwrap(), simd_task);
    g.finish();

    let mut g = c.benchmark_group(format!("json/artifact_{}B", artifact.len()));
    compare(
        &mut g,
        &artifact,
        |b| NewArtifact::parse(b).unwrap(),
        simd_artifact,
    );
    // The handler's whole CPU work (parse, then the canonical form, its sha256 and the
    // stored document): how much of it the parse is.
    g.bench_function("serde_json_parse_and_store", |b| {
        b.iter(|| {
            NewArtifact::parse(black_box(&artifact))
                .unwrap()
                .into_stored()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

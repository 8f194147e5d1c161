//! The official `openai` Python SDK against orchd's OpenAI-compatible routes
//! (`openai_sdk.py` beside this file): on the mock, and in front of a real llama.cpp
//! server. They need the SDK (pinned, installed by `.ci/run` into a directory it owns
//! and named by `ORCHD_OPENAI_SDK`) and, for the second, the real engine: each is
//! `#[ignore]`d, and `.ci/run` runs them in its stage of ignored tests.

mod support;

use std::path::PathBuf;
use std::process::Command;

use orchd_engine::config::{AdapterKind, ApiKey, PoolConfig};
use orchd_engine::{Engine, Workload};
use support::TestServer;

const KEY: &str = "sk-orchd-sdk-test";

fn pool(id: &str, model: &str, slots: u32, queue: u32, tpot_ms: u64) -> PoolConfig {
    let mut p = PoolConfig {
        id: id.into(),
        model_ref: model.into(),
        slots,
        queue_capacity: queue,
        ..PoolConfig::default()
    };
    p.adapter.ttft_ms = 0;
    p.adapter.tpot_ms = tpot_ms;
    p
}

/// Runs the SDK script against `s`; panics with its output if a check failed.
fn run_sdk(s: &TestServer, mode: &str) {
    let sdk = std::env::var("ORCHD_OPENAI_SDK").unwrap_or_else(|_| {
        panic!("ORCHD_OPENAI_SDK is not set: the directory holding the openai SDK (.ci/run installs it)")
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_sdk.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("PYTHONPATH", sdk)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("ORCHD_URL", format!("http://{}", s.addr))
        .env("ORCHD_KEY", KEY)
        .env("ORCHD_MODE", mode)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the SDK checks failed:\n{text}");
}

#[test]
#[ignore = "needs the openai Python SDK: ORCHD_OPENAI_SDK (.ci/run installs it)"]
fn the_openai_sdk_drives_orchd_on_the_mock() {
    let mut c = TestServer::config(2);
    c.server.api_keys = vec![ApiKey::new(KEY)];
    c.openai.disconnect_grace_ms = 200;
    c.pools = vec![
        pool("fast", "m", 64, 256, 0),
        pool("small", "small", 2, 2, 20),
        pool("paced", "paced", 16, 64, 20),
        PoolConfig {
            workloads: vec![Workload::Embedding],
            ..pool("embedder", "embedder", 4, 16, 0)
        },
    ];
    let s = TestServer::start(c);
    run_sdk(&s, "mock");
}

#[test]
#[ignore = "needs the openai Python SDK and a real llama.cpp server: ORCHD_OPENAI_SDK, ORCHD_REAL_ENGINE_URL (.ci/run)"]
fn the_openai_sdk_drives_orchd_in_front_of_llama_cpp() {
    let url = std::env::var("ORCHD_REAL_ENGINE_URL")
        .unwrap_or_else(|_| panic!("ORCHD_REAL_ENGINE_URL is not set (.ci/run starts one)"));
    let mut c = TestServer::config(2);
    c.server.api_keys = vec![ApiKey::new(KEY)];
    c.openai.disconnect_grace_ms = 100;
    let mut p = PoolConfig {
        id: "real".into(),
        engine: Engine::Llamacpp,
        model_ref: "real".into(),
        slots: 1,
        ..PoolConfig::default()
    };
    p.adapter.kind = AdapterKind::Openai;
    p.adapter.url = Some(url);
    p.adapter.decode_timeout_ms = 10_000;
    c.pools = vec![p];
    let s = TestServer::start(c);
    run_sdk(&s, "real");
}

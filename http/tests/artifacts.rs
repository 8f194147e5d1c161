//! Artifacts (SPEC section 3) against a live orchd: both backends, limits, faults.

mod support;

use std::path::PathBuf;

use std::time::Duration;

use orchd_engine::config::ArtifactBackend;
use orchd_engine::Config;
use orchd_testkit::{submit_and_stream, uuid, wait_until, Response};
use serde_json::json;
use support::TestServer;

fn post(s: &TestServer, body: &serde_json::Value) -> Response {
    s.client().send(
        "POST",
        "/v1/artifacts",
        &[],
        &serde_json::to_vec(body).unwrap(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "orchd-art-{}-{name}-{}",
        std::process::id(),
        uuid()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn fs_config(dir: &std::path::Path) -> Config {
    let mut c = TestServer::config(2);
    c.artifacts.backend = ArtifactBackend::Fs;
    c.artifacts.dir = dir.to_path_buf();
    c.pools[0].adapter.ttft_ms = 0;
    c.pools[0].adapter.tpot_ms = 0;
    c
}

fn round_trip(s: &TestServer) {
    let body = json!({"kind": "plan", "content": {"steps": ["a", "b"], "n": 1}, "tags": ["t1"], "metadata": {"by": "test"}});
    let r = post(s, &body);
    assert_eq!(r.status, 201);
    let created = r.json();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71);
    assert_eq!(created["kind"], "plan");
    assert_eq!(created["digest"], id[7..]);
    assert_eq!(created["tags"], json!(["t1"]));
    assert!(created["created_ms"].as_u64().unwrap() > 1_700_000_000_000);
    // Same content (keys in another order, other tags) is the same artifact.
    let again = post(
        s,
        &json!({"content": {"n": 1, "steps": ["a", "b"]}, "kind": "plan", "tags": ["t2"]}),
    );
    assert_eq!(again.status, 201);
    assert_eq!(again.json()["id"], id.as_str());
    assert_eq!(again.json()["created_ms"], created["created_ms"]);
    // Another kind is another artifact.
    assert_ne!(
        post(
            s,
            &json!({"kind": "summary", "content": {"n": 1, "steps": ["a", "b"]}})
        )
        .json()["id"],
        id.as_str()
    );
    let g = s.get(&format!("/v1/artifacts/{id}"), &[]);
    assert_eq!(g.status, 200);
    let doc = g.json();
    assert_eq!(doc["content"], json!({"steps": ["a", "b"], "n": 1}));
    assert_eq!(doc["metadata"], json!({"by": "test"}));
    assert_eq!(doc["id"], id.as_str());
}

fn refusals(s: &TestServer) {
    let missing = format!("sha256:{}", "0".repeat(64));
    assert_eq!(s.get(&format!("/v1/artifacts/{missing}"), &[]).status, 404);
    assert_eq!(s.get("/v1/artifacts/sha256:xyz", &[]).status, 400);
    let r = post(s, &json!({"kind": "poem", "content": {}}));
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("kind"));
    assert_eq!(
        post(s, &json!({"kind": "plan", "content": "text"})).status,
        400
    );
    assert_eq!(post(s, &json!({"kind": "plan"})).status, 400);
    let r = s
        .client()
        .send_head_only("POST", "/v1/artifacts", 2_000_000);
    assert_eq!(r.status, 413);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("max_body_bytes"));
}

#[test]
fn memory_backend_round_trip_and_refusals() {
    let s = TestServer::start(TestServer::config(2));
    round_trip(&s);
    refusals(&s);
}

/// Found by schemathesis (contracts/schemathesis/run.sh): OpenAPI clients percent-encode
/// the `:` of the id in the path, and count a tag's length in characters, as JSON
/// Schema's `maxLength` does; both were refused with 400.
#[test]
fn percent_encoded_ids_and_tags_of_multibyte_characters_are_accepted() {
    let s = TestServer::start(TestServer::config(2));
    // 256 characters of 2 bytes each: within "1 to 256 characters".
    let tag = "\u{e9}".repeat(256);
    let r = post(
        &s,
        &json!({"kind": "plan", "content": {"percent": true}, "tags": [tag]}),
    );
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    for encoded in [id.replace(':', "%3A"), id.replace(':', "%3a")] {
        let g = s.get(&format!("/v1/artifacts/{encoded}"), &[]);
        assert_eq!(g.status, 200, "{encoded}");
        assert_eq!(g.json()["id"], id.as_str());
        assert_eq!(g.json()["tags"], json!([tag]));
    }
    let absent = format!("sha256%3A{}", "0".repeat(64));
    assert_eq!(s.get(&format!("/v1/artifacts/{absent}"), &[]).status, 404);
    // Still refused: 257 characters, a malformed escape, an escaped control character.
    let long = json!({"kind": "plan", "content": {}, "tags": ["\u{e9}".repeat(257)]});
    assert_eq!(post(&s, &long).status, 400);
    for bad in [
        "sha256%3".to_string(),
        format!("sha256%3G{}", "0".repeat(64)),
        format!("sha256%0A{}", "0".repeat(64)),
        format!("sha256%FF{}", "0".repeat(64)),
    ] {
        let g = s.get(&format!("/v1/artifacts/{bad}"), &[]);
        assert_eq!(g.status, 400, "{bad}");
        assert!(g.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("artifact id:"));
    }
}

#[test]
fn memory_backend_refuses_user_artifacts_with_507_when_full_after_evicting_transcripts() {
    let mut c = TestServer::config(1);
    c.artifacts.max_memory_bytes = 4096;
    c.pools[0].adapter.ttft_ms = 0;
    c.pools[0].adapter.tpot_ms = 0;
    let s = TestServer::start(c);
    let (_, events) = submit_and_stream(s.addr, json!({"max_tokens": 4}));
    let transcript = events.last().unwrap().data["transcript_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.get(&format!("/v1/artifacts/{transcript}"), &[]).status,
        200
    );
    let mut statuses = Vec::new();
    for i in 0..40 {
        let r = post(
            &s,
            &json!({"kind": "other", "content": {"i": i, "pad": "p".repeat(200)}}),
        );
        statuses.push(r.status);
        if r.status == 507 {
            assert_eq!(r.json()["code"], "INTERNAL");
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&507), "{statuses:?}");
    assert!(statuses[..statuses.len() - 1].iter().all(|s| *s == 201));
    // The transcript went first; every user artifact acknowledged is still there.
    assert_eq!(
        s.get(&format!("/v1/artifacts/{transcript}"), &[]).status,
        404
    );
}

#[test]
fn fs_backend_round_trip_survives_restart_and_keeps_transcripts() {
    let dir = temp_dir("restart");
    let s = TestServer::start(fs_config(&dir));
    round_trip(&s);
    refusals(&s);
    let id = post(&s, &json!({"kind": "diff", "content": {"a": 1}})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, events) = submit_and_stream(s.addr, json!({"max_tokens": 3}));
    let transcript = events.last().unwrap().data["transcript_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The transcript is written after the end frame is sent: wait until it is readable.
    wait_until(
        Duration::from_secs(5),
        "the transcript to be stored",
        || s.get(&format!("/v1/artifacts/{transcript}"), &[]).status == 200,
    );
    s.shutdown();

    let s = TestServer::start(fs_config(&dir));
    assert_eq!(
        s.get(&format!("/v1/artifacts/{id}"), &[]).json()["content"],
        json!({"a": 1})
    );
    let t = s.get(&format!("/v1/artifacts/{transcript}"), &[]);
    assert_eq!(t.status, 200);
    assert_eq!(t.json()["kind"], "trace");
    assert!(t.json()["tags"]
        .as_array()
        .unwrap()
        .contains(&json!("transcript")));
    // A corrupted file is detected by its digest and never served.
    let path = dir.join(format!("{}.json", &id[7..]));
    std::fs::write(&path, br#"{"id":"x","kind":"diff","content":{"a":2}}"#).unwrap();
    let r = s.get(&format!("/v1/artifacts/{id}"), &[]);
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["code"], "UNTRUSTED_ARTIFACT");
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unusable_artifact_directory_gives_500_while_streams_keep_working() {
    // The directory sits under a regular file: every create fails (ENOTDIR), as for a
    // read-only mount, and that holds for root too.
    let blocker = temp_dir("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let s = TestServer::start(fs_config(&blocker.join("artifacts")));
    let r = post(&s, &json!({"kind": "plan", "content": {"a": 1}}));
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["code"], "INTERNAL");
    let missing = format!("sha256:{}", "1".repeat(64));
    assert_eq!(s.get(&format!("/v1/artifacts/{missing}"), &[]).status, 500);
    for _ in 0..3 {
        let (_, events) = submit_and_stream(s.addr, json!({"max_tokens": 5}));
        assert_eq!(events.last().unwrap().event, "end");
    }
    drop(s);
    std::fs::remove_file(&blocker).unwrap();
}

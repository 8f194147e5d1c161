//! Tenants (issue 19) against a live orchd: `[[tenants]]` keys (plain and as SHA-256
//! digests) are accepted on every route like `server.api_keys`; drain and reload need a
//! key of a tenant with role `operator` (403 naming the role otherwise);
//! `server.api_keys` stay the operator tenant `default`; two keys of two tenants in one
//! request are refused. Tenants own their tasks, sessions and artifacts (another
//! tenant gets 404, a fresh session, a task of its own for the same id); quotas refuse
//! with advice; the fair share is in `fair_share.rs`.

mod support;

use orchd_engine::config::{key_digest, ApiKey, Role, TenantConfig};
use orchd_testkit::{assert_well_formed, task_body, uuid, Client};
use serde_json::json;
use support::TestServer;

const OPS_KEY: &str = "k-ops-6a1f";
const CLIENT_KEY: &str = "k-client-2b7c";
const HASHED_KEY: &str = "k-hashed-9d4e";
const LEGACY_KEY: &str = "k-legacy-5e0a";
const A_KEY: &str = "k-team-a-7c3d";

fn hex(d: [u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn server() -> TestServer {
    let mut c = TestServer::config(2);
    c.server.api_keys = vec![ApiKey::new(LEGACY_KEY)];
    c.tenants = vec![
        TenantConfig {
            name: "ops".into(),
            keys: vec![ApiKey::new(OPS_KEY)],
            role: Role::Operator,
            ..TenantConfig::default()
        },
        TenantConfig {
            name: "team-b".into(),
            keys: vec![ApiKey::new(CLIENT_KEY)],
            key_sha256: vec![hex(key_digest(HASHED_KEY))],
            ..TenantConfig::default()
        },
        TenantConfig {
            name: "team-a".into(),
            keys: vec![ApiKey::new(A_KEY)],
            ..TenantConfig::default()
        },
    ];
    TestServer::start(c)
}

fn send(
    s: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> orchd_testkit::Response {
    Client::connect(s.addr).send(method, path, headers, body)
}

#[test]
fn every_tenant_key_runs_tasks_and_only_operators_drain_and_reload() {
    let s = server();
    let bearer_hashed = format!("Bearer {HASHED_KEY}");
    let callers: [(&str, &str, bool); 4] = [
        ("x-api-key", OPS_KEY, true),
        ("x-api-key", CLIENT_KEY, false),
        ("authorization", &bearer_hashed, false),
        ("x-api-key", LEGACY_KEY, true),
    ];
    for (header, value, operator) in callers {
        let h = [(header, value)];
        let task = uuid();
        let r = send(
            &s,
            "POST",
            "/v1/tasks",
            &h,
            &task_body(&task, &uuid(), json!({"max_tokens": 3})),
        );
        assert_eq!(r.status, 202, "{header}: {}", r.text());
        let frames: Vec<_> = Client::connect(s.addr)
            .open_stream(&format!("/v1/tasks/{task}/stream"), &h)
            .collect();
        assert_well_formed(&frames);
        assert_eq!(frames.last().unwrap().event, "end");

        let body = serde_json::to_vec(&json!({"new_model_ref": "m"})).unwrap();
        let reload = send(&s, "POST", "/v1/pools/default/reload", &h, &body);
        let drain_body = serde_json::to_vec(&json!({"deadline_ms": 1000})).unwrap();
        let drain = send(&s, "POST", "/v1/pools/nope/drain", &h, &drain_body);
        if operator {
            // Past auth: an operator reaches the pool (reload runs; an unknown pool is 404).
            assert_eq!(reload.status, 200, "{}", reload.text());
            assert_eq!(reload.json()["model_ref"], "m");
            assert_eq!(drain.status, 404, "{}", drain.text());
        } else {
            for (what, r) in [("pool reload", &reload), ("pool drain", &drain)] {
                assert_eq!(r.status, 403, "{what}: {}", r.text());
                let e = r.json();
                let msg = e["message"].as_str().unwrap();
                assert!(msg.contains(what) && msg.contains("role operator"), "{msg}");
                assert!(
                    msg.contains("\"team-b\"") && msg.contains("role client"),
                    "{msg}"
                );
            }
        }
    }
}

#[test]
fn keys_of_two_tenants_in_one_request_are_refused() {
    let s = server();
    // X-API-Key and a Bearer token together, as a client that mixes credentials sends.
    let both = |bearer_key: &str| {
        let bearer = format!("Bearer {bearer_key}");
        send(
            &s,
            "GET",
            "/v1/capabilities",
            &[("x-api-key", CLIENT_KEY), ("authorization", &bearer)],
            b"",
        )
    };
    let r = both(OPS_KEY);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("two different tenants"));
    // Two keys of one tenant are one caller.
    let r = both(HASHED_KEY);
    assert_eq!(r.status, 200, "{}", r.text());
    // Unknown and missing keys as before.
    assert_eq!(
        send(
            &s,
            "GET",
            "/v1/capabilities",
            &[("x-api-key", "k-nobody")],
            b""
        )
        .status,
        403
    );
    assert_eq!(send(&s, "GET", "/v1/capabilities", &[], b"").status, 401);
}

#[test]
fn a_tenants_tasks_sessions_and_artifacts_are_its_own() {
    let s = server();
    let (a, b) = ([("x-api-key", A_KEY)], [("x-api-key", CLIENT_KEY)]);
    let (task, session) = (uuid(), uuid());
    let body = task_body(&task, &session, json!({"max_tokens": 3}));
    assert_eq!(send(&s, "POST", "/v1/tasks", &a, &body).status, 202);
    let frames: Vec<_> = Client::connect(s.addr)
        .open_stream(&format!("/v1/tasks/{task}/stream"), &a)
        .collect();
    assert_well_formed(&frames);
    let transcript = frames.last().unwrap().data["transcript_id"]
        .as_str()
        .unwrap()
        .to_string();
    let a_transcript = send(&s, "GET", &format!("/v1/artifacts/{transcript}"), &a, b"");
    assert_eq!(a_transcript.status, 200, "{}", a_transcript.text());
    // The transcript shows the ids team-a sent, never orchd's scoped ones.
    let content = &a_transcript.json()["content"];
    assert_eq!(
        (content["task_id"].as_str(), content["session_id"].as_str()),
        (Some(task.as_str()), Some(session.as_str()))
    );

    // Another tenant knows the ids: every route is 404, with the answer an id nobody
    // uses gets (no existence oracle).
    let nobodys = uuid();
    let no_artifact = format!("sha256:{}", "0".repeat(64));
    for (method, path, unknown) in [
        ("GET", "/v1/tasks/ID/stream", &nobodys),
        ("GET", "/v1/tasks/ID/stream?format=openai", &nobodys),
        ("POST", "/v1/tasks/ID/cancel", &nobodys),
        ("GET", "/v1/artifacts/ARTIFACT", &no_artifact),
    ] {
        let known = path.replace("ID", &task).replace("ARTIFACT", &transcript);
        let r = send(&s, method, &known, &b, b"");
        assert_eq!(r.status, 404, "{method} {known}: {}", r.text());
        let other = path.replace("ID", unknown).replace("ARTIFACT", unknown);
        let u = send(&s, method, &other, &b, b"");
        let message = |r: &orchd_testkit::Response, id: &str| {
            r.json()["message"].as_str().unwrap().replace(id, "X")
        };
        assert_eq!(
            (u.status, message(&r, &task).replace(&transcript, "X")),
            (404, message(&u, unknown)),
            "{known}"
        );
    }
    // ... its session of that id is its own, fresh one; deleting it leaves team-a's.
    let sess =
        |h: &[(&str, &str)]| send(&s, "GET", &format!("/v1/sessions/{session}"), h, b"").json();
    assert_eq!(sess(&a)["turns"], 1);
    assert_eq!(sess(&b)["turns"], 0);
    assert_eq!(
        send(&s, "DELETE", &format!("/v1/sessions/{session}"), &b, b"").status,
        204
    );
    assert_eq!(sess(&a)["turns"], 1);
    // ... and the same task id is simply a task of its own: 202 (not 409) with another
    // body, streamed as its own.
    let other = task_body(&task, &session, json!({"max_tokens": 2, "prompt": "other"}));
    let r = send(&s, "POST", "/v1/tasks", &b, &other);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["task_id"], task.as_str());
    assert_eq!(r.json()["queue_position"], 0, "not team-a's finished task");
    let theirs: Vec<_> = Client::connect(s.addr)
        .open_stream(&format!("/v1/tasks/{task}/stream"), &b)
        .collect();
    assert_well_formed(&theirs);
    assert_eq!(theirs.last().unwrap().data["tokens_out"], 2);
    assert_eq!(sess(&b)["turns"], 1);
    // team-a's task is untouched: its stream replays its own three tokens.
    let again: Vec<_> = Client::connect(s.addr)
        .open_stream(&format!("/v1/tasks/{task}/stream"), &a)
        .collect();
    assert_eq!(again.last().unwrap().data["tokens_out"], 3);
    assert_eq!(
        send(&s, "POST", &format!("/v1/tasks/{task}/cancel"), &a, b"").status,
        204
    );

    // Artifacts: visible to the tenants that stored them, each its own copy.
    let doc = serde_json::to_vec(&json!({"kind": "plan", "content": {"step": 1}, "tags": ["a"]}))
        .unwrap();
    let stored = send(&s, "POST", "/v1/artifacts", &a, &doc);
    assert_eq!(stored.status, 201, "{}", stored.text());
    let id = stored.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        send(&s, "GET", &format!("/v1/artifacts/{id}"), &b, b"").status,
        404
    );
    let doc_b = serde_json::to_vec(&json!({"kind": "plan", "content": {"step": 1}, "tags": ["b"]}))
        .unwrap();
    let mine = send(&s, "POST", "/v1/artifacts", &b, &doc_b);
    assert_eq!(
        (mine.status, mine.json()["id"].as_str()),
        (201, Some(id.as_str()))
    );
    assert_eq!(
        mine.json()["tags"],
        json!(["b"]),
        "its own copy, not team-a's tags"
    );
    for (h, tag) in [(&a, "a"), (&b, "b")] {
        let r = send(&s, "GET", &format!("/v1/artifacts/{id}"), h, b"");
        assert_eq!((r.status, r.json()["tags"].clone()), (200, json!([tag])));
    }
}

#[test]
fn an_openai_door_task_is_its_tenants_own() {
    let s = server();
    let (a, b) = ([("x-api-key", A_KEY)], [("x-api-key", CLIENT_KEY)]);
    let body = serde_json::to_vec(&json!({"model": "m", "prompt": "hi", "max_tokens": 2})).unwrap();
    let r = send(&s, "POST", "/v1/completions", &a, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(r.json()["id"], id.as_str());
    // Its X-Session-Id is team-a's session: team-b's same id is another, fresh one.
    let session = uuid();
    let ha = [a[0], ("x-session-id", session.as_str())];
    assert_eq!(send(&s, "POST", "/v1/completions", &ha, &body).status, 200);
    let turns = |h: &[(&str, &str)]| {
        send(&s, "GET", &format!("/v1/sessions/{session}"), h, b"").json()["turns"].clone()
    };
    assert_eq!((turns(&a), turns(&b)), (json!(1), json!(0)));
    let path = format!("/v1/tasks/{id}/stream?format=openai");
    let mine = send(&s, "GET", &path, &a, b"");
    assert_eq!(mine.status, 200, "{}", mine.text());
    assert!(
        mine.text().contains(&id),
        "chunks carry the id team-a was given"
    );
    assert_eq!(send(&s, "GET", &path, &b, b"").status, 404);
}

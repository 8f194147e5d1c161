//! Tenants and roles (issue 19, first part) against a live orchd: `[[tenants]]` keys
//! (plain and as SHA-256 digests) are accepted on every route like `server.api_keys`;
//! drain and reload need a key of a tenant with role `operator` (403 naming the role
//! otherwise); `server.api_keys` stay the operator tenant `default`; two keys of two
//! tenants in one request are refused.

mod support;

use orchd_engine::config::{key_digest, ApiKey, Role, TenantConfig};
use orchd_testkit::{assert_well_formed, task_body, uuid, Client};
use serde_json::json;
use support::TestServer;

const OPS_KEY: &str = "k-ops-6a1f";
const CLIENT_KEY: &str = "k-client-2b7c";
const HASHED_KEY: &str = "k-hashed-9d4e";
const LEGACY_KEY: &str = "k-legacy-5e0a";

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

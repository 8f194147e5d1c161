//! The foundation against a live orchd: auth, correlation ids, capabilities, routing
//! errors, limits, shards. (SPEC sections 1, 3 capabilities, 6.)

mod support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use orchd_engine::config::{ApiKey, PoolConfig, QueuePolicy};
use orchd_engine::{Engine, Workload};
use orchd_testkit::is_uuid_v4;
use support::TestServer;

fn keyed() -> TestServer {
    let mut c = TestServer::config(2);
    c.server.api_keys = vec![ApiKey::new("key-one"), ApiKey::new("key-two")];
    TestServer::start(c)
}

#[test]
fn missing_key_is_401_unknown_is_403_known_is_200() {
    let s = keyed();
    let r = s.get("/v1/capabilities", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "INVALID_PARAMS");
    assert_eq!(r.json()["retriable"], false);
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = s.get("/v1/capabilities", &[("X-API-Key", "key-three")]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "INVALID_PARAMS");

    for key in ["key-one", "key-two"] {
        let r = s.get("/v1/capabilities", &[("X-API-Key", key)]);
        assert_eq!(r.status, 200, "{key}");
    }
}

#[test]
fn metrics_and_probes_need_no_key() {
    let s = keyed();
    let r = s.get("/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("# TYPE http_responses_total counter"));
    assert_eq!(s.get("/livez", &[]).status, 200);
    assert_eq!(
        s.get("/readyz", &[]).json(),
        serde_json::json!({"ready": true})
    );
}

#[test]
fn unknown_routes_need_a_key_before_they_are_404() {
    let s = keyed();
    assert_eq!(s.get("/v1/replicasets", &[]).status, 401);
    assert_eq!(
        s.get("/v1/replicasets", &[("X-API-Key", "key-one")]).status,
        404
    );
}

#[test]
fn correlation_id_is_echoed_or_generated_on_every_response() {
    let s = keyed();
    let mut c = s.client();
    for (path, key, status) in [
        ("/v1/capabilities", "key-one", 200),
        ("/v1/nope", "key-one", 404),
        ("/v1/capabilities", "wrong", 403),
    ] {
        let r = c.send(
            "GET",
            path,
            &[("X-API-Key", key), ("X-Correlation-Id", "req-42.a")],
            b"",
        );
        assert_eq!(r.status, status);
        assert_eq!(r.header("x-correlation-id"), Some("req-42.a"), "{path}");

        let r = c.send("GET", path, &[("X-API-Key", key)], b"");
        assert_eq!(r.status, status);
        let id = r.header("x-correlation-id").expect("generated id");
        assert!(is_uuid_v4(id), "{id:?}");
    }
    // 401 (no key at all) carries one too, and ids are fresh per request.
    let a = s.get("/v1/capabilities", &[]);
    let b = s.get("/v1/capabilities", &[]);
    assert_eq!(a.status, 401);
    assert_ne!(a.header("x-correlation-id"), b.header("x-correlation-id"));
    // An id that is not a sane token is replaced, not echoed.
    let r = s.get("/livez", &[("X-Correlation-Id", &"x".repeat(200))]);
    assert!(is_uuid_v4(r.header("x-correlation-id").unwrap()));
}

#[test]
fn capabilities_are_built_from_the_configured_pools() {
    let mut c = TestServer::config(2);
    let mut a = PoolConfig {
        id: "small".into(),
        slots: 2,
        ctx_max: 4096,
        ..PoolConfig::default()
    };
    a.queue_capacity = 10;
    let b = PoolConfig {
        id: "big".into(),
        engine: Engine::Vllm,
        slots: 8,
        ctx_max: 32768,
        queue_capacity: 100,
        policy: QueuePolicy::DropLru,
        workloads: vec![Workload::Completion, Workload::Embedding],
        ..PoolConfig::default()
    };
    let a2 = PoolConfig {
        id: "small-2".into(),
        slots: 3,
        ctx_max: 2048,
        ..PoolConfig::default()
    };
    c.pools = vec![a, b, a2];
    let s = TestServer::start(c);
    let caps = s.get("/v1/capabilities", &[]).json();
    assert_eq!(caps["api_version"], "1.0.0");
    let engines = caps["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 2);
    let l = &engines[0];
    assert_eq!(l["engine"], "llamacpp");
    assert_eq!(l["concurrency"], 5);
    assert_eq!(l["ctx_max"], 4096);
    let ids: Vec<&str> = l["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["small", "small-2"]);
    assert_eq!(l["pools"][0]["state"], "ready");
    assert_eq!(l["rate_limits"]["queue_capacity"], 266);
    let v = &engines[1];
    assert_eq!(v["engine"], "vllm");
    assert_eq!(v["concurrency"], 8);
    assert_eq!(v["ctx_max"], 32768);
    assert_eq!(
        v["supported_workloads"],
        serde_json::json!(["completion", "embedding"])
    );
    assert_eq!(
        v["rate_limits"]["queue_policies"],
        serde_json::json!(["drop-lru"])
    );
    for e in engines {
        for key in [
            "engine",
            "ctx_max",
            "supported_workloads",
            "concurrency",
            "rate_limits",
            "features",
        ] {
            assert!(e.get(key).is_some(), "{key} missing");
        }
        // An object, capability -> true or its parameters (the seed's contract).
        let f = e["features"].as_object().expect("features is an object");
        assert_eq!(f["sse-resume"], true);
        assert!(f["openai-compatible"]["routes"].is_array());
    }
}

#[test]
fn not_found_method_not_allowed_and_too_large() {
    let mut c = TestServer::config(1);
    c.server.max_body_bytes = 1024;
    let s = TestServer::start(c);
    let mut cl = s.client();

    for path in ["/v1/replicasets", "/nope", "/v1/capabilities/x"] {
        let r = cl.send("GET", path, &[], b"");
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["code"], "INVALID_PARAMS");
    }
    let r = cl.send("DELETE", "/v1/capabilities", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    assert_eq!(r.json()["code"], "INVALID_PARAMS");

    let r = cl.send_head_only("POST", "/v1/tasks", 2048);
    assert_eq!(r.status, 413);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("max_body_bytes"));
    assert!(r.header("x-correlation-id").is_some());

    // The server still answers on a fresh connection.
    assert_eq!(s.get("/livez", &[]).status, 200);
}

#[test]
fn malformed_requests_do_not_take_a_shard_down() {
    let s = TestServer::start(TestServer::config(1));
    for garbage in [
        &b"\x00\x01\x02 garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nBad Header Line\r\n\r\n",
    ] {
        let mut c = s.client();
        c.stream().write_all(garbage).unwrap();
        let mut out = Vec::new();
        let _ = c.stream().read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    }
    assert_eq!(s.get("/livez", &[]).status, 200);
}

#[test]
fn clients_that_stall_sending_headers_are_cut_off() {
    let mut c = TestServer::config(1);
    c.server.header_read_timeout_ms = 200;
    let s = TestServer::start(c);
    let mut cl = s.client();
    cl.stream()
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = cl.stream().read_to_end(&mut out);
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "connection held for {waited:?}"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(s.get("/livez", &[]).status, 200);
}

#[test]
fn every_shard_serves_over_new_connections() {
    let s = TestServer::start(TestServer::config(2));
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let r = s.get("/v1/capabilities", &[]);
        assert_eq!(r.status, 200);
        seen.insert(r.header("x-orchd-shard").unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "shards seen: {seen:?}");
}

#[test]
fn metrics_merge_every_shard() {
    let s = TestServer::start(TestServer::config(2));
    for _ in 0..20 {
        assert_eq!(s.get("/nope", &[]).status, 404);
    }
    let text = String::from_utf8(s.get("/metrics", &[]).body).unwrap();
    let fours: u64 = text
        .lines()
        .filter(|l| l.starts_with("http_responses_total{") && l.contains("class=\"4xx\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(fours, 20, "{text}");
    assert!(text.contains("shard=\"0\"") && text.contains("shard=\"1\""));
}

#[test]
fn keep_alive_connection_serves_many_requests() {
    let s = TestServer::start(TestServer::config(1));
    let mut c = s.client();
    for _ in 0..50 {
        assert_eq!(c.send("GET", "/v1/capabilities", &[], b"").status, 200);
    }
    let text = String::from_utf8(c.send("GET", "/metrics", &[], b"").body).unwrap();
    assert!(
        text.contains("connections_accepted_total{shard=\"0\"} 1\n"),
        "{text}"
    );
}

#[test]
fn a_second_server_on_a_taken_port_is_refused() {
    let s = TestServer::start(TestServer::config(1));
    let mut c = TestServer::config(1);
    c.server.addr = s.addr;
    let err = orchd_http::serve(c).err().expect("second bind must fail");
    assert!(err.to_string().contains("cannot listen"), "{err}");
}

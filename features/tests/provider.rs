//! Provider verification: a live orchd is driven through every operation and status the
//! OpenAPI documents in `contracts/openapi/` describe, and every response (status,
//! headers, body, SSE frames) is validated against them. An undocumented response fails,
//! and so does a documented (operation, status) that no request here produced.

use std::sync::Arc;

use hyper::Method;
use orchd_features::{temp_dir, uuid, Client, Contract, Event, Opened, Orchd, Response};
use orchd_testkit::{assert_well_formed, task_request};
use serde_json::{json, Value};

const KEY: &str = "provider-key";

/// The main server: keys on, two shards, a fast pool, a slow pool that fills up, a pool
/// to drain and one to reload, token budgets on (so the budget headers appear).
const MAIN: &str = r#"
[server]
shards = 2
api_keys = ["provider-key"]
max_body_bytes = 16384

[sessions]
tokens_budget = 1000000

[stream]
heartbeat_ms = 1000

[[pools]]
id = "fast"
engine = "llamacpp"
model_ref = "*"
slots = 2
[pools.adapter]
kind = "mock"
ttft_ms = 0
tpot_ms = 1

[[pools]]
id = "slow"
engine = "tgi"
model_ref = "*"
slots = 1
queue_capacity = 1
[pools.adapter]
kind = "mock"
ttft_ms = 0
tpot_ms = 100

[[pools]]
id = "spare"
engine = "triton"
model_ref = "*"
[pools.adapter]
kind = "mock"
ttft_ms = 0
tpot_ms = 1
load_ms = 300
"#;

/// Sends requests and checks every answer: the status the test expects, then the
/// contract.
struct Verifier {
    contract: Arc<Contract>,
    client: Client,
}

impl Verifier {
    fn new(contract: &Arc<Contract>, orchd: &Orchd, key: Option<&str>) -> Verifier {
        Verifier {
            contract: contract.clone(),
            client: Client::new(orchd.addr, key),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        want: u16,
    ) -> Response {
        let r = self
            .client
            .send(method.clone(), path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(
            r.status.as_u16(),
            want,
            "{method} {path}: body {}",
            r.text()
        );
        if let Err(v) = self.contract.check(&r) {
            panic!("contract: {v}");
        }
        r
    }

    async fn get(&self, path: &str, want: u16) -> Response {
        self.call(Method::GET, path, &[], b"", want).await
    }

    async fn post(&self, path: &str, body: &Value, want: u16) -> Response {
        let body = serde_json::to_vec(body).unwrap();
        self.call(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            &body,
            want,
        )
        .await
    }

    /// Streams a task to its end; checks the head and every frame, and, for a stream
    /// read from its start (no `Last-Event-ID`), the frame rules.
    async fn stream(&self, path: &str, headers: &[(&str, &str)]) -> Vec<Event> {
        let s = match self.client.stream(path, headers).await.unwrap() {
            Opened::Events(s) => s,
            Opened::Refused(r) => panic!("GET {path}: {} {}", r.status, r.text()),
        };
        self.contract
            .check(&s.head)
            .unwrap_or_else(|v| panic!("contract: {v}"));
        let events = s.collect().await.unwrap();
        for ev in &events {
            self.contract
                .check_event(path, ev)
                .unwrap_or_else(|v| panic!("contract: {v}"));
        }
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("last-event-id"))
        {
            assert_well_formed(&events);
        }
        events
    }
}

fn task(engine: &str, max_tokens: u64) -> Value {
    task_request(
        &uuid(),
        &uuid(),
        json!({"engine": engine, "max_tokens": max_tokens}),
    )
}

/// A concrete path for a template: a fresh UUID for task and session ids, `pool` for a
/// pool, a well-formed (absent) artifact id.
fn fill(template: &str, pool: &str) -> String {
    let id = if template.starts_with("/v1/pools/") {
        pool.to_string()
    } else if template.starts_with("/v1/artifacts/") {
        format!("sha256:{}", "0".repeat(64))
    } else {
        uuid()
    };
    template.replace("{id}", &id)
}

/// Documented answers no request from outside can produce on demand, and why. Each is
/// still checked whenever it occurs.
const UNREACHABLE: &[(&str, u16, &str)] = &[
    (
        "getReadyz",
        503,
        "only while the shard is stopping (new connections are refused by then) or when the \
         dispatcher does not answer within 1 s",
    ),
    (
        "createTask",
        500,
        "documented as the seed's contract does; no input is known to produce it",
    ),
];

#[tokio::test(flavor = "current_thread")]
async fn every_documented_operation_and_status_is_served_as_documented() {
    let contract = Arc::new(Contract::load_default());
    let orchd = Orchd::start(MAIN).expect("orchd starts");
    let v = Verifier::new(&contract, &orchd, Some(KEY));

    operational(&v).await;
    auth(&contract, &orchd).await;
    tasks(&v).await;
    sessions(&v).await;
    pools(&v).await;
    artifacts(&v).await;
    artifact_faults(&contract).await;
    oversized(&contract).await;
    overloaded(&contract).await;
    shutting_down(&contract).await;

    let missing: Vec<(String, u16)> = contract
        .unexercised()
        .into_iter()
        .filter(|(op, status)| !UNREACHABLE.iter().any(|(o, s, _)| o == op && s == status))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but never produced by this test: {missing:?}"
    );
}

async fn operational(v: &Verifier) {
    let anonymous = Verifier {
        contract: v.contract.clone(),
        client: Client::new(v.client.addr, None),
    };
    anonymous.get("/livez", 200).await;
    anonymous.get("/readyz", 200).await;
    let m = anonymous.get("/metrics", 200).await;
    assert!(m.text().contains("# TYPE tasks_enqueued_total counter"));
}

/// 401 without a key and 403 with a wrong one, on every secured operation.
async fn auth(contract: &Arc<Contract>, orchd: &Orchd) {
    let anonymous = Verifier::new(contract, orchd, None);
    let wrong = Verifier::new(contract, orchd, Some("not-a-key"));
    let exempt = ["/metrics", "/livez", "/readyz"];
    for (id, method, template) in contract.operations() {
        if exempt.contains(&template.as_str()) {
            continue;
        }
        let path = fill(&template, "fast");
        let body = if method == Method::POST {
            &b"{}"[..]
        } else {
            b""
        };
        let r = anonymous.call(method.clone(), &path, &[], body, 401).await;
        assert_eq!(r.json()["code"], "INVALID_PARAMS", "{id}");
        wrong.call(method, &path, &[], body, 403).await;
    }
}

async fn tasks(v: &Verifier) {
    // 202, then the stream from the start and resumed after frame 2.
    let t = task("llamacpp", 8);
    let id = t["task_id"].as_str().unwrap().to_string();
    let r = v.post("/v1/tasks", &t, 202).await;
    assert!(r.header("x-budget-tokens-remaining").is_some());
    v.post("/v1/tasks", &t, 202).await; // idempotent
    let stream = format!("/v1/tasks/{id}/stream");
    let events = v.stream(&stream, &[]).await;
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("end"));
    let resumed = v.stream(&stream, &[("last-event-id", "2")]).await;
    assert_eq!(resumed[0].id, 3);
    assert_eq!(resumed, events[3..]);

    // 409: same id, different body.
    let mut changed = t.clone();
    changed["max_tokens"] = json!(9);
    v.post("/v1/tasks", &changed, 409).await;

    // 400: malformed JSON, a missing field, a bad enum, a deadline that cannot be met.
    v.call(Method::POST, "/v1/tasks", &[], b"{not json", 400)
        .await;
    let mut missing = task("llamacpp", 8);
    missing.as_object_mut().unwrap().remove("ctx");
    assert!(v.post("/v1/tasks", &missing, 400).await.json()["message"]
        .as_str()
        .unwrap()
        .contains("ctx"));
    v.post("/v1/tasks", &task("gpt", 8), 400).await;

    // 413: a body over server.max_body_bytes.
    let mut big = task("llamacpp", 8);
    big["prompt"] = json!("x".repeat(20_000));
    v.post("/v1/tasks", &big, 413).await;

    // 503 POOL_UNAVAILABLE: no pool serves vllm.
    let r = v.post("/v1/tasks", &task("vllm", 8), 503).await;
    assert_eq!(r.json()["code"], "POOL_UNAVAILABLE");

    // The slow pool: one slot, one queue place. A long task runs, the next waits, the
    // third is refused with retry advice; a deadline shorter than the decode is refused.
    let running = task("tgi", 200);
    let queued = task("tgi", 200);
    assert_eq!(
        v.post("/v1/tasks", &running, 202).await.json()["queue_position"],
        0
    );
    assert_eq!(
        v.post("/v1/tasks", &queued, 202).await.json()["queue_position"],
        1
    );
    let r = v.post("/v1/tasks", &task("tgi", 200), 429).await;
    assert_eq!(r.json()["code"], "ADMISSION_REJECT");
    let mut hurried = task("tgi", 200);
    hurried["deadline_ms"] = json!(50);
    assert_eq!(
        v.post("/v1/tasks", &hurried, 400).await.json()["code"],
        "DEADLINE_UNMET"
    );

    // Cancel: 204 with X-Tokens-Out (running and queued), idempotent, 404, 400.
    for t in [&running, &queued] {
        let path = format!("/v1/tasks/{}/cancel", t["task_id"].as_str().unwrap());
        let r = v.call(Method::POST, &path, &[], b"", 204).await;
        assert!(r.header("x-tokens-out").is_some());
        v.call(Method::POST, &path, &[], b"", 204).await;
    }
    let canceled = v
        .stream(
            &format!("/v1/tasks/{}/stream", running["task_id"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(canceled.last().unwrap().data["canceled"], true);
    v.call(
        Method::POST,
        &format!("/v1/tasks/{}/cancel", uuid()),
        &[],
        b"",
        404,
    )
    .await;
    v.call(Method::POST, "/v1/tasks/not-a-uuid/cancel", &[], b"", 400)
        .await;

    // Stream: 404 unknown, 400 malformed id.
    v.get(&format!("/v1/tasks/{}/stream", uuid()), 404).await;
    v.get("/v1/tasks/not-a-uuid/stream", 400).await;
}

async fn sessions(v: &Verifier) {
    let session = uuid();
    let mut t = task("llamacpp", 4);
    t["session_id"] = json!(session);
    v.post("/v1/tasks", &t, 202).await;
    let r = v.get(&format!("/v1/sessions/{session}"), 200).await;
    assert_eq!(r.json()["turns"], 1);
    v.get("/v1/sessions/not-a-uuid", 400).await;
    v.call(
        Method::DELETE,
        &format!("/v1/sessions/{session}"),
        &[],
        b"",
        204,
    )
    .await;
    v.call(Method::DELETE, "/v1/sessions/not-a-uuid", &[], b"", 400)
        .await;
}

async fn pools(v: &Verifier) {
    v.get("/v1/capabilities", 200).await;
    v.get("/v1/pools/fast/health", 200).await;
    v.get("/v1/pools/nope/health", 404).await;

    // Reload: 200, 409 with rollback, 400, 404, 413; 409 while another reload runs.
    let r = v
        .post("/v1/pools/fast/reload", &json!({"new_model_ref": "m"}), 200)
        .await;
    assert_eq!(r.json()["model_ref"], "m");
    v.post(
        "/v1/pools/fast/reload",
        &json!({"new_model_ref": "fail:x"}),
        409,
    )
    .await;
    v.post("/v1/pools/fast/reload", &json!({"model": "m"}), 400)
        .await;
    v.post("/v1/pools/nope/reload", &json!({"new_model_ref": "m"}), 404)
        .await;
    let big = json!({"new_model_ref": "x".repeat(20_000)});
    v.post("/v1/pools/fast/reload", &big, 413).await;
    let spare_reload = {
        let client = v.client.clone();
        tokio::spawn(async move {
            client
                .post_json("/v1/pools/spare/reload", &json!({"new_model_ref": "m2"}))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    v.post("/v1/pools/spare/drain", &json!({"deadline_ms": 1000}), 409)
        .await;
    let r = spare_reload.await.unwrap().unwrap();
    v.contract.check(&r).unwrap();
    assert_eq!(r.status, 200);

    // Drain: 202, 400, 404, 413; then the pool's engine is unready: 503 POOL_UNREADY.
    v.post("/v1/pools/spare/drain", &json!({"deadline_ms": -1}), 400)
        .await;
    v.post("/v1/pools/nope/drain", &json!({"deadline_ms": 1000}), 404)
        .await;
    v.post(
        "/v1/pools/spare/drain",
        &json!({"deadline_ms": 1000, "pad": "x".repeat(20_000)}),
        413,
    )
    .await;
    v.post("/v1/pools/spare/drain", &json!({"deadline_ms": 1000}), 202)
        .await;
    let mut t = task("triton", 4);
    t["model_ref"] = json!("m2"); // what the reload above made spare serve
    let r = v.post("/v1/tasks", &t, 503).await;
    assert_eq!(r.json()["code"], "POOL_UNREADY");
    assert!(r.header("retry-after").is_some());
}

async fn artifacts(v: &Verifier) {
    let body = json!({"kind": "plan", "content": {"steps": ["a", "b"]}, "tags": ["t"]});
    let r = v.post("/v1/artifacts", &body, 201).await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    v.get(&format!("/v1/artifacts/{id}"), 200).await;
    v.get(&format!("/v1/artifacts/sha256:{}", "a".repeat(64)), 404)
        .await;
    v.get("/v1/artifacts/nope", 400).await;
    v.post(
        "/v1/artifacts",
        &json!({"kind": "poem", "content": {}}),
        400,
    )
    .await;
    let big = json!({"kind": "other", "content": {"pad": "x".repeat(20_000)}});
    v.post("/v1/artifacts", &big, 413).await;
}

/// 507 from a full memory store, 500 from an unusable directory and from a file that
/// no longer matches its id.
async fn artifact_faults(contract: &Arc<Contract>) {
    let small =
        Orchd::start("[server]\nshards = 1\n[artifacts]\nmax_memory_bytes = 4096\n").unwrap();
    let v = Verifier::new(contract, &small, None);
    let mut full = false;
    for i in 0..64 {
        let body = json!({"kind": "other", "content": {"i": i, "pad": "p".repeat(300)}});
        let r = v.client.post_json("/v1/artifacts", &body).await.unwrap();
        contract
            .check(&r)
            .unwrap_or_else(|e| panic!("contract: {e}"));
        if r.status == 507 {
            full = true;
            break;
        }
        assert_eq!(r.status, 201);
    }
    assert!(full, "a 4 KiB store never filled");

    let blocker = temp_dir("blocker").join("file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let broken = Orchd::start(&format!(
        "[server]\nshards = 1\n[artifacts]\nbackend = \"fs\"\ndir = {:?}\n",
        blocker.join("artifacts")
    ))
    .unwrap();
    let v = Verifier::new(contract, &broken, None);
    let r = v
        .post(
            "/v1/artifacts",
            &json!({"kind": "plan", "content": {"a": 1}}),
            500,
        )
        .await;
    assert_eq!(r.json()["code"], "INTERNAL");

    let dir = temp_dir("corrupt");
    let fs = Orchd::start(&format!(
        "[server]\nshards = 1\n[artifacts]\nbackend = \"fs\"\ndir = {dir:?}\n"
    ))
    .unwrap();
    let v = Verifier::new(contract, &fs, None);
    let r = v
        .post(
            "/v1/artifacts",
            &json!({"kind": "diff", "content": {"a": 1}}),
            201,
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    std::fs::write(
        dir.join(format!("{}.json", &id[7..])),
        br#"{"id":"x","kind":"diff","content":{"a":2}}"#,
    )
    .unwrap();
    let r = v.get(&format!("/v1/artifacts/{id}"), 500).await;
    assert_eq!(r.json()["code"], "UNTRUSTED_ARTIFACT");
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(blocker.parent().unwrap());
}

/// 413 on every operation when the declared body is over `server.max_body_bytes`,
/// before anything else is read.
async fn oversized(contract: &Arc<Contract>) {
    let orchd = Orchd::start("[server]\nshards = 1\nmax_body_bytes = 1024\n").unwrap();
    let v = Verifier::new(contract, &orchd, None);
    let body = vec![b' '; 1025];
    for (id, method, template) in contract.operations() {
        if !contract.documents(&id, 413) {
            continue;
        }
        let path = fill(&template, "default");
        v.call(
            method,
            &path,
            &[("content-type", "application/json")],
            &body,
            413,
        )
        .await;
    }
}

/// 429 `overloaded` wherever a request crosses a mailbox: with one-place mailboxes, a
/// burst of concurrent requests overflows them. Every answer in the burst must be
/// documented.
async fn overloaded(contract: &Arc<Contract>) {
    let orchd = Orchd::start("[server]\nshards = 2\nmailbox_capacity = 1\n").unwrap();
    let client = Client::new(orchd.addr, None);
    for (id, method, template) in contract.operations() {
        if id == "createTask" || !contract.documents(&id, 429) {
            continue; // createTask's 429s come from its queue, above
        }
        let body = match id.as_str() {
            "drainPool" => json!({"deadline_ms": 1000}),
            "reloadPool" => json!({"new_model_ref": "m"}),
            _ => json!({"kind": "other", "content": {"burst": true}}),
        };
        let body = serde_json::to_vec(&body).unwrap();
        let mut shed = 0;
        for _round in 0..20 {
            let mut burst = tokio::task::JoinSet::new();
            for _ in 0..64 {
                let (client, method, body) = (client.clone(), method.clone(), body.clone());
                // Pool operations go to an unknown pool: the dispatcher still answers
                // them (404), and nothing is drained.
                let path = fill(&template, "nope");
                burst.spawn(async move {
                    client
                        .send(
                            method,
                            &path,
                            &[("content-type", "application/json")],
                            &body,
                        )
                        .await
                });
            }
            while let Some(r) = burst.join_next().await {
                let r = r.unwrap().unwrap_or_else(|e| panic!("{id}: {e}"));
                contract
                    .check(&r)
                    .unwrap_or_else(|e| panic!("contract: {e}"));
                if r.status == 429 {
                    assert_eq!(r.json()["policy_label"], "overloaded", "{}", r.text());
                    shed += 1;
                }
            }
            if shed > 0 {
                break;
            }
        }
        assert!(shed > 0, "{id}: no request was shed by one-place mailboxes");
    }
}

/// Once shutdown has begun, a task whose request was still arriving is refused with
/// 503 POOL_UNREADY and retry advice (SPEC section 6: stop accepting tasks at once).
async fn shutting_down(contract: &Arc<Contract>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut orchd = Orchd::start("[server]\nshards = 1\nshutdown_grace_ms = 3000\n").unwrap();
    let body = serde_json::to_vec(&task("llamacpp", 4)).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(orchd.addr).await.unwrap();
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nhost: orchd\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let stopping = tokio::task::spawn_blocking(move || orchd.stop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tcp.write_all(&body[10..]).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let r = parse_response(Method::POST, "/v1/tasks", &raw);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "POOL_UNREADY");
    contract
        .check(&r)
        .unwrap_or_else(|e| panic!("contract: {e}"));
    stopping.await.unwrap().unwrap();
}

/// A raw HTTP/1.1 response with a Content-Length body, as a [`Response`].
fn parse_response(method: Method, path: &str, raw: &[u8]) -> Response {
    let text = std::str::from_utf8(raw).expect("a text response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = hyper::HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':').unwrap();
        headers.append(
            hyper::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            v.trim().parse().unwrap(),
        );
    }
    Response {
        method,
        path: path.to_string(),
        status: hyper::StatusCode::from_u16(status).unwrap(),
        headers,
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
    }
}

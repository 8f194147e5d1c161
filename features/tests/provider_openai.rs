//! Provider verification of `contracts/openapi/openai.yaml`: a live orchd is driven
//! through every operation and status of its OpenAI-compatible routes, and every
//! response (status, headers, body, each event of a stream) is validated against the
//! document. An undocumented answer fails, and so does a documented (operation, status)
//! no request here produced.

use hyper::Method;
use orchd_features::{Client, Contract, Orchd, Response};
use orchd_testkit::sse::Parser;
use orchd_testkit::Event;
use serde_json::{json, Value};

const KEY: &str = "provider-openai-key";

/// Keys on; `m` answers at once, `small` (one slot, one queue place, slow) fills up,
/// `draining` is drained to make its model unready; `nope` is served by no pool.
const CONFIG: &str = r#"
[server]
shards = 2
api_keys = ["provider-openai-key"]
max_body_bytes = 16384

[[pools]]
id = "m"
model_ref = "m"
[pools.adapter]
ttft_ms = 0
tpot_ms = 1

[[pools]]
id = "small"
model_ref = "small"
slots = 1
queue_capacity = 1
[pools.adapter]
ttft_ms = 0
tpot_ms = 100

[[pools]]
id = "embed"
model_ref = "embedder"
slots = 1
queue_capacity = 1
workloads = ["embedding"]
[pools.adapter]
ttft_ms = 300

[[pools]]
id = "draining"
model_ref = "draining"
[pools.adapter]
ttft_ms = 0
tpot_ms = 1
"#;

/// Documented answers no request from outside can produce on demand, and why.
const UNREACHABLE: &[(&str, u16, &str)] = &[(
    "getHealth",
    503,
    "only while the shard is stopping or the dispatcher does not answer within 1 s",
)];

struct Verifier {
    contract: Contract,
    client: Client,
}

impl Verifier {
    /// Sends a request, checks its status, then the document: the response, and each
    /// event of an event stream.
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: &[u8],
        want: u16,
    ) -> (Response, Vec<Event>) {
        let bearer = auth.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let r = self
            .client
            .send(method.clone(), path, &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status.as_u16(), want, "{method} {path}: {}", r.text());
        self.contract
            .check(&r)
            .unwrap_or_else(|v| panic!("contract: {v}"));
        let mut events = Vec::new();
        if r.header("content-type") == Some("text/event-stream") {
            let mut p = Parser::new();
            p.push(&r.body);
            while let Some(e) = p.next_event().unwrap() {
                self.contract
                    .check_event_of(&method, path, &e)
                    .unwrap_or_else(|v| panic!("contract: {v}"));
                events.push(e);
            }
            assert!(p.pending().is_empty(), "the stream ended inside an event");
        }
        (r, events)
    }

    async fn post(&self, path: &str, body: Value, want: u16) -> (Response, Vec<Event>) {
        let body = serde_json::to_vec(&body).unwrap();
        self.call(Method::POST, path, Some(KEY), &body, want).await
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_documented_openai_operation_and_status_is_served_as_documented() {
    let orchd = Orchd::start(CONFIG).expect("orchd starts");
    let v = Verifier {
        contract: Contract::load_openai(),
        client: Client::new(orchd.addr, None),
    };
    let routes = [
        ("/v1/completions", json!({"prompt": "hello"})),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hello"}]}),
        ),
    ];
    for (path, input) in &routes {
        let with = |extra: Value| {
            let mut b = input.clone();
            for (k, x) in extra.as_object().unwrap() {
                b[k] = x.clone();
            }
            b
        };
        // 200 whole and streamed (with usage), and a stream's every event.
        v.post(path, with(json!({"model": "m", "max_tokens": 4})), 200)
            .await;
        let (_, events) = v
            .post(
                path,
                with(json!({"model": "m", "max_tokens": 4, "stream": true,
                    "stream_options": {"include_usage": true}})),
                200,
            )
            .await;
        assert_eq!(events.last().unwrap().data, json!("[DONE]"));
        // 400, 401, 403, 413, 503.
        v.post(path, with(json!({"model": "m", "n": 3})), 400).await;
        let body = serde_json::to_vec(&with(json!({"model": "m"}))).unwrap();
        v.call(Method::POST, path, None, &body, 401).await;
        v.call(Method::POST, path, Some("wrong"), &body, 403).await;
        v.call(Method::POST, path, Some(KEY), &vec![b' '; 20_000], 413)
            .await;
        let (r, _) = v.post(path, with(json!({"model": "nope"})), 503).await;
        assert_eq!(r.json()["error"]["code"], "POOL_UNAVAILABLE");
    }
    // 503 POOL_UNREADY with advice: the only pool serving the model is draining.
    let drain = Client::new(orchd.addr, Some(KEY))
        .post_json("/v1/pools/draining/drain", &json!({"deadline_ms": 60000}))
        .await
        .unwrap();
    assert_eq!(drain.status, 202, "{}", drain.text());
    let (r, _) = v
        .post(
            "/v1/completions",
            json!({"model": "draining", "prompt": "x"}),
            503,
        )
        .await;
    assert_eq!(r.json()["error"]["code"], "POOL_UNREADY");
    assert!(r.header("retry-after-ms").is_some());
    // 429: `small` holds one task and queues one.
    for (path, input) in &routes {
        let mut body = input.clone();
        body["model"] = json!("small");
        body["max_tokens"] = json!(30);
        body["stream"] = json!(true);
        let client = v.client.clone();
        let bytes = serde_json::to_vec(&body).unwrap();
        let auth = format!("Bearer {KEY}");
        let mut held = Vec::new();
        for _ in 0..2 {
            let (client, bytes, auth, path) = (client.clone(), bytes.clone(), auth.clone(), *path);
            held.push(tokio::spawn(async move {
                client
                    .send(
                        Method::POST,
                        path,
                        &[
                            ("content-type", "application/json"),
                            ("authorization", &auth),
                        ],
                        &bytes,
                    )
                    .await
            }));
        }
        orchd_testkit::wait_until_async(
            std::time::Duration::from_secs(5),
            "the small pool full",
            || async {
                let h = Client::new(orchd.addr, Some(KEY))
                    .get("/v1/pools/small/health")
                    .await
                    .map_err(|e| e.to_string())?;
                let m = &h.json()["metrics"];
                match (m["slots_busy"].as_u64(), m["queue_depth"].as_u64()) {
                    (Some(1), Some(1)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        let (r, _) = v.post(path, body.clone(), 429).await;
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");
        for h in held {
            let r = h.await.unwrap().unwrap();
            assert_eq!(r.status, 200);
        }
    }
    // Embeddings: 200 as floats and as base64, 400, 401, 403, 413, 503, and 429 while
    // the one-slot pool holds one request and queues another.
    let path = "/v1/embeddings";
    let (r, _) = v
        .post(
            path,
            json!({"model": "embedder", "input": ["a b", "c"]}),
            200,
        )
        .await;
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    v.post(
        path,
        json!({"model": "embedder", "input": "a", "encoding_format": "base64"}),
        200,
    )
    .await;
    v.post(path, json!({"model": "embedder", "input": [1, 2]}), 400)
        .await;
    let body = serde_json::to_vec(&json!({"model": "embedder", "input": "a"})).unwrap();
    v.call(Method::POST, path, None, &body, 401).await;
    v.call(Method::POST, path, Some("wrong"), &body, 403).await;
    v.call(Method::POST, path, Some(KEY), &vec![b' '; 20_000], 413)
        .await;
    v.post(path, json!({"model": "nope", "input": "a"}), 503)
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (client, body) = (v.client.clone(), body.clone());
        let auth = format!("Bearer {KEY}");
        held.push(tokio::spawn(async move {
            client
                .send(
                    Method::POST,
                    "/v1/embeddings",
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &auth),
                    ],
                    &body,
                )
                .await
        }));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    v.post(path, json!({"model": "embedder", "input": "a"}), 429)
        .await;
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status, 200);
    }
    // The models and the probe.
    v.call(Method::GET, "/v1/models", Some(KEY), b"", 200).await;
    v.call(Method::GET, "/v1/models", None, b"", 401).await;
    v.call(Method::GET, "/v1/models", Some("wrong"), b"", 403)
        .await;
    v.call(Method::GET, "/health", None, b"", 200).await;

    let missing: Vec<(String, u16)> = v
        .contract
        .unexercised()
        .into_iter()
        .filter(|(op, status)| !UNREACHABLE.iter().any(|(o, s, _)| o == op && s == status))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but never produced by this test: {missing:?}"
    );
}

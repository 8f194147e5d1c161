//! Step definitions, in the words the feature files use. Each step talks HTTP to the
//! scenario's orchd; assertions compare with what SPEC.md promises.

use std::time::Duration;

use cucumber::gherkin::Step;
use cucumber::{given, then, when};
use hyper::Method;
use orchd_testkit::{assert_well_formed, tokens, wait_until_async};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::world::{check_event, check_response, OrchWorld};

/// A JSON literal in a step: a number, true/false/null, a quoted string or an array
/// (the steps that take one match exactly these forms).
fn literal(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?} is not a JSON literal: {e}"))
}

fn docstring(step: &Step) -> &str {
    step.docstring.as_deref().expect("the step has a docstring")
}

/// `| field | value |` rows, the values as JSON.
fn fields(step: &Step) -> Vec<(String, Value)> {
    let table = step.table.as_ref().expect("the step has a table");
    table
        .rows
        .iter()
        .map(|row| (row[0].trim().to_string(), literal(row[1].trim())))
        .collect()
}

/// A field of a JSON value by dotted path (`metrics.slots_total`).
fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

// ---- Given: the server ------------------------------------------------------------

#[given("orchd is running with its default config")]
async fn default_config(w: &mut OrchWorld) {
    w.start("");
}

#[given("orchd is running with this config:")]
async fn with_config(w: &mut OrchWorld, step: &Step) {
    let toml = docstring(step).to_string();
    w.start(&toml);
    // A scenario with keys configured acts as a client holding the first one unless it
    // says otherwise.
    let config = orchd_http::Config::from_toml_str(&toml).expect("the scenario's config");
    w.api_key = config
        .server
        .api_keys
        .first()
        .map(|k| k.expose().to_string());
}

#[given("orchd is running with artifacts in a fresh directory")]
async fn fs_artifacts(w: &mut OrchWorld) {
    let dir = orchd_features::temp_dir("artifacts");
    w.scratch.push(dir.clone());
    w.start(&format!("[artifacts]\nbackend = \"fs\"\ndir = {:?}\n", dir));
}

#[given("orchd is running with artifacts in a directory that cannot be created")]
async fn broken_artifacts(w: &mut OrchWorld) {
    // Under a regular file every create fails (ENOTDIR), for root too: a real fault.
    let dir = orchd_features::temp_dir("blocker");
    w.scratch.push(dir.clone());
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"not a directory").expect("blocker file");
    w.start(&format!(
        "[artifacts]\nbackend = \"fs\"\ndir = {:?}\n",
        blocker.join("artifacts")
    ));
}

#[given("I send no API key")]
async fn no_key(w: &mut OrchWorld) {
    w.api_key = None;
}

#[given(regex = r#"^I use the API key "([^"]*)"$"#)]
async fn use_key(w: &mut OrchWorld, key: String) {
    w.api_key = Some(key);
}

#[given(regex = r#"^tasks (\w+), (\w+) and (\w+) fill pool "([^"]+)"$"#)]
async fn fill_pool(w: &mut OrchWorld, a: String, b: String, c: String, pool: String) {
    for name in [a, b, c] {
        let body = w.task_body(None, &[("max_tokens".into(), json!(200))]);
        w.submit(&name, body).await;
        assert_eq!(w.last().status, 202, "{}", w.last().text());
    }
    w.send(Method::GET, &format!("/v1/pools/{pool}/health"), &[], b"")
        .await;
    let h = w.last_json();
    assert_eq!(
        h["metrics"]["slots_busy"], h["metrics"]["slots_total"],
        "{h}"
    );
    assert!(h["metrics"]["queue_depth"].as_u64() > Some(0), "{h}");
}

// ---- When: tasks and streams ------------------------------------------------------

#[when(regex = r"^I submit task (\w+)$")]
async fn submit(w: &mut OrchWorld, name: String) {
    let body = w.task_body(None, &[]);
    w.submit(&name, body).await;
}

#[when(regex = r"^I submit task (\w+) with:$")]
async fn submit_with(w: &mut OrchWorld, name: String, step: &Step) {
    let body = w.task_body(None, &fields(step));
    w.submit(&name, body).await;
}

#[when(regex = r"^I submit task (\w+) in session (\w+)$")]
async fn submit_in_session(w: &mut OrchWorld, name: String, session: String) {
    let body = w.task_body(Some(&session), &[]);
    w.submit(&name, body).await;
}

#[when(regex = r"^I submit task (\w+) in session (\w+) with:$")]
async fn submit_in_session_with(w: &mut OrchWorld, name: String, session: String, step: &Step) {
    let body = w.task_body(Some(&session), &fields(step));
    w.submit(&name, body).await;
}

#[when(regex = r"^I submit (\d+) tasks in session (\w+)$")]
async fn submit_many(w: &mut OrchWorld, n: usize, session: String) {
    for i in 0..n {
        let body = w.task_body(Some(&session), &[("max_tokens".into(), json!(1))]);
        w.submit(&format!("{session}-{i}"), body).await;
        assert_eq!(w.last().status, 202, "task {i}: {}", w.last().text());
    }
}

#[when(regex = r"^I submit (\d+) tasks of (\d+) tokens$")]
async fn submit_sized(w: &mut OrchWorld, n: usize, tokens: u32) {
    for i in 0..n {
        let body = w.task_body(None, &[("max_tokens".into(), json!(tokens))]);
        w.submit(&format!("sized-{}-{i}", w.tasks.len()), body)
            .await;
        assert_eq!(w.last().status, 202, "task {i}: {}", w.last().text());
    }
}

#[when(regex = r"^I submit task (\w+) again$")]
async fn resubmit(w: &mut OrchWorld, name: String) {
    let body = w.tasks[&name].clone();
    w.post("/v1/tasks", &body).await;
}

#[when(regex = r#"^I submit task (\w+) again with "(\w+)" set to (\S+)$"#)]
async fn resubmit_changed(w: &mut OrchWorld, name: String, key: String, value: String) {
    let mut body = w.tasks[&name].clone();
    body[key.as_str()] = literal(&value);
    w.post("/v1/tasks", &body).await;
}

#[when(regex = r"^I cancel task (\w+)$")]
async fn cancel(w: &mut OrchWorld, name: String) {
    let id = w.task_id(&name);
    w.send(Method::POST, &format!("/v1/tasks/{id}/cancel"), &[], b"")
        .await;
    if let Some(n) = w.last().header("x-tokens-out").and_then(|v| v.parse().ok()) {
        w.tokens_out.entry(name).or_insert(n);
    }
}

#[when(regex = r"^I cancel task (\w+) without submitting it$")]
async fn cancel_unknown(w: &mut OrchWorld, _name: String) {
    let id = orchd_features::uuid();
    w.send(Method::POST, &format!("/v1/tasks/{id}/cancel"), &[], b"")
        .await;
}

#[when(regex = r"^I stream task (\w+) without submitting it$")]
async fn stream_unknown(w: &mut OrchWorld, _name: String) {
    let id = orchd_features::uuid();
    let s = w.open_stream(&format!("/v1/tasks/{id}/stream"), &[]).await;
    assert!(s.is_none(), "an unknown task streamed");
}

/// A plain GET of a task's stream, for an answer that is not a stream (a 404 of a task
/// this key's tenant does not own).
#[when(regex = r"^I ask for the stream of task (\w+)$")]
async fn ask_stream(w: &mut OrchWorld, name: String) {
    let path = stream_path(w, &name);
    w.send(Method::GET, &path, &[], b"").await;
}

fn stream_path(w: &OrchWorld, name: &str) -> String {
    format!("/v1/tasks/{}/stream", w.task_id(name))
}

#[when(regex = r"^I stream task (\w+) to its end$")]
async fn stream_to_end(w: &mut OrchWorld, name: String) {
    let path = stream_path(w, &name);
    let s = w.open_stream(&path, &[]).await.expect("the task streams");
    let mut frames = Vec::new();
    let comments = OrchWorld::drain_stream(&path, s, &mut frames).await;
    assert_well_formed(&frames);
    w.streams.insert(name.clone(), frames);
    w.comments.insert(name, comments);
}

#[when(regex = r"^I read (\d+) frames of task (\w+)$")]
async fn read_frames(w: &mut OrchWorld, n: usize, name: String) {
    let path = stream_path(w, &name);
    let mut s = match w.open.remove(&name) {
        Some(s) => s,
        None => w.open_stream(&path, &[]).await.expect("the task streams"),
    };
    let frames = w.streams.entry(name.clone()).or_default();
    for _ in 0..n {
        let ev = s
            .next()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("a frame");
        check_event(&path, &ev);
        frames.push(ev);
    }
    w.open.insert(name, s);
}

#[when(regex = r"^I read the stream of task (\w+) to its end$")]
async fn read_rest(w: &mut OrchWorld, name: String) {
    let path = stream_path(w, &name);
    let s = w
        .open
        .remove(&name)
        .expect("the stream was opened by an earlier step");
    let mut frames = w.streams.remove(&name).unwrap_or_default();
    OrchWorld::drain_stream(&path, s, &mut frames).await;
    assert_well_formed(&frames);
    w.streams.insert(name, frames);
}

#[when(regex = r"^I stream task (\w+) again to its end$")]
async fn stream_again(w: &mut OrchWorld, name: String) {
    let path = stream_path(w, &name);
    let s = w.open_stream(&path, &[]).await.expect("the task streams");
    let mut frames = Vec::new();
    OrchWorld::drain_stream(&path, s, &mut frames).await;
    assert_well_formed(&frames);
    w.replays.insert(name, frames);
}

#[when(regex = r"^I stream task (\w+) after frame (\d+)$")]
async fn stream_after(w: &mut OrchWorld, name: String, n: u64) {
    let path = stream_path(w, &name);
    let last = n.to_string();
    let s = w
        .open_stream(&path, &[("last-event-id", &last)])
        .await
        .expect("the task streams");
    let mut frames = Vec::new();
    OrchWorld::drain_stream(&path, s, &mut frames).await;
    w.resumed.insert(name, frames);
}

// ---- When: any request ------------------------------------------------------------

#[when(regex = r#"^I send (GET|POST|DELETE) "([^"]+)"$"#)]
async fn send(w: &mut OrchWorld, method: String, path: String) {
    w.send(method.parse().expect("method"), &path, &[], b"")
        .await;
}

#[when(regex = r#"^I send (GET|POST|DELETE) "([^"]+)" with the body:$"#)]
async fn send_body(w: &mut OrchWorld, method: String, path: String, step: &Step) {
    let body = docstring(step).as_bytes().to_vec();
    w.send(
        method.parse().expect("method"),
        &path,
        &[("content-type", "application/json")],
        &body,
    )
    .await;
}

#[when(regex = r#"^I send (GET|POST|DELETE) "([^"]+)" with header "([^"]+)" set to "([^"]*)"$"#)]
async fn send_header(w: &mut OrchWorld, method: String, path: String, name: String, value: String) {
    w.send(
        method.parse().expect("method"),
        &path,
        &[(&name, &value)],
        b"",
    )
    .await;
}

// ---- When: sessions, pools, artifacts, metrics ------------------------------------

#[when(regex = r"^I look at session (\w+)$")]
async fn look_session(w: &mut OrchWorld, name: String) {
    let id = w.session(&name);
    w.send(Method::GET, &format!("/v1/sessions/{id}"), &[], b"")
        .await;
}

#[when(regex = r"^I delete session (\w+)$")]
async fn delete_session(w: &mut OrchWorld, name: String) {
    let id = w.session(&name);
    w.send(Method::DELETE, &format!("/v1/sessions/{id}"), &[], b"")
        .await;
}

#[when(regex = r#"^I look at the health of pool "([^"]+)"$"#)]
async fn health(w: &mut OrchWorld, pool: String) {
    w.send(Method::GET, &format!("/v1/pools/{pool}/health"), &[], b"")
        .await;
}

#[when(regex = r#"^I drain pool "([^"]+)" with a deadline of (\d+) ms$"#)]
async fn drain(w: &mut OrchWorld, pool: String, ms: u64) {
    w.post(
        &format!("/v1/pools/{pool}/drain"),
        &json!({"deadline_ms": ms}),
    )
    .await;
}

#[when(regex = r#"^I reload pool "([^"]+)" with model "([^"]+)"$"#)]
async fn reload(w: &mut OrchWorld, pool: String, model: String) {
    w.post(
        &format!("/v1/pools/{pool}/reload"),
        &json!({"new_model_ref": model}),
    )
    .await;
}

#[when(regex = r#"^pool "([^"]+)" has finished draining$"#)]
async fn drained(w: &mut OrchWorld, pool: String) {
    let (client, path) = (&w.client(), &format!("/v1/pools/{pool}/health"));
    let what = format!("pool {pool} to finish draining");
    let r = wait_until_async(Duration::from_secs(5), &what, || async move {
        let r = client.get(path).await?;
        check_response(&r);
        match r.json()["metrics"]["state"] == "drained" {
            true => Ok(r),
            false => Err(r.text()),
        }
    })
    .await;
    w.keep(r);
}

#[when(regex = r#"^I start reloading pool "([^"]+)" with model "([^"]+)"$"#)]
async fn start_reload(w: &mut OrchWorld, pool: String, model: String) {
    let client = w.client();
    w.pending = Some(tokio::spawn(async move {
        client
            .post_json(
                &format!("/v1/pools/{pool}/reload"),
                &json!({"new_model_ref": model}),
            )
            .await
    }));
    // Let the request reach orchd before the next step sends its own.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[when("the first reload has answered")]
async fn first_reload(w: &mut OrchWorld) {
    let r = w
        .pending
        .take()
        .expect("a reload was started")
        .await
        .expect("reload task")
        .unwrap_or_else(|e| panic!("{e}"));
    w.keep(r);
}

#[when("I store the artifact:")]
async fn store_artifact(w: &mut OrchWorld, step: &Step) {
    let body = docstring(step).as_bytes().to_vec();
    w.stored
        .push(serde_json::from_slice(&body).expect("the artifact is JSON"));
    w.send(
        Method::POST,
        "/v1/artifacts",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    if w.last().status == 201 {
        let doc = w.last_json();
        w.artifacts.push(doc);
    }
}

#[when("I fetch that artifact")]
async fn fetch_artifact(w: &mut OrchWorld) {
    let id = w.artifacts.last().expect("an artifact was stored")["id"]
        .as_str()
        .expect("id")
        .to_string();
    w.send(Method::GET, &format!("/v1/artifacts/{id}"), &[], b"")
        .await;
}

#[when(regex = r"^I fetch the transcript of task (\w+)$")]
async fn fetch_transcript(w: &mut OrchWorld, name: String) {
    let end = &w.frames(&name).last().expect("frames").data;
    let id = end["transcript_id"]
        .as_str()
        .expect("transcript_id")
        .to_string();
    w.send(Method::GET, &format!("/v1/artifacts/{id}"), &[], b"")
        .await;
}

#[when("orchd restarts")]
async fn restart(w: &mut OrchWorld) {
    w.open.clear();
    w.orchd
        .as_mut()
        .expect("orchd runs")
        .restart()
        .unwrap_or_else(|e| panic!("restart: {e}"));
}

#[when("I scrape the metrics")]
async fn scrape(w: &mut OrchWorld) {
    w.send(Method::GET, "/metrics", &[], b"").await;
    assert_eq!(w.last().status, 200);
    w.metrics = Some(w.last().text());
}

// ---- Then: responses --------------------------------------------------------------

#[then(regex = r"^the response status is (\d+)$")]
async fn status(w: &mut OrchWorld, want: u16) {
    let r = w.last();
    assert_eq!(
        r.status.as_u16(),
        want,
        "{} {}: {}",
        r.method,
        r.path,
        r.text()
    );
}

#[then(regex = r#"^the error code is "([A-Z_]+)"$"#)]
async fn error_code(w: &mut OrchWorld, code: String) {
    assert_eq!(w.last_json()["code"], code.as_str(), "{}", w.last().text());
}

#[then(regex = r#"^the error message mentions "([^"]+)"$"#)]
async fn error_mentions(w: &mut OrchWorld, what: String) {
    let msg = w.last_json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(&what),
        "message {msg:?} does not name {what:?}"
    );
}

#[then(
    regex = r#"^the response field "([\w.]+)" is (-?\d+(?:\.\d+)?|true|false|null|"[^"]*"|\[.*\])$"#
)]
async fn response_field(w: &mut OrchWorld, path: String, value: String) {
    let body = w.last_json();
    assert_eq!(field(&body, &path), &literal(&value), "{body}");
}

#[then(regex = r#"^the response field "([\w.]+)" is at least (\d+)$"#)]
async fn response_field_at_least(w: &mut OrchWorld, path: String, least: u64) {
    let body = w.last_json();
    assert!(
        field(&body, &path).as_u64().is_some_and(|n| n >= least),
        "{body}"
    );
}

#[then(regex = r#"^the response field "([\w.]+)" is a positive number$"#)]
async fn response_field_positive(w: &mut OrchWorld, path: String) {
    let body = w.last_json();
    assert!(
        field(&body, &path).as_f64().is_some_and(|n| n > 0.0),
        "{body}"
    );
}

#[then(regex = r#"^the response field "([\w.]+)" is the id of task (\w+)$"#)]
async fn response_field_task(w: &mut OrchWorld, path: String, name: String) {
    let body = w.last_json();
    assert_eq!(field(&body, &path), &json!(w.task_id(&name)), "{body}");
}

#[then(
    regex = r#"^the response field "([\w.]+)" is the sha256 of the canonical kind and content$"#
)]
async fn response_field_sha(w: &mut OrchWorld, path: String) {
    let body = w.last_json();
    let sent = w.stored.last().expect("an artifact was stored");
    // serde_json's maps are ordered by key: this is the canonical form SPEC names.
    let canonical = serde_json::to_vec(&json!({"content": sent["content"], "kind": sent["kind"]}))
        .expect("JSON");
    let hex: String = Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        field(&body, &path),
        &json!(format!("sha256:{hex}")),
        "{body}"
    );
}

#[then(regex = r#"^the response header "([^"]+)" is "([^"]*)"$"#)]
async fn header_is(w: &mut OrchWorld, name: String, value: String) {
    assert_eq!(
        w.last().header(&name),
        Some(value.as_str()),
        "{:?}",
        w.last().headers
    );
}

#[then(regex = r#"^the response header "([^"]+)" is a number$"#)]
async fn header_number(w: &mut OrchWorld, name: String) {
    let v = w.last().header(&name).unwrap_or_default();
    assert!(v.parse::<u64>().is_ok(), "{name}: {v:?}");
}

#[then(regex = r#"^the response header "([^"]+)" is a UUID$"#)]
async fn header_uuid(w: &mut OrchWorld, name: String) {
    let v = w.last().header(&name).unwrap_or_default();
    assert!(uuid::Uuid::try_parse(v).is_ok(), "{name}: {v:?}");
}

#[then("the retry advice is consistent")]
async fn retry_advice(w: &mut OrchWorld) {
    let r = w.last();
    let after: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    let backoff: u64 = r
        .header("x-backoff-ms")
        .and_then(|v| v.parse().ok())
        .expect("X-Backoff-Ms");
    let body = w.last_json();
    assert!(after >= 1, "Retry-After {after}");
    assert_eq!(body["retry_after_ms"], json!(backoff), "{body}");
    assert_eq!(
        after,
        backoff.div_ceil(1000).max(1),
        "Retry-After {after} vs X-Backoff-Ms {backoff}"
    );
    assert_eq!(body["retriable"], true);
}

// ---- Then: the OpenAI-compatible routes --------------------------------------------

/// The events of the last response, an OpenAI stream read whole, each checked against
/// openai.yaml.
fn openai_events(w: &OrchWorld) -> Vec<orchd_testkit::Event> {
    let r = w.last();
    let mut p = orchd_testkit::sse::Parser::new();
    p.push(&r.body);
    let mut events = Vec::new();
    while let Some(e) = p.next_event().unwrap_or_else(|e| panic!("{e}")) {
        crate::world::check_event_of(&r.method, &r.path, &e);
        events.push(e);
    }
    assert!(p.pending().is_empty(), "the stream ended inside an event");
    events
}

#[then(regex = r"^the OpenAI stream carries (\d+) tokens, the first saying the role$")]
async fn openai_tokens(w: &mut OrchWorld, n: usize) {
    let events = openai_events(w);
    let deltas: Vec<&Value> = events
        .iter()
        .filter_map(|e| e.data["choices"].get(0).map(|c| &c["delta"]))
        .filter(|d| d.get("content").is_some())
        .collect();
    assert_eq!(deltas.len(), n, "{events:?}");
    assert_eq!(deltas[0]["role"], "assistant");
    assert!(deltas[1..].iter().all(|d| d.get("role").is_none()));
}

#[then(regex = r#"^the OpenAI stream ends with finish reason "(\w+)", usage and \[DONE\]$"#)]
async fn openai_end(w: &mut OrchWorld, reason: String) {
    let events = openai_events(w);
    let n = events.len();
    assert!(n >= 3, "{events:?}");
    assert_eq!(
        events[n - 3].data["choices"][0]["finish_reason"],
        reason.as_str()
    );
    let usage = &events[n - 2].data["usage"];
    assert_eq!(
        usage["total_tokens"],
        json!(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    assert_eq!(events[n - 1].data, json!("[DONE]"));
}

#[then(regex = r#"^the OpenAI error is "([A-Z_]+)" naming "([^"]+)"$"#)]
async fn openai_error(w: &mut OrchWorld, code: String, param: String) {
    let e = &w.last_json()["error"];
    assert_eq!(e["code"], code.as_str(), "{e}");
    assert_eq!(e["param"], param.as_str(), "{e}");
}

#[then(regex = r#"^the OpenAI error is "([A-Z_]+)" naming nothing$"#)]
async fn openai_error_no_param(w: &mut OrchWorld, code: String) {
    let e = &w.last_json()["error"];
    assert_eq!(e["code"], code.as_str(), "{e}");
    assert_eq!(e["param"], Value::Null, "{e}");
}

#[then("the OpenAI retry advice is consistent")]
async fn openai_retry_advice(w: &mut OrchWorld) {
    let r = w.last();
    let header = |name: &str| -> u64 {
        r.header(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {:?}", r.headers))
    };
    let (secs, ms) = (header("retry-after"), header("retry-after-ms"));
    assert_eq!(header("x-backoff-ms"), ms);
    assert_eq!(secs, ms.div_ceil(1000).max(1));
    assert_eq!(w.last_json()["error"]["retry_after_ms"], json!(ms));
    assert_eq!(r.header("x-should-retry"), Some("true"));
}

// ---- Then: streams ----------------------------------------------------------------

#[then(regex = r"^task (\w+) streamed (\d+) tokens$")]
async fn streamed_tokens(w: &mut OrchWorld, name: String, n: usize) {
    assert_eq!(tokens(w.frames(&name)).len(), n);
}

#[then(regex = r"^task (\w+) streamed exactly the number of tokens in X-Tokens-Out$")]
async fn streamed_tokens_out(w: &mut OrchWorld, name: String) {
    let n = *w.tokens_out.get(&name).expect("the task was canceled");
    assert_eq!(tokens(w.frames(&name)).len() as u64, n);
    let end = &w.frames(&name).last().expect("frames").data;
    assert_eq!(end["tokens_out"], json!(n));
}

#[then(regex = r#"^the stream of task (\w+) ends with "(end|error)"$"#)]
async fn ends_with(w: &mut OrchWorld, name: String, kind: String) {
    let frames = w.frames(&name);
    assert_well_formed(frames);
    assert_eq!(frames.last().map(|e| e.event.as_str()), Some(kind.as_str()));
}

#[then(
    regex = r#"^the "(\w+)" frame of task (\w+) has "(\w+)" equal to (-?\d+(?:\.\d+)?|true|false|null|"[^"]*"|\[.*\])$"#
)]
async fn frame_field(w: &mut OrchWorld, event: String, name: String, key: String, value: String) {
    let ev = w
        .frames(&name)
        .iter()
        .find(|e| e.event == event)
        .expect("such a frame");
    assert_eq!(ev.data[key.as_str()], literal(&value), "{}", ev.data);
}

#[then(
    regex = r#"^the first "(\w+)" frame of task (\w+) has "(\w+)" equal to (-?\d+(?:\.\d+)?|true|false|null|"[^"]*"|\[.*\])$"#
)]
async fn first_frame_field(
    w: &mut OrchWorld,
    event: String,
    name: String,
    key: String,
    value: String,
) {
    frame_field(w, event, name, key, value).await;
}

#[then(regex = r#"^the first frame of task (\w+) is "(\w+)"$"#)]
async fn first_frame(w: &mut OrchWorld, name: String, event: String) {
    assert_eq!(
        w.frames(&name).first().map(|e| e.event.as_str()),
        Some(event.as_str())
    );
}

#[then(regex = r"^the frames of task (\w+) are in order$")]
async fn in_order(w: &mut OrchWorld, name: String) {
    assert_well_formed(w.frames(&name));
}

#[then(regex = r#"^task (\w+) has at least (\d+) "(\w+)" frames$"#)]
async fn at_least(w: &mut OrchWorld, name: String, n: usize, event: String) {
    let count = w.frames(&name).iter().filter(|e| e.event == event).count();
    assert!(count >= n, "{count} {event} frames");
}

#[then(regex = r#"^every "(\w+)" frame of task (\w+) has "(\w+)" between (\d+) and (\d+)$"#)]
async fn every_between(
    w: &mut OrchWorld,
    event: String,
    name: String,
    key: String,
    lo: f64,
    hi: f64,
) {
    for ev in w.frames(&name).iter().filter(|e| e.event == event) {
        let v = ev.data[key.as_str()].as_f64().unwrap_or(f64::NAN);
        assert!((lo..=hi).contains(&v), "{}", ev.data);
    }
}

#[then(regex = r#"^every "(\w+)" frame of task (\w+) has "(\w+)"$"#)]
async fn every_has(w: &mut OrchWorld, event: String, name: String, key: String) {
    for ev in w.frames(&name).iter().filter(|e| e.event == event) {
        assert!(ev.data.get(key.as_str()).is_some(), "{}", ev.data);
    }
}

#[then(regex = r"^both streams of task (\w+) are identical$")]
async fn identical(w: &mut OrchWorld, name: String) {
    assert_eq!(w.frames(&name), w.replays[&name].as_slice());
}

#[then(regex = r"^the resumed stream of task (\w+) starts at frame (\d+)$")]
async fn resumed_starts(w: &mut OrchWorld, name: String, n: u64) {
    assert_eq!(w.resumed[&name].first().map(|e| e.id), Some(n));
}

#[then(regex = r"^the resumed stream of task (\w+) matches the full stream from frame (\d+)$")]
async fn resumed_matches(w: &mut OrchWorld, name: String, n: usize) {
    assert_eq!(&w.frames(&name)[n..], w.resumed[&name].as_slice());
}

#[then(regex = r"^the stream of task (\w+) carried a heartbeat comment$")]
async fn heartbeat(w: &mut OrchWorld, name: String) {
    let comments = &w.comments[&name];
    assert!(comments.iter().any(|c| c == "hb"), "{comments:?}");
}

// ---- Then: control plane, artifacts, metrics --------------------------------------

#[then(
    regex = r#"^the capabilities list engine "(\w+)" with concurrency (\d+) and ctx_max (\d+)$"#
)]
async fn capability(w: &mut OrchWorld, engine: String, concurrency: u64, ctx_max: u64) {
    let body = w.last_json();
    let e = body["engines"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["engine"] == engine.as_str()))
        .unwrap_or_else(|| panic!("no engine {engine}: {body}"));
    assert_eq!(e["concurrency"], json!(concurrency), "{e}");
    assert_eq!(e["ctx_max"], json!(ctx_max), "{e}");
}

#[then("both artifacts have the same id")]
async fn same_id(w: &mut OrchWorld) {
    let a = &w.artifacts;
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["id"], a[1]["id"]);
}

/// One sample line of a scrape.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The samples of a Prometheus text exposition, taken line by line (histograms stay
/// as their `_bucket`, `_sum` and `_count` series, as a query sees them).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: value.parse().unwrap_or(f64::NAN),
        });
    }
    out
}

#[then("the metrics have the series:")]
async fn has_series(w: &mut OrchWorld, step: &Step) {
    let text = w.metrics.as_deref().expect("scraped");
    let names: Vec<String> = samples(text).into_iter().map(|s| s.name).collect();
    for row in &step.table.as_ref().expect("table").rows {
        let want = row[0].trim();
        assert!(names.iter().any(|n| n == want), "no series {want}");
    }
}

#[then(regex = r#"^the metric "(\w+)" summed over (pool|engine) "([^"]+)" is (\d+)$"#)]
async fn metric_sum(w: &mut OrchWorld, name: String, label: String, value: String, want: f64) {
    let label = if label == "pool" { "pool_id" } else { "engine" };
    let text = w.metrics.as_deref().expect("scraped");
    let sum: f64 = samples(text)
        .into_iter()
        .filter(|s| s.name == name && s.labels.iter().any(|(k, v)| k == label && v == &value))
        .map(|s| s.value)
        .sum();
    assert_eq!(sum, want, "{name} over {label}={value}");
}

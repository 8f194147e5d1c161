//! baseline-axum: the comparator for orchd's data plane, written the way a competent
//! engineer would by default: tokio's multi-threaded runtime, axum, shared state behind
//! `Arc<Mutex<..>>`, a semaphore for the slots, a channel per stream, one SSE event per
//! write. Same API subset (`POST /v1/tasks`, `GET /v1/tasks/{id}/stream`,
//! `POST /v1/tasks/{id}/cancel`), same frames (`id:`, `started`, `metrics`, `token`,
//! `end`), same deterministic mock tokens (orchd-engine's `MockTokens`), same 429 on a
//! full queue. Not a strawman: replay from frame 0, Last-Event-ID, and race-free cancel
//! under the lock are there too.
//!
//! `baseline-axum [ADDR] [--slots N] [--queue N] [--ttft-ms N] [--tpot-ms N]`

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orchd_engine::mock::MockTokens;
use orchd_engine::task::TaskSpec;
use tokio::sync::{mpsc, Semaphore};

struct Task {
    frames: Vec<(String, String)>,
    subscribers: Vec<mpsc::UnboundedSender<(u64, String, String)>>,
    done: bool,
    done_at: Option<Instant>,
    canceled: bool,
    tokens_out: u32,
}

struct Shared {
    tasks: Mutex<HashMap<String, Task>>,
    slots: Arc<Semaphore>,
    admitted: Mutex<usize>,
    capacity: usize,
    ttft: Duration,
    tpot: Duration,
}

type App = Arc<Shared>;

fn push(t: &mut Task, event: &str, data: String) {
    let id = t.frames.len() as u64;
    t.subscribers
        .retain(|s| s.send((id, event.to_string(), data.clone())).is_ok());
    t.frames.push((event.to_string(), data));
}

async fn create(State(app): State<App>, body: axum::body::Bytes) -> Response {
    let spec = match TaskSpec::parse(&body) {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"code": "INVALID_PARAMS", "message": e.message})),
            )
                .into_response()
        }
    };
    let id = spec.task_id.to_string();
    let position = {
        let mut n = app.admitted.lock().unwrap();
        if *n >= app.capacity {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(serde_json::json!({"code": "ADMISSION_REJECT", "message": "queue full", "retriable": true, "retry_after_ms": 100}))).into_response();
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            r.headers_mut()
                .insert("x-backoff-ms", "100".parse().unwrap());
            return r;
        }
        *n += 1;
        (*n).saturating_sub(app.slots.available_permits() + 1)
    };
    {
        let mut tasks = app.tasks.lock().unwrap();
        let mut t = Task {
            frames: Vec::new(),
            subscribers: Vec::new(),
            done: false,
            done_at: None,
            canceled: false,
            tokens_out: 0,
        };
        push(
            &mut t,
            "started",
            format!(r#"{{"queue_position":{position},"predicted_start_ms":0}}"#),
        );
        tasks.insert(id.clone(), t);
    }
    let app2 = app.clone();
    tokio::spawn(async move { run(app2, spec).await });
    (StatusCode::ACCEPTED, Json(serde_json::json!({"task_id": id, "queue_position": position, "predicted_start_ms": 0, "backoff_ms": 0}))).into_response()
}

async fn run(app: App, spec: TaskSpec) {
    let id = spec.task_id.to_string();
    let _permit = app.slots.clone().acquire_owned().await.unwrap();
    {
        let mut tasks = app.tasks.lock().unwrap();
        if let Some(t) = tasks.get_mut(&id) {
            push(
                t,
                "metrics",
                r#"{"queue_depth":0,"on_time_probability":1.0,"kv_warmth":false,"tokens_out":0}"#
                    .to_string(),
            );
        }
    }
    if !app.ttft.is_zero() {
        tokio::time::sleep(app.ttft).await;
    }
    let mut tokens = MockTokens::new(&spec, &spec.model_ref);
    let started = Instant::now();
    // Tokens are due at start + ttft + k * tpot, as orchd's mock paces them; a late token
    // does not make the next ones catch up in a burst (the next is due a tpot after it).
    let mut due = tokio::time::Instant::now();
    for i in 0..spec.max_tokens {
        {
            let mut tasks = app.tasks.lock().unwrap();
            let Some(t) = tasks.get_mut(&id) else { break };
            if t.canceled {
                break;
            }
            let data = serde_json::json!({"t": tokens.next_token(), "i": i}).to_string();
            push(t, "token", data);
            t.tokens_out += 1;
        }
        if !app.tpot.is_zero() {
            let now = tokio::time::Instant::now();
            due = if due + app.tpot > now {
                due + app.tpot
            } else {
                now + app.tpot
            };
            tokio::time::sleep_until(due).await;
        } else if i % 16 == 15 {
            tokio::task::yield_now().await;
        }
    }
    let mut tasks = app.tasks.lock().unwrap();
    if let Some(t) = tasks.get_mut(&id) {
        if !t.done {
            t.done = true;
            t.done_at = Some(Instant::now());
            let canceled = if t.canceled {
                r#","canceled":true"#
            } else {
                ""
            };
            let data = format!(
                r#"{{"tokens_out":{},"decode_ms":{},"transcript_id":"none"{canceled}}}"#,
                t.tokens_out,
                started.elapsed().as_millis()
            );
            push(t, "end", data);
            t.subscribers.clear();
        }
    }
    *app.admitted.lock().unwrap() -= 1;
}

async fn stream(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(0, |n| n + 1);
    let (tx, rx) = mpsc::unbounded_channel();
    {
        let mut tasks = app.tasks.lock().unwrap();
        let Some(t) = tasks.get_mut(&id) else {
            return (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"code": "INVALID_PARAMS", "message": "unknown task"})),
            )
                .into_response();
        };
        for (i, (event, data)) in t.frames.iter().enumerate().skip(from as usize) {
            let _ = tx.send((i as u64, event.clone(), data.clone()));
        }
        if !t.done {
            t.subscribers.push(tx);
        }
    }
    let events = futures_stream(rx);
    Sse::new(events).into_response()
}

fn futures_stream(
    rx: mpsc::UnboundedReceiver<(u64, String, String)>,
) -> impl futures_core::Stream<Item = Result<Event, Infallible>> {
    struct S(mpsc::UnboundedReceiver<(u64, String, String)>);
    impl futures_core::Stream for S {
        type Item = Result<Event, Infallible>;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.get_mut().0.poll_recv(cx).map(|o| {
                o.map(|(id, ev, data)| Ok(Event::default().id(id.to_string()).event(ev).data(data)))
            })
        }
    }
    S(rx)
}

async fn cancel(State(app): State<App>, Path(id): Path<String>) -> Response {
    let mut tasks = app.tasks.lock().unwrap();
    let Some(t) = tasks.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"code": "INVALID_PARAMS", "message": "unknown task"})),
        )
            .into_response();
    };
    t.canceled = true;
    let n = t.tokens_out;
    if !t.done {
        t.done = true;
        push(
            t,
            "end",
            format!(r#"{{"tokens_out":{n},"decode_ms":0,"transcript_id":"none","canceled":true}}"#),
        );
        t.subscribers.clear();
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert("x-tokens-out", n.into());
    r
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:8092".parse().unwrap();
    let (mut slots, mut queue, mut ttft, mut tpot) = (256usize, 4096usize, 0u64, 0u64);
    while let Some(a) = args.next() {
        let mut num = || {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a number")
        };
        match a.as_str() {
            "--slots" => slots = num() as usize,
            "--queue" => queue = num() as usize,
            "--ttft-ms" => ttft = num(),
            "--tpot-ms" => tpot = num(),
            other => addr = other.parse().expect("ADDR is IP:PORT"),
        }
    }
    assert!(
        addr.ip().is_loopback(),
        "baseline-axum listens on loopback only"
    );
    let app: App = Arc::new(Shared {
        tasks: Mutex::new(HashMap::new()),
        slots: Arc::new(Semaphore::new(slots)),
        admitted: Mutex::new(0),
        capacity: slots + queue,
        ttft: Duration::from_millis(ttft),
        tpot: Duration::from_millis(tpot),
    });
    // Finished tasks are kept (for replay) and dropped after a while, like orchd's retention.
    let janitor = app.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            janitor.tasks.lock().unwrap().retain(|_, t| {
                t.done_at
                    .is_none_or(|d| d.elapsed() < Duration::from_secs(5))
            });
        }
    });
    let router = Router::new()
        .route("/v1/tasks", post(create))
        .route("/v1/tasks/{id}/stream", get(stream))
        .route("/v1/tasks/{id}/cancel", post(cancel))
        .route("/livez", get(|| async { "ok" }))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    eprintln!(
        "baseline-axum listening on {}",
        listener.local_addr().unwrap()
    );
    // TCP_NODELAY, as any streaming server must set (else Nagle + delayed ACKs stall
    // small SSE writes for 40 ms).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    axum::serve(listener, router).await.unwrap();
}

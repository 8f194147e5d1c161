//! orchd-load: a load generator for orchd's SSE data plane, closed or open loop.
//!
//! Closed loop (default): N virtual users, each on its own keep-alive connection, repeat: submit a task
//! (`POST /v1/tasks`), stream it (`GET /v1/tasks/{id}/stream`), parse the SSE frames
//! incrementally, check frame order (consecutive ids, gap-free token indexes, exactly
//! one terminal frame). Records the submit (start to `202`), time to first token (from
//! submit), inter-token gaps and task time in HDR histograms; 429s are counted and retried after their advice.
//!
//! Open loop (`--rate R`): tasks arrive at R per second whatever happens to the earlier
//! ones, each on a fresh connection; a refusal is a result, not retried (and is checked:
//! `Retry-After` and `X-Backoff-Ms` present and agreeing with the body). Latencies are
//! measured from each task's scheduled arrival, not from when the generator got to it,
//! so a stalled generator or server shows up in the figures (coordinated omission).
//! Bounded by `--tasks` and `--duration`; refuses non-loopback targets unless
//! `--allow-remote`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "orchd-load",
    about = "SSE load against orchd, closed or open loop"
)]
struct Args {
    /// orchd address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Concurrent virtual users (one connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Tasks to complete in all.
    #[arg(long, default_value_t = 1024)]
    tasks: u64,
    /// max_tokens of every task.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Stop after this many seconds even if tasks remain.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// X-API-Key to send.
    #[arg(long)]
    api_key: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Allow a target outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    allow_remote: bool,
    /// Instead of tasks: store this many artifacts (POST /v1/artifacts) and report the
    /// write latency.
    #[arg(long, default_value_t = 0)]
    artifacts: u64,
    /// Size of each artifact's content, with --artifacts.
    #[arg(long, default_value_t = 4096)]
    artifact_bytes: usize,
    /// What to load: `orchd` (submit + stream tasks) or `openai` (stream
    /// `POST /v1/completions` from an OpenAI-compatible engine directly, to compare).
    #[arg(long, default_value = "orchd")]
    target: String,
    /// Also scrape /metrics this often (ms) on a keep-alive connection, and report the
    /// scrape latency; 0 = no scrapes.
    #[arg(long, default_value_t = 0)]
    scrape_every_ms: u64,
    /// Cancel every task after this many tokens (POST .../cancel on a second, kept-alive
    /// connection of the user) and report cancel latency: from sending the cancel to the
    /// stream's terminal frame.
    #[arg(long)]
    cancel_after: Option<u64>,
    /// With --cancel-after: send each cancel on a new connection (connect included).
    #[arg(long)]
    cancel_fresh: bool,
    /// `engine` of every task (picks the pools that serve it).
    #[arg(long, default_value = "llamacpp")]
    engine: String,
    /// Open loop: task arrivals per second (0 = closed loop with --concurrency users).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Open loop: most tasks in flight at once; an arrival beyond it is dropped by the
    /// generator and counted (a bound on the generator, not a server figure).
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: u64,
    /// Also draw the latency percentile curves (time to first token, inter-token, task,
    /// cancel) into this SVG file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

struct Stats {
    /// From the task's start (`t0`) to its `202` (retries after 429s included).
    submit_us: Histogram<u64>,
    ttft_us: Histogram<u64>,
    itl_us: Histogram<u64>,
    task_us: Histogram<u64>,
    /// With --cancel-after: cancel sent -> terminal frame received.
    cancel_us: Histogram<u64>,
}

impl Stats {
    fn new() -> Stats {
        let h = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
        Stats {
            submit_us: h(),
            ttft_us: h(),
            itl_us: h(),
            task_us: h(),
            cancel_us: h(),
        }
    }

    /// Records a token arriving at `now`: time to first token from `t0` for the first,
    /// else the gap since the previous one.
    fn token(&mut self, t0: Instant, last: &mut Option<Instant>, now: Instant) {
        let (h, since) = match *last {
            None => (&mut self.ttft_us, t0),
            Some(prev) => (&mut self.itl_us, prev),
        };
        let _ = h.record((now - since).as_micros().max(1) as u64);
        *last = Some(now);
    }

    fn merge(&mut self, other: &Stats) {
        self.submit_us.add(&other.submit_us).expect("same bounds");
        self.ttft_us.add(&other.ttft_us).expect("same bounds");
        self.itl_us.add(&other.itl_us).expect("same bounds");
        self.task_us.add(&other.task_us).expect("same bounds");
        self.cancel_us.add(&other.cancel_us).expect("same bounds");
    }
}

#[derive(Default)]
struct Counters {
    done: AtomicU64,
    tokens: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
    violations: AtomicU64,
    started: AtomicU64,
    /// 429s without Retry-After/X-Backoff-Ms, or whose advice disagrees with the body.
    malformed_refusals: AtomicU64,
    /// Open loop: arrivals dropped because --max-in-flight tasks were running.
    dropped: AtomicU64,
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(args: &Args, method: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "orchd");
    if let Some(k) = &args.api_key {
        b = b.header("x-api-key", k);
    }
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(body)).expect("request builds")
}

/// The index of a `token` frame.
#[derive(serde::Deserialize)]
struct TokenIndex {
    i: u64,
}

/// One virtual user.
async fn user(
    args: Arc<Args>,
    counters: Arc<Counters>,
    stats: Arc<Mutex<Stats>>,
    stop_at: Instant,
) {
    let mut local = Stats::new();
    let mut sender = match connect(args.addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect: {e}");
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    // The connection cancels go out on, opened before the clock starts.
    let mut control = None;
    if args.cancel_after.is_some() && !args.cancel_fresh {
        control = connect(args.addr).await.ok();
    }
    let session = uuid::Uuid::new_v4();
    while Instant::now() < stop_at {
        if counters.started.fetch_add(1, Ordering::Relaxed) >= args.tasks {
            break;
        }
        if args.target == "openai" {
            let t0 = Instant::now();
            match openai_once(&args, &mut sender, &mut local, t0).await {
                Some(n) => {
                    let _ = local.task_us.record(t0.elapsed().as_micros().max(1) as u64);
                    counters.done.fetch_add(1, Ordering::Relaxed);
                    counters.tokens.fetch_add(n, Ordering::Relaxed);
                }
                None => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    match connect(args.addr).await {
                        Ok(s) => sender = s,
                        Err(_) => break,
                    }
                }
            }
            continue;
        }
        orchd_task(
            &args,
            &mut sender,
            &mut control,
            session,
            &mut local,
            &counters,
            Plan {
                t0: Instant::now(),
                deadline: stop_at,
                retry: true,
            },
        )
        .await;
    }
    stats.lock().expect("stats lock").merge(&local);
}

/// When a task counts from, until when its submission may be retried, and whether a
/// refusal with advice is retried at all (closed loop) or is a result (open loop).
struct Plan {
    t0: Instant,
    deadline: Instant,
    retry: bool,
}

/// One task against orchd: submit (retrying 429s after their advice), stream it to
/// the end, check frame order, record latencies measured from `t0`. Returns true when
/// the stream ended with `end`.
async fn orchd_task(
    args: &Args,
    sender: &mut Sender,
    control: &mut Option<Sender>,
    session: uuid::Uuid,
    local: &mut Stats,
    counters: &Counters,
    plan: Plan,
) -> bool {
    let Plan {
        t0,
        deadline,
        retry,
    } = plan;
    let task = uuid::Uuid::new_v4();
    let body = serde_json::json!({
        "task_id": task, "session_id": session, "workload": "completion", "model_ref": "load",
        "engine": args.engine, "ctx": 8192, "priority": "interactive", "max_tokens": args.max_tokens,
        "deadline_ms": 600000, "prompt": "load test", "kv_hint": "cold",
    });
    let submitted = loop {
        if sender.ready().await.is_err() {
            match connect(args.addr).await {
                Ok(s) => *sender = s,
                Err(_) => break None,
            }
        }
        let req = request(
            args,
            "POST",
            "/v1/tasks",
            Bytes::from(serde_json::to_vec(&body).unwrap()),
        );
        let Ok(resp) = sender.send_request(req).await else {
            break None;
        };
        let status = resp.status();
        // Only refusals that carry retry advice (X-Backoff-Ms) are retried; a
        // session out of turns or budget is refused for good.
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        };
        let retry_ms = header("x-backoff-ms");
        let retry_after = header("retry-after");
        let answer = resp.into_body().collect().await.map(|b| b.to_bytes());
        if status == StatusCode::TOO_MANY_REQUESTS {
            let advised = answer
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["retry_after_ms"].as_u64());
            let well_formed = match (retry_after, retry_ms) {
                (Some(secs), Some(ms)) => advised == Some(ms) && secs == ms.div_ceil(1000).max(1),
                // Refusals for good (session rules) carry no advice at all.
                (None, None) => advised.is_none(),
                _ => false,
            };
            if !well_formed {
                counters.malformed_refusals.fetch_add(1, Ordering::Relaxed);
            }
        }
        match (status, retry_ms) {
            (StatusCode::ACCEPTED, _) => {
                let _ = local
                    .submit_us
                    .record(t0.elapsed().as_micros().max(1) as u64);
                break Some(true);
            }
            (StatusCode::TOO_MANY_REQUESTS, Some(ms)) if retry && Instant::now() < deadline => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(ms.min(1000))).await;
            }
            (StatusCode::TOO_MANY_REQUESTS, _) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                break Some(false);
            }
            _ => break None,
        }
    };
    match submitted {
        Some(true) => {}
        // Refused, and not retried: counted as a 429, not as an error.
        Some(false) => return false,
        None => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return false;
        }
    }
    let req = request(
        args,
        "GET",
        &format!("/v1/tasks/{task}/stream"),
        Bytes::new(),
    );
    let Ok(resp) = sender.send_request(req).await else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    let mut body = resp.into_body();
    let mut buf = Vec::<u8>::with_capacity(4096);
    let mut next_id = 0u64;
    let mut next_index = 0u64;
    let mut last_token: Option<Instant> = None;
    let mut cancel_sent: Option<Instant> = None;
    let mut control_back = None;
    let mut terminal = 0;
    let mut ok = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            ok = false;
            break;
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        let now = Instant::now();
        // Events are parsed in place and the buffer is drained once per chunk: a chunk
        // may carry hundreds of frames.
        let mut start = 0;
        while let Some(pos) = buf[start..].windows(2).position(|w| w == b"\n\n") {
            let ev = &buf[start..start + pos + 2];
            start += pos + 2;
            if ev.first() == Some(&b':') {
                continue;
            }
            let text = std::str::from_utf8(ev).unwrap_or("");
            let mut lines = text.lines();
            let id = lines
                .next()
                .and_then(|l| l.strip_prefix("id: "))
                .and_then(|v| v.parse::<u64>().ok());
            let event = lines
                .next()
                .and_then(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            if id != Some(next_id) {
                counters.violations.fetch_add(1, Ordering::Relaxed);
            }
            next_id = id.unwrap_or(next_id) + 1;
            match event {
                "token" => {
                    let data = lines
                        .next()
                        .and_then(|l| l.strip_prefix("data: "))
                        .unwrap_or("{}");
                    let i = serde_json::from_str::<TokenIndex>(data).ok().map(|t| t.i);
                    if i != Some(next_index) {
                        counters.violations.fetch_add(1, Ordering::Relaxed);
                    }
                    next_index += 1;
                    local.token(t0, &mut last_token, now);
                    if cancel_sent.is_none() && Some(next_index) == args.cancel_after {
                        cancel_sent = Some(Instant::now());
                        let (addr, path) = (args.addr, format!("/v1/tasks/{task}/cancel"));
                        let req = request(args, "POST", &path, Bytes::new());
                        let kept = control.take();
                        let (back, returned) = tokio::sync::oneshot::channel();
                        control_back = Some(returned);
                        tokio::spawn(async move {
                            let mut s = match kept {
                                Some(s) => s,
                                None => match connect(addr).await {
                                    Ok(s) => s,
                                    Err(_) => return,
                                },
                            };
                            if s.ready().await.is_err() {
                                match connect(addr).await {
                                    Ok(fresh) => s = fresh,
                                    Err(_) => return,
                                }
                            }
                            if let Ok(resp) = s.send_request(req).await {
                                let _ = resp.into_body().collect().await;
                            }
                            let _ = back.send(s);
                        });
                    }
                }
                "end" => {
                    terminal += 1;
                    if let Some(sent) = cancel_sent {
                        let _ = local
                            .cancel_us
                            .record(sent.elapsed().as_micros().max(1) as u64);
                    }
                }
                "error" => {
                    terminal += 1;
                    ok = false;
                }
                _ => {}
            }
        }
        buf.drain(..start);
    }
    if terminal != 1 {
        counters.violations.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(returned) = control_back {
        if let Ok(s) = returned.await {
            if !args.cancel_fresh {
                *control = Some(s);
            }
        }
    }
    if ok {
        let _ = local.task_us.record(t0.elapsed().as_micros().max(1) as u64);
        counters.done.fetch_add(1, Ordering::Relaxed);
        counters.tokens.fetch_add(next_index, Ordering::Relaxed);
    } else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// Stores `args.artifacts` unique artifacts from `args.concurrency` connections and
/// prints the write latency distribution.
async fn artifact_writes(args: Arc<Args>) {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (args, next) = (Arc::clone(&args), Arc::clone(&next));
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
                let mut failed = 0u64;
                let Ok(mut sender) = connect(args.addr).await else { return (h, args.artifacts) };
                let run = uuid::Uuid::new_v4();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.artifacts {
                        break;
                    }
                    let pad = "a".repeat(args.artifact_bytes.saturating_sub(64));
                    let body = serde_json::json!({"kind": "other", "content": {"run": run, "i": i, "pad": pad}});
                    let req = request(&args, "POST", "/v1/artifacts", Bytes::from(serde_json::to_vec(&body).unwrap()));
                    let t0 = Instant::now();
                    if sender.ready().await.is_err() {
                        failed += 1;
                        continue;
                    }
                    match sender.send_request(req).await {
                        Ok(resp) if resp.status() == StatusCode::CREATED => {
                            let _ = resp.into_body().collect().await;
                            let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                        }
                        Ok(resp) => {
                            let _ = resp.into_body().collect().await;
                            failed += 1;
                        }
                        Err(_) => failed += 1,
                    }
                }
                (h, failed)
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    let mut failed = 0;
    for w in workers {
        if let Ok((h, f)) = w.await {
            all.add(&h).expect("same bounds");
            failed += f;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let q = |p: f64| ms(all.value_at_quantile(p));
    println!(
        "artifacts {} of {} bytes, concurrency {}, {:.2}s ({:.0}/s), failed {failed}",
        all.len(),
        args.artifact_bytes,
        args.concurrency,
        secs,
        all.len() as f64 / secs
    );
    println!(
        "write latency ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        q(0.5),
        q(0.99),
        q(0.999),
        ms(all.max())
    );
}

/// One streamed completion straight from an OpenAI-compatible engine; records time to
/// the first text event and the gaps between events. Returns the tokens received.
async fn openai_once(
    args: &Args,
    sender: &mut Sender,
    local: &mut Stats,
    t0: Instant,
) -> Option<u64> {
    sender.ready().await.ok()?;
    let body = serde_json::json!({"model": "load", "prompt": "load test", "max_tokens": args.max_tokens, "stream": true});
    let req = request(
        args,
        "POST",
        "/v1/completions",
        Bytes::from(serde_json::to_vec(&body).unwrap()),
    );
    let resp = sender.send_request(req).await.ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut tokens = 0u64;
    let mut last: Option<Instant> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        let Some(d) = frame.data_ref() else { continue };
        buf.extend_from_slice(d);
        let now = Instant::now();
        let mut start = 0;
        while let Some(pos) = buf[start..].windows(2).position(|w| w == b"\n\n") {
            let ev = &buf[start..start + pos + 2];
            start += pos + 2;
            let text = std::str::from_utf8(ev).unwrap_or("");
            let Some(data) = text.trim_end().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return Some(tokens);
            }
            let v: serde_json::Value = serde_json::from_str(data).ok()?;
            if v["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            {
                tokens += 1;
                local.token(t0, &mut last, now);
            }
        }
        buf.drain(..start);
    }
    Some(tokens)
}

/// Open loop: one arrival every 1/rate s from `started`, each a task on a fresh
/// connection, measured from its scheduled arrival. Returns the number of arrivals.
async fn open_loop(
    args: Arc<Args>,
    counters: Arc<Counters>,
    stats: Arc<Mutex<Stats>>,
    started: Instant,
    stop_at: Instant,
) -> u64 {
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    // Histograms are reused by the tasks in flight, not allocated per task.
    let spare: Arc<Mutex<Vec<Stats>>> = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut k = 0u64;
    while k < args.tasks {
        let due = started + interval.mul_f64(k as f64);
        if due >= stop_at {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        k += 1;
        if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (args, counters, spare, in_flight) = (
            Arc::clone(&args),
            Arc::clone(&counters),
            Arc::clone(&spare),
            Arc::clone(&in_flight),
        );
        tasks.spawn(async move {
            let mut local = spare
                .lock()
                .expect("spare")
                .pop()
                .unwrap_or_else(Stats::new);
            match connect(args.addr).await {
                Ok(mut sender) => {
                    let session = uuid::Uuid::new_v4();
                    let deadline = due + Duration::from_secs(args.duration);
                    orchd_task(
                        &args,
                        &mut sender,
                        &mut None,
                        session,
                        &mut local,
                        &counters,
                        Plan {
                            t0: due,
                            deadline,
                            retry: false,
                        },
                    )
                    .await;
                }
                Err(_) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            spare.lock().expect("spare").push(local);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        // Reap finished arrivals as we go, so the set stays the size of what is in flight.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut s = stats.lock().expect("stats lock");
    for local in spare.lock().expect("spare").drain(..) {
        s.merge(&local);
    }
    k
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    if !args.addr.ip().is_loopback() && !args.allow_remote {
        eprintln!(
            "orchd-load: {} is not a loopback address (use --allow-remote on purpose)",
            args.addr
        );
        std::process::exit(2);
    }
    if args.artifacts > 0 {
        artifact_writes(args).await;
        return;
    }
    let counters = Arc::new(Counters::default());
    let stats = Arc::new(Mutex::new(Stats::new()));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.duration);
    let progress = {
        let counters = Arc::clone(&counters);
        let total = args.tasks;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprint!(
                    "\r{:>6.1}s  tasks {}/{}  tokens {}  429s {}  errors {}   ",
                    started.elapsed().as_secs_f64(),
                    counters.done.load(Ordering::Relaxed),
                    total,
                    counters.tokens.load(Ordering::Relaxed),
                    counters.rejected.load(Ordering::Relaxed),
                    counters.errors.load(Ordering::Relaxed),
                );
            }
        })
    };
    let load_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = (args.scrape_every_ms > 0).then(|| {
        let args = Arc::clone(&args);
        let load_done = Arc::clone(&load_done);
        tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
            let Ok(mut sender) = connect(args.addr).await else {
                return h;
            };
            let mut tick = tokio::time::interval(Duration::from_millis(args.scrape_every_ms));
            while !load_done.load(Ordering::Relaxed) {
                tick.tick().await;
                if sender.ready().await.is_err() {
                    break;
                }
                let t0 = Instant::now();
                let Ok(resp) = sender
                    .send_request(request(&args, "GET", "/metrics", Bytes::new()))
                    .await
                else {
                    break;
                };
                let _ = resp.into_body().collect().await;
                let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
            }
            h
        })
    });
    let mut arrivals = None;
    if args.rate > 0.0 {
        arrivals = Some(
            open_loop(
                Arc::clone(&args),
                Arc::clone(&counters),
                Arc::clone(&stats),
                started,
                stop_at,
            )
            .await,
        );
    } else {
        let users: Vec<_> = (0..args.concurrency)
            .map(|_| {
                tokio::spawn(user(
                    Arc::clone(&args),
                    Arc::clone(&counters),
                    Arc::clone(&stats),
                    stop_at,
                ))
            })
            .collect();
        for u in users {
            let _ = u.await;
        }
    }
    progress.abort();
    eprintln!();
    load_done.store(true, Ordering::Relaxed);
    let scrapes = match scraper {
        Some(t) => t.await.ok(),
        None => None,
    };
    let secs = started.elapsed().as_secs_f64();
    let s = stats.lock().expect("stats lock");
    let done = counters.done.load(Ordering::Relaxed);
    let tokens = counters.tokens.load(Ordering::Relaxed);
    let q = |h: &Histogram<u64>, p: f64| ms(h.value_at_quantile(p));
    let summary = serde_json::json!({
        "concurrency": args.concurrency, "max_tokens": args.max_tokens, "seconds": secs,
        "tasks": done, "tokens": tokens, "tasks_per_s": done as f64 / secs, "tokens_per_s": tokens as f64 / secs,
        "rejected_429": counters.rejected.load(Ordering::Relaxed), "errors": counters.errors.load(Ordering::Relaxed),
        "frame_violations": counters.violations.load(Ordering::Relaxed),
        "submit_ms": {"p50": q(&s.submit_us, 0.5), "p99": q(&s.submit_us, 0.99), "p999": q(&s.submit_us, 0.999), "max": ms(s.submit_us.max())},
        "ttft_ms": {"p50": q(&s.ttft_us, 0.5), "p99": q(&s.ttft_us, 0.99), "p999": q(&s.ttft_us, 0.999), "max": ms(s.ttft_us.max())},
        "itl_ms": {"p50": q(&s.itl_us, 0.5), "p99": q(&s.itl_us, 0.99), "p999": q(&s.itl_us, 0.999), "max": ms(s.itl_us.max())},
        "task_ms": {"p50": q(&s.task_us, 0.5), "p99": q(&s.task_us, 0.99), "max": ms(s.task_us.max())},
    });
    let mut summary = summary;
    summary["malformed_429"] = counters.malformed_refusals.load(Ordering::Relaxed).into();
    if let Some(n) = arrivals {
        summary["mode"] = "open".into();
        summary["rate"] = args.rate.into();
        summary["arrivals"] = n.into();
        summary["dropped_by_generator"] = counters.dropped.load(Ordering::Relaxed).into();
    } else {
        summary["mode"] = "closed".into();
    }
    if args.cancel_after.is_some() {
        let h = &s.cancel_us;
        summary["cancel_to_terminal_ms"] = serde_json::json!({"n": h.len(), "p50": q(h, 0.5), "p99": q(h, 0.99), "p999": q(h, 0.999), "max": ms(h.max())});
    }
    if let Some(h) = &scrapes {
        summary["scrape_ms"] = serde_json::json!({"n": h.len(), "p50": q(h, 0.5), "p99": q(h, 0.99), "max": ms(h.max())});
    }
    if let Some(path) = &args.plot {
        use orchd_perf::plot::{write_svg, Series};
        let title = format!(
            "orchd-load: {} tasks, {} tokens each, {}",
            done,
            args.max_tokens,
            match arrivals {
                Some(_) => format!("open loop at {}/s", args.rate),
                None => format!("{} users", args.concurrency),
            }
        );
        let series = [
            Series {
                name: "submit (202)",
                micros: &s.submit_us,
            },
            Series {
                name: "time to first token",
                micros: &s.ttft_us,
            },
            Series {
                name: "inter-token",
                micros: &s.itl_us,
            },
            Series {
                name: "task",
                micros: &s.task_us,
            },
            Series {
                name: "cancel -> terminal",
                micros: &s.cancel_us,
            },
        ];
        match write_svg(path, &title, &series) {
            Ok(()) => eprintln!("latency plot: {}", path.display()),
            Err(e) => eprintln!("latency plot not written: {e}"),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary).expect("json"));
        return;
    }
    if let Some(h) = &scrapes {
        println!(
            "scrapes {}  /metrics latency ms: p50 {:.3}  p99 {:.3}  max {:.3}",
            h.len(),
            q(h, 0.5),
            q(h, 0.99),
            ms(h.max())
        );
    }
    match arrivals {
        Some(n) => println!(
            "open loop: {} arrivals/s, {n} arrivals ({} dropped by the generator)  max_tokens {}  {:.2}s",
            args.rate, summary["dropped_by_generator"], args.max_tokens, secs
        ),
        None => println!(
            "closed loop: concurrency {}  max_tokens {}  {:.2}s",
            args.concurrency, args.max_tokens, secs
        ),
    }
    println!(
        "tasks {done}  ({:.0}/s)   tokens {tokens}  ({:.0}/s)",
        done as f64 / secs,
        tokens as f64 / secs
    );
    println!(
        "429s {} ({} malformed)  errors {}  frame-order violations {}",
        summary["rejected_429"],
        summary["malformed_429"],
        summary["errors"],
        summary["frame_violations"]
    );
    println!(
        "{:<22}{:>10}{:>10}{:>10}{:>10}",
        "latency (ms)", "p50", "p99", "p99.9", "max"
    );
    let mut rows = vec![
        ("submit (202)", &s.submit_us),
        ("time to first token", &s.ttft_us),
        ("inter-token", &s.itl_us),
        ("task", &s.task_us),
    ];
    if args.cancel_after.is_some() {
        rows.push(("cancel -> terminal", &s.cancel_us));
    }
    for (name, h) in rows {
        println!(
            "{:<22}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
            name,
            q(h, 0.5),
            q(h, 0.99),
            q(h, 0.999),
            ms(h.max())
        );
    }
}

//! One task against orchd: submit, stream, check the SSE frames' order, record latencies.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;

use crate::args::Args;
use crate::http::{connect, request, Sender};
use crate::stats::{Counters, Stats};

/// The index of a `token` frame.
#[derive(serde::Deserialize)]
struct TokenIndex {
    i: u64,
}

/// When a task counts from, until when its submission may be retried, and whether a
/// refusal with advice is retried at all (closed loop) or is a result (open loop).
pub struct Plan {
    pub t0: Instant,
    pub deadline: Instant,
    pub retry: bool,
}

/// One task against orchd: submit (retrying 429s after their advice), stream it to
/// the end, check frame order, record latencies measured from `t0`. Returns true when
/// the stream ended with `end`.
pub async fn orchd_task(
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
    // The shard that answered the POST, if orchd said.
    let mut shard: Option<usize> = None;
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
        shard = header("x-orchd-shard").and_then(|n| usize::try_from(n).ok());
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
                let us = t0.elapsed().as_micros().max(1) as u64;
                let _ = local.submit_us.record(us);
                if let Some(n) = shard {
                    local.shard_submit(n, us);
                }
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
                    if let (None, Some(n)) = (last_token, shard) {
                        let us = (now - t0).as_micros().max(1) as u64;
                        local.shard_ttft(n, us);
                    }
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

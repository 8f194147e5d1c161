//! `--artifacts N`: store N artifacts and print the write latency instead of running tasks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper::StatusCode;

use crate::args::Args;
use crate::http::{connect, request};
use crate::stats::ms;

/// Stores `args.artifacts` unique artifacts from `args.concurrency` connections and
/// prints the write latency distribution.
pub async fn artifact_writes(args: Arc<Args>) {
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

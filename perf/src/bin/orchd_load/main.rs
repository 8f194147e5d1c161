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

mod args;
mod artifacts;
mod closed_loop;
mod http;
mod open_loop;
mod openai;
mod orchd_task;
mod report;
mod scrape;
mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::args::Args;
use crate::stats::{Counters, Stats};

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
        artifacts::artifact_writes(args).await;
        return;
    }
    let counters = Arc::new(Counters::default());
    let stats = Arc::new(Mutex::new(Stats::new()));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.duration);
    let progress = report::progress(Arc::clone(&counters), args.tasks, started);
    let load_done = Arc::new(AtomicBool::new(false));
    let scraper = (args.scrape_every_ms > 0)
        .then(|| scrape::scraper(Arc::clone(&args), Arc::clone(&load_done)));
    let mut arrivals = None;
    if args.rate > 0.0 {
        arrivals = Some(
            open_loop::open_loop(
                Arc::clone(&args),
                Arc::clone(&counters),
                Arc::clone(&stats),
                started,
                stop_at,
            )
            .await,
        );
    } else {
        closed_loop::closed_loop(
            Arc::clone(&args),
            Arc::clone(&counters),
            Arc::clone(&stats),
            stop_at,
        )
        .await;
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
    report::summary(&args, &counters, &s, secs, arrivals, scrapes);
}

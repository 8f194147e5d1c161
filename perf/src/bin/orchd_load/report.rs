//! What a run prints: the progress line, then the summary as a table or JSON, and the plot.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;

use crate::args::Args;
use crate::stats::{ms, Counters, Stats};

/// Every second, the run so far on one stderr line, rewritten in place.
pub fn progress(counters: Arc<Counters>, total: u64, started: Instant) -> JoinHandle<()> {
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
}

/// Prints the summary of a finished run: JSON with `--json`, else the table; with
/// `--plot`, also the latency curves. `arrivals` is set in open loop only.
pub fn summary(
    args: &Args,
    counters: &Counters,
    s: &Stats,
    secs: f64,
    arrivals: Option<u64>,
    scrapes: Option<Histogram<u64>>,
) {
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
    // By the shard that answered the POST (orchd's X-Orchd-Shard), when it says.
    summary["by_shard"] = s
        .by_shard
        .iter()
        .enumerate()
        .map(|(i, (submit, ttft))| {
            serde_json::json!({"shard": i, "tasks": submit.len(),
                "submit_ms": {"p50": q(submit, 0.5), "p99": q(submit, 0.99)},
                "ttft_ms": {"p50": q(ttft, 0.5), "p99": q(ttft, 0.99)}})
        })
        .collect::<Vec<_>>()
        .into();
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

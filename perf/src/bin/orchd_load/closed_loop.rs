//! Closed loop: virtual users, each repeating tasks on its own keep-alive connection.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::args::Args;
use crate::http::connect;
use crate::openai::openai_once;
use crate::orchd_task::{orchd_task, Plan};
use crate::stats::{Counters, Stats};

/// Runs `args.concurrency` users until `args.tasks` tasks have started or `stop_at`.
pub async fn closed_loop(
    args: Arc<Args>,
    counters: Arc<Counters>,
    stats: Arc<Mutex<Stats>>,
    stop_at: Instant,
) {
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

//! Open loop: tasks arrive at a fixed rate, each on a fresh connection, whatever the server does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::http::connect;
use crate::orchd_task::{orchd_task, Plan};
use crate::stats::{Counters, Stats};

/// Open loop: one arrival every 1/rate s from `started`, each a task on a fresh
/// connection, measured from its scheduled arrival. Returns the number of arrivals.
pub async fn open_loop(
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

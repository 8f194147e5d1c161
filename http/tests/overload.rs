//! Overload (issue 9): open-loop arrivals at twice a pool's capacity. Admitted tasks all
//! complete with contiguous frames, refusals are all well-formed 429s with retry advice,
//! and the queue never holds more than its capacity. (Latency under overload is
//! measured by `perf/scripts/overload.sh`, not asserted here.)

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchd_testkit::{stream, submit, task_body, tokens, uuid, Client};
use serde_json::json;
use support::TestServer;

#[test]
fn twice_the_capacity_is_served_or_refused_well_and_the_queue_stays_bounded() {
    // 2 slots x 20 tokens x 5 ms: about 20 tasks/s of capacity; arrivals at 40/s.
    const QUEUE: u64 = 6;
    let s = TestServer::start(
        orchd_http::Config::from_toml_str(&format!(
            "[server]\nshards = 2\n[[pools]]\nid = \"p\"\nslots = 2\nqueue_capacity = {QUEUE}\n\
             [pools.adapter]\nttft_ms = 0\ntpot_ms = 5\n"
        ))
        .unwrap(),
    );
    let addr = s.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let max_depth = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_depth) = (stop.clone(), max_depth.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let h = Client::connect(addr).send("GET", "/v1/pools/p/health", &[], b"");
                let depth = h.json()["metrics"]["queue_depth"].as_u64().unwrap();
                max_depth.fetch_max(depth, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let start = Instant::now();
    let mut arrivals = Vec::new();
    for k in 0..120u32 {
        // Open loop: arrival k is due at k / 40 s, whatever happened to the others.
        let due = start + Duration::from_millis(u64::from(k) * 25);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        arrivals.push(std::thread::spawn(move || {
            let task = uuid();
            let body = task_body(&task, &uuid(), json!({"max_tokens": 20}));
            let r = submit(addr, &[], &body);
            match r.status {
                202 => {
                    let events = stream(addr, &[], &task);
                    let n = tokens(&events).len();
                    assert_eq!(n, 20, "an admitted task streams all its tokens");
                    assert_eq!(events.last().unwrap().event, "end");
                    true
                }
                429 => {
                    let b = r.json();
                    assert_eq!(b["code"], "ADMISSION_REJECT");
                    assert_eq!(b["policy_label"], "reject");
                    assert_eq!(b["retriable"], true);
                    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
                    let backoff: u64 = r.header("x-backoff-ms").unwrap().parse().unwrap();
                    assert!(after >= 1);
                    assert_eq!(b["retry_after_ms"], json!(backoff));
                    assert_eq!(after, backoff.div_ceil(1000).max(1));
                    false
                }
                other => panic!("{other}: {}", String::from_utf8_lossy(&r.body)),
            }
        }));
    }
    let admitted = arrivals
        .into_iter()
        .map(|a| a.join().expect("an arrival's checks"))
        .filter(|&ok| ok)
        .count();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let max_depth = max_depth.load(Ordering::Relaxed);
    eprintln!("120 arrivals at 2x capacity: {admitted} admitted, max queue depth {max_depth}");
    assert!(
        max_depth <= QUEUE,
        "queue depth {max_depth} over its capacity {QUEUE}"
    );
    assert!(
        admitted < 120,
        "2x the capacity was all admitted: no backpressure"
    );
    assert!(admitted >= 20, "only {admitted} admitted");
}

//! `--scrape-every-ms`: `/metrics` scraped during the load on a keep-alive connection, timed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use crate::args::Args;
use crate::http::{connect, request};

/// Scrapes every `args.scrape_every_ms` until `load_done`; yields the scrape latencies.
pub fn scraper(args: Arc<Args>, load_done: Arc<AtomicBool>) -> JoinHandle<Histogram<u64>> {
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
}

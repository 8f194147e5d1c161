//! First-token and per-token latency through the real runtime: a live orchd (2 shards,
//! zero-latency mock engine) on 127.0.0.1:0, a client on this thread submitting a task
//! and reading its stream until the first `token` frame (first token), then to the end
//! (decode per token). Criterion reports the mean; an HDR histogram of the same samples
//! gives p50/p99/p99.9.
//!
//! `first_token_paced` (issue 16): the same first token on a pool whose engine paces
//! tokens (20 ms apart), first with the pool idle, then while 256 other streams of the
//! same pool decode on its shard (read by background threads): what a new task's first
//! token costs beside running decode, side by side in one run.
//!
//! `cargo bench -p orchd-benches --bench first_token`

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hdrhistogram::Histogram;
use orchd_engine::Config;

struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            r: BufReader::new(s),
        }
    }

    fn head(&mut self) -> (u16, Option<usize>) {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = None;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line.trim_end().is_empty() {
                return (status, len);
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = Some(v.trim().parse().unwrap());
            }
        }
    }

    /// POST /v1/tasks, then GET its stream; returns (first token, whole stream) times.
    fn task(&mut self, tokens: u32) -> (Duration, Duration) {
        let id = self.submit(tokens);
        let t0 = id.1;
        let req = format!("GET /v1/tasks/{}/stream HTTP/1.1\r\nHost: b\r\n\r\n", id.0);
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        assert_eq!(self.head().0, 200);
        let mut first = None;
        let mut line = String::new();
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if first.is_none() && line.contains("event: token") {
                first = Some(t0.elapsed());
            }
            if line.starts_with("0\r") {
                // The chunked body's last chunk.
                self.r.read_line(&mut line).unwrap();
                return (first.unwrap(), t0.elapsed());
            }
        }
    }

    /// POST /v1/tasks of `tokens` tokens: the task's id and when the POST was sent.
    fn submit(&mut self, tokens: u32) -> (uuid::Uuid, Instant) {
        let id = uuid::Uuid::new_v4();
        let body = format!(
            r#"{{"task_id":"{id}","session_id":"{id}","workload":"completion","model_ref":"m","engine":"llamacpp","ctx":4096,"priority":"interactive","max_tokens":{tokens},"deadline_ms":600000,"prompt":"hi","kv_hint":"cold"}}"#
        );
        let t0 = Instant::now();
        let req = format!(
            "POST /v1/tasks HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        let (status, len) = self.head();
        assert_eq!(status, 202);
        let mut b = vec![0; len.unwrap()];
        self.r.read_exact(&mut b).unwrap();
        (id, t0)
    }

    /// Submits a task and opens its stream, leaving it to be read elsewhere.
    fn open_stream(mut self, tokens: u32) -> TcpStream {
        let (id, _) = self.submit(tokens);
        let req = format!("GET /v1/tasks/{id}/stream HTTP/1.1\r\nHost: b\r\n\r\n");
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        assert_eq!(self.head().0, 200);
        self.r.into_inner()
    }
}

/// Streams read (and discarded) by background threads until dropped.
struct Decoding {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Decoding {
    /// `n` tasks of `tokens` tokens, their streams read by 4 threads.
    fn start(addr: SocketAddr, n: usize, tokens: u32) -> Decoding {
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Vec<TcpStream> = (0..n)
            .map(|_| Conn::new(addr).open_stream(tokens))
            .collect();
        let mut groups: Vec<Vec<TcpStream>> = (0..4).map(|_| Vec::new()).collect();
        for (i, s) in streams.into_iter().enumerate() {
            s.set_nonblocking(true).unwrap();
            groups[i % 4].push(s);
        }
        let threads = groups
            .into_iter()
            .map(|mut group| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while !stop.load(Ordering::Relaxed) && !group.is_empty() {
                        group.retain_mut(|s| match s.read(&mut buf) {
                            Ok(0) => false,
                            Ok(_) => true,
                            Err(e) => e.kind() == ErrorKind::WouldBlock,
                        });
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Decoding { stop, threads }
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Benches the first token of 1-token tasks on `conn`, each also recorded in `h`.
fn first_tokens(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    conn: &mut Conn,
    h: &mut Histogram<u64>,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (first, _) = conn.task(1);
                let _ = h.record(first.as_nanos() as u64);
                total += first;
            }
            total
        })
    });
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name}: n {} p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3
    );
}

fn bench(c: &mut Criterion) {
    let mut config = Config::default();
    config.server.addr = "127.0.0.1:0".parse().unwrap();
    config.server.shards = 2;
    config.pools[0].adapter.ttft_ms = 0;
    config.pools[0].adapter.tpot_ms = 0;
    config.sessions.max_turns = u32::MAX;
    config.stream.retention_ms = 1000;
    let server = orchd_http::serve(config).unwrap();
    let mut conn = Conn::new(server.local_addr());
    let mut ttft = Histogram::<u64>::new(3).unwrap();
    let mut per_token = Histogram::<u64>::new(3).unwrap();
    let mut g = c.benchmark_group("end_to_end");
    first_tokens(&mut g, "first_token", &mut conn, &mut ttft);
    g.bench_function("decode_per_token_256", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (first, all) = conn.task(256);
                let per = (all - first) / 255;
                let _ = per_token.record(per.as_nanos() as u64);
                total += per;
            }
            total
        })
    });
    g.finish();
    report("first token", &ttft);
    report("decode per token", &per_token);
    drop(conn);
    server.shutdown().unwrap();
}

/// First token on a paced pool, idle and beside 256 decoding streams.
fn paced(c: &mut Criterion) {
    const DECODING: usize = 256;
    let mut config = Config::default();
    config.server.addr = "127.0.0.1:0".parse().unwrap();
    config.server.shards = 2;
    let pool = &mut config.pools[0];
    pool.slots = DECODING as u32 + 8;
    pool.adapter.ttft_ms = 0;
    pool.adapter.tpot_ms = 20;
    config.sessions.max_turns = u32::MAX;
    config.stream.retention_ms = 1000;
    let server = orchd_http::serve(config).unwrap();
    let addr = server.local_addr();
    let mut conn = Conn::new(addr);
    let mut g = c.benchmark_group("first_token_paced");
    let (mut idle, mut busy) = (
        Histogram::<u64>::new(3).unwrap(),
        Histogram::<u64>::new(3).unwrap(),
    );
    first_tokens(&mut g, "idle", &mut conn, &mut idle);
    // Long tasks: 3,000 tokens at 20 ms (a minute) outlast the measurement.
    let decoding = Decoding::start(addr, DECODING, 3_000);
    first_tokens(&mut g, "beside_256_decoding", &mut conn, &mut busy);
    g.finish();
    drop(decoding);
    report("paced first token, idle", &idle);
    report("paced first token, 256 streams decoding", &busy);
    drop(conn);
    server.shutdown().unwrap();
}

criterion_group!(benches, bench, paced);
criterion_main!(benches);

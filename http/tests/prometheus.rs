//! The operators' kit against a real Prometheus (issue 21): Debian's `prometheus`
//! scrapes a live orchd every second while a bounded load runs (about 12 s: tasks
//! streamed to their end, some refused with 429), with `deploy/prometheus/orchd.rules.yml`
//! loaded; then every expression of the recording and alerting rules (an alert's without
//! its threshold), of the Grafana dashboard (`deploy/grafana/orchd.json`, its variables
//! substituted) and of the README's PromQL examples is evaluated through Prometheus'
//! HTTP API and must return samples; and the first-token p99 Prometheus computes from
//! the histogram falls in the bucket that holds the p99 the client measured.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchd_engine::config::QueuePolicy;
use orchd_shards::metrics::BUCKETS_MS;
use orchd_testkit::{task_body, try_wait_until, uuid, Client};
use serde_json::{json, Value};
use support::TestServer;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A Prometheus server on 127.0.0.1, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates orchd's rules every second.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("orchd-prometheus-{}", uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = repo("deploy/prometheus/orchd.rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\n\
             scrape_configs:\n  - job_name: orchd\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.canonicalize().unwrap()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package) starts");
        let p = Prometheus {
            child,
            addr,
            _dir: TempDir(dir),
        };
        try_wait_until(Duration::from_secs(20), "prometheus ready", || {
            // Connect first: a refused connection is the usual answer while it starts.
            std::net::TcpStream::connect(p.addr).ok()?;
            orchd_testkit::try_send(p.addr, "GET", "/-/ready", b"").filter(|r| r.status == 200)
        })
        .expect("prometheus answers /-/ready");
        p
    }

    fn get(&self, path: &str) -> Value {
        let r = Client::connect(self.addr).send("GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    }

    /// The samples of an instant query.
    fn query(&self, expr: &str) -> Vec<Value> {
        let v = self.get(&format!("/api/v1/query?query={}", encode(expr)));
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An alert's expression without its thresholds: every comparison with a number
/// (outside label matchers) removed, so what the alert compares must exist.
fn signal(alert: &str) -> String {
    let b = alert.as_bytes();
    let (mut out, mut i, mut braces) = (String::new(), 0, 0);
    while i < b.len() {
        match b[i] {
            b'{' => braces += 1,
            b'}' => braces -= 1,
            _ => {}
        }
        let op = [">=", "<=", "==", "!=", ">", "<"]
            .into_iter()
            .find(|op| braces == 0 && alert[i..].starts_with(op));
        if let Some(op) = op {
            let rest = alert[i + op.len()..].trim_start();
            let number = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if number > 0 {
                i = alert.len() - rest.len() + number;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The value of a sample of an instant query.
fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// Every expression of the dashboard's panels, its variables substituted as Grafana
/// would for "all pools" and a 1 s scrape.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo("deploy/grafana/orchd.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            out.push(e.replace("$__rate_interval", "1m").replace("$pool", ".*"));
        }
    }
    out
}

/// The README's PromQL examples: every line of its ```promql blocks but comments.
fn readme_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo("README.md")).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        match (inside, line.trim()) {
            (false, "```promql") => inside = true,
            (true, "```") => inside = false,
            (true, l) if !l.is_empty() && !l.starts_with('#') => out.push(l.to_string()),
            _ => {}
        }
    }
    out
}

/// The histogram bucket (lower, upper bound in ms) that holds `ms`.
fn bucket_of(ms: f64) -> (f64, f64) {
    let at = BUCKETS_MS
        .iter()
        .position(|le| ms <= *le)
        .expect("within the buckets");
    (
        if at == 0 { 0.0 } else { BUCKETS_MS[at - 1] },
        BUCKETS_MS[at],
    )
}

#[test]
fn thresholds_come_off_alerts_but_not_label_matchers() {
    assert_eq!(signal(r#"up{job="orchd"} == 0"#), r#"up{job="orchd"}"#);
    assert_eq!(
        signal("a{r=~\"x|y\",s!=\"z\"} > 2000\nand on (p)\nb > 0.05"),
        "a{r=~\"x|y\",s!=\"z\"} and on (p) b"
    );
    assert_eq!(signal("c / d > 0.1"), "c / d");
}

#[test]
#[ignore = "needs prometheus (Debian's prometheus package; .ci/run installs it)"]
fn every_rule_dashboard_and_readme_expression_answers_from_a_live_orchd() {
    // A small pool, so that a few users also meet a full queue (429s); 300 ms to the
    // first token (more for a task that queued) keeps the p99 away from a bucket's
    // edge, so the client's and Prometheus' p99 land in one bucket.
    let mut c = TestServer::config(2);
    let p = &mut c.pools[0];
    p.slots = 4;
    p.queue_capacity = 2;
    p.policy = QueuePolicy::Reject;
    p.adapter.ttft_ms = 300;
    p.adapter.tpot_ms = 5;
    c.sessions.max_turns = u32::MAX;
    let s = TestServer::start(c);
    let prom = Prometheus::start(s.addr);

    let ttft_ms = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(12);
    let users: Vec<_> = (0..8)
        .map(|_| {
            let (addr, ttft_ms, refused) = (s.addr, Arc::clone(&ttft_ms), Arc::clone(&refused));
            std::thread::spawn(move || {
                while Instant::now() < until {
                    let task = uuid();
                    let t0 = Instant::now();
                    let body = task_body(&task, &uuid(), json!({"max_tokens": 4}));
                    let r = Client::connect(addr).send("POST", "/v1/tasks", &[], &body);
                    if r.status == 429 {
                        refused.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    assert_eq!(r.status, 202, "{}", r.text());
                    let mut stream =
                        Client::connect(addr).open_stream(&format!("/v1/tasks/{task}/stream"), &[]);
                    while let Some(e) = stream.next_event() {
                        if e.event == "token" && e.data["i"] == 0 {
                            ttft_ms
                                .lock()
                                .unwrap()
                                .push(t0.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                }
            })
        })
        .collect();
    for u in users {
        u.join().unwrap();
    }
    assert!(refused.load(Ordering::Relaxed) > 0, "no 429 to count");
    // Two more scrapes and rule evaluations after the load.
    std::thread::sleep(Duration::from_secs(3));

    let rules = prom.get("/api/v1/rules");
    let mut exprs: Vec<(String, String)> = Vec::new();
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let (name, query) = (r["name"].as_str().unwrap(), r["query"].as_str().unwrap());
            assert_eq!(r["health"], "ok", "{name}: {r}");
            match r["type"].as_str() {
                Some("recording") => {
                    exprs.push((format!("recorded {name}"), name.to_string()));
                    exprs.push((format!("rule {name}"), query.to_string()));
                }
                _ => exprs.push((format!("alert {name}"), signal(query))),
            }
        }
    }
    assert_eq!(
        exprs.len(),
        2 * 11 + 6,
        "the rules file's 11 records and 6 alerts"
    );
    exprs.extend(
        dashboard_exprs()
            .into_iter()
            .map(|e| ("dashboard".into(), e)),
    );
    let readme = readme_exprs();
    assert!(readme.len() >= 3, "README's examples: {readme:?}");
    exprs.extend(readme.into_iter().map(|e| ("README".into(), e)));
    // Every expression has a finite sample (a NaN of an empty histogram is no answer).
    let empty: Vec<String> = exprs
        .iter()
        .filter(|(_, e)| !prom.query(e).iter().any(|v| value(v).is_finite()))
        .map(|(from, e)| format!("{from}: {e}"))
        .collect();
    assert!(empty.is_empty(), "no finite samples:\n{}", empty.join("\n"));
    // ... and those the load moves have moved.
    for moved in [
        "orchd:tokens_out:rate5m",
        "orchd:shard_busy:ratio_1m",
        "orchd:first_tokens:rate5m",
    ] {
        let v = prom.query(moved);
        assert!(v.iter().any(|v| value(v) > 0.0), "{moved}: {v:?}");
    }
    // The 429 share is the clients' own.
    let (refused, admitted) = (
        refused.load(Ordering::Relaxed) as f64,
        ttft_ms.lock().unwrap().len() as f64,
    );
    let share = value(&prom.query("orchd:submissions_429:ratio_5m")[0]);
    let theirs = refused / (refused + admitted);
    assert!(
        (share - theirs).abs() < 0.05,
        "429 share: Prometheus {share:.3}, the clients {theirs:.3}"
    );
    // The dashboard's pool variable lists the pool.
    let pools = prom.get("/api/v1/label/pool_id/values?match[]=pool_ready");
    assert_eq!(pools["data"], json!(["default"]), "{pools}");

    // Prometheus' p99 of the first token lands in the bucket of the client's p99.
    let mut ttft = ttft_ms.lock().unwrap().clone();
    ttft.sort_by(f64::total_cmp);
    assert!(ttft.len() >= 20, "{} first tokens", ttft.len());
    let client_p99 = ttft[(ttft.len() * 99).div_ceil(100) - 1];
    let v = prom.query(r#"orchd:latency_first_token_ms:p99_5m{priority="interactive"}"#);
    let server_p99 = value(&v[0]);
    let (lo, hi) = bucket_of(client_p99);
    assert!(
        lo < server_p99 && server_p99 <= hi,
        "Prometheus p99 {server_p99} ms, client p99 {client_p99} ms (bucket {lo}-{hi})"
    );
}

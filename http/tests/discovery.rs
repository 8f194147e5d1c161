//! Replica sets discovered through DNS (issue 20, `adapter.discover`): a real DNS server
//! (dnsmasq, from Debian; `.ci/run` installs it) answers one name with loopback
//! addresses 127.0.0.2 and up, an in-test engine listens on each; the set follows what
//! DNS says. Each test is `#[ignore]`d, as it needs dnsmasq; `.ci/run` installs it and
//! runs them.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orchd_engine::config::{AdapterKind, PoolConfig};
use orchd_testkit::fake_engine::FakeEngine;
use orchd_testkit::{stream, submit, task_body, tokens, uuid, wait_until};
use serde_json::json;
use support::TestServer;

const NAME: &str = "engines.orchd.test";
const INTERVAL_MS: u64 = 300;

/// dnsmasq on 127.0.0.1, answering [`NAME`] from a hosts file of its own, re-read on
/// SIGHUP; killed when dropped.
struct Dns {
    child: Child,
    addr: SocketAddr,
    hosts: PathBuf,
    dir: PathBuf,
}

impl Dns {
    fn start(hosts: &[u8]) -> Dns {
        let dir = std::env::temp_dir().join(format!("orchd-dns-{}-{}", std::process::id(), uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        write_hosts(&path, hosts);
        let log = dir.join("log");
        // A port free for UDP can be taken for TCP (dnsmasq wants both) or taken between
        // the check and dnsmasq's bind: a few tries, each with a new port.
        for _ in 0..5 {
            let port = free_udp_and_tcp_port();
            let child = Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                ])
                .args([
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--local-ttl=0",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", path.display()))
                .arg(format!("--pid-file={}", dir.join("pid").display()))
                .arg(format!("--log-facility={}", log.display()))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
                .spawn()
                .expect("dnsmasq runs (Debian's dnsmasq-base; .ci/run installs it)");
            let mut dns = Dns {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                hosts: path.clone(),
                dir: dir.clone(),
            };
            // It answers once it serves its port (an answer of any kind will do).
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if dns.answers() {
                    return dns;
                }
                if dns.child.try_wait().ok().flatten().is_some() {
                    break; // it gave up (the port, say): try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = dns.child.kill();
            let _ = dns.child.wait();
            std::mem::forget(dns); // its directory is reused by the next try
        }
        let said = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        panic!("dnsmasq did not answer on any of five ports; it said: {said}");
    }

    fn answers(&self) -> bool {
        // A minimal query for NAME, type A; any reply with its id counts.
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for part in NAME.split('.') {
            q.push(part.len() as u8);
            q.extend_from_slice(part.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 512];
        s.send_to(&q, self.addr).is_ok()
            && s.recv(&mut buf)
                .is_ok_and(|n| n >= 2 && buf[..2] == [0x12, 0x34])
    }

    /// Lists `hosts` (127.0.0.H) under [`NAME`] from now on.
    fn set(&self, hosts: &[u8]) {
        write_hosts(&self.hosts, hosts);
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port free for both UDP and TCP now.
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn write_hosts(path: &std::path::Path, hosts: &[u8]) {
    let text: String = hosts
        .iter()
        .map(|h| format!("127.0.0.{h} {NAME}\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// A port free on 127.0.0.2 to 127.0.0.6 (the engines share the port DNS cannot say).
fn common_port() -> u16 {
    for _ in 0..50 {
        let port = std::net::TcpListener::bind("127.0.0.2:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if (2..=6)
            .all(|h| std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, h], port))).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on 127.0.0.2-6");
}

fn server(dns: &Dns, port: u16) -> TestServer {
    let mut c = TestServer::config(2);
    let mut p = PoolConfig {
        id: "dns".into(),
        slots: 2,
        ..PoolConfig::default()
    };
    p.adapter.kind = AdapterKind::Openai;
    p.adapter.discover = Some(format!("dns://{NAME}:{port}"));
    p.adapter.resolver = Some(dns.addr.to_string());
    p.adapter.discover_interval_ms = INTERVAL_MS;
    p.adapter.health_interval_ms = 100;
    p.adapter.connect_timeout_ms = 500;
    p.adapter.retries = 0;
    c.pools = vec![p];
    TestServer::start(c)
}

/// The replicas the pool lists now, by id.
fn listed(s: &TestServer) -> Vec<String> {
    let h = s.get("/v1/pools/dns/health", &[]).json();
    let mut ids: Vec<String> = h["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "up")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn ids(hosts: &[u8], port: u16) -> Vec<String> {
    hosts
        .iter()
        .map(|h| format!("127.0.0.{h}:{port}"))
        .collect()
}

/// Runs one task of `session`; the engine (by host) that generated it.
fn turn(s: &TestServer, engines: &[(u8, FakeEngine)], session: &str) -> u8 {
    let before: Vec<usize> = engines.iter().map(|(_, e)| e.generations().len()).collect();
    let task = uuid();
    let r = submit(
        s.addr,
        &[],
        &task_body(&task, session, json!({"max_tokens": 2})),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(tokens(&stream(s.addr, &[], &task)).len(), 2);
    let moved: Vec<u8> = engines
        .iter()
        .zip(before)
        .filter(|((_, e), b)| e.generations().len() > *b)
        .map(|((h, _), _)| *h)
        .collect();
    assert_eq!(moved.len(), 1, "one engine per task: {moved:?}");
    moved[0]
}

fn metric(s: &TestServer, prefix: &str) -> u64 {
    let text = s.get("/metrics", &[]).text();
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"));
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}

#[test]
#[ignore = "needs dnsmasq (Debian's dnsmasq-base; .ci/run installs it)"]
fn the_replica_set_follows_dns_and_a_new_address_gets_traffic_after_a_refresh() {
    let port = common_port();
    let engines: Vec<(u8, FakeEngine)> = (2..=5)
        .map(|h| {
            (
                h,
                FakeEngine::start_at(SocketAddr::from(([127, 0, 0, h], port))),
            )
        })
        .collect();
    let dns = Dns::start(&[2, 3, 4]);
    let s = server(&dns, port);
    wait_until(Duration::from_secs(5), "three replicas from DNS", || {
        listed(&s) == ids(&[2, 3, 4], port)
    });
    let caps = s.get("/v1/capabilities", &[]).json();
    assert_eq!(caps["engines"][0]["concurrency"], 6, "{caps}");

    // Sessions stay on their replica and spread over the set.
    let mut homes = Vec::new();
    for _ in 0..9 {
        let session = uuid();
        let home = turn(&s, &engines, &session);
        assert_eq!(turn(&s, &engines, &session), home);
        homes.push((session, home));
    }
    assert!(homes.iter().all(|(_, h)| [2, 3, 4].contains(h)));

    // A fourth address in DNS: a replica within one refresh, and it takes tasks.
    let added = Instant::now();
    dns.set(&[2, 3, 4, 5]);
    wait_until(Duration::from_secs(5), "the fourth replica", || {
        listed(&s) == ids(&[2, 3, 4, 5], port)
    });
    let joined_after = added.elapsed();
    let mut fourth = false;
    for _ in 0..40 {
        if turn(&s, &engines, &uuid()) == 5 {
            fourth = true;
            break;
        }
    }
    assert!(fourth, "new sessions reach the new replica");

    // An address leaves DNS: its replica takes no more tasks, its sessions move, the
    // others' stay.
    dns.set(&[2, 4, 5]);
    wait_until(Duration::from_secs(5), "127.0.0.3 to leave the set", || {
        listed(&s) == ids(&[2, 4, 5], port)
    });
    for (session, home) in &homes {
        let now = turn(&s, &engines, session);
        assert_ne!(now, 3, "nothing goes to a replica DNS no longer lists");
        if *home != 3 {
            // A session keeps its replica unless a newcomer outweighs it (rendezvous
            // hashing moves only the sessions the new replica wins).
            assert!(now == *home || now == 5, "{home} -> {now}");
        }
    }
    assert_eq!(
        s.get("/v1/pools/dns/health", &[]).json()["metrics"]["slots_total"],
        6
    );
    assert!(metric(&s, "replica_discovery_total{") > 0);
    let text = s.get("/metrics", &[]).text();
    let changes = |change: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("replica_set_changes_total{")
                    && l.contains(&format!("change=\"{change}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    assert_eq!(
        (changes("joined"), changes("left")),
        (Some(4), Some(1)),
        "{text}"
    );
    eprintln!(
        "a fourth address in DNS: a replica after {} ms (refresh every {INTERVAL_MS} ms)",
        joined_after.as_millis()
    );
}

#[test]
#[ignore = "needs dnsmasq (Debian's dnsmasq-base; .ci/run installs it)"]
fn a_name_not_yet_listed_leaves_the_pool_unready_until_dns_lists_an_engine() {
    let port = common_port();
    let engine = FakeEngine::start_at(SocketAddr::from(([127, 0, 0, 6], port)));
    let dns = Dns::start(&[]);
    let s = server(&dns, port);
    // No engine yet: 503 POOL_UNREADY with retry advice, nothing waits on a queue.
    let r = submit(s.addr, &[], &task_body(&uuid(), &uuid(), json!({})));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "POOL_UNREADY");
    assert!(r.header("retry-after").is_some());
    assert_eq!(listed(&s), Vec::<String>::new());
    dns.set(&[6]);
    wait_until(Duration::from_secs(5), "the engine DNS now lists", || {
        s.get("/v1/pools/dns/health", &[]).json()["ready"] == true
    });
    let task = uuid();
    assert_eq!(
        submit(
            s.addr,
            &[],
            &task_body(&task, &uuid(), json!({"max_tokens": 3}))
        )
        .status,
        202
    );
    assert_eq!(tokens(&stream(s.addr, &[], &task)).len(), 3);
    assert_eq!(engine.generations().len(), 1);
}

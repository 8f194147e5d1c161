//! A real browser as a client (issue 17): headless Chromium (Debian's `chromium`) opens a
//! page served from another origin (`browser/page.html`), which streams an OrchQueue
//! task with `EventSource` from an orchd with keys off, a chat completion with
//! `fetch()` and `Authorization: Bearer` from an orchd with keys on, and tries the same
//! from an orchd without `server.cors_allow_origins`, which the browser must block.
//! Needs Chromium: `#[ignore]`d, run by `.ci/run` (which installs it) in its stage of
//! ignored tests.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use orchd_engine::config::{ApiKey, PoolConfig};
use orchd_testkit::{is_uuid_v4, submit, task_body, uuid};
use serde_json::{json, Value};
use support::TestServer;

const KEY: &str = "sk-browser";

/// Serves `page` to every GET on a port of its own (the page's origin), until the
/// process ends.
fn serve_page(page: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn);
            let mut line = String::new();
            // The request head, to its blank line.
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut conn = reader.into_inner();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    origin
}

fn orchd(cors: Option<&str>, key: Option<&str>) -> TestServer {
    let mut c = TestServer::config(2);
    let mut p = PoolConfig::default();
    p.adapter.ttft_ms = 0;
    p.adapter.tpot_ms = 20;
    c.pools = vec![p];
    c.server.cors_allow_origins = cors.map(String::from).into_iter().collect();
    c.server.api_keys = key.map(ApiKey::new).into_iter().collect();
    TestServer::start(c)
}

#[test]
#[ignore = "needs Chromium (Debian's chromium; .ci/run installs it)"]
fn a_page_on_another_origin_streams_with_eventsource_and_fetch() {
    let origin = serve_page(include_str!("browser/page.html"));
    let open = orchd(Some(&origin), None);
    let keyed = orchd(Some(&origin), Some(KEY));
    let no_cors = orchd(None, None);
    let task = uuid();
    let r = submit(
        open.addr,
        &[],
        &task_body(&task, &uuid(), json!({"max_tokens": 5})),
    );
    assert_eq!(r.status, 202);
    let url = format!(
        "{origin}/?a=http://{}&b=http://{}&c=http://{}&key={KEY}&task={task}",
        open.addr, keyed.addr, no_cors.addr
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/chromium.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&url)
        .arg("30")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chromium.py failed:\n{stdout}\n{stderr}"
    );
    let mut lines = stdout.lines();
    let result: Value = serde_json::from_str(lines.next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no result ({e}):\n{stdout}\n{stderr}"));
    let log: Vec<&str> = lines.collect();
    println!("{result:#}\n{}", log.join("\n"));

    // EventSource, keys off: every frame of the task, in order, to its end.
    let sse = &result["sse"];
    assert_eq!(sse["ok"], true, "{sse}");
    let frames = sse["frames"].as_array().unwrap();
    let events: Vec<&str> = frames
        .iter()
        .map(|f| f["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"started"));
    assert_eq!(
        events.iter().filter(|e| **e == "token").count(),
        5,
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&"end"));
    let ids: Vec<u64> = frames
        .iter()
        .map(|f| f["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());

    // fetch() with the key: the whole chat, and X-Request-Id readable (exposed).
    let chat = &result["chat"];
    assert_eq!(chat["ok"], true, "{chat}");
    let id = chat["requestId"]
        .as_str()
        .expect("X-Request-Id exposed to the page");
    assert!(is_uuid_v4(id), "{id}");
    assert!(chat["ids"].as_array().unwrap().iter().all(|c| c == id));
    assert!(!chat["text"].as_str().unwrap().is_empty());

    // Without CORS the browser refuses the page the answer.
    let blocked = &result["blocked"];
    assert_eq!(blocked["ok"], false, "{blocked}");
    assert!(
        blocked["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Failed to fetch"),
        "{blocked}"
    );
    assert!(
        log.iter().any(|l| l.contains("CORS policy")),
        "the browser said why: {log:?}"
    );
}

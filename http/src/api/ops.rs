//! Operational endpoints, exempt from auth: `/livez`, `/readyz`, `/metrics`.

use std::fmt::Write;
use std::time::Duration;

use futures_lite::future;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use orchd_engine::{ApiError, ErrorClass, ErrorKind};
use orchd_shards::{rt, DispatcherCommand, ProbeSnapshot, ShardCommand};

use crate::app::ShardApp;
use crate::body::Body;
use crate::respond;

/// How long `/readyz` waits for the dispatcher.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) fn livez() -> Response<Body> {
    respond::json(StatusCode::OK, r#"{"live":true}"#)
}

/// Ready when this shard is not shutting down and the dispatcher answers.
pub(crate) async fn readyz(app: &ShardApp) -> Result<Response<Body>, ApiError> {
    if app.shard.stopping() {
        return Err(unready("shutting down"));
    }
    let ping = app.shard.dispatcher().request(DispatcherCommand::Ping);
    let answered = future::or(async { ping.await.is_ok() }, async {
        rt::sleep(READY_TIMEOUT).await;
        false
    })
    .await;
    if answered {
        Ok(respond::json(StatusCode::OK, r#"{"ready":true}"#))
    } else {
        Err(unready("the dispatcher does not answer"))
    }
}

fn unready(why: &'static str) -> ApiError {
    ApiError::new(ErrorClass::Unavailable, ErrorKind::Internal, why).retriable(true)
}

/// Prometheus text format 0.0.4, merged from every shard's probe.
pub(crate) async fn metrics(app: &ShardApp) -> Result<Response<Body>, ApiError> {
    let snaps = app
        .shard
        .map_reduce(ShardCommand::Scrape, Vec::new(), |mut v, s| {
            v.push(s);
            v
        })
        .await
        .map_err(|e| ApiError::internal(format!("scrape failed: {e}")))?;
    let mut r = Response::new(Body::full(render(&snaps)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

fn render(snaps: &[ProbeSnapshot]) -> String {
    const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    let mut out = String::with_capacity(1024);
    out.push_str("# HELP http_responses_total HTTP responses sent, by shard and status class.\n");
    out.push_str("# TYPE http_responses_total counter\n");
    for s in snaps {
        for (class, n) in CLASSES.iter().zip(s.responses) {
            let _ = writeln!(
                out,
                "http_responses_total{{shard=\"{}\",class=\"{class}\"}} {n}",
                s.shard
            );
        }
    }
    out.push_str("# HELP connections_accepted_total TCP connections accepted, by shard.\n");
    out.push_str("# TYPE connections_accepted_total counter\n");
    for s in snaps {
        let _ = writeln!(
            out,
            "connections_accepted_total{{shard=\"{}\"}} {}",
            s.shard, s.connections_accepted
        );
    }
    out.push_str("# HELP connections_open Open TCP connections, by shard.\n");
    out.push_str("# TYPE connections_open gauge\n");
    for s in snaps {
        let _ = writeln!(
            out,
            "connections_open{{shard=\"{}\"}} {}",
            s.shard, s.connections_open
        );
    }
    out
}

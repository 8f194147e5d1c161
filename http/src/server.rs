//! One shard's HTTP server: accept loop, connections, graceful shutdown.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use hyper::server::conn::http1;
use hyper::service::service_fn;

use orchd_engine::{ApiError, ErrorClass, ErrorKind};
use orchd_shards::rt::{self, Conn, Listener, ShardTimer};
use orchd_shards::{Ready, Shard};

use crate::app::{App, ShardApp};
use crate::{respond, router};

/// After the grace period, how long streams get to deliver their terminal frames.
const FLUSH_AFTER_GRACE: Duration = Duration::from_millis(500);

/// The main future of one shard: adopt the listener, report ready, serve until
/// shutdown, then give open connections up to the grace period.
pub(crate) async fn shard_main(
    app: Arc<App>,
    shard: Rc<Shard>,
    listener: std::net::TcpListener,
    ready: Ready,
) {
    let listener = match Listener::adopt(listener) {
        Ok(l) => l,
        Err(e) => return ready.fail(format!("cannot adopt the listening socket: {e}")),
    };
    let grace = Duration::from_millis(app.config.server.shutdown_grace_ms);
    let shards = shard.shard_count();
    let app = Rc::new(ShardApp::new(app, shard));
    // This shard's share of server.max_connections.
    let max_open = app.app.config.server.max_connections.div_ceil(shards) as u64;
    let refusing = Rc::new(std::cell::Cell::new(0usize));
    ready.ok();
    tracing::debug!(shard = app.shard.id().0, "shard serving");

    loop {
        let next = future::or(async { Some(listener.accept().await) }, async {
            app.shard.stopped().await;
            None
        })
        .await;
        match next {
            None => break,
            Some(Ok(conn)) if app.shard.probe.connections_open.get() >= max_open => {
                // Answering a refusal holds the connection up to REFUSE_LINGER; under a
                // flood, beyond a bound of such answers in flight, just close.
                if refusing.get() < MAX_REFUSING {
                    refusing.set(refusing.get() + 1);
                    let (app, refusing) = (Rc::clone(&app), Rc::clone(&refusing));
                    rt::spawn(rt::Class::Latency, async move {
                        refuse_conn(app, conn).await;
                        refusing.set(refusing.get() - 1);
                    });
                } else {
                    let p = &app.shard.probe;
                    p.connections_refused.set(p.connections_refused.get() + 1);
                    drop(conn);
                }
            }
            Some(Ok(conn)) => rt::spawn(rt::Class::Latency, serve_conn(Rc::clone(&app), conn)),
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning on the error.
                tracing::warn!(shard = app.shard.id().0, error = %e, "accept failed");
                rt::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);

    // Streams and tasks get the grace period to finish on their own; then the tasks
    // still running end with a terminal frame (and their transcripts are stored), and
    // their streams get a moment to deliver it.
    let probe = &app.shard.probe;
    let deadline = Instant::now() + grace;
    let busy = || probe.connections_open.get() > 0 || app.shard.live_tasks() > 0;
    while busy() && Instant::now() < deadline {
        rt::sleep(Duration::from_millis(5)).await;
    }
    let tasks = app.shard.live_tasks();
    if tasks > 0 {
        tracing::warn!(
            shard = app.shard.id().0,
            tasks,
            "grace period over; ending tasks"
        );
        app.shard.end_all_tasks("orchd is shutting down");
    }
    let flush = Instant::now() + FLUSH_AFTER_GRACE;
    while probe.connections_open.get() > 0 && Instant::now() < flush {
        rt::sleep(Duration::from_millis(5)).await;
    }
    let left = probe.connections_open.get();
    if left > 0 {
        tracing::warn!(
            shard = app.shard.id().0,
            connections = left,
            "closing connections"
        );
    }
    app.shard.quiesce().await;
}

/// How long a refused connection may hold its file descriptor: to send its request
/// head, receive its 503 and close its side.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// Refusals being answered at once on one shard; connections beyond are closed unanswered.
const MAX_REFUSING: usize = 256;

/// A connection over this shard's share of `server.max_connections`: 503
/// REPLICA_EXHAUSTED with retry advice (OpenAI's error shape on its routes), then
/// closed, without serving its request.
async fn refuse_conn(app: Rc<ShardApp>, conn: Conn) {
    let probe = &app.shard.probe;
    probe
        .connections_refused
        .set(probe.connections_refused.get() + 1);
    let e = ApiError::new(
        ErrorClass::Unavailable,
        ErrorKind::ReplicaExhausted,
        "orchd is at server.max_connections; retry shortly",
    )
    .retriable(true)
    .retry_after_ms(1000);
    let cid = app.new_uuid().hyphenated().to_string();
    let shard = app.shard.id().0;
    // In the language of the route asked for: the request line's path.
    let answer = |head: &[u8]| {
        let path = head
            .split(|&b| b == b' ')
            .nth(1)
            .and_then(|p| std::str::from_utf8(p).ok())
            .map_or("", |p| p.split('?').next().unwrap_or(p));
        respond::error_and_close(&e, &cid, shard, router::openai_path(path))
    };
    conn.answer_and_close(answer, REFUSE_LINGER).await;
}

/// Decrements the open-connection gauge however the connection ends.
struct OpenConn(Rc<ShardApp>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        let p = &self.0.shard.probe;
        p.connections_open.set(p.connections_open.get() - 1);
    }
}

async fn serve_conn(app: Rc<ShardApp>, conn: Conn) {
    let probe = &app.shard.probe;
    probe
        .connections_accepted
        .set(probe.connections_accepted.get() + 1);
    probe.connections_open.set(probe.connections_open.get() + 1);
    let _open = OpenConn(Rc::clone(&app));
    let stopped = app.shard.stopped();

    let svc_app = Rc::clone(&app);
    let svc = service_fn(move |req| {
        let app = Rc::clone(&svc_app);
        async move { Ok::<_, Infallible>(router::handle(app, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(ShardTimer)
        .header_read_timeout(Duration::from_millis(
            app.app.config.server.header_read_timeout_ms,
        ))
        .max_buf_size(app.app.config.server.max_header_bytes)
        // A client may shut down its sending side and wait for the answer.
        .half_close(true)
        .keep_alive(true);
    let conn = builder.serve_connection(conn, svc);
    let mut conn = std::pin::pin!(conn);

    let outcome = future::or(async { Some(conn.as_mut().await) }, async {
        stopped.await;
        None
    })
    .await;
    let result = match outcome {
        Some(result) => result,
        None => {
            // Shutdown: finish the request in flight (if any), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(shard = app.shard.id().0, error = %e, "connection ended with an error");
    }
}

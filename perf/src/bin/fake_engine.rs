//! fake-engine: a minimal OpenAI-compatible streaming server for measuring what orchd
//! adds in front of an engine. `POST /v1/completions` with `stream: true` answers
//! `max_tokens` events (`choices[0].text`), then a `finish_reason` event and
//! `data: [DONE]`, as vLLM and llama.cpp server do, with `--tpot-us` between tokens
//! (0 = none). `GET /v1/models` answers for health probes. Loopback only.
//!
//! `fake-engine [ADDR] [--tpot-us N]` (default 127.0.0.1:8091).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: &'static str) -> Body {
    http_body_util::Full::new(Bytes::from_static(s.as_bytes())).boxed()
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    tpot: Duration,
) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/v1/models" {
        return Ok(Response::new(full(
            r#"{"object":"list","data":[{"id":"fake","object":"model"}]}"#,
        )));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let n = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["max_tokens"].as_u64())
        .unwrap_or(16);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        for i in 0..n {
            let ev = format!(
                "data: {{\"id\":\"cmpl-fake\",\"object\":\"text_completion\",\"choices\":[{{\"text\":\" t{i}\",\"index\":0,\"finish_reason\":null}}]}}\n\n"
            );
            if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                return;
            }
            if !tpot.is_zero() {
                tokio::time::sleep(tpot).await;
            }
        }
        let last = "data: {\"id\":\"cmpl-fake\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(last.as_bytes()))))
            .await;
    });
    let stream = tokio_stream_from(rx);
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    Ok(r)
}

/// An mpsc receiver as a `Stream` (without pulling in tokio-stream for one adapter).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> {
    futures_util_poll(move |cx| rx.poll_recv(cx))
}

fn futures_util_poll<T, F>(f: F) -> impl futures_core::Stream<Item = T>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
{
    struct PollFn<F>(F);
    impl<T, F> futures_core::Stream for PollFn<F>
    where
        F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
    {
        type Item = T;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            (self.get_mut().0)(cx)
        }
    }
    PollFn(f)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:8091".parse().unwrap();
    let mut tpot = Duration::ZERO;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tpot-us" => {
                tpot = Duration::from_micros(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--tpot-us N"),
                )
            }
            other => addr = other.parse().expect("ADDR is IP:PORT"),
        }
    }
    assert!(
        addr.ip().is_loopback(),
        "fake-engine listens on loopback only"
    );
    let listener = TcpListener::bind(addr).await?;
    eprintln!("fake-engine listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, tpot));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

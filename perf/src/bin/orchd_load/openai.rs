//! `--target openai`: one streamed completion straight from an OpenAI-compatible engine.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;

use crate::args::Args;
use crate::http::{connect, request, Sender};
use crate::stats::Stats;

/// One streamed completion straight from an OpenAI-compatible engine; records time to
/// the first text event and the gaps between events. Returns the tokens received, `None`
/// if the stream failed or ended without `[DONE]`.
pub async fn openai_once(
    args: &Args,
    sender: &mut Sender,
    local: &mut Stats,
    t0: Instant,
) -> Option<u64> {
    // An engine may close a kept-alive connection after a streamed answer (llama.cpp
    // server does, whatever its Keep-Alive header says), and the client may learn it
    // only when it sends the next request: a closed connection is reopened and the
    // request sent again, inside the measured time, as a client would.
    let body = serde_json::json!({"model": "load", "prompt": "load test", "max_tokens": args.max_tokens, "stream": true});
    let body = Bytes::from(serde_json::to_vec(&body).unwrap());
    let mut resp = None;
    for _ in 0..2 {
        if sender.ready().await.is_ok() {
            let req = request(args, "POST", "/v1/completions", body.clone());
            if let Ok(r) = sender.send_request(req).await {
                resp = Some(r);
                break;
            }
        }
        *sender = connect(args.addr).await.ok()?;
    }
    let resp = resp?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut tokens = 0u64;
    let mut last: Option<Instant> = None;
    // Read to the body's end even after `[DONE]`: a body dropped unread costs the
    // keep-alive connection (the next request found it unusable and reconnected).
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        let Some(d) = frame.data_ref() else { continue };
        buf.extend_from_slice(d);
        let now = Instant::now();
        let mut start = 0;
        while let Some(pos) = buf[start..].windows(2).position(|w| w == b"\n\n") {
            let ev = &buf[start..start + pos + 2];
            start += pos + 2;
            // An event's `data:` line (others, such as `id:` or a comment, are skipped).
            let text = std::str::from_utf8(ev).unwrap_or("");
            let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(data).ok()?;
            if v["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            {
                tokens += 1;
                local.token(t0, &mut last, now);
            }
        }
        buf.drain(..start);
    }
    done.then_some(tokens)
}

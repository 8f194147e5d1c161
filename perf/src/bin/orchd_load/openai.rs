//! `--target openai`: one streamed completion straight from an OpenAI-compatible engine.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;

use crate::args::Args;
use crate::http::{request, Sender};
use crate::stats::Stats;

/// One streamed completion straight from an OpenAI-compatible engine; records time to
/// the first text event and the gaps between events. Returns the tokens received.
pub async fn openai_once(
    args: &Args,
    sender: &mut Sender,
    local: &mut Stats,
    t0: Instant,
) -> Option<u64> {
    sender.ready().await.ok()?;
    let body = serde_json::json!({"model": "load", "prompt": "load test", "max_tokens": args.max_tokens, "stream": true});
    let req = request(
        args,
        "POST",
        "/v1/completions",
        Bytes::from(serde_json::to_vec(&body).unwrap()),
    );
    let resp = sender.send_request(req).await.ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut tokens = 0u64;
    let mut last: Option<Instant> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        let Some(d) = frame.data_ref() else { continue };
        buf.extend_from_slice(d);
        let now = Instant::now();
        let mut start = 0;
        while let Some(pos) = buf[start..].windows(2).position(|w| w == b"\n\n") {
            let ev = &buf[start..start + pos + 2];
            start += pos + 2;
            let text = std::str::from_utf8(ev).unwrap_or("");
            let Some(data) = text.trim_end().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return Some(tokens);
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
    Some(tokens)
}

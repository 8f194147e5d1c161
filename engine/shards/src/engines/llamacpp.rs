//! llama.cpp server's native wire format: `POST /completion` streams `data: {json}`
//! events with `content` and `stop` (and, at the end, `tokens_evaluated` and
//! `tokens_predicted`); chat goes to its OpenAI-compatible `/v1/chat/completions`
//! (llama.cpp applies the model's template there). Health is `GET /health`; `GET
//! /props` says `build_info` and `total_slots`.

use orchd_engine::generation::{Generation, Input};
use orchd_engine::EngineError;

use super::http::{piece, ParseFn, Wire};
use super::openai::{parse_chat, sampling, OpenAi};
use super::{Piece, Usage};

/// llama.cpp's server.
pub struct LlamaCpp;

impl Wire for LlamaCpp {
    fn endpoint(input: &Input) -> (&'static str, ParseFn) {
        match input {
            Input::Completion { .. } => ("/completion", parse_completion),
            Input::Chat(_) => ("/v1/chat/completions", parse_chat),
            // llama.cpp's OpenAI-compatible route (a server started with --embeddings).
            Input::Embed(_) => OpenAi::endpoint(input),
        }
    }

    fn body(g: &Generation) -> serde_json::Value {
        match &g.input {
            Input::Completion { .. } => {
                let mut v = serde_json::json!({
                    "prompt": g.input.completion_text(), "n_predict": g.sampling.max_tokens,
                    "stream": true,
                });
                sampling(&mut v, g);
                v
            }
            Input::Chat(_) | Input::Embed(_) => OpenAi::body(g),
        }
    }

    const HEALTH: &'static str = "/health";
    const VERSION: (&'static str, &'static str, Option<&'static str>) =
        ("/props", "build_info", Some("total_slots"));
}

fn parse_completion(v: &serde_json::Value) -> Result<Option<Piece>, EngineError> {
    let text = v.get("content").and_then(|c| c.as_str());
    let done = v
        .get("stop")
        .and_then(|s| s.as_bool())
        .ok_or_else(|| EngineError::Malformed("no `stop` field".into()))?;
    let n = |k: &str| v.get(k).and_then(|n| n.as_u64());
    let usage = Usage {
        prompt_tokens: n("tokens_evaluated"),
        completion_tokens: n("tokens_predicted"),
    };
    Ok(piece(text, done, usage))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use orchd_engine::config::AdapterKind;

    use super::*;
    use crate::engines::fuzzing::{parse_event, take_event};

    #[test]
    fn llamacpp_stream() {
        let wire = "data: {\"content\":\" a\",\"tokens\":[1],\"stop\":false}\n\n\
                    data: {\"content\":\"\",\"stop\":true,\"stop_type\":\"limit\",\"tokens_evaluated\":4,\"tokens_predicted\":1}\n\n";
        let mut buf = wire.as_bytes().to_vec();
        let mut out = Vec::new();
        while let Some(e) = take_event(&mut buf) {
            if let Some(p) = parse_event(AdapterKind::Llamacpp, &e).unwrap() {
                out.push(p);
            }
        }
        let usage = Usage {
            prompt_tokens: Some(4),
            completion_tokens: Some(1),
        };
        assert_eq!(out, [Piece::Text(Cow::Borrowed(" a")), Piece::End(usage)]);
    }
}

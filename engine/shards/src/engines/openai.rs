//! The OpenAI-compatible wire format (vLLM, llama.cpp server, TGI's compatible route):
//! `POST /v1/completions` streams `data: {json}` events with `choices[0].text` and
//! `finish_reason`, `POST /v1/chat/completions` the same with `choices[0].delta.content`,
//! both ending with `data: [DONE]`; health is `GET /v1/models`, the version vLLM's
//! `GET /version`.

use orchd_engine::generation::{Generation, Input};
use orchd_engine::EngineError;

use super::http::{piece, ParseFn, Wire};
use super::{Piece, Usage};

/// Engines that speak OpenAI's API.
pub struct OpenAi;

impl Wire for OpenAi {
    fn endpoint(input: &Input) -> (&'static str, ParseFn) {
        match input {
            Input::Completion { .. } => ("/v1/completions", parse_completion),
            Input::Chat(_) => ("/v1/chat/completions", parse_chat),
            // Answered whole, not streamed: `HttpEngine::open` reads it.
            Input::Embed(_) => ("/v1/embeddings", parse_completion),
        }
    }

    fn body(g: &Generation) -> serde_json::Value {
        let mut v = match &g.input {
            Input::Embed(texts) => {
                let mut v = serde_json::json!({"model": g.model, "input": texts});
                if let Some(d) = g.sampling.dimensions {
                    v["dimensions"] = d.into();
                }
                forward(&mut v, g);
                return v;
            }
            Input::Completion { .. } => serde_json::json!({
                "model": g.model, "prompt": g.input.completion_text(),
                "max_tokens": g.sampling.max_tokens, "stream": true,
            }),
            Input::Chat(messages) => serde_json::json!({
                "model": g.model,
                "messages": messages.iter().map(|m| serde_json::json!({
                    "role": m.role.as_str(), "content": m.content,
                })).collect::<Vec<_>>(),
                "max_tokens": g.sampling.max_tokens, "stream": true,
            }),
        };
        sampling(&mut v, g);
        v
    }

    const HEALTH: &'static str = "/v1/models";
    const VERSION: (&'static str, &'static str, Option<&'static str>) =
        ("/version", "version", None);
}

/// The sampling fields both OpenAI-style bodies (and llama.cpp's) share, then the
/// request's fields orchd does not interpret, as they came (never over one orchd set).
pub(super) fn sampling(v: &mut serde_json::Value, g: &Generation) {
    let s = &g.sampling;
    if let Some(seed) = s.seed {
        v["seed"] = seed.into();
    }
    if let Some(t) = s.temperature {
        // Greedy decoding goes out as the integer 0, as clients usually write it.
        v["temperature"] = if t == 0.0 {
            0.into()
        } else {
            f64::from(t).into()
        };
    }
    if let Some(p) = s.top_p {
        v["top_p"] = f64::from(p).into();
    }
    if !s.stop.is_empty() {
        v["stop"] = s.stop.clone().into();
    }
    if let Some(b) = s.ignore_eos {
        v["ignore_eos"] = b.into();
    }
    forward(v, g);
}

/// The request's fields orchd does not interpret, as they came, never over one orchd set.
fn forward(v: &mut serde_json::Value, g: &Generation) {
    if let Some(body) = v.as_object_mut() {
        for (k, x) in &g.forward {
            body.entry(k.as_str()).or_insert_with(|| x.clone());
        }
    }
}

/// An OpenAI embeddings answer: `data[i].embedding` for each input, in `index` order,
/// and `usage.prompt_tokens`.
pub(super) fn parse_embeddings(
    v: &serde_json::Value,
) -> Result<(Vec<Vec<f32>>, Usage), EngineError> {
    let bad = |why: &str| EngineError::Malformed(format!("embeddings: {why}"));
    let data = v
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or_else(|| bad("no `data` list"))?;
    let mut out: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
    for (i, d) in data.iter().enumerate() {
        let index = d.get("index").and_then(|x| x.as_u64()).unwrap_or(i as u64);
        let vector = d
            .get("embedding")
            .and_then(|e| e.as_array())
            .ok_or_else(|| bad("an item without an `embedding` list"))?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| bad("a component that is not a number"))?;
        out.push((index, vector));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok((out.into_iter().map(|(_, v)| v).collect(), usage(v)))
}

/// `usage` of an OpenAI event, if it has one.
pub(super) fn usage(v: &serde_json::Value) -> Usage {
    let u = v.get("usage");
    let n = |k: &str| u.and_then(|u| u.get(k)).and_then(|n| n.as_u64());
    Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
    }
}

fn first_choice(v: &serde_json::Value) -> Result<&serde_json::Value, EngineError> {
    v.get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| EngineError::Malformed("no `choices[0]`".into()))
}

fn done(choice: &serde_json::Value) -> bool {
    choice.get("finish_reason").is_some_and(|f| !f.is_null())
}

fn parse_completion(v: &serde_json::Value) -> Result<Option<Piece>, EngineError> {
    let choice = first_choice(v)?;
    let text = choice.get("text").and_then(|t| t.as_str());
    Ok(piece(text, done(choice), usage(v)))
}

pub(super) fn parse_chat(v: &serde_json::Value) -> Result<Option<Piece>, EngineError> {
    let choice = first_choice(v)?;
    let text = choice
        .get("delta")
        .and_then(|d| d.get("content"))
        .and_then(|t| t.as_str());
    Ok(piece(text, done(choice), usage(v)))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use orchd_engine::config::AdapterKind;
    use orchd_engine::generation::{ChatMessage, Role, Sampling};

    use super::*;
    use crate::engines::fuzzing::{parse_chat_event, parse_event, take_event};

    fn pieces(chat: bool, wire: &str) -> Vec<Piece> {
        let mut buf = wire.as_bytes().to_vec();
        let mut out = Vec::new();
        while let Some(e) = take_event(&mut buf) {
            let p = if chat {
                parse_chat_event(AdapterKind::Openai, &e)
            } else {
                parse_event(AdapterKind::Openai, &e)
            };
            if let Some(p) = p.unwrap() {
                out.push(p);
            }
        }
        out
    }

    fn text(t: &'static str) -> Piece {
        Piece::Text(Cow::Borrowed(t))
    }

    #[test]
    fn openai_stream() {
        let wire = "data: {\"choices\":[{\"text\":\" hi\",\"index\":0,\"finish_reason\":null}]}\n\n\
                    : ping\n\n\
                    data: {\"choices\":[{\"text\":\"!\",\"index\":0,\"finish_reason\":null}]}\r\n\r\n\
                    data: {\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
                    data: [DONE]\n\n";
        let usage = Usage {
            prompt_tokens: Some(3),
            completion_tokens: Some(2),
        };
        assert_eq!(
            pieces(false, wire),
            [
                text(" hi"),
                text("!"),
                Piece::End(usage),
                Piece::End(Usage::default())
            ]
        );
    }

    #[test]
    fn chat_stream() {
        let wire = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"},\"index\":0,\"finish_reason\":null}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"index\":0,\"finish_reason\":null}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"index\":0,\"finish_reason\":null}]}\n\n\
                    data: {\"choices\":[{\"delta\":{},\"index\":0,\"finish_reason\":\"stop\"}]}\n\n\
                    data: [DONE]\n\n";
        assert_eq!(
            pieces(true, wire),
            [
                text("Hel"),
                text("lo"),
                Piece::End(Usage::default()),
                Piece::End(Usage::default())
            ]
        );
    }

    #[test]
    fn embeddings_answers() {
        let v = serde_json::json!({"data": [
            {"object": "embedding", "index": 1, "embedding": [0.5, -0.5]},
            {"object": "embedding", "index": 0, "embedding": [1, 0]},
        ], "usage": {"prompt_tokens": 4, "total_tokens": 4}});
        let (vectors, usage) = parse_embeddings(&v).unwrap();
        assert_eq!(vectors, [vec![1.0, 0.0], vec![0.5, -0.5]]);
        assert_eq!(usage.prompt_tokens, Some(4));
        assert!(parse_embeddings(&serde_json::json!({"data": [{"embedding": ["x"]}]})).is_err());
        assert!(parse_embeddings(&serde_json::json!({"error": "no"})).is_err());
    }

    #[test]
    fn garbage_is_malformed() {
        let mut buf = b"data: {not json\n\n".to_vec();
        let e = take_event(&mut buf).unwrap();
        assert!(matches!(
            parse_event(AdapterKind::Openai, &e),
            Err(EngineError::Malformed(_))
        ));
    }

    #[test]
    fn bodies_of_a_completion_and_a_chat() {
        let mut g = Generation {
            model: "m".into(),
            input: Input::Completion {
                prompt: Some("hi".into()),
                inputs: Vec::new(),
            },
            sampling: Sampling {
                max_tokens: 4,
                seed: Some(7),
                temperature: Some(0.0),
                ..Sampling::default()
            },
            forward: serde_json::Map::new(),
        };
        let b = OpenAi::body(&g);
        assert_eq!(
            b,
            serde_json::json!({"model": "m", "prompt": "hi", "max_tokens": 4, "stream": true, "seed": 7, "temperature": 0})
        );
        g.input = Input::Chat(vec![ChatMessage {
            role: Role::User,
            content: "hi".into(),
        }]);
        g.sampling.temperature = None;
        assert_eq!(OpenAi::endpoint(&g.input).0, "/v1/chat/completions");
        assert_eq!(
            OpenAi::body(&g),
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": true, "seed": 7})
        );
        // Fields orchd does not interpret go as they came; they never replace its own.
        g.forward.insert(
            "response_format".into(),
            serde_json::json!({"type": "json_object"}),
        );
        g.forward.insert("max_tokens".into(), 99.into());
        g.sampling.ignore_eos = Some(true);
        let b = OpenAi::body(&g);
        assert_eq!(
            b["response_format"],
            serde_json::json!({"type": "json_object"})
        );
        assert_eq!(b["max_tokens"], 4);
        assert_eq!(b["ignore_eos"], true);
    }
}

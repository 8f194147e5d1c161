//! A task's frames in OpenAI's streaming format (issue 17): the one frame log of a task,
//! rendered per subscriber for the OpenAI-compatible routes.
//!
//! Each `token` frame becomes one unnamed `data:` chunk (the first data chunk carries
//! the first token: a chat's first delta also says `"role":"assistant"`, so no chunk
//! comes before it and a harness's first-token time stays true); a queued task's
//! position is an SSE comment (clients skip comments); the `end` frame becomes the
//! chunk with `finish_reason`, then the usage chunk when asked, then `data: [DONE]`; an
//! `error` frame becomes an `{"error": {...}}` event and the stream ends. Every event
//! carries its frame's `id:`, so `Last-Event-ID` resumes in the same format.

use std::borrow::Cow;
use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use orchd_engine::frame::FinishReason;
use orchd_engine::ErrorKind;

/// A frame of orchd's own, read back: `id: <seq>\nevent: <name>\ndata: <json>\n\n`
/// (orchd_engine::frame wrote it).
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed<'a> {
    /// `started` or `metrics` of a task that waits in its queue.
    Queued {
        position: u32,
        predicted_start_ms: u64,
    },
    /// A token's text and its index in the task's output.
    Token(Cow<'a, str>, u32),
    End(EndData),
    Error(ErrorData),
    /// A frame with nothing to say in OpenAI's format (`metrics` during decode).
    Nothing,
}

#[derive(Debug, PartialEq, Deserialize)]
pub(crate) struct EndData {
    pub tokens_out: u32,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    /// An embedding task's vectors.
    #[serde(default)]
    pub embeddings: Option<Vec<Vec<f32>>>,
}

impl EndData {
    /// OpenAI's `finish_reason`; a canceled task's is `abort` (as vLLM says).
    pub fn finish_reason(&self) -> &'static str {
        match (self.canceled, self.finish_reason) {
            (true, _) => "abort",
            (false, Some(FinishReason::Length)) => "length",
            (false, Some(FinishReason::Stop) | None) => "stop",
        }
    }

    pub fn usage(&self) -> serde_json::Value {
        let prompt = self.prompt_tokens.unwrap_or(0);
        let completion = u64::from(self.tokens_out);
        serde_json::json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    }
}

#[derive(Debug, PartialEq, Deserialize)]
pub(crate) struct ErrorData {
    pub code: ErrorKind,
    pub message: String,
}

impl ErrorData {
    /// The `{"error": {...}}` object OpenAI clients read from a failed stream.
    pub fn openai(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "message": self.message, "type": "server_error", "param": null, "code": self.code,
        }})
    }
}

#[derive(Deserialize)]
struct Position {
    queue_position: Option<u32>,
    predicted_start_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Token<'a> {
    #[serde(borrow)]
    t: Cow<'a, str>,
    i: u32,
}

/// Reads one of orchd's frames; `None` for bytes that are not one (a heartbeat).
pub(crate) fn parse(frame: &[u8]) -> Option<(u64, Parsed<'_>)> {
    let rest = frame.strip_prefix(b"id: ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let id = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    let rest = rest[nl + 1..].strip_prefix(b"event: ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let (event, rest) = (&rest[..nl], &rest[nl + 1..]);
    let data = rest.strip_prefix(b"data: ")?;
    let data = data.strip_suffix(b"\n\n").unwrap_or(data);
    let parsed = match event {
        b"token" => {
            let t = serde_json::from_slice::<Token<'_>>(data).ok()?;
            Parsed::Token(t.t, t.i)
        }
        b"end" => Parsed::End(serde_json::from_slice(data).ok()?),
        b"error" => Parsed::Error(serde_json::from_slice(data).ok()?),
        b"started" | b"metrics" => match serde_json::from_slice::<Position>(data).ok()? {
            Position {
                queue_position: Some(position @ 1..),
                predicted_start_ms,
            } => Parsed::Queued {
                position,
                predicted_start_ms: predicted_start_ms.unwrap_or(0),
            },
            _ => Parsed::Nothing,
        },
        _ => Parsed::Nothing,
    };
    Some((id, parsed))
}

/// Which of OpenAI's two generation routes a stream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Completions,
    Chat,
}

/// One subscriber's renderer of a task's frames into chunks.
pub(crate) struct Chunks {
    /// `{"id":...,"object":...,"created":...,"model":...,"choices":`, the same on
    /// every chunk of the stream.
    head: Vec<u8>,
    route: Route,
    /// `stream_options.include_usage`: a last chunk with `usage`, `"usage":null` on
    /// the others.
    include_usage: bool,
}

impl Chunks {
    pub fn new(route: Route, id: &str, created: u64, model: &str, include_usage: bool) -> Chunks {
        let object = match route {
            Route::Completions => "text_completion",
            Route::Chat => "chat.completion.chunk",
        };
        let mut head = Vec::with_capacity(96 + model.len());
        write!(
            head,
            "{{\"id\":\"{id}\",\"object\":\"{object}\",\"created\":{created},\"model\":"
        )
        .expect("writes to a Vec");
        serde_json::to_writer(&mut head, model).expect("a str serializes");
        head.extend_from_slice(b",\"choices\":");
        Chunks {
            head,
            route,
            include_usage,
        }
    }

    /// The bytes a client gets for one frame, if any.
    pub fn render(&mut self, frame: &[u8]) -> Option<Bytes> {
        let (id, parsed) = parse(frame)?;
        let mut out = BytesMut::with_capacity(self.head.len() + 160);
        match parsed {
            Parsed::Nothing => return None,
            Parsed::Queued {
                position,
                predicted_start_ms,
            } => {
                let _ = write!(
                    (&mut out).writer(),
                    ": queue_position={position} predicted_start_ms={predicted_start_ms}\n\n"
                );
            }
            Parsed::Token(text, index) => {
                // A chat's first delta says the role: the first token's (a client
                // re-attaching after it does not hear it again).
                self.event(&mut out, id, index == 0, |w, route, first| {
                    match route {
                        Route::Completions => w.put_slice(b"[{\"index\":0,\"text\":"),
                        Route::Chat if first => w.put_slice(
                            b"[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":",
                        ),
                        Route::Chat => w.put_slice(b"[{\"index\":0,\"delta\":{\"content\":"),
                    }
                    let mut wr = w.writer();
                    serde_json::to_writer(&mut wr, text.as_ref()).expect("a str serializes");
                    let w = wr.into_inner();
                    if route == Route::Chat {
                        w.put_u8(b'}');
                    }
                    w.put_slice(b",\"logprobs\":null,\"finish_reason\":null}]");
                });
            }
            Parsed::End(end) => {
                let reason = end.finish_reason();
                self.event(&mut out, id, end.tokens_out == 0, |w, route, first| {
                    match route {
                        Route::Completions => w.put_slice(b"[{\"index\":0,\"text\":\"\""),
                        Route::Chat if first => {
                            w.put_slice(b"[{\"index\":0,\"delta\":{\"role\":\"assistant\"}")
                        }
                        Route::Chat => w.put_slice(b"[{\"index\":0,\"delta\":{}"),
                    }
                    let _ = write!(
                        w.writer(),
                        ",\"logprobs\":null,\"finish_reason\":\"{reason}\"}}]"
                    );
                });
                if self.include_usage {
                    let _ = write!((&mut out).writer(), "id: {id}\ndata: ");
                    out.put_slice(&self.head);
                    out.put_slice(b"[],\"usage\":");
                    let mut w = (&mut out).writer();
                    serde_json::to_writer(&mut w, &end.usage()).expect("serializes");
                    out.put_slice(b"}\n\n");
                }
                let _ = write!((&mut out).writer(), "id: {id}\ndata: [DONE]\n\n");
            }
            Parsed::Error(e) => {
                let _ = write!((&mut out).writer(), "id: {id}\ndata: ");
                let mut w = (&mut out).writer();
                serde_json::to_writer(&mut w, &e.openai()).expect("serializes");
                out.put_slice(b"\n\n");
            }
        }
        Some(out.freeze())
    }

    /// One `data:` chunk: the head, the choices `choices` writes (`first`: the first of
    /// the task's output, where a chat says the role), then `usage`.
    fn event(
        &self,
        out: &mut BytesMut,
        id: u64,
        first: bool,
        choices: impl FnOnce(&mut BytesMut, Route, bool),
    ) {
        let _ = write!(out.writer(), "id: {id}\ndata: ");
        out.put_slice(&self.head);
        choices(out, self.route, first);
        if self.include_usage {
            out.put_slice(b",\"usage\":null");
        }
        out.put_slice(b"}\n\n");
    }
}

#[cfg(test)]
mod tests {
    use orchd_engine::frame::{self, Event};

    use super::*;

    fn end(tokens_out: u32, canceled: bool, finish: Option<FinishReason>) -> Bytes {
        frame::encode(
            9,
            Event::End,
            &frame::End {
                tokens_out,
                decode_ms: 3,
                transcript_id: "sha256:ab",
                canceled,
                finish_reason: finish,
                prompt_tokens: Some(2),
                embeddings: None,
            },
        )
    }

    fn text(b: Option<Bytes>) -> String {
        String::from_utf8(b.unwrap().to_vec()).unwrap()
    }

    #[test]
    fn completion_chunks_exactly() {
        let mut c = Chunks::new(Route::Completions, "t1", 7, "m", false);
        assert_eq!(
            text(c.render(&frame::token(1, 0, " a\"b"))),
            "id: 1\ndata: {\"id\":\"t1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" a\\\"b\",\"logprobs\":null,\"finish_reason\":null}]}\n\n"
        );
        assert_eq!(
            text(c.render(&end(1, false, Some(FinishReason::Length)))),
            "id: 9\ndata: {\"id\":\"t1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n\
             id: 9\ndata: [DONE]\n\n"
        );
    }

    #[test]
    fn chat_chunks_say_the_role_once_and_usage_last() {
        let mut c = Chunks::new(Route::Chat, "t2", 7, "m", true);
        let first = text(c.render(&frame::token(1, 0, "Hi")));
        assert!(
            first.contains("\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}"),
            "{first}"
        );
        assert!(first.ends_with(",\"usage\":null}\n\n"), "{first}");
        let second = text(c.render(&frame::token(2, 1, "!")));
        assert!(second.contains("\"delta\":{\"content\":\"!\"}"), "{second}");
        let last = text(c.render(&end(2, true, None)));
        let events: Vec<&str> = last.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 3, "{last}");
        assert!(events[0].contains("\"delta\":{},\"logprobs\":null,\"finish_reason\":\"abort\""));
        assert!(events[1].ends_with(
            "\"choices\":[],\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":2,\"total_tokens\":4}}"
        ), "{}", events[1]);
        assert_eq!(events[2], "id: 9\ndata: [DONE]");
    }

    #[test]
    fn queue_places_are_comments_and_decode_metrics_nothing() {
        let mut c = Chunks::new(Route::Completions, "t", 7, "m", false);
        let started = frame::encode(
            0,
            Event::Started,
            &frame::Started {
                queue_position: 2,
                predicted_start_ms: 40,
            },
        );
        assert_eq!(
            text(c.render(&started)),
            ": queue_position=2 predicted_start_ms=40\n\n"
        );
        let at_once = frame::encode(
            0,
            Event::Started,
            &frame::Started {
                queue_position: 0,
                predicted_start_ms: 0,
            },
        );
        assert_eq!(c.render(&at_once), None);
        assert_eq!(c.render(b": hb\n\n"), None);
    }

    #[test]
    fn an_error_frame_is_an_error_event() {
        let mut c = Chunks::new(Route::Chat, "t", 7, "m", false);
        let f = frame::encode(
            4,
            Event::Error,
            &frame::ErrorFrame {
                code: ErrorKind::WorkerReset,
                message: "engine died",
                engine: None,
            },
        );
        assert_eq!(
            text(c.render(&f)),
            "id: 4\ndata: {\"error\":{\"code\":\"WORKER_RESET\",\"message\":\"engine died\",\"param\":null,\"type\":\"server_error\"}}\n\n"
        );
    }
}

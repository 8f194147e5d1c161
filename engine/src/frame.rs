//! SSE frames (SPEC section 2, "GET /v1/tasks/{id}/stream"), each encoded once into
//! `Bytes` and shared by every subscriber.
//!
//! Wire form: `id: <seq>\nevent: <name>\ndata: <compact JSON>\n\n`. Compact JSON has no
//! newline, so one `data:` line always holds the whole payload.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::error::ErrorKind;
use crate::types::Engine;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Started,
    Metrics,
    Token,
    End,
    Error,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Metrics => "metrics",
            Event::Token => "token",
            Event::End => "end",
            Event::Error => "error",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Event::End | Event::Error)
    }
}

#[derive(Debug, Serialize)]
pub struct Started {
    pub queue_position: u32,
    pub predicted_start_ms: u64,
}

/// Budget remainders of the task's session, present when budgets are configured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BudgetRemaining {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_budget_remaining: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_budget_remaining_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_budget_remaining: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Metrics<'a> {
    pub queue_depth: u32,
    pub on_time_probability: f64,
    pub kv_warmth: bool,
    /// While queued: the current position and predicted start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_start_ms: Option<u64>,
    /// During decode: tokens produced so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u32>,
    #[serde(flatten)]
    pub budgets: &'a BudgetRemaining,
}

#[derive(Debug, Serialize)]
pub struct End<'a> {
    pub tokens_out: u32,
    pub decode_ms: u64,
    pub transcript_id: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub canceled: bool,
    /// Tasks from the OpenAI door only (its chunks say why the text ended): `length`
    /// when `max_tokens` was reached, `stop` when the engine stopped by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// Tasks from the OpenAI door only (its `usage`): the prompt's tokens as the engine
    /// counted them, else orchd's count (whitespace-separated words).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Embedding tasks of the OpenAI door: one vector per input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<&'a [Vec<f32>]>,
}

/// Why a completed generation's text ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    Length,
    Stop,
}

#[derive(Debug, Serialize)]
pub struct ErrorFrame<'a> {
    pub code: ErrorKind,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
}

fn head(buf: &mut BytesMut, id: u64, event: Event) {
    buf.put_slice(b"id: ");
    let _ = write!((&mut *buf).writer(), "{id}");
    buf.put_slice(b"\nevent: ");
    buf.put_slice(event.as_str().as_bytes());
    buf.put_slice(b"\ndata: ");
}

/// Encodes a frame with a JSON payload.
pub fn encode(id: u64, event: Event, data: &impl Serialize) -> Bytes {
    let mut buf = BytesMut::with_capacity(96);
    head(&mut buf, id, event);
    let mut w = buf.writer();
    serde_json::to_writer(&mut w, data).expect("frame payload serializes");
    let mut buf = w.into_inner();
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// Encodes a `token` frame `{"t": text, "i": index}` (the hot path: no intermediate
/// struct, the text escaped straight into the frame).
pub fn token(id: u64, index: u32, text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(48 + text.len());
    head(&mut buf, id, Event::Token);
    buf.put_slice(b"{\"t\":");
    let mut w = buf.writer();
    serde_json::to_writer(&mut w, text).expect("a str serializes");
    let mut buf = w.into_inner();
    let _ = write!((&mut buf).writer(), ",\"i\":{index}}}\n\n");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_frame_bytes() {
        assert_eq!(
            &token(7, 3, " hi")[..],
            b"id: 7\nevent: token\ndata: {\"t\":\" hi\",\"i\":3}\n\n"
        );
        assert_eq!(
            &token(0, 0, "a\"b\nc")[..],
            b"id: 0\nevent: token\ndata: {\"t\":\"a\\\"b\\nc\",\"i\":0}\n\n"
        );
    }

    #[test]
    fn payload_frames() {
        let f = encode(
            0,
            Event::Started,
            &Started {
                queue_position: 2,
                predicted_start_ms: 40,
            },
        );
        assert_eq!(
            &f[..],
            b"id: 0\nevent: started\ndata: {\"queue_position\":2,\"predicted_start_ms\":40}\n\n"
        );
        let f = encode(
            9,
            Event::End,
            &End {
                tokens_out: 4,
                decode_ms: 12,
                transcript_id: "sha256:ab",
                canceled: false,
                finish_reason: None,
                prompt_tokens: None,
                embeddings: None,
            },
        );
        assert_eq!(
            &f[..],
            b"id: 9\nevent: end\ndata: {\"tokens_out\":4,\"decode_ms\":12,\"transcript_id\":\"sha256:ab\"}\n\n"
        );
        let b = BudgetRemaining {
            tokens_budget_remaining: Some(5),
            ..Default::default()
        };
        let m = Metrics {
            queue_depth: 1,
            on_time_probability: 1.0,
            kv_warmth: false,
            queue_position: None,
            predicted_start_ms: None,
            tokens_out: Some(3),
            budgets: &b,
        };
        let f = encode(1, Event::Metrics, &m);
        assert_eq!(
            &f[..],
            b"id: 1\nevent: metrics\ndata: {\"queue_depth\":1,\"on_time_probability\":1.0,\"kv_warmth\":false,\"tokens_out\":3,\"tokens_budget_remaining\":5}\n\n"
        );
    }
}

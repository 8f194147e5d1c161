//! SSE frames from `orchd_engine::frame` -> an independent SSE parser -> the same events.
//!
//! The input is itself an SSE stream (the seed corpus holds real orchd streams), read
//! by the parser below into events of any name, id and data. Each event becomes
//! encoder input: its name if the encoder has it (`Event`), else one picked by a hash;
//! its id if a `u64`, else a hash; and its data as the typed payload of that event when
//! the data has that shape (`started`, `metrics`, `end`, `error`, `token`), as any JSON
//! value through `frame::encode` when it is JSON, and otherwise as text: a `token`
//! frame's text, or a JSON string (so text holds newlines from multi-line data, and
//! `\r`, NUL, U+2028 or a BOM from JSON escapes in the input). Comments in the input become `: hb` heartbeats,
//! as the HTTP body sends when idle.
//!
//! Asserts: no panic; every frame ends with a blank line and parses alone into exactly
//! one event; the concatenated frames parse back, per the WHATWG HTML "server-sent
//! events" rules, into one event per frame with the same type, last event id and data
//! (the data compared as a JSON value built without the encoder).
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchd_engine::frame::{self, BudgetRemaining, End, ErrorFrame, Event, Metrics, Started};
use orchd_engine::{Engine, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Map, Value};

const EVENTS: [Event; 5] = [
    Event::Started,
    Event::Metrics,
    Event::Token,
    Event::End,
    Event::Error,
];

const HEARTBEAT: &[u8] = b": hb\n\n";

/// What a parsed stream holds: events, and comments (input side only).
#[derive(Debug, PartialEq)]
enum Item {
    Event {
        event: String,
        id: String,
        data: String,
    },
    Comment,
}

/// An SSE parser after the WHATWG HTML standard, section "Parsing an event stream", for
/// a whole stream: UTF-8 decoded (invalid bytes replaced), one leading BOM dropped,
/// lines ended by CRLF, LF or CR, an unterminated last line (and an event not yet
/// dispatched) discarded.
fn parse_sse(stream: &[u8]) -> Vec<Item> {
    let text = String::from_utf8_lossy(stream);
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = Vec::new();
    let (mut data, mut event, mut last_id) = (String::new(), String::new(), String::new());
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let term = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + term..];
        if line.is_empty() {
            // Dispatch: nothing without data; the type and data buffers reset, the
            // last event id stays.
            if !data.is_empty() {
                if data.ends_with('\n') {
                    data.pop();
                }
                out.push(Item::Event {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event.clone()
                    },
                    id: last_id.clone(),
                    data: std::mem::take(&mut data),
                });
            }
            data.clear();
            event.clear();
            continue;
        }
        if line.starts_with(':') {
            out.push(Item::Comment);
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => event = value.to_string(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_id = value.to_string(),
            _ => {} // `retry` and unknown fields make no event
        }
    }
    out
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// The payload shapes of SPEC section 2, read from input data (not the encoder's types,
// which only serialize).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenIn {
    t: String,
    i: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartedIn {
    queue_position: u32,
    predicted_start_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsIn {
    queue_depth: u32,
    on_time_probability: f64,
    kv_warmth: bool,
    queue_position: Option<u32>,
    predicted_start_ms: Option<u64>,
    tokens_out: Option<u32>,
    tokens_budget_remaining: Option<u64>,
    time_budget_remaining_ms: Option<u64>,
    cost_budget_remaining: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndIn {
    tokens_out: u32,
    decode_ms: u64,
    transcript_id: String,
    #[serde(default)]
    canceled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorIn {
    code: ErrorKind,
    message: String,
    engine: Option<Engine>,
}

fn shape<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
    serde_json::from_value(v.clone()).ok()
}

/// `{key: value}` for the keys whose value is `Some`.
fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect::<Map<_, _>>(),
    )
}

/// Encodes one input event; returns the frame and the data it must parse back to.
fn encode(event: Event, id: u64, data: &str) -> (bytes::Bytes, Value) {
    let value: Option<Value> = serde_json::from_str(data).ok();
    if let Some(v) = &value {
        match event {
            Event::Token => {
                if let Some(t) = shape::<TokenIn>(v) {
                    return (frame::token(id, t.i, &t.t), json!({"t": t.t, "i": t.i}));
                }
            }
            Event::Started => {
                if let Some(s) = shape::<StartedIn>(v) {
                    let f = frame::encode(
                        id,
                        event,
                        &Started {
                            queue_position: s.queue_position,
                            predicted_start_ms: s.predicted_start_ms,
                        },
                    );
                    let want = json!({"queue_position": s.queue_position,
                                      "predicted_start_ms": s.predicted_start_ms});
                    return (f, want);
                }
            }
            Event::Metrics => {
                if let Some(m) = shape::<MetricsIn>(v) {
                    let budgets = BudgetRemaining {
                        tokens_budget_remaining: m.tokens_budget_remaining,
                        time_budget_remaining_ms: m.time_budget_remaining_ms,
                        cost_budget_remaining: m.cost_budget_remaining,
                    };
                    let f = frame::encode(
                        id,
                        event,
                        &Metrics {
                            queue_depth: m.queue_depth,
                            on_time_probability: m.on_time_probability,
                            kv_warmth: m.kv_warmth,
                            queue_position: m.queue_position,
                            predicted_start_ms: m.predicted_start_ms,
                            tokens_out: m.tokens_out,
                            budgets: &budgets,
                        },
                    );
                    let want = object([
                        ("queue_depth", Some(json!(m.queue_depth))),
                        ("on_time_probability", Some(json!(m.on_time_probability))),
                        ("kv_warmth", Some(json!(m.kv_warmth))),
                        ("queue_position", m.queue_position.map(Value::from)),
                        ("predicted_start_ms", m.predicted_start_ms.map(Value::from)),
                        ("tokens_out", m.tokens_out.map(Value::from)),
                        (
                            "tokens_budget_remaining",
                            m.tokens_budget_remaining.map(Value::from),
                        ),
                        (
                            "time_budget_remaining_ms",
                            m.time_budget_remaining_ms.map(Value::from),
                        ),
                        (
                            "cost_budget_remaining",
                            m.cost_budget_remaining.map(Value::from),
                        ),
                    ]);
                    return (f, want);
                }
            }
            Event::End => {
                if let Some(e) = shape::<EndIn>(v) {
                    let f = frame::encode(
                        id,
                        event,
                        &End {
                            tokens_out: e.tokens_out,
                            decode_ms: e.decode_ms,
                            transcript_id: &e.transcript_id,
                            canceled: e.canceled,
                            finish_reason: None,
                            prompt_tokens: None,
                            embeddings: None,
                        },
                    );
                    let want = object([
                        ("tokens_out", Some(json!(e.tokens_out))),
                        ("decode_ms", Some(json!(e.decode_ms))),
                        ("transcript_id", Some(json!(e.transcript_id))),
                        ("canceled", e.canceled.then_some(json!(true))),
                    ]);
                    return (f, want);
                }
            }
            Event::Error => {
                if let Some(e) = shape::<ErrorIn>(v) {
                    let f = frame::encode(
                        id,
                        event,
                        &ErrorFrame {
                            code: e.code,
                            message: &e.message,
                            engine: e.engine,
                        },
                    );
                    let want = object([
                        ("code", Some(json!(e.code.as_str()))),
                        ("message", Some(json!(e.message))),
                        ("engine", e.engine.map(|e| json!(e.as_str()))),
                    ]);
                    return (f, want);
                }
            }
        }
    }
    match value {
        // Any JSON value through the generic encoder.
        Some(v) => (frame::encode(id, event, &v), v),
        // Any text: the text of a token, or a JSON string for the other events.
        None if event == Event::Token => {
            let i = (fnv(data) & 0xffff) as u32;
            (frame::token(id, i, data), json!({"t": data, "i": i}))
        }
        None => (frame::encode(id, event, &data), json!(data)),
    }
}

fuzz_target!(|input: &[u8]| {
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for item in parse_sse(input) {
        let Item::Event { event, id, data } = item else {
            stream.extend_from_slice(HEARTBEAT);
            continue;
        };
        let ev = EVENTS
            .into_iter()
            .find(|e| e.as_str() == event)
            .unwrap_or(EVENTS[(fnv(&event) % 5) as usize]);
        let id: u64 = id.parse().unwrap_or_else(|_| fnv(&id));
        let (bytes, want) = encode(ev, id, &data);
        assert!(bytes.ends_with(b"\n\n"), "a frame ends with a blank line");
        let alone = parse_sse(&bytes);
        assert_eq!(alone.len(), 1, "one frame, one event: {bytes:?}");
        stream.extend_from_slice(&bytes);
        expected.push((ev.as_str(), id.to_string(), want));
    }
    let got: Vec<_> = parse_sse(&stream)
        .into_iter()
        .filter(|i| *i != Item::Comment)
        .collect();
    assert_eq!(got.len(), expected.len(), "one event per frame");
    for (g, (event, id, want)) in got.iter().zip(&expected) {
        let Item::Event {
            event: g_event,
            id: g_id,
            data: g_data,
        } = g
        else {
            unreachable!()
        };
        assert_eq!(g_event, event);
        assert_eq!(g_id, id);
        let parsed: Value = serde_json::from_str(g_data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {g_data:?}"));
        // The expected value goes through JSON text too, so both sides meet the same
        // float parsing (serde_json's is exact only with its `float_roundtrip`).
        let want: Value = serde_json::from_str(&want.to_string()).expect("JSON parses");
        assert_eq!(parsed, want, "data changed in transit: {g_data:?}");
    }
});

//! The frame rules of a whole stream (SPEC section 2, "GET /v1/tasks/{id}/stream"),
//! stated once: every test that reads a stream from frame 0 to its end holds it to
//! [`assert_well_formed`]. They are the union of what the suites used to check, each
//! in its own copy, plus the payload fields SPEC names.

use serde_json::Value;

use crate::sse::Event;

/// `ErrorKind` of SPEC section 1.
const ERROR_KINDS: [&str; 12] = [
    "ADMISSION_REJECT",
    "QUEUE_FULL_DROP_LRU",
    "INVALID_PARAMS",
    "POOL_UNREADY",
    "POOL_UNAVAILABLE",
    "REPLICA_EXHAUSTED",
    "DECODE_TIMEOUT",
    "WORKER_RESET",
    "INTERNAL",
    "DEADLINE_UNMET",
    "MODEL_DEPRECATED",
    "UNTRUSTED_ARTIFACT",
];

/// `Engine` of SPEC section 1.
const ENGINES: [&str; 4] = ["llamacpp", "vllm", "tgi", "triton"];

/// Panics, naming the rule and listing the frames, unless `frames` is a whole stream
/// as SPEC section 2 has it (see [`check_well_formed`]).
pub fn assert_well_formed(frames: &[Event]) {
    if let Err(broken) = check_well_formed(frames) {
        panic!("frame rule broken: {broken}\n{}", listing(frames));
    }
}

/// The rules, in order; the first one broken is the error:
/// - at least one frame; every frame's id is its index (consecutive from 0);
/// - every event is `started`, `metrics`, `token`, `end` or `error`;
/// - frame 0 is `started`, and no other is; it has integer `queue_position` and
///   `predicted_start_ms`;
/// - `token` frames have a string `t` and `i` = 0, 1, 2, ... without gaps;
/// - at least one `metrics` frame; each has an integer `queue_depth`, an
///   `on_time_probability` in [0, 1] and a boolean `kv_warmth`;
/// - exactly one terminal frame (`end` or `error`), and it is the last;
/// - `end` has `tokens_out` equal to the number of token frames, an integer
///   `decode_ms`, a string `transcript_id`, and `canceled` absent or `true`;
/// - `error` has a `code` that is an `ErrorKind`, a string `message`, and `engine`
///   absent or an `Engine`.
pub fn check_well_formed(frames: &[Event]) -> Result<(), String> {
    if frames.is_empty() {
        return Err("no frames at all".into());
    }
    for (i, f) in frames.iter().enumerate() {
        if f.id != i as u64 {
            return Err(format!(
                "frame {i} has id {}: ids count from 0 without gaps",
                f.id
            ));
        }
        if !matches!(
            f.event.as_str(),
            "started" | "metrics" | "token" | "end" | "error"
        ) {
            return Err(format!("frame {i} is an unknown event {:?}", f.event));
        }
    }
    if frames[0].event != "started" {
        return Err(format!("frame 0 is {:?}, not started", frames[0].event));
    }
    if let Some(f) = frames[1..].iter().find(|f| f.event == "started") {
        return Err(format!("a second started frame: {}", f.id));
    }
    for key in ["queue_position", "predicted_start_ms"] {
        field_is(&frames[0], key, Value::is_u64, "an integer")?;
    }
    for (n, f) in frames.iter().filter(|f| f.event == "token").enumerate() {
        field_is(f, "t", Value::is_string, "a string")?;
        if f.data["i"].as_u64() != Some(n as u64) {
            return Err(format!(
                "token frame {} has i = {} where {n} is due: token indexes count from 0 \
                 without gaps",
                f.id, f.data["i"]
            ));
        }
    }
    let metrics: Vec<&Event> = frames.iter().filter(|f| f.event == "metrics").collect();
    if metrics.is_empty() {
        return Err("no metrics frame: every stream has at least one".into());
    }
    for f in metrics {
        field_is(f, "queue_depth", Value::is_u64, "an integer")?;
        field_is(f, "kv_warmth", Value::is_boolean, "a boolean")?;
        field_is(
            f,
            "on_time_probability",
            |v| v.as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)),
            "a number in [0, 1]",
        )?;
    }
    let terminals: Vec<u64> = frames
        .iter()
        .filter(|f| f.is_terminal())
        .map(|f| f.id)
        .collect();
    let last = frames.last().expect("not empty");
    if terminals.len() != 1 || !last.is_terminal() {
        return Err(format!(
            "terminal frames at {terminals:?}, last frame {} is {:?}: exactly one terminal \
             frame (end or error), and it is the last",
            last.id, last.event
        ));
    }
    if last.event == "end" {
        let tokens = tokens(frames).len();
        if last.data["tokens_out"].as_u64() != Some(tokens as u64) {
            return Err(format!(
                "end has tokens_out = {}, the stream has {tokens} token frames",
                last.data["tokens_out"]
            ));
        }
        field_is(last, "decode_ms", Value::is_u64, "an integer")?;
        field_is(last, "transcript_id", Value::is_string, "a string")?;
        if !matches!(last.data.get("canceled"), None | Some(Value::Bool(true))) {
            return Err(format!(
                "end has canceled = {}: absent or true",
                last.data["canceled"]
            ));
        }
    } else {
        field_is(
            last,
            "code",
            |v| v.as_str().is_some_and(|c| ERROR_KINDS.contains(&c)),
            "an ErrorKind",
        )?;
        field_is(last, "message", Value::is_string, "a string")?;
        if let Some(engine) = last.data.get("engine") {
            if !engine.as_str().is_some_and(|e| ENGINES.contains(&e)) {
                return Err(format!("error has engine = {engine}: not an Engine"));
            }
        }
    }
    Ok(())
}

fn field_is(f: &Event, key: &str, ok: impl Fn(&Value) -> bool, what: &str) -> Result<(), String> {
    match f.data.get(key) {
        Some(v) if ok(v) => Ok(()),
        Some(v) => Err(format!(
            "{} frame {}: {key} = {v} is not {what}",
            f.event, f.id
        )),
        None => Err(format!("{} frame {}: no {key}", f.event, f.id)),
    }
}

/// The frames, one a line; a long stream shows its first and last frames.
fn listing(frames: &[Event]) -> String {
    const HEAD: usize = 12;
    const TAIL: usize = 8;
    let line = |f: &Event| format!("  id {} {} {}\n", f.id, f.event, f.data);
    if frames.len() <= HEAD + TAIL {
        return frames.iter().map(line).collect();
    }
    let mut out: String = frames[..HEAD].iter().map(line).collect();
    out.push_str(&format!(
        "  ... {} frames ...\n",
        frames.len() - HEAD - TAIL
    ));
    out.extend(frames[frames.len() - TAIL..].iter().map(line));
    out
}

/// The text of each token frame, in order.
pub fn tokens(frames: &[Event]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.event == "token")
        .map(|f| {
            f.data["t"]
                .as_str()
                .unwrap_or_else(|| panic!("token frame {} without a text t: {}", f.id, f.data))
                .to_string()
        })
        .collect()
}

/// The token frames' texts joined: what the model said.
pub fn token_text(frames: &[Event]) -> String {
    tokens(frames).concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(id: u64, event: &str, data: Value) -> Event {
        Event {
            id,
            event: event.into(),
            raw: String::new(),
            data,
        }
    }

    fn good() -> Vec<Event> {
        vec![
            frame(
                0,
                "started",
                json!({"queue_position": 0, "predicted_start_ms": 0}),
            ),
            frame(
                1,
                "metrics",
                json!({"queue_depth": 0, "on_time_probability": 1.0, "kv_warmth": false}),
            ),
            frame(2, "token", json!({"t": " a", "i": 0})),
            frame(3, "token", json!({"t": " b", "i": 1})),
            frame(
                4,
                "end",
                json!({"tokens_out": 2, "decode_ms": 1, "transcript_id": "sha256:00"}),
            ),
        ]
    }

    fn renumber(frames: &mut [Event]) {
        for (i, f) in frames.iter_mut().enumerate() {
            f.id = i as u64;
        }
    }

    #[test]
    fn a_whole_stream_passes_and_says_its_tokens() {
        assert_eq!(check_well_formed(&good()), Ok(()));
        assert_eq!(token_text(&good()), " a b");
        let mut error = good();
        error[4] = frame(
            4,
            "error",
            json!({"code": "WORKER_RESET", "message": "gone", "engine": "vllm"}),
        );
        assert_eq!(check_well_formed(&error), Ok(()));
    }

    #[test]
    fn each_broken_rule_is_named() {
        type Breaker = Box<dyn Fn(&mut Vec<Event>)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("no frames", Box::new(|f| f.clear())),
            ("id 5", Box::new(|f| f[1].id = 5)),
            (
                "not started",
                Box::new(|f| {
                    f.swap(0, 1);
                    renumber(f)
                }),
            ),
            ("unknown event", Box::new(|f| f[1].event = "hello".into())),
            (
                "second started",
                Box::new(|f| f[1] = frame(1, "started", f[0].data.clone())),
            ),
            (
                "i = 2",
                Box::new(|f| f[3].data = json!({"t": " b", "i": 2})),
            ),
            (
                "no metrics",
                Box::new(|f| {
                    f.remove(1);
                    renumber(f)
                }),
            ),
            (
                "on_time_probability",
                Box::new(|f| f[1].data["on_time_probability"] = json!(1.5)),
            ),
            (
                "terminal frames at [3, 4]",
                Box::new(|f| f[3].event = "end".into()),
            ),
            ("exactly one terminal", Box::new(|f| f.truncate(4))),
            (
                "tokens_out",
                Box::new(|f| f[4].data["tokens_out"] = json!(3)),
            ),
            (
                "transcript_id",
                Box::new(|f| f[4].data = json!({"tokens_out": 2, "decode_ms": 1})),
            ),
            (
                "canceled",
                Box::new(|f| f[4].data["canceled"] = json!(false)),
            ),
            (
                "ErrorKind",
                Box::new(|f| f[4] = frame(4, "error", json!({"code": "OOPS", "message": ""}))),
            ),
        ];
        for (want, break_it) in cases {
            let mut frames = good();
            break_it(&mut frames);
            let err = check_well_formed(&frames).expect_err(want);
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}

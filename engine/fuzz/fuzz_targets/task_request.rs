//! `POST /v1/tasks` body -> [`TaskSpec::parse`], exactly what the HTTP handler calls
//! (`parse_json` into a `TaskSpec`, then `validate`).
//!
//! Asserts: no panic; a refusal is `400 INVALID_PARAMS` whose message names what is
//! wrong (`body`, a `TaskSpec` field, or the unknown key sent) and says why; validation
//! refusals (of JSON that did parse) carry the engine; an accepted spec satisfies every
//! documented bound, and its canonical form parses back to the same spec and digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchd_engine::task::{TaskSpec, MAX_DEADLINE_MS, MAX_INPUTS, MAX_MODEL_REF};
use orchd_engine::{ErrorClass, ErrorKind};

/// The fields of `TaskSpec`, as a client spells them.
const FIELDS: [&str; 16] = [
    "task_id",
    "session_id",
    "workload",
    "model_ref",
    "engine",
    "ctx",
    "priority",
    "max_tokens",
    "deadline_ms",
    "seed",
    "determinism",
    "sampler_profile_version",
    "prompt",
    "inputs",
    "expected_tokens",
    "kv_hint",
];

/// The message starts with what it is about, then `: ` and a reason.
fn names_something(msg: &str) -> bool {
    let reason_after = |prefix_len: usize| {
        msg[prefix_len..]
            .strip_prefix(": ")
            .is_some_and(|why| !why.trim().is_empty())
    };
    if msg.starts_with("body") && reason_after(4) {
        return true;
    }
    for f in FIELDS {
        if let Some(rest) = msg.strip_prefix(f) {
            // `inputs[3]: ...`, `workload.completion: ...` or `ctx: ...`
            if rest.starts_with('[') || rest.starts_with('.') || reason_after(f.len()) {
                return true;
            }
        }
    }
    // An unknown key is named as sent: "<key>: unknown field `<key>`, expected ...".
    const UNKNOWN: &str = ": unknown field `";
    let mut from = 0;
    while let Some(i) = msg[from..].find(UNKNOWN) {
        let at = from + i;
        let key = &msg[..at];
        if msg[at + UNKNOWN.len()..].starts_with(key) {
            return true;
        }
        from = at + 1;
    }
    false
}

fuzz_target!(|body: &[u8]| {
    match TaskSpec::parse(body) {
        Ok(spec) => {
            assert!(spec.ctx > 0);
            assert!((1..=spec.ctx).contains(&spec.max_tokens));
            assert!((1..=MAX_DEADLINE_MS).contains(&spec.deadline_ms));
            assert!((1..=MAX_MODEL_REF).contains(&spec.model_ref.len()));
            assert!(spec.inputs.as_ref().map_or(0, Vec::len) <= MAX_INPUTS);
            assert!((1..=spec.max_tokens).contains(&spec.expected_out()));
            let _ = spec.prompt_tokens();
            // Idempotent resubmission compares digests of the canonical form.
            let canonical = serde_json::to_vec(&spec).expect("a spec serializes");
            let again = TaskSpec::parse(&canonical).expect("the canonical form parses");
            assert_eq!(again, spec);
            assert_eq!(again.digest(), spec.digest());
        }
        Err(e) => {
            assert_eq!(e.class, ErrorClass::BadRequest, "{e:?}");
            assert_eq!(e.kind, ErrorKind::InvalidParams, "{e:?}");
            assert!(
                names_something(&e.message),
                "names nothing: {:?}",
                e.message
            );
            let parsed = serde_json::from_slice::<TaskSpec>(body).is_ok();
            assert_eq!(e.engine.is_some(), parsed, "{e:?}");
            // The response body.
            let envelope: serde_json::Value =
                serde_json::from_slice(&e.envelope_json()).expect("the envelope is JSON");
            assert_eq!(envelope["code"], "INVALID_PARAMS");
        }
    }
});

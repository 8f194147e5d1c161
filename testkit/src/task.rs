//! Task requests (SPEC section 2, `POST /v1/tasks`) with sensible defaults.

use serde_json::{json, Value};

/// A fresh random UUIDv4 as text, for task and session ids.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A completion request for `task` in `session`: 8 tokens of the `llamacpp` engine,
/// model `m`, prompt `hello`, seed 7, a 60 s deadline; the fields of `extra` (an
/// object) replace or add to these.
pub fn task_request(task: &str, session: &str, extra: Value) -> Value {
    let mut v = json!({
        "task_id": task, "session_id": session, "workload": "completion", "model_ref": "m",
        "engine": "llamacpp", "ctx": 4096, "priority": "interactive", "max_tokens": 8,
        "deadline_ms": 60000, "prompt": "hello", "seed": 7
    });
    let extra = match extra {
        Value::Object(m) => m,
        other => panic!("extra fields are an object, not {other}"),
    };
    for (k, val) in extra {
        v[k] = val;
    }
    v
}

/// [`task_request`] as the bytes of a body.
pub fn task_body(task: &str, session: &str, extra: Value) -> Vec<u8> {
    serde_json::to_vec(&task_request(task, session, extra)).expect("JSON encodes")
}

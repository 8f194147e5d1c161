//! The one error taxonomy of orchd (SPEC section 1, "Error envelope").
//!
//! An [`ApiError`] carries everything the HTTP boundary needs to render a response
//! (envelope, status, `Retry-After`/`X-Backoff-Ms`) or an SSE `error` frame, but no HTTP
//! types: [`ErrorClass`] names the kind of refusal and the http crate maps it to a status
//! code in exactly one exhaustive `match`.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::Engine;

/// The `code` of an error envelope or SSE `error` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorKind {
    AdmissionReject,
    QueueFullDropLru,
    InvalidParams,
    PoolUnready,
    PoolUnavailable,
    ReplicaExhausted,
    DecodeTimeout,
    WorkerReset,
    Internal,
    DeadlineUnmet,
    ModelDeprecated,
    UntrustedArtifact,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::AdmissionReject,
        ErrorKind::QueueFullDropLru,
        ErrorKind::InvalidParams,
        ErrorKind::PoolUnready,
        ErrorKind::PoolUnavailable,
        ErrorKind::ReplicaExhausted,
        ErrorKind::DecodeTimeout,
        ErrorKind::WorkerReset,
        ErrorKind::Internal,
        ErrorKind::DeadlineUnmet,
        ErrorKind::ModelDeprecated,
        ErrorKind::UntrustedArtifact,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::AdmissionReject => "ADMISSION_REJECT",
            ErrorKind::QueueFullDropLru => "QUEUE_FULL_DROP_LRU",
            ErrorKind::InvalidParams => "INVALID_PARAMS",
            ErrorKind::PoolUnready => "POOL_UNREADY",
            ErrorKind::PoolUnavailable => "POOL_UNAVAILABLE",
            ErrorKind::ReplicaExhausted => "REPLICA_EXHAUSTED",
            ErrorKind::DecodeTimeout => "DECODE_TIMEOUT",
            ErrorKind::WorkerReset => "WORKER_RESET",
            ErrorKind::Internal => "INTERNAL",
            ErrorKind::DeadlineUnmet => "DEADLINE_UNMET",
            ErrorKind::ModelDeprecated => "MODEL_DEPRECATED",
            ErrorKind::UntrustedArtifact => "UNTRUSTED_ARTIFACT",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a refusal: which response a client gets. The http crate owns the only
/// mapping from class to status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is malformed or asks for something impossible.
    BadRequest,
    /// No credentials were presented.
    Unauthenticated,
    /// Credentials were presented and are not known.
    Forbidden,
    /// The addressed resource (route, task, pool, artifact) does not exist.
    NotFound,
    /// The resource exists but not for this method.
    MethodNotAllowed,
    /// The request conflicts with the resource's current state.
    Conflict,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// Admission refused for load or policy; may carry retry advice.
    TooManyRequests,
    /// A fault inside orchd.
    Internal,
    /// No pool can take the work now, or at all.
    Unavailable,
    /// A bounded store is full.
    InsufficientStorage,
}

/// A refusal or failure, as the client will see it.
///
/// Messages are `Cow<'static, str>` so that hot refusals (queue full, unknown route)
/// cost no allocation beyond the response.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub class: ErrorClass,
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
    pub engine: Option<Engine>,
    pub pool_id: Option<String>,
    pub retriable: bool,
    /// Retry advice in milliseconds; when set, the response carries `Retry-After`
    /// (whole seconds, at least 1) and `X-Backoff-Ms` with this value.
    pub retry_after_ms: Option<u64>,
    pub policy_label: Option<Policy>,
}

/// The rule that refused an admission (`policy_label` of a 429), a closed vocabulary:
/// each is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The pool's queue is full (policy `reject`).
    Reject,
    /// The pool's queue is full and nothing can be evicted (policy `drop-lru`).
    DropLru,
    SessionsFull,
    SessionTurns,
    BudgetTokens,
    BudgetTime,
    BudgetCost,
    /// The tenant has `max_queued` tasks waiting in the pool.
    TenantQueued,
    /// The tenant's `tokens_per_minute` cannot cover the task now.
    TenantTokens,
    /// A shard's mailbox is full.
    Overloaded,
    /// The owner shard's mailbox is full.
    ShardOverloaded,
}

impl Policy {
    pub const ALL: [Policy; 11] = [
        Policy::Reject,
        Policy::DropLru,
        Policy::SessionsFull,
        Policy::SessionTurns,
        Policy::BudgetTokens,
        Policy::BudgetTime,
        Policy::BudgetCost,
        Policy::TenantQueued,
        Policy::TenantTokens,
        Policy::Overloaded,
        Policy::ShardOverloaded,
    ];

    /// Its place in [`Policy::ALL`] (a metric's index).
    pub fn index(self) -> usize {
        match self {
            Policy::Reject => 0,
            Policy::DropLru => 1,
            Policy::SessionsFull => 2,
            Policy::SessionTurns => 3,
            Policy::BudgetTokens => 4,
            Policy::BudgetTime => 5,
            Policy::BudgetCost => 6,
            Policy::TenantQueued => 7,
            Policy::TenantTokens => 8,
            Policy::Overloaded => 9,
            Policy::ShardOverloaded => 10,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Reject => "reject",
            Policy::DropLru => "drop-lru",
            Policy::SessionsFull => "sessions-full",
            Policy::SessionTurns => "session-turns",
            Policy::BudgetTokens => "budget-tokens",
            Policy::BudgetTime => "budget-time",
            Policy::BudgetCost => "budget-cost",
            Policy::TenantQueued => "tenant-queued",
            Policy::TenantTokens => "tenant-tokens",
            Policy::Overloaded => "overloaded",
            Policy::ShardOverloaded => "shard-overloaded",
        }
    }
}

impl ApiError {
    pub fn new(class: ErrorClass, kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            class,
            kind,
            message: message.into(),
            engine: None,
            pool_id: None,
            retriable: false,
            retry_after_ms: None,
            policy_label: None,
        }
    }

    /// `400 INVALID_PARAMS`; the message must name the offending field.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorClass::BadRequest, ErrorKind::InvalidParams, message)
    }

    /// `404 INVALID_PARAMS`.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorClass::NotFound, ErrorKind::InvalidParams, message)
    }

    /// `500 INTERNAL`.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorClass::Internal, ErrorKind::Internal, message)
    }

    pub fn with_engine(mut self, engine: impl Into<Option<Engine>>) -> Self {
        self.engine = engine.into();
        self
    }

    pub fn with_pool(mut self, pool_id: impl Into<String>) -> Self {
        self.pool_id = Some(pool_id.into());
        self
    }

    pub fn retriable(mut self, retriable: bool) -> Self {
        self.retriable = retriable;
        self
    }

    /// Sets retry advice and marks the error retriable.
    pub fn retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self.retriable = true;
        self
    }

    pub fn policy(mut self, label: Policy) -> Self {
        self.policy_label = Some(label);
        self
    }

    /// `Retry-After` in whole seconds: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1))
    }

    /// The envelope body of SPEC section 1, as JSON.
    pub fn envelope_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            code: ErrorKind,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            engine: Option<Engine>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pool_id: Option<&'a str>,
            retriable: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry_after_ms: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            policy_label: Option<&'a str>,
        }
        let env = Envelope {
            code: self.kind,
            message: &self.message,
            engine: self.engine,
            pool_id: self.pool_id.as_deref(),
            retriable: self.retriable,
            retry_after_ms: self.retry_after_ms,
            policy_label: self.policy_label.map(Policy::as_str),
        };
        serde_json::to_vec(&env).expect("envelope serializes")
    }
}

/// Parses a JSON request body, which must be an object; a failure is a
/// `400 INVALID_PARAMS` naming the field (its path, e.g. `inputs[2]`) or `body` when the
/// JSON itself is broken.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde also builds a struct from an array of its fields in order (found by
    // fuzzing: `["<uuid>", ...]` was admitted as a task), whose errors name positions.
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first.is_some_and(|&b| b != b'{') {
        return Err(ApiError::invalid("body: must be a JSON object"));
    }
    // The common case pays nothing for path tracking; a bad body is parsed again with
    // it, to name the field.
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    // serde_json's positions ("at line 1 column 9") say nothing a client needs.
    fn without_position(msg: &str) -> &str {
        msg.split(" at line ").next().unwrap_or_default()
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        let at = if matches!(path.as_str(), "." | "?" | "") {
            "body"
        } else {
            path.as_str()
        };
        ApiError::invalid(format!("{at}: {}", without_position(&msg)))
    })?;
    // Bytes after the value (found by fuzzing: `{...valid task...}W` was admitted,
    // since this second parse did not check for them).
    de.end()
        .map_err(|e| ApiError::invalid(format!("body: {}", without_position(&e.to_string()))))?;
    Ok(v)
}

/// Reads `T` from an already parsed JSON object (a request read once and looked at in
/// parts); a failure is a `400 INVALID_PARAMS` naming the field, as [`parse_json`].
pub fn from_value<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at = if matches!(path.as_str(), "." | "?" | "") {
            "body"
        } else {
            path.as_str()
        };
        ApiError::invalid(format!("{at}: {}", e.into_inner()))
    })
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

/// How a call to an engine failed: the engine seam's one error, with the one mapping
/// to the taxonomy of a task that ends this way.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No connection, or no response head in time: nothing was generated.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    /// The engine answered with an error status before streaming.
    #[error("engine answered {status}: {body}")]
    Status { status: u16, body: String },
    /// The connection broke while streaming.
    #[error("engine connection lost: {0}")]
    Reset(String),
    /// The engine sent something that is not its protocol.
    #[error("engine sent malformed data: {0}")]
    Malformed(String),
    /// The engine itself failed mid-generation (the mock's injected fault).
    #[error("{0}")]
    Died(String),
}

impl EngineError {
    /// Worth another try before the first token.
    pub fn retriable(&self) -> bool {
        match self {
            EngineError::Unreachable(_) => true,
            EngineError::Status { status, .. } => *status >= 500,
            EngineError::Reset(_) | EngineError::Malformed(_) | EngineError::Died(_) => false,
        }
    }

    /// The engine is down: the pool stops admitting until its health probe answers.
    pub fn engine_down(&self) -> bool {
        matches!(self, EngineError::Unreachable(_))
    }

    /// What a task that failed this way ends with; `streamed` says whether the
    /// engine had begun streaming (an error status is only possible before).
    pub fn error_kind(&self, streamed: bool) -> ErrorKind {
        match self {
            EngineError::Unreachable(_) => ErrorKind::PoolUnavailable,
            EngineError::Status { status, .. } if !streamed && *status >= 500 => {
                ErrorKind::PoolUnavailable
            }
            EngineError::Status { .. } if !streamed => ErrorKind::InvalidParams,
            EngineError::Status { .. }
            | EngineError::Reset(_)
            | EngineError::Malformed(_)
            | EngineError::Died(_) => ErrorKind::WorkerReset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_is_listed_at_its_index() {
        for (i, p) in Policy::ALL.iter().enumerate() {
            assert_eq!(p.index(), i, "{}", p.as_str());
        }
    }

    #[test]
    fn kinds_serialize_as_spec_names() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }

    #[test]
    fn envelope_carries_only_set_fields() {
        let e = ApiError::invalid("ctx: must be > 0");
        let v: serde_json::Value = serde_json::from_slice(&e.envelope_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "INVALID_PARAMS", "message": "ctx: must be > 0", "retriable": false})
        );
    }

    #[test]
    fn bodies_are_objects_not_positional_arrays() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Drain {
            deadline_ms: u64,
        }
        // Found by fuzzing (task_request): arrays were read as the fields in order.
        for body in ["[5000]", " \n[_{k\"i{_{", "[]", "5000", "\"x\"", "null"] {
            let e = parse_json::<Drain>(body.as_bytes()).unwrap_err();
            assert_eq!(e.message, "body: must be a JSON object", "{body:?}");
            assert_eq!(e.kind, ErrorKind::InvalidParams);
        }
        assert_eq!(
            parse_json::<Drain>(b" \r\n\t{\"deadline_ms\": 5}")
                .unwrap()
                .deadline_ms,
            5
        );
        let e = parse_json::<Drain>(b"").unwrap_err();
        assert!(e.message.starts_with("body: "), "{e:?}");
    }

    #[test]
    fn bytes_after_the_body_are_refused() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Drain {
            deadline_ms: u64,
        }
        // Found by fuzzing (task_request): the path-tracking parse ignored them.
        for body in [
            "{\"deadline_ms\":5}W",
            "{\"deadline_ms\":5} {\"deadline_ms\":6}",
            "{\"deadline_ms\":5}\n]",
        ] {
            let e = parse_json::<Drain>(body.as_bytes()).unwrap_err();
            assert_eq!(e.message, "body: trailing characters", "{body:?}");
        }
        assert_eq!(
            parse_json::<Drain>(b"{\"deadline_ms\":5} \r\n")
                .unwrap()
                .deadline_ms,
            5
        );
    }

    #[test]
    fn retry_advice_rounds_up_to_whole_seconds() {
        let e = ApiError::new(
            ErrorClass::TooManyRequests,
            ErrorKind::AdmissionReject,
            "full",
        )
        .retry_after_ms(1);
        assert_eq!(e.retry_after_secs(), Some(1));
        assert!(e.retriable);
        let e = e.retry_after_ms(2001);
        assert_eq!(e.retry_after_secs(), Some(3));
        let v: serde_json::Value = serde_json::from_slice(&e.envelope_json()).unwrap();
        assert_eq!(v["retry_after_ms"], 2001);
    }

    #[test]
    fn engine_errors_map_to_the_taxonomy() {
        use super::EngineError as E;
        let status = |status| E::Status {
            status,
            body: String::new(),
        };
        assert_eq!(
            E::Unreachable("x".into()).error_kind(false),
            ErrorKind::PoolUnavailable
        );
        assert_eq!(status(503).error_kind(false), ErrorKind::PoolUnavailable);
        assert_eq!(status(400).error_kind(false), ErrorKind::InvalidParams);
        assert_eq!(
            E::Reset("x".into()).error_kind(true),
            ErrorKind::WorkerReset
        );
        assert_eq!(
            E::Died("x".into()).error_kind(false),
            ErrorKind::WorkerReset
        );
        assert!(E::Unreachable("x".into()).retriable() && status(502).retriable());
        assert!(!status(404).retriable() && !E::Malformed("x".into()).retriable());
    }
}

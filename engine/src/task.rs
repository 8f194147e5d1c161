//! `TaskRequest` (SPEC section 2): parsing and the validation that needs no pool.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;
use crate::generation::ChatMessage;
use crate::tenant::{scoped, TenantId};
use crate::types::{Engine, Priority, Workload};

/// Upper bounds on numbers a client may send; larger is an error, not a wish.
pub const MAX_DEADLINE_MS: u64 = 24 * 3600 * 1000;
pub const MAX_INPUTS: usize = 4096;
pub const MAX_MODEL_REF: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Determinism {
    Strict,
    BestEffort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvHint {
    Reuse,
    Cold,
}

/// A validated task request. Field order is the canonical order of [`TaskSpec::digest`].
///
/// Built from `POST /v1/tasks` (every field as SPEC names it) or by the OpenAI door
/// (issue 17), whose requests name no engine (any engine serving the model may run
/// them), join a session only when asked, and carry [`Extras`]. In a `TaskRequest`
/// body `session_id` and `engine` are required; `None` exists only for the OpenAI door.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub task_id: Uuid,
    #[serde(deserialize_with = "required")]
    pub session_id: Option<Uuid>,
    pub workload: Workload,
    pub model_ref: String,
    #[serde(deserialize_with = "required")]
    pub engine: Option<Engine>,
    pub ctx: u32,
    pub priority: Priority,
    pub max_tokens: u32,
    pub deadline_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determinism: Option<Determinism>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler_profile_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_hint: Option<KvHint>,
    /// What an OpenAI-door request asks beyond a `TaskRequest`; never part of a body.
    #[serde(skip)]
    pub extras: Option<Box<Extras>>,
    /// The tenant that submitted it (set by [`TaskSpec::scope`]); never part of a body.
    #[serde(skip)]
    pub tenant: TenantId,
    /// The ids as the client sent them, for what is shown to it (responses,
    /// transcripts, log lines): once [`TaskSpec::scope`] ran, `task_id` and
    /// `session_id` are the tenant's scoped ids, the keys orchd knows the task by.
    #[serde(skip)]
    pub client: ClientIds,
}

/// A task's ids as its client named them (see [`crate::tenant::scoped`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientIds {
    pub task_id: Uuid,
    pub session_id: Option<Uuid>,
}

/// A field that must be present and not null, kept as an `Option` in Rust (serde
/// would let a missing `Option` field default to `None`).
fn required<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(de).map(Some)
}

/// What a task from the OpenAI-compatible routes asks beyond SPEC's `TaskRequest`:
/// chat messages, the sampling parameters OpenAI's API has, the fields orchd does not
/// interpret (forwarded verbatim to HTTP upstreams), and how long its stream may be
/// without a client before the task is canceled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extras {
    /// A chat: the engine applies its own template (the mock hashes the messages).
    pub chat: Option<Vec<ChatMessage>>,
    /// Embeddings of these texts (workload `embedding`).
    pub embed: Option<Vec<String>>,
    /// Embeddings: the vectors' length, if asked.
    pub dimensions: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    /// Forwarded to engines that take it; the mock's end of sequence (the end of its
    /// first sentence) applies only to open-ended tasks and not with `ignore_eos`.
    pub ignore_eos: Option<bool>,
    /// No `max_tokens` was asked: `max_tokens` is the room the context leaves, and the
    /// engine decides when to stop.
    pub open_ended: bool,
    /// Request fields orchd does not interpret, sent as they came to HTTP upstreams.
    pub forward: serde_json::Map<String, serde_json::Value>,
    /// The task is canceled when nobody has streamed it for this long (OpenAI clients
    /// expect a disconnect to stop generation); `stream.orphan_timeout_ms` otherwise.
    pub orphan_timeout_ms: u64,
    /// How its chunks look, so a client that re-attaches
    /// (`GET /v1/tasks/{id}/stream?format=openai`) gets the same ones: `created` (Unix
    /// seconds) and `stream_options.include_usage` of the request.
    pub created: u64,
    pub include_usage: bool,
}

impl TaskSpec {
    /// Parses and validates a request body. Every error is a 400 naming the field.
    pub fn parse(body: &[u8]) -> Result<TaskSpec, ApiError> {
        let mut spec: TaskSpec = crate::error::parse_json(body)?;
        spec.validate().map_err(|e| e.with_engine(spec.engine))?;
        spec.client = ClientIds {
            task_id: spec.task_id,
            session_id: spec.session_id,
        };
        Ok(spec)
    }

    /// Makes the task `tenant`'s own: its task and session ids become the tenant's
    /// scoped ids; the client's stay in [`TaskSpec::client`].
    pub fn scope(&mut self, tenant: TenantId, name: &str) {
        self.client = ClientIds {
            task_id: self.task_id,
            session_id: self.session_id,
        };
        self.task_id = scoped(name, self.task_id);
        self.session_id = self.session_id.map(|s| scoped(name, s));
        self.tenant = tenant;
    }

    /// The checks that need no pool.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.ctx == 0 {
            return Err(ApiError::invalid("ctx: must be > 0"));
        }
        if self.max_tokens == 0 {
            return Err(ApiError::invalid("max_tokens: must be >= 1"));
        }
        if self.max_tokens > self.ctx {
            return Err(ApiError::invalid(format!(
                "max_tokens: {} is more than ctx {}",
                self.max_tokens, self.ctx
            ))
            .with_engine(self.engine));
        }
        if self.deadline_ms == 0 || self.deadline_ms > MAX_DEADLINE_MS {
            return Err(ApiError::invalid(format!(
                "deadline_ms: must be in 1..={MAX_DEADLINE_MS}"
            )));
        }
        if self.model_ref.is_empty() || self.model_ref.chars().count() > MAX_MODEL_REF {
            return Err(ApiError::invalid(format!(
                "model_ref: must be 1 to {MAX_MODEL_REF} characters"
            )));
        }
        if let Some(inputs) = &self.inputs {
            if inputs.len() > MAX_INPUTS {
                return Err(ApiError::invalid(format!(
                    "inputs: at most {MAX_INPUTS} entries"
                )));
            }
        }
        if self
            .sampler_profile_version
            .as_ref()
            .is_some_and(|v| v.chars().count() > 128)
        {
            return Err(ApiError::invalid(
                "sampler_profile_version: at most 128 characters",
            ));
        }
        if self.workload == Workload::Completion {
            let has_chat = self.extras.as_ref().is_some_and(|x| x.chat.is_some());
            let has_prompt = self.prompt.is_some() || has_chat;
            let has_inputs = self.inputs.as_ref().is_some_and(|i| !i.is_empty());
            if !has_prompt && !has_inputs {
                return Err(ApiError::invalid(
                    "prompt: a completion needs prompt or inputs",
                ));
            }
        }
        Ok(())
    }

    /// A digest of the canonical form, for idempotent resubmission: the same
    /// `task_id` with the same digest is the same task.
    pub fn digest(&self) -> [u8; 16] {
        let canonical = serde_json::to_vec(self).expect("spec serializes");
        let full = Sha256::digest(&canonical);
        full[..16].try_into().expect("16 bytes")
    }

    /// A hash of the first `bytes` bytes of the text an engine reads first (the prompt,
    /// else the inputs one per line, or the chat messages as role and content), or
    /// `None` when there are fewer (or `bytes` is 0, or the task is an embedding): two
    /// tasks whose prompts start alike have the same hash, so a replica set can send them
    /// where that start is cached (issue 20). SipHash with fixed keys: stable across
    /// runs and instances.
    pub fn prefix_hash(&self, bytes: usize) -> Option<u64> {
        use std::hash::Hasher;
        if bytes == 0 || self.extras.as_ref().is_some_and(|x| x.embed.is_some()) {
            return None;
        }
        #[allow(deprecated)] // SipHasher: fixed keys, stable across runs, as wanted here
        let mut h = std::hash::SipHasher::new();
        let mut left = bytes;
        let mut feed = |piece: &[u8]| {
            let n = piece.len().min(left);
            h.write(&piece[..n]);
            left -= n;
            left == 0
        };
        let chat = self.extras.as_ref().and_then(|x| x.chat.as_deref());
        let done = match (chat, &self.prompt) {
            (Some(messages), _) => messages.iter().any(|m| {
                feed(m.role.as_str().as_bytes())
                    || feed(b"\n")
                    || feed(m.content.as_bytes())
                    || feed(b"\n")
            }),
            (None, Some(prompt)) => feed(prompt.as_bytes()),
            (None, None) => self
                .inputs
                .iter()
                .flatten()
                .enumerate()
                .any(|(i, s)| (i > 0 && feed(b"\n")) || feed(s.as_bytes())),
        };
        done.then(|| h.finish())
    }

    /// Rough prompt size in tokens (whitespace words), for KV estimates.
    pub fn prompt_tokens(&self) -> u64 {
        let words = |s: &str| s.split_whitespace().count() as u64;
        let chat = self.extras.iter().flat_map(|x| x.chat.iter().flatten());
        let embed = self.extras.iter().flat_map(|x| x.embed.iter().flatten());
        self.prompt.as_deref().map_or(0, words)
            + self.inputs.iter().flatten().map(|s| words(s)).sum::<u64>()
            + chat.map(|m| words(&m.content)).sum::<u64>()
            + embed.map(|t| words(t)).sum::<u64>()
    }

    /// How long the task may have no subscriber before it is canceled, if the request
    /// said (the OpenAI door's `disconnect_grace_ms`).
    pub fn orphan_timeout_ms(&self) -> Option<u64> {
        self.extras.as_ref().map(|x| x.orphan_timeout_ms)
    }

    /// The tokens the task is expected to produce.
    pub fn expected_out(&self) -> u32 {
        self.expected_tokens
            .map_or(self.max_tokens, |e| e.clamp(1, self.max_tokens))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn body(extra: &str) -> String {
        format!(
            r#"{{"task_id":"6f1c3c7e-2b4a-4c1e-9c1d-1a2b3c4d5e6f","session_id":"0b7e8f6a-1111-4222-8333-944455556666",
            "workload":"completion","model_ref":"m","engine":"llamacpp","ctx":4096,"priority":"interactive",
            "max_tokens":8,"deadline_ms":60000,"prompt":"hello"{extra}}}"#
        )
    }

    fn err(body: &str) -> String {
        TaskSpec::parse(body.as_bytes())
            .unwrap_err()
            .message
            .into_owned()
    }

    #[test]
    fn a_good_request_parses() {
        let s = TaskSpec::parse(
            body(r#","seed":7,"kv_hint":"cold","determinism":"strict""#).as_bytes(),
        )
        .unwrap();
        assert_eq!(s.max_tokens, 8);
        assert_eq!(s.seed, Some(7));
        assert_eq!(s.kv_hint, Some(KvHint::Cold));
    }

    #[test]
    fn every_error_names_its_field() {
        let cases = [
            (body("").replace("\"ctx\":4096", "\"ctx\":0"), "ctx"),
            (body("").replace("\"ctx\":4096", "\"ctx\":-1"), "ctx"),
            (
                body("").replace("\"ctx\":4096", "\"ctx\":99999999999"),
                "ctx",
            ),
            (
                body("").replace("\"max_tokens\":8", "\"max_tokens\":5000"),
                "max_tokens",
            ),
            (
                body("").replace("\"engine\":\"llamacpp\"", "\"engine\":\"gpt\""),
                "engine",
            ),
            (
                body("").replace("\"priority\":\"interactive\"", "\"priority\":1"),
                "priority",
            ),
            (body("").replace("6f1c3c7e-2b4a", "zzzz"), "task_id"),
            (body("").replace(",\"prompt\":\"hello\"", ""), "prompt"),
            (body(r#","colour":"red""#), "colour"),
            (
                body("").replace("\"deadline_ms\":60000", "\"deadline_ms\":0"),
                "deadline_ms",
            ),
            (body("").replace(",\"model_ref\":\"m\"", ""), "model_ref"),
            ("{not json".to_string(), "body"),
            ("[]".to_string(), "body"),
        ];
        for (b, field) in cases {
            let m = err(&b);
            assert!(m.contains(field), "{field:?} not named in {m:?}");
        }
    }

    #[test]
    fn length_limits_count_characters_as_the_contract_says() {
        // Found by schemathesis: 512 two-byte characters were refused as too long.
        let wide = "\u{e9}".repeat(512);
        let b = body("").replace("\"model_ref\":\"m\"", &format!("\"model_ref\":\"{wide}\""));
        assert!(TaskSpec::parse(b.as_bytes()).is_ok());
        let b = body(&format!(
            ",\"sampler_profile_version\":\"{}\"",
            "\u{e9}".repeat(128)
        ));
        assert!(TaskSpec::parse(b.as_bytes()).is_ok());
        let b = body(&format!(
            ",\"sampler_profile_version\":\"{}\"",
            "\u{e9}".repeat(129)
        ));
        assert_eq!(err(&b), "sampler_profile_version: at most 128 characters");
    }

    #[test]
    fn prompts_that_start_alike_have_one_prefix_hash() {
        let spec = |prompt: &str| {
            let mut s = TaskSpec::parse(body("").as_bytes()).unwrap();
            s.prompt = Some(prompt.to_string());
            s
        };
        let a = spec("You are a careful assistant. Question one?");
        let b = spec("You are a careful assistant. Question two?");
        assert_eq!(a.prefix_hash(28), b.prefix_hash(28));
        assert!(a.prefix_hash(28).is_some());
        assert_ne!(
            a.prefix_hash(40),
            b.prefix_hash(40),
            "they differ within 40 bytes"
        );
        assert_eq!(a.prefix_hash(43), None, "shorter than the prefix");
        assert_eq!(a.prefix_hash(0), None, "off");
        // Inputs read as the completion text an engine is sent: one per line.
        let mut c = spec("");
        c.prompt = None;
        c.inputs = Some(vec!["You are a careful".into(), "assistant.".into()]);
        let joined = spec("You are a careful\nassistant.");
        assert_eq!(c.prefix_hash(28), joined.prefix_hash(28));
        assert!(c.prefix_hash(28).is_some());
        // A chat: roles and contents in order; embeddings have none.
        let chat = |first: &str, second: &str| {
            let mut s = spec("");
            let messages = vec![
                ChatMessage {
                    role: crate::generation::Role::System,
                    content: first.into(),
                },
                ChatMessage {
                    role: crate::generation::Role::User,
                    content: second.into(),
                },
            ];
            s.extras = Some(Box::new(Extras {
                chat: Some(messages),
                ..Extras::default()
            }));
            s
        };
        let long = "a long shared system prompt";
        assert_eq!(
            chat(long, "hi").prefix_hash(20),
            chat(long, "ho").prefix_hash(20)
        );
        assert_ne!(
            chat(long, "hi").prefix_hash(20),
            chat("another system prompt!!", "hi").prefix_hash(20)
        );
        // "system\nx\nuser\n" is 14 bytes: 16 reach into the second message's content.
        assert!(chat("x", "hi").prefix_hash(16).is_some());
        assert_ne!(
            chat("x", "hi").prefix_hash(16),
            chat("x", "ho").prefix_hash(16),
            "the messages after the first count"
        );
        let mut e = spec(long);
        e.extras = Some(Box::new(Extras {
            embed: Some(vec![long.into()]),
            ..Extras::default()
        }));
        assert_eq!(e.prefix_hash(4), None);
    }

    #[test]
    fn a_positional_array_is_not_a_task() {
        // Found by fuzzing (task_request): serde read a JSON array as the fields in
        // order, so this was admitted, and `[_{` was refused naming only `[0]`.
        let b = r#"["6f1c3c7e-2b4a-4c1e-9c1d-1a2b3c4d5e6f","0b7e8f6a-1111-4222-8333-944455556666",
            "completion","m","llamacpp",4096,"interactive",8,60000,null,null,null,"hello"]"#;
        assert_eq!(err(b), "body: must be a JSON object");
        assert_eq!(err(r#"[_{k"i{_{"#), "body: must be a JSON object");
    }

    #[test]
    fn bytes_after_a_task_are_refused() {
        // Found by fuzzing (task_request): a valid task followed by anything was admitted.
        assert_eq!(err(&format!("{}W", body(""))), "body: trailing characters");
        assert_eq!(
            err(&format!("{} {}", body(""), body(""))),
            "body: trailing characters"
        );
        // Trailing bytes are a syntax error, reported before validation; a value of
        // the wrong type still names its field.
        let b = body("").replace("\"ctx\":4096", "\"ctx\":0");
        assert_eq!(err(&format!("{b}W")), "body: trailing characters");
        let b = body("").replace("\"ctx\":4096", "\"ctx\":\"x\"");
        assert!(err(&format!("{b}W")).starts_with("ctx: "));
    }

    #[test]
    fn max_tokens_over_ctx_names_the_engine() {
        let b = body("").replace("\"max_tokens\":8", "\"max_tokens\":5000");
        let e = TaskSpec::parse(b.as_bytes()).unwrap_err();
        assert_eq!(e.engine, Some(Engine::Llamacpp));
    }

    #[test]
    fn session_and_engine_are_required_in_a_body() {
        for field in ["session_id", "engine"] {
            let b = body("");
            let start = b.find(&format!("\"{field}\"")).unwrap();
            let end = start + b[start..].find(',').unwrap() + 1;
            let without = format!("{}{}", &b[..start], &b[end..]);
            assert!(err(&without).contains(field), "{field}");
            let null = b.replacen(&b[start..end - 1], &format!("\"{field}\":null"), 1);
            assert!(err(&null).starts_with(field), "{field}: {}", err(&null));
        }
    }

    #[test]
    fn digest_ignores_formatting_not_content() {
        let a = TaskSpec::parse(body("").as_bytes()).unwrap();
        let b = TaskSpec::parse(body("").replace(",", " ,\n").as_bytes()).unwrap();
        assert_eq!(a.digest(), b.digest());
        let c = TaskSpec::parse(body("").replace("hello", "hullo").as_bytes()).unwrap();
        assert_ne!(a.digest(), c.digest());
    }
}

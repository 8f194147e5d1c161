//! What a task asks of an engine: the input (a completion's prompt and inputs, or chat
//! messages) and its sampling parameters, in the engines' own terms. Built once when a
//! task starts, from the task as either front door received it.

use crate::task::{Determinism, TaskSpec};

/// Who speaks in a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// The input of a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A completion: SPEC's `prompt` and `inputs` as the task gave them.
    Completion {
        prompt: Option<String>,
        inputs: Vec<String>,
    },
    /// A chat: the engine applies its own template.
    Chat(Vec<ChatMessage>),
    /// Embeddings of these texts, one vector each (the OpenAI door's `/v1/embeddings`).
    Embed(Vec<String>),
}

impl Input {
    /// Whitespace-separated words of the input, as [`TaskSpec::prompt_tokens`] counts
    /// them (the mock's prompt token count), without building the text.
    pub fn words(&self) -> u64 {
        let words = |s: &str| s.split_whitespace().count() as u64;
        match self {
            Input::Completion { prompt, inputs } => {
                prompt.as_deref().map_or(0, words) + inputs.iter().map(|s| words(s)).sum::<u64>()
            }
            Input::Chat(messages) => messages.iter().map(|m| words(&m.content)).sum(),
            Input::Embed(texts) => texts.iter().map(|t| words(t)).sum(),
        }
    }

    /// The text a completion endpoint is sent: the prompt, else the inputs one per
    /// line.
    pub fn completion_text(&self) -> String {
        match self {
            Input::Completion {
                prompt: Some(p), ..
            } => p.clone(),
            Input::Completion {
                prompt: None,
                inputs,
            } => inputs.join("\n"),
            Input::Chat(messages) => messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            Input::Embed(texts) => texts.join("\n"),
        }
    }
}

/// Sampling parameters, as the engines name them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    pub max_tokens: u32,
    pub seed: Option<i64>,
    /// `Some(0.0)` for `determinism: strict`.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    /// Sent to engines that take it (vLLM, llama.cpp) when the request said.
    pub ignore_eos: Option<bool>,
    /// No limit was asked (an OpenAI chat without `max_tokens`): `max_tokens` is the
    /// room the context leaves and the engine decides when to stop; the mock stops at
    /// its end of sequence, the end of its first sentence, unless `ignore_eos`.
    pub open_ended: bool,
    /// Embeddings: the vectors' length, if the request said (the mock's default is
    /// [`crate::mock::EMBEDDING_DIMENSIONS`]).
    pub dimensions: Option<u32>,
}

impl Sampling {
    /// Whether the mock ends this generation at its end of sequence.
    pub fn stops_at_eos(&self) -> bool {
        self.open_ended && self.ignore_eos != Some(true)
    }
}

/// One generation for an engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The model the pool serves for this task (the task's own when the pool serves
    /// `*`): sent as `model`, and part of the mock's seed.
    pub model: String,
    pub input: Input,
    pub sampling: Sampling,
    /// Request fields orchd does not interpret (OpenAI door), added as they came to the
    /// body sent to an HTTP upstream; a field orchd sets itself is not overridden.
    pub forward: serde_json::Map<String, serde_json::Value>,
}

impl Generation {
    /// The generation a task asks for, on `model`: an OrchQueue task's, or with what
    /// the OpenAI door added (chat messages, sampling, forwarded fields).
    pub fn from_spec(spec: &TaskSpec, model: &str) -> Generation {
        let strict = (spec.determinism == Some(Determinism::Strict)).then_some(0.0);
        let mut g = Generation {
            model: model.to_string(),
            input: Input::Completion {
                prompt: spec.prompt.clone(),
                inputs: spec.inputs.clone().unwrap_or_default(),
            },
            sampling: Sampling {
                max_tokens: spec.max_tokens,
                seed: spec.seed,
                temperature: strict,
                ..Sampling::default()
            },
            forward: serde_json::Map::new(),
        };
        if let Some(x) = &spec.extras {
            if let Some(messages) = &x.chat {
                g.input = Input::Chat(messages.clone());
            }
            if let Some(texts) = &x.embed {
                g.input = Input::Embed(texts.clone());
            }
            let s = &mut g.sampling;
            s.temperature = strict.or(x.temperature);
            s.top_p = x.top_p;
            s.stop.clone_from(&x.stop);
            s.ignore_eos = x.ignore_eos;
            s.open_ended = x.open_ended;
            s.dimensions = x.dimensions;
            g.forward.clone_from(&x.forward);
        }
        g
    }
}

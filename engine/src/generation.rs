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
}

/// One generation for an engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The model the pool serves for this task (the task's own when the pool serves
    /// `*`): sent as `model`, and part of the mock's seed.
    pub model: String,
    pub input: Input,
    pub sampling: Sampling,
}

impl Generation {
    /// The generation an OrchQueue task asks for, on `model`.
    pub fn from_spec(spec: &TaskSpec, model: &str) -> Generation {
        Generation {
            model: model.to_string(),
            input: Input::Completion {
                prompt: spec.prompt.clone(),
                inputs: spec.inputs.clone().unwrap_or_default(),
            },
            sampling: Sampling {
                max_tokens: spec.max_tokens,
                seed: spec.seed,
                temperature: (spec.determinism == Some(Determinism::Strict)).then_some(0.0),
                top_p: None,
                stop: Vec::new(),
            },
        }
    }
}

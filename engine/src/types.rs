//! The closed vocabularies of the API (SPEC section 1, "Enums").

use serde::{Deserialize, Serialize};

/// An inference engine family. A pool runs exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Llamacpp,
    Vllm,
    Tgi,
    Triton,
}

impl Engine {
    pub const ALL: [Engine; 4] = [Engine::Llamacpp, Engine::Vllm, Engine::Tgi, Engine::Triton];

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Llamacpp => "llamacpp",
            Engine::Vllm => "vllm",
            Engine::Tgi => "tgi",
            Engine::Triton => "triton",
        }
    }
}

/// What a task asks the engine to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Completion,
    Embedding,
    Rerank,
}

impl Workload {
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Completion => "completion",
            Workload::Embedding => "embedding",
            Workload::Rerank => "rerank",
        }
    }
}

/// Scheduling class within a pool: interactive tasks run before batch tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Interactive,
    Batch,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }
}

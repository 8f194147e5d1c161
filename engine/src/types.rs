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

/// Why a task was cut short: the `reason` label of `tasks_canceled_total`. Every value
/// is a label; a reason that is not one does not compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// `POST /v1/tasks/{id}/cancel`.
    Client,
    /// Nobody streamed the task for `stream.orphan_timeout_ms`.
    Orphaned,
    /// Its `deadline_ms` passed.
    Deadline,
    /// Evicted from a full `drop-lru` queue.
    DropLru,
    /// Its pool's drain deadline passed.
    Drain,
    /// orchd shut down before it finished.
    Shutdown,
    /// The engine went silent longer than `decode_timeout_ms`.
    Watchdog,
    /// The engine failed (unreachable, refused, died mid-stream).
    Engine,
}

impl CancelReason {
    /// In the order of their label index.
    pub const ALL: [CancelReason; 8] = [
        CancelReason::Client,
        CancelReason::Orphaned,
        CancelReason::Deadline,
        CancelReason::DropLru,
        CancelReason::Drain,
        CancelReason::Shutdown,
        CancelReason::Watchdog,
        CancelReason::Engine,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Client => "client",
            CancelReason::Orphaned => "orphaned",
            CancelReason::Deadline => "deadline",
            CancelReason::DropLru => "drop-lru",
            CancelReason::Drain => "drain",
            CancelReason::Shutdown => "shutdown",
            CancelReason::Watchdog => "watchdog",
            CancelReason::Engine => "engine",
        }
    }

    /// Its place in [`CancelReason::ALL`] (and in per-reason counter arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The state of a model: the `state` label of `model_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelState {
    Ready,
    Loading,
    Draining,
    Drained,
    Failed,
    Retired,
}

impl ModelState {
    pub const ALL: [ModelState; 6] = [
        ModelState::Ready,
        ModelState::Loading,
        ModelState::Draining,
        ModelState::Drained,
        ModelState::Failed,
        ModelState::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Ready => "ready",
            ModelState::Loading => "loading",
            ModelState::Draining => "draining",
            ModelState::Drained => "drained",
            ModelState::Failed => "failed",
            ModelState::Retired => "retired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_has_its_index() {
        for (i, r) in CancelReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{}", r.as_str());
        }
    }
}

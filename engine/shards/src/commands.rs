//! Every message that crosses cores, in one module below its senders and its handlers:
//! the commands of a shard ([`ShardCommand`]) and of the dispatcher
//! ([`DispatcherCommand`]), and the values they carry. Nothing here imports the modules
//! that send or handle them, so no two modules of this crate import each other.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use orchd_engine::config::AdapterConfig;
use orchd_engine::generation::Generation;
use orchd_engine::EngineError;

use orchd_engine::admission::{Admitted, Eta, Outcome, PoolState, SessionView};
use orchd_engine::artifact::{StoreError, Stored};
use orchd_engine::task::TaskSpec;
use orchd_engine::tenant::TenantId;
use orchd_engine::{ApiError, ModelState};

use crate::mesh::{Reply, ShardId};
use crate::metrics::{AdmissionSnapshot, PoolSample};

/// A frame for a subscriber, and whether it is the last one.
pub type FrameMsg = (Bytes, bool);

/// A task admitted by the dispatcher, on its way to its owner shard.
pub struct NewTask {
    pub spec: TaskSpec,
    pub admitted: Admitted,
    pub correlation_id: String,
    pub admitted_at: Instant,
}

/// What a client re-attaching to a task in OpenAI's format needs to render its chunks
/// as its first stream did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendering {
    /// A chat (`chat.completion.chunk`), else a completion (`text_completion`).
    pub chat: bool,
    pub model: String,
    /// Unix seconds; `None` for a task of the OrchQueue door.
    pub created: Option<u64>,
    pub include_usage: bool,
}

/// The answer to a subscription.
#[derive(Debug, PartialEq, Eq)]
pub enum Subscribed {
    /// Frames from the cursor were sent; more follow until the terminal frame.
    Live,
    /// The task has ended and no frame remains after the cursor.
    Ended,
    NotFound,
}

/// Live figures of one pool, for `GET /v1/pools/{id}/health`.
#[derive(Clone, Debug)]
pub struct PoolStats {
    pub queue_depth: u32,
    pub slots_total: u32,
    pub slots_busy: u32,
    pub model_ref: String,
    pub draining: bool,
    /// The version the engine reports (HTTP adapters; a replica set: the first replica
    /// that said), if it said.
    pub reported_version: Option<String>,
    /// The engine answers its health probe (always, for the mock; a replica set: one
    /// replica does).
    pub up: bool,
    /// The pool's engine replicas, in config order.
    pub replicas: Vec<ReplicaStats>,
    /// Admission to first token over the last one to two minutes, ms: (p50, p99, count).
    pub first_token_ms: (f64, f64, u64),
    /// First to last token, same window.
    pub decode_ms: (f64, f64, u64),
}

/// One engine replica of a pool, as its owner sees it.
#[derive(Clone, Debug)]
pub struct ReplicaStats {
    /// `host:port` (`mock` for the mock).
    pub id: String,
    /// It answers its health probe (always, for the mock).
    pub up: bool,
    /// It is being drained: it takes no new task.
    pub draining: bool,
    /// Its drain's deadline passed: what ran there has ended; it stays out until a
    /// reload of its pool.
    pub drained: bool,
    /// Slots it has (the pool's `slots`), and of them busy.
    pub slots: u32,
    pub busy: u32,
    /// The version it reports about itself, if it said.
    pub reported_version: Option<String>,
    /// How long ago its health was last learned, ms (`None`: never probed, the mock).
    pub checked_ms_ago: Option<u64>,
    /// The shard whose core talks to its engine (its tasks' generations run there).
    pub shard: usize,
}

/// A task's generation to run on the shard its replica is homed on, away from its
/// pool's owner (issue 20: a set's replicas are spread over the shards). The owner keeps
/// the task (queue, frames, subscribers, cancel); this shard opens the engine's stream
/// and sends the tokens back ([`ShardCommand::Driven`]).
pub struct Drive {
    pub task: Uuid,
    /// The id its client sent and its tenant, for logs.
    pub shown: Uuid,
    pub tenant: TenantId,
    /// The pool's owner, which hears the tokens and the end.
    pub owner: ShardId,
    /// (pool, replica index) on the owner.
    pub at: (usize, usize),
    /// The replica's id and its engine's config (its one `url`): this shard keeps one
    /// engine client per replica, built from it on first use.
    pub replica: Arc<str>,
    pub engine: Arc<AdapterConfig>,
    pub generation: Generation,
    /// What ends it early without the owner: `max_tokens` and the deadline (the owner
    /// checks both again).
    pub max_tokens: u32,
    pub deadline_at: Instant,
    /// Fires (is dropped) when the task ends on its owner.
    pub stop: oneshot::Receiver<()>,
}

/// How a generation ended, as its driver saw it.
#[derive(Debug)]
pub enum DriveEnd {
    /// The engine said it was done (with its count of the prompt, if it said), or
    /// `max_tokens` was reached.
    Done { prompt_tokens: Option<u64> },
    /// The deadline passed while decoding.
    Deadline,
    /// The engine call failed, before (`streamed: false`) or after the first token.
    Failed { error: EngineError, streamed: bool },
}

/// One token's text and when it arrived from the engine.
pub type TokenAt = (Cow<'static, str>, Instant);

/// Commands a shard executes on its own core.
pub enum ShardCommand {
    /// Read this shard's probes (for `/metrics`).
    Scrape(Reply<ShardSnapshot>),
    /// From the dispatcher: an admitted task of a pool this shard owns.
    Enqueue(Box<NewTask>),
    /// Stream a task's frames from `from` on into `tx`.
    Subscribe {
        task: Uuid,
        from: u64,
        tx: flume::Sender<FrameMsg>,
        reply: Reply<Subscribed>,
    },
    /// How a task's stream looks through the OpenAI door, `None` if unknown.
    Rendering {
        task: Uuid,
        reply: Reply<Option<Rendering>>,
    },
    /// Cancel a task; replies with the tokens it produced, `None` if unknown.
    Cancel {
        task: Uuid,
        reply: Reply<Option<u32>>,
    },
    /// A tenant's stored artifact's document, from the shard that keeps it.
    Artifact {
        tenant: TenantId,
        id: String,
        reply: Reply<Result<Option<Bytes>, StoreError>>,
    },
    /// Store an artifact on its tenant's shelf on the shard that keeps it; replies
    /// with the stored document.
    StoreArtifact {
        tenant: TenantId,
        stored: Stored,
        evictable: bool,
        reply: Option<Reply<Result<Bytes, StoreError>>>,
    },
    /// From the dispatcher: end the pool's tasks `deadline` from now (or at the
    /// earlier deadline of a drain under way); replies with the time left.
    Drain {
        pool: usize,
        deadline: Duration,
        reply: Reply<Duration>,
    },
    /// From the dispatcher: load `model_ref` and switch the pool to it atomically.
    Reload {
        pool: usize,
        model_ref: String,
        done: Reply<Result<(), String>>,
    },
    /// Live figures of a pool this shard owns.
    PoolStats {
        pool: usize,
        reply: Reply<Option<PoolStats>>,
    },
    /// Drains one replica of a pool (issue 20): it takes no new task; its tasks still
    /// running at the deadline end. Replies with the time left, or `None` if the pool has
    /// no such replica.
    DrainReplica {
        pool: usize,
        replica: String,
        deadline: Duration,
        reply: Reply<Option<Duration>>,
    },
    /// From a pool's owner: run a task's generation on its replica's engine here.
    Drive(Box<Drive>),
    /// To a pool's owner, from the shard driving a task (in order, per task): the tokens
    /// read since the last message, then its embeddings and its end once it ended.
    Driven {
        task: Uuid,
        /// (pool, replica index) it runs on.
        at: (usize, usize),
        tokens: Vec<TokenAt>,
        embeddings: Option<Vec<Vec<f32>>>,
        end: Option<DriveEnd>,
    },
}

/// Commands of the dispatcher.
pub enum DispatcherCommand {
    /// Liveness of the dispatcher (for `/readyz`).
    Ping(Reply<()>),
    /// Admit or refuse a task (SPEC order); on admission the task is already on its
    /// way to its owner shard when the reply arrives.
    Admit {
        spec: Box<TaskSpec>,
        correlation_id: String,
        /// The shard the request arrived on: a pool living there is preferred.
        origin: Option<ShardId>,
        reply: Reply<Result<Admitted, ApiError>>,
    },
    /// The owner shard of a known task.
    Locate {
        task: Uuid,
        reply: Reply<Option<ShardId>>,
    },
    /// From an owner: a queued task started.
    Started {
        task: Uuid,
    },
    /// From an owner: its pool's engine went down or came back, or a replica of its
    /// set did; `slots` are the ready replicas' slots.
    PoolUp {
        pool: usize,
        up: bool,
        slots: u32,
    },
    /// From an owner: a draining pool's deadline passed and its tasks ended.
    PoolDrained {
        pool: usize,
    },
    /// From an owner: a task ended; `eta` is its pool's ETA model after it.
    Finished {
        task: Uuid,
        outcome: Outcome,
        eta: Eta,
    },
    Session {
        id: Uuid,
        reply: Reply<SessionView>,
    },
    DeleteSession {
        id: Uuid,
        reply: Reply<()>,
    },
    /// The capabilities document as the pools are now.
    Capabilities {
        reply: Reply<Bytes>,
    },
    /// The models the pools serve now, for `GET /v1/models`.
    Models {
        reply: Reply<Vec<String>>,
    },
    /// Dispatcher-owned series for `/metrics`.
    Scrape {
        reply: Reply<DispatcherSnapshot>,
    },
    /// Index, state and readiness of the pool named `pool`.
    PoolState {
        pool: String,
        reply: Reply<Option<(usize, PoolState, bool)>>,
    },
    /// Close admission to a pool; its tasks have `deadline_ms` to finish. Replies with
    /// the time left once the owner shard holds the deadline.
    Drain {
        pool: String,
        deadline_ms: u64,
        reply: Reply<Result<u64, ApiError>>,
    },
    /// Switch a pool to another model; replies once switched, or rolled back.
    Reload {
        pool: String,
        model_ref: String,
        reply: Reply<Result<String, ApiError>>,
    },
}

/// What the dispatcher contributes to a scrape.
#[derive(Clone, Debug)]
pub struct DispatcherSnapshot {
    /// Every model seen and its state now.
    pub models: Vec<(String, ModelState)>,
    /// Model verifications on reload: [engine][ok, failed].
    pub catalog: [[u64; 2]; 4],
    /// Whether each pool admits tasks now (its state and its engine's health, as
    /// admission sees them), by config index.
    pub pools_ready: Vec<bool>,
}

/// Everything a scrape reads from one shard.
#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    pub http: ProbeSnapshot,
    pub admission: AdmissionSnapshot,
    /// The pools this shard owns.
    pub pools: Vec<PoolSample>,
    pub live_tasks: u64,
    /// CPU time of the shard's thread so far.
    pub cpu_seconds: f64,
    /// Every tenant's counters on this shard, by `TenantId`.
    pub tenants: Vec<crate::metrics::TenantSnapshot>,
}

/// A copy of one shard's HTTP probe, sent across cores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSnapshot {
    pub shard: ShardId,
    pub responses: [u64; 5],
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub connections_refused: u64,
}

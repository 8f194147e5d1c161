//! The engine seam: one trait for whatever runs a task's generation (the mock, an
//! OpenAI-compatible server, llama.cpp's native API), one instance per engine endpoint
//! (so that a pool can hold several replicas), chosen from the config in one place
//! ([`Adapter::from_config`]).
//!
//! An engine opens a stream of [`Piece`]s for a [`Generation`] (a prompt or chat
//! messages with sampling parameters); dropping the stream cancels the generation (an
//! HTTP engine sees its client go and stops). It reports its health, version and the
//! slots it declares, and loads models on reload. Failures are
//! [`orchd_engine::EngineError`], mapped to the error taxonomy beside that type.

mod http;
mod llamacpp;
mod mock;
mod openai;

use std::borrow::Cow;
use std::rc::Rc;
use std::time::Duration;

use uuid::Uuid;

use orchd_engine::config::{AdapterConfig, AdapterKind};
use orchd_engine::generation::Generation;
use orchd_engine::EngineError;

pub use self::http::{fuzzing, HttpEngine, HttpStream};
pub use self::llamacpp::LlamaCpp;
pub use self::mock::{MockEngine, MockStream};
pub use self::openai::OpenAi;

/// Token counts an engine reports at the end of a generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// One piece of a generation.
#[derive(Debug, PartialEq)]
pub enum Piece {
    /// Text of one token (or a few, as the engine sends them); never empty.
    Text(Cow<'static, str>),
    /// The vectors of an embedding request, one per input, in order.
    Embeddings(Vec<Vec<f32>>),
    /// The engine says the generation is complete.
    End(Usage),
}

/// What a health probe learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub up: bool,
    /// The version the engine reports about itself, if it says.
    pub version: Option<String>,
    /// The sequences the engine says it serves at once (llama.cpp's `total_slots`).
    pub slots: Option<u32>,
}

/// A generation being streamed.
#[allow(async_fn_in_trait)] // shard-local futures: never sent to another thread
pub trait TokenStream {
    /// The next piece; `Ok(None)` if the stream ended without the engine saying so.
    async fn next(&mut self) -> Result<Option<Piece>, EngineError>;

    /// Ends a stream the engine completed (after [`Piece::End`]): an HTTP engine's
    /// connection is read to its end and kept for the next task.
    async fn finish(self);
}

/// One engine endpoint, on one shard: its pool's owner (health probes, reloads, and
/// the tasks of a replica homed there) or the shard its replica is homed on.
#[allow(async_fn_in_trait)] // shard-local futures: never sent to another thread
pub trait EngineAdapter {
    type Stream: TokenStream;

    /// Starts a generation for task `task`. An error means nothing was generated.
    async fn open(&self, task: Uuid, generation: &Generation) -> Result<Self::Stream, EngineError>;

    /// How many more times a retriable failure of [`open`](Self::open) is tried.
    fn retries(&self) -> u32;

    /// How often [`health`](Self::health) is probed; `None`: never (always up).
    fn health_interval(&self) -> Option<Duration>;

    async fn health(&self) -> Health;

    /// Loads `model` for a reload; an error leaves the pool on its old model.
    async fn load(&self, model: &str) -> Result<(), String>;
}

/// The engine of a pool, chosen from its config: the one place that knows the kinds.
#[derive(Clone)]
pub enum Adapter {
    Mock(Rc<MockEngine>),
    OpenAi(Rc<HttpEngine<OpenAi>>),
    LlamaCpp(Rc<HttpEngine<LlamaCpp>>),
    /// The configured engine cannot be used (its URL does not resolve): tasks fail
    /// with `POOL_UNAVAILABLE`.
    Unusable(Rc<str>),
}

impl Adapter {
    pub fn from_config(cfg: &AdapterConfig) -> Adapter {
        let made = match cfg.kind {
            AdapterKind::Mock => return Adapter::Mock(Rc::new(MockEngine::new(cfg))),
            AdapterKind::Openai => HttpEngine::new(cfg).map(|e| Adapter::OpenAi(Rc::new(e))),
            AdapterKind::Llamacpp => HttpEngine::new(cfg).map(|e| Adapter::LlamaCpp(Rc::new(e))),
        };
        made.unwrap_or_else(|e| Adapter::Unusable(e.into()))
    }

    /// Nothing but this handle holds the engine (no task is running on it).
    pub fn unused(&self) -> bool {
        match self {
            Adapter::Mock(e) => Rc::strong_count(e) == 1,
            Adapter::OpenAi(e) => Rc::strong_count(e) == 1,
            Adapter::LlamaCpp(e) => Rc::strong_count(e) == 1,
            Adapter::Unusable(_) => true,
        }
    }

    /// How often the engine's health is probed; `None`: never.
    pub fn health_interval(&self) -> Option<Duration> {
        match self {
            Adapter::Mock(e) => e.health_interval(),
            Adapter::OpenAi(e) => e.health_interval(),
            Adapter::LlamaCpp(e) => e.health_interval(),
            Adapter::Unusable(_) => None,
        }
    }

    pub async fn health(&self) -> Health {
        match self {
            Adapter::Mock(e) => e.health().await,
            Adapter::OpenAi(e) => e.health().await,
            Adapter::LlamaCpp(e) => e.health().await,
            Adapter::Unusable(_) => Health::default(),
        }
    }

    pub async fn load(&self, model: &str) -> Result<(), String> {
        match self {
            Adapter::Mock(e) => e.load(model).await,
            Adapter::OpenAi(e) => e.load(model).await,
            Adapter::LlamaCpp(e) => e.load(model).await,
            Adapter::Unusable(why) => Err(format!("the pool's engine is unusable: {why}")),
        }
    }
}

//! What the front end asks of the dispatcher, as typed calls: each builds its command,
//! sends it, and turns a message that did not get through into the client-facing
//! refusal ([`crate::unavailable`]). (What it asks of shards is the same, as methods of
//! [`crate::Shard`].) The http crate never builds a command itself.

use bytes::Bytes;
use uuid::Uuid;

use orchd_engine::admission::{Admitted, PoolState, SessionView};
use orchd_engine::task::TaskSpec;
use orchd_engine::ApiError;

use crate::commands::{DispatcherCommand, DispatcherSnapshot};
use crate::mesh::{unavailable, Mailbox, ShardId};

/// The dispatcher, as a shard's front end reaches it.
pub struct Dispatcher<'a> {
    mailbox: &'a Mailbox<DispatcherCommand>,
    /// The shard asking, if a shard asks.
    origin: Option<ShardId>,
    /// The dispatcher itself, when it runs on the asking shard.
    local: Option<&'a crate::dispatcher::Local>,
}

impl<'a> Dispatcher<'a> {
    pub(crate) fn new(
        mailbox: &'a Mailbox<DispatcherCommand>,
        origin: Option<ShardId>,
        local: Option<&'a crate::dispatcher::Local>,
    ) -> Dispatcher<'a> {
        Dispatcher {
            mailbox,
            origin,
            local,
        }
    }

    /// Answers once the dispatcher serves its mailbox (`/readyz`).
    pub async fn ping(&self) -> Result<(), ApiError> {
        self.mailbox
            .request(DispatcherCommand::Ping)
            .await
            .map_err(unavailable)
    }

    /// Admits or refuses a task (SPEC order), preferring a pool on the asking shard;
    /// a refusal names the task's engine (the pool's, when the task named none).
    pub async fn admit(
        &self,
        spec: TaskSpec,
        correlation_id: String,
    ) -> Result<Admitted, ApiError> {
        let engine = spec.engine;
        let decided = match self.local {
            Some(local) => local.admit(Box::new(spec), correlation_id, self.origin),
            None => self
                .mailbox
                .request(|reply| DispatcherCommand::Admit {
                    spec: Box::new(spec),
                    correlation_id,
                    origin: self.origin,
                    reply,
                })
                .await
                .map_err(unavailable)?,
        };
        decided.map_err(|e| {
            let engine = e.engine.or(engine);
            e.with_engine(engine)
        })
    }

    /// The owner shard of a known task.
    pub async fn locate(&self, task: Uuid) -> Result<Option<ShardId>, ApiError> {
        self.mailbox
            .request(|reply| DispatcherCommand::Locate { task, reply })
            .await
            .map_err(unavailable)
    }

    pub async fn session(&self, id: Uuid) -> Result<SessionView, ApiError> {
        self.mailbox
            .request(|reply| DispatcherCommand::Session { id, reply })
            .await
            .map_err(unavailable)
    }

    pub async fn delete_session(&self, id: Uuid) -> Result<(), ApiError> {
        self.mailbox
            .request(|reply| DispatcherCommand::DeleteSession { id, reply })
            .await
            .map_err(unavailable)
    }

    /// The capabilities document (JSON) as the pools are now.
    pub async fn capabilities(&self) -> Result<Bytes, ApiError> {
        self.mailbox
            .request(|reply| DispatcherCommand::Capabilities { reply })
            .await
            .map_err(unavailable)
    }

    pub async fn scrape(&self) -> Result<DispatcherSnapshot, ApiError> {
        self.mailbox
            .request(|reply| DispatcherCommand::Scrape { reply })
            .await
            .map_err(unavailable)
    }

    /// The models the pools serve now (`GET /v1/models`).
    pub async fn models(&self) -> Result<Vec<String>, ApiError> {
        self.mailbox
            .request(|reply| DispatcherCommand::Models { reply })
            .await
            .map_err(unavailable)
    }

    /// Index, state and readiness of the pool named `pool`.
    pub async fn pool_state(
        &self,
        pool: &str,
    ) -> Result<Option<(usize, PoolState, bool)>, ApiError> {
        self.mailbox
            .request(|reply| DispatcherCommand::PoolState {
                pool: pool.to_string(),
                reply,
            })
            .await
            .map_err(unavailable)
    }

    /// Closes admission to a pool; replies with the time its tasks have left.
    pub async fn drain(&self, pool: &str, deadline_ms: u64) -> Result<u64, ApiError> {
        self.mailbox
            .request(|reply| DispatcherCommand::Drain {
                pool: pool.to_string(),
                deadline_ms,
                reply,
            })
            .await
            .map_err(unavailable)?
    }

    /// Switches a pool to another model; replies with the model once switched.
    pub async fn reload(&self, pool: &str, model_ref: String) -> Result<String, ApiError> {
        self.mailbox
            .request(|reply| DispatcherCommand::Reload {
                pool: pool.to_string(),
                model_ref,
                reply,
            })
            .await
            .map_err(unavailable)?
    }
}

//! What the front end asks of the dispatcher and of the shards, as typed calls: each
//! builds its command, sends it, and turns a message that did not get through into the
//! client-facing refusal ([`crate::unavailable`]). The http crate never builds a
//! command itself.

use bytes::Bytes;
use uuid::Uuid;

use orchd_engine::admission::{Admitted, PoolState, SessionView};
use orchd_engine::artifact::{StoreError, Stored};
use orchd_engine::task::TaskSpec;
use orchd_engine::ApiError;

use crate::commands::{
    DispatcherCommand, DispatcherSnapshot, FrameMsg, PoolStats, ShardCommand, ShardSnapshot,
    Subscribed,
};
use crate::mesh::{unavailable, Mailbox, ShardId};
use crate::shard::Shard;

/// The dispatcher, as a shard's front end reaches it.
pub struct Dispatcher<'a> {
    mailbox: &'a Mailbox<DispatcherCommand>,
}

impl<'a> Dispatcher<'a> {
    pub(crate) fn new(mailbox: &'a Mailbox<DispatcherCommand>) -> Dispatcher<'a> {
        Dispatcher { mailbox }
    }

    /// Answers once the dispatcher serves its mailbox (`/readyz`).
    pub async fn ping(&self) -> Result<(), ApiError> {
        self.mailbox
            .request(DispatcherCommand::Ping)
            .await
            .map_err(unavailable)
    }

    /// Admits or refuses a task (SPEC order); a refusal names the task's engine.
    pub async fn admit(
        &self,
        spec: TaskSpec,
        correlation_id: String,
    ) -> Result<Admitted, ApiError> {
        let engine = spec.engine;
        self.mailbox
            .request(|reply| DispatcherCommand::Admit {
                spec: Box::new(spec),
                correlation_id,
                reply,
            })
            .await
            .map_err(unavailable)?
            .map_err(|e| e.with_engine(engine))
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

/// What the front end asks of shards (this one or a peer).
impl Shard {
    /// Streams task `task`'s frames from `from` on into `tx`, from its owner shard.
    pub async fn subscribe(
        &self,
        owner: ShardId,
        task: Uuid,
        from: u64,
        tx: flume::Sender<FrameMsg>,
    ) -> Result<Subscribed, ApiError> {
        self.invoke_on(owner, |reply| ShardCommand::Subscribe {
            task,
            from,
            tx,
            reply,
        })
        .await
        .map_err(unavailable)
    }

    /// Cancels a task on its owner shard: the tokens it produced, `None` if unknown.
    pub async fn cancel(&self, owner: ShardId, task: Uuid) -> Result<Option<u32>, ApiError> {
        self.invoke_on(owner, |reply| ShardCommand::Cancel { task, reply })
            .await
            .map_err(unavailable)
    }

    /// A stored artifact's document, from the shard that keeps it.
    pub async fn artifact(&self, id: &str) -> Result<Result<Option<Bytes>, StoreError>, ApiError> {
        let keeper = crate::shard_for_artifact(id, self.shard_count());
        self.invoke_on(keeper, |reply| ShardCommand::Artifact {
            id: id.to_string(),
            reply,
        })
        .await
        .map_err(unavailable)
    }

    /// Stores a client's artifact on the shard that keeps it; the stored document.
    pub async fn put_artifact(
        &self,
        stored: Stored,
    ) -> Result<Result<Bytes, StoreError>, ApiError> {
        let keeper = crate::shard_for_artifact(&stored.id, self.shard_count());
        self.invoke_on(keeper, |reply| ShardCommand::StoreArtifact {
            stored,
            evictable: false,
            reply: Some(reply),
        })
        .await
        .map_err(unavailable)
    }

    /// Live figures of pool `pool` (its config index), from its owner shard.
    pub async fn pool_stats(&self, pool: usize) -> Result<Option<PoolStats>, ApiError> {
        let owner = crate::shard_for(pool, self.shard_count());
        self.invoke_on(owner, |reply| ShardCommand::PoolStats { pool, reply })
            .await
            .map_err(unavailable)
    }

    /// Every shard's probes, in shard order (for `/metrics`).
    pub async fn scrape_all(&self) -> Result<Vec<ShardSnapshot>, ApiError> {
        self.map_reduce(ShardCommand::Scrape, Vec::new(), |mut v, s| {
            v.push(s);
            v
        })
        .await
        .map_err(unavailable)
    }
}

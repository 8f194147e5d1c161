//! orchd-shards: the thread-per-core runtime of orchd.
//!
//! Executors, one per shard (pinned by default), plus the dispatcher; bounded mailboxes
//! between them (request/reply to one shard, map-reduce over all), every cross-core message
//! in [`commands`]; each shard's tasks and pools ([`owner`], which decides) carried out by
//! its [`Shard`] (which does the I/O); the engine seam ([`engines`]) and the driver that
//! runs a task's generation on it; shard-local probes ([`metrics`]).
//!
//! Must not depend on: hyper's server or any HTTP routing (the http crate drives a shard
//! through [`Shard`] and the typed [`handle::Dispatcher`]), and glommio outside the
//! [`rt`] module, so that an epoll runtime can replace `rt` alone.

pub mod commands;
mod discover;
mod dispatcher;
mod driver;
pub mod engines;
pub mod handle;
pub mod mesh;
pub mod metrics;
pub mod owner;
mod placement;
pub mod rt;
mod runtime;
mod shard;

pub use commands::{
    DispatcherSnapshot, FrameMsg, PoolStats, ProbeSnapshot, Rendering, ShardSnapshot, Subscribed,
};
pub use mesh::{unavailable, Mailbox, MeshError, Reply, ShardId};
pub use owner::SUBSCRIBER_BUFFER;
pub use placement::{shard_for, shard_for_artifact};
pub use runtime::{resolve_shards, Ready, Runtime, RuntimeOptions, StartError};
pub use shard::{Probe, Shard, QUIESCE_LIMIT};

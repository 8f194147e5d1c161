//! orchd-shards: the thread-per-core runtime of orchd.
//!
//! Pinned glommio executors, one per shard, plus the dispatcher executor; bounded
//! mailboxes between them (request/reply to one shard, map-reduce over all); each
//! shard's local state and probe. As the data plane grows, the per-shard task tables,
//! frame logs and engine drivers live here too.
//!
//! Must not depend on: hyper's server or any HTTP routing (the http crate drives a shard
//! through [`Shard`]), and glommio outside the [`rt`] module, so that an epoll fallback
//! can replace `rt` alone.

mod dispatcher;

pub use dispatcher::DispatcherSnapshot;
pub mod mesh;
pub mod metrics;
pub mod owner;
pub mod rt;
pub mod runtime;
pub mod upstream;

/// The shard that keeps the artifact `id` (a content address, so its digest spreads
/// artifacts evenly).
pub fn shard_for_artifact(id: &str, shards: usize) -> ShardId {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    ShardId((h % shards.max(1) as u64) as usize)
}

/// The shard that owns pool number `pool` (its index in the config): the one place
/// that decides where a pool lives.
pub fn shard_for(pool: usize, shards: usize) -> ShardId {
    ShardId(pool % shards.max(1))
}

pub use mesh::{unavailable, Mailbox, MeshError, Reply, ShardId};
pub use runtime::{
    resolve_shards, DispatcherCommand, ProbeSnapshot, Ready, Runtime, RuntimeOptions, Shard,
    ShardCommand, ShardSnapshot, StartError,
};

//! Where things live: the one place that decides which shard owns a pool and which
//! keeps an artifact.

use crate::mesh::ShardId;

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

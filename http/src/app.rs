//! What every request handler can reach: the process-wide immutable part ([`App`]) and
//! the shard-local part ([`ShardApp`]).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use orchd_engine::Config;
use orchd_shards::{Shard, ShardId};
use uuid::Uuid;

use crate::auth::Keys;

/// Immutable after startup; shared by all shards.
pub(crate) struct App {
    pub config: Config,
    pub keys: Keys,
    /// When this orchd started, in Unix seconds (`created` of `GET /v1/models`).
    pub started_secs: u64,
}

impl App {
    pub fn new(config: Config) -> App {
        let keys = Keys::new(&config.tenants());
        App {
            config,
            keys,
            started_secs: unix_secs(),
        }
    }
}

/// Now, in Unix seconds (OpenAI's `created`).
pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One shard's view: the shared app, the shard itself, and shard-local scratch.
/// Lives on one core.
pub(crate) struct ShardApp {
    pub app: Arc<App>,
    pub shard: Rc<Shard>,
    /// State of a shard-local generator for correlation ids: no syscall, no lock.
    rng: Cell<u64>,
    /// Owner shards of tasks admitted through this shard, so that their streams (most
    /// often asked for on the same connection) skip the dispatcher's lookup. A task's
    /// owner never changes; the map is bounded, oldest out first.
    owners: RefCell<(HashMap<Uuid, ShardId>, VecDeque<Uuid>)>,
}

/// Tasks whose owner a shard remembers.
const OWNERS_REMEMBERED: usize = 4096;

impl ShardApp {
    pub fn new(app: Arc<App>, shard: Rc<Shard>) -> ShardApp {
        let seed = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap());
        ShardApp {
            app,
            shard,
            rng: Cell::new(seed),
            owners: RefCell::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// 64 random bits (wyrand; seeded from the OS once per shard).
    pub fn next_u64(&self) -> u64 {
        let s = self.rng.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.rng.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Remembers the owner shard of a task admitted here.
    pub fn remember_owner(&self, task: Uuid, owner: ShardId) {
        let mut o = self.owners.borrow_mut();
        if o.0.insert(task, owner).is_none() {
            o.1.push_back(task);
            if o.1.len() > OWNERS_REMEMBERED {
                if let Some(old) = o.1.pop_front() {
                    o.0.remove(&old);
                }
            }
        }
    }

    pub fn known_owner(&self, task: &Uuid) -> Option<ShardId> {
        self.owners.borrow().0.get(task).copied()
    }

    /// A fresh UUIDv4 for a request that brought no correlation id.
    pub fn new_uuid(&self) -> uuid::Uuid {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

//! One pool on its owner shard: its queue (tenants' fair shares, interactive before
//! batch within a tenant, FIFO within a class: [`FairQueue`]), its engine replicas and
//! their slots, its ETA model, its drain deadline and its probe — every per-pool truth,
//! in one place.

use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use orchd_engine::admission::Eta;
use orchd_engine::config::{AdapterConfig, PoolConfig, MAX_REPLICAS};
use orchd_engine::task::TaskSpec;

use super::fair::{FairQueue, Share};
use crate::engines::Adapter;
use crate::metrics::{bump, PoolProbe, ReplicaProbe};

/// One engine replica of a pool (a pool with `url` or the mock has one; `urls`, one
/// per URL; issue 20).
pub(crate) struct Replica {
    /// `host:port`, or `mock`.
    pub(crate) id: String,
    /// The same, shared with the shard its tasks run on (see [`Replica::engine_from`]).
    key: Arc<str>,
    /// Its engine client on the owner (health probes, reloads, and the tasks it drives
    /// when it is homed here).
    pub(crate) engine: Adapter,
    /// What its engine client is built from (its one `url`), for another shard.
    pub(crate) config: Arc<AdapterConfig>,
    /// The shard its tasks' generations run on: the owner's, or (a set spread over the
    /// shards) another.
    pub(crate) shard: usize,
    /// It answers its health probe (always true for the mock).
    pub(super) up: bool,
    /// The version it reports about itself, once probed.
    pub(super) reported_version: Option<String>,
    /// When its health was last learned (a probe, or a call that found it down); never
    /// for the mock, which is not probed.
    pub(super) checked_at: Option<Instant>,
    /// Its tasks running now.
    pub(super) busy: u32,
    /// Its slots: the pool's `slots`, or what its engine reports
    /// (`adapter.slots_from_engine`).
    pub(super) slots: u32,
    /// What ran on it (its `replica_id` series).
    pub(super) probe: Rc<ReplicaProbe>,
    /// In the set: always for `url`/`urls`; for `discover`, while DNS lists it (a replica
    /// that left keeps its entry, so its running tasks keep their index, and comes back
    /// into it if its address returns).
    pub(super) present: bool,
    /// Bumped when it comes back into the set: its probe loop runs while this is the
    /// generation it started with.
    pub(super) generation: u32,
    /// Drained (`POST /v1/pools/{id}/drain` with `replica`): no new task from then on;
    /// its tasks still running at this deadline end. Cleared by a reload of the pool.
    pub(super) drain_at: Option<Instant>,
}

impl Replica {
    fn new(cfg: &PoolConfig, id: String, url: Option<String>, shard: usize) -> Replica {
        let mut adapter = cfg.adapter.clone();
        adapter.url = url;
        adapter.urls = Vec::new();
        adapter.discover = None;
        let engine = Adapter::from_config(&adapter);
        if let Adapter::Unusable(why) = &engine {
            tracing::error!(pool = %cfg.id, replica = %id, error = %why, "engine url unusable; its tasks will fail");
        }
        Replica {
            key: Arc::from(id.as_str()),
            id,
            engine,
            config: Arc::new(adapter),
            shard,
            up: true,
            reported_version: None,
            checked_at: None,
            busy: 0,
            slots: cfg.slots,
            probe: Rc::new(ReplicaProbe::default()),
            present: true,
            generation: 0,
            drain_at: None,
        }
    }

    /// Where a task started on it runs its generation, seen from the owner on `here`.
    pub(super) fn engine_from(&self, here: usize) -> super::Engine {
        match self.shard == here {
            true => super::Engine::Here(self.engine.clone()),
            false => super::Engine::On {
                shard: self.shard,
                replica: Arc::clone(&self.key),
                config: Arc::clone(&self.config),
            },
        }
    }

    /// It takes tasks: in the set, answering its probe, not drained, and its URL usable.
    pub(super) fn ready(&self) -> bool {
        self.present
            && self.up
            && self.drain_at.is_none()
            && !matches!(self.engine, Adapter::Unusable(_))
    }
}

/// What a DNS refresh changed in a pool's set.
#[derive(Debug, Default, PartialEq)]
pub(super) struct SetChange {
    /// Replicas new to the set or back in it: their probes are to start.
    pub(super) joined: Vec<usize>,
    pub(super) left: usize,
    /// Addresses beyond the pool's replica limit, not taken.
    pub(super) refused: usize,
}

/// Where a pool's owner is, among how many shards: where its replicas may be homed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place {
    pub(crate) here: usize,
    pub(crate) shards: usize,
}

pub(crate) struct OwnerPool {
    pub(crate) cfg: PoolConfig,
    pub(super) place: Place,
    pub(super) model_ref: String,
    /// When the pool's remaining tasks are ended: a drain's deadline (the one place it
    /// is kept; the dispatcher hears when it passed).
    pub(super) drain_at: Option<Instant>,
    /// The dispatcher was told that `drain_at` passed.
    pub(super) drained: bool,
    pub(super) probe: Rc<PoolProbe>,
    /// In config order (a discovered set: in the order they joined).
    pub(crate) replicas: Vec<Replica>,
    /// The last DNS refresh failed (its warning is logged once per spell).
    pub(super) discovery_failing: bool,
    /// Addresses the last refresh listed beyond the replica limit.
    pub(super) refused_addresses: usize,
    /// What the dispatcher was last told of the pool: (one replica ready, the slots
    /// admission counts, [`OwnerPool::admission_slots`]).
    pub(super) reported: (bool, u32),
    /// Tasks running, on all replicas.
    pub(super) busy: u32,
    pub(super) queue: FairQueue,
    /// A position update of this pool's queue is due (`stream.position_update_ms`).
    pub(super) positions_due: bool,
    /// Observed service times: predictions in metrics frames, and (sent along with
    /// each task's end) the dispatcher's admission decisions.
    pub(super) eta: Eta,
}

impl OwnerPool {
    pub(super) fn new(cfg: &PoolConfig, shares: &[Share], place: Place) -> OwnerPool {
        let mut pool = OwnerPool {
            place,
            reported: (false, 0),
            discovery_failing: false,
            refused_addresses: 0,
            model_ref: cfg.model_ref.clone(),
            drain_at: None,
            drained: false,
            probe: Rc::new(PoolProbe::default()),
            replicas: Vec::new(),
            busy: 0,
            queue: FairQueue::new(shares),
            positions_due: false,
            eta: Eta::new(cfg.adapter.ttft_ms, cfg.adapter.tpot_ms),
            cfg: cfg.clone(),
        };
        for (id, url) in cfg.replicas() {
            let shard = pool.home_shard();
            pool.replicas.push(Replica::new(cfg, id, url, shard));
        }
        // What the dispatcher assumes at start (`PoolMirror::new`): every replica ready.
        let n = pool.replicas.len() as u32;
        pool.reported = (n > 0, cfg.slots * n);
        pool
    }

    /// The shard a joining replica is homed on. A set (`urls`, `discover`) spreads its
    /// replicas over the shards (`adapter.spread_replicas`): each goes to the shard with
    /// the fewest of the set's present replicas, the owner's last among equals, as it
    /// also keeps the set's tasks; a replica keeps its shard for as long as it has its
    /// entry. A pool of one engine (`url`, the mock) runs on its owner.
    fn home_shard(&self) -> usize {
        let Place { here, shards } = self.place;
        if !self.cfg.is_replica_set() || !self.cfg.adapter.spread_replicas || shards < 2 {
            return here;
        }
        let mut homed = vec![0usize; shards];
        for r in self.replicas.iter().filter(|r| r.present) {
            homed[r.shard] += 1;
        }
        (1..=shards)
            .map(|k| (here + k) % shards)
            .min_by_key(|&s| homed[s])
            .unwrap_or(here)
    }

    /// The slots admission should count for the pool: each ready replica's (or its tasks,
    /// when a task moved there made it busier than that), and the tasks still running on
    /// replicas that are not ready (drained, down, gone from DNS), which the dispatcher
    /// counts as running. So a task is told position 0 exactly when a slot is free.
    pub(super) fn admission_slots(&self) -> u32 {
        self.replicas
            .iter()
            .map(|r| match r.ready() {
                true => r.busy.max(r.slots),
                false => r.busy,
            })
            .sum()
    }

    /// What the dispatcher is to hear, if it changed since it last heard: (one replica
    /// ready, [`OwnerPool::admission_slots`]).
    pub(super) fn capacity_changed(&mut self) -> Option<(bool, u32)> {
        let now = (self.up(), self.admission_slots());
        (now != self.reported).then(|| {
            self.reported = now;
            now
        })
    }

    pub(super) fn depth(&self) -> u32 {
        self.queue.len() as u32
    }

    /// Slots of the replicas that take tasks.
    pub(crate) fn slots(&self) -> u32 {
        self.replicas
            .iter()
            .filter(|r| r.ready())
            .map(|r| r.slots)
            .sum()
    }

    /// One replica of the set answers its health probe.
    pub(super) fn up(&self) -> bool {
        self.replicas.iter().any(Replica::ready)
    }

    /// Takes the addresses DNS lists now as the set (`discover`): new ones join (up
    /// until their probe says otherwise), missing ones leave (no new task; their running
    /// tasks go on), returning ones come back; at most [`MAX_REPLICAS`] entries.
    pub(super) fn discovered(&mut self, addrs: &[std::net::SocketAddr]) -> SetChange {
        let mut change = SetChange::default();
        let ids: Vec<String> = addrs.iter().map(std::net::SocketAddr::to_string).collect();
        for r in &mut self.replicas {
            if r.present && !ids.contains(&r.id) {
                r.present = false;
                change.left += 1;
            }
        }
        for id in ids {
            match self.replicas.iter().position(|r| r.id == id) {
                Some(i) if self.replicas[i].present => {}
                Some(i) => {
                    let r = &mut self.replicas[i];
                    r.present = true;
                    r.up = true;
                    r.generation += 1;
                    change.joined.push(i);
                }
                None => {
                    let url = format!("http://{id}");
                    // A replica that left long ago and runs nothing gives its entry up
                    // (its old probe sees the next generation and stops).
                    let idle = self.replicas.iter().position(|r| !r.present && r.busy == 0);
                    let fresh = Replica::new(&self.cfg, id, Some(url), self.home_shard());
                    match idle {
                        _ if self.replicas.len() < MAX_REPLICAS => {
                            self.replicas.push(fresh);
                            change.joined.push(self.replicas.len() - 1);
                        }
                        Some(i) => {
                            let generation = self.replicas[i].generation + 1;
                            self.replicas[i] = Replica {
                                generation,
                                ..fresh
                            };
                            change.joined.push(i);
                        }
                        None => change.refused += 1,
                    }
                }
            }
        }
        change
    }

    /// The version the pool's engine reports: the first replica's that said.
    pub(super) fn reported_version(&self) -> Option<&str> {
        self.replicas
            .iter()
            .find_map(|r| r.reported_version.as_deref())
    }

    /// What routes `spec` among the replicas: its session; else the start of its
    /// prompt (`adapter.prefix_bytes`, when the pool has several replicas and the prompt
    /// is that long); else nothing.
    pub(super) fn affinity(&self, spec: &TaskSpec) -> Affinity {
        if let Some(s) = spec.session_id {
            return Affinity::Session(s);
        }
        if self.replicas.len() < 2 {
            return Affinity::None;
        }
        spec.prefix_hash(self.cfg.adapter.prefix_bytes as usize)
            .map_or(Affinity::None, Affinity::Prefix)
    }

    /// The replica a task with `affinity` takes now, if one has a free slot: with a
    /// session or a prompt prefix, the first by rendezvous weight (a hash of it and the
    /// replica id) among the ready replicas with a free slot, so a session's tasks (and
    /// prompts that start alike) stay on one replica while it has room and move to the
    /// same next one when it has none or is down; without, the ready replica with the
    /// most free slots.
    pub(super) fn pick(&self, affinity: Affinity) -> Option<usize> {
        self.choose(affinity, |r| r.ready() && r.busy < r.slots)
    }

    /// The replica a task with `affinity` would take if every replica had room: its own
    /// (the first by rendezvous weight among the ready ones). `None` without an affinity.
    pub(super) fn home(&self, affinity: Affinity) -> Option<usize> {
        match affinity {
            Affinity::None => None,
            _ => self.choose(affinity, Replica::ready),
        }
    }

    /// Counts a task started on `replica` (a set's routing series): what chose it, and
    /// whether it is away from its own replica.
    pub(super) fn count_routed(&self, affinity: Affinity, replica: usize) {
        let by = match affinity {
            Affinity::Session(_) => 0,
            Affinity::Prefix(_) => 1,
            Affinity::None => 2,
        };
        bump(&self.probe.routed[by]);
        // With one replica a task is always on its own (no weight to compute).
        if by < 2 && self.replicas.len() > 1 && self.home(affinity) != Some(replica) {
            bump(&self.probe.affinity_missed[by]);
        }
    }

    fn choose(&self, affinity: Affinity, eligible: impl Fn(&Replica) -> bool) -> Option<usize> {
        let candidates = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| eligible(r));
        match affinity {
            Affinity::Session(s) => candidates
                .max_by_key(|(_, r)| weight(s, &r.id))
                .map(|(i, _)| i),
            Affinity::Prefix(h) => candidates
                .max_by_key(|(_, r)| weight(h, &r.id))
                .map(|(i, _)| i),
            Affinity::None => candidates
                .max_by_key(|(i, r)| (r.slots - r.busy, std::cmp::Reverse(*i)))
                .map(|(i, _)| i),
        }
    }

    /// The ready replica with the fewest tasks, full or not (the first of equals).
    pub(super) fn least_busy(&self) -> Option<usize> {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.ready())
            .min_by_key(|(i, r)| (r.busy, *i))
            .map(|(i, _)| i)
    }

    /// Starts (or keeps the earlier of) a drain deadline; returns the time left.
    pub(super) fn drain(
        &mut self,
        deadline: std::time::Duration,
        now: Instant,
    ) -> std::time::Duration {
        let at = now + deadline;
        let at = match self.drain_at {
            // A drain under way keeps its earlier deadline.
            Some(old) if !self.drained => old.min(at),
            // A new drain (or one after the last has passed) starts afresh.
            _ => at,
        };
        self.drain_at = Some(at);
        self.drained = false;
        at.saturating_duration_since(now)
    }
}

/// What keeps a task's replica: its session, or the hash of its prompt's start
/// ([`TaskSpec::prefix_hash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Affinity {
    Session(Uuid),
    Prefix(u64),
    None,
}

/// A session's (or a prefix's) rendezvous weight for a replica: the same on every run
/// and every orchd (SipHash with fixed keys), so two instances send a session to the
/// same replica.
fn weight(key: impl Hash, replica: &str) -> u64 {
    #[allow(deprecated)] // SipHasher: fixed keys, stable across runs, as wanted here
    let mut h = std::hash::SipHasher::new();
    key.hash(&mut h);
    replica.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchd_engine::config::{AdapterKind, Config};

    fn pool(replicas: usize, slots: u32) -> OwnerPool {
        let mut c = Config::default();
        let p = &mut c.pools[0];
        p.slots = slots;
        p.adapter.kind = AdapterKind::Openai;
        p.adapter.urls = (0..replicas)
            .map(|i| format!("http://127.0.0.{}:8080", i + 2))
            .collect();
        OwnerPool::new(
            p,
            &[Share {
                weight: 1,
                max_running: 0,
            }],
            Place { here: 0, shards: 1 },
        )
    }

    #[test]
    fn a_session_stays_on_its_replica_and_moves_when_it_is_full_or_down() {
        let mut p = pool(3, 1);
        let s = Uuid::from_u128(7);
        let home = p.pick(Affinity::Session(s)).unwrap();
        assert_eq!(
            p.pick(Affinity::Session(s)),
            Some(home),
            "the same replica every time"
        );
        p.replicas[home].busy = 1;
        let next = p.pick(Affinity::Session(s)).unwrap();
        assert_ne!(next, home, "a full replica is passed over");
        p.replicas[home].busy = 0;
        p.replicas[home].up = false;
        assert_eq!(
            p.pick(Affinity::Session(s)),
            Some(next),
            "a down one too, for the same next one"
        );
        assert_eq!(p.slots(), 2);
        for r in &mut p.replicas {
            r.up = false;
        }
        assert_eq!(p.pick(Affinity::Session(s)), None);
    }

    #[test]
    fn sessions_spread_over_the_replicas() {
        let p = pool(3, 4);
        let mut used = [0; 3];
        for i in 0..300u128 {
            used[p
                .pick(Affinity::Session(Uuid::from_u128(i * 7919)))
                .unwrap()] += 1;
        }
        assert!(used.iter().all(|&n| n > 60), "{used:?}");
    }

    #[test]
    fn prompts_that_start_alike_meet_on_one_replica() {
        let mut p = pool(3, 2);
        let task = |prompt: String, session: bool| {
            let b = r#"{"task_id":"6f1c3c7e-2b4a-4c1e-9c1d-1a2b3c4d5e6f","session_id":"0b7e8f6a-1111-4222-8333-944455556666",
                "workload":"completion","model_ref":"m","engine":"llamacpp","ctx":4096,"priority":"interactive",
                "max_tokens":8,"deadline_ms":60000,"prompt":"x"}"#;
            let mut s = TaskSpec::parse(b.as_bytes()).unwrap();
            if !session {
                s.session_id = None;
            }
            s.prompt = Some(prompt);
            s
        };
        let system = |k: usize| format!("{k:03} {}", "shared instructions ".repeat(20));
        // One prefix, whatever follows it: one replica.
        let a = p.affinity(&task(system(1) + "question one", false));
        let b = p.affinity(&task(system(1) + "a different question", false));
        assert!(matches!(a, Affinity::Prefix(_)));
        assert_eq!(a, b);
        let home = p.pick(a).unwrap();
        assert_eq!(p.pick(b), Some(home));
        // Many prefixes spread over the replicas.
        let mut used = [0; 3];
        for k in 0..60 {
            used[p.pick(p.affinity(&task(system(k), false))).unwrap()] += 1;
        }
        assert!(used.iter().all(|&n| n > 8), "{used:?}");
        // A full replica passes its prefixes to the same next one.
        p.replicas[home].busy = 2;
        let next = p.pick(a).unwrap();
        assert_ne!(next, home);
        assert_eq!(p.home(a), Some(home), "still its own replica, full or not");
        p.count_routed(a, next);
        p.count_routed(Affinity::None, next);
        assert_eq!(p.probe.routed[1].get(), 1);
        assert_eq!(p.probe.routed[2].get(), 1);
        assert_eq!(p.probe.affinity_missed[1].get(), 1, "away from its own");
        p.count_routed(a, home);
        assert_eq!(p.probe.affinity_missed[1].get(), 1);
        assert_eq!(p.pick(b), Some(next));
        // A session routes by itself; a short prompt, or prefixes off, by free slots.
        let s = task(system(1), true);
        assert_eq!(p.affinity(&s), Affinity::Session(s.session_id.unwrap()));
        assert_eq!(p.affinity(&task("short".into(), false)), Affinity::None);
        p.cfg.adapter.prefix_bytes = 0;
        assert_eq!(p.affinity(&task(system(1), false)), Affinity::None);
        // One replica: nothing to choose.
        let mut one = pool(1, 2);
        one.cfg.adapter.prefix_bytes = 16;
        assert_eq!(one.affinity(&task(system(1), false)), Affinity::None);
    }

    #[test]
    fn without_a_session_the_most_free_slots() {
        let mut p = pool(3, 4);
        p.replicas[0].busy = 3;
        p.replicas[1].busy = 1;
        p.replicas[2].busy = 2;
        assert_eq!(p.pick(Affinity::None), Some(1));
        p.replicas[1].busy = 2;
        assert_eq!(p.pick(Affinity::None), Some(1), "a tie goes to the first");
        for r in &mut p.replicas {
            r.busy = 4;
        }
        assert_eq!(p.pick(Affinity::None), None, "all full");
        p.replicas[2].busy = 5;
        p.replicas[0].up = false;
        assert_eq!(
            p.least_busy(),
            Some(1),
            "a move may go to a full one, never a down one"
        );
    }
}

#[cfg(test)]
mod discovery_tests {
    use super::*;
    use orchd_engine::config::{AdapterKind, Config};
    use std::net::SocketAddr;

    fn discovering() -> OwnerPool {
        let mut c = Config::default();
        let p = &mut c.pools[0];
        p.slots = 2;
        p.adapter.kind = AdapterKind::Llamacpp;
        p.adapter.discover = Some("dns://engines.test:8080".into());
        OwnerPool::new(
            p,
            &[Share {
                weight: 1,
                max_running: 0,
            }],
            Place { here: 0, shards: 1 },
        )
    }

    fn at(hosts: &[u8]) -> Vec<SocketAddr> {
        hosts
            .iter()
            .map(|h| SocketAddr::from(([127, 0, 0, *h], 8080)))
            .collect()
    }

    #[test]
    fn the_set_follows_dns_and_keeps_each_replicas_index() {
        let mut p = discovering();
        assert_eq!((p.replicas.len(), p.slots(), p.up()), (0, 0, false));
        let c = p.discovered(&at(&[2, 3, 4]));
        assert_eq!((c.joined, c.left), (vec![0, 1, 2], 0));
        assert_eq!(p.slots(), 6);
        assert_eq!(p.replicas[1].id, "127.0.0.3:8080");
        // .3 leaves; .5 joins: .3 keeps its index (its running tasks count on it).
        p.replicas[1].busy = 1;
        let c = p.discovered(&at(&[2, 4, 5]));
        assert_eq!((c.joined, c.left), (vec![3], 1));
        assert!(!p.replicas[1].present);
        assert_eq!(p.slots(), 6);
        for i in 0..100u128 {
            assert_ne!(
                p.pick(Affinity::Session(uuid::Uuid::from_u128(i))),
                Some(1),
                "a replica that left takes no task"
            );
        }
        // .3 comes back, with a new generation for its probe.
        let c = p.discovered(&at(&[2, 3, 4, 5]));
        assert_eq!((c.joined, c.left), (vec![1], 0));
        assert_eq!(p.replicas[1].generation, 1);
        assert_eq!(p.slots(), 8);
        // Nothing listed: nothing takes tasks.
        assert_eq!(p.discovered(&[]).left, 4);
        assert_eq!((p.slots(), p.up()), (0, false));
    }

    #[test]
    fn a_set_is_spread_over_the_shards_and_a_replica_keeps_its_shard() {
        let mut p = discovering();
        p.place = Place { here: 1, shards: 3 };
        p.discovered(&at(&[2, 3, 4, 5]));
        let shards = |p: &OwnerPool| p.replicas.iter().map(|r| r.shard).collect::<Vec<_>>();
        // The owner (shard 1) last among equals.
        assert_eq!(shards(&p), vec![2, 0, 1, 2]);
        // .3 leaves, .6 joins: to the shard left with the fewest; the others stay.
        p.discovered(&at(&[2, 4, 5, 6]));
        assert_eq!(shards(&p), vec![2, 0, 1, 2, 0]);
        // .3 comes back: to where it was.
        p.discovered(&at(&[2, 3, 4, 5, 6]));
        assert_eq!(shards(&p)[1], 0);
        // Off, or one shard: everything on the owner.
        let mut off = discovering();
        off.place = p.place;
        off.cfg.adapter.spread_replicas = false;
        off.discovered(&at(&[2, 3, 4]));
        assert_eq!(shards(&off), vec![1, 1, 1]);
        let mut one = discovering();
        one.discovered(&at(&[2, 3]));
        assert_eq!(shards(&one), vec![0, 0]);
    }

    #[test]
    fn a_pool_of_one_engine_runs_on_its_owner() {
        let mut c = Config::default();
        let p = &mut c.pools[0];
        p.adapter.kind = AdapterKind::Openai;
        p.adapter.url = Some("http://127.0.0.2:8080".into());
        let share = Share {
            weight: 1,
            max_running: 0,
        };
        let place = Place { here: 1, shards: 2 };
        let pool = OwnerPool::new(p, &[share], place);
        assert_eq!(pool.replicas[0].shard, 1);
        assert!(matches!(
            pool.replicas[0].engine_from(1),
            crate::owner::Engine::Here(_)
        ));
        p.adapter.url = None;
        p.adapter.urls = vec![
            "http://127.0.0.2:8080".into(),
            "http://127.0.0.3:8080".into(),
        ];
        let set = OwnerPool::new(p, &[share], place);
        assert_eq!(
            set.replicas.iter().map(|r| r.shard).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(matches!(
            set.replicas[0].engine_from(1),
            crate::owner::Engine::On { shard: 0, .. }
        ));
    }

    #[test]
    fn at_most_max_replicas_at_once_and_idle_entries_of_gone_ones_are_reused() {
        let mut p = discovering();
        p.place = Place { here: 0, shards: 2 };
        // Present replicas by the shard they are homed on.
        let homed = |p: &OwnerPool| {
            let mut n = [0usize; 2];
            for r in p.replicas.iter().filter(|r| r.present) {
                n[r.shard] += 1;
            }
            n
        };
        let addr = |i: u16| SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 8080));
        let many: Vec<SocketAddr> = (0..MAX_REPLICAS as u16 + 5).map(addr).collect();
        let c = p.discovered(&many);
        assert_eq!((c.joined.len(), c.refused), (MAX_REPLICAS, 5));
        assert_eq!(homed(&p), [MAX_REPLICAS / 2; 2]);
        // A rollout: every address new. The old entries left and run nothing: reused.
        p.replicas[0].busy = 1; // one still runs a task: its entry stays
        let next: Vec<SocketAddr> = (1000..1000 + MAX_REPLICAS as u16).map(addr).collect();
        let c = p.discovered(&next);
        assert_eq!(
            (c.left, c.joined.len(), c.refused),
            (MAX_REPLICAS, MAX_REPLICAS - 1, 1)
        );
        assert_eq!(p.replicas.len(), MAX_REPLICAS);
        assert!(!p.replicas[0].present);
        assert_eq!(
            p.replicas[1].generation, 1,
            "a reused entry's old probe stops"
        );
        // The set stays balanced over the shards.
        let [a, b] = homed(&p);
        assert_eq!(a + b, MAX_REPLICAS - 1);
        assert!(a.abs_diff(b) <= 1, "{a} / {b}");
    }

    #[test]
    fn admission_counts_the_tasks_on_replicas_that_are_not_ready() {
        let mut p = discovering();
        p.discovered(&at(&[2, 3]));
        assert_eq!(p.admission_slots(), 4);
        // .3 is drained with one task still running: admission counts 2 + 1.
        p.replicas[1].busy = 1;
        p.replicas[1].drain_at = Some(Instant::now());
        assert_eq!((p.slots(), p.admission_slots()), (2, 3));
        // A task moved onto a full .2 makes it busier than its slots.
        p.replicas[0].busy = 3;
        assert_eq!(p.admission_slots(), 4);
        p.replicas[1].busy = 0;
        assert_eq!(p.capacity_changed(), Some((true, 3)));
        assert_eq!(p.capacity_changed(), None, "told once");
    }
}

//! The owner side of tasks: each pool lives on one shard ([`crate::placement::shard_for`]), which
//! keeps the pool's queue, slots, ETA model and drain deadline ([`pool`]), every task's
//! frame log and subscribers ([`task`]), and decides what happens to them: admitted
//! tasks queue and start (`queue.rs`), tasks end with one terminal frame (`end.rs`).
//!
//! The owner decides and returns what to do ([`Effects`]: drivers to start, notices for
//! the dispatcher, transcripts to store, position updates to schedule); the shard
//! carries it out (`crate::shard`). It does no I/O and never reaches back into its
//! shard, so nothing it calls can re-enter its `RefCell`.
//!
//! Everything that touches a task (tokens, cancel, deadlines, orphan checks) runs on
//! this one thread, in order: that is what makes cancel race-free. Each frame is
//! encoded once into `Bytes`; subscribers (on any shard) get clones over bounded
//! channels. A subscriber whose channel is full is dropped, never waited for: it
//! drains what it has and subscribes again from its cursor, so a slow client never
//! blocks the shard.

mod end;
mod fair;
pub(crate) mod pool;
mod queue;
pub(crate) mod task;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use orchd_engine::artifact::Stored;
use orchd_engine::config::{AdapterConfig, Config, StreamConfig};
use orchd_engine::generation::Generation;
use orchd_engine::tenant::TenantId;
use orchd_engine::{CancelReason, ErrorKind};

use self::fair::Share;
use self::pool::{OwnerPool, Place};
use self::task::{State, Step, TaskRun, Terminal};
use crate::commands::{
    DispatcherCommand, DriveEnd, FrameMsg, PoolStats, Rendering, ReplicaStats, Subscribed,
};
use crate::engines::{Adapter, Health};
use crate::metrics::{bump, PoolSample, ReplicaSample, TenantProbe, RECENT_WINDOW};

/// A pool's DNS discovery, as its owner shard runs it.
pub(crate) struct Discovery {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) server: Option<std::net::SocketAddr>,
    pub(crate) every: Duration,
}

/// Frames a subscriber may have in flight before it is dropped (and resubscribes).
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// A task that got a slot: its driver is to be started.
pub(crate) struct Start {
    pub(crate) task: Rc<RefCell<TaskRun>>,
    pub(crate) pool: usize,
    /// The replica of the pool it runs on.
    pub(crate) replica: usize,
    pub(crate) engine: Engine,
    pub(crate) generation: Generation,
    /// Fires (is dropped) when the task ends elsewhere.
    pub(crate) stop: oneshot::Receiver<()>,
}

/// Where a started task's generation runs: on the owner, or on the shard its replica
/// is homed on ([`pool::Replica::shard`]).
pub(crate) enum Engine {
    Here(Adapter),
    On {
        shard: usize,
        replica: Arc<str>,
        config: Arc<AdapterConfig>,
    },
}

/// What the owner decided, for its shard to carry out.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) starts: Vec<Start>,
    /// In order.
    pub(crate) notices: Vec<DispatcherCommand>,
    /// Transcripts of ended tasks with their tenants, for the shards that keep their
    /// ids.
    pub(crate) transcripts: Vec<(TenantId, Stored)>,
    /// Pools whose queued tasks are to hear their new places after this long.
    pub(crate) position_updates: Vec<(usize, Duration)>,
    /// Replicas whose health probes are to start: (pool, replica, generation, engine).
    pub(crate) probes: Vec<(usize, usize, u32, Adapter)>,
}

/// One shard's tasks and pools. Lives on its shard; reached through its mailbox.
pub struct Owner {
    pools: HashMap<usize, OwnerPool>,
    /// Every tenant's counters on this shard, in [`TenantId`] order.
    tenants: Vec<Rc<TenantProbe>>,
    tasks: HashMap<Uuid, Rc<RefCell<TaskRun>>>,
    retained: VecDeque<(Instant, Uuid)>,
    rotated_at: Instant,
    stream: StreamConfig,
    /// The OpenAI door's tasks are orphaned sooner: the sweep runs often enough for it.
    disconnect_grace_ms: u64,
    fx: Effects,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Owner {
    pub(crate) fn new(
        config: &Config,
        shard: usize,
        shards: usize,
        tenants: Vec<Rc<TenantProbe>>,
    ) -> Owner {
        let shares: Vec<Share> = config
            .tenants()
            .iter()
            .map(|t| Share {
                weight: t.weight,
                max_running: t.max_running,
            })
            .collect();
        let pools = config
            .pools
            .iter()
            .enumerate()
            .filter(|(i, _)| crate::placement::shard_for(*i, shards).0 == shard)
            .map(|(i, p)| {
                let place = Place {
                    here: shard,
                    shards,
                };
                (i, OwnerPool::new(p, &shares, place))
            })
            .collect();
        Owner {
            pools,
            tenants,
            tasks: HashMap::new(),
            retained: VecDeque::new(),
            rotated_at: Instant::now(),
            stream: config.stream.clone(),
            disconnect_grace_ms: config.openai.disconnect_grace_ms,
            fx: Effects::default(),
        }
    }

    /// What was decided since the last call, for the shard to carry out.
    pub(crate) fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    /// Live figures of a pool this shard owns.
    pub fn pool_stats(&self, pool: usize) -> Option<PoolStats> {
        let p = self.pools.get(&pool)?;
        let (first_token_ms, decode_ms) = p.probe.recent();
        Some(PoolStats {
            queue_depth: p.depth(),
            slots_total: p.slots(),
            slots_busy: p.busy,
            model_ref: p.model_ref.clone(),
            draining: p.drain_at.is_some(),
            reported_version: p.reported_version().map(str::to_string),
            up: p.up(),
            // The set as it is now: a replica that left DNS's answer is not in it.
            replicas: p
                .replicas
                .iter()
                .filter(|r| r.present)
                .map(|r| ReplicaStats {
                    id: r.id.clone(),
                    up: r.up,
                    draining: r.drain_at.is_some(),
                    drained: r.drain_at.is_some_and(|at| Instant::now() >= at),
                    slots: r.slots,
                    busy: r.busy,
                    reported_version: r.reported_version.clone(),
                    checked_ms_ago: r.checked_at.map(|t| ms(t.elapsed())),
                    shard: r.shard,
                })
                .collect(),
            first_token_ms,
            decode_ms,
        })
    }

    /// One pool as a scrape sees it. The mock engine reports simulated device figures:
    /// each busy slot holds its task's KV cache, so cache use and utilization are the
    /// busy share of the slots, and device memory is the KV bytes of the running tasks.
    pub fn pool_sample(&self, pool: usize) -> Option<PoolSample> {
        let p = self.pools.get(&pool)?;
        // KV tokens of the running tasks, by replica.
        let mut kv = vec![0u64; p.replicas.len()];
        for t in self.tasks.values() {
            let t = t.borrow();
            if t.state == State::Running && t.admitted.pool == pool {
                if let Some(k) = t.replica.and_then(|r| kv.get_mut(r)) {
                    *k += t.prompt_tokens + u64::from(t.tokens_out);
                }
            }
        }
        let per_token = orchd_engine::admission::KV_BYTES_PER_TOKEN;
        let replicas = p
            .replicas
            .iter()
            .zip(&kv)
            .map(|(r, kv)| ReplicaSample {
                id: r.id.clone(),
                started: [r.probe.started[0].get(), r.probe.started[1].get()],
                canceled: std::array::from_fn(|i| r.probe.canceled[i].get()),
                tokens_in: r.probe.tokens_in.get(),
                tokens_out: r.probe.tokens_out.get(),
                busy_share: f64::from(r.busy) / f64::from(r.slots),
                vram_used_bytes: kv * per_token,
            })
            .collect();
        Some(PoolSample {
            pool,
            queue_depth: [p.queue.len_of(0) as u64, p.queue.len_of(1) as u64],
            slots_busy: p.busy,
            slots_total: p.slots(),
            probe: p.probe.snapshot(),
            replicas,
        })
    }

    /// The pools this shard owns, by config index.
    pub fn pool_indexes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.pools.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The engine replicas of this shard's pools that are probed: (pool, replica,
    /// generation, engine).
    pub(crate) fn probed_engines(&self) -> Vec<(usize, usize, u32, Adapter)> {
        self.pools
            .iter()
            .flat_map(|(i, p)| {
                p.replicas
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.engine.health_interval().is_some())
                    .map(|(j, r)| (*i, j, r.generation, r.engine.clone()))
            })
            .collect()
    }

    /// A replica's probe started at `generation` is still its probe (the replica has
    /// not left the set, nor come back into it since).
    pub(crate) fn probe_current(&self, pool: usize, replica: usize, generation: u32) -> bool {
        self.pools
            .get(&pool)
            .and_then(|p| p.replicas.get(replica))
            .is_some_and(|r| r.present && r.generation == generation)
    }

    /// This shard's pools that discover their replicas through DNS: (pool, name, port,
    /// the DNS server to ask, how often).
    pub(crate) fn discovering(&self) -> Vec<(usize, Discovery)> {
        self.pools
            .iter()
            .filter_map(|(i, p)| {
                let a = &p.cfg.adapter;
                let d = orchd_engine::config::parse_discover(a.discover.as_deref()?).ok()?;
                Some((
                    *i,
                    Discovery {
                        name: d.name,
                        port: d.port,
                        server: a.resolver.as_deref().and_then(|r| r.parse().ok()),
                        every: Duration::from_millis(a.discover_interval_ms),
                    },
                ))
            })
            .collect()
    }

    /// What a DNS refresh of `pool` found: the addresses listed now (the set follows
    /// them), or why there was no answer (the set stays as it is).
    pub(crate) fn discovered(
        &mut self,
        pool: usize,
        found: Result<Vec<std::net::SocketAddr>, String>,
    ) {
        let Some(p) = self.pools.get_mut(&pool) else {
            return;
        };
        let addrs = match found {
            Ok(addrs) => addrs,
            Err(why) => {
                bump(&p.probe.discovery[1]);
                // Once per spell of failures (refreshes may come every 100 ms).
                if !p.discovery_failing {
                    p.discovery_failing = true;
                    tracing::warn!(pool = %p.cfg.id, error = %why, "replica discovery failed; the set is kept until DNS answers");
                }
                return;
            }
        };
        bump(&p.probe.discovery[0]);
        if std::mem::take(&mut p.discovery_failing) {
            tracing::info!(pool = %p.cfg.id, "replica discovery answers again");
        }
        let before = (p.up(), p.slots());
        let change = p.discovered(&addrs);
        if change.refused > 0 && change.refused != p.refused_addresses {
            tracing::warn!(pool = %p.cfg.id, refused = change.refused, limit = orchd_engine::config::MAX_REPLICAS, "more addresses than a pool's replica limit; the rest are not used");
        }
        p.refused_addresses = change.refused;
        p.probe.replica_changes[0]
            .set(p.probe.replica_changes[0].get() + change.joined.len() as u64);
        p.probe.replica_changes[1].set(p.probe.replica_changes[1].get() + change.left as u64);
        for &j in &change.joined {
            let r = &p.replicas[j];
            tracing::info!(pool = %p.cfg.id, replica = %r.id, "replica joined");
            self.fx
                .probes
                .push((pool, j, r.generation, r.engine.clone()));
        }
        if change.left > 0 {
            tracing::info!(pool = %p.cfg.id, left = change.left, "replicas left");
        }
        let more = p.slots() > before.1;
        self.report_capacity(pool);
        if more {
            self.pump(pool, Instant::now());
        }
    }

    /// The engines of a pool's replicas in its set (a URL that is unusable left out),
    /// for a reload; `None` if the pool is not on this shard.
    pub(crate) fn engines(&self, pool: usize) -> Option<Vec<Adapter>> {
        let p = self.pools.get(&pool)?;
        let usable = |r: &&pool::Replica| r.present && !matches!(r.engine, Adapter::Unusable(_));
        Some(
            p.replicas
                .iter()
                .filter(usable)
                .map(|r| r.engine.clone())
                .collect(),
        )
    }

    /// Records what a replica's health probe (or a failed call) learned. A replica
    /// that is down takes no task; the dispatcher hears when the pool's ready slots
    /// change, so that admission routes around a pool with none.
    pub(crate) fn set_health(&mut self, pool: usize, replica: usize, health: Health) {
        let Some(p) = self.pools.get_mut(&pool) else {
            return;
        };
        if replica >= p.replicas.len() {
            return;
        }
        let slots_before = p.slots();
        let from_engine = p.cfg.adapter.slots_from_engine;
        let r = &mut p.replicas[replica];
        r.checked_at = Some(Instant::now());
        if let Some(v) = health.version {
            r.reported_version = Some(v);
        }
        // The engine says how many sequences it runs at once: its slots, if asked to.
        let said = health.slots.filter(|_| from_engine);
        if let Some(n) = said.map(|n| n.clamp(1, orchd_engine::config::MAX_SLOTS)) {
            if n != r.slots {
                tracing::info!(pool = %p.cfg.id, replica = %r.id, from = r.slots, to = n, "replica slots as its engine reports");
                r.slots = n;
            }
        }
        if r.up != health.up {
            r.up = health.up;
            // A replica that left the set: its health no longer counts.
            if r.present {
                tracing::warn!(pool = %p.cfg.id, replica = %r.id, up = health.up, slots = ?health.slots, "engine health changed");
            }
        }
        let grew = p.slots() > slots_before;
        self.report_capacity(pool);
        // A replica that came back (or has more slots) takes waiting tasks.
        if grew {
            self.pump(pool, Instant::now());
        }
    }

    /// Ends the pool's tasks (running and queued) `deadline` from now, or at the
    /// earlier deadline of a drain under way; returns the time left.
    pub(crate) fn drain(&mut self, pool: usize, deadline: Duration) -> Duration {
        match self.pools.get_mut(&pool) {
            Some(p) => p.drain(deadline, Instant::now()),
            None => Duration::ZERO,
        }
    }

    /// Tells the dispatcher the pool's readiness and the slots admission counts, when
    /// they changed ([`pool::OwnerPool::admission_slots`]).
    pub(super) fn report_capacity(&mut self, pool: usize) {
        if let Some((up, slots)) = self.pools.get_mut(&pool).and_then(|p| p.capacity_changed()) {
            self.fx
                .notices
                .push(DispatcherCommand::PoolUp { pool, up, slots });
        }
    }

    /// Tells the dispatcher of every pool whose start differs from what it assumes (all
    /// replicas ready): one whose engine URL is unusable, say. Once, at startup.
    pub(crate) fn report_capacities(&mut self) {
        for pool in self.pool_indexes() {
            self.report_capacity(pool);
        }
    }

    /// Drains the replica `id` of `pool`: no new task goes to it; its tasks still running
    /// `deadline` from now end (a drain under way keeps its earlier deadline). The time
    /// left, or `None` if the pool has no such replica.
    pub(crate) fn drain_replica(
        &mut self,
        pool: usize,
        id: &str,
        deadline: Duration,
    ) -> Option<Duration> {
        let p = self.pools.get_mut(&pool)?;
        let r = p.replicas.iter_mut().find(|r| r.present && r.id == id)?;
        let now = Instant::now();
        let at = r
            .drain_at
            .map_or(now + deadline, |old| old.min(now + deadline));
        r.drain_at = Some(at);
        tracing::info!(pool = %p.cfg.id, replica = %id, deadline_ms = ms(at - now), "replica draining");
        let left = at.saturating_duration_since(now);
        self.report_capacity(pool);
        Some(left)
    }

    /// Switches the pool to `model_ref`, once its engine has loaded it. Tasks already
    /// running keep the model they started on; tasks started from now on use the new
    /// one.
    pub(crate) fn reload(&mut self, pool: usize, model_ref: String) -> Result<(), String> {
        let p = self
            .pools
            .get_mut(&pool)
            .ok_or("pool is not on this shard")?;
        tracing::info!(pool = %p.cfg.id, from = %p.model_ref, to = %model_ref, "model switched");
        p.model_ref = model_ref;
        // A reload after a finished drain brings the pool back, and its drained replicas.
        p.drain_at = None;
        p.drained = false;
        let before = p.slots();
        for r in &mut p.replicas {
            r.drain_at = None;
        }
        if p.slots() != before {
            self.report_capacity(pool);
            self.pump(pool, Instant::now());
        }
        Ok(())
    }

    pub fn live_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| t.borrow().state != State::Done)
            .count()
    }

    /// Hands a running task its engine's next token (see [`TaskRun::token`]), and its
    /// periodic `metrics` frame when one is due.
    pub(crate) fn token(&self, task: &RefCell<TaskRun>, text: &str, now: Instant) -> Step {
        let mut t = task.borrow_mut();
        let step = t.token(text, self.stream.metrics_every_tokens, now);
        if let Step::More(true) = step {
            if let Some(pool) = self.pools.get(&t.admitted.pool) {
                let f = t.metrics_frame(pool, now);
                t.emit(f, false, now);
            }
        }
        step
    }

    /// A task this shard keeps.
    pub(crate) fn task(&self, id: Uuid) -> Option<Rc<RefCell<TaskRun>>> {
        self.tasks.get(&id).cloned()
    }

    /// A task's generation ended, as its driver (here or on another shard) saw it. An
    /// engine found down is marked so (while the task still runs there: a late report
    /// of a task that ended meanwhile changes nothing), and a task that streamed nothing
    /// moves to another replica if one can take it; otherwise the task ends accordingly
    /// (no-op if it already ended elsewhere).
    pub(crate) fn driver_ended(
        &mut self,
        id: Uuid,
        (pool, replica): (usize, usize),
        how: DriveEnd,
    ) {
        let (error, streamed) = match how {
            DriveEnd::Done { prompt_tokens } => {
                return self.end(id, Terminal::Done { prompt_tokens })
            }
            DriveEnd::Deadline => return self.end(id, Terminal::deadline_in_decode()),
            DriveEnd::Failed { error, streamed } => (error, streamed),
        };
        let Some(rc) = self.task(id) else {
            return;
        };
        let (running_there, shown, tenant) = {
            let t = rc.borrow();
            let there = t.state == State::Running && t.replica == Some(replica);
            (there, t.spec.client.task_id, t.tenant.name.clone())
        };
        if !running_there {
            return;
        }
        if error.engine_down() {
            self.set_health(pool, replica, Health::default());
            // Nothing streamed yet: the next replica of the set may run it.
            if !streamed && self.restart_elsewhere(id, pool, replica) {
                return;
            }
        }
        let kind = error.error_kind(streamed);
        tracing::warn!(tenant = %tenant, task_id = %shown, error = %error, code = %kind, "engine call failed");
        let how = Terminal::Failed {
            reason: CancelReason::Engine,
            kind,
            message: error.to_string(),
        };
        self.end(id, how);
    }

    /// Cancels a task (no-op once it has ended); returns the tokens it produced.
    /// How the task's stream looks through the OpenAI door.
    pub(crate) fn rendering(&self, id: Uuid) -> Option<Rendering> {
        let t = self.tasks.get(&id)?.borrow();
        let x = t.spec.extras.as_deref();
        Some(Rendering {
            chat: x.is_some_and(|x| x.chat.is_some()),
            model: t.spec.model_ref.clone(),
            created: x.map(|x| x.created),
            include_usage: x.is_some_and(|x| x.include_usage),
        })
    }

    pub(crate) fn cancel(&mut self, id: Uuid) -> Option<u32> {
        self.finish(id, Terminal::Canceled(CancelReason::Client), Instant::now())
    }

    /// Sends the frames from `from` on, then keeps the subscriber until the end.
    pub(crate) fn subscribe(
        &mut self,
        id: Uuid,
        from: u64,
        tx: flume::Sender<FrameMsg>,
    ) -> Subscribed {
        let Some(rc) = self.tasks.get(&id) else {
            return Subscribed::NotFound;
        };
        let mut t = rc.borrow_mut();
        let done = t.state == State::Done;
        let total = t.frames.len();
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(total);
        if done && from == total {
            return Subscribed::Ended;
        }
        for (i, f) in t.frames[from..].iter().enumerate() {
            let terminal = done && from + i + 1 == total;
            if tx.try_send((f.clone(), terminal)).is_err() {
                // Buffer full during replay: the subscriber drains and comes back.
                return Subscribed::Live;
            }
        }
        if !done {
            t.subs.push(tx);
            t.alone_since = None;
        }
        Subscribed::Live
    }

    /// Periodic work: drains past their deadline, orphans, deadlines, watchdogs,
    /// heartbeat metrics of queued tasks, retention.
    pub(crate) fn sweep(&mut self, now: Instant) {
        if now - self.rotated_at >= RECENT_WINDOW {
            self.rotated_at = now;
            for p in self.pools.values() {
                p.probe.rotate_recent();
            }
        }
        let mut drained = Vec::new();
        for (i, p) in &mut self.pools {
            if p.drain_at.is_some_and(|at| now >= at) {
                drained.push(*i);
                if !p.drained {
                    p.drained = true;
                    self.fx
                        .notices
                        .push(DispatcherCommand::PoolDrained { pool: *i });
                }
            }
        }
        let orphan = Duration::from_millis(self.stream.orphan_timeout_ms);
        let heartbeat = Duration::from_millis(self.stream.heartbeat_ms);
        let mut ending = Vec::new();
        let mut beats = Vec::new();
        for (id, rc) in &self.tasks {
            let mut t = rc.borrow_mut();
            if t.state == State::Done {
                continue;
            }
            t.subs.retain(|s| !s.is_disconnected());
            if t.subs.is_empty() && t.alone_since.is_none() {
                t.alone_since = Some(now);
            }
            let orphan = t
                .spec
                .orphan_timeout_ms()
                .map_or(orphan, Duration::from_millis);
            if let Some(how) = self.overdue(&t, drained.contains(&t.admitted.pool), orphan, now) {
                ending.push((*id, how));
            } else if t.state == State::Queued && now - t.last_metrics_at >= heartbeat {
                beats.push(Rc::clone(rc));
            }
        }
        for rc in beats {
            let mut t = rc.borrow_mut();
            t.last_metrics_at = now;
            if let Some(pool) = self.pools.get(&t.admitted.pool) {
                let f = t.metrics_frame(pool, now);
                t.emit(f, false, now);
            }
        }
        self.finish_all(ending, now);
        while let Some(&(at, id)) = self.retained.front() {
            if at > now {
                break;
            }
            self.retained.pop_front();
            self.tasks.remove(&id);
        }
    }

    /// Why a live task must end now, if it must: its pool's drain deadline passed, its
    /// own deadline passed, its engine went silent past the watchdog, or nobody has
    /// streamed it for the orphan timeout.
    fn overdue(
        &self,
        t: &TaskRun,
        drained: bool,
        orphan: Duration,
        now: Instant,
    ) -> Option<Terminal> {
        let pool = self.pools.get(&t.admitted.pool);
        if drained {
            let name = pool.map_or("", |p| p.cfg.id.as_str());
            return Some(Terminal::Failed {
                reason: CancelReason::Drain,
                kind: ErrorKind::PoolUnavailable,
                message: format!("pool {name} was drained"),
            });
        }
        let replica = pool.zip(t.replica).and_then(|(p, r)| p.replicas.get(r));
        if let (State::Running, Some(r)) = (t.state, replica) {
            if r.drain_at.is_some_and(|at| now >= at) {
                let name = pool.map_or("", |p| p.cfg.id.as_str());
                return Some(Terminal::Failed {
                    reason: CancelReason::Drain,
                    kind: ErrorKind::PoolUnavailable,
                    message: format!("replica {} of pool {name} was drained", r.id),
                });
            }
        }
        if now >= t.deadline_at {
            return Some(Terminal::Failed {
                reason: CancelReason::Deadline,
                kind: ErrorKind::DeadlineUnmet,
                message: "the deadline passed before the task finished".into(),
            });
        }
        let watchdog = pool.map(|p| p.cfg.adapter.decode_timeout_ms);
        if let (State::Running, Some(since), Some(limit)) =
            (t.state, t.last_token_at.or(t.started_at), watchdog)
        {
            if now - since >= Duration::from_millis(limit) {
                return Some(Terminal::Failed {
                    reason: CancelReason::Watchdog,
                    kind: ErrorKind::DecodeTimeout,
                    message: format!("no token from the engine for {limit} ms"),
                });
            }
        }
        if t.alone_since.is_some_and(|s| now - s >= orphan) {
            return Some(Terminal::Canceled(CancelReason::Orphaned));
        }
        None
    }

    /// Ends every live task with an error frame (shutdown past its grace period).
    pub(crate) fn end_all(&mut self, message: &str) {
        let now = Instant::now();
        let ending = self
            .tasks
            .iter()
            .filter(|(_, t)| t.borrow().state != State::Done)
            .map(|(id, _)| {
                let how = Terminal::Failed {
                    reason: CancelReason::Shutdown,
                    kind: ErrorKind::PoolUnavailable,
                    message: message.to_string(),
                };
                (*id, how)
            })
            .collect();
        self.finish_all(ending, now);
    }

    /// How often [`Owner::sweep`] should run.
    pub(crate) fn sweep_interval(&self) -> Duration {
        let s = &self.stream;
        let orphan = s.orphan_timeout_ms.min(self.disconnect_grace_ms);
        let ms = (orphan / 4).min(s.heartbeat_ms).clamp(10, 250);
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests;

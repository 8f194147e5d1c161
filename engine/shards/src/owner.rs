//! The owner side of tasks: each pool lives on one shard ([`crate::shard_for`]), which
//! keeps the pool's queue (interactive before batch, FIFO within a class), its slots,
//! every task's frame log and subscribers, and drives the engine.
//!
//! Everything that touches a task (tokens, cancel, deadlines, orphan checks) runs on
//! this one thread, in order: that is what makes cancel race-free. Each frame is
//! encoded once into `Bytes`; subscribers (on any shard) get clones over bounded
//! channels. A subscriber whose channel is full is dropped, never waited for: it
//! drains what it has and subscribes again from its cursor, so a slow client never
//! blocks the shard.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use uuid::Uuid;

use orchd_engine::admission::{Admitted, Outcome};
use orchd_engine::artifact::Stored;
use orchd_engine::config::{Config, PoolConfig, StreamConfig};
use orchd_engine::frame::{self, Event};
use orchd_engine::mock::MockTokens;
use orchd_engine::task::TaskSpec;
use orchd_engine::{ErrorKind, Priority};

use tokio::sync::oneshot;

use crate::mesh::Mailbox;
use crate::metrics::{bump, cancel_reason_index, PoolProbe, PoolSample};
use crate::rt;
use crate::runtime::{DispatcherCommand, Shard, ShardCommand};
use crate::upstream::{Piece, Upstream, UpstreamError, UpstreamStream};

/// A frame for a subscriber, and whether it is the last one.
pub type FrameMsg = (Bytes, bool);

/// Most frames a task's log reserves when it starts (64 KiB of handles); a longer
/// generation grows the log from there.
const FRAME_LOG_RESERVE: usize = 2048;

/// Frames a subscriber may have in flight before it is dropped (and resubscribes).
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// A task admitted by the dispatcher, on its way to its owner shard.
pub struct NewTask {
    pub spec: TaskSpec,
    pub admitted: Admitted,
    pub correlation_id: String,
    pub admitted_at: Instant,
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

/// How a task ends.
enum Terminal {
    End {
        canceled: bool,
        reason: &'static str,
    },
    Error {
        /// The `tasks_canceled_total` reason this end counts under.
        reason: &'static str,
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Queued,
    Running,
    Done,
}

struct TaskRun {
    spec: TaskSpec,
    admitted: Admitted,
    correlation_id: String,
    state: State,
    frames: Vec<Bytes>,
    subs: Vec<flume::Sender<FrameMsg>>,
    /// Since when nobody has been subscribed (from admission if nobody ever was).
    alone_since: Option<Instant>,
    tokens_out: u32,
    admitted_at: Instant,
    started_at: Option<Instant>,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
    deadline_at: Instant,
    last_metrics_at: Instant,
    position: u32,
    /// The model the task runs on, fixed when it starts (reloads do not touch it).
    model_ref: String,
    /// Its pool's counters, shared so that per-token counting needs no other borrow.
    probe: Rc<PoolProbe>,
    /// Dropped when the task ends, which tells an HTTP driver to close its request.
    stop: Option<oneshot::Sender<()>>,
}

impl TaskRun {
    fn next_id(&self) -> u64 {
        self.frames.len() as u64
    }

    /// Appends a frame to the log and hands it to every subscriber.
    fn emit(&mut self, bytes: Bytes, terminal: bool, now: Instant) {
        let had = !self.subs.is_empty();
        self.subs
            .retain(|tx| tx.try_send((bytes.clone(), terminal)).is_ok());
        self.frames.push(bytes);
        if terminal {
            self.subs.clear();
        }
        if had && self.subs.is_empty() && self.alone_since.is_none() {
            self.alone_since = Some(now);
        }
    }

    fn class(&self) -> usize {
        usize::from(self.spec.priority == Priority::Batch)
    }
}

/// Live figures of one pool, for `GET /v1/pools/{id}/health`.
#[derive(Clone, Debug)]
pub struct PoolStats {
    pub queue_depth: u32,
    pub slots_total: u32,
    pub slots_busy: u32,
    pub model_ref: String,
    pub draining: bool,
    /// The version the engine reports (HTTP adapters), if it said.
    pub reported_version: Option<String>,
    /// Admission to first token over the last one to two minutes, ms: (p50, p99, count).
    pub first_token_ms: (f64, f64, u64),
    /// First to last token, same window.
    pub decode_ms: (f64, f64, u64),
}

/// Latencies of recent tasks: the current window and the one before it, so a reading
/// always covers between one and two windows.
struct Recent {
    current: Histogram<u64>,
    previous: Histogram<u64>,
}

impl Recent {
    fn new() -> Recent {
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("histogram bounds");
        Recent {
            current: h(),
            previous: h(),
        }
    }

    fn record(&mut self, d: Duration) {
        let _ = self
            .current
            .record((d.as_micros() as u64).clamp(1, 3_600_000_000));
    }

    fn rotate(&mut self) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.reset();
    }

    fn summary(&self) -> (f64, f64, u64) {
        let mut h = self.previous.clone();
        let _ = h.add(&self.current);
        let ms = |q| h.value_at_quantile(q) as f64 / 1000.0;
        (ms(0.5), ms(0.99), h.len())
    }
}

/// How long one window of [`Recent`] lasts.
const RECENT_WINDOW: Duration = Duration::from_secs(60);

struct OwnerPool {
    cfg: PoolConfig,
    model_ref: String,
    /// When the pool's remaining tasks are ended (a drain's deadline).
    drain_at: Option<Instant>,
    first_token: Recent,
    decode: Recent,
    probe: Rc<PoolProbe>,
    /// The engine over HTTP; `None` for the mock.
    upstream: Option<Rc<Upstream>>,
    /// The engine answers its health probe (always true for the mock).
    up: bool,
    /// The version the engine reports about itself, once probed.
    reported_version: Option<String>,
    busy: u32,
    queue: [VecDeque<Uuid>; 2],
    /// A position update of this pool's queue is due (`stream.position_update_ms`).
    positions_due: bool,
    /// Start to end of recent tasks, for predictions in metrics frames.
    service_ms: f64,
    tpot_ms: f64,
}

impl OwnerPool {
    fn depth(&self) -> u32 {
        (self.queue[0].len() + self.queue[1].len()) as u32
    }
}

/// One shard's tasks and pools. Lives on its shard; reached through [`Shard`].
pub struct Owner {
    pools: HashMap<usize, OwnerPool>,
    tasks: HashMap<Uuid, Rc<RefCell<TaskRun>>>,
    retained: VecDeque<(Instant, Uuid)>,
    rotated_at: Instant,
    /// Messages for the dispatcher that found its mailbox full; sent first next time,
    /// so the dispatcher's view of queues never loses an event.
    pending: VecDeque<DispatcherCommand>,
    stream: StreamConfig,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Owner {
    pub(crate) fn new(config: &Config, shard: usize, shards: usize) -> Owner {
        let pools = config
            .pools
            .iter()
            .enumerate()
            .filter(|(i, _)| crate::shard_for(*i, shards).0 == shard)
            .map(|(i, p)| {
                let tpot = p.adapter.tpot_ms as f64;
                let pool = OwnerPool {
                    cfg: p.clone(),
                    model_ref: p.model_ref.clone(),
                    drain_at: None,
                    first_token: Recent::new(),
                    decode: Recent::new(),
                    probe: Rc::new(PoolProbe::default()),
                    upstream: match p.adapter.kind {
                        orchd_engine::config::AdapterKind::Mock => None,
                        _ => match Upstream::new(&p.adapter) {
                            Ok(u) => Some(Rc::new(u)),
                            Err(e) => {
                                tracing::error!(pool = %p.id, error = %e, "engine url unusable; its tasks will fail");
                                None
                            }
                        },
                    },
                    up: true,
                    reported_version: None,
                    busy: 0,
                    queue: [VecDeque::new(), VecDeque::new()],
                    positions_due: false,
                    service_ms: p.adapter.ttft_ms as f64 + 64.0 * tpot,
                    tpot_ms: tpot,
                };
                (i, pool)
            })
            .collect();
        Owner {
            pools,
            tasks: HashMap::new(),
            retained: VecDeque::new(),
            rotated_at: Instant::now(),
            pending: VecDeque::new(),
            stream: config.stream.clone(),
        }
    }

    /// Live figures of a pool this shard owns.
    pub fn pool_stats(&self, pool: usize) -> Option<PoolStats> {
        let p = self.pools.get(&pool)?;
        Some(PoolStats {
            queue_depth: p.depth(),
            slots_total: p.cfg.slots,
            slots_busy: p.busy,
            model_ref: p.model_ref.clone(),
            draining: p.drain_at.is_some(),
            reported_version: p.reported_version.clone(),
            first_token_ms: p.first_token.summary(),
            decode_ms: p.decode.summary(),
        })
    }

    /// One pool as a scrape sees it. The mock engine reports simulated device figures:
    /// each busy slot holds its task's KV cache, so cache use and utilization are the
    /// busy share of the slots, and device memory is the KV bytes of the running tasks.
    pub fn pool_sample(&self, pool: usize) -> Option<PoolSample> {
        let p = self.pools.get(&pool)?;
        let kv_tokens: u64 = self
            .tasks
            .values()
            .filter_map(|t| {
                let t = t.borrow();
                (t.state == State::Running && t.admitted.pool == pool)
                    .then(|| t.spec.prompt_tokens() + u64::from(t.tokens_out))
            })
            .sum::<u64>();
        let busy_share = f64::from(p.busy) / f64::from(p.cfg.slots);
        Some(PoolSample {
            pool,
            queue_depth: [p.queue[0].len() as u64, p.queue[1].len() as u64],
            slots_busy: p.busy,
            slots_total: p.cfg.slots,
            kv_cache_usage_ratio: busy_share,
            gpu_utilization: busy_share,
            vram_used_bytes: kv_tokens * orchd_engine::admission::KV_BYTES_PER_TOKEN,
            probe: p.probe.snapshot(),
        })
    }

    /// The pools this shard owns, by config index.
    pub fn pool_indexes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.pools.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Records whether a pool's engine answers, telling the dispatcher on a change so
    /// that admission routes around an engine that is down.
    pub(crate) fn set_up(&mut self, shard: &Rc<Shard>, pool: usize, up: bool) {
        let Some(p) = self.pools.get_mut(&pool) else {
            return;
        };
        if p.up == up {
            return;
        }
        p.up = up;
        tracing::warn!(pool = %p.cfg.id, up, "engine health changed");
        self.notify(shard.dispatcher(), DispatcherCommand::PoolUp { pool, up });
    }

    /// Records the version an engine reports.
    pub(crate) fn set_reported_version(&mut self, pool: usize, version: Option<String>) {
        if let (Some(p), Some(v)) = (self.pools.get_mut(&pool), version) {
            p.reported_version = Some(v);
        }
    }

    /// The pools of this shard whose engines are probed, with their engines.
    pub(crate) fn upstreams(&self) -> Vec<(usize, Rc<Upstream>)> {
        self.pools
            .iter()
            .filter_map(|(i, p)| p.upstream.clone().map(|u| (*i, u)))
            .collect()
    }

    /// Ends the pool's tasks (running and queued) `deadline` from now.
    pub(crate) fn drain(&mut self, pool: usize, deadline: Duration) {
        if let Some(p) = self.pools.get_mut(&pool) {
            let at = Instant::now() + deadline;
            p.drain_at = Some(p.drain_at.map_or(at, |old| old.min(at)));
        }
    }

    /// How long the pool's engine takes to load a model.
    pub(crate) fn load_time(&self, pool: usize) -> Duration {
        self.pools.get(&pool).map_or(Duration::ZERO, |p| {
            Duration::from_millis(p.cfg.adapter.load_ms)
        })
    }

    /// Switches the pool to `model_ref`, called once its engine had `load_time` to load
    /// it. Tasks already running keep the model they started on;
    /// tasks started from now on use the new one. The mock engine cannot load any
    /// model whose name starts with `fail:`.
    pub(crate) fn reload(&mut self, pool: usize, model_ref: String) -> Result<(), String> {
        let p = self
            .pools
            .get_mut(&pool)
            .ok_or("pool is not on this shard")?;
        if model_ref.starts_with("fail:") {
            return Err(format!("the engine could not load model {model_ref:?}"));
        }
        tracing::info!(pool = %p.cfg.id, from = %p.model_ref, to = %model_ref, "model switched");
        p.model_ref = model_ref;
        // A reload after a finished drain brings the pool back.
        p.drain_at = None;
        Ok(())
    }

    pub fn live_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| t.borrow().state != State::Done)
            .count()
    }

    fn notify(&mut self, dispatcher: &Mailbox<DispatcherCommand>, cmd: DispatcherCommand) {
        self.flush(dispatcher);
        if !self.pending.is_empty() {
            self.pending.push_back(cmd);
            return;
        }
        if let Err(back) = dispatcher.try_send(cmd) {
            self.pending.push_back(back.command);
        }
    }

    fn flush(&mut self, dispatcher: &Mailbox<DispatcherCommand>) {
        while let Some(cmd) = self.pending.pop_front() {
            if let Err(back) = dispatcher.try_send(cmd) {
                self.pending.push_front(back.command);
                return;
            }
        }
    }

    fn metrics_frame(&self, t: &TaskRun, now: Instant) -> Bytes {
        let pool = &self.pools[&t.admitted.pool];
        let queued = t.state == State::Queued;
        let predicted_start = if queued {
            let rounds = (f64::from(t.position) / f64::from(pool.cfg.slots)).ceil();
            Some((rounds * pool.service_ms).ceil() as u64)
        } else {
            None
        };
        let remaining_tokens = f64::from(t.spec.expected_out().saturating_sub(t.tokens_out));
        let mut predicted_left = remaining_tokens * pool.tpot_ms;
        if t.first_token_at.is_none() {
            predicted_left += pool.cfg.adapter.ttft_ms as f64;
        }
        predicted_left += predicted_start.unwrap_or(0) as f64;
        let m = frame::Metrics {
            queue_depth: pool.depth(),
            on_time_probability: on_time_probability(t.deadline_at, now, predicted_left),
            kv_warmth: t.admitted.kv_warmth,
            queue_position: queued.then_some(t.position),
            predicted_start_ms: predicted_start,
            tokens_out: (!queued).then_some(t.tokens_out),
            budgets: t.admitted.budgets.as_ref().unwrap_or(&NO_BUDGETS),
        };
        frame::encode(t.next_id(), Event::Metrics, &m)
    }

    /// Takes an admitted task: evicts the victim named by the dispatcher, queues the
    /// task, starts what the slots allow.
    pub(crate) fn enqueue(&mut self, shard: &Rc<Shard>, new: NewTask) {
        let now = Instant::now();
        let id = new.spec.task_id;
        if self.tasks.contains_key(&id) {
            return;
        }
        if let Some(victim) = new.admitted.evict {
            self.finish(
                shard,
                victim,
                Terminal::Error {
                    reason: "drop-lru",
                    kind: ErrorKind::QueueFullDropLru,
                    message: format!("evicted from a full queue for task {id}"),
                },
                now,
            );
        }
        let a = &new.admitted;
        let mut run = TaskRun {
            deadline_at: new.admitted_at + Duration::from_millis(new.spec.deadline_ms),
            spec: new.spec,
            admitted: new.admitted.clone(),
            correlation_id: new.correlation_id,
            state: State::Queued,
            frames: Vec::with_capacity(8),
            subs: Vec::new(),
            alone_since: Some(new.admitted_at),
            tokens_out: 0,
            admitted_at: new.admitted_at,
            started_at: None,
            first_token_at: None,
            last_token_at: None,
            last_metrics_at: now,
            position: a.queue_position,
            model_ref: String::new(),
            probe: self
                .pools
                .get(&a.pool)
                .map(|p| Rc::clone(&p.probe))
                .unwrap_or_default(),
            stop: None,
        };
        bump(&run.probe.enqueued[run.class()]);
        let started = frame::Started {
            queue_position: a.queue_position,
            predicted_start_ms: a.predicted_start_ms,
        };
        run.emit(frame::encode(0, Event::Started, &started), false, now);
        let class = run.class();
        let pool = a.pool;
        if let Some(p) = self.pools.get_mut(&pool) {
            p.queue[class].push_back(id);
        }
        // Positions are recomputed (and the first metrics frame sent) by `pump`.
        run.position = u32::MAX;
        let rc = Rc::new(RefCell::new(run));
        self.tasks.insert(id, Rc::clone(&rc));
        self.pump(shard, pool, now);
        // Still queued: it hears its place now (it is last of its class), whatever
        // stream.position_update_ms holds back for the tasks already waiting.
        let mut t = rc.borrow_mut();
        if t.state == State::Queued && t.position == u32::MAX {
            if let Some(p) = self.pools.get(&pool) {
                let ahead: usize = p.queue[..=class].iter().map(VecDeque::len).sum();
                t.position = ahead as u32;
                t.last_metrics_at = now;
                let f = self.metrics_frame(&t, now);
                t.emit(f, false, now);
            }
        }
    }

    /// Starts queued tasks while slots are free, then tells every queued task that
    /// moved its new position.
    fn pump(&mut self, shard: &Rc<Shard>, pool_index: usize, now: Instant) {
        let Some(pool) = self.pools.get_mut(&pool_index) else {
            return;
        };
        let mut starting = Vec::new();
        while pool.busy < pool.cfg.slots {
            let Some(id) = pool.queue[0]
                .pop_front()
                .or_else(|| pool.queue[1].pop_front())
            else {
                break;
            };
            pool.busy += 1;
            starting.push(id);
        }
        let model = pool.model_ref.clone();
        let (ttft, tpot) = (pool.cfg.adapter.ttft_ms, pool.cfg.adapter.tpot_ms);
        let faults = (
            pool.cfg.adapter.fail_after_tokens,
            pool.cfg.adapter.stall_after_tokens,
        );
        let (kind, upstream) = (pool.cfg.adapter.kind, pool.upstream.clone());
        let mut ending = Vec::new();
        let every = self.stream.metrics_every_tokens;
        for id in starting {
            let Some(rc) = self.tasks.get(&id).cloned() else {
                continue;
            };
            {
                let mut t = rc.borrow_mut();
                t.state = State::Running;
                t.started_at = Some(now);
                // Its frames to come (tokens, a metrics frame every `every`, the end),
                // reserved once rather than grown by copying the log as it doubles.
                let max = t.spec.max_tokens as usize;
                let ahead = max + max / every.max(1) as usize + 2;
                let want = (t.frames.len() + ahead).min(FRAME_LOG_RESERVE);
                let have = t.frames.len();
                t.frames.reserve(want.saturating_sub(have));
                let class = t.class();
                bump(&t.probe.started[class]);
                t.probe.queue_wait[class]
                    .borrow_mut()
                    .record(now - t.admitted_at);
                let prompt = t.spec.prompt_tokens();
                t.probe.tokens_in.set(t.probe.tokens_in.get() + prompt);
                t.model_ref = if model == "*" {
                    t.spec.model_ref.clone()
                } else {
                    model.clone()
                };
                tracing::info!(
                    correlation_id = %t.correlation_id, task_id = %id, pool = %self.pools[&pool_index].cfg.id,
                    queue_position = t.admitted.queue_position, predicted_start_ms = t.admitted.predicted_start_ms,
                    waited_ms = ms(now - t.admitted_at), "task started"
                );
                if t.position != 0 {
                    // First frame after `started` for a task that never queued.
                    t.position = 0;
                    let f = self.metrics_frame(&t, now);
                    t.emit(f, false, now);
                }
                if t.admitted.queue_position > 0 {
                    self.notify(shard.dispatcher(), DispatcherCommand::Started { task: id });
                }
            }
            match (kind, &upstream) {
                (orchd_engine::config::AdapterKind::Mock, _) => {
                    let mock = MockDrive {
                        ttft: Duration::from_millis(ttft),
                        tpot: Duration::from_millis(tpot),
                        every,
                        fail_after: faults.0,
                        stall_after: faults.1,
                    };
                    rt::spawn_detached(drive_mock(Rc::clone(shard), rc, mock));
                }
                (_, Some(up)) => {
                    let (tx, rx) = oneshot::channel();
                    rc.borrow_mut().stop = Some(tx);
                    rt::spawn_detached(drive_http(Rc::clone(shard), rc, Rc::clone(up), rx, every));
                }
                (_, None) => {
                    let how = Terminal::Error {
                        reason: "engine",
                        kind: ErrorKind::PoolUnavailable,
                        message: "the pool's engine url is unusable".into(),
                    };
                    ending.push((id, how));
                }
            }
        }
        for (id, how) in ending {
            self.finish(shard, id, how, now);
        }
        // Moves up the queue are reported together, at most every
        // stream.position_update_ms (a new task hears its place from `enqueue`).
        let window = self.stream.position_update_ms;
        if window == 0 {
            self.update_positions(pool_index, now);
            return;
        }
        let Some(pool) = self.pools.get_mut(&pool_index) else {
            return;
        };
        if !pool.positions_due && pool.depth() > 0 {
            pool.positions_due = true;
            let shard = Rc::clone(shard);
            rt::spawn_detached(async move {
                rt::sleep(Duration::from_millis(window)).await;
                let mut owner = shard.owner.borrow_mut();
                if let Some(p) = owner.pools.get_mut(&pool_index) {
                    p.positions_due = false;
                }
                owner.update_positions(pool_index, Instant::now());
            });
        }
    }

    /// Sends a `metrics` frame to each queued task of the pool whose position changed.
    fn update_positions(&mut self, pool_index: usize, now: Instant) {
        let Some(pool) = self.pools.get(&pool_index) else {
            return;
        };
        let order = pool.queue[0].iter().chain(pool.queue[1].iter());
        for (i, id) in order.enumerate() {
            let Some(rc) = self.tasks.get(id) else {
                continue;
            };
            let mut t = rc.borrow_mut();
            let pos = i as u32 + 1;
            if t.position != pos {
                t.position = pos;
                t.last_metrics_at = now;
                let f = self.metrics_frame(&t, now);
                t.emit(f, false, now);
            }
        }
    }

    /// Ends a task with its terminal frame (once), frees its slot or queue place,
    /// stores its transcript, tells the dispatcher, then lets its pool move on (start
    /// the next task, tell the queued ones their new places). Returns its token count.
    fn finish(&mut self, shard: &Rc<Shard>, id: Uuid, how: Terminal, now: Instant) -> Option<u32> {
        let (tokens, pool) = self.end_task(shard, id, how, now)?;
        if let Some(pool) = pool {
            self.pump(shard, pool, now);
        }
        Some(tokens)
    }

    /// Ends several tasks, then moves each affected pool on once: a queue that loses
    /// many tasks at once (a drain, deadlines) sends each survivor one position update,
    /// not one per task ahead of it that ended.
    fn finish_all(&mut self, shard: &Rc<Shard>, ending: Vec<(Uuid, Terminal)>, now: Instant) {
        let mut pools = Vec::new();
        for (id, how) in ending {
            if let Some((_, Some(pool))) = self.end_task(shard, id, how, now) {
                if !pools.contains(&pool) {
                    pools.push(pool);
                }
            }
        }
        for pool in pools {
            self.pump(shard, pool, now);
        }
    }

    /// [`Owner::finish`] without moving the pool on. Returns the task's token count and,
    /// when this call ended it, its pool.
    fn end_task(
        &mut self,
        shard: &Rc<Shard>,
        id: Uuid,
        how: Terminal,
        now: Instant,
    ) -> Option<(u32, Option<usize>)> {
        let rc = self.tasks.get(&id).cloned()?;
        let mut t = rc.borrow_mut();
        if t.state == State::Done {
            return Some((t.tokens_out, None));
        }
        let ran = t.state == State::Running;
        t.state = State::Done;
        t.stop.take();
        let pool_index = t.admitted.pool;
        let class = t.class();
        if let Some(p) = self.pools.get_mut(&pool_index) {
            if ran {
                p.busy = p.busy.saturating_sub(1);
            } else {
                p.queue[class].retain(|q| *q != id);
            }
        }
        let decode_ms = match (t.first_token_at, t.last_token_at) {
            (Some(a), Some(b)) => ms(b - a),
            _ => 0,
        };
        let pool_name = self
            .pools
            .get(&pool_index)
            .map(|p| p.cfg.id.clone())
            .unwrap_or_default();
        match &how {
            Terminal::End { canceled, reason } => {
                let summary = serde_json::json!({
                    "event": "end", "tokens_out": t.tokens_out, "decode_ms": decode_ms, "canceled": canceled,
                });
                let stored = transcript(&t, summary);
                let end = frame::End {
                    tokens_out: t.tokens_out,
                    decode_ms,
                    transcript_id: &stored.id,
                    canceled: *canceled,
                };
                let f = frame::encode(t.next_id(), Event::End, &end);
                let tid = stored.id.clone();
                store_transcript(shard, stored);
                t.emit(f, true, now);
                tracing::info!(
                    correlation_id = %t.correlation_id, task_id = %id, pool = %pool_name,
                    queue_position = t.admitted.queue_position, predicted_start_ms = t.admitted.predicted_start_ms,
                    tokens_out = t.tokens_out, decode_ms, canceled, reason, transcript_id = %tid,
                    "{}", if *canceled { "task canceled" } else { "task ended" }
                );
            }
            Terminal::Error { kind, message, .. } => {
                let summary =
                    serde_json::json!({"event": "error", "code": kind, "message": message});
                let stored = transcript(&t, summary);
                let err = frame::ErrorFrame {
                    code: *kind,
                    message,
                    engine: Some(t.spec.engine),
                };
                let f = frame::encode(t.next_id(), Event::Error, &err);
                store_transcript(shard, stored);
                t.emit(f, true, now);
                tracing::info!(
                    correlation_id = %t.correlation_id, task_id = %id, pool = %pool_name,
                    queue_position = t.admitted.queue_position, predicted_start_ms = t.admitted.predicted_start_ms,
                    tokens_out = t.tokens_out, code = %kind, message = %message, "task failed"
                );
            }
        }
        let service_ms = t.started_at.map(|s| ms(now - s));
        if let Some(p) = self.pools.get_mut(&pool_index) {
            if let Some(first) = t.first_token_at {
                p.first_token.record(first - t.admitted_at);
                t.probe.first_token[class]
                    .borrow_mut()
                    .record(first - t.admitted_at);
                if let Some(last) = t.last_token_at {
                    p.decode.record(last - first);
                    t.probe.decode[class].borrow_mut().record(last - first);
                }
            }
        }
        let cut_short = match &how {
            Terminal::End { canceled, reason } => canceled.then_some(*reason),
            Terminal::Error { reason, .. } => Some(*reason),
        };
        if let Some(reason) = cut_short {
            bump(&t.probe.canceled[cancel_reason_index(reason)]);
        }
        if let (Some(p), Some(s)) = (self.pools.get_mut(&pool_index), service_ms) {
            p.service_ms += 0.2 * (s as f64 - p.service_ms);
            if t.tokens_out > 1 {
                p.tpot_ms += 0.2 * (decode_ms as f64 / f64::from(t.tokens_out - 1) - p.tpot_ms);
            }
        }
        let outcome = Outcome {
            tokens_out: t.tokens_out,
            decode_ms,
            ttft_ms: t.first_token_at.map(|f| ms(f - t.admitted_at)),
            service_ms,
            ran,
        };
        let tokens = t.tokens_out;
        drop(t);
        self.notify(
            shard.dispatcher(),
            DispatcherCommand::Finished { task: id, outcome },
        );
        self.retained
            .push_back((now + Duration::from_millis(self.stream.retention_ms), id));
        Some((tokens, Some(pool_index)))
    }

    /// Cancels a task (no-op once it has ended); returns the tokens it produced.
    pub(crate) fn cancel(&mut self, shard: &Rc<Shard>, id: Uuid) -> Option<u32> {
        let how = Terminal::End {
            canceled: true,
            reason: "client",
        };
        self.finish(shard, id, how, Instant::now())
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

    /// Periodic work: orphans, deadlines, heartbeat metrics of queued tasks, retention.
    pub(crate) fn sweep(&mut self, shard: &Rc<Shard>, now: Instant) {
        self.flush(shard.dispatcher());
        if now - self.rotated_at >= RECENT_WINDOW {
            self.rotated_at = now;
            for p in self.pools.values_mut() {
                p.first_token.rotate();
                p.decode.rotate();
            }
        }
        let drained: Vec<usize> = self
            .pools
            .iter()
            .filter(|(_, p)| p.drain_at.is_some_and(|at| now >= at))
            .map(|(i, _)| *i)
            .collect();
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
            let watchdog = self
                .pools
                .get(&t.admitted.pool)
                .map(|p| p.cfg.adapter.decode_timeout_ms);
            let quiet_since = t.last_token_at.or(t.started_at);
            let stalled = match (t.state, quiet_since, watchdog) {
                (State::Running, Some(since), Some(limit)) => {
                    (now - since >= Duration::from_millis(limit)).then_some(limit)
                }
                _ => None,
            };
            if drained.contains(&t.admitted.pool) {
                let pool = &self.pools[&t.admitted.pool].cfg.id;
                ending.push((
                    *id,
                    Terminal::Error {
                        reason: "drain",
                        kind: ErrorKind::PoolUnavailable,
                        message: format!("pool {pool} was drained"),
                    },
                ));
            } else if now >= t.deadline_at {
                ending.push((
                    *id,
                    Terminal::Error {
                        reason: "deadline",
                        kind: ErrorKind::DeadlineUnmet,
                        message: "the deadline passed before the task finished".into(),
                    },
                ));
            } else if let Some(limit) = stalled {
                ending.push((
                    *id,
                    Terminal::Error {
                        reason: "watchdog",
                        kind: ErrorKind::DecodeTimeout,
                        message: format!("no token from the engine for {limit} ms"),
                    },
                ));
            } else if t.alone_since.is_some_and(|s| now - s >= orphan) {
                ending.push((
                    *id,
                    Terminal::End {
                        canceled: true,
                        reason: "orphaned",
                    },
                ));
            } else if t.state == State::Queued && now - t.last_metrics_at >= heartbeat {
                beats.push(Rc::clone(rc));
            }
        }
        for rc in beats {
            let mut t = rc.borrow_mut();
            t.last_metrics_at = now;
            let f = self.metrics_frame(&t, now);
            t.emit(f, false, now);
        }
        self.finish_all(shard, ending, now);
        while let Some(&(at, id)) = self.retained.front() {
            if at > now {
                break;
            }
            self.retained.pop_front();
            self.tasks.remove(&id);
        }
    }

    /// Ends every live task with an error frame (shutdown past its grace period).
    pub(crate) fn end_all(&mut self, shard: &Rc<Shard>, message: &str) {
        let now = Instant::now();
        let live: Vec<Uuid> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.borrow().state != State::Done)
            .map(|(id, _)| *id)
            .collect();
        let ending = live
            .into_iter()
            .map(|id| {
                let how = Terminal::Error {
                    reason: "shutdown",
                    kind: ErrorKind::PoolUnavailable,
                    message: message.to_string(),
                };
                (id, how)
            })
            .collect();
        self.finish_all(shard, ending, now);
    }

    /// How often [`Owner::sweep`] should run.
    pub(crate) fn sweep_interval(&self) -> Duration {
        let s = &self.stream;
        let ms = (s.orphan_timeout_ms / 4).min(s.heartbeat_ms).clamp(10, 250);
        Duration::from_millis(ms)
    }
}

const NO_BUDGETS: frame::BudgetRemaining = frame::BudgetRemaining {
    tokens_budget_remaining: None,
    time_budget_remaining_ms: None,
    cost_budget_remaining: None,
};

/// Chance of finishing by the deadline: a logistic of the slack (time left minus
/// predicted time still needed), scaled to the prediction; 0 once the deadline passed.
fn on_time_probability(deadline_at: Instant, now: Instant, predicted_left_ms: f64) -> f64 {
    if now >= deadline_at {
        return 0.0;
    }
    let left = (deadline_at - now).as_secs_f64() * 1e3;
    let slack = left - predicted_left_ms;
    let scale = (predicted_left_ms * 0.25).max(5.0);
    let p = 1.0 / (1.0 + (-slack / scale).exp());
    (p * 1000.0).round() / 1000.0
}

/// Hands a transcript to the shard that keeps its id.
fn store_transcript(shard: &Rc<Shard>, stored: Stored) {
    let keeper = crate::shard_for_artifact(&stored.id, shard.shard_count());
    if keeper == shard.id() {
        shard.store_artifact(stored, true, None);
    } else if let Err(back) = shard.peer(keeper).try_send(ShardCommand::StoreArtifact {
        stored,
        evictable: true,
        reply: None,
    }) {
        tracing::warn!(error = %back.error, "transcript not stored: its shard's mailbox is full");
    }
}

/// The task's frames as a `trace` artifact; its id is the `transcript_id`.
fn transcript(t: &TaskRun, summary: serde_json::Value) -> Stored {
    orchd_engine::artifact::transcript(t.spec.task_id, t.spec.session_id, &t.frames, &summary)
}

enum Step {
    /// A token was emitted; more may come.
    More,
    /// `max_tokens` reached: the task is complete.
    Done,
    /// The deadline passed.
    Deadline,
    /// The task ended elsewhere (cancel, drain, watchdog): stop producing.
    Stopped,
}

/// Emits one token of a running task (frame, counters, periodic metrics frame), or
/// says why not. Runs on the owner shard, so it is ordered with cancel.
fn token_step(shard: &Shard, rc: &RefCell<TaskRun>, text: &str, every: u32, now: Instant) -> Step {
    let mut t = rc.borrow_mut();
    if t.state != State::Running {
        return Step::Stopped;
    }
    if now >= t.deadline_at {
        return Step::Deadline;
    }
    if t.tokens_out >= t.spec.max_tokens {
        return Step::Done;
    }
    let f = frame::token(t.next_id(), t.tokens_out, text);
    t.tokens_out += 1;
    bump(&t.probe.tokens_out);
    if let Some(prev) = t.last_token_at {
        t.probe.inter_token.borrow_mut().record(now - prev);
    }
    t.first_token_at.get_or_insert(now);
    t.last_token_at = Some(now);
    t.emit(f, false, now);
    if t.tokens_out % every == 0 && t.tokens_out < t.spec.max_tokens {
        let f = shard.owner.borrow().metrics_frame(&t, now);
        t.emit(f, false, now);
    }
    Step::More
}

/// Ends a task from its driver (no-op if it already ended).
fn end(shard: &Rc<Shard>, id: Uuid, how: Terminal) {
    shard
        .owner
        .borrow_mut()
        .finish(shard, id, how, Instant::now());
}

fn done() -> Terminal {
    Terminal::End {
        canceled: false,
        reason: "done",
    }
}

fn deadline_error() -> Terminal {
    Terminal::Error {
        reason: "deadline",
        kind: ErrorKind::DeadlineUnmet,
        message: "the deadline passed during decode".into(),
    }
}

/// The mock engine on the owner shard: `ttft` before the first token, `tpot` between
/// tokens (zero = as fast as possible, yielding now and then so other streams and
/// requests on this shard keep moving).
/// How the mock engine runs one task: its timing and the faults it injects.
struct MockDrive {
    ttft: Duration,
    tpot: Duration,
    every: u32,
    /// Dies (WORKER_RESET) once this many tokens are out.
    fail_after: Option<u32>,
    /// Goes silent once this many tokens are out, until the task ends elsewhere.
    stall_after: Option<u32>,
}

async fn drive_mock(shard: Rc<Shard>, rc: Rc<RefCell<TaskRun>>, m: MockDrive) {
    let id = rc.borrow().spec.task_id;
    // glommio may run a new task right away, inside the caller's borrow of the owner:
    // step out first so every borrow below happens on a fresh poll.
    rt::yield_now().await;
    // Tokens are due at start + ttft + k * tpot, on the shard's timer grid, so that
    // tasks due in the same millisecond share one wakeup (a running engine's decode
    // step serves all its sequences at once, too). A shard that falls behind does not
    // catch up in a burst: the next token is due a tpot after the late one.
    let mut due = Instant::now() + m.ttft;
    if !m.ttft.is_zero() {
        rt::sleep_until_tick(due).await;
    }
    let mut tokens = {
        let t = rc.borrow();
        MockTokens::new(&t.spec, &t.model_ref)
    };
    let mut burst = 0u32;
    loop {
        let (running, out) = {
            let t = rc.borrow();
            (t.state == State::Running, t.tokens_out)
        };
        if running && m.fail_after == Some(out) {
            let message = format!("mock engine failed after {out} tokens (fail_after_tokens)");
            tracing::warn!(task_id = %id, "{message}");
            end(
                &shard,
                id,
                Terminal::Error {
                    reason: "engine",
                    kind: ErrorKind::WorkerReset,
                    message,
                },
            );
            return;
        }
        if running && m.stall_after == Some(out) {
            // Silent until the watchdog (or a cancel, drain, deadline) ends the task.
            while rc.borrow().state == State::Running {
                rt::sleep(STALL_POLL).await;
            }
            return;
        }
        let text = tokens.next_token();
        match token_step(&shard, &rc, text, m.every, Instant::now()) {
            Step::More => {}
            Step::Done => {
                end(&shard, id, done());
                return;
            }
            Step::Deadline => {
                end(&shard, id, deadline_error());
                return;
            }
            Step::Stopped => return,
        }
        if !m.tpot.is_zero() {
            let now = Instant::now();
            due = if due + m.tpot > now {
                due + m.tpot
            } else {
                now + m.tpot
            };
            rt::sleep_until_tick(due).await;
        } else {
            burst += 1;
            if burst >= 16 {
                burst = 0;
                rt::yield_now().await;
            }
        }
    }
}

/// How often a stalled mock looks whether its task has ended.
const STALL_POLL: Duration = Duration::from_millis(20);

/// How an HTTP generation ended, seen from the driver.
enum HttpEnd {
    /// The engine said it was done (or `max_tokens` was reached); the stream can be
    /// recycled if it ended cleanly.
    Complete(Option<UpstreamStream>),
    Deadline,
    Stopped,
    Failed {
        error: UpstreamError,
        streamed: bool,
    },
}

/// A real engine over HTTP. Retries (refused connection, 5xx) only before the first
/// token, with capped jitter. When the task ends elsewhere (cancel, watchdog, drain),
/// `stop` fires and the generation future is dropped, which closes the upstream
/// connection: the engine sees the client go and stops generating.
async fn drive_http(
    shard: Rc<Shard>,
    rc: Rc<RefCell<TaskRun>>,
    upstream: Rc<Upstream>,
    stop: oneshot::Receiver<()>,
    every: u32,
) {
    rt::yield_now().await;
    let (id, spec, model, pool) = {
        let t = rc.borrow();
        (
            t.spec.task_id,
            t.spec.clone(),
            t.model_ref.clone(),
            t.admitted.pool,
        )
    };
    let generate = async {
        let mut attempt = 0u32;
        let mut stream = loop {
            match upstream.open(&spec, &model).await {
                Ok(s) => break s,
                Err(e) if e.retriable() && attempt < upstream.retries => {
                    attempt += 1;
                    // Capped exponential backoff with jitter from the task id.
                    let base = 50u64 << attempt.min(4);
                    let jitter = (id.as_u128() as u64).wrapping_mul(u64::from(attempt) + 1) % base;
                    rt::sleep(Duration::from_millis((base + jitter).min(1000))).await;
                }
                Err(error) => {
                    return HttpEnd::Failed {
                        error,
                        streamed: false,
                    }
                }
            }
        };
        loop {
            match stream.next().await {
                Ok(Some(Piece::Text(text))) => {
                    match token_step(&shard, &rc, &text, every, Instant::now()) {
                        Step::More => {}
                        Step::Done => return HttpEnd::Complete(None),
                        Step::Deadline => return HttpEnd::Deadline,
                        Step::Stopped => return HttpEnd::Stopped,
                    }
                }
                Ok(Some(Piece::End)) => return HttpEnd::Complete(Some(stream)),
                Ok(None) => {
                    let error = UpstreamError::Reset(
                        "the stream ended before the engine said it was done".into(),
                    );
                    return HttpEnd::Failed {
                        error,
                        streamed: true,
                    };
                }
                Err(error) => {
                    return HttpEnd::Failed {
                        error,
                        streamed: true,
                    }
                }
            }
        }
    };
    let outcome = futures_lite::future::or(generate, async {
        let _ = stop.await;
        HttpEnd::Stopped
    })
    .await;
    match outcome {
        HttpEnd::Stopped => {}
        HttpEnd::Deadline => end(&shard, id, deadline_error()),
        HttpEnd::Complete(stream) => {
            end(&shard, id, done());
            if let Some(stream) = stream {
                upstream.recycle(stream).await;
            }
        }
        HttpEnd::Failed { error, streamed } => {
            let (kind, reason) = match (&error, streamed) {
                (UpstreamError::Unreachable(_), _) => {
                    shard.owner.borrow_mut().set_up(&shard, pool, false);
                    (ErrorKind::PoolUnavailable, "engine")
                }
                (UpstreamError::Status { status, .. }, false) if *status >= 500 => {
                    (ErrorKind::PoolUnavailable, "engine")
                }
                (UpstreamError::Status { .. }, false) => (ErrorKind::InvalidParams, "engine"),
                _ => (ErrorKind::WorkerReset, "engine"),
            };
            tracing::warn!(task_id = %id, error = %error, code = %kind, "engine call failed");
            end(
                &shard,
                id,
                Terminal::Error {
                    reason,
                    kind,
                    message: error.to_string(),
                },
            );
        }
    }
}

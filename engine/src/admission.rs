//! Admission (SPEC section 2, "POST /v1/tasks"): the dispatcher's state and rules.
//!
//! The dispatcher owns this value; owner shards report back when a queued task starts
//! and when any task ends, so the per-pool mirror of running and queued tasks is exact
//! up to messages in flight, and errs only on the safe side: a slot freed by an owner is
//! counted busy until its `finished` arrives, so a queue is never over its capacity.
//! Times are milliseconds on a monotonic clock chosen by the caller (`now_ms`).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

use crate::config::{Config, PoolConfig, QueuePolicy, SessionsConfig};
use crate::error::{ApiError, ErrorClass, ErrorKind};
use crate::frame::BudgetRemaining;
use crate::task::{KvHint, TaskSpec};
use crate::types::Priority;

/// Bytes of KV cache the mock engine accounts per context token (a 7B-class model in
/// fp16 holds about 0.5 MiB; the mock reports a small, stable figure).
pub const KV_BYTES_PER_TOKEN: u64 = 1024;
/// The states of `model_state`.
pub const MODEL_STATES: [&str; 6] = [
    "ready", "loading", "draining", "drained", "failed", "retired",
];
/// Most model ids `model_state` keeps (its label budget).
pub const MAX_MODELS: usize = 1024;

/// Retry advice for a pool that exists but is not ready (draining, reloading, down).
pub const UNREADY_RETRY_MS: u64 = 1000;
const EWMA_ALPHA: f64 = 0.2;

/// An exponentially weighted moving average.
#[derive(Clone, Copy, Debug)]
pub struct Ewma(f64);

impl Ewma {
    pub fn get(self) -> f64 {
        self.0
    }

    fn observe(&mut self, v: f64) {
        self.0 += EWMA_ALPHA * (v - self.0);
    }
}

/// The lifecycle of a pool as admission sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolState {
    Ready,
    /// Admission closed; running and queued tasks go on until `until_ms`.
    Draining {
        until_ms: u64,
    },
    /// The drain deadline passed; the pool admits nothing until a reload.
    Drained,
    /// A model switch is under way; the pool keeps admitting unless it was drained.
    /// `was_drained` is the state to return to if the engine cannot load the model.
    Reloading {
        was_drained: bool,
    },
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Ready => "ready",
            PoolState::Draining { .. } => "draining",
            PoolState::Drained => "drained",
            PoolState::Reloading { .. } => "reloading",
        }
    }
}

/// The dispatcher's view of one pool.
#[derive(Debug)]
pub struct PoolMirror {
    pub cfg: PoolConfig,
    /// The model currently served (`*` = any).
    pub model_ref: String,
    pub state: PoolState,
    /// The engine answers its health probe.
    pub up: bool,
    running: u32,
    /// Queued task ids by class (0 interactive, 1 batch), oldest first.
    queued: [VecDeque<Uuid>; 2],
    /// Admission to end of a task that ran, in ms.
    service_ms: Ewma,
    ttft_ms: Ewma,
    tpot_ms: Ewma,
}

impl PoolMirror {
    fn new(cfg: PoolConfig) -> PoolMirror {
        let ttft = cfg.adapter.ttft_ms as f64;
        let tpot = cfg.adapter.tpot_ms as f64;
        PoolMirror {
            model_ref: cfg.model_ref.clone(),
            state: PoolState::Ready,
            up: true,
            running: 0,
            queued: [VecDeque::new(), VecDeque::new()],
            // Until a task has run, assume a typical one of 64 tokens.
            service_ms: Ewma(ttft + 64.0 * tpot),
            ttft_ms: Ewma(ttft),
            tpot_ms: Ewma(tpot),
            cfg,
        }
    }

    pub fn queued_len(&self) -> usize {
        self.queued[0].len() + self.queued[1].len()
    }

    pub fn running(&self) -> u32 {
        self.running
    }

    /// Admitting new tasks.
    pub fn ready(&self) -> bool {
        self.up
            && matches!(
                self.state,
                PoolState::Ready | PoolState::Reloading { was_drained: false }
            )
    }

    fn serves(&self, spec: &TaskSpec) -> bool {
        self.cfg.engine == spec.engine
            && (self.model_ref == "*" || self.model_ref == spec.model_ref)
    }

    fn occupancy(&self) -> f64 {
        (f64::from(self.running) + self.queued_len() as f64) / f64::from(self.cfg.slots)
    }

    /// Predicted time from admission to the end of decode, without queueing.
    pub fn predicted_decode_ms(&self, spec: &TaskSpec) -> u64 {
        (self.ttft_ms.get() + f64::from(spec.expected_out()) * self.tpot_ms.get()).ceil() as u64
    }

    /// Predicted wait before a task at `position` starts.
    pub fn predicted_start_ms(&self, position: u32) -> u64 {
        if position == 0 {
            return 0;
        }
        let rounds = (f64::from(position) / f64::from(self.cfg.slots)).ceil();
        (rounds * self.service_ms.get()).ceil() as u64
    }

    /// Predicted time until everything admitted now has finished: the retry advice of
    /// a full queue.
    pub fn predicted_drain_ms(&self) -> u64 {
        let work = f64::from(self.running) + self.queued_len() as f64;
        ((work / f64::from(self.cfg.slots)) * self.service_ms.get())
            .ceil()
            .max(1.0) as u64
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budget {
    pub tokens: u64,
    pub time_ms: u64,
    pub cost: f64,
}

#[derive(Clone, Debug, Default)]
struct Session {
    turns: u32,
    last_ms: u64,
    /// The time of this session's newest entry in `session_touches` (the first task of
    /// its latest granularity window, or the last sweep that kept it for a reservation).
    touch_ms: u64,
    /// The pool holding this session's KV cache (affinity), if any.
    kv_pool: Option<usize>,
    kv_tokens: u64,
    reserved: Budget,
    spent: Budget,
}

/// What a session looks like to `GET /v1/sessions/{id}`.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionView {
    pub ttl_ms_remaining: u64,
    pub turns: u32,
    pub kv_bytes: u64,
    pub kv_warmth: bool,
    pub budgets: BudgetRemaining,
}

/// The answer to an admitted task, kept for idempotent resubmission.
#[derive(Clone, Debug, PartialEq)]
pub struct Admitted {
    pub task_id: Uuid,
    pub pool: usize,
    pub queue_position: u32,
    pub predicted_start_ms: u64,
    pub backoff_ms: u64,
    pub predicted_decode_ms: u64,
    pub kv_warmth: bool,
    /// Budget remainders after this task's reservation, when budgets are configured.
    pub budgets: Option<BudgetRemaining>,
    /// A queued task to evict for this one (drop-lru).
    pub evict: Option<Uuid>,
    /// True when this is a resubmission of a task already admitted.
    pub duplicate: bool,
}

#[derive(Debug)]
struct Entry {
    pool: usize,
    digest: [u8; 16],
    session: Uuid,
    admitted: Admitted,
    reserved: Budget,
    /// 0 interactive, 1 batch.
    class: usize,
    in_queue: bool,
    /// `Some(t)`: finished, forgotten at `t`.
    expires_ms: Option<u64>,
    prompt_tokens: u64,
}

/// How a task ended, as its owner shard reports it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub tokens_out: u32,
    /// First to last token.
    pub decode_ms: u64,
    /// Admission to first token, if a token came.
    pub ttft_ms: Option<u64>,
    /// Start of execution to end, if it ran.
    pub service_ms: Option<u64>,
    pub ran: bool,
}

/// The dispatcher's admission state.
pub struct Admission {
    pub pools: Vec<PoolMirror>,
    /// `model_state{model_id, state}`: every model seen, with its current state,
    /// oldest first (bounded by [`MAX_MODELS`]).
    models: Vec<(String, &'static str)>,
    /// Model verifications on reload: [engine][ok, failed].
    pub catalog: [[u64; 2]; 4],
    /// Bumped by every change to a pool's state, model or health, so that views of
    /// the pools (capabilities) can be cached until it moves.
    pub pools_version: u64,
    sessions: HashMap<Uuid, Session>,
    /// (time of a touch, session), oldest first: a session whose newest touch is older
    /// than the TTL expires. A session touched again (at least `touch_granularity`
    /// later) leaves a stale entry behind, which is skipped when it comes up; so
    /// expiring costs O(expired), not O(sessions), and a busy session adds at most one
    /// entry per granularity however many tasks it runs.
    session_touches: VecDeque<(u64, Uuid)>,
    tasks: HashMap<Uuid, Entry>,
    expiries: VecDeque<(u64, Uuid)>,
    scfg: SessionsConfig,
    retention_ms: u64,
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        let mut models: Vec<(String, &'static str)> = Vec::new();
        for p in &config.pools {
            if !models.iter().any(|(m, _)| *m == p.model_ref) {
                models.push((p.model_ref.clone(), "ready"));
            }
        }
        Admission {
            models,
            catalog: [[0; 2]; 4],
            pools_version: 0,
            pools: config.pools.iter().cloned().map(PoolMirror::new).collect(),
            sessions: HashMap::new(),
            session_touches: VecDeque::new(),
            tasks: HashMap::new(),
            expiries: VecDeque::new(),
            scfg: config.sessions.clone(),
            retention_ms: config.stream.retention_ms,
        }
    }

    fn budgets_active(&self) -> bool {
        self.scfg.tokens_budget > 0 || self.scfg.time_budget_ms > 0 || self.scfg.cost_budget > 0.0
    }

    fn remaining(&self, s: &Session) -> BudgetRemaining {
        let c = &self.scfg;
        let used = |spent: f64, reserved: f64| spent + reserved;
        BudgetRemaining {
            tokens_budget_remaining: (c.tokens_budget > 0).then(|| {
                c.tokens_budget
                    .saturating_sub(s.spent.tokens + s.reserved.tokens)
            }),
            time_budget_remaining_ms: (c.time_budget_ms > 0).then(|| {
                c.time_budget_ms
                    .saturating_sub(s.spent.time_ms + s.reserved.time_ms)
            }),
            cost_budget_remaining: (c.cost_budget > 0.0)
                .then(|| (c.cost_budget - used(s.spent.cost, s.reserved.cost)).max(0.0)),
        }
    }

    fn live_session(&self, id: &Uuid, now_ms: u64) -> Option<&Session> {
        self.sessions
            .get(id)
            .filter(|s| now_ms.saturating_sub(s.last_ms) <= self.scfg.ttl_ms)
    }

    /// Decides on a task, in SPEC order, and commits the decision.
    pub fn admit(&mut self, spec: &TaskSpec, now_ms: u64) -> Result<Admitted, ApiError> {
        // The digest (a hash of the whole request) is only needed to compare with a
        // task already known, and to remember an admitted one: refusals skip it.
        if let Some(e) = self.tasks.get(&spec.task_id) {
            if e.digest == spec.digest() {
                let mut again = e.admitted.clone();
                again.duplicate = true;
                again.evict = None;
                return Ok(again);
            }
            return Err(ApiError::new(
                ErrorClass::Conflict,
                ErrorKind::InvalidParams,
                "task_id: already used by a task with a different body",
            ));
        }

        // 1 + 2: the pools serving engine and model, then validation against them.
        // Plain passes over the (few) pools: no allocation on the refusal paths.
        let n = self.pools.len();
        let serves = |i: usize| self.pools[i].serves(spec);
        let fits = |i: usize| {
            let p = &self.pools[i].cfg;
            serves(i) && p.workloads.contains(&spec.workload) && spec.ctx <= p.ctx_max
        };
        let candidate = |i: usize| fits(i) && self.pools[i].ready();
        let Some(first_serving) = (0..n).find(|&i| serves(i)) else {
            return Err(ApiError::new(
                ErrorClass::Unavailable,
                ErrorKind::PoolUnavailable,
                format!(
                    "model_ref: no pool serves model {:?} on engine {}",
                    spec.model_ref,
                    spec.engine.as_str()
                ),
            )
            .with_engine(spec.engine));
        };
        let Some(first_fitting) = (0..n).find(|&i| fits(i)) else {
            let p = &self.pools[first_serving].cfg;
            let msg: Cow<'static, str> = if !p.workloads.contains(&spec.workload) {
                format!(
                    "workload: {} is not supported by the pools serving this model",
                    spec.workload.as_str()
                )
                .into()
            } else {
                let max = (0..n)
                    .filter(|&i| serves(i))
                    .map(|i| self.pools[i].cfg.ctx_max)
                    .max();
                format!(
                    "ctx: {} is more than ctx_max {}",
                    spec.ctx,
                    max.unwrap_or(0)
                )
                .into()
            };
            return Err(ApiError::invalid(msg).with_engine(spec.engine));
        };
        if !(0..n).any(candidate) {
            let p = &self.pools[first_fitting];
            return Err(ApiError::new(
                ErrorClass::Unavailable,
                ErrorKind::PoolUnready,
                format!(
                    "pool {} is not ready (draining, reloading or down)",
                    p.cfg.id
                ),
            )
            .with_engine(spec.engine)
            .with_pool(p.cfg.id.clone())
            .retry_after_ms(UNREADY_RETRY_MS));
        }
        let session = self
            .live_session(&spec.session_id, now_ms)
            .cloned()
            .unwrap_or_default();
        let want_warm = spec.kv_hint != Some(KvHint::Cold);
        let pool = match session.kv_pool {
            Some(p) if want_warm && p < n && candidate(p) => p,
            _ => (0..n)
                .filter(|&i| candidate(i))
                .min_by(|&a, &b| {
                    self.pools[a]
                        .occupancy()
                        .total_cmp(&self.pools[b].occupancy())
                })
                .expect("a candidate exists"),
        };
        let kv_warmth = want_warm && session.kv_pool == Some(pool);
        // 3 (first): room for a new session. Sessions are few-hundred-byte records kept
        // for their TTL; the bound keeps a flood of fresh session ids from growing memory
        // without limit.
        if !self.sessions.contains_key(&spec.session_id)
            && self.sessions.len() >= self.scfg.max_sessions
        {
            self.expire_sessions(now_ms);
            if self.sessions.len() >= self.scfg.max_sessions {
                let next_expiry = self
                    .session_touches
                    .front()
                    .map_or(1, |(t, _)| (t + self.scfg.ttl_ms).saturating_sub(now_ms));
                return Err(ApiError::new(
                    ErrorClass::TooManyRequests,
                    ErrorKind::AdmissionReject,
                    format!(
                        "{} sessions are live (sessions.max_sessions); a new one can start when one expires",
                        self.sessions.len()
                    ),
                )
                .with_engine(spec.engine)
                .with_pool(self.pools[pool].cfg.id.clone())
                .policy("sessions-full")
                .retriable(true)
                .retry_after_ms(next_expiry.max(1)));
            }
        }
        let mirror = &self.pools[pool];

        // 3: session turns and budgets.
        let refuse = |label: &'static str, msg: String| {
            ApiError::new(ErrorClass::TooManyRequests, ErrorKind::AdmissionReject, msg)
                .with_engine(spec.engine)
                .with_pool(mirror.cfg.id.clone())
                .policy(label)
        };
        if session.turns >= self.scfg.max_turns {
            return Err(refuse(
                "session-turns",
                format!(
                    "session_id: the session has used all {} turns",
                    self.scfg.max_turns
                ),
            ));
        }
        let predicted_decode_ms = mirror.predicted_decode_ms(spec);
        let reserve = Budget {
            tokens: u64::from(spec.max_tokens),
            time_ms: predicted_decode_ms,
            cost: f64::from(spec.max_tokens) * mirror.cfg.cost_per_token,
        };
        let c = &self.scfg;
        let (s, r) = (&session.spent, &session.reserved);
        if c.tokens_budget > 0 && s.tokens + r.tokens + reserve.tokens > c.tokens_budget {
            return Err(refuse(
                "budget-tokens",
                "max_tokens: the session's token budget cannot cover this task".into(),
            ));
        }
        if c.time_budget_ms > 0 && s.time_ms + r.time_ms + reserve.time_ms > c.time_budget_ms {
            return Err(refuse(
                "budget-time",
                "session_id: the session's time budget cannot cover this task".into(),
            ));
        }
        if c.cost_budget > 0.0 && s.cost + r.cost + reserve.cost > c.cost_budget {
            return Err(refuse(
                "budget-cost",
                "session_id: the session's cost budget cannot cover this task".into(),
            ));
        }

        // 4: deadline, at the position the task would take.
        let class = usize::from(spec.priority == Priority::Batch);
        let queued_total = mirror.queued_len();
        let must_queue = mirror.running >= mirror.cfg.slots || queued_total > 0;
        let position = if !must_queue {
            0
        } else if class == 0 {
            mirror.queued[0].len() as u32 + 1
        } else {
            queued_total as u32 + 1
        };
        let predicted_start_ms = mirror.predicted_start_ms(position);
        if predicted_start_ms + predicted_decode_ms > spec.deadline_ms {
            return Err(ApiError::new(
                ErrorClass::BadRequest,
                ErrorKind::DeadlineUnmet,
                format!(
                    "deadline_ms: predicted start {predicted_start_ms} ms + decode {predicted_decode_ms} ms exceeds {} ms",
                    spec.deadline_ms
                ),
            )
            .with_engine(spec.engine)
            .with_pool(mirror.cfg.id.clone()));
        }

        // 5: queue capacity and policy.
        let mut evict = None;
        let mut position = position;
        if must_queue && queued_total >= mirror.cfg.queue_capacity as usize {
            let drain = mirror.predicted_drain_ms();
            match mirror.cfg.policy {
                QueuePolicy::Reject => {
                    return Err(ApiError::new(
                        ErrorClass::TooManyRequests,
                        ErrorKind::AdmissionReject,
                        format!(
                            "pool {} queue is full ({} queued)",
                            mirror.cfg.id, queued_total
                        ),
                    )
                    .with_engine(spec.engine)
                    .with_pool(mirror.cfg.id.clone())
                    .policy("reject")
                    .retry_after_ms(drain));
                }
                QueuePolicy::DropLru => {
                    let victim_class = if mirror.queued[1].is_empty() { 0 } else { 1 };
                    match mirror.queued[victim_class].front() {
                        Some(v) => {
                            evict = Some(*v);
                            // The victim leaves; positions behind it move up by one.
                            if class >= victim_class {
                                position -= 1;
                            }
                        }
                        None => {
                            return Err(ApiError::new(
                                ErrorClass::TooManyRequests,
                                ErrorKind::QueueFullDropLru,
                                format!(
                                    "pool {} queue is full and nothing can be evicted",
                                    mirror.cfg.id
                                ),
                            )
                            .with_engine(spec.engine)
                            .with_pool(mirror.cfg.id.clone())
                            .policy("drop-lru")
                            .retry_after_ms(drain));
                        }
                    }
                }
            }
        }
        let predicted_start_ms = self.pools[pool].predicted_start_ms(position);

        // Commit.
        if let Some(v) = evict {
            self.pools[pool]
                .queued
                .iter_mut()
                .for_each(|q| q.retain(|t| *t != v));
            if let Some(e) = self.tasks.get_mut(&v) {
                e.in_queue = false;
            }
        }
        let m = &mut self.pools[pool];
        if position == 0 && !must_queue {
            m.running += 1;
        } else {
            m.queued[class].push_back(spec.task_id);
        }
        let ttl = self.scfg.ttl_ms;
        let granularity = self.touch_granularity();
        let known = self.sessions.contains_key(&spec.session_id);
        let sess = self.sessions.entry(spec.session_id).or_default();
        let mut new_entry = !known || now_ms.saturating_sub(sess.touch_ms) >= granularity;
        if now_ms.saturating_sub(sess.last_ms) > ttl && sess.turns > 0 {
            *sess = Session::default();
            new_entry = true;
        }
        sess.turns += 1;
        sess.last_ms = now_ms;
        // A session busy with many tasks keeps one entry per `granularity`, not one per
        // task: the queue's length is bounded by sessions, not by tasks per TTL.
        if new_entry {
            sess.touch_ms = now_ms;
            self.session_touches.push_back((now_ms, spec.session_id));
        }
        if !want_warm || sess.kv_pool != Some(pool) {
            sess.kv_tokens = 0;
        }
        sess.kv_pool = Some(pool);
        sess.reserved.tokens += reserve.tokens;
        sess.reserved.time_ms += reserve.time_ms;
        sess.reserved.cost += reserve.cost;
        let sess = sess.clone();
        let budgets = self.budgets_active().then(|| self.remaining(&sess));
        let admitted = Admitted {
            task_id: spec.task_id,
            pool,
            queue_position: position,
            predicted_start_ms,
            backoff_ms: predicted_start_ms,
            predicted_decode_ms,
            kv_warmth,
            budgets,
            evict,
            duplicate: false,
        };
        self.tasks.insert(
            spec.task_id,
            Entry {
                pool,
                digest: spec.digest(),
                session: spec.session_id,
                admitted: admitted.clone(),
                reserved: reserve,
                class,
                in_queue: must_queue,
                expires_ms: None,
                prompt_tokens: spec.prompt_tokens(),
            },
        );
        Ok(admitted)
    }

    /// Undoes an admission whose task could not be handed to its owner shard.
    pub fn rollback(&mut self, admitted: &Admitted) {
        let Some(e) = self.tasks.remove(&admitted.task_id) else {
            return;
        };
        let m = &mut self.pools[e.pool];
        if e.in_queue {
            m.queued
                .iter_mut()
                .for_each(|q| q.retain(|t| *t != admitted.task_id));
        } else {
            m.running = m.running.saturating_sub(1);
        }
        if let Some(v) = admitted.evict {
            if let Some(ve) = self.tasks.get_mut(&v) {
                ve.in_queue = true;
                self.pools[e.pool].queued[ve.class].push_front(v);
            }
        }
        if let Some(s) = self.sessions.get_mut(&e.session) {
            s.turns = s.turns.saturating_sub(1);
            release(&mut s.reserved, &e.reserved);
        }
    }

    /// A queued task started on its owner shard.
    pub fn on_started(&mut self, task: Uuid) {
        let Some(e) = self.tasks.get_mut(&task) else {
            return;
        };
        let m = &mut self.pools[e.pool];
        if e.in_queue {
            m.queued.iter_mut().for_each(|q| q.retain(|t| *t != task));
            e.in_queue = false;
        }
        m.running += 1;
    }

    /// A task ended (any way); settles its session and starts its retention window.
    pub fn on_finished(&mut self, task: Uuid, outcome: Outcome, now_ms: u64) {
        let Some(e) = self.tasks.get_mut(&task) else {
            return;
        };
        if e.expires_ms.is_some() {
            return;
        }
        let m = &mut self.pools[e.pool];
        if e.in_queue {
            m.queued.iter_mut().for_each(|q| q.retain(|t| *t != task));
            e.in_queue = false;
        } else if outcome.ran {
            m.running = m.running.saturating_sub(1);
        }
        if let Some(s) = outcome.service_ms {
            m.service_ms.observe(s as f64);
        }
        if let Some(t) = outcome.ttft_ms {
            m.ttft_ms.observe(t as f64);
        }
        if outcome.tokens_out > 1 {
            m.tpot_ms
                .observe(outcome.decode_ms as f64 / f64::from(outcome.tokens_out - 1));
        }
        let cost = f64::from(outcome.tokens_out) * m.cfg.cost_per_token;
        let expires = now_ms + self.retention_ms;
        e.expires_ms = Some(expires);
        let (pool, session, reserved, prompt) = (e.pool, e.session, e.reserved, e.prompt_tokens);
        self.expiries.push_back((expires, task));
        if let Some(s) = self.sessions.get_mut(&session) {
            release(&mut s.reserved, &reserved);
            s.spent.tokens += u64::from(outcome.tokens_out);
            s.spent.time_ms += outcome.decode_ms;
            s.spent.cost += cost;
            if s.kv_pool == Some(pool) {
                s.kv_tokens += prompt + u64::from(outcome.tokens_out);
            }
        }
    }

    /// The pool of a known task (live or within retention).
    pub fn locate(&self, task: &Uuid) -> Option<usize> {
        self.tasks.get(task).map(|e| e.pool)
    }

    pub fn session(&self, id: &Uuid, now_ms: u64) -> SessionView {
        let fresh = Session::default();
        let (s, ttl) = match self.live_session(id, now_ms) {
            Some(s) => (
                s,
                self.scfg
                    .ttl_ms
                    .saturating_sub(now_ms.saturating_sub(s.last_ms)),
            ),
            None => (&fresh, self.scfg.ttl_ms),
        };
        SessionView {
            ttl_ms_remaining: ttl,
            turns: s.turns,
            kv_bytes: s.kv_tokens * KV_BYTES_PER_TOKEN,
            kv_warmth: s.kv_pool.is_some(),
            budgets: self.remaining(s),
        }
    }

    pub fn delete_session(&mut self, id: &Uuid) {
        self.sessions.remove(id);
    }

    /// Forgets finished tasks past retention and sessions past their TTL; ends drains
    /// whose deadline passed.
    pub fn sweep(&mut self, now_ms: u64) {
        let mut drained = Vec::new();
        for p in &mut self.pools {
            if let PoolState::Draining { until_ms } = p.state {
                if now_ms >= until_ms {
                    p.state = PoolState::Drained;
                    drained.push(p.model_ref.clone());
                    self.pools_version += 1;
                }
            }
        }
        for model in drained {
            self.settle_model(&model);
        }
        while let Some(&(t, id)) = self.expiries.front() {
            if t > now_ms {
                break;
            }
            self.expiries.pop_front();
            if self.tasks.get(&id).is_some_and(|e| e.expires_ms == Some(t)) {
                self.tasks.remove(&id);
            }
        }
        self.expire_sessions(now_ms);
    }

    /// Touches of one session closer together than this share one `session_touches`
    /// entry (its time is the first of them).
    fn touch_granularity(&self) -> u64 {
        (self.scfg.ttl_ms / 16).clamp(1, 1000)
    }

    /// Removes the sessions not touched for a TTL, except those with a task still
    /// holding a reservation (they are looked at again a TTL later).
    fn expire_sessions(&mut self, now_ms: u64) {
        let ttl = self.scfg.ttl_ms;
        while let Some(&(t, id)) = self.session_touches.front() {
            if now_ms.saturating_sub(t) <= ttl {
                break;
            }
            self.session_touches.pop_front();
            let Some(s) = self.sessions.get_mut(&id) else {
                continue; // deleted
            };
            if s.touch_ms != t {
                continue; // touched again since: a newer entry stands for it
            }
            if s.reserved.tokens > 0 || s.reserved.time_ms > 0 {
                // A task still holds a reservation: look again a TTL from now.
                s.touch_ms = now_ms;
                self.session_touches.push_back((now_ms, id));
            } else if now_ms.saturating_sub(s.last_ms) > ttl {
                self.sessions.remove(&id);
            } else {
                // Used again within the entry's granularity: it expires within that
                // much from now. Its entry goes back in front, with its last use.
                s.touch_ms = s.last_ms;
                self.session_touches.push_front((s.last_ms, id));
                break;
            }
        }
    }

    /// Every model seen and its state now.
    pub fn model_states(&self) -> &[(String, &'static str)] {
        &self.models
    }

    fn set_model_state(&mut self, model: &str, state: &'static str) {
        match self.models.iter_mut().find(|(m, _)| m == model) {
            Some(entry) => entry.1 = state,
            None => {
                if self.models.len() >= MAX_MODELS {
                    if let Some(i) = self
                        .models
                        .iter()
                        .position(|(_, s)| matches!(*s, "retired" | "failed"))
                    {
                        self.models.remove(i);
                    }
                }
                self.models.push((model.to_string(), state));
            }
        }
    }

    /// The state a model is in given the pools serving it now.
    fn settle_model(&mut self, model: &str) {
        let states: Vec<PoolState> = self
            .pools
            .iter()
            .filter(|p| p.model_ref == model)
            .map(|p| p.state)
            .collect();
        let state = if states.iter().any(|s| {
            matches!(
                s,
                PoolState::Ready | PoolState::Reloading { was_drained: false }
            )
        }) {
            "ready"
        } else if states
            .iter()
            .any(|s| matches!(s, PoolState::Draining { .. }))
        {
            "draining"
        } else if states.is_empty() {
            "retired"
        } else {
            "drained"
        };
        self.set_model_state(model, state);
    }

    /// The engine of a pool went down (no new tasks) or came back.
    pub fn set_up(&mut self, pool: usize, up: bool) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.up = up;
            self.pools_version += 1;
        }
    }

    /// The index of the pool named `id`.
    pub fn pool_index(&self, id: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.cfg.id == id)
    }

    /// Closes admission to a pool; its tasks have `deadline_ms` to finish. Draining a
    /// draining pool keeps the earlier deadline. Returns the time left.
    pub fn drain(&mut self, pool: usize, deadline_ms: u64, now_ms: u64) -> Result<u64, ApiError> {
        let p = &mut self.pools[pool];
        match p.state {
            PoolState::Draining { until_ms } => Ok(until_ms.saturating_sub(now_ms)),
            PoolState::Reloading { .. } => Err(conflict(&p.cfg.id, "a reload is in progress")),
            PoolState::Ready | PoolState::Drained => {
                p.state = PoolState::Draining {
                    until_ms: now_ms + deadline_ms,
                };
                self.pools_version += 1;
                let model = p.model_ref.clone();
                self.settle_model(&model);
                Ok(deadline_ms)
            }
        }
    }

    /// Starts a switch to `model`; refused while another reload or a drain is in
    /// progress.
    pub fn begin_reload(&mut self, pool: usize, model: &str) -> Result<(), ApiError> {
        self.try_begin_reload(pool)?;
        self.pools_version += 1;
        if self.pools[pool].model_ref != model {
            self.set_model_state(model, "loading");
        }
        Ok(())
    }

    fn try_begin_reload(&mut self, pool: usize) -> Result<(), ApiError> {
        let p = &mut self.pools[pool];
        match p.state {
            PoolState::Reloading { .. } => {
                Err(conflict(&p.cfg.id, "another reload is in progress"))
            }
            PoolState::Draining { .. } => Err(conflict(&p.cfg.id, "a drain is in progress")),
            PoolState::Ready => {
                p.state = PoolState::Reloading { was_drained: false };
                Ok(())
            }
            PoolState::Drained => {
                p.state = PoolState::Reloading { was_drained: true };
                Ok(())
            }
        }
    }

    /// Ends a switch to `model`: on success the pool serves it (a drained pool comes
    /// back ready); on failure the pool returns to its previous state and model.
    pub fn end_reload(&mut self, pool: usize, model: &str, loaded: bool) {
        let p = &mut self.pools[pool];
        let PoolState::Reloading { was_drained } = p.state else {
            return;
        };
        let engine = crate::types::Engine::ALL
            .iter()
            .position(|e| *e == p.cfg.engine)
            .unwrap_or(0);
        self.catalog[engine][usize::from(!loaded)] += 1;
        let old = p.model_ref.clone();
        self.pools_version += 1;
        if loaded {
            p.model_ref = model.to_string();
            p.state = PoolState::Ready;
        } else {
            p.state = if was_drained {
                PoolState::Drained
            } else {
                PoolState::Ready
            };
        }
        self.settle_model(&old);
        if loaded {
            self.settle_model(model);
        } else if model != old {
            self.set_model_state(model, "failed");
        }
    }

    /// `GET /v1/capabilities` from the pools as they are now: concurrency counts the
    /// slots of pools that admit tasks, and each pool shows its model and state.
    pub fn capabilities(&self, max_body_bytes: usize) -> serde_json::Value {
        let mut engines: Vec<serde_json::Value> = Vec::new();
        for engine in crate::types::Engine::ALL {
            let pools: Vec<&PoolMirror> = self
                .pools
                .iter()
                .filter(|p| p.cfg.engine == engine)
                .collect();
            if pools.is_empty() {
                continue;
            }
            let mut workloads = Vec::new();
            let mut policies = Vec::new();
            for p in &pools {
                for w in &p.cfg.workloads {
                    if !workloads.contains(w) {
                        workloads.push(*w);
                    }
                }
                if !policies.contains(&p.cfg.policy.as_str()) {
                    policies.push(p.cfg.policy.as_str());
                }
            }
            let ready = pools.iter().filter(|p| p.ready());
            engines.push(serde_json::json!({
                "engine": engine,
                "ctx_max": pools.iter().map(|p| p.cfg.ctx_max).max(),
                "supported_workloads": workloads,
                "concurrency": ready.clone().map(|p| u64::from(p.cfg.slots)).sum::<u64>(),
                "rate_limits": {
                    "queue_capacity": ready.map(|p| u64::from(p.cfg.queue_capacity)).sum::<u64>(),
                    "queue_policies": policies,
                    "max_body_bytes": max_body_bytes,
                },
                "features": ["sse", "sse-resume", "cancel", "sessions", "budgets", "kv-affinity", "deterministic-mock"],
                "pools": pools.iter().map(|p| serde_json::json!({
                    "id": p.cfg.id, "model_ref": p.model_ref, "state": p.state.as_str(),
                    "ready": p.ready(), "slots": p.cfg.slots, "engine_version": p.cfg.engine_version,
                })).collect::<Vec<_>>(),
            }));
        }
        serde_json::json!({"api_version": "1.0.0", "engines": engines})
    }

    pub fn live_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|e| e.expires_ms.is_none())
            .count()
    }
}

fn conflict(pool: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorClass::Conflict,
        ErrorKind::InvalidParams,
        format!("pool {pool}: {why}"),
    )
    .with_pool(pool)
}

fn release(reserved: &mut Budget, r: &Budget) {
    reserved.tokens = reserved.tokens.saturating_sub(r.tokens);
    reserved.time_ms = reserved.time_ms.saturating_sub(r.time_ms);
    reserved.cost = (reserved.cost - r.cost).max(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolConfig;
    use crate::task::tests::body;

    fn spec(task: u128, session: u128, extra: &str) -> TaskSpec {
        let mut s = TaskSpec::parse(body(extra).as_bytes()).unwrap();
        s.task_id = Uuid::from_u128(task);
        s.session_id = Uuid::from_u128(session);
        s
    }

    fn one_pool(f: impl FnOnce(&mut PoolConfig)) -> Admission {
        let mut c = Config::default();
        c.pools[0].slots = 1;
        c.pools[0].queue_capacity = 2;
        f(&mut c.pools[0]);
        Admission::new(&c)
    }

    #[test]
    fn positions_count_up_with_one_slot() {
        let mut a = one_pool(|_| {});
        let pos: Vec<u32> = (1..=3)
            .map(|i| a.admit(&spec(i, i, ""), 0).unwrap().queue_position)
            .collect();
        assert_eq!(pos, [0, 1, 2]);
        let p1 = a.admit(&spec(9, 9, ""), 0).unwrap_err();
        assert_eq!(p1.kind, ErrorKind::AdmissionReject);
        assert_eq!(p1.policy_label, Some("reject"));
        assert!(p1.retry_after_ms.unwrap() > 0);
    }

    #[test]
    fn interactive_goes_before_batch() {
        let mut a = one_pool(|p| p.queue_capacity = 5);
        a.admit(&spec(1, 1, ""), 0).unwrap();
        let b = a
            .admit(&spec(2, 2, "").with_priority(Priority::Batch), 0)
            .unwrap();
        assert_eq!(b.queue_position, 1);
        let i = a.admit(&spec(3, 3, ""), 0).unwrap();
        assert_eq!(i.queue_position, 1, "interactive jumps the batch task");
    }

    #[test]
    fn drop_lru_evicts_the_oldest_batch_task() {
        let mut a = one_pool(|p| p.policy = QueuePolicy::DropLru);
        a.admit(&spec(1, 1, ""), 0).unwrap();
        a.admit(&spec(2, 2, ""), 0).unwrap();
        a.admit(&spec(3, 3, "").with_priority(Priority::Batch), 0)
            .unwrap();
        let n = a.admit(&spec(4, 4, ""), 0).unwrap();
        assert_eq!(n.evict, Some(Uuid::from_u128(3)));
        assert_eq!(n.queue_position, 2);
        // Nothing evictable with a zero-capacity queue.
        let mut z = one_pool(|p| {
            p.policy = QueuePolicy::DropLru;
            p.queue_capacity = 0;
        });
        z.admit(&spec(1, 1, ""), 0).unwrap();
        let e = z.admit(&spec(2, 2, ""), 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::QueueFullDropLru);
        assert_eq!(e.policy_label, Some("drop-lru"));
    }

    #[test]
    fn a_finished_task_frees_its_slot_and_teaches_the_eta() {
        let mut a = one_pool(|_| {});
        a.admit(&spec(1, 1, ""), 0).unwrap();
        let q = a.admit(&spec(2, 2, ""), 0).unwrap();
        let before = q.predicted_start_ms;
        a.on_finished(
            Uuid::from_u128(1),
            Outcome {
                tokens_out: 8,
                decode_ms: 7,
                ttft_ms: Some(1),
                service_ms: Some(5000),
                ran: true,
            },
            10,
        );
        a.on_started(Uuid::from_u128(2));
        let next = a.admit(&spec(3, 3, ""), 10).unwrap();
        assert_eq!(next.queue_position, 1);
        assert!(
            next.predicted_start_ms > before,
            "{} vs {before}",
            next.predicted_start_ms
        );
    }

    #[test]
    fn resubmission_is_idempotent_and_a_changed_body_conflicts() {
        let mut a = one_pool(|_| {});
        let first = a.admit(&spec(1, 1, ""), 0).unwrap();
        let again = a.admit(&spec(1, 1, ""), 0).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.queue_position, first.queue_position);
        let e = a.admit(&spec(1, 1, r#","seed":5"#), 0).unwrap_err();
        assert_eq!(e.class, ErrorClass::Conflict);
    }

    /// The outcome of a task that ended before it ran.
    fn never_ran() -> Outcome {
        Outcome {
            tokens_out: 0,
            decode_ms: 0,
            ttft_ms: None,
            service_ms: None,
            ran: false,
        }
    }

    #[test]
    fn sessions_are_bounded_and_expire_in_order() {
        let mut c = Config::default();
        c.sessions.max_sessions = 2;
        c.sessions.ttl_ms = 1000;
        c.pools[0].slots = 100;
        let mut a = Admission::new(&c);
        a.admit(&spec(1, 1, ""), 0).unwrap();
        a.admit(&spec(2, 2, ""), 400).unwrap();
        // A known session may go on; a third one may not, until one expires.
        a.admit(&spec(3, 1, ""), 500).unwrap();
        let e = a.admit(&spec(4, 3, ""), 600).unwrap_err();
        assert_eq!(e.class, ErrorClass::TooManyRequests);
        assert_eq!(e.kind, ErrorKind::AdmissionReject);
        assert_eq!(e.policy_label, Some("sessions-full"));
        assert!(e.retriable);
        // Session 1 was touched again at 500, so the first to expire is session 2
        // (touched at 400, expires at 1400); the stale entry of session 1 at 0 is
        // skipped. The advice counts from the oldest touch still queued.
        assert!(e.retry_after_ms.is_some_and(|ms| ms > 0), "{e:?}");
        // Reservations keep a session; settle the tasks so nothing is reserved.
        for t in 1..=3 {
            let outcome = never_ran();
            a.on_finished(Uuid::from_u128(t), outcome, 600);
        }
        a.sweep(1401);
        a.admit(&spec(5, 3, ""), 1401).unwrap();
        assert_eq!(
            a.session(&Uuid::from_u128(2), 1401).turns,
            0,
            "session 2 expired"
        );
        assert_eq!(
            a.session(&Uuid::from_u128(1), 1401).turns,
            2,
            "session 1 lives on"
        );
    }

    #[test]
    fn a_busy_session_keeps_one_expiry_entry_and_expires_a_ttl_after_its_last_task() {
        let mut c = Config::default();
        c.sessions.ttl_ms = 16_000; // touches within 1 s share an entry
        c.sessions.max_turns = 10_000;
        c.pools[0].slots = 10_000;
        let mut a = Admission::new(&c);
        for t in 0..1000u64 {
            a.admit(&spec(u128::from(t) + 1, 9, ""), t).unwrap();
        }
        assert_eq!(a.session_touches.len(), 1, "1,000 tasks in 1 s: one entry");
        a.admit(&spec(5000, 9, ""), 1500).unwrap();
        assert_eq!(a.session_touches.len(), 2, "a second later: a second entry");
        for t in 1..=1001 {
            let outcome = never_ran();
            let id = if t == 1001 { 5000 } else { t };
            a.on_finished(Uuid::from_u128(id), outcome, 1600);
        }
        // The last task at 1500: alive until 17,500, gone after.
        a.sweep(17_500);
        assert_eq!(a.sessions.len(), 1);
        a.sweep(17_501);
        assert_eq!(a.sessions.len(), 0);
        assert!(a.session_touches.is_empty());

        // Used again within its entry's granularity (entry 0, last use 999): kept at
        // 16,001 (a TTL after the entry), gone a TTL after its last use.
        let mut a = Admission::new(&c);
        a.admit(&spec(1, 8, ""), 0).unwrap();
        a.admit(&spec(2, 8, ""), 999).unwrap();
        for t in 1..=2 {
            let outcome = never_ran();
            a.on_finished(Uuid::from_u128(t), outcome, 1000);
        }
        a.sweep(16_001);
        assert_eq!(a.sessions.len(), 1, "last used at 999");
        a.sweep(16_999);
        assert_eq!(a.sessions.len(), 1);
        a.sweep(17_000);
        assert_eq!(a.sessions.len(), 0);
    }

    #[test]
    fn a_session_with_a_running_task_outlives_its_ttl_then_expires() {
        let mut c = Config::default();
        c.sessions.ttl_ms = 1000;
        c.sessions.tokens_budget = 100;
        let mut a = Admission::new(&c);
        a.admit(&spec(1, 1, ""), 0).unwrap();
        a.sweep(1500); // reserved: kept, looked at again at 2500
        assert_eq!(a.sessions.len(), 1);
        let outcome = Outcome {
            tokens_out: 8,
            decode_ms: 10,
            ttft_ms: Some(1),
            service_ms: Some(10),
            ran: true,
        };
        a.on_finished(Uuid::from_u128(1), outcome, 1600);
        a.sweep(2000);
        assert_eq!(
            a.sessions.len(),
            1,
            "its new entry (1500) is not a TTL old yet"
        );
        a.sweep(2501);
        assert_eq!(a.sessions.len(), 0, "settled and a TTL past: gone");
    }

    #[test]
    fn turns_and_token_budget_are_enforced() {
        let mut c = Config::default();
        c.sessions.max_turns = 2;
        let mut a = Admission::new(&c);
        a.admit(&spec(1, 7, ""), 0).unwrap();
        a.admit(&spec(2, 7, ""), 0).unwrap();
        let e = a.admit(&spec(3, 7, ""), 0).unwrap_err();
        assert_eq!(e.policy_label, Some("session-turns"));
        assert!(!e.retriable);

        let mut c = Config::default();
        c.sessions.tokens_budget = 20;
        let mut a = Admission::new(&c);
        let first = a.admit(&spec(1, 7, ""), 0).unwrap();
        assert_eq!(first.budgets.unwrap().tokens_budget_remaining, Some(12));
        a.admit(&spec(2, 7, ""), 0).unwrap();
        let e = a.admit(&spec(3, 7, ""), 0).unwrap_err();
        assert_eq!(e.policy_label, Some("budget-tokens"));
        // Settling refunds what was not used.
        a.on_finished(
            Uuid::from_u128(1),
            Outcome {
                tokens_out: 2,
                ran: true,
                ..Outcome::default()
            },
            1,
        );
        assert_eq!(
            a.session(&Uuid::from_u128(7), 1)
                .budgets
                .tokens_budget_remaining,
            Some(10)
        );
        a.admit(&spec(3, 7, ""), 1).unwrap();
    }

    #[test]
    fn routing_errors() {
        let mut a = one_pool(|_| {});
        let e = a
            .admit(&spec(1, 1, "").with_engine(crate::types::Engine::Vllm), 0)
            .unwrap_err();
        assert_eq!(
            (e.class, e.kind),
            (ErrorClass::Unavailable, ErrorKind::PoolUnavailable)
        );
        assert!(!e.retriable);
        let mut big = spec(2, 2, "");
        big.ctx = 100_000;
        let e = a.admit(&big, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParams);
        assert!(e.message.contains("ctx"));
        a.pools[0].state = PoolState::Drained;
        let e = a.admit(&spec(3, 3, ""), 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PoolUnready);
        assert!(e.retry_after_ms.is_some());
    }

    #[test]
    fn deadline_unmet_when_prediction_exceeds_it() {
        let mut a = one_pool(|p| {
            p.adapter.ttft_ms = 100;
            p.adapter.tpot_ms = 10;
        });
        let mut s = spec(1, 1, "");
        s.deadline_ms = 150; // 100 + 8 * 10 = 180 > 150
        let e = a.admit(&s, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeadlineUnmet);
        assert_eq!(e.class, ErrorClass::BadRequest);
    }

    #[test]
    fn kv_affinity_prefers_the_last_pool() {
        let mut c = Config::default();
        c.pools.push(PoolConfig {
            id: "b".into(),
            ..PoolConfig::default()
        });
        let mut a = Admission::new(&c);
        let first = a.admit(&spec(1, 5, ""), 0).unwrap();
        assert!(!first.kv_warmth);
        // Load the first pool so that least-loaded would pick the other one.
        for i in 10..13 {
            a.admit(&spec(i, i, ""), 0).unwrap();
        }
        let second = a.admit(&spec(2, 5, ""), 0).unwrap();
        assert_eq!(second.pool, first.pool);
        assert!(second.kv_warmth);
        let cold = a.admit(&spec(3, 5, r#","kv_hint":"cold""#), 0).unwrap();
        assert!(!cold.kv_warmth);
    }

    trait With {
        fn with_priority(self, p: Priority) -> Self;
        fn with_engine(self, e: crate::types::Engine) -> Self;
    }

    impl With for TaskSpec {
        fn with_priority(mut self, p: Priority) -> Self {
            self.priority = p;
            self
        }
        fn with_engine(mut self, e: crate::types::Engine) -> Self {
            self.engine = e;
            self
        }
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use super::*;

    #[test]
    fn drain_and_reload_transitions() {
        let mut a = Admission::new(&Config::default());
        assert_eq!(a.drain(0, 100, 0), Ok(100));
        assert!(!a.pools[0].ready());
        assert_eq!(
            a.drain(0, 500, 10),
            Ok(90),
            "a second drain keeps the first deadline"
        );
        assert_eq!(
            a.begin_reload(0, "m2").unwrap_err().class,
            ErrorClass::Conflict
        );
        assert_eq!(a.model_states(), [("*".to_string(), "draining")]);
        a.sweep(100);
        assert_eq!(a.model_states(), [("*".to_string(), "drained")]);
        assert_eq!(a.pools[0].state, PoolState::Drained);
        a.begin_reload(0, "fail:x").unwrap();
        assert_eq!(
            a.begin_reload(0, "m3").unwrap_err().class,
            ErrorClass::Conflict
        );
        assert_eq!(a.drain(0, 1, 0).unwrap_err().class, ErrorClass::Conflict);
        a.end_reload(0, "fail:x", false);
        assert!(a.model_states().contains(&("fail:x".to_string(), "failed")));
        assert_eq!(
            a.pools[0].state,
            PoolState::Drained,
            "a failed reload rolls back"
        );
        a.begin_reload(0, "m2").unwrap();
        assert!(a.model_states().contains(&("m2".to_string(), "loading")));
        a.end_reload(0, "m2", true);
        assert!(a.model_states().contains(&("m2".to_string(), "ready")));
        assert!(a.model_states().contains(&("*".to_string(), "retired")));
        assert_eq!(a.catalog[0], [1, 1]);
        assert_eq!(a.pools[0].state, PoolState::Ready);
        assert_eq!(a.pools[0].model_ref, "m2");
    }
}

//! Admission (SPEC section 2, "POST /v1/tasks"): the dispatcher's state and rules.
//!
//! The dispatcher owns this value; owner shards report back when a queued task starts
//! and when any task ends, so the per-pool mirror of running and queued tasks is exact
//! up to messages in flight, and errs only on the safe side: a slot freed by an owner is
//! counted busy until its `finished` arrives, so a queue is never over its capacity.
//! Times are milliseconds on a monotonic clock chosen by the caller (`now_ms`).
//!
//! [`Admission::admit`] is the SPEC's order as named steps: a known task first, then
//! [`find_pool`](Admission::find_pool) (routing and validation against the pools),
//! [`check_session`](Admission::check_session), [`check_budgets`](Admission::check_budgets),
//! [`check_deadline`](Admission::check_deadline),
//! [`apply_queue_policy`](Admission::apply_queue_policy), and [`commit`](Admission::commit).

mod pool;
mod session;
mod tenant;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

pub use self::pool::{PoolMirror, PoolState, MAX_MODELS};
use self::session::Session;
pub use self::session::{Budget, SessionView};
use crate::config::{Config, QueuePolicy, SessionsConfig};
use crate::error::{ApiError, ErrorClass, ErrorKind, Policy};
pub use crate::eta::{Eta, Outcome};
use crate::frame::BudgetRemaining;
use crate::task::{KvHint, TaskSpec};
use crate::tenant::TenantId;
use crate::types::{ModelState, Priority};

/// Bytes of KV cache the mock engine accounts per context token (a 7B-class model in
/// fp16 holds about 0.5 MiB; the mock reports a small, stable figure).
pub const KV_BYTES_PER_TOKEN: u64 = 1024;

/// Retry advice for a pool that exists but is not ready (draining, reloading, down).
pub const UNREADY_RETRY_MS: u64 = 1000;

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
    /// A queued task is to be evicted for this one (drop-lru): its owner shard evicts
    /// the oldest queued batch task, else the oldest queued task (it knows the queue).
    pub evict: bool,
    /// True when this is a resubmission of a task already admitted.
    pub duplicate: bool,
}

#[derive(Debug)]
struct Entry {
    pool: usize,
    tenant: TenantId,
    /// Reserved of its tenant's `tokens_per_minute` (prompt and `max_tokens`).
    tenant_tokens: u64,
    digest: [u8; 16],
    session: Option<Uuid>,
    admitted: Admitted,
    reserved: Budget,
    /// 0 interactive, 1 batch.
    class: usize,
    in_queue: bool,
    /// `Some(t)`: finished, forgotten at `t`.
    expires_ms: Option<u64>,
    prompt_tokens: u64,
}

/// The pool a task goes to, from [`Admission::find_pool`].
struct Route {
    pool: usize,
    /// The task asked for its session's KV cache (`kv_hint` reuse or none).
    want_warm: bool,
    /// ... and the pool holds it.
    kv_warmth: bool,
    /// The session as it is before this task.
    session: Session,
}

/// Where a task would stand in its pool's queue.
struct Place {
    /// 0 interactive, 1 batch.
    class: usize,
    /// No free slot, or tasks already waiting.
    must_queue: bool,
    /// 0 = a free slot, else 1 + the tasks ahead of it.
    position: u32,
    predicted_decode_ms: u64,
    /// A queued task is evicted for this one (drop-lru).
    evict: bool,
}

/// The dispatcher's admission state.
pub struct Admission {
    pub pools: Vec<PoolMirror>,
    /// `model_state{model_id, state}`: every model seen, with its current state,
    /// oldest first (bounded by [`MAX_MODELS`]).
    models: Vec<(String, ModelState)>,
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
    /// Every tenant's limits and token bucket, by [`TenantId`].
    tenants: Vec<tenant::Quota>,
    scfg: SessionsConfig,
    retention_ms: u64,
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        let tenants = config.tenants();
        let mut models: Vec<(String, ModelState)> = Vec::new();
        for p in &config.pools {
            if !models.iter().any(|(m, _)| *m == p.model_ref) {
                models.push((p.model_ref.clone(), ModelState::Ready));
            }
        }
        Admission {
            models,
            catalog: [[0; 2]; 4],
            pools_version: 0,
            pools: config
                .pools
                .iter()
                .map(|p| PoolMirror::new(p.clone(), tenants.len()))
                .collect(),
            sessions: HashMap::new(),
            session_touches: VecDeque::new(),
            tasks: HashMap::new(),
            expiries: VecDeque::new(),
            tenants: tenants.iter().map(tenant::Quota::new).collect(),
            scfg: config.sessions.clone(),
            retention_ms: config.stream.retention_ms,
        }
    }

    /// Decides on a task, in SPEC order, and commits the decision (no pool is nearer
    /// to the client than another).
    pub fn admit(&mut self, spec: &TaskSpec, now_ms: u64) -> Result<Admitted, ApiError> {
        self.admit_near(spec, now_ms, |_| false)
    }

    /// [`admit`](Admission::admit) for a request that arrived where the pools for which
    /// `near` is true live (on the same core): among the ready pools with a free slot,
    /// one of those is preferred.
    pub fn admit_near(
        &mut self,
        spec: &TaskSpec,
        now_ms: u64,
        near: impl Fn(usize) -> bool,
    ) -> Result<Admitted, ApiError> {
        if let Some(again) = self.known_task(spec)? {
            return Ok(again);
        }
        let route = self.find_pool(spec, now_ms, near)?;
        self.check_session(spec, &route, now_ms)?;
        let reserve = self.check_budgets(spec, &route)?;
        // The prompt's size, counted once: the tenant's bucket and the session's KV
        // accounting both need it.
        let prompt_tokens = spec.prompt_tokens();
        self.check_tenant_tokens(spec, prompt_tokens, &route, now_ms)?;
        let place = self.check_deadline(spec, &route, reserve.time_ms)?;
        self.check_tenant_queued(spec, &route, place.must_queue)?;
        let place = self.apply_queue_policy(&route, place)?;
        Ok(self.commit(spec, prompt_tokens, route, place, reserve, now_ms))
    }

    /// A resubmission: the same body is the same task (idempotent), another body with
    /// the same id is a conflict. The digest (a hash of the whole request) is only
    /// needed here and to remember an admitted task: refusals skip it.
    fn known_task(&self, spec: &TaskSpec) -> Result<Option<Admitted>, ApiError> {
        let Some(e) = self.tasks.get(&spec.task_id) else {
            return Ok(None);
        };
        if e.digest == spec.digest() {
            let mut again = e.admitted.clone();
            again.duplicate = true;
            again.evict = false;
            return Ok(Some(again));
        }
        Err(ApiError::new(
            ErrorClass::Conflict,
            ErrorKind::InvalidParams,
            "task_id: already used by a task with a different body",
        ))
    }

    /// Steps 1 and 2: the pools serving engine and model, validation against them,
    /// readiness, then KV affinity, else a near pool where the task starts at once,
    /// else the least occupied ready pool. Plain passes over the (few) pools: no
    /// allocation on the refusal paths.
    fn find_pool(
        &self,
        spec: &TaskSpec,
        now_ms: u64,
        near: impl Fn(usize) -> bool,
    ) -> Result<Route, ApiError> {
        let n = self.pools.len();
        let serves = |i: usize| self.pools[i].serves(spec);
        let fits = |i: usize| {
            let p = &self.pools[i].cfg;
            serves(i) && p.workloads.contains(&spec.workload) && spec.ctx <= p.ctx_max
        };
        let candidate = |i: usize| fits(i) && self.pools[i].ready();
        let Some(first_serving) = (0..n).find(|&i| serves(i)) else {
            let on_engine = spec
                .engine
                .map_or(String::new(), |e| format!(" on engine {}", e.as_str()));
            return Err(ApiError::new(
                ErrorClass::Unavailable,
                ErrorKind::PoolUnavailable,
                format!(
                    "model_ref: no pool serves model {:?}{on_engine}",
                    spec.model_ref
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
            return Err(ApiError::invalid(msg).with_engine(p.engine));
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
            .with_engine(p.cfg.engine)
            .with_pool(p.cfg.id.clone())
            .retry_after_ms(UNREADY_RETRY_MS));
        }
        let session = spec
            .session_id
            .and_then(|id| self.live_session(&id, now_ms))
            .cloned()
            .unwrap_or_default();
        let want_warm = spec.kv_hint != Some(KvHint::Cold);
        let least_occupied = |pools: &mut dyn Iterator<Item = usize>| {
            pools.min_by(|&a, &b| {
                self.pools[a]
                    .occupancy()
                    .total_cmp(&self.pools[b].occupancy())
            })
        };
        let pool = match session.kv_pool {
            Some(p) if want_warm && p < n && candidate(p) => p,
            // A task that starts at once on a pool living where the request arrived
            // runs there: its admission, subscribe and every frame of its stream stay
            // on one core (perf/results/2026-12-05-issue16-first-pass.md).
            _ => least_occupied(
                &mut (0..n).filter(|&i| candidate(i) && near(i) && self.pools[i].has_free_slot()),
            )
            .or_else(|| least_occupied(&mut (0..n).filter(|&i| candidate(i))))
            .expect("a candidate exists"),
        };
        Ok(Route {
            pool,
            want_warm,
            kv_warmth: want_warm && session.kv_pool == Some(pool),
            session,
        })
    }

    /// A session-rule refusal (429, not retriable) naming the rule.
    fn refuse(&self, route: &Route, label: Policy, msg: String) -> ApiError {
        let p = &self.pools[route.pool].cfg;
        ApiError::new(ErrorClass::TooManyRequests, ErrorKind::AdmissionReject, msg)
            .with_engine(p.engine)
            .with_pool(p.id.clone())
            .policy(label)
    }

    /// Step 3, sessions: room for a new one (sessions are few-hundred-byte records kept
    /// for their TTL; the bound keeps a flood of fresh session ids from growing memory
    /// without limit), then the session's turns. A task without a session (the OpenAI
    /// door without `X-Session-Id`) has none of these rules.
    fn check_session(
        &mut self,
        spec: &TaskSpec,
        route: &Route,
        now_ms: u64,
    ) -> Result<(), ApiError> {
        let Some(session_id) = spec.session_id else {
            return Ok(());
        };
        if !self.sessions.contains_key(&session_id) && self.sessions.len() >= self.scfg.max_sessions
        {
            self.expire_sessions(now_ms);
            if self.sessions.len() >= self.scfg.max_sessions {
                let msg = format!(
                    "{} sessions are live (sessions.max_sessions); a new one can start when one expires",
                    self.sessions.len()
                );
                return Err(self
                    .refuse(route, Policy::SessionsFull, msg)
                    .retriable(true)
                    .retry_after_ms(self.next_session_expiry_ms(now_ms)));
            }
        }
        if route.session.turns >= self.scfg.max_turns {
            let msg = format!(
                "session_id: the session has used all {} turns",
                self.scfg.max_turns
            );
            return Err(self.refuse(route, Policy::SessionTurns, msg));
        }
        Ok(())
    }

    /// Step 3, budgets: the reservation this task needs (`max_tokens`, predicted time,
    /// predicted cost) must fit beside what the session spent and has reserved.
    fn check_budgets(&self, spec: &TaskSpec, route: &Route) -> Result<Budget, ApiError> {
        let mirror = &self.pools[route.pool];
        let reserve = Budget {
            tokens: u64::from(spec.max_tokens),
            time_ms: mirror.predicted_decode_ms(spec),
            cost: f64::from(spec.max_tokens) * mirror.cfg.cost_per_token,
        };
        let c = &self.scfg;
        let (s, r) = (&route.session.spent, &route.session.reserved);
        let over = if spec.session_id.is_none() {
            None
        } else if c.tokens_budget > 0 && s.tokens + r.tokens + reserve.tokens > c.tokens_budget {
            Some((
                Policy::BudgetTokens,
                "max_tokens: the session's token budget cannot cover this task",
            ))
        } else if c.time_budget_ms > 0 && s.time_ms + r.time_ms + reserve.time_ms > c.time_budget_ms
        {
            Some((
                Policy::BudgetTime,
                "session_id: the session's time budget cannot cover this task",
            ))
        } else if c.cost_budget > 0.0 && s.cost + r.cost + reserve.cost > c.cost_budget {
            Some((
                Policy::BudgetCost,
                "session_id: the session's cost budget cannot cover this task",
            ))
        } else {
            None
        };
        match over {
            Some((label, msg)) => Err(self.refuse(route, label, msg.into())),
            None => Ok(reserve),
        }
    }

    /// Step 4: the predicted start (at the place the task would take) plus the
    /// predicted decode must fit in `deadline_ms`.
    fn check_deadline(
        &self,
        spec: &TaskSpec,
        route: &Route,
        predicted_decode_ms: u64,
    ) -> Result<Place, ApiError> {
        let mirror = &self.pools[route.pool];
        let class = usize::from(spec.priority == Priority::Batch);
        // A task waits when the slots are taken, when its tenant holds all it may, or
        // when tasks that may start are waiting already.
        let must_queue = mirror.running >= mirror.slots
            || self.room(mirror, spec.tenant) == 0
            || self.queued_eligible(mirror) > 0;
        let position = if must_queue {
            self.fair_position(mirror, spec.tenant, class)
        } else {
            0
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
        Ok(Place {
            class,
            must_queue,
            position,
            predicted_decode_ms,
            evict: false,
        })
    }

    /// Step 5: a full queue refuses (`reject`) or evicts its oldest batch task, else
    /// its oldest task (`drop-lru`); every refusal's retry advice is the pool's
    /// predicted drain time.
    fn apply_queue_policy(&self, route: &Route, mut place: Place) -> Result<Place, ApiError> {
        let mirror = &self.pools[route.pool];
        let queued_total = mirror.queued_len();
        if !place.must_queue || queued_total < mirror.cfg.queue_capacity as usize {
            return Ok(place);
        }
        let full = |kind, label: Policy, msg: String| {
            ApiError::new(ErrorClass::TooManyRequests, kind, msg)
                .with_engine(mirror.cfg.engine)
                .with_pool(mirror.cfg.id.clone())
                .policy(label)
                .retry_after_ms(mirror.predicted_drain_ms())
        };
        match mirror.cfg.policy {
            QueuePolicy::Reject => Err(full(
                ErrorKind::AdmissionReject,
                Policy::Reject,
                format!(
                    "pool {} queue is full ({} queued)",
                    mirror.cfg.id, queued_total
                ),
            )),
            QueuePolicy::DropLru => {
                let victim_class = if mirror.queued[1] == 0 { 0 } else { 1 };
                if mirror.queued[victim_class] == 0 {
                    return Err(full(
                        ErrorKind::QueueFullDropLru,
                        Policy::DropLru,
                        format!(
                            "pool {} queue is full and nothing can be evicted",
                            mirror.cfg.id
                        ),
                    ));
                }
                place.evict = true;
                // The victim leaves; positions behind it move up by one.
                if place.class >= victim_class {
                    place.position -= 1;
                }
                Ok(place)
            }
        }
    }

    /// Commits an admission: the evicted task leaves the queue, the task takes its
    /// slot or place, its session counts the turn and holds the reservation.
    fn commit(
        &mut self,
        spec: &TaskSpec,
        prompt_tokens: u64,
        route: Route,
        place: Place,
        reserve: Budget,
        now_ms: u64,
    ) -> Admitted {
        // An evicted task leaves the count when its owner reports its end.
        let pool = route.pool;
        let predicted_start_ms = self.pools[pool].predicted_start_ms(place.position);
        let m = &mut self.pools[pool];
        if place.position == 0 && !place.must_queue {
            m.count_running(spec.tenant, true);
        } else {
            m.count_queued(spec.tenant, place.class, true);
        }
        let tenant_tokens = prompt_tokens + u64::from(spec.max_tokens);
        self.tenants[spec.tenant.index()].take(tenant_tokens, now_ms);
        let budgets = spec
            .session_id
            .and_then(|id| self.touch_session(id, pool, route.want_warm, &reserve, now_ms));
        let admitted = Admitted {
            task_id: spec.task_id,
            pool,
            queue_position: place.position,
            predicted_start_ms,
            backoff_ms: predicted_start_ms,
            predicted_decode_ms: place.predicted_decode_ms,
            kv_warmth: route.kv_warmth,
            budgets,
            evict: place.evict,
            duplicate: false,
        };
        self.tasks.insert(
            spec.task_id,
            Entry {
                pool,
                tenant: spec.tenant,
                tenant_tokens,
                digest: spec.digest(),
                session: spec.session_id,
                admitted: admitted.clone(),
                reserved: reserve,
                class: place.class,
                in_queue: place.must_queue,
                expires_ms: None,
                prompt_tokens,
            },
        );
        admitted
    }

    /// Undoes an admission whose task could not be handed to its owner shard.
    pub fn rollback(&mut self, admitted: &Admitted, now_ms: u64) {
        let Some(e) = self.tasks.remove(&admitted.task_id) else {
            return;
        };
        // Nothing was evicted: that happens on the owner shard, which never got it.
        let m = &mut self.pools[e.pool];
        if e.in_queue {
            m.count_queued(e.tenant, e.class, false);
        } else {
            m.count_running(e.tenant, false);
        }
        self.tenants[e.tenant.index()].give_back(e.tenant_tokens, now_ms);
        if let Some(s) = e.session.and_then(|id| self.sessions.get_mut(&id)) {
            s.turns = s.turns.saturating_sub(1);
            s.reserved.release(&e.reserved);
        }
    }

    /// A queued task started on its owner shard.
    pub fn on_started(&mut self, task: Uuid) {
        let Some(e) = self.tasks.get_mut(&task) else {
            return;
        };
        let m = &mut self.pools[e.pool];
        if e.in_queue {
            m.count_queued(e.tenant, e.class, false);
            e.in_queue = false;
        }
        m.count_running(e.tenant, true);
    }

    /// A task ended (any way); settles its session and starts its retention window.
    /// `eta` is its pool's ETA model as the owner shard updated it with this outcome.
    pub fn on_finished(&mut self, task: Uuid, outcome: Outcome, eta: Eta, now_ms: u64) {
        let Some(e) = self.tasks.get_mut(&task) else {
            return;
        };
        if e.expires_ms.is_some() {
            return;
        }
        let m = &mut self.pools[e.pool];
        // As this side counted it: a task admitted to a free slot counts as running here
        // even if its owner, short of a replica, queued it and it ended before starting.
        if e.in_queue {
            m.count_queued(e.tenant, e.class, false);
            e.in_queue = false;
        } else {
            m.count_running(e.tenant, false);
        }
        m.eta = eta;
        // The tenant's bucket keeps what the task used (its prompt and the tokens it
        // produced; nothing if it never ran) and gets the rest back.
        let used = match outcome.ran {
            true => e.prompt_tokens + u64::from(outcome.tokens_out),
            false => 0,
        };
        let unused = e.tenant_tokens.saturating_sub(used);
        self.tenants[e.tenant.index()].give_back(unused, now_ms);
        let cost = f64::from(outcome.tokens_out) * m.cfg.cost_per_token;
        let expires = now_ms + self.retention_ms;
        e.expires_ms = Some(expires);
        let (pool, session, reserved, prompt) = (e.pool, e.session, e.reserved, e.prompt_tokens);
        self.expiries.push_back((expires, task));
        if let Some(s) = session.and_then(|id| self.sessions.get_mut(&id)) {
            s.reserved.release(&reserved);
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

    /// Forgets finished tasks past retention and sessions past their TTL.
    pub fn sweep(&mut self, now_ms: u64) {
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

    pub fn live_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|e| e.expires_ms.is_none())
            .count()
    }
}

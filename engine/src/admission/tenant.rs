//! Tenants at admission (issue 19): each tenant's load on each pool (for its place in
//! the fair order, its `max_running` and `max_queued`) and its `tokens_per_minute`
//! bucket, with retry advice from when room will exist.

use super::{Admission, PoolMirror, Route};
use crate::error::{ApiError, ErrorClass, ErrorKind, Policy};
use crate::task::TaskSpec;
use crate::tenant::{Tenant, TenantId};

/// One tenant's tasks on one pool, as the dispatcher counts them (like the pool's own
/// counts: exact up to messages in flight, erring on the busy side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Load {
    pub running: u32,
    /// By class: 0 interactive, 1 batch.
    pub queued: [u32; 2],
}

impl Load {
    pub fn queued_len(&self) -> u32 {
        self.queued[0] + self.queued[1]
    }
}

/// A tenant's limits and its token bucket.
#[derive(Clone, Debug)]
pub(super) struct Quota {
    pub name: String,
    pub weight: u32,
    pub max_queued: u32,
    pub max_running: u32,
    /// `tokens_per_minute`: the bucket's size; 0 is no bucket.
    pub per_minute: u64,
    /// Tokens in the bucket at `at_ms`.
    level: f64,
    at_ms: u64,
}

impl Quota {
    pub fn new(t: &Tenant) -> Quota {
        Quota {
            name: t.name.clone(),
            weight: t.weight.max(1),
            max_queued: t.max_queued,
            max_running: t.max_running,
            per_minute: t.tokens_per_minute,
            level: t.tokens_per_minute as f64,
            at_ms: 0,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let per_ms = self.per_minute as f64 / 60_000.0;
        let dt = now_ms.saturating_sub(self.at_ms) as f64;
        self.level = (self.level + dt * per_ms).min(self.per_minute as f64);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Milliseconds until the bucket holds `tokens` (0: now).
    fn wait_ms(&mut self, tokens: u64, now_ms: u64) -> u64 {
        self.refill(now_ms);
        let short = tokens as f64 - self.level;
        if short <= 0.0 {
            return 0;
        }
        (short * 60_000.0 / self.per_minute as f64).ceil().max(1.0) as u64
    }

    pub fn take(&mut self, tokens: u64, now_ms: u64) {
        if self.per_minute > 0 {
            self.refill(now_ms);
            self.level -= tokens as f64;
        }
    }

    /// Gives back what a task reserved and did not use.
    pub fn give_back(&mut self, tokens: u64, now_ms: u64) {
        if self.per_minute > 0 {
            self.refill(now_ms);
            self.level = (self.level + tokens as f64).min(self.per_minute as f64);
        }
    }
}

impl PoolMirror {
    /// Sized for every tenant of the config (see [`Admission::new`]).
    pub(super) fn load(&self, t: TenantId) -> Load {
        self.tenants[t.index()]
    }

    /// A task of `t` takes (`up`) or frees a slot: the pool's count and its tenant's.
    pub(super) fn count_running(&mut self, t: TenantId, up: bool) {
        let step = |n: u32| if up { n + 1 } else { n.saturating_sub(1) };
        self.running = step(self.running);
        let load = &mut self.tenants[t.index()];
        load.running = step(load.running);
    }

    /// A task of `t` joins (`up`) or leaves the queue of `class`.
    pub(super) fn count_queued(&mut self, t: TenantId, class: usize, up: bool) {
        let step = |n: u32| if up { n + 1 } else { n.saturating_sub(1) };
        self.queued[class] = step(self.queued[class]);
        let load = &mut self.tenants[t.index()];
        load.queued[class] = step(load.queued[class]);
    }
}

impl Admission {
    pub(super) fn quota(&self, t: TenantId) -> &Quota {
        &self.tenants[t.index()]
    }

    /// How many more of `t`'s tasks may take slots of the pool now (its
    /// `max_running` less what it holds; `u32::MAX` without a cap).
    pub(super) fn room(&self, m: &PoolMirror, t: TenantId) -> u32 {
        match self.quota(t).max_running {
            0 => u32::MAX,
            cap => cap.saturating_sub(m.load(t).running),
        }
    }

    /// Tasks queued on the pool that may start when a slot frees (as many of each
    /// tenant's as its cap leaves room for).
    pub(super) fn queued_eligible(&self, m: &PoolMirror) -> u32 {
        if m.queued_len() == 0 {
            return 0;
        }
        (0..m.tenants.len())
            .map(|i| TenantId(i as u16))
            .map(|t| m.load(t).queued_len().min(self.room(m, t)))
            .sum()
    }

    /// Where a task of `tenant` in `class` would stand in the pool's queue (1 = next),
    /// in the owner's fair order (`owner::fair`): its own tasks ahead of it, and of
    /// every other waiting tenant as many as go first — with a newcomer's counter
    /// starting just below the others', `ceil(a * w_other / w_own)` before the task
    /// with `a` of its tenant's tasks ahead. A tenant at its cap places only the tasks
    /// it has room for; the rest follow all those of every tenant. An estimate at
    /// admission when tenants share the queue (the owner keeps the exact order and
    /// tells the task its place in a `metrics` frame); exact (interactive before batch,
    /// FIFO) for a tenant alone in it.
    pub(super) fn fair_position(&self, m: &PoolMirror, tenant: TenantId, class: usize) -> u32 {
        let own = m.load(tenant);
        let ahead = own.queued[0] + if class == 1 { own.queued[1] } else { 0 };
        self.fair_place(m, tenant, ahead)
    }

    /// The place of the task of `tenant` that has `ahead` of its own tasks before it.
    fn fair_place(&self, m: &PoolMirror, tenant: TenantId, ahead: u32) -> u32 {
        if m.queued_len() as u32 == m.load(tenant).queued_len() {
            // Nobody else waits (a tenant alone: SPEC's 1 + the tasks ahead).
            return ahead + 1;
        }
        let w = u64::from(self.quota(tenant).weight);
        let (ahead, room) = (u64::from(ahead), u64::from(self.room(m, tenant)));
        let others: u64 = (0..m.tenants.len())
            .map(|i| TenantId(i as u16))
            .filter(|&o| o != tenant)
            .map(|o| {
                let q = u64::from(m.load(o).queued_len());
                let may_start = q.min(u64::from(self.room(m, o)));
                let share = |own: u64| (own * u64::from(self.quota(o).weight)).div_ceil(w);
                if ahead < room {
                    may_start.min(share(ahead))
                } else {
                    // Among the tasks beyond their tenants' room, after all the others.
                    may_start + (q - may_start).min(share(ahead - room))
                }
            })
            .sum();
        (ahead + others + 1).min(u64::from(u32::MAX)) as u32
    }

    /// Step 3 (after the session's budgets), the tenant's `tokens_per_minute`: its
    /// bucket must hold the task's prompt and `max_tokens` now; else `429`
    /// `tenant-tokens` with advice from when the bucket will have refilled that far. A
    /// task that alone needs more than a minute's tokens can never run: `400` naming
    /// `max_tokens`.
    pub(super) fn check_tenant_tokens(
        &mut self,
        spec: &TaskSpec,
        prompt_tokens: u64,
        route: &Route,
        now_ms: u64,
    ) -> Result<(), ApiError> {
        if self.tenants[spec.tenant.index()].per_minute == 0 {
            return Ok(());
        }
        let pool = &self.pools[route.pool].cfg;
        let (engine, pool_id) = (pool.engine, pool.id.clone());
        let q = &mut self.tenants[spec.tenant.index()];
        let need = prompt_tokens + u64::from(spec.max_tokens);
        let refuse = |msg: String| {
            ApiError::new(ErrorClass::TooManyRequests, ErrorKind::AdmissionReject, msg)
                .with_engine(engine)
                .with_pool(pool_id.clone())
                .policy(Policy::TenantTokens)
        };
        if need > q.per_minute {
            return Err(ApiError::invalid(format!(
                "max_tokens: the task's {need} tokens (prompt and max_tokens) are more than \
                 tenant {:?}'s tokens_per_minute ({})",
                q.name, q.per_minute
            ))
            .with_engine(engine));
        }
        match q.wait_ms(need, now_ms) {
            0 => Ok(()),
            wait => Err(refuse(format!(
                "tenant {:?} has used its tokens_per_minute ({}); {need} tokens are free again in {wait} ms",
                q.name, q.per_minute
            ))
            .retry_after_ms(wait)),
        }
    }

    /// Step 5 (before the pool's own queue policy), the tenant's `max_queued`: a task
    /// that would wait while the tenant already has that many waiting in the pool is
    /// `429` `tenant-queued`, with advice from when its first waiting task is predicted
    /// to start (room for one more).
    pub(super) fn check_tenant_queued(
        &self,
        spec: &TaskSpec,
        route: &Route,
        must_queue: bool,
    ) -> Result<(), ApiError> {
        let m = &self.pools[route.pool];
        let t = spec.tenant;
        let q = self.quota(t);
        let waiting = m.load(t).queued_len();
        if !must_queue || q.max_queued == 0 || waiting < q.max_queued {
            return Ok(());
        }
        // Its first waiting task starts when the fair order reaches it, and, when the
        // tenant holds all the slots it may, when one of its own tasks ends.
        let head = self.fair_place(m, t, 0);
        let mut wait = m.predicted_start_ms(head);
        if self.room(m, t) == 0 {
            wait = wait.max(m.eta.predicted_start_ms(1, q.max_running));
        }
        Err(ApiError::new(
            ErrorClass::TooManyRequests,
            ErrorKind::AdmissionReject,
            format!(
                "tenant {:?} has {waiting} tasks waiting in pool {} (its max_queued)",
                q.name, m.cfg.id
            ),
        )
        .with_engine(m.cfg.engine)
        .with_pool(m.cfg.id.clone())
        .policy(Policy::TenantQueued)
        .retry_after_ms(wait.max(1)))
    }
}

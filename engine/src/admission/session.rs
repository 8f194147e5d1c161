//! Sessions (SPEC section 2): turns, budgets reserved at admission and settled at the
//! end, KV affinity, a sliding TTL, and expiry in O(expired).

use uuid::Uuid;

use super::{Admission, KV_BYTES_PER_TOKEN};
use crate::frame::BudgetRemaining;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budget {
    pub tokens: u64,
    pub time_ms: u64,
    pub cost: f64,
}

impl Budget {
    fn add(&mut self, r: &Budget) {
        self.tokens += r.tokens;
        self.time_ms += r.time_ms;
        self.cost += r.cost;
    }

    /// Gives back a reservation.
    pub(super) fn release(&mut self, r: &Budget) {
        self.tokens = self.tokens.saturating_sub(r.tokens);
        self.time_ms = self.time_ms.saturating_sub(r.time_ms);
        self.cost = (self.cost - r.cost).max(0.0);
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Session {
    pub(super) turns: u32,
    pub(super) last_ms: u64,
    /// The time of this session's newest entry in `session_touches` (the first task of
    /// its latest granularity window, or the last sweep that kept it for a reservation).
    touch_ms: u64,
    /// The pool holding this session's KV cache (affinity), if any.
    pub(super) kv_pool: Option<usize>,
    pub(super) kv_tokens: u64,
    pub(super) reserved: Budget,
    pub(super) spent: Budget,
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

impl Admission {
    pub(super) fn budgets_active(&self) -> bool {
        let c = &self.scfg;
        c.tokens_budget > 0 || c.time_budget_ms > 0 || c.cost_budget > 0.0
    }

    pub(super) fn remaining(&self, s: &Session) -> BudgetRemaining {
        let c = &self.scfg;
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
                .then(|| (c.cost_budget - (s.spent.cost + s.reserved.cost)).max(0.0)),
        }
    }

    pub(super) fn live_session(&self, id: &Uuid, now_ms: u64) -> Option<&Session> {
        self.sessions
            .get(id)
            .filter(|s| now_ms.saturating_sub(s.last_ms) <= self.scfg.ttl_ms)
    }

    /// Counts a turn of the session (creating it, or starting it afresh after its TTL),
    /// reserves `reserve`, and moves its KV affinity to `pool`. Returns what its budgets
    /// have left after the reservation, when budgets are configured.
    pub(super) fn touch_session(
        &mut self,
        id: Uuid,
        pool: usize,
        want_warm: bool,
        reserve: &Budget,
        now_ms: u64,
    ) -> Option<BudgetRemaining> {
        let ttl = self.scfg.ttl_ms;
        let granularity = self.touch_granularity();
        let known = self.sessions.contains_key(&id);
        let sess = self.sessions.entry(id).or_default();
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
            self.session_touches.push_back((now_ms, id));
        }
        if !want_warm || sess.kv_pool != Some(pool) {
            sess.kv_tokens = 0;
        }
        sess.kv_pool = Some(pool);
        sess.reserved.add(reserve);
        let sess = sess.clone();
        self.budgets_active().then(|| self.remaining(&sess))
    }

    /// Retry advice while `sessions.max_sessions` are live: until the oldest expires.
    pub(super) fn next_session_expiry_ms(&self, now_ms: u64) -> u64 {
        self.session_touches
            .front()
            .map_or(1, |(t, _)| (t + self.scfg.ttl_ms).saturating_sub(now_ms))
            .max(1)
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

    /// Touches of one session closer together than this share one `session_touches`
    /// entry (its time is the first of them).
    fn touch_granularity(&self) -> u64 {
        (self.scfg.ttl_ms / 16).clamp(1, 1000)
    }

    /// Removes the sessions not touched for a TTL, except those with a task still
    /// holding a reservation (they are looked at again a TTL later).
    pub(super) fn expire_sessions(&mut self, now_ms: u64) {
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
}

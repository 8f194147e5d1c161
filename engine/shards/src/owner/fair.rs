//! The queue of one pool (issue 19): tenants share contended slots in proportion to
//! their weights, priority classes are ordered within a tenant (interactive before
//! batch), FIFO within a class, and a lone tenant uses the whole pool.
//!
//! Virtual token counters (Sheng et al., "Fairness in Serving Large Language Models",
//! OSDI 2024): a tenant's counter grows by the tokens granted to it divided by its
//! weight — a task's `max_tokens` when it takes a slot, settled to the tokens it
//! produced when it ends (as budgets are) — and a free slot goes to the waiting tenant
//! with the smallest counter (the oldest head first on a tie). A tenant that starts
//! waiting after an idle spell has its counter lifted to just below the smallest counter
//! among the tenants waiting (the last one served when nobody waits): idle time banks
//! no credit, and the newcomer's task goes next, not behind the others' heads — a tenant
//! that submits a little is never stuck behind another's backlog. A tenant at its
//! `max_running` is passed over until one of its tasks ends.
//!
//! Plain data, no I/O: the owner decides with it and carries out what it returns.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use uuid::Uuid;

use orchd_engine::tenant::TenantId;

/// Counter units per token at weight 1: divisible by every weight up to 16 (and
/// rounded, but never to zero, above), so shares stay exact for the usual weights.
const SCALE: u64 = 720_720;

/// A tenant's share and cap, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Share {
    pub weight: u32,
    /// 0: no cap.
    pub max_running: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiting {
    seq: u64,
    id: Uuid,
    /// The tokens it may be granted (its prompt and `max_tokens`).
    cost: u64,
}

#[derive(Debug)]
struct Lane {
    share: Share,
    /// By class: 0 interactive, 1 batch.
    queued: [VecDeque<Waiting>; 2],
    running: u32,
    counter: u64,
    /// Where the last lift put the counter: refunds of tasks charged before it never
    /// take the counter below it (else a task charged a large cost before the lift and
    /// stopped early after it would buy credit the lift was to deny).
    lifted_to: u64,
}

impl Lane {
    fn new(share: Share) -> Lane {
        Lane {
            share,
            queued: [VecDeque::new(), VecDeque::new()],
            running: 0,
            counter: 0,
            lifted_to: 0,
        }
    }

    fn waiting(&self) -> bool {
        !self.queued[0].is_empty() || !self.queued[1].is_empty()
    }

    fn waiting_len(&self) -> usize {
        self.queued[0].len() + self.queued[1].len()
    }

    /// Its `k`-th waiting task in its order (interactive, then batch).
    fn nth(&self, k: usize) -> Option<&Waiting> {
        let n0 = self.queued[0].len();
        if k < n0 {
            self.queued[0].get(k)
        } else {
            self.queued[1].get(k - n0)
        }
    }

    /// How many more of its tasks may take slots now (`usize::MAX`: no cap).
    fn room(&self) -> usize {
        match self.share.max_running {
            0 => usize::MAX,
            cap => cap.saturating_sub(self.running) as usize,
        }
    }

    fn charge(&self, tokens: u64) -> u64 {
        (tokens * SCALE / u64::from(self.share.weight.max(1))).max(1)
    }
}

/// A task that took a slot, and its tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Popped {
    pub tenant: TenantId,
    pub id: Uuid,
}

#[derive(Debug)]
pub(crate) struct FairQueue {
    /// By [`TenantId`]: every tenant of the config has one.
    lanes: Vec<Lane>,
    /// Arrival order, across tenants.
    seq: u64,
    len: [usize; 2],
    /// The highest counter a task was served at: where an idle tenant starts when no
    /// tenant that may start a task is waiting.
    served_at: u64,
}

impl FairQueue {
    /// One lane per tenant, in [`TenantId`] order.
    pub(crate) fn new(shares: &[Share]) -> FairQueue {
        FairQueue {
            lanes: shares.iter().map(|&share| Lane::new(share)).collect(),
            seq: 0,
            len: [0, 0],
            served_at: 0,
        }
    }

    /// Tasks waiting, by class.
    pub(crate) fn len_of(&self, class: usize) -> usize {
        self.len[class]
    }

    pub(crate) fn len(&self) -> usize {
        self.len[0] + self.len[1]
    }

    /// Tenants with tasks waiting.
    pub(crate) fn tenants_waiting(&self) -> usize {
        match self.len() {
            0 => 0,
            _ => self.lanes.iter().filter(|l| l.waiting()).count(),
        }
    }

    /// A task joins its tenant's lane (`cost`: the tokens it may be granted). A tenant
    /// that was not waiting starts just below the smallest counter of the tenants
    /// waiting that may start a task (a tenant at its cap is not competing for slots:
    /// its counter would let newcomers bank credit).
    pub(crate) fn push(&mut self, tenant: TenantId, class: usize, id: Uuid, cost: u64) {
        // An empty queue (the common case) looks at no lane.
        let waiting = self.len() > 0;
        let floor = waiting
            .then(|| {
                let lanes = self.lanes.iter().filter(|l| l.waiting() && l.room() > 0);
                lanes.map(|l| l.counter).min()
            })
            .flatten()
            .unwrap_or(self.served_at);
        let seq = self.seq;
        self.seq += 1;
        let lane = &mut self.lanes[tenant.index()];
        if !lane.waiting() {
            let lifted = floor.saturating_sub(1);
            if lifted > lane.counter {
                lane.counter = lifted;
                lane.lifted_to = lifted;
            }
        }
        lane.queued[class].push_back(Waiting { seq, id, cost });
        self.len[class] += 1;
    }

    /// The task that takes the next free slot, if any may: the head of the waiting
    /// tenant under its cap with the smallest counter. Its tenant is charged its cost.
    pub(crate) fn pop(&mut self) -> Option<Popped> {
        if self.len() == 0 {
            return None;
        }
        let i = (0..self.lanes.len())
            .filter(|&i| self.lanes[i].waiting() && self.lanes[i].room() > 0)
            .min_by_key(|&i| {
                let l = &self.lanes[i];
                (l.counter, l.nth(0).map_or(u64::MAX, |w| w.seq))
            })?;
        let lane = &mut self.lanes[i];
        let class = usize::from(lane.queued[0].is_empty());
        let w = lane.queued[class]
            .pop_front()
            .expect("a waiting lane has a head");
        self.served_at = self.served_at.max(lane.counter);
        lane.counter += lane.charge(w.cost);
        lane.running += 1;
        self.len[class] -= 1;
        Some(Popped {
            tenant: TenantId(i as u16),
            id: w.id,
        })
    }

    /// A task that took a slot ended having used `used` of the `cost` tokens its
    /// tenant was charged: the rest is given back (never below its last lift).
    pub(crate) fn ended(&mut self, tenant: TenantId, cost: u64, used: u64) {
        let lane = &mut self.lanes[tenant.index()];
        lane.running = lane.running.saturating_sub(1);
        let back = lane
            .charge(cost)
            .saturating_sub(lane.charge(used.min(cost)));
        lane.counter = lane.counter.saturating_sub(back).max(lane.lifted_to);
    }

    /// A waiting task leaves (canceled, evicted, ended by a drain). False if it was
    /// not waiting.
    pub(crate) fn remove(&mut self, tenant: TenantId, class: usize, id: Uuid) -> bool {
        let lane = &mut self.lanes[tenant.index()];
        let Some(at) = lane.queued[class].iter().position(|w| w.id == id) else {
            return false;
        };
        lane.queued[class].remove(at);
        self.len[class] -= 1;
        true
    }

    /// The task a full drop-lru queue evicts to admit one of `tenant`'s: the
    /// submitter's own oldest waiting batch task, else its oldest waiting task; when
    /// it has none waiting, those of the waiting tenant furthest past its share (the
    /// highest counter). With one tenant: the pool's oldest batch task, else its
    /// oldest task, as SPEC has it.
    pub(crate) fn victim(&self, tenant: TenantId) -> Option<Uuid> {
        let own = &self.lanes[tenant.index()];
        let lane = if own.waiting() {
            own
        } else {
            self.lanes
                .iter()
                .filter(|l| l.waiting())
                .max_by_key(|l| (l.counter, Reverse(l.nth(0).map_or(0, |w| w.seq))))?
        };
        lane.queued[1]
            .front()
            .or(lane.queued[0].front())
            .map(|w| w.id)
    }

    /// Every waiting task in the order they would take slots if nothing else arrived
    /// and every task used what it asked for: the queue positions (1, 2, ...) as they
    /// stand now. A tenant at its `max_running` places only the tasks it has room for
    /// in the fair order; the rest follow every task that may start before them (when
    /// its running tasks end is not known), in the fair order among themselves.
    pub(crate) fn order(&self) -> Vec<Uuid> {
        let mut out = Vec::with_capacity(self.len());
        let waiting: Vec<usize> = (0..self.lanes.len())
            .filter(|&i| self.lanes[i].waiting())
            .collect();
        if let [only] = waiting[..] {
            let l = &self.lanes[only];
            out.extend(l.queued[0].iter().chain(l.queued[1].iter()).map(|w| w.id));
            return out;
        }
        // Per lane: its counter as the projection charges it, and how many of its
        // tasks are placed.
        let mut at: Vec<(u64, usize)> = self.lanes.iter().map(|l| (l.counter, 0)).collect();
        for room_bound in [true, false] {
            // (counter, next task's arrival, lane)
            let mut heap = BinaryHeap::new();
            let limit = |l: &Lane| {
                if room_bound {
                    l.room().min(l.waiting_len())
                } else {
                    l.waiting_len()
                }
            };
            for &i in &waiting {
                let (c, k) = at[i];
                let l = &self.lanes[i];
                if k < limit(l) {
                    heap.push(Reverse((c, l.nth(k).expect("k < waiting").seq, i)));
                }
            }
            while let Some(Reverse((_, _, i))) = heap.pop() {
                let l = &self.lanes[i];
                let (c, k) = at[i];
                let w = l.nth(k).expect("placed only while tasks remain");
                out.push(w.id);
                at[i] = (c + l.charge(w.cost), k + 1);
                if k + 1 < limit(l) {
                    let next = l.nth(k + 1).expect("k + 1 < waiting");
                    heap.push(Reverse((at[i].0, next.seq, i)));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Starts `n` tasks of 10 tokens and ends each having used them all.
    fn serve(q: &mut FairQueue, n: usize) {
        for _ in 0..n {
            let p = q.pop().unwrap();
            q.ended(p.tenant, 10, 10);
        }
    }

    fn queue(weights: &[u32]) -> FairQueue {
        let shares: Vec<Share> = weights
            .iter()
            .map(|&weight| Share {
                weight,
                max_running: 0,
            })
            .collect();
        FairQueue::new(&shares)
    }

    #[test]
    fn one_tenant_is_classes_then_fifo() {
        let mut q = queue(&[1]);
        q.push(TenantId(0), 1, id(1), 10);
        q.push(TenantId(0), 0, id(2), 10);
        q.push(TenantId(0), 1, id(3), 10);
        q.push(TenantId(0), 0, id(4), 10);
        assert_eq!(q.order(), [id(2), id(4), id(1), id(3)]);
        let popped: Vec<Uuid> = std::iter::from_fn(|| q.pop().map(|p| p.id)).collect();
        assert_eq!(popped, [id(2), id(4), id(1), id(3)]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn shares_follow_weights_over_tokens_not_tasks() {
        // A: weight 3, tasks of 30 tokens; B: weight 1, tasks of 10 tokens.
        let mut q = queue(&[3, 1]);
        for n in 0..200 {
            q.push(TenantId(0), 0, id(n), 30);
            q.push(TenantId(1), 0, id(1000 + n), 10);
        }
        let order = q.order();
        let mut tokens = [0u64; 2];
        for _ in 0..120 {
            let p = q.pop().unwrap();
            assert_eq!(p.id, order[(tokens[0] / 30 + tokens[1] / 10) as usize]);
            let cost = if p.tenant == TenantId(0) { 30 } else { 10 };
            tokens[p.tenant.index()] += cost;
            q.ended(p.tenant, cost, cost);
        }
        let share = tokens[0] as f64 / (tokens[0] + tokens[1]) as f64;
        assert!((share - 0.75).abs() < 0.02, "{tokens:?}");
    }

    #[test]
    fn a_newcomer_goes_ahead_of_a_backlog_without_banked_credit() {
        let mut q = queue(&[1, 1]);
        for n in 0..50 {
            q.push(TenantId(0), 0, id(n), 10);
        }
        serve(&mut q, 10);
        // B arrives: its counter starts just below A's (it was idle: no credit
        // banked), so its task goes next, then the two alternate.
        q.push(TenantId(1), 0, id(100), 10);
        q.push(TenantId(1), 0, id(101), 10);
        assert_eq!(&q.order()[..5], [id(100), id(10), id(101), id(11), id(12)]);
        assert_eq!(q.pop().unwrap().id, id(100));
        assert_eq!(q.pop().unwrap().id, id(10));
    }

    #[test]
    fn unused_tokens_are_given_back() {
        let mut q = queue(&[1, 1]);
        for n in 1..=3 {
            q.push(TenantId(0), 0, id(n), 100);
        }
        for n in 11..=13 {
            q.push(TenantId(1), 0, id(n), 100);
        }
        // A's tasks stop after 1 token each: A is charged 1 a task, not 100, so after
        // one of B's tasks it takes the next two slots (charged in full, A would
        // alternate with B).
        let mut order = Vec::new();
        for _ in 0..4 {
            let p = q.pop().unwrap();
            order.push(p.id);
            if p.tenant == TenantId(0) {
                q.ended(p.tenant, 100, 1);
            }
        }
        assert_eq!(order, [id(1), id(11), id(2), id(3)]);
    }

    #[test]
    fn a_capped_tenant_is_passed_over_until_its_task_ends() {
        let mut q = FairQueue::new(&[
            Share {
                weight: 1,
                max_running: 1,
            },
            Share {
                weight: 1,
                max_running: 0,
            },
        ]);
        q.push(TenantId(0), 0, id(1), 10);
        q.push(TenantId(0), 0, id(2), 10);
        assert_eq!(q.pop().unwrap().id, id(1));
        assert_eq!(q.pop(), None, "A holds its one slot");
        q.push(TenantId(1), 0, id(3), 10);
        assert_eq!(q.pop().unwrap().id, id(3));
        q.ended(TenantId(0), 10, 10);
        assert_eq!(q.pop().unwrap().id, id(2));
    }

    #[test]
    fn classes_within_a_tenant_and_eviction_of_the_submitters_own_first() {
        let mut q = queue(&[1, 1, 1]);
        q.push(TenantId(0), 1, id(1), 10);
        q.push(TenantId(1), 1, id(2), 10);
        q.push(TenantId(0), 0, id(3), 10);
        assert_eq!(q.victim(TenantId(0)), Some(id(1)), "its oldest batch task");
        assert_eq!(q.victim(TenantId(1)), Some(id(2)));
        assert!(q.remove(TenantId(0), 1, id(1)));
        assert!(!q.remove(TenantId(0), 1, id(1)));
        assert_eq!(q.victim(TenantId(0)), Some(id(3)), "else its oldest task");
        // Across tenants the counters decide (a tie: the older head).
        assert_eq!(q.pop().unwrap().id, id(2));
        // A tenant with nothing waiting evicts from the one furthest past its share.
        q.push(TenantId(1), 1, id(4), 10);
        assert_eq!(
            q.victim(TenantId(2)),
            Some(id(4)),
            "tenant 1 was served more"
        );
        assert_eq!((q.len_of(0), q.len_of(1)), (1, 1));
    }

    #[test]
    fn a_capped_tenant_neither_lowers_the_floor_nor_jumps_the_order() {
        let mut q = FairQueue::new(&[
            Share {
                weight: 1,
                max_running: 1,
            },
            Share {
                weight: 1,
                max_running: 0,
            },
            Share {
                weight: 1,
                max_running: 0,
            },
        ]);
        // A (capped at 1) runs one task and waits with two; B is served a lot.
        for n in 1..=3 {
            q.push(TenantId(0), 0, id(n), 10);
        }
        assert_eq!(q.pop().unwrap().id, id(1));
        for n in 10..20 {
            q.push(TenantId(1), 0, id(n), 10);
        }
        for _ in 0..8 {
            let p = q.pop().unwrap();
            assert_eq!(p.tenant, TenantId(1));
        }
        // A's waiting tasks are placed after every task that may start before them.
        assert_eq!(q.order(), [id(18), id(19), id(2), id(3)]);
        // C arrives: it starts near B's counter, not A's (A is not competing), so it
        // alternates with B instead of taking every slot.
        for n in 20..24 {
            q.push(TenantId(2), 0, id(n), 10);
        }
        let next: Vec<Uuid> = (0..4).map(|_| q.pop().unwrap().id).collect();
        assert_eq!(next, [id(20), id(18), id(21), id(19)]);
    }

    #[test]
    fn a_refund_never_undoes_a_lift() {
        let mut q = queue(&[1, 1]);
        for n in 0..300 {
            q.push(TenantId(0), 0, id(n), 10);
        }
        serve(&mut q, 5);
        // B's huge task takes a slot (charged 1,000 tokens) and runs while A is
        // served 1,500.
        q.push(TenantId(1), 0, id(1000), 1_000);
        assert_eq!(q.pop().unwrap().id, id(1000));
        for _ in 0..150 {
            let p = q.pop().unwrap();
            assert_eq!(p.tenant, TenantId(0));
            q.ended(p.tenant, 10, 10);
        }
        // B submits again (lifted to A's counter), then its huge task stops after one
        // token: the refund stops at the lift, so B does not take every slot until it
        // has been granted ~1,000 tokens more.
        q.push(TenantId(1), 0, id(1001), 10);
        q.push(TenantId(1), 0, id(1002), 10);
        q.ended(TenantId(1), 1_000, 1);
        let next: Vec<Uuid> = (0..4).map(|_| q.pop().unwrap().id).collect();
        assert_eq!(next, [id(1001), id(155), id(1002), id(156)]);
    }
}

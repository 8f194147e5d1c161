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
    cost: u32,
}

#[derive(Debug)]
struct Lane {
    share: Share,
    /// By class: 0 interactive, 1 batch.
    queued: [VecDeque<Waiting>; 2],
    running: u32,
    counter: u64,
}

impl Lane {
    fn waiting(&self) -> bool {
        !self.queued[0].is_empty() || !self.queued[1].is_empty()
    }

    fn head(&self) -> Option<&Waiting> {
        self.queued[0].front().or(self.queued[1].front())
    }

    fn capped(&self) -> bool {
        self.share.max_running > 0 && self.running >= self.share.max_running
    }

    fn charge(&self, tokens: u32) -> u64 {
        (u64::from(tokens) * SCALE / u64::from(self.share.weight.max(1))).max(1)
    }
}

/// A task that took a slot: whose it is and what its tenant was charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Popped {
    pub tenant: TenantId,
    pub id: Uuid,
}

#[derive(Debug)]
pub(crate) struct FairQueue {
    /// By [`TenantId`].
    lanes: Vec<Lane>,
    /// Arrival order, across tenants.
    seq: u64,
    len: [usize; 2],
    /// The counter of the tenant served last: where an idle tenant starts when
    /// nobody is waiting.
    served_at: u64,
}

impl FairQueue {
    /// One lane per tenant, in [`TenantId`] order.
    pub(crate) fn new(shares: &[Share]) -> FairQueue {
        FairQueue {
            lanes: shares
                .iter()
                .map(|&share| Lane {
                    share,
                    queued: [VecDeque::new(), VecDeque::new()],
                    running: 0,
                    counter: 0,
                })
                .collect(),
            seq: 0,
            len: [0, 0],
            served_at: 0,
        }
    }

    fn lane(&mut self, t: TenantId) -> &mut Lane {
        let i = t.index();
        if i >= self.lanes.len() {
            // Tenants unknown to the config (tests driving the owner directly) get
            // weight 1 and no cap.
            self.lanes.resize_with(i + 1, || Lane {
                share: Share {
                    weight: 1,
                    max_running: 0,
                },
                queued: [VecDeque::new(), VecDeque::new()],
                running: 0,
                counter: 0,
            });
        }
        &mut self.lanes[i]
    }

    /// Tasks waiting, by class.
    pub(crate) fn len_of(&self, class: usize) -> usize {
        self.len[class]
    }

    pub(crate) fn len(&self) -> usize {
        self.len[0] + self.len[1]
    }

    /// A task joins its tenant's lane (`cost`: the tokens it may be granted).
    pub(crate) fn push(&mut self, tenant: TenantId, class: usize, id: Uuid, cost: u32) {
        let floor = self
            .lanes
            .iter()
            .filter(|l| l.waiting())
            .map(|l| l.counter)
            .min()
            .unwrap_or(self.served_at);
        let seq = self.seq;
        self.seq += 1;
        let lane = self.lane(tenant);
        if !lane.waiting() {
            lane.counter = lane.counter.max(floor.saturating_sub(1));
        }
        lane.queued[class].push_back(Waiting { seq, id, cost });
        self.len[class] += 1;
    }

    /// The task that takes the next free slot, if any may: the head of the waiting,
    /// uncapped tenant with the smallest counter. Its tenant is charged its cost.
    pub(crate) fn pop(&mut self) -> Option<Popped> {
        let i = (0..self.lanes.len())
            .filter(|&i| self.lanes[i].waiting() && !self.lanes[i].capped())
            .min_by_key(|&i| {
                let l = &self.lanes[i];
                (l.counter, l.head().map_or(u64::MAX, |w| w.seq))
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

    /// A task that took a slot ended having produced `used` of the `cost` tokens its
    /// tenant was charged: the rest is given back.
    pub(crate) fn ended(&mut self, tenant: TenantId, cost: u32, used: u32) {
        let lane = self.lane(tenant);
        lane.running = lane.running.saturating_sub(1);
        let back = lane
            .charge(cost)
            .saturating_sub(lane.charge(used.min(cost)));
        lane.counter = lane.counter.saturating_sub(back);
    }

    /// A waiting task leaves (canceled, evicted, ended by a drain). False if it was
    /// not waiting.
    pub(crate) fn remove(&mut self, tenant: TenantId, class: usize, id: Uuid) -> bool {
        let lane = self.lane(tenant);
        let Some(at) = lane.queued[class].iter().position(|w| w.id == id) else {
            return false;
        };
        lane.queued[class].remove(at);
        self.len[class] -= 1;
        true
    }

    /// The task a full drop-lru queue evicts: the oldest waiting batch task, else the
    /// oldest waiting task.
    pub(crate) fn victim(&self) -> Option<Uuid> {
        let oldest = |class: usize| {
            self.lanes
                .iter()
                .filter_map(|l| l.queued[class].front())
                .min_by_key(|w| w.seq)
                .map(|w| w.id)
        };
        oldest(1).or_else(|| oldest(0))
    }

    /// Every waiting task in the order they would take slots if nothing else arrived
    /// and every task used what it asked for: the queue positions (1, 2, ...) as they
    /// stand now. Caps are not foreseen (when a capped tenant's tasks end is not
    /// known): its tasks keep their place in the order and start when it is under
    /// its cap again.
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
        // (counter, head's arrival, lane, how many of its tasks are placed)
        let mut heap = BinaryHeap::new();
        let nth = |l: &Lane, k: usize| {
            let n0 = l.queued[0].len();
            if k < n0 {
                l.queued[0].get(k)
            } else {
                l.queued[1].get(k - n0)
            }
            .copied()
        };
        for &i in &waiting {
            let l = &self.lanes[i];
            let head = nth(l, 0).expect("waiting");
            heap.push(Reverse((l.counter, head.seq, i, 0usize)));
        }
        while let Some(Reverse((counter, _, i, k))) = heap.pop() {
            let l = &self.lanes[i];
            let w = nth(l, k).expect("placed only while tasks remain");
            out.push(w.id);
            if let Some(next) = nth(l, k + 1) {
                heap.push(Reverse((counter + l.charge(w.cost), next.seq, i, k + 1)));
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
            q.ended(p.tenant, cost as u32, cost as u32);
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
        for _ in 0..10 {
            let p = q.pop().unwrap();
            q.ended(p.tenant, 10, 10);
        }
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
    fn classes_within_a_tenant_and_eviction_across() {
        let mut q = queue(&[1, 1]);
        q.push(TenantId(0), 1, id(1), 10);
        q.push(TenantId(1), 1, id(2), 10);
        q.push(TenantId(0), 0, id(3), 10);
        assert_eq!(q.victim(), Some(id(1)), "oldest batch task");
        assert!(q.remove(TenantId(0), 1, id(1)));
        assert!(!q.remove(TenantId(0), 1, id(1)));
        assert_eq!(q.victim(), Some(id(2)));
        assert!(q.remove(TenantId(1), 1, id(2)));
        assert_eq!(q.victim(), Some(id(3)), "else the oldest task");
        assert_eq!((q.len_of(0), q.len_of(1)), (1, 0));
    }
}

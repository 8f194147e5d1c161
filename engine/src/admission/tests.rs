//! Admission's rules, driven directly (no runtime).

use super::*;
use crate::config::PoolConfig;
use crate::task::tests::body;

fn spec(task: u128, session: u128, extra: &str) -> TaskSpec {
    let mut s = TaskSpec::parse(body(extra).as_bytes()).unwrap();
    s.task_id = Uuid::from_u128(task);
    s.session_id = Some(Uuid::from_u128(session));
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
    assert_eq!(p1.policy_label, Some(Policy::Reject));
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
    assert!(
        n.evict,
        "a queued task makes room (its owner picks the oldest batch one)"
    );
    assert_eq!(n.queue_position, 2);
    // Nothing evictable with a zero-capacity queue.
    let mut z = one_pool(|p| {
        p.policy = QueuePolicy::DropLru;
        p.queue_capacity = 0;
    });
    z.admit(&spec(1, 1, ""), 0).unwrap();
    let e = z.admit(&spec(2, 2, ""), 0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::QueueFullDropLru);
    assert_eq!(e.policy_label, Some(Policy::DropLru));
}

#[test]
fn a_finished_task_frees_its_slot_and_teaches_the_eta() {
    let mut a = one_pool(|_| {});
    a.admit(&spec(1, 1, ""), 0).unwrap();
    let q = a.admit(&spec(2, 2, ""), 0).unwrap();
    let before = q.predicted_start_ms;
    finish(
        &mut a,
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

/// Ends a task as its owner shard reports it: the pool's ETA learns from the
/// outcome, and admission gets both.
fn finish(a: &mut Admission, task: Uuid, outcome: Outcome, now_ms: u64) {
    let pool = a.locate(&task).expect("a known task");
    let mut eta = a.pools[pool].eta;
    eta.observe(&outcome);
    a.on_finished(task, outcome, eta, now_ms);
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
    assert_eq!(e.policy_label, Some(Policy::SessionsFull));
    assert!(e.retriable);
    // Session 1 was touched again at 500, so the first to expire is session 2
    // (touched at 400, expires at 1400); the stale entry of session 1 at 0 is
    // skipped. The advice counts from the oldest touch still queued.
    assert!(e.retry_after_ms.is_some_and(|ms| ms > 0), "{e:?}");
    // Reservations keep a session; settle the tasks so nothing is reserved.
    for t in 1..=3 {
        let outcome = never_ran();
        finish(&mut a, Uuid::from_u128(t), outcome, 600);
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
        finish(&mut a, Uuid::from_u128(id), outcome, 1600);
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
        finish(&mut a, Uuid::from_u128(t), outcome, 1000);
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
    finish(&mut a, Uuid::from_u128(1), outcome, 1600);
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
    assert_eq!(e.policy_label, Some(Policy::SessionTurns));
    assert!(!e.retriable);

    let mut c = Config::default();
    c.sessions.tokens_budget = 20;
    let mut a = Admission::new(&c);
    let first = a.admit(&spec(1, 7, ""), 0).unwrap();
    assert_eq!(first.budgets.unwrap().tokens_budget_remaining, Some(12));
    a.admit(&spec(2, 7, ""), 0).unwrap();
    let e = a.admit(&spec(3, 7, ""), 0).unwrap_err();
    assert_eq!(e.policy_label, Some(Policy::BudgetTokens));
    // Settling refunds what was not used.
    finish(
        &mut a,
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

#[test]
fn a_near_pool_with_a_free_slot_is_preferred_else_the_least_occupied() {
    let mut c = Config::default();
    c.pools[0].slots = 2;
    c.pools.push(PoolConfig {
        id: "b".into(),
        slots: 2,
        ..PoolConfig::default()
    });
    let mut a = Admission::new(&c);
    let cold = r#","kv_hint":"cold""#;
    let near_b = |p: usize| p == 1;
    // Both empty: with no preference the first least occupied pool, else the near one.
    assert_eq!(a.admit(&spec(1, 1, cold), 0).unwrap().pool, 0);
    let t = a.admit_near(&spec(2, 2, cold), 0, near_b).unwrap();
    assert_eq!((t.pool, t.queue_position), (1, 0));
    // b's last slot: b is still near and has room, though it ends fuller than a.
    let t = a.admit_near(&spec(3, 3, cold), 0, near_b).unwrap();
    assert_eq!((t.pool, t.queue_position), (1, 0));
    // b is full: the task goes where it starts at once, not into b's queue.
    let t = a.admit_near(&spec(4, 4, cold), 0, near_b).unwrap();
    assert_eq!((t.pool, t.queue_position), (0, 0));
    // Both full: the least occupied (a: 2 running; b: 2 running, then 1 queued).
    let t = a.admit_near(&spec(5, 5, cold), 0, near_b).unwrap();
    assert_eq!((t.pool, t.queue_position), (0, 1));
    let t = a.admit_near(&spec(6, 6, cold), 0, near_b).unwrap();
    assert_eq!((t.pool, t.queue_position), (1, 1));
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
        self.engine = Some(e);
        self
    }
}

mod lifecycle_tests {
    use super::*;

    #[test]
    fn drain_and_reload_transitions() {
        let mut a = Admission::new(&Config::default());
        let state = |a: &Admission, m: &str| {
            a.model_states()
                .iter()
                .find(|(id, _)| id == m)
                .map(|(_, s)| *s)
        };
        a.drain(0).unwrap();
        assert!(!a.pools[0].ready());
        a.drain(0)
            .expect("a second drain is accepted (the owner keeps the first deadline)");
        assert_eq!(
            a.begin_reload(0, "m2").unwrap_err().class,
            ErrorClass::Conflict
        );
        assert_eq!(a.model_states(), [("*".to_string(), ModelState::Draining)]);
        a.drained(0);
        assert_eq!(a.model_states(), [("*".to_string(), ModelState::Drained)]);
        assert_eq!(a.pools[0].state, PoolState::Drained);
        a.begin_reload(0, "fail:x").unwrap();
        assert_eq!(
            a.begin_reload(0, "m3").unwrap_err().class,
            ErrorClass::Conflict
        );
        assert_eq!(a.drain(0).unwrap_err().class, ErrorClass::Conflict);
        a.end_reload(0, "fail:x", false);
        assert_eq!(state(&a, "fail:x"), Some(ModelState::Failed));
        assert_eq!(
            a.pools[0].state,
            PoolState::Drained,
            "a failed reload rolls back"
        );
        a.begin_reload(0, "m2").unwrap();
        assert_eq!(state(&a, "m2"), Some(ModelState::Loading));
        a.end_reload(0, "m2", true);
        assert_eq!(state(&a, "m2"), Some(ModelState::Ready));
        assert_eq!(state(&a, "*"), Some(ModelState::Retired));
        assert_eq!(a.catalog[0], [1, 1]);
        assert_eq!(a.pools[0].state, PoolState::Ready);
        assert_eq!(a.pools[0].model_ref, "m2");
    }
}

/// A pool with `slots` slots and room for 100, and tenants `a` (first) and `b` with
/// their weights and limits set by `f`.
fn two_tenants(slots: u32, f: impl FnOnce(&mut [crate::config::TenantConfig])) -> Admission {
    let mut c = Config::default();
    c.pools[0].slots = slots;
    c.pools[0].queue_capacity = 100;
    let tenant = |name: &str| crate::config::TenantConfig {
        name: name.into(),
        keys: vec![crate::config::ApiKey::new(name)],
        ..Default::default()
    };
    c.tenants = vec![tenant("a"), tenant("b")];
    f(&mut c.tenants);
    Admission::new(&c)
}

fn of(tenant: u16, task: u128, extra: &str) -> TaskSpec {
    let mut s = spec(task, task, extra);
    s.tenant = TenantId(tenant);
    s
}

#[test]
fn a_tenant_alone_keeps_the_spec_positions_and_a_newcomer_is_placed_fairly() {
    let mut a = two_tenants(1, |t| t[0].weight = 3);
    let pos: Vec<u32> = (1..=5)
        .map(|i| a.admit(&of(0, i, ""), 0).unwrap().queue_position)
        .collect();
    assert_eq!(pos, [0, 1, 2, 3, 4], "one tenant: 0, 1, 2, ...");
    // b's first task goes next (a newcomer is not behind a's backlog), its second
    // behind a's next three (weight 3 to 1).
    let b1 = a.admit(&of(1, 11, ""), 0).unwrap();
    assert_eq!(b1.queue_position, 1);
    let b2 = a.admit(&of(1, 12, ""), 0).unwrap();
    assert_eq!(b2.queue_position, 1 + 3 + 1);
}

#[test]
fn max_running_holds_a_tenants_tasks_back_while_others_start() {
    let mut a = two_tenants(2, |t| t[0].max_running = 1);
    assert_eq!(a.admit(&of(0, 1, ""), 0).unwrap().queue_position, 0);
    let held = a.admit(&of(0, 2, ""), 0).unwrap();
    assert_eq!(held.queue_position, 1, "a holds its one slot: it waits");
    // A slot is free and the one waiting task may not start: b starts at once.
    assert_eq!(a.admit(&of(1, 3, ""), 0).unwrap().queue_position, 0);
    // The slots are full: b's next task goes before a's held ones, a's next after all.
    assert_eq!(a.admit(&of(1, 4, ""), 0).unwrap().queue_position, 1);
    assert_eq!(a.admit(&of(0, 5, ""), 0).unwrap().queue_position, 3);
    assert_eq!(a.admit(&of(1, 6, ""), 0).unwrap().queue_position, 2);
}

#[test]
fn max_queued_refuses_with_advice_from_the_queue() {
    let mut a = two_tenants(1, |t| t[0].max_queued = 2);
    a.admit(&of(0, 1, ""), 0).unwrap();
    a.admit(&of(0, 2, ""), 0).unwrap();
    a.admit(&of(0, 3, ""), 0).unwrap();
    let e = a.admit(&of(0, 4, ""), 0).unwrap_err();
    assert_eq!(
        (e.kind, e.policy_label, e.retriable),
        (ErrorKind::AdmissionReject, Some(Policy::TenantQueued), true)
    );
    let slot = a.pools[0].eta.service_ms();
    assert_eq!(
        e.retry_after_ms,
        Some(slot.ceil() as u64),
        "its first waiting task starts when the running one ends"
    );
    assert!(e.message.contains("\"a\"") && e.message.contains("max_queued"));
    // b is not limited by a's quota.
    // b goes next, ahead of a's waiting tasks.
    assert_eq!(a.admit(&of(1, 5, ""), 0).unwrap().queue_position, 1);
}

#[test]
fn tokens_per_minute_reserve_settle_and_refill() {
    // Each task reserves its prompt (1 word) and max_tokens (8): 9 tokens.
    let mut a = two_tenants(8, |t| t[1].tokens_per_minute = 20);
    a.admit(&of(1, 1, ""), 0).unwrap();
    a.admit(&of(1, 2, ""), 0).unwrap();
    let e = a.admit(&of(1, 3, ""), 0).unwrap_err();
    assert_eq!(e.policy_label, Some(Policy::TenantTokens));
    // 2 tokens left, 7 more needed at 20 a minute: 21 s.
    assert_eq!(e.retry_after_ms, Some(21_000));
    // a has no bucket.
    a.admit(&of(0, 4, ""), 0).unwrap();
    // Task 1 ends having produced 1 of its 8 tokens: 7 come back (2 + 7 = 9).
    let outcome = Outcome {
        tokens_out: 1,
        decode_ms: 1,
        ttft_ms: Some(1),
        service_ms: Some(2),
        ran: true,
    };
    let eta = a.pools[0].eta;
    a.on_finished(Uuid::from_u128(1), outcome, eta, 0);
    a.admit(&of(1, 3, ""), 0).unwrap();
    // Refilled with time: 9 tokens at 20 a minute take 27 s.
    let e = a.admit(&of(1, 5, ""), 0).unwrap_err();
    assert_eq!(e.retry_after_ms, Some(27_000));
    let e = a.admit(&of(1, 5, ""), 24_000).unwrap_err();
    assert_eq!(e.retry_after_ms, Some(3_000));
    a.admit(&of(1, 5, ""), 27_000).unwrap();
    // A task larger than a minute's tokens can never run: 400 naming max_tokens.
    let mut big = of(1, 6, "");
    big.max_tokens = 30;
    let big = a.admit(&big, 90_000).unwrap_err();
    assert_eq!((big.class, big.retriable), (ErrorClass::BadRequest, false));
    assert!(big.message.starts_with("max_tokens:"), "{}", big.message);
}

#[test]
fn a_task_that_never_ran_gives_its_tenant_every_token_back() {
    let mut a = two_tenants(1, |t| t[1].tokens_per_minute = 20);
    a.admit(&of(1, 1, ""), 0).unwrap();
    a.admit(&of(1, 2, ""), 0).unwrap();
    assert!(a.admit(&of(1, 3, ""), 0).is_err(), "18 of 20 reserved");
    // Task 2 waited and was canceled (or evicted) before it ran: its prompt too.
    let outcome = Outcome {
        tokens_out: 0,
        decode_ms: 0,
        ttft_ms: None,
        service_ms: None,
        ran: false,
    };
    let eta = a.pools[0].eta;
    a.on_finished(Uuid::from_u128(2), outcome, eta, 0);
    a.admit(&of(1, 3, ""), 0).unwrap();
}

#[test]
fn a_task_admitted_to_a_free_slot_that_ends_without_running_frees_it() {
    // Its owner, short of a ready replica (issue 20), queued it; it ended before it ran.
    let mut a = one_pool(|_| {});
    let first = a.admit(&spec(1, 1, ""), 0).unwrap();
    assert_eq!(first.queue_position, 0);
    finish(&mut a, first.task_id, never_ran(), 1);
    assert_eq!(a.pools[0].running(), 0, "the slot is free again");
    assert_eq!(a.admit(&spec(2, 2, ""), 2).unwrap().queue_position, 0);
}

#[test]
fn the_slots_admission_counts_are_what_the_owner_reports() {
    let mut a = one_pool(|p| p.queue_capacity = 5);
    a.set_up(0, true, 3);
    let pos: Vec<u32> = (1..=4)
        .map(|i| a.admit(&spec(i, i, ""), 0).unwrap().queue_position)
        .collect();
    assert_eq!(pos, [0, 0, 0, 1]);
    a.set_up(0, false, 0);
    let e = a.admit(&spec(9, 9, ""), 0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PoolUnready);
}

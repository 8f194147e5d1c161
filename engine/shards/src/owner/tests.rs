//! The owner's decisions, driven directly: no runtime, no I/O; what it decided is in
//! its `Effects` and its tasks' frame logs.

use std::time::Instant;

use uuid::Uuid;

use orchd_engine::admission::Admitted;
use orchd_engine::task::TaskSpec;
use orchd_engine::Config;

use super::*;
use crate::commands::NewTask;

fn new_task(n: u128, batch: bool, evict: bool) -> NewTask {
    let priority = if batch { "batch" } else { "interactive" };
    let body = format!(
        r#"{{"task_id":"{}","session_id":"{}","workload":"completion","model_ref":"m",
            "engine":"llamacpp","ctx":64,"priority":"{priority}","max_tokens":4,
            "deadline_ms":60000,"prompt":"hi"}}"#,
        Uuid::from_u128(n),
        Uuid::from_u128(n)
    );
    let spec = TaskSpec::parse(body.as_bytes()).unwrap();
    NewTask {
        admitted: Admitted {
            task_id: spec.task_id,
            pool: 0,
            queue_position: 0,
            predicted_start_ms: 0,
            backoff_ms: 0,
            predicted_decode_ms: 0,
            kv_warmth: false,
            budgets: None,
            evict,
            duplicate: false,
        },
        spec,
        correlation_id: String::new(),
        admitted_at: Instant::now(),
    }
}

fn one_slot() -> Owner {
    let mut c = Config::default();
    c.pools[0].slots = 1;
    let tenants = c
        .tenants()
        .iter()
        .map(|t| std::rc::Rc::new(crate::metrics::TenantProbe::new(&t.name)))
        .collect();
    Owner::new(&c, 0, 1, tenants)
}

/// The events of a task's frames so far, in order.
fn events(o: &Owner, n: u128) -> Vec<String> {
    let t = o.tasks[&Uuid::from_u128(n)].borrow();
    t.frames
        .iter()
        .map(|f| {
            let text = std::str::from_utf8(f).unwrap();
            let line = text.lines().find(|l| l.starts_with("event: ")).unwrap();
            line["event: ".len()..].to_string()
        })
        .collect()
}

fn finished(fx: &Effects) -> Vec<Uuid> {
    fx.notices
        .iter()
        .filter_map(|n| match n {
            DispatcherCommand::Finished { task, .. } => Some(*task),
            _ => None,
        })
        .collect()
}

#[test]
fn a_free_slot_starts_a_task_and_the_rest_queue_in_order() {
    let mut o = one_slot();
    for n in 1..=3 {
        o.enqueue(new_task(n, false, false));
    }
    let fx = o.take_effects();
    assert_eq!(fx.starts.len(), 1, "one slot, one driver");
    assert_eq!(fx.starts[0].task.borrow().spec.task_id, Uuid::from_u128(1));
    let place = |n| o.tasks[&Uuid::from_u128(n)].borrow().position;
    assert_eq!((place(1), place(2), place(3)), (0, 1, 2));
    assert_eq!(
        events(&o, 2),
        ["started", "metrics"],
        "a queued task hears its place"
    );

    // The running task ends: the next one takes the slot, the dispatcher hears both.
    assert_eq!(o.cancel(Uuid::from_u128(1)), Some(0));
    let fx = o.take_effects();
    assert_eq!(finished(&fx), [Uuid::from_u128(1)]);
    assert_eq!(fx.starts.len(), 1);
    assert_eq!(fx.starts[0].task.borrow().spec.task_id, Uuid::from_u128(2));
    assert_eq!(fx.transcripts.len(), 1, "the ended task's transcript");
    assert_eq!(events(&o, 1).last().map(String::as_str), Some("end"));
    assert_eq!(
        o.cancel(Uuid::from_u128(1)),
        Some(0),
        "canceling twice is a no-op"
    );
    assert!(o.take_effects().notices.is_empty());
}

#[test]
fn drop_lru_evicts_the_oldest_queued_batch_task_chosen_by_the_owner() {
    let mut o = one_slot();
    o.enqueue(new_task(1, false, false)); // running
    o.enqueue(new_task(2, false, false)); // queued, interactive
    o.enqueue(new_task(3, true, false)); // queued, batch
    o.enqueue(new_task(4, true, false)); // queued, batch
    o.take_effects();
    o.enqueue(new_task(5, false, true));
    let fx = o.take_effects();
    assert_eq!(finished(&fx), [Uuid::from_u128(3)], "the oldest batch task");
    assert_eq!(events(&o, 3).last().map(String::as_str), Some("error"));
    assert_eq!(o.tasks[&Uuid::from_u128(2)].borrow().state, State::Queued);
    // No batch task left: the oldest interactive one goes.
    o.enqueue(new_task(6, false, true));
    o.enqueue(new_task(7, false, true));
    assert_eq!(
        finished(&o.take_effects()),
        [Uuid::from_u128(4), Uuid::from_u128(2)]
    );
    assert_eq!(
        o.tasks[&Uuid::from_u128(1)].borrow().state,
        State::Running,
        "never a running task"
    );
}

#[test]
fn a_drain_keeps_its_first_deadline_and_reports_once_it_passed() {
    let mut o = one_slot();
    o.enqueue(new_task(1, false, false));
    o.take_effects();
    let first = o.drain(0, Duration::from_millis(50));
    let second = o.drain(0, Duration::from_secs(10));
    assert!(second <= first, "{second:?} > {first:?}");
    o.sweep(Instant::now() + Duration::from_millis(60));
    let fx = o.take_effects();
    assert!(fx
        .notices
        .iter()
        .any(|n| matches!(n, DispatcherCommand::PoolDrained { pool: 0 })));
    assert_eq!(finished(&fx), [Uuid::from_u128(1)]);
    assert_eq!(events(&o, 1).last().map(String::as_str), Some("error"));
    o.sweep(Instant::now() + Duration::from_millis(70));
    assert!(o.take_effects().notices.is_empty(), "reported once");
}

//! Admitted tasks join their pool's queue and start when a slot is free; queued tasks
//! hear their places.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use orchd_engine::frame::{self, Event};
use orchd_engine::generation::Generation;
use orchd_engine::{CancelReason, ErrorKind};

use super::pool::Affinity;
use super::task::{State, TaskRun, Terminal};
use super::{ms, Owner, Start};
use crate::commands::{DispatcherCommand, NewTask};
use crate::metrics::bump;

impl Owner {
    /// Takes an admitted task: makes room in a full drop-lru queue if admission said so
    /// (the oldest queued batch task, else the oldest queued task, is evicted), queues
    /// the task, starts what the slots allow.
    pub(crate) fn enqueue(&mut self, new: NewTask) {
        let now = Instant::now();
        let id = new.spec.task_id;
        if self.tasks.contains_key(&id) {
            return;
        }
        let victim = match self.pools.get(&new.admitted.pool) {
            Some(p) if new.admitted.evict => p.queue.victim(new.spec.tenant),
            _ => None,
        };
        if let Some(victim) = victim {
            let how = Terminal::Failed {
                reason: CancelReason::DropLru,
                kind: ErrorKind::QueueFullDropLru,
                // Not naming the newer task: it may be another tenant's.
                message: "evicted from a full queue for a newer task".into(),
            };
            self.finish(victim, how, now);
        }
        let a = &new.admitted;
        let pool = a.pool;
        let tenant = Rc::clone(&self.tenants[new.spec.tenant.index()]);
        let prompt_tokens = new.spec.prompt_tokens();
        let mut run = TaskRun {
            prompt_tokens,
            deadline_at: new.admitted_at + Duration::from_millis(new.spec.deadline_ms),
            spec: new.spec,
            admitted: new.admitted.clone(),
            correlation_id: new.correlation_id,
            state: State::Queued,
            frames: Vec::with_capacity(8),
            transcript: None,
            subs: Vec::new(),
            alone_since: Some(new.admitted_at),
            tokens_out: 0,
            admitted_at: new.admitted_at,
            started_at: None,
            replica: None,
            moves: 0,
            replica_probe: None,
            first_token_at: None,
            last_token_at: None,
            last_metrics_at: now,
            // Positions are computed (and the first metrics frame sent) by `pump`.
            position: u32::MAX,
            probe: self
                .pools
                .get(&pool)
                .map(|p| Rc::clone(&p.probe))
                .unwrap_or_default(),
            tenant,
            stop: None,
            embeddings: None,
        };
        let class = run.class();
        bump(&run.probe.enqueued[class]);
        let started = frame::Started {
            queue_position: new.admitted.queue_position,
            predicted_start_ms: new.admitted.predicted_start_ms,
        };
        run.emit(frame::encode(0, Event::Started, &started), false, now);
        // Its tenant is charged its prompt and max_tokens when it takes a slot.
        let (tenant, cost) = (
            run.spec.tenant,
            prompt_tokens + u64::from(run.spec.max_tokens),
        );
        if let Some(p) = self.pools.get_mut(&pool) {
            p.queue.push(tenant, class, id, cost);
        }
        let rc = Rc::new(RefCell::new(run));
        self.tasks.insert(id, Rc::clone(&rc));
        self.pump(pool, now);
        // Still queued with its tenant alone in the queue: it hears its place now (last
        // of its class), whatever stream.position_update_ms holds back for the tasks
        // already waiting. With tenants sharing the queue its place comes with the
        // update `pump` scheduled (the fair order is worked out once for all of them,
        // not once per arrival).
        let mut t = rc.borrow_mut();
        if t.state == State::Queued && t.position == u32::MAX {
            if let Some(p) = self
                .pools
                .get(&pool)
                .filter(|p| p.queue.tenants_waiting() == 1)
            {
                let ahead: usize = (0..=class).map(|c| p.queue.len_of(c)).sum();
                t.position = ahead as u32;
                t.last_metrics_at = now;
                let f = t.metrics_frame(p, now);
                t.emit(f, false, now);
            }
        }
    }

    /// Starts queued tasks while slots are free, then schedules telling every queued
    /// task that moved its new position.
    pub(super) fn pump(&mut self, pool_index: usize, now: Instant) {
        let Some(pool) = self.pools.get_mut(&pool_index) else {
            return;
        };
        let mut starting = Vec::new();
        // While a ready replica has a free slot: the next task, on its replica.
        while pool.pick(Affinity::None).is_some() {
            let Some(next) = pool.queue.pop() else {
                break;
            };
            let affinity = self
                .tasks
                .get(&next.id)
                .map_or(Affinity::None, |t| pool.affinity(&t.borrow().spec));
            let replica = pool.pick(affinity).expect("a replica has a free slot");
            pool.count_routed(affinity, replica);
            pool.busy += 1;
            pool.replicas[replica].busy += 1;
            starting.push((next.id, replica));
        }
        // (A replica whose URL is unusable is never ready, so never picked: its pool is
        // not ready while it has no other.)
        for (id, replica) in starting {
            let Some(rc) = self.tasks.get(&id).cloned() else {
                continue;
            };
            rc.borrow_mut().replica = Some(replica);
            let generation = self.start_task(&rc, pool_index, now);
            let (tx, stop) = oneshot::channel();
            rc.borrow_mut().stop = Some(tx);
            self.fx.starts.push(Start {
                task: rc,
                pool: pool_index,
                replica,
                engine: {
                    let p = &self.pools[&pool_index];
                    p.replicas[replica].engine_from(p.place.here)
                },
                generation,
                stop,
            });
        }
        self.report_capacity(pool_index);
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
            self.fx
                .position_updates
                .push((pool_index, Duration::from_millis(window)));
        }
    }

    /// A task takes its slot: counters, log line, its first metrics frame if it never
    /// queued, the dispatcher's notice if it did. Returns what to ask its engine for.
    fn start_task(&mut self, rc: &RefCell<TaskRun>, pool_index: usize, now: Instant) -> Generation {
        let pool = &self.pools[&pool_index];
        let mut t = rc.borrow_mut();
        t.state = State::Running;
        t.started_at = Some(now);
        t.reserve_frames(self.stream.metrics_every_tokens);
        let class = t.class();
        bump(&t.probe.started[class]);
        t.probe.queue_wait[class]
            .borrow_mut()
            .record(now - t.admitted_at);
        t.tenant.record_queue_wait(now - t.admitted_at);
        let prompt = t.prompt_tokens;
        t.probe.tokens_in.set(t.probe.tokens_in.get() + prompt);
        if let Some(r) = t.replica.and_then(|r| pool.replicas.get(r)) {
            bump(&r.probe.started[class]);
            r.probe.tokens_in.set(r.probe.tokens_in.get() + prompt);
            t.replica_probe = Some(Rc::clone(&r.probe));
        }
        let generation = generation_for(pool, &t.spec);
        let replica = t
            .replica
            .and_then(|r| pool.replicas.get(r))
            .map_or("", |r| r.id.as_str());
        tracing::info!(
            correlation_id = %t.correlation_id, tenant = %t.tenant.name, task_id = %t.spec.client.task_id, pool = %pool.cfg.id,
            replica = %replica, queue_position = t.admitted.queue_position, predicted_start_ms = t.admitted.predicted_start_ms,
            waited_ms = ms(now - t.admitted_at), "task started"
        );
        if t.position != 0 {
            // First frame after `started` for a task that never queued.
            t.position = 0;
            let f = t.metrics_frame(pool, now);
            t.emit(f, false, now);
        }
        if t.admitted.queue_position > 0 {
            let task = t.spec.task_id;
            self.fx.notices.push(DispatcherCommand::Started { task });
        }
        generation
    }

    /// Runs a started task that has streamed nothing on another replica of its pool,
    /// when the one it got refused it (its engine is unreachable; the caller marked it
    /// down): a new driver is to start there, on its session's next replica with a free
    /// slot, else on the ready replica with the fewest tasks (the task already held a
    /// slot of the pool; that replica's engine queues it until one frees, and no new task
    /// starts there meanwhile). False when no replica is ready, the task ended meanwhile,
    /// or it has moved as often as the pool has replicas; it then ends as any task whose
    /// engine failed.
    pub(crate) fn restart_elsewhere(&mut self, id: Uuid, pool_index: usize, from: usize) -> bool {
        let Some(rc) = self.tasks.get(&id).cloned() else {
            return false;
        };
        let Some(pool) = self.pools.get_mut(&pool_index) else {
            return false;
        };
        let mut t = rc.borrow_mut();
        let fresh =
            t.state == State::Running && t.first_token_at.is_none() && t.replica == Some(from);
        if !fresh || t.moves as usize >= pool.replicas.len() {
            return false;
        }
        let Some(to) = pool
            .pick(pool.affinity(&t.spec))
            .or_else(|| pool.least_busy())
        else {
            return false;
        };
        pool.replicas[from].busy = pool.replicas[from].busy.saturating_sub(1);
        pool.replicas[to].busy += 1;
        t.replica = Some(to);
        t.moves += 1;
        // Its start stays counted where it started; its tokens count where they stream.
        t.replica_probe = Some(Rc::clone(&pool.replicas[to].probe));
        let (tx, stop) = oneshot::channel();
        t.stop = Some(tx);
        tracing::warn!(
            correlation_id = %t.correlation_id, task_id = %t.spec.client.task_id, pool = %pool.cfg.id,
            from = %pool.replicas[from].id, to = %pool.replicas[to].id, "task moved to another replica before its first token"
        );
        let generation = generation_for(pool, &t.spec);
        drop(t);
        self.fx.starts.push(Start {
            task: rc,
            pool: pool_index,
            replica: to,
            engine: pool.replicas[to].engine_from(pool.place.here),
            generation,
            stop,
        });
        self.report_capacity(pool_index);
        true
    }

    /// Sends a `metrics` frame to each queued task of the pool whose position changed.
    pub(crate) fn update_positions(&mut self, pool_index: usize, now: Instant) {
        let Some(pool) = self.pools.get_mut(&pool_index) else {
            return;
        };
        pool.positions_due = false;
        let pool = &self.pools[&pool_index];
        for (i, id) in pool.queue.order().iter().enumerate() {
            let Some(rc) = self.tasks.get(id) else {
                continue;
            };
            let mut t = rc.borrow_mut();
            let pos = i as u32 + 1;
            if t.position != pos {
                t.position = pos;
                t.last_metrics_at = now;
                let f = t.metrics_frame(pool, now);
                t.emit(f, false, now);
            }
        }
    }
}

/// What a task asks of its pool's engine: its spec, with the pool's model unless the
/// pool serves any (`*`).
fn generation_for(
    pool: &super::pool::OwnerPool,
    spec: &orchd_engine::task::TaskSpec,
) -> Generation {
    let model = if pool.model_ref == "*" {
        &spec.model_ref
    } else {
        &pool.model_ref
    };
    Generation::from_spec(spec, model)
}

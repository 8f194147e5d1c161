//! Ending a task: exactly one terminal frame, its slot or queue place freed, its
//! latencies recorded once, its pool's ETA taught, its transcript handed on, the
//! dispatcher told, its log kept for the retention window.

use std::time::{Duration, Instant};

use uuid::Uuid;

use orchd_engine::admission::Outcome;
use orchd_engine::frame::{self, Event, FinishReason};
use orchd_engine::Engine;

use super::task::{State, TaskRun, Terminal};
use super::{ms, Owner};
use crate::commands::DispatcherCommand;
use crate::metrics::bump;

impl Owner {
    /// Ends a task with its terminal frame (once), then lets its pool move on (start
    /// the next task, tell the queued ones their new places). Returns its token count.
    pub(super) fn finish(&mut self, id: Uuid, how: Terminal, now: Instant) -> Option<u32> {
        let (tokens, pool) = self.end_task(id, how, now)?;
        if let Some(pool) = pool {
            self.pump(pool, now);
        }
        Some(tokens)
    }

    /// [`Owner::finish`], from the task's driver.
    pub(crate) fn end(&mut self, id: Uuid, how: Terminal) {
        self.finish(id, how, Instant::now());
    }

    /// Ends several tasks, then moves each affected pool on once: a queue that loses
    /// many tasks at once (a drain, deadlines) sends each survivor one position update,
    /// not one per task ahead of it that ended.
    pub(super) fn finish_all(&mut self, ending: Vec<(Uuid, Terminal)>, now: Instant) {
        let mut pools = Vec::new();
        for (id, how) in ending {
            if let Some((_, Some(pool))) = self.end_task(id, how, now) {
                if !pools.contains(&pool) {
                    pools.push(pool);
                }
            }
        }
        for pool in pools {
            self.pump(pool, now);
        }
    }

    /// [`Owner::finish`] without moving the pool on. Returns the task's token count and,
    /// when this call ended it, its pool.
    fn end_task(&mut self, id: Uuid, how: Terminal, now: Instant) -> Option<(u32, Option<usize>)> {
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
        let decode = match (t.first_token_at, t.last_token_at) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        };
        let outcome = Outcome {
            tokens_out: t.tokens_out,
            decode_ms: ms(decode),
            ttft_ms: t.first_token_at.map(|f| ms(f - t.admitted_at)),
            service_ms: t.started_at.map(|s| ms(now - s)),
            ran,
        };
        let pool = self.pools.get(&pool_index);
        let pool_name = pool.map_or("", |p| p.cfg.id.as_str());
        let engine = pool.map(|p| p.cfg.engine).or(t.spec.engine);
        let transcript = terminal_frame(&mut t, &how, &outcome, (pool_name, engine), now);
        self.fx.transcripts.push((t.spec.tenant, transcript));
        if let Some(first) = t.first_token_at {
            let decode = t.last_token_at.map(|last| last - first);
            t.probe.record_task(class, first - t.admitted_at, decode);
        }
        if let Some(reason) = how.cut_short() {
            t.probe.count_canceled(reason);
            if let Some(r) = &t.replica_probe {
                bump(&r.canceled[reason.index()]);
            }
        }
        let (tokens, tenant, replica) = (t.tokens_out, t.spec.tenant, t.replica);
        let (asked, used) = (
            t.prompt_tokens + u64::from(t.spec.max_tokens),
            t.prompt_tokens + u64::from(tokens),
        );
        if let Some(started) = t.started_at {
            let held = (now - started).as_micros() as u64;
            t.tenant.slot_us.set(t.tenant.slot_us.get() + held);
        }
        drop(t);
        let Some(p) = self.pools.get_mut(&pool_index) else {
            return Some((tokens, None));
        };
        if ran {
            p.busy = p.busy.saturating_sub(1);
            if let Some(r) = replica.and_then(|r| p.replicas.get_mut(r)) {
                r.busy = r.busy.saturating_sub(1);
            }
            p.queue.ended(tenant, asked, used);
        } else {
            p.queue.remove(tenant, class, id);
        }
        p.eta.observe(&outcome);
        self.fx.notices.push(DispatcherCommand::Finished {
            task: id,
            outcome,
            eta: p.eta,
        });
        // A task that ran on a replica not ready any more gives admission nothing back.
        self.report_capacity(pool_index);
        self.retained
            .push_back((now + Duration::from_millis(self.stream.retention_ms), id));
        Some((tokens, Some(pool_index)))
    }
}

/// Emits the task's terminal frame (an `end` with its transcript's id, or an
/// `error`), logs how it ended, and returns its transcript: the frames as a `trace`
/// artifact.
fn terminal_frame(
    t: &mut TaskRun,
    how: &Terminal,
    outcome: &Outcome,
    (pool, engine): (&str, Option<Engine>),
    now: Instant,
) -> orchd_engine::artifact::Stored {
    let transcript = |t: &mut TaskRun, summary: serde_json::Value| t.finish_transcript(&summary);
    // Logged as its tenant knows it.
    let (id, tokens_out, decode_ms) = (t.spec.client.task_id, t.tokens_out, outcome.decode_ms);
    match how {
        Terminal::Done { .. } | Terminal::Canceled(_) => {
            let canceled = matches!(how, Terminal::Canceled(_));
            // The OpenAI door's chunks and usage need these; OrchQueue frames stay as
            // SPEC has them.
            let (finish_reason, prompt_tokens) = match (how, &t.spec.extras) {
                (Terminal::Done { prompt_tokens }, Some(_)) => {
                    let reason = if tokens_out >= t.spec.max_tokens {
                        FinishReason::Length
                    } else {
                        FinishReason::Stop
                    };
                    (Some(reason), Some(prompt_tokens.unwrap_or(t.prompt_tokens)))
                }
                (Terminal::Canceled(_), Some(_)) => (None, Some(t.prompt_tokens)),
                _ => (None, None),
            };
            let reason = how.cut_short().map_or("done", |r| r.as_str());
            let summary = serde_json::json!({
                "event": "end", "tokens_out": tokens_out, "decode_ms": decode_ms, "canceled": canceled,
            });
            let stored = transcript(t, summary);
            let end = frame::End {
                tokens_out,
                decode_ms,
                transcript_id: &stored.id,
                canceled,
                finish_reason,
                prompt_tokens,
                embeddings: t.embeddings.as_deref(),
            };
            let f = frame::encode(t.next_id(), Event::End, &end);
            t.emit(f, true, now);
            tracing::info!(
                correlation_id = %t.correlation_id, tenant = %t.tenant.name, task_id = %id, pool = %pool,
                queue_position = t.admitted.queue_position, predicted_start_ms = t.admitted.predicted_start_ms,
                tokens_out, decode_ms, canceled, reason, transcript_id = %stored.id,
                "{}", if canceled { "task canceled" } else { "task ended" }
            );
            stored
        }
        Terminal::Failed { kind, message, .. } => {
            let summary = serde_json::json!({"event": "error", "code": kind, "message": message});
            let stored = transcript(t, summary);
            let err = frame::ErrorFrame {
                code: *kind,
                message,
                engine,
            };
            let f = frame::encode(t.next_id(), Event::Error, &err);
            t.emit(f, true, now);
            tracing::info!(
                correlation_id = %t.correlation_id, tenant = %t.tenant.name, task_id = %id, pool = %pool,
                queue_position = t.admitted.queue_position, predicted_start_ms = t.admitted.predicted_start_ms,
                tokens_out, code = %kind, message = %message, "task failed"
            );
            stored
        }
    }
}

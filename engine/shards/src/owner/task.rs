//! One task on its owner shard: its record, its frame log and subscribers, how it ends,
//! and the frames it emits while it runs.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use orchd_engine::admission::Admitted;
use orchd_engine::artifact::{Stored, TranscriptWriter};
use orchd_engine::frame::{self, Event};
use orchd_engine::task::TaskSpec;
use orchd_engine::{CancelReason, ErrorKind, Priority};

use super::pool::OwnerPool;
use crate::commands::FrameMsg;
use crate::metrics::{bump, PoolProbe, TenantProbe};

/// Most frames a task's log reserves when it starts (64 KiB of handles); a longer
/// generation grows the log from there.
pub(super) const FRAME_LOG_RESERVE: usize = 2048;
/// Frames' worth of transcript a starting task reserves (about 18 KiB).
const TRANSCRIPT_RESERVE_FRAMES: usize = 256;

/// How a task ends.
pub(crate) enum Terminal {
    /// `max_tokens` reached, or the engine said it was done: an `end` frame.
    /// `prompt_tokens`: the engine's count of the prompt, when it said.
    Done { prompt_tokens: Option<u64> },
    /// An `end` frame with `"canceled": true`.
    Canceled(CancelReason),
    /// An `error` frame.
    Failed {
        reason: CancelReason,
        kind: ErrorKind,
        message: String,
    },
}

impl Terminal {
    /// The deadline passed while the task was decoding.
    pub(crate) fn deadline_in_decode() -> Terminal {
        Terminal::Failed {
            reason: CancelReason::Deadline,
            kind: ErrorKind::DeadlineUnmet,
            message: "the deadline passed during decode".into(),
        }
    }

    /// The `tasks_canceled_total` reason it counts under, if it was cut short.
    pub(super) fn cut_short(&self) -> Option<CancelReason> {
        match self {
            Terminal::Done { .. } => None,
            Terminal::Canceled(r) | Terminal::Failed { reason: r, .. } => Some(*r),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Queued,
    Running,
    Done,
}

/// What a driver does after handing the owner a token.
pub(crate) enum Step {
    /// A token was emitted; more may come. `true`: a `metrics` frame is due.
    More(bool),
    /// `max_tokens` reached: the task is complete.
    Done,
    /// The deadline passed.
    Deadline,
    /// The task ended elsewhere (cancel, drain, watchdog): stop producing.
    Stopped,
}

pub(crate) struct TaskRun {
    pub(crate) spec: TaskSpec,
    pub(super) admitted: Admitted,
    pub(super) correlation_id: String,
    pub(crate) state: State,
    pub(super) frames: Vec<Bytes>,
    /// The transcript, written as the frames are made (every frame but the terminal)
    /// from the task's start on; a queued task holds none (its few frames are written
    /// when it starts, or when it ends without starting).
    pub(super) transcript: Option<TranscriptWriter>,
    pub(super) subs: Vec<flume::Sender<FrameMsg>>,
    /// Since when nobody has been subscribed (from admission if nobody ever was).
    pub(super) alone_since: Option<Instant>,
    pub(super) tokens_out: u32,
    /// Its prompt's size in tokens (whitespace words for the mock), counted once when
    /// it is enqueued.
    pub(super) prompt_tokens: u64,
    pub(super) admitted_at: Instant,
    pub(super) started_at: Option<Instant>,
    /// The replica of its pool it runs on, once started.
    pub(super) replica: Option<usize>,
    /// Times it was moved to another replica before its first token (its own refused).
    pub(super) moves: u32,
    /// The counters of the replica streaming it, once started.
    pub(super) replica_probe: Option<Rc<crate::metrics::ReplicaProbe>>,
    pub(super) first_token_at: Option<Instant>,
    pub(super) last_token_at: Option<Instant>,
    pub(super) deadline_at: Instant,
    pub(super) last_metrics_at: Instant,
    pub(super) position: u32,
    /// Its pool's counters, shared so that per-token counting needs no other borrow.
    pub(super) probe: Rc<PoolProbe>,
    /// Its tenant's name and counters on this shard.
    pub(crate) tenant: Rc<TenantProbe>,
    /// Dropped when the task ends, which tells its driver to stop (and an HTTP engine
    /// to close its request).
    pub(super) stop: Option<oneshot::Sender<()>>,
    /// An embedding request's vectors from its engine, for its `end` frame.
    pub(crate) embeddings: Option<Vec<Vec<f32>>>,
}

impl TaskRun {
    /// When its deadline passes.
    pub(crate) fn deadline_at(&self) -> Instant {
        self.deadline_at
    }

    pub(super) fn next_id(&self) -> u64 {
        self.frames.len() as u64
    }

    /// Appends a frame to the log and hands it to every subscriber.
    pub(super) fn emit(&mut self, bytes: Bytes, terminal: bool, now: Instant) {
        let had = !self.subs.is_empty();
        self.subs
            .retain(|tx| tx.try_send((bytes.clone(), terminal)).is_ok());
        if let (Some(w), false) = (&mut self.transcript, terminal) {
            w.frame(&bytes);
        }
        self.frames.push(bytes);
        if terminal {
            self.subs.clear();
        }
        if had && self.subs.is_empty() && self.alone_since.is_none() {
            self.alone_since = Some(now);
        }
    }

    /// 0 interactive, 1 batch.
    pub(super) fn class(&self) -> usize {
        usize::from(self.spec.priority == Priority::Batch)
    }

    /// Its frames to come (tokens, a metrics frame every `every`, the end), reserved
    /// once rather than grown by copying the log as it doubles; and its transcript,
    /// sized for them, with the frames it made while queued.
    pub(super) fn reserve_frames(&mut self, every: u32) {
        let max = self.spec.max_tokens as usize;
        let ahead = max + max / every.max(1) as usize + 2;
        let want = (self.frames.len() + ahead).min(FRAME_LOG_RESERVE);
        let have = self.frames.len();
        self.frames.reserve(want.saturating_sub(have));
        // A long task's transcript grows past this by doubling.
        self.transcript = Some(TranscriptWriter::starting_with(
            &self.frames,
            ahead.min(TRANSCRIPT_RESERVE_FRAMES),
        ));
    }

    /// The transcript, closed with how the task ended (the terminal frame is not in it).
    pub(super) fn finish_transcript(&mut self, terminal: &serde_json::Value) -> Stored {
        let w = match self.transcript.take() {
            Some(w) => w,
            None => TranscriptWriter::starting_with(&self.frames, 0),
        };
        // Shown to its tenant: the ids it sent, never the scoped ones.
        w.finish(
            self.spec.client.task_id,
            self.spec.client.session_id,
            terminal,
        )
    }

    /// A `metrics` frame: queue depth, on-time chance, warmth, place and predicted
    /// start while queued, tokens while running, budget remainders.
    pub(super) fn metrics_frame(&self, pool: &OwnerPool, now: Instant) -> Bytes {
        let queued = self.state == State::Queued;
        let predicted_start = queued.then(|| {
            pool.eta
                .predicted_start_ms(self.position, pool.slots().max(1))
        });
        let remaining = self.spec.expected_out().saturating_sub(self.tokens_out);
        let predicted_left = pool
            .eta
            .predicted_left_ms(remaining, self.first_token_at.is_none())
            + predicted_start.unwrap_or(0) as f64;
        let m = frame::Metrics {
            queue_depth: pool.depth(),
            on_time_probability: on_time_probability(self.deadline_at, now, predicted_left),
            kv_warmth: self.admitted.kv_warmth,
            queue_position: queued.then_some(self.position),
            predicted_start_ms: predicted_start,
            tokens_out: (!queued).then_some(self.tokens_out),
            budgets: self.admitted.budgets.as_ref().unwrap_or(&NO_BUDGETS),
        };
        frame::encode(self.next_id(), Event::Metrics, &m)
    }

    /// Emits one token of a running task (its frame, counters), or says why not; a
    /// `metrics` frame is due after every `every` tokens (`Step::More(true)`). Runs on
    /// the owner shard, so it is ordered with cancel.
    pub(crate) fn token(&mut self, text: &str, every: u32, now: Instant) -> Step {
        if self.state != State::Running {
            return Step::Stopped;
        }
        if now >= self.deadline_at {
            return Step::Deadline;
        }
        if self.tokens_out >= self.spec.max_tokens {
            return Step::Done;
        }
        let f = frame::token(self.next_id(), self.tokens_out, text);
        self.tokens_out += 1;
        bump(&self.probe.tokens_out);
        if let Some(r) = &self.replica_probe {
            bump(&r.tokens_out);
        }
        bump(&self.tenant.tokens_out);
        if let Some(prev) = self.last_token_at {
            self.probe.inter_token.borrow_mut().record(now - prev);
        }
        self.first_token_at.get_or_insert(now);
        self.last_token_at = Some(now);
        self.emit(f, false, now);
        Step::More(self.tokens_out % every == 0 && self.tokens_out < self.spec.max_tokens)
    }
}

const NO_BUDGETS: frame::BudgetRemaining = frame::BudgetRemaining {
    tokens_budget_remaining: None,
    time_budget_remaining_ms: None,
    cost_budget_remaining: None,
};

/// Chance of finishing by the deadline: a logistic of the slack (time left minus
/// predicted time still needed), scaled to the prediction; 0 once the deadline passed.
fn on_time_probability(deadline_at: Instant, now: Instant, predicted_left_ms: f64) -> f64 {
    if now >= deadline_at {
        return 0.0;
    }
    let left = (deadline_at - now).as_secs_f64() * 1e3;
    let slack = left - predicted_left_ms;
    let scale = (predicted_left_ms * 0.25).max(5.0);
    let p = 1.0 / (1.0 + (-slack / scale).exp());
    (p * 1000.0).round() / 1000.0
}

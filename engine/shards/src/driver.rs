//! Runs one task's generation on its owner shard: opens the engine's stream (retrying
//! a refused connection or a 5xx before the first token, with capped jitter), hands
//! each token to the owner, and ends the task the way the engine ended. When the task
//! ends elsewhere (cancel, watchdog, drain, deadline), its stop signal fires and the
//! generation is dropped, which closes the engine's request: a real engine sees its
//! client go and stops generating.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use orchd_engine::generation::Generation;
use orchd_engine::{CancelReason, EngineError};

use crate::engines::{Adapter, EngineAdapter, Health, Piece, TokenStream};
use crate::owner::task::{Step, TaskRun, Terminal};
use crate::owner::Start;
use crate::rt;

/// Where a driver's task lives: its owner shard (the one implementation), seen only
/// through what a driver needs of it.
pub(crate) trait Home: 'static {
    /// Hands the owner a token of a running task.
    fn token(&self, task: &RefCell<TaskRun>, text: &str, now: Instant) -> Step;
    /// Ends the task (no-op if it already ended elsewhere).
    fn end(this: &Rc<Self>, id: Uuid, how: Terminal);
    /// A replica (pool, replica) answered like an engine that is down.
    fn engine_down(this: &Rc<Self>, at: (usize, usize), health: Health);
    /// Runs the task, which has streamed nothing, on another replica of its pool; false
    /// if there is none to run it (see `Owner::restart_elsewhere`).
    fn restart_elsewhere(this: &Rc<Self>, id: Uuid, at: (usize, usize)) -> bool;
}

/// Spawns the driver of a task that got its slot, for its pool's kind of engine.
pub(crate) fn start<H: Home>(home: &Rc<H>, s: Start) {
    let shard = Rc::clone(home);
    let Start {
        task,
        pool,
        replica,
        engine,
        generation,
        stop,
    } = s;
    let pool = (pool, replica);
    match engine {
        Adapter::Mock(e) => rt::spawn(
            rt::Class::Throughput,
            drive(shard, task, pool, e, generation, stop),
        ),
        Adapter::OpenAi(e) => rt::spawn(
            rt::Class::Throughput,
            drive(shard, task, pool, e, generation, stop),
        ),
        Adapter::LlamaCpp(e) => rt::spawn(
            rt::Class::Throughput,
            drive(shard, task, pool, e, generation, stop),
        ),
        // The owner ends such tasks itself; it never hands one over.
        Adapter::Unusable(_) => {}
    }
}

/// How a generation ended, seen from the driver.
enum Ended<S> {
    /// The engine said it was done (the stream, to be finished, and its count of the
    /// prompt), or `max_tokens` was reached.
    Complete(Option<(S, Option<u64>)>),
    Deadline,
    Stopped,
    Failed {
        error: EngineError,
        streamed: bool,
    },
}

async fn drive<H: Home, A: EngineAdapter>(
    shard: Rc<H>,
    task: Rc<RefCell<TaskRun>>,
    pool: (usize, usize),
    engine: Rc<A>,
    generation: Generation,
    stop: oneshot::Receiver<()>,
) {
    // `id` is orchd's key for the task; logs show the id its client sent, and its tenant.
    let (id, shown, tenant) = {
        let t = task.borrow();
        (t.spec.task_id, t.spec.client.task_id, Rc::clone(&t.tenant))
    };
    let generate = async {
        let mut stream = match open(&*engine, id, &generation).await {
            Ok(s) => s,
            Err(error) => {
                return Ended::Failed {
                    error,
                    streamed: false,
                }
            }
        };
        loop {
            match stream.next().await {
                Ok(Some(Piece::Text(text))) => {
                    let step = shard.token(&task, &text, Instant::now());
                    match step {
                        Step::More(_) => {}
                        Step::Done => return Ended::Complete(None),
                        Step::Deadline => return Ended::Deadline,
                        Step::Stopped => return Ended::Stopped,
                    }
                }
                Ok(Some(Piece::Embeddings(vectors))) => {
                    // Kept for the `end` frame, which carries them to the client.
                    task.borrow_mut().embeddings = Some(vectors);
                }
                Ok(Some(Piece::End(usage))) => {
                    tracing::debug!(tenant = %tenant.name, task_id = %shown, ?usage, "engine done");
                    return Ended::Complete(Some((stream, usage.prompt_tokens)));
                }
                Ok(None) => {
                    let error = EngineError::Reset(
                        "the stream ended before the engine said it was done".into(),
                    );
                    return Ended::Failed {
                        error,
                        streamed: true,
                    };
                }
                Err(error) => {
                    return Ended::Failed {
                        error,
                        streamed: true,
                    }
                }
            }
        }
    };
    let ended = futures_lite::future::or(generate, async {
        let _ = stop.await;
        Ended::Stopped
    })
    .await;
    match ended {
        Ended::Stopped => {}
        Ended::Deadline => H::end(&shard, id, Terminal::deadline_in_decode()),
        Ended::Complete(None) => H::end(
            &shard,
            id,
            Terminal::Done {
                prompt_tokens: None,
            },
        ),
        Ended::Complete(Some((stream, prompt_tokens))) => {
            H::end(&shard, id, Terminal::Done { prompt_tokens });
            stream.finish().await;
        }
        Ended::Failed { error, streamed } => {
            if error.engine_down() {
                H::engine_down(&shard, pool, Health::default());
                // Nothing streamed yet: the next replica of the set may run it.
                if !streamed && H::restart_elsewhere(&shard, id, pool) {
                    return;
                }
            }
            let kind = error.error_kind(streamed);
            tracing::warn!(tenant = %tenant.name, task_id = %shown, error = %error, code = %kind, "engine call failed");
            let how = Terminal::Failed {
                reason: CancelReason::Engine,
                kind,
                message: error.to_string(),
            };
            H::end(&shard, id, how);
        }
    }
}

/// Opens the engine's stream, retrying a retriable failure (refused connection, 5xx)
/// with capped exponential backoff and a jitter from the task id.
async fn open<A: EngineAdapter>(
    engine: &A,
    id: Uuid,
    generation: &Generation,
) -> Result<A::Stream, EngineError> {
    let mut attempt = 0u32;
    loop {
        match engine.open(id, generation).await {
            Ok(s) => return Ok(s),
            Err(e) if e.retriable() && attempt < engine.retries() => {
                attempt += 1;
                let base = 50u64 << attempt.min(4);
                let jitter = (id.as_u128() as u64).wrapping_mul(u64::from(attempt) + 1) % base;
                rt::sleep(Duration::from_millis((base + jitter).min(1000))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

//! Runs one task's generation: opens the engine's stream (retrying a refused
//! connection or a 5xx before the first token, with capped jitter), hands each token to
//! the task's owner, and tells it how the engine ended. The driver runs on the shard its
//! replica is homed on: the owner's own, or (a replica set spread over the shards,
//! issue 20) another, which sends the tokens back in batches ([`RemoteSink`]). When the task
//! ends elsewhere (cancel, watchdog, drain, deadline), its stop signal fires and the
//! generation is dropped, which closes the engine's request: a real engine sees its
//! client go and stops generating.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use orchd_engine::config::AdapterConfig;
use orchd_engine::generation::Generation;
use orchd_engine::EngineError;

use crate::commands::{Drive, DriveEnd, ShardCommand, TokenAt};
use crate::engines::{Adapter, EngineAdapter, Piece, TokenStream};
use crate::mesh::{Mailbox, MeshError};
use crate::metrics::TenantProbe;
use crate::owner::task::Step;
use crate::rt;

/// Where a driver's tokens and end go: its task's owner, on this shard
/// (`shard::LocalSink`, each token at once) or on another ([`RemoteSink`], in batches).
#[allow(async_fn_in_trait)] // shard-local futures: never sent to another thread
pub(crate) trait Sink: 'static {
    /// Hands over a token of the running task; says whether to go on.
    fn token(&mut self, text: Cow<'static, str>, now: Instant) -> Step;
    /// An embedding request's vectors, for its `end` frame.
    fn embeddings(&mut self, vectors: Vec<Vec<f32>>);
    /// It holds tokens not yet handed over.
    fn holding(&self) -> bool {
        false
    }
    /// What it holds is to go now, whatever the engine has ready (a first token, a
    /// full batch).
    fn due(&self) -> bool {
        false
    }
    /// Hands over what is held back: called before the driver waits for its engine.
    async fn flush(&mut self) {}
    /// The generation ended (not called when the task ended elsewhere first).
    async fn ended(self, how: DriveEnd);
}

/// What logs name a task by: orchd's key, the id its client sent, its tenant.
pub(crate) struct Who {
    pub(crate) id: Uuid,
    pub(crate) shown: Uuid,
    pub(crate) tenant: Rc<TenantProbe>,
}

/// Spawns the driver of a task that got its slot, for its replica's kind of engine.
pub(crate) fn start<S: Sink>(
    sink: S,
    engine: Adapter,
    who: Who,
    generation: Generation,
    stop: oneshot::Receiver<()>,
) {
    match engine {
        Adapter::Mock(e) => rt::spawn(rt::Class::Throughput, drive(sink, who, e, generation, stop)),
        Adapter::OpenAi(e) => {
            rt::spawn(rt::Class::Throughput, drive(sink, who, e, generation, stop))
        }
        Adapter::LlamaCpp(e) => {
            rt::spawn(rt::Class::Throughput, drive(sink, who, e, generation, stop))
        }
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

async fn drive<K: Sink, A: EngineAdapter>(
    mut sink: K,
    who: Who,
    engine: Rc<A>,
    generation: Generation,
    stop: oneshot::Receiver<()>,
) {
    let generate = async {
        let mut stream = match open(&*engine, who.id, &generation).await {
            Ok(s) => s,
            Err(error) => {
                return Ended::Failed {
                    error,
                    streamed: false,
                }
            }
        };
        loop {
            // A piece the engine already sent is taken at once; before waiting for
            // the next, what the sink holds is handed over.
            if sink.due() {
                sink.flush().await;
            }
            let piece = if sink.holding() {
                let mut next = std::pin::pin!(stream.next());
                match futures_lite::future::poll_once(next.as_mut()).await {
                    Some(piece) => piece,
                    None => {
                        sink.flush().await;
                        next.await
                    }
                }
            } else {
                stream.next().await
            };
            match piece {
                Ok(Some(Piece::Text(text))) => match sink.token(text, Instant::now()) {
                    Step::More(_) => {}
                    Step::Done => return Ended::Complete(None),
                    Step::Deadline => return Ended::Deadline,
                    Step::Stopped => return Ended::Stopped,
                },
                Ok(Some(Piece::Embeddings(vectors))) => sink.embeddings(vectors),
                Ok(Some(Piece::End(usage))) => {
                    tracing::debug!(tenant = %who.tenant.name, task_id = %who.shown, ?usage, "engine done");
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
        Ended::Deadline => sink.ended(DriveEnd::Deadline).await,
        Ended::Complete(None) => {
            sink.ended(DriveEnd::Done {
                prompt_tokens: None,
            })
            .await
        }
        Ended::Complete(Some((stream, prompt_tokens))) => {
            sink.ended(DriveEnd::Done { prompt_tokens }).await;
            stream.finish().await;
        }
        Ended::Failed { error, streamed } => {
            sink.ended(DriveEnd::Failed { error, streamed }).await;
        }
    }
}

/// Tokens a remote driver holds at most before it sends them, whatever its engine
/// has ready.
const BATCH: usize = 64;

/// The sink of a task whose pool's owner is another shard: tokens go back in one
/// [`ShardCommand::Driven`] per read from the engine (every token the read brought, at
/// most [`BATCH`]; the first token at once). Sent only while the owner's mailbox is at
/// most half full, so token traffic never takes the room its requests need (cancel,
/// subscribe, admission), and the engine is read no faster than the owner takes its
/// tokens; none is lost. `max_tokens` and the deadline are checked here too, to stop
/// the engine without a round trip; the owner has the last word.
pub(crate) struct RemoteSink {
    owner: Mailbox<ShardCommand>,
    task: Uuid,
    at: (usize, usize),
    held: Vec<TokenAt>,
    embeddings: Option<Vec<Vec<f32>>>,
    sent: u32,
    max_tokens: u32,
    deadline_at: Instant,
    /// This shard's count of running remote drivers (shutdown waits for them).
    running: Rc<Cell<usize>>,
}

impl RemoteSink {
    async fn send(&mut self, end: Option<DriveEnd>) {
        let cmd = ShardCommand::Driven {
            task: self.task,
            at: self.at,
            tokens: std::mem::take(&mut self.held),
            embeddings: self.embeddings.take(),
            end,
        };
        // Gone: the owner has stopped (shutdown), and its tasks with it.
        let half = self.owner.capacity() / 2;
        let _ = send_when_room(&self.owner, cmd, half).await;
    }
}

impl Drop for RemoteSink {
    fn drop(&mut self) {
        self.running.set(self.running.get() - 1);
    }
}

/// Sends `cmd`, which must arrive, once fewer than `limit` commands wait in `to`
/// (looking again every millisecond while not); `Gone` once its shard has stopped.
pub(crate) async fn send_when_room(
    to: &Mailbox<ShardCommand>,
    mut cmd: ShardCommand,
    limit: usize,
) -> Result<(), MeshError> {
    loop {
        if to.queued() < limit {
            match to.try_send(cmd) {
                Ok(()) => return Ok(()),
                Err(back) if back.error == MeshError::Gone => return Err(MeshError::Gone),
                Err(back) => cmd = back.command,
            }
        }
        rt::sleep(Duration::from_millis(1)).await;
    }
}

impl Sink for RemoteSink {
    fn token(&mut self, text: Cow<'static, str>, now: Instant) -> Step {
        if now >= self.deadline_at {
            return Step::Deadline;
        }
        if self.sent >= self.max_tokens {
            return Step::Done;
        }
        self.sent += 1;
        self.held.push((text, now));
        Step::More(false)
    }

    fn embeddings(&mut self, vectors: Vec<Vec<f32>>) {
        self.embeddings = Some(vectors);
    }

    fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    fn due(&self) -> bool {
        self.held.len() >= BATCH || (self.sent == 1 && !self.held.is_empty())
    }

    async fn flush(&mut self) {
        self.send(None).await;
    }

    async fn ended(mut self, how: DriveEnd) {
        self.send(Some(how)).await;
    }
}

/// The engine clients of the replicas homed on this shard whose pools' owners are
/// elsewhere: one per (pool, replica), built on the first task, so its keep-alive
/// connections are this core's.
#[derive(Default)]
pub(crate) struct Remote {
    engines: RefCell<HashMap<(usize, Arc<str>), Adapter>>,
    /// Drivers running here for other shards' tasks.
    running: Rc<Cell<usize>>,
}

/// Entries kept before those no task is using are let go (a set that churns through
/// DNS names new replicas; the old ones' clients would otherwise stay).
const REMOTE_ENGINES_KEPT: usize = 4 * orchd_engine::config::MAX_REPLICAS;

impl Remote {
    fn engine(&self, pool: usize, replica: &Arc<str>, cfg: &AdapterConfig) -> Adapter {
        let mut engines = self.engines.borrow_mut();
        if let Some(e) = engines.get(&(pool, Arc::clone(replica))) {
            return e.clone();
        }
        if engines.len() >= REMOTE_ENGINES_KEPT {
            engines.retain(|_, e| !e.unused());
        }
        let e = Adapter::from_config(cfg);
        engines.insert((pool, Arc::clone(replica)), e.clone());
        e
    }

    /// Drivers running here for other shards' tasks.
    pub(crate) fn running(&self) -> usize {
        self.running.get()
    }

    /// Starts the driver of a task sent here by its pool's owner.
    pub(crate) fn start(&self, d: Drive, tenant: Rc<TenantProbe>, owner: Mailbox<ShardCommand>) {
        let Drive {
            task,
            shown,
            tenant: _,
            owner: _,
            at,
            replica,
            engine,
            generation,
            max_tokens,
            deadline_at,
            stop,
        } = d;
        let engine = self.engine(at.0, &replica, &engine);
        self.running.set(self.running.get() + 1);
        let sink = RemoteSink {
            owner,
            task,
            at,
            held: Vec::new(),
            embeddings: None,
            sent: 0,
            max_tokens,
            deadline_at,
            running: Rc::clone(&self.running),
        };
        let who = Who {
            id: task,
            shown,
            tenant,
        };
        match engine {
            // Its URL does not resolve from here: the task fails as on its owner.
            Adapter::Unusable(why) => rt::spawn(rt::Class::Throughput, async move {
                let error = EngineError::Unreachable(why.to_string());
                sink.ended(DriveEnd::Failed {
                    error,
                    streamed: false,
                })
                .await
            }),
            engine => start(sink, engine, who, generation, stop),
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

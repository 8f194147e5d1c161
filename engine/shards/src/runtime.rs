//! Starting and stopping the shards and the dispatcher.
//!
//! One pinned executor per shard, plus one small dispatcher executor. Each shard owns a
//! [`Shard`] (its mailbox, its probe, handles to its peers) and runs the front end's
//! `shard_main` on it; startup waits until every shard reports ready or failed, so a
//! shard that cannot start is an error at startup, not a silent half-running server.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use orchd_engine::artifact::{StoreError, Stored};
use orchd_engine::Config;

pub use crate::dispatcher::DispatcherCommand;
use crate::mesh::{self, Inbox, Mailbox, MeshError, Reply, ShardId};
use crate::owner::{FrameMsg, NewTask, Owner, PoolStats, Subscribed};
use crate::rt;

/// How many shards to run for a configured `server.shards` (0 = one per core).
pub fn resolve_shards(configured: usize) -> usize {
    if configured == 0 {
        rt::available_cores().len()
    } else {
        configured
    }
}

#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Number of shards, at least 1 (see [`resolve_shards`]).
    pub shards: usize,
    /// Capacity of every mailbox.
    pub mailbox_capacity: usize,
    /// How long startup waits for all shards to report.
    pub ready_timeout: Duration,
    pub config: Arc<Config>,
}

/// Commands a shard executes on its own core.
pub enum ShardCommand {
    /// Read this shard's probes (for `/metrics`).
    Scrape(Reply<ShardSnapshot>),
    /// From the dispatcher: an admitted task of a pool this shard owns.
    Enqueue(Box<NewTask>),
    /// Stream a task's frames from `from` on into `tx`.
    Subscribe {
        task: Uuid,
        from: u64,
        tx: flume::Sender<FrameMsg>,
        reply: Reply<Subscribed>,
    },
    /// Cancel a task; replies with the tokens it produced, `None` if unknown.
    Cancel {
        task: Uuid,
        reply: Reply<Option<u32>>,
    },
    /// A stored artifact's document, from the shard that keeps it.
    Artifact {
        id: String,
        reply: Reply<Result<Option<Bytes>, StoreError>>,
    },
    /// Store an artifact on the shard that keeps it; replies with the stored document.
    StoreArtifact {
        stored: Stored,
        evictable: bool,
        reply: Option<Reply<Result<Bytes, StoreError>>>,
    },
    /// From the dispatcher: end the pool's tasks `deadline` from now.
    Drain {
        pool: usize,
        deadline: Duration,
        ack: Reply<()>,
    },
    /// From the dispatcher: load `model_ref` and switch the pool to it atomically.
    Reload {
        pool: usize,
        model_ref: String,
        done: Reply<Result<(), String>>,
    },
    /// Live figures of a pool this shard owns.
    PoolStats {
        pool: usize,
        reply: Reply<Option<PoolStats>>,
    },
}

/// Shard-local counters: plain cells, no atomics; read by a scrape on the same core.
#[derive(Default)]
pub struct Probe {
    /// Admission outcomes of the requests this shard served.
    pub admission: crate::metrics::AdmissionProbe,
    /// HTTP responses by status class: index 0 = 1xx ... 4 = 5xx.
    pub responses: [Cell<u64>; 5],
    pub connections_accepted: Cell<u64>,
    pub connections_open: Cell<u64>,
    /// Connections answered 503 and closed: over the shard's share of max_connections.
    pub connections_refused: Cell<u64>,
}

impl Probe {
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].set(self.responses[class].get() + 1);
    }

    pub fn snapshot(&self, shard: ShardId) -> ProbeSnapshot {
        ProbeSnapshot {
            shard,
            responses: std::array::from_fn(|i| self.responses[i].get()),
            connections_accepted: self.connections_accepted.get(),
            connections_open: self.connections_open.get(),
            connections_refused: self.connections_refused.get(),
        }
    }
}

/// Replies to a store request, or for a transcript (nobody waiting) logs a failure.
fn answer_store(reply: Option<Reply<Result<Bytes, StoreError>>>, r: Result<Bytes, StoreError>) {
    match reply {
        Some(reply) => {
            let _ = reply.send(r);
        }
        None => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "transcript not stored");
            }
        }
    }
}

/// One shard's artifact backend.
enum ArtifactStore {
    /// Bounded to `max_memory_bytes / shards`.
    Memory(orchd_engine::artifact::MemoryStore),
    /// The shared directory; this shard reads and writes the ids it keeps.
    Fs(std::path::PathBuf),
}

impl ArtifactStore {
    fn new(config: &Config, shards: usize) -> ArtifactStore {
        let a = &config.artifacts;
        match a.backend {
            orchd_engine::config::ArtifactBackend::Memory => ArtifactStore::Memory(
                orchd_engine::artifact::MemoryStore::new(a.max_memory_bytes / shards.max(1) as u64),
            ),
            orchd_engine::config::ArtifactBackend::Fs => ArtifactStore::Fs(a.dir.clone()),
        }
    }
}

/// Everything a scrape reads from one shard.
#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    pub http: ProbeSnapshot,
    pub admission: crate::metrics::AdmissionSnapshot,
    /// The pools this shard owns.
    pub pools: Vec<crate::metrics::PoolSample>,
    pub live_tasks: u64,
    /// CPU time of the shard's thread so far.
    pub cpu_seconds: f64,
}

/// A copy of one shard's probe, sent across cores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSnapshot {
    pub shard: ShardId,
    pub responses: [u64; 5],
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub connections_refused: u64,
}

/// The longest a stopping shard waits for the others and for its artifact writes.
pub const QUIESCE_LIMIT: Duration = Duration::from_secs(3);

/// The state of one shard. Lives on its shard's core and is not `Send`: other cores
/// reach it only through its mailbox.
pub struct Shard {
    id: ShardId,
    peers: Vec<Mailbox<ShardCommand>>,
    dispatcher: Mailbox<DispatcherCommand>,
    stop: watch::Receiver<bool>,
    pub probe: Probe,
    /// The tasks and pools this shard owns.
    pub(crate) owner: RefCell<Owner>,
    /// The artifacts this shard keeps.
    artifacts: RefCell<ArtifactStore>,
    /// Artifact writes handed to the blocking thread and not yet done: shutdown waits
    /// for them, so an acknowledged or transcript write is never cut off.
    writes_in_flight: Cell<usize>,
    /// Shards that have ended their tasks during shutdown (shared by all shards; only
    /// touched when stopping).
    quiesced: Arc<AtomicUsize>,
    config: Arc<Config>,
    _not_send: PhantomData<Rc<()>>,
}

impl Shard {
    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn shard_count(&self) -> usize {
        self.peers.len()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Ends every task this shard owns with an error frame (`POOL_UNAVAILABLE`).
    pub fn end_all_tasks(self: &Rc<Self>, message: &str) {
        self.owner.borrow_mut().end_all(self, message);
    }

    fn snapshot(&self) -> ShardSnapshot {
        let owner = self.owner.borrow();
        ShardSnapshot {
            http: self.probe.snapshot(self.id),
            admission: self.probe.admission.snapshot(),
            pools: owner
                .pool_indexes()
                .into_iter()
                .filter_map(|i| owner.pool_sample(i))
                .collect(),
            live_tasks: owner.live_tasks() as u64,
            cpu_seconds: crate::metrics::thread_cpu_seconds(),
        }
    }

    /// The mailbox of shard `to`.
    pub(crate) fn peer(&self, to: ShardId) -> &Mailbox<ShardCommand> {
        &self.peers[to.0]
    }

    fn get_artifact(self: &Rc<Self>, id: String, reply: Reply<Result<Option<Bytes>, StoreError>>) {
        let dir = match &*self.artifacts.borrow() {
            ArtifactStore::Memory(m) => {
                let _ = reply.send(Ok(m.get(&id)));
                return;
            }
            ArtifactStore::Fs(dir) => dir.clone(),
        };
        rt::spawn_detached(async move {
            let r = rt::blocking(move || orchd_engine::artifact::fs_store::get(&dir, &id)).await;
            let _ = reply.send(r);
        });
    }

    /// Stores an artifact this shard keeps (see [`crate::shard_for_artifact`]).
    pub(crate) fn store_artifact(
        self: &Rc<Self>,
        stored: Stored,
        evictable: bool,
        reply: Option<Reply<Result<Bytes, StoreError>>>,
    ) {
        let dir = match &mut *self.artifacts.borrow_mut() {
            ArtifactStore::Memory(m) => {
                let r = m.put(stored, evictable);
                answer_store(reply, r);
                return;
            }
            ArtifactStore::Fs(dir) => dir.clone(),
        };
        self.writes_in_flight.set(self.writes_in_flight.get() + 1);
        let shard = Rc::clone(self);
        rt::spawn_detached(async move {
            let r =
                rt::blocking(move || orchd_engine::artifact::fs_store::put(&dir, &stored)).await;
            shard.writes_in_flight.set(shard.writes_in_flight.get() - 1);
            answer_store(reply, r)
        });
    }

    /// The last step of a shard's shutdown, once its own tasks have ended: it keeps
    /// serving commands until every shard has ended its tasks (their transcripts may be
    /// kept here) and its mailbox is empty, then until its artifact writes are done.
    /// Bounded by [`QUIESCE_LIMIT`], so a shard that never got this far cannot hang the
    /// others.
    pub async fn quiesce(&self) {
        self.quiesced.fetch_add(1, Ordering::AcqRel);
        let limit = Instant::now() + QUIESCE_LIMIT;
        let busy = || {
            self.quiesced.load(Ordering::Acquire) < self.peers.len()
                || self.peers[self.id.0].queued() > 0
                || self.writes_in_flight.get() > 0
        };
        while busy() && Instant::now() < limit {
            rt::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Tasks on this shard that have not ended.
    pub fn live_tasks(&self) -> usize {
        self.owner.borrow().live_tasks()
    }

    pub fn dispatcher(&self) -> &Mailbox<DispatcherCommand> {
        &self.dispatcher
    }

    /// Sends a command to shard `to` (possibly this one) and waits for the reply.
    pub async fn invoke_on<R>(
        &self,
        to: ShardId,
        make: impl FnOnce(Reply<R>) -> ShardCommand,
    ) -> Result<R, MeshError> {
        self.peers[to.0].request(make).await
    }

    /// Sends a command to every shard and folds the replies in shard order.
    pub async fn map_reduce<R, A>(
        &self,
        make: impl Fn(Reply<R>) -> ShardCommand,
        init: A,
        fold: impl FnMut(A, R) -> A,
    ) -> Result<A, MeshError> {
        mesh::map_reduce(&self.peers, make, init, fold).await
    }

    /// True once shutdown has begun.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when shutdown begins.
    pub fn stopped(&self) -> impl Future<Output = ()> + 'static {
        let mut rx = self.stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    async fn serve_commands(self: Rc<Self>, inbox: Inbox<ShardCommand>) {
        while let Some(cmd) = inbox.recv().await {
            match cmd {
                ShardCommand::Scrape(reply) => {
                    let _ = reply.send(self.snapshot());
                }
                ShardCommand::Enqueue(new) => self.owner.borrow_mut().enqueue(&self, *new),
                ShardCommand::Subscribe {
                    task,
                    from,
                    tx,
                    reply,
                } => {
                    let _ = reply.send(self.owner.borrow_mut().subscribe(task, from, tx));
                }
                ShardCommand::Cancel { task, reply } => {
                    let _ = reply.send(self.owner.borrow_mut().cancel(&self, task));
                }
                ShardCommand::Artifact { id, reply } => self.get_artifact(id, reply),
                ShardCommand::StoreArtifact {
                    stored,
                    evictable,
                    reply,
                } => self.store_artifact(stored, evictable, reply),
                ShardCommand::Drain {
                    pool,
                    deadline,
                    ack,
                } => {
                    self.owner.borrow_mut().drain(pool, deadline);
                    let _ = ack.send(());
                }
                ShardCommand::Reload {
                    pool,
                    model_ref,
                    done,
                } => {
                    // Loading takes time; the shard serves everything else meanwhile.
                    let shard = Rc::clone(&self);
                    rt::spawn_detached(async move {
                        let load = shard.owner.borrow().load_time(pool);
                        rt::sleep(load).await;
                        let _ = done.send(shard.owner.borrow_mut().reload(pool, model_ref));
                    });
                }
                ShardCommand::PoolStats { pool, reply } => {
                    let _ = reply.send(self.owner.borrow().pool_stats(pool));
                }
            }
        }
    }

    async fn sweep_forever(self: Rc<Self>) {
        let every = self.owner.borrow().sweep_interval();
        loop {
            rt::sleep(every).await;
            self.owner.borrow_mut().sweep(&self, Instant::now());
        }
    }
}

/// Probes a pool's engine forever; admission routes around it while it is down.
async fn probe_forever(shard: Rc<Shard>, pool: usize, upstream: Rc<crate::upstream::Upstream>) {
    loop {
        rt::sleep(upstream.health_interval).await;
        if shard.stopping() {
            return;
        }
        let up = upstream.healthy().await;
        let version = if up { upstream.version().await } else { None };
        let mut owner = shard.owner.borrow_mut();
        owner.set_up(&shard, pool, up);
        owner.set_reported_version(pool, version);
    }
}

/// Told by a shard's main once it serves (or cannot).
pub struct Ready {
    tx: mpsc::Sender<Result<(), String>>,
}

impl Ready {
    pub fn ok(self) {
        let _ = self.tx.send(Ok(()));
    }

    pub fn fail(self, why: String) {
        let _ = self.tx.send(Err(why));
    }
}

/// Why the runtime did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Preflight(#[from] rt::PreflightError),
    #[error("shard {shard} failed to start: {why}")]
    Shard { shard: usize, why: String },
    #[error("shard {0} did not report ready in time")]
    Timeout(usize),
    #[error("could not start an executor thread: {0}")]
    Spawn(std::io::Error),
}

/// The running shards and dispatcher.
pub struct Runtime {
    stop: watch::Sender<bool>,
    shards: Vec<rt::ExecutorThread<()>>,
    dispatcher_halt: Option<oneshot::Sender<()>>,
    dispatcher_thread: Option<rt::ExecutorThread<()>>,
    dispatcher: Mailbox<DispatcherCommand>,
}

impl Runtime {
    /// Starts the dispatcher and `opts.shards` shards. Shard `i` runs
    /// `shard_main(shard, seeds[i], ready)`; this returns once every shard called
    /// `ready.ok()`, or fails with the first shard's error.
    pub fn start<S, F, Fut>(
        opts: RuntimeOptions,
        seeds: Vec<S>,
        shard_main: F,
    ) -> Result<Runtime, StartError>
    where
        S: Send + 'static,
        F: Fn(Rc<Shard>, S, Ready) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        assert_eq!(seeds.len(), opts.shards, "one seed per shard");
        rt::preflight(opts.shards + 1)?;
        let cores = rt::available_cores();
        let (stop, stop_rx) = watch::channel(false);

        let epoch = Instant::now();
        let (peers, inboxes): (Vec<_>, Vec<_>) = (0..opts.shards)
            .map(|_| mesh::mailbox(opts.mailbox_capacity))
            .unzip();
        let (dispatcher, dispatcher_inbox) = mesh::mailbox(opts.mailbox_capacity);
        let (halt, halted) = oneshot::channel::<()>();
        // The dispatcher runs on its own thread, or as a task on shard 0 (no extra
        // thread competing for the cores; see `server.dispatcher`).
        let on_shard0 =
            opts.config.server.dispatcher == orchd_engine::config::DispatcherPlacement::Shard0;
        let mut dispatcher_parts = Some((dispatcher_inbox, halted, peers.clone()));
        let dispatcher_thread = if on_shard0 {
            None
        } else {
            let (inbox, halted, dpeers) = dispatcher_parts.take().expect("not taken yet");
            let config = Arc::clone(&opts.config);
            Some(
                rt::spawn_executor("orchd-dispatcher", None, move || {
                    crate::dispatcher::dispatcher_main(inbox, halted, config, dpeers, epoch)
                })
                .map_err(StartError::Spawn)?,
            )
        };

        let mut runtime = Runtime {
            stop,
            shards: Vec::with_capacity(opts.shards),
            dispatcher_halt: Some(halt),
            dispatcher_thread,
            dispatcher: dispatcher.clone(),
        };

        let shard_main = Arc::new(shard_main);
        let quiesced = Arc::new(AtomicUsize::new(0));
        let mut waiting = Vec::with_capacity(opts.shards);
        for (i, (seed, inbox)) in seeds.into_iter().zip(inboxes).enumerate() {
            let (tx, rx) = mpsc::channel();
            let peers = peers.clone();
            let dispatcher = dispatcher.clone();
            let stop = stop_rx.clone();
            let shard_main = Arc::clone(&shard_main);
            let quiesced = Arc::clone(&quiesced);
            let config = Arc::clone(&opts.config);
            let shards = opts.shards;
            let dispatcher_here = if i == 0 {
                dispatcher_parts.take()
            } else {
                None
            };
            let cpu = cores[i % cores.len()];
            let thread =
                rt::spawn_executor(&format!("orchd-shard-{i}"), Some(cpu), move || async move {
                    let shard = Rc::new(Shard {
                        id: ShardId(i),
                        peers,
                        dispatcher,
                        stop,
                        probe: Probe::default(),
                        owner: RefCell::new(Owner::new(&config, i, shards)),
                        artifacts: RefCell::new(ArtifactStore::new(&config, shards)),
                        writes_in_flight: Cell::new(0),
                        quiesced: Arc::clone(&quiesced),
                        config,
                        _not_send: PhantomData,
                    });
                    if let Some((inbox, halted, dpeers)) = dispatcher_here {
                        let config = Arc::clone(&shard.config);
                        rt::spawn_detached(crate::dispatcher::dispatcher_main(
                            inbox, halted, config, dpeers, epoch,
                        ));
                    }
                    rt::spawn_detached(Rc::clone(&shard).serve_commands(inbox));
                    rt::spawn_detached(Rc::clone(&shard).sweep_forever());
                    for (pool, upstream) in shard.owner.borrow().upstreams() {
                        rt::spawn_detached(probe_forever(Rc::clone(&shard), pool, upstream));
                    }
                    shard_main(shard, seed, Ready { tx }).await
                });
            match thread {
                Ok(t) => runtime.shards.push(t),
                Err(e) => {
                    let _ = runtime.stop_now();
                    return Err(StartError::Spawn(e));
                }
            }
            waiting.push(rx);
        }

        let deadline = Instant::now() + opts.ready_timeout;
        for (i, rx) in waiting.into_iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let failure = match rx.recv_timeout(left) {
                Ok(Ok(())) => continue,
                Ok(Err(why)) => StartError::Shard { shard: i, why },
                Err(mpsc::RecvTimeoutError::Timeout) => StartError::Timeout(i),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The thread ended without a word: its executor failed to start.
                    let thread = runtime.shards.remove(i);
                    let why = match thread.join() {
                        Ok(()) => "exited before it was ready".to_string(),
                        Err(e) => e,
                    };
                    StartError::Shard { shard: i, why }
                }
            };
            let _ = runtime.stop_now();
            return Err(failure);
        }
        Ok(runtime)
    }

    /// A handle to the dispatcher, for callers outside the shards.
    pub fn dispatcher(&self) -> &Mailbox<DispatcherCommand> {
        &self.dispatcher
    }

    /// Begins shutdown: every shard's [`Shard::stopped`] resolves.
    pub fn begin_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops everything in reverse order of construction and waits for the threads:
    /// shards first (they finish their own graceful shutdown), then the dispatcher.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Result<(), String> {
        self.begin_stop();
        let mut first_error = None;
        for t in self.shards.drain(..) {
            if let Err(e) = t.join() {
                first_error.get_or_insert(e);
            }
        }
        if let Some(halt) = self.dispatcher_halt.take() {
            let _ = halt.send(());
        }
        if let Some(t) = self.dispatcher_thread.take() {
            if let Err(e) = t.join() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.stop_now();
    }
}

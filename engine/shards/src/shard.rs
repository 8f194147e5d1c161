//! One shard: its mailbox and peers, its probe, its owner (the tasks and pools it
//! keeps) and its artifacts. It serves the commands other cores send it and carries out
//! what its owner decides ([`Effects`]): starting engine drivers, telling the
//! dispatcher, storing transcripts, scheduling position updates.

use std::borrow::Cow;
use std::cell::{Cell, Ref, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use orchd_engine::artifact::{StoreError, Stored};
use orchd_engine::tenant::TenantId;
use orchd_engine::Config;

use orchd_engine::{ApiError, CancelReason, ErrorKind};

use crate::commands::{
    DispatcherCommand, Drive, DriveEnd, FrameMsg, PoolStats, ProbeSnapshot, Rendering,
    ShardCommand, ShardSnapshot, Subscribed, TokenAt,
};
use crate::driver::{Sink, Who};
use crate::engines::Adapter;
use crate::mesh::{self, unavailable, Inbox, Mailbox, MeshError, Reply, ShardId};
use crate::metrics::TenantProbe;
use crate::owner::task::{Step, TaskRun, Terminal};
use crate::owner::{Effects, Engine, Owner, Start};
use crate::rt;

/// Shard-local counters: plain cells, no atomics; read by a scrape on the same core.
pub struct Probe {
    /// Every tenant's counters, in [`TenantId`] order (shared with the owner).
    pub tenants: Vec<Rc<TenantProbe>>,
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
    fn new(config: &Config) -> Probe {
        Probe {
            tenants: config
                .tenants()
                .iter()
                .map(|t| Rc::new(TenantProbe::new(&t.name)))
                .collect(),
            admission: Default::default(),
            responses: Default::default(),
            connections_accepted: Default::default(),
            connections_open: Default::default(),
            connections_refused: Default::default(),
        }
    }

    /// A tenant's counters on this shard.
    pub fn tenant(&self, id: TenantId) -> &TenantProbe {
        &self.tenants[id.index()]
    }

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

/// The longest a stopping shard waits for the others and for its artifact writes.
pub const QUIESCE_LIMIT: Duration = Duration::from_secs(3);

/// The state of one shard. Lives on its shard's core and is not `Send`: other cores
/// reach it only through its mailbox.
pub struct Shard {
    id: ShardId,
    peers: Vec<Mailbox<ShardCommand>>,
    /// This shard's own mailbox, read by `serve_commands`; a command from this shard to
    /// itself runs in place once the commands waiting here have run (see `invoke_on`).
    inbox: Inbox<ShardCommand>,
    /// The dispatcher, when it runs on this shard: admission runs in place.
    local_dispatcher: Option<crate::dispatcher::Local>,
    dispatcher: Mailbox<DispatcherCommand>,
    stop: watch::Receiver<bool>,
    pub probe: Probe,
    /// The tasks and pools this shard owns.
    owner: RefCell<Owner>,
    /// Engine clients of replicas homed here whose pools' owners are other shards.
    remote: crate::driver::Remote,
    /// Notices for the dispatcher that found its mailbox full; sent first next time,
    /// so the dispatcher's view of queues never loses an event.
    outbox: RefCell<VecDeque<DispatcherCommand>>,
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

/// What a shard is built from (see [`crate::Runtime::start`]).
pub(crate) struct ShardParts {
    pub(crate) id: ShardId,
    pub(crate) peers: Vec<Mailbox<ShardCommand>>,
    pub(crate) dispatcher: Mailbox<DispatcherCommand>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) quiesced: Arc<AtomicUsize>,
    pub(crate) config: Arc<Config>,
    pub(crate) local_dispatcher: Option<crate::dispatcher::Local>,
}

impl Shard {
    /// Builds the shard on its own core and starts its background work: serving
    /// `inbox`, the owner's periodic sweep, and its engines' health probes.
    pub(crate) fn start(parts: ShardParts, inbox: Inbox<ShardCommand>) -> Rc<Shard> {
        let shards = parts.peers.len();
        let probe = Probe::new(&parts.config);
        let owner = Owner::new(&parts.config, parts.id.0, shards, probe.tenants.clone());
        let shard = Rc::new(Shard {
            owner: RefCell::new(owner),
            remote: Default::default(),
            artifacts: RefCell::new(ArtifactStore::new(&parts.config, shards)),
            id: parts.id,
            peers: parts.peers,
            inbox: inbox.clone(),
            local_dispatcher: parts.local_dispatcher,
            dispatcher: parts.dispatcher,
            stop: parts.stop,
            probe,
            outbox: RefCell::new(VecDeque::new()),
            writes_in_flight: Cell::new(0),
            quiesced: parts.quiesced,
            config: parts.config,
            _not_send: PhantomData,
        });
        // The dispatcher assumed every replica ready; tell it where that is not so.
        shard.with_owner(Owner::report_capacities);
        rt::spawn(rt::Class::Latency, Rc::clone(&shard).serve_commands(inbox));
        rt::spawn(rt::Class::Throughput, Rc::clone(&shard).sweep_forever());
        // Read first, spawn after: no borrow of the owner is held while tasks start.
        let (probed, discovering) = {
            let owner = shard.owner();
            (owner.probed_engines(), owner.discovering())
        };
        for (pool, replica, generation, engine) in probed {
            rt::spawn(
                rt::Class::Throughput,
                probe_forever(Rc::clone(&shard), (pool, replica, generation), engine),
            );
        }
        for (pool, discovery) in discovering {
            rt::spawn(
                rt::Class::Throughput,
                discover_forever(Rc::clone(&shard), pool, discovery),
            );
        }
        shard
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn shard_count(&self) -> usize {
        self.peers.len()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The owner, to read (or to hand a token to: see [`Owner::token`]).
    pub(crate) fn owner(&self) -> Ref<'_, Owner> {
        self.owner.borrow()
    }

    /// Runs a decision of the owner, then carries out what it decided, outside the
    /// owner's borrow.
    pub(crate) fn with_owner<R>(self: &Rc<Self>, f: impl FnOnce(&mut Owner) -> R) -> R {
        let (r, fx) = {
            let mut owner = self.owner.borrow_mut();
            let r = f(&mut owner);
            (r, owner.take_effects())
        };
        self.carry_out(fx);
        r
    }

    fn carry_out(self: &Rc<Self>, fx: Effects) {
        for (tenant, stored) in fx.transcripts {
            self.store_transcript(tenant, stored);
        }
        if !fx.notices.is_empty() {
            self.flush_outbox();
            let mut outbox = self.outbox.borrow_mut();
            for cmd in fx.notices {
                if !outbox.is_empty() {
                    outbox.push_back(cmd);
                } else if let Err(back) = self.dispatcher.try_send(cmd) {
                    outbox.push_back(back.command);
                }
            }
        }
        for s in fx.starts {
            self.start_driver(s);
        }
        for (pool, replica, generation, engine) in fx.probes {
            rt::spawn(
                rt::Class::Throughput,
                probe_forever(Rc::clone(self), (pool, replica, generation), engine),
            );
        }
        for (pool, after) in fx.position_updates {
            let shard = Rc::clone(self);
            rt::spawn(rt::Class::Throughput, async move {
                rt::sleep(after).await;
                shard.with_owner(|o| o.update_positions(pool, Instant::now()));
            });
        }
    }

    /// Starts a task's driver: here, or on the shard its replica is homed on.
    fn start_driver(self: &Rc<Self>, s: Start) {
        let Start {
            task,
            pool,
            replica,
            engine,
            generation,
            stop,
        } = s;
        let at = (pool, replica);
        let (shard, replica, config) = match engine {
            Engine::Here(engine) => {
                let who = {
                    let t = task.borrow();
                    Who {
                        id: t.spec.task_id,
                        shown: t.spec.client.task_id,
                        tenant: Rc::clone(&t.tenant),
                    }
                };
                let sink = LocalSink {
                    shard: Rc::clone(self),
                    task,
                    id: who.id,
                    at,
                };
                return crate::driver::start(sink, engine, who, generation, stop);
            }
            Engine::On {
                shard,
                replica,
                config,
            } => (shard, replica, config),
        };
        let t = task.borrow();
        let id = t.spec.task_id;
        let drive = ShardCommand::Drive(Box::new(Drive {
            task: id,
            shown: t.spec.client.task_id,
            tenant: t.spec.tenant,
            owner: self.id,
            at,
            replica,
            engine: config,
            generation,
            max_tokens: t.spec.max_tokens,
            deadline_at: t.deadline_at(),
            stop,
        }));
        drop(t);
        let Err(back) = self.peers[shard].try_send(drive) else {
            return;
        };
        // Its mailbox is full: the start waits for room (it is not the engine's fault).
        let (me, peer) = (Rc::clone(self), self.peers[shard].clone());
        rt::spawn(rt::Class::Latency, async move {
            let room = peer.capacity();
            if crate::driver::send_when_room(&peer, back.command, room)
                .await
                .is_err()
            {
                let how = Terminal::Failed {
                    reason: CancelReason::Shutdown,
                    kind: ErrorKind::PoolUnavailable,
                    message: "orchd is shutting down".into(),
                };
                me.with_owner(|o| o.end(id, how));
            }
        });
    }

    /// Tokens (and the end) of a task of this shard's pools, from the shard driving it.
    fn driven(
        self: &Rc<Self>,
        id: Uuid,
        at: (usize, usize),
        tokens: Vec<TokenAt>,
        embeddings: Option<Vec<Vec<f32>>>,
        end: Option<DriveEnd>,
    ) {
        let task = self.owner().task(id);
        if let Some(task) = task {
            let owner = self.owner();
            for (text, now) in tokens {
                if !matches!(owner.token(&task, &text, now), Step::More(_)) {
                    break;
                }
            }
            if let Some(v) = embeddings {
                task.borrow_mut().embeddings = Some(v);
            }
        }
        if let Some(how) = end {
            self.with_owner(|o| o.driver_ended(id, at, how));
        }
    }

    /// Sends the notices that found the dispatcher's mailbox full, in order.
    fn flush_outbox(&self) {
        let mut outbox = self.outbox.borrow_mut();
        while let Some(cmd) = outbox.pop_front() {
            if let Err(back) = self.dispatcher.try_send(cmd) {
                outbox.push_front(back.command);
                return;
            }
        }
    }

    /// Ends every task this shard owns with an error frame (`POOL_UNAVAILABLE`).
    pub fn end_all_tasks(self: &Rc<Self>, message: &str) {
        self.with_owner(|o| o.end_all(message));
    }

    fn snapshot(&self) -> ShardSnapshot {
        let owner = self.owner();
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
            tenants: self.probe.tenants.iter().map(|t| t.snapshot()).collect(),
        }
    }

    /// Hands a transcript to the shard that keeps its id, for its tenant's shelf.
    fn store_transcript(self: &Rc<Self>, tenant: TenantId, stored: Stored) {
        let keeper = crate::placement::shard_for_artifact(&stored.id, self.shard_count());
        if keeper == self.id {
            self.store_artifact(tenant, stored, true, None);
        } else if let Err(back) = self.peers[keeper.0].try_send(ShardCommand::StoreArtifact {
            tenant,
            stored,
            evictable: true,
            reply: None,
        }) {
            tracing::warn!(error = %back.error, "transcript not stored: its shard's mailbox is full");
        }
    }

    fn get_artifact(
        self: &Rc<Self>,
        tenant: TenantId,
        id: String,
        reply: Reply<Result<Option<Bytes>, StoreError>>,
    ) {
        let name = &self.probe.tenant(tenant).name;
        let dir = match &*self.artifacts.borrow() {
            ArtifactStore::Memory(m) => {
                let _ = reply.send(Ok(m.get(name, &id)));
                return;
            }
            ArtifactStore::Fs(dir) => dir.clone(),
        };
        let name = name.clone();
        rt::spawn(rt::Class::Latency, async move {
            let r =
                rt::blocking(move || orchd_engine::artifact::fs_store::get(&dir, &name, &id)).await;
            let _ = reply.send(r);
        });
    }

    /// Stores an artifact this shard keeps (see [`crate::placement::shard_for_artifact`]).
    fn store_artifact(
        self: &Rc<Self>,
        tenant: TenantId,
        stored: Stored,
        evictable: bool,
        reply: Option<Reply<Result<Bytes, StoreError>>>,
    ) {
        let name = &self.probe.tenant(tenant).name;
        let dir = match &mut *self.artifacts.borrow_mut() {
            ArtifactStore::Memory(m) => {
                let r = m.put(name, stored, evictable);
                answer_store(reply, r);
                return;
            }
            ArtifactStore::Fs(dir) => dir.clone(),
        };
        let name = name.clone();
        self.writes_in_flight.set(self.writes_in_flight.get() + 1);
        let shard = Rc::clone(self);
        rt::spawn(rt::Class::Throughput, async move {
            let r =
                rt::blocking(move || orchd_engine::artifact::fs_store::put(&dir, &name, &stored))
                    .await;
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

    /// Tasks on this shard that have not ended, and the generations it runs for other
    /// shards' tasks (shutdown's grace waits for both).
    pub fn live_tasks(&self) -> usize {
        self.owner().live_tasks() + self.remote.running()
    }

    /// The dispatcher, through its typed handle.
    pub fn dispatcher(&self) -> crate::handle::Dispatcher<'_> {
        if self.local_dispatcher.is_some() {
            // An admission in place sees the mailbox's commands; notices of this shard
            // still parked here (the mailbox was full) go there first.
            self.flush_outbox();
        }
        crate::handle::Dispatcher::new(
            &self.dispatcher,
            Some(self.id),
            self.local_dispatcher.as_ref(),
        )
    }

    /// Sends a command to shard `to` and waits for the reply. A command to this shard
    /// runs in place, after the commands already waiting in its mailbox (so it sees
    /// every command sent before it, as through the mailbox): the request that asked
    /// is answered in the same turn, not after every other request of a burst.
    pub(crate) async fn invoke_on<R>(
        self: &Rc<Self>,
        to: ShardId,
        make: impl FnOnce(Reply<R>) -> ShardCommand,
    ) -> Result<R, MeshError> {
        if to != self.id {
            return self.peers[to.0].request(make).await;
        }
        self.run_waiting();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.handle(make(reply));
        answer.await.map_err(|_| MeshError::Gone)
    }

    /// Runs the commands waiting in this shard's mailbox.
    fn run_waiting(self: &Rc<Self>) {
        while let Some(cmd) = self.inbox.try_recv() {
            self.handle(cmd);
        }
    }

    /// Sends a command to every shard and folds the replies in shard order.
    pub(crate) async fn map_reduce<R, A>(
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
            self.handle(cmd);
        }
    }

    /// Carries out one command (from the mailbox, or in place from this shard).
    fn handle(self: &Rc<Self>, cmd: ShardCommand) {
        {
            match cmd {
                ShardCommand::Scrape(reply) => {
                    let _ = reply.send(self.snapshot());
                }
                ShardCommand::Enqueue(new) => self.with_owner(|o| o.enqueue(*new)),
                ShardCommand::Subscribe {
                    task,
                    from,
                    tx,
                    reply,
                } => {
                    let _ = reply.send(self.with_owner(|o| o.subscribe(task, from, tx)));
                }
                ShardCommand::Cancel { task, reply } => {
                    let _ = reply.send(self.with_owner(|o| o.cancel(task)));
                }
                ShardCommand::Rendering { task, reply } => {
                    let _ = reply.send(self.owner().rendering(task));
                }
                ShardCommand::Artifact { tenant, id, reply } => {
                    self.get_artifact(tenant, id, reply)
                }
                ShardCommand::StoreArtifact {
                    tenant,
                    stored,
                    evictable,
                    reply,
                } => self.store_artifact(tenant, stored, evictable, reply),
                ShardCommand::Drain {
                    pool,
                    deadline,
                    reply,
                } => {
                    let _ = reply.send(self.with_owner(|o| o.drain(pool, deadline)));
                }
                ShardCommand::Reload {
                    pool,
                    model_ref,
                    done,
                } => {
                    // Loading takes time; the shard serves everything else meanwhile.
                    let shard = Rc::clone(self);
                    rt::spawn(rt::Class::Latency, async move {
                        // Every replica loads the model, or the pool stays on its old one.
                        let engines = shard.owner().engines(pool);
                        let mut loaded = match &engines {
                            None => Err("pool is not on this shard".into()),
                            Some(e) if e.is_empty() => {
                                Err("the pool has no engine replica to load it".into())
                            }
                            Some(_) => Ok(()),
                        };
                        for e in engines.into_iter().flatten() {
                            if loaded.is_ok() {
                                loaded = e.load(&model_ref).await;
                            }
                        }
                        let r =
                            loaded.and_then(|()| shard.with_owner(|o| o.reload(pool, model_ref)));
                        let _ = done.send(r);
                    });
                }
                ShardCommand::PoolStats { pool, reply } => {
                    let _ = reply.send(self.owner().pool_stats(pool));
                }
                ShardCommand::DrainReplica {
                    pool,
                    replica,
                    deadline,
                    reply,
                } => {
                    let _ =
                        reply.send(self.with_owner(|o| o.drain_replica(pool, &replica, deadline)));
                }
                ShardCommand::Drive(d) => {
                    let tenant = Rc::clone(&self.probe.tenants[d.tenant.index()]);
                    let owner = self.peers[d.owner.0].clone();
                    self.remote.start(*d, tenant, owner);
                }
                ShardCommand::Driven {
                    task,
                    at,
                    tokens,
                    embeddings,
                    end,
                } => self.driven(task, at, tokens, embeddings, end),
            }
        }
    }

    async fn sweep_forever(self: Rc<Self>) {
        let every = self.owner().sweep_interval();
        loop {
            rt::sleep(every).await;
            self.flush_outbox();
            self.with_owner(|o| o.sweep(Instant::now()));
        }
    }
}

/// The sink of a driver running on its task's owner: each token goes to the owner at
/// once, in order with cancel (both run on this thread).
struct LocalSink {
    shard: Rc<Shard>,
    task: Rc<RefCell<TaskRun>>,
    id: Uuid,
    at: (usize, usize),
}

impl Sink for LocalSink {
    fn token(&mut self, text: Cow<'static, str>, now: Instant) -> Step {
        self.shard.owner().token(&self.task, &text, now)
    }

    fn embeddings(&mut self, vectors: Vec<Vec<f32>>) {
        self.task.borrow_mut().embeddings = Some(vectors);
    }

    async fn ended(self, how: DriveEnd) {
        self.shard
            .with_owner(|o| o.driver_ended(self.id, self.at, how));
    }
}

/// Probes a pool's engine forever; admission routes around it while it is down.
async fn probe_forever(
    shard: Rc<Shard>,
    (pool, replica, generation): (usize, usize, u32),
    engine: Adapter,
) {
    let Some(every) = engine.health_interval() else {
        return;
    };
    loop {
        rt::sleep(every).await;
        let current = shard.owner().probe_current(pool, replica, generation);
        if shard.stopping() || !current {
            return;
        }
        let health = engine.health().await;
        // A replica that left the set (or left and came back) while the probe was out
        // is not this probe's any more.
        shard.with_owner(|o| {
            if o.probe_current(pool, replica, generation) {
                o.set_health(pool, replica, health);
            }
        });
    }
}

/// Resolves a pool's `discover` name at once and then every interval; its owner makes
/// the replica set follow the answers (a lookup blocks a helper thread, never the shard).
async fn discover_forever(shard: Rc<Shard>, pool: usize, d: crate::owner::Discovery) {
    loop {
        if shard.stopping() {
            return;
        }
        let found = crate::discover::resolve(d.name.clone(), d.port, d.server).await;
        if shard.stopping() {
            return;
        }
        shard.with_owner(|o| o.discovered(pool, found));
        rt::sleep(d.every).await;
    }
}

/// What the front end asks of shards (this one or a peer).
impl Shard {
    /// Streams task `task`'s frames from `from` on into `tx`, from its owner shard.
    pub async fn subscribe(
        self: &Rc<Self>,
        owner: ShardId,
        task: Uuid,
        from: u64,
        tx: flume::Sender<FrameMsg>,
    ) -> Result<Subscribed, ApiError> {
        self.invoke_on(owner, |reply| ShardCommand::Subscribe {
            task,
            from,
            tx,
            reply,
        })
        .await
        .map_err(unavailable)
    }

    /// How a task's stream looks through the OpenAI door, `None` if unknown.
    pub async fn rendering(
        self: &Rc<Self>,
        owner: ShardId,
        task: Uuid,
    ) -> Result<Option<Rendering>, ApiError> {
        self.invoke_on(owner, |reply| ShardCommand::Rendering { task, reply })
            .await
            .map_err(unavailable)
    }

    /// Cancels a task on its owner shard: the tokens it produced, `None` if unknown.
    pub async fn cancel(
        self: &Rc<Self>,
        owner: ShardId,
        task: Uuid,
    ) -> Result<Option<u32>, ApiError> {
        self.invoke_on(owner, |reply| ShardCommand::Cancel { task, reply })
            .await
            .map_err(unavailable)
    }

    /// `tenant`'s stored artifact's document, from the shard that keeps it.
    pub async fn artifact(
        self: &Rc<Self>,
        tenant: TenantId,
        id: &str,
    ) -> Result<Result<Option<Bytes>, StoreError>, ApiError> {
        let keeper = crate::placement::shard_for_artifact(id, self.shard_count());
        self.invoke_on(keeper, |reply| ShardCommand::Artifact {
            tenant,
            id: id.to_string(),
            reply,
        })
        .await
        .map_err(unavailable)
    }

    /// Stores a client's artifact on its tenant's shelf on the shard that keeps it;
    /// the stored document.
    pub async fn put_artifact(
        self: &Rc<Self>,
        tenant: TenantId,
        stored: Stored,
    ) -> Result<Result<Bytes, StoreError>, ApiError> {
        let keeper = crate::placement::shard_for_artifact(&stored.id, self.shard_count());
        self.invoke_on(keeper, |reply| ShardCommand::StoreArtifact {
            tenant,
            stored,
            evictable: false,
            reply: Some(reply),
        })
        .await
        .map_err(unavailable)
    }

    /// Live figures of pool `pool` (its config index), from its owner shard.
    pub async fn pool_stats(self: &Rc<Self>, pool: usize) -> Result<Option<PoolStats>, ApiError> {
        let owner = crate::placement::shard_for(pool, self.shard_count());
        self.invoke_on(owner, |reply| ShardCommand::PoolStats { pool, reply })
            .await
            .map_err(unavailable)
    }

    /// Drains one replica of pool `pool` (on its owner shard); the time its tasks have
    /// left, or `None` if the pool has no such replica.
    pub async fn drain_replica(
        self: &Rc<Self>,
        pool: usize,
        replica: String,
        deadline: Duration,
    ) -> Result<Option<Duration>, ApiError> {
        let owner = crate::placement::shard_for(pool, self.shard_count());
        self.invoke_on(owner, |reply| ShardCommand::DrainReplica {
            pool,
            replica,
            deadline,
            reply,
        })
        .await
        .map_err(unavailable)
    }

    /// Every shard's probes, in shard order (for `/metrics`).
    pub async fn scrape_all(&self) -> Result<Vec<ShardSnapshot>, ApiError> {
        self.map_reduce(ShardCommand::Scrape, Vec::new(), |mut v, s| {
            v.push(s);
            v
        })
        .await
        .map_err(unavailable)
    }
}

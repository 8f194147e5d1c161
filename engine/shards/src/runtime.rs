//! Starting and stopping the shards and the dispatcher, wired in one place.
//!
//! One executor per shard (pinned unless `server.pin_cores = false`), plus the dispatcher
//! (a task on shard 0, or its own executor). Each shard builds its [`Shard`] (its mailbox,
//! its probe, handles to its peers) and runs the front end's `shard_main` on it; startup
//! waits until every shard reports ready or failed, so a shard that cannot start is an
//! error at startup, not a silent half-running server. Stopping runs in reverse order of
//! construction.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use orchd_engine::Config;

use crate::commands::DispatcherCommand;
use crate::mesh::{self, Mailbox, ShardId};
use crate::rt;
use crate::shard::{Shard, ShardParts};

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
    kind: rt::Kind,
    stop: watch::Sender<bool>,
    shards: Vec<rt::ExecutorThread<()>>,
    dispatcher_halt: Option<oneshot::Sender<()>>,
    dispatcher_thread: Option<rt::ExecutorThread<()>>,
    dispatcher: Mailbox<DispatcherCommand>,
}

impl Runtime {
    /// The runtime the shards run on (`server.runtime` resolved on this host).
    pub fn kind(&self) -> rt::Kind {
        self.kind
    }

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
        let choice = rt::choose(opts.config.server.runtime, opts.shards + 1)?;
        let kind = choice.kind;
        if let Some(why) = &choice.fallback {
            tracing::warn!(
                runtime = kind.as_str(),
                cause = %why,
                "io_uring cannot start here; running on epoll (server.runtime = \"auto\")"
            );
        }
        let cores = rt::available_cores();
        let pin = opts.config.server.pin_cores;
        let io_poll = Duration::from_micros(opts.config.server.io_poll_us);
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
                rt::spawn_executor(kind, "orchd-dispatcher", None, io_poll, move || {
                    let d = crate::dispatcher::new(&config, dpeers, epoch);
                    crate::dispatcher::serve(d, inbox, halted)
                })
                .map_err(StartError::Spawn)?,
            )
        };

        let mut runtime = Runtime {
            kind,
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
            let dispatcher_here = if i == 0 {
                dispatcher_parts.take()
            } else {
                None
            };
            let cpu = pin.then(|| cores[i % cores.len()]);
            let thread = rt::spawn_executor(
                kind,
                &format!("orchd-shard-{i}"),
                cpu,
                io_poll,
                move || async move {
                    let local_dispatcher = dispatcher_here.map(|(inbox, halted, dpeers)| {
                        let d = crate::dispatcher::new(&config, dpeers, epoch);
                        let local = crate::dispatcher::Local::new(&d, &inbox);
                        rt::spawn(
                            rt::Class::Latency,
                            crate::dispatcher::serve(d, inbox, halted),
                        );
                        local
                    });
                    let parts = ShardParts {
                        id: ShardId(i),
                        peers,
                        dispatcher,
                        stop,
                        quiesced,
                        config,
                        local_dispatcher,
                    };
                    let shard = Shard::start(parts, inbox);
                    shard_main(shard, seed, Ready { tx }).await
                },
            );
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

    /// The dispatcher, for callers outside the shards.
    pub fn dispatcher(&self) -> crate::handle::Dispatcher<'_> {
        crate::handle::Dispatcher::new(&self.dispatcher, None, None)
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

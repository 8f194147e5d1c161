//! The dispatcher: one small executor owning cluster-wide admission state (pool
//! occupancy mirrors, sessions and budgets, the ETA model, the task directory). It
//! answers each admission with one reply and hands admitted tasks to their owner shard.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use orchd_engine::admission::{Admission, Admitted, Outcome, PoolState, SessionView};
use orchd_engine::task::TaskSpec;
use orchd_engine::{ApiError, Config, ErrorClass, ErrorKind};

use crate::mesh::{Inbox, Mailbox, Reply, ShardId};
use crate::owner::NewTask;
use crate::rt;
use crate::runtime::ShardCommand;

/// Retry advice when an owner shard's mailbox is full.
const OVERLOADED_RETRY_MS: u64 = 50;

/// Commands of the dispatcher.
pub enum DispatcherCommand {
    /// Liveness of the dispatcher (for `/readyz`).
    Ping(Reply<()>),
    /// Admit or refuse a task (SPEC order); on admission the task is already on its
    /// way to its owner shard when the reply arrives.
    Admit {
        spec: Box<TaskSpec>,
        correlation_id: String,
        reply: Reply<Result<Admitted, ApiError>>,
    },
    /// The owner shard of a known task.
    Locate {
        task: Uuid,
        reply: Reply<Option<ShardId>>,
    },
    /// From an owner: a queued task started.
    Started {
        task: Uuid,
    },
    /// From an owner: its pool's engine went down or came back.
    PoolUp {
        pool: usize,
        up: bool,
    },
    /// From an owner: a task ended.
    Finished {
        task: Uuid,
        outcome: Outcome,
    },
    Session {
        id: Uuid,
        reply: Reply<SessionView>,
    },
    DeleteSession {
        id: Uuid,
        reply: Reply<()>,
    },
    /// The capabilities document as the pools are now.
    Capabilities {
        reply: Reply<Bytes>,
    },
    /// Dispatcher-owned series for `/metrics`.
    Scrape {
        reply: Reply<DispatcherSnapshot>,
    },
    /// Index, state and readiness of the pool named `pool`.
    PoolState {
        pool: String,
        reply: Reply<Option<(usize, PoolState, bool)>>,
    },
    /// Close admission to a pool; its tasks have `deadline_ms` to finish. Replies with
    /// the time left once the owner shard holds the deadline.
    Drain {
        pool: String,
        deadline_ms: u64,
        reply: Reply<Result<u64, ApiError>>,
    },
    /// Switch a pool to another model; replies once switched, or rolled back.
    Reload {
        pool: String,
        model_ref: String,
        reply: Reply<Result<String, ApiError>>,
    },
}

/// What the dispatcher contributes to a scrape.
#[derive(Clone, Debug)]
pub struct DispatcherSnapshot {
    /// Every model seen and its state now.
    pub models: Vec<(String, &'static str)>,
    /// Model verifications on reload: [engine][ok, failed].
    pub catalog: [[u64; 2]; 4],
    /// Each pool's state, by config index.
    pub pool_states: Vec<PoolState>,
}

pub(crate) struct Dispatcher {
    admission: RefCell<Admission>,
    peers: Vec<Mailbox<ShardCommand>>,
    epoch: Instant,
    max_body_bytes: usize,
    /// The rendered capabilities and the `pools_version` they were rendered at.
    capabilities: RefCell<(u64, Bytes)>,
}

impl Dispatcher {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn owner_of(&self, pool: usize) -> &Mailbox<ShardCommand> {
        &self.peers[crate::shard_for(pool, self.peers.len()).0]
    }

    fn find_pool(&self, id: &str) -> Result<usize, ApiError> {
        self.admission
            .borrow()
            .pool_index(id)
            .ok_or_else(|| ApiError::not_found(format!("pool {id} is not known")))
    }

    fn handle(self: &Rc<Self>, cmd: DispatcherCommand) {
        match cmd {
            DispatcherCommand::Ping(reply) => {
                let _ = reply.send(());
            }
            DispatcherCommand::Admit {
                spec,
                correlation_id,
                reply,
            } => {
                let _ = reply.send(self.admit(spec, correlation_id));
            }
            DispatcherCommand::Locate { task, reply } => {
                let pool = self.admission.borrow().locate(&task);
                let _ = reply.send(pool.map(|p| crate::shard_for(p, self.peers.len())));
            }
            DispatcherCommand::Started { task } => self.admission.borrow_mut().on_started(task),
            DispatcherCommand::PoolUp { pool, up } => self.admission.borrow_mut().set_up(pool, up),
            DispatcherCommand::Finished { task, outcome } => {
                let now = self.now_ms();
                self.admission.borrow_mut().on_finished(task, outcome, now);
            }
            DispatcherCommand::Session { id, reply } => {
                let _ = reply.send(self.admission.borrow().session(&id, self.now_ms()));
            }
            DispatcherCommand::DeleteSession { id, reply } => {
                self.admission.borrow_mut().delete_session(&id);
                let _ = reply.send(());
            }
            DispatcherCommand::Scrape { reply } => {
                let adm = self.admission.borrow();
                let _ = reply.send(DispatcherSnapshot {
                    models: adm.model_states().to_vec(),
                    catalog: adm.catalog,
                    pool_states: adm.pools.iter().map(|p| p.state).collect(),
                });
            }
            DispatcherCommand::Capabilities { reply } => {
                let adm = self.admission.borrow();
                let mut cached = self.capabilities.borrow_mut();
                if cached.0 != adm.pools_version || cached.1.is_empty() {
                    let doc = adm.capabilities(self.max_body_bytes);
                    *cached = (
                        adm.pools_version,
                        Bytes::from(serde_json::to_vec(&doc).expect("serializes")),
                    );
                }
                let _ = reply.send(cached.1.clone());
            }
            DispatcherCommand::PoolState { pool, reply } => {
                let adm = self.admission.borrow();
                let _ = reply.send(
                    adm.pool_index(&pool)
                        .map(|i| (i, adm.pools[i].state, adm.pools[i].ready())),
                );
            }
            DispatcherCommand::Drain {
                pool,
                deadline_ms,
                reply,
            } => {
                let started = self.find_pool(&pool).and_then(|i| {
                    let left = self
                        .admission
                        .borrow_mut()
                        .drain(i, deadline_ms, self.now_ms())?;
                    Ok((i, left))
                });
                let (i, left) = match started {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let owner = self.owner_of(i).clone();
                rt::spawn_detached(async move {
                    let deadline = Duration::from_millis(left);
                    let r = owner
                        .request(|ack| ShardCommand::Drain {
                            pool: i,
                            deadline,
                            ack,
                        })
                        .await;
                    let _ = reply.send(r.map(|()| left).map_err(crate::mesh::unavailable));
                });
            }
            DispatcherCommand::Reload {
                pool,
                model_ref,
                reply,
            } => {
                let started = self.find_pool(&pool).and_then(|i| {
                    self.admission
                        .borrow_mut()
                        .begin_reload(i, &model_ref)
                        .map(|()| i)
                });
                let i = match started {
                    Ok(i) => i,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let owner = self.owner_of(i).clone();
                let d = Rc::clone(self);
                rt::spawn_detached(async move {
                    let model = model_ref.clone();
                    let r = owner
                        .request(|done| ShardCommand::Reload {
                            pool: i,
                            model_ref: model,
                            done,
                        })
                        .await;
                    let mut adm = d.admission.borrow_mut();
                    let old = adm.pools[i].model_ref.clone();
                    let answer = match r {
                        Ok(Ok(())) => {
                            adm.end_reload(i, &model_ref, true);
                            Ok(model_ref)
                        }
                        Ok(Err(why)) => {
                            adm.end_reload(i, &model_ref, false);
                            Err(ApiError::new(
                                ErrorClass::Conflict,
                                ErrorKind::InvalidParams,
                                format!("new_model_ref: {why}; pool {pool} rolled back to {old}"),
                            )
                            .with_pool(pool))
                        }
                        Err(e) => {
                            adm.end_reload(i, &model_ref, false);
                            Err(crate::mesh::unavailable(e))
                        }
                    };
                    let _ = reply.send(answer);
                });
            }
        }
    }

    fn admit(&self, spec: Box<TaskSpec>, correlation_id: String) -> Result<Admitted, ApiError> {
        let admitted_at = Instant::now();
        let mut adm = self.admission.borrow_mut();
        let admitted = adm.admit(&spec, self.now_ms())?;
        if admitted.duplicate {
            return Ok(admitted);
        }
        let owner = crate::shard_for(admitted.pool, self.peers.len());
        let new = NewTask {
            spec: *spec,
            admitted: admitted.clone(),
            correlation_id,
            admitted_at,
        };
        match self.peers[owner.0].try_send(ShardCommand::Enqueue(Box::new(new))) {
            Ok(()) => Ok(admitted),
            Err(_) => {
                adm.rollback(&admitted);
                let pool = adm.pools[admitted.pool].cfg.id.clone();
                Err(ApiError::new(
                    ErrorClass::TooManyRequests,
                    ErrorKind::AdmissionReject,
                    "the pool's shard is overloaded; retry shortly",
                )
                .with_pool(pool)
                .policy("shard-overloaded")
                .retry_after_ms(OVERLOADED_RETRY_MS))
            }
        }
    }
}

pub(crate) async fn dispatcher_main(
    inbox: Inbox<DispatcherCommand>,
    halted: oneshot::Receiver<()>,
    config: Arc<Config>,
    peers: Vec<Mailbox<ShardCommand>>,
    epoch: Instant,
) {
    let d = Rc::new(Dispatcher {
        admission: RefCell::new(Admission::new(&config)),
        peers,
        epoch,
        max_body_bytes: config.server.max_body_bytes,
        capabilities: RefCell::new((0, Bytes::new())),
    });
    let sweeper = Rc::clone(&d);
    rt::spawn_detached(async move {
        loop {
            rt::sleep(Duration::from_millis(250)).await;
            let now = sweeper.now_ms();
            sweeper.admission.borrow_mut().sweep(now);
        }
    });
    let serve = async {
        while let Some(cmd) = inbox.recv().await {
            d.handle(cmd);
        }
    };
    futures_lite::future::or(serve, async {
        let _ = halted.await;
    })
    .await
}

//! The dispatcher: one small executor owning cluster-wide admission state (pool
//! occupancy mirrors, sessions and budgets, the ETA model, the task directory). It
//! answers each admission with one reply and hands admitted tasks to their owner shard.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use orchd_engine::admission::{Admission, Admitted};
use orchd_engine::task::TaskSpec;
use orchd_engine::{ApiError, Config, ErrorClass, ErrorKind};

use crate::commands::{DispatcherCommand, DispatcherSnapshot, NewTask, ShardCommand};
use crate::mesh::{Inbox, Mailbox, Reply, ShardId};
use crate::rt;

/// Retry advice when an owner shard's mailbox is full.
const OVERLOADED_RETRY_MS: u64 = 50;

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
        &self.peers[crate::placement::shard_for(pool, self.peers.len()).0]
    }

    fn find_pool(&self, id: &str) -> Result<usize, ApiError> {
        self.admission
            .borrow()
            .pool_index(id)
            .ok_or_else(|| ApiError::not_found(format!("pool {id} is not known")))
    }

    /// Starts an operation on the pool named `name` (`start` changes its admission
    /// state); a refusal is answered on `reply` at once, else the pool's index and the
    /// reply come back for the rest of the work.
    fn begin<T>(
        &self,
        name: &str,
        reply: Reply<Result<T, ApiError>>,
        start: impl FnOnce(&mut Admission, usize) -> Result<(), ApiError>,
    ) -> Option<(usize, Reply<Result<T, ApiError>>)> {
        let begun = self
            .find_pool(name)
            .and_then(|i| start(&mut self.admission.borrow_mut(), i).map(|()| i));
        match begun {
            Ok(i) => Some((i, reply)),
            Err(e) => {
                let _ = reply.send(Err(e));
                None
            }
        }
    }

    fn handle(self: &Rc<Self>, cmd: DispatcherCommand) {
        match cmd {
            DispatcherCommand::Ping(reply) => {
                let _ = reply.send(());
            }
            DispatcherCommand::Admit {
                spec,
                correlation_id,
                origin,
                reply,
            } => {
                let _ = reply.send(self.admit(spec, correlation_id, origin));
            }
            DispatcherCommand::Locate { task, reply } => {
                let pool = self.admission.borrow().locate(&task);
                let _ = reply.send(pool.map(|p| crate::placement::shard_for(p, self.peers.len())));
            }
            DispatcherCommand::Started { task } => self.admission.borrow_mut().on_started(task),
            DispatcherCommand::PoolUp { pool, up, slots } => {
                self.admission.borrow_mut().set_up(pool, up, slots)
            }
            DispatcherCommand::PoolDrained { pool } => self.admission.borrow_mut().drained(pool),
            DispatcherCommand::Finished { task, outcome, eta } => {
                let now = self.now_ms();
                self.admission
                    .borrow_mut()
                    .on_finished(task, outcome, eta, now);
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
                    pools_ready: adm.pools.iter().map(|p| p.ready()).collect(),
                });
            }
            DispatcherCommand::Capabilities { reply } => {
                let adm = self.admission.borrow();
                let mut cached = self.capabilities.borrow_mut();
                if cached.0 != adm.pools_version || cached.1.is_empty() {
                    let runtime = rt::current().expect("the dispatcher runs on an executor");
                    let doc = adm.capabilities(self.max_body_bytes, runtime.as_str());
                    *cached = (
                        adm.pools_version,
                        Bytes::from(serde_json::to_vec(&doc).expect("serializes")),
                    );
                }
                let _ = reply.send(cached.1.clone());
            }
            DispatcherCommand::Models { reply } => {
                let _ = reply.send(self.admission.borrow().models_served());
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
                let Some((i, reply)) = self.begin(&pool, reply, |a, i| a.drain(i)) else {
                    return;
                };
                // The owner shard holds the deadline (it keeps the earlier one of a
                // drain under way) and says how long is left.
                let owner = self.owner_of(i).clone();
                rt::spawn(rt::Class::Latency, async move {
                    let deadline = Duration::from_millis(deadline_ms);
                    let r = owner
                        .request(|reply| ShardCommand::Drain {
                            pool: i,
                            deadline,
                            reply,
                        })
                        .await;
                    let left = r.map(|d| d.as_millis() as u64);
                    let _ = reply.send(left.map_err(crate::mesh::unavailable));
                });
            }
            DispatcherCommand::Reload {
                pool,
                model_ref,
                reply,
            } => {
                let begun = self.begin(&pool, reply, |a, i| a.begin_reload(i, &model_ref));
                let Some((i, reply)) = begun else {
                    return;
                };
                let owner = self.owner_of(i).clone();
                let d = Rc::clone(self);
                rt::spawn(rt::Class::Latency, async move {
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

    /// Admits a task, preferring a pool on `origin` (the shard the request arrived
    /// on): a task that starts there at once never crosses cores.
    fn admit(
        &self,
        spec: Box<TaskSpec>,
        correlation_id: String,
        origin: Option<ShardId>,
    ) -> Result<Admitted, ApiError> {
        let admitted_at = Instant::now();
        let mut adm = self.admission.borrow_mut();
        let shards = self.peers.len();
        let near = |pool| Some(crate::placement::shard_for(pool, shards)) == origin;
        let admitted = adm.admit_near(&spec, self.now_ms(), near)?;
        if admitted.duplicate {
            return Ok(admitted);
        }
        let owner = crate::placement::shard_for(admitted.pool, self.peers.len());
        let new = NewTask {
            spec: *spec,
            admitted: admitted.clone(),
            correlation_id,
            admitted_at,
        };
        match self.peers[owner.0].try_send(ShardCommand::Enqueue(Box::new(new))) {
            Ok(()) => Ok(admitted),
            Err(_) => {
                adm.rollback(&admitted, self.now_ms());
                let pool = adm.pools[admitted.pool].cfg.id.clone();
                Err(ApiError::new(
                    ErrorClass::TooManyRequests,
                    ErrorKind::AdmissionReject,
                    "the pool's shard is overloaded; retry shortly",
                )
                .with_pool(pool)
                .policy(orchd_engine::Policy::ShardOverloaded)
                .retry_after_ms(OVERLOADED_RETRY_MS))
            }
        }
    }
}

/// The dispatcher on the thread it runs on.
pub(crate) fn new(
    config: &Config,
    peers: Vec<Mailbox<ShardCommand>>,
    epoch: Instant,
) -> Rc<Dispatcher> {
    Rc::new(Dispatcher {
        admission: RefCell::new(Admission::new(config)),
        peers,
        epoch,
        max_body_bytes: config.server.max_body_bytes,
        capabilities: RefCell::new((0, Bytes::new())),
    })
}

/// The dispatcher as the shard it runs on sees it (`server.dispatcher = "shard0"`):
/// that shard's requests are admitted in place, in the turn that read them, after the
/// commands already waiting in the dispatcher's mailbox (so every admission sees what
/// was sent before it, as through the mailbox).
pub(crate) struct Local {
    d: Rc<Dispatcher>,
    inbox: Inbox<DispatcherCommand>,
}

impl Local {
    pub(crate) fn new(d: &Rc<Dispatcher>, inbox: &Inbox<DispatcherCommand>) -> Local {
        Local {
            d: Rc::clone(d),
            inbox: inbox.clone(),
        }
    }

    pub(crate) fn admit(
        &self,
        spec: Box<TaskSpec>,
        correlation_id: String,
        origin: Option<ShardId>,
    ) -> Result<Admitted, ApiError> {
        while let Some(cmd) = self.inbox.try_recv() {
            self.d.handle(cmd);
        }
        self.d.admit(spec, correlation_id, origin)
    }
}

/// Serves the dispatcher's mailbox until `halted`, and sweeps expired sessions.
pub(crate) async fn serve(
    d: Rc<Dispatcher>,
    inbox: Inbox<DispatcherCommand>,
    halted: oneshot::Receiver<()>,
) {
    let sweeper = Rc::clone(&d);
    rt::spawn(rt::Class::Throughput, async move {
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

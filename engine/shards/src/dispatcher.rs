//! The dispatcher: one small executor owning cluster-wide admission state (pool
//! occupancy mirrors, sessions and budgets, the ETA model, the task directory). It
//! answers each admission with one reply and hands admitted tasks to their owner shard.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use orchd_engine::admission::{Admission, Admitted, Outcome, SessionView};
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
}

pub(crate) struct Dispatcher {
    admission: RefCell<Admission>,
    peers: Vec<Mailbox<ShardCommand>>,
    epoch: Instant,
}

impl Dispatcher {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn handle(&self, cmd: DispatcherCommand) {
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

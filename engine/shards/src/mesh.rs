//! Messages between shards: bounded mailboxes, request/reply, map-reduce.
//!
//! Every actor (a shard, the dispatcher) owns the receiving end of one bounded flume
//! channel of its `Command` enum. Anyone holding a [`Mailbox`] can send to it from any
//! thread. A full mailbox hands the message back as [`Overloaded`] instead of queueing
//! without bound; a reply travels on a oneshot carried inside the command.

use std::fmt;

use tokio::sync::oneshot;

/// Index of a shard, `0..shards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The reply slot of a request.
pub type Reply<R> = oneshot::Sender<R>;

/// The sending side of an actor's bounded command channel. Cheap to clone, `Send`.
pub struct Mailbox<C> {
    tx: flume::Sender<C>,
}

impl<C> Clone for Mailbox<C> {
    fn clone(&self) -> Self {
        Mailbox {
            tx: self.tx.clone(),
        }
    }
}

/// The receiving side, owned by the actor's own executor.
pub struct Inbox<C> {
    rx: flume::Receiver<C>,
}

/// Creates a mailbox of `capacity` commands.
pub fn mailbox<C>(capacity: usize) -> (Mailbox<C>, Inbox<C>) {
    let (tx, rx) = flume::bounded(capacity);
    (Mailbox { tx }, Inbox { rx })
}

/// Why a message did not reach its actor.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// The actor's mailbox is full: it is behind, the caller should shed load.
    #[error("the target shard is overloaded")]
    Overloaded,
    /// The actor has stopped (shutdown), or dropped the reply.
    #[error("the target shard has stopped")]
    Gone,
}

/// The client-facing refusal for a message that did not get through.
pub fn unavailable(e: MeshError) -> orchd_engine::ApiError {
    use orchd_engine::{ApiError, ErrorClass, ErrorKind};
    match e {
        MeshError::Overloaded => ApiError::new(
            ErrorClass::TooManyRequests,
            ErrorKind::AdmissionReject,
            "orchd is overloaded; retry shortly",
        )
        .policy(orchd_engine::Policy::Overloaded)
        .retry_after_ms(50),
        MeshError::Gone => ApiError::new(
            ErrorClass::Unavailable,
            ErrorKind::PoolUnready,
            "orchd is shutting down",
        )
        .retry_after_ms(1000),
    }
}

/// A message handed back by a full or closed mailbox.
#[derive(Debug)]
pub struct Overloaded<C> {
    pub command: C,
    pub error: MeshError,
}

impl<C> Mailbox<C> {
    /// Commands waiting in the mailbox.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Sends without waiting; a full or closed mailbox hands the command back.
    pub fn try_send(&self, command: C) -> Result<(), Overloaded<C>> {
        self.tx.try_send(command).map_err(|e| match e {
            flume::TrySendError::Full(command) => Overloaded {
                command,
                error: MeshError::Overloaded,
            },
            flume::TrySendError::Disconnected(command) => Overloaded {
                command,
                error: MeshError::Gone,
            },
        })
    }

    /// Commands it holds at most.
    pub fn capacity(&self) -> usize {
        self.tx.capacity().unwrap_or(usize::MAX)
    }

    /// Sends `make(reply)` and waits for the reply.
    pub async fn request<R>(&self, make: impl FnOnce(Reply<R>) -> C) -> Result<R, MeshError> {
        let (reply, answer) = oneshot::channel();
        self.try_send(make(reply)).map_err(|o| o.error)?;
        answer.await.map_err(|_| MeshError::Gone)
    }
}

impl<C> Inbox<C> {
    /// The next command; `None` once every mailbox is dropped.
    pub async fn recv(&self) -> Option<C> {
        self.rx.recv_async().await.ok()
    }

    /// The next command if one is waiting.
    pub fn try_recv(&self) -> Option<C> {
        self.rx.try_recv().ok()
    }
}

impl<C> Clone for Inbox<C> {
    fn clone(&self) -> Self {
        Inbox {
            rx: self.rx.clone(),
        }
    }
}

/// Sends `make(reply)` to every mailbox at once, then folds the replies in shard order.
/// One slow shard delays the result, not the other shards' work.
pub async fn map_reduce<C, R, A>(
    mailboxes: &[Mailbox<C>],
    make: impl Fn(Reply<R>) -> C,
    init: A,
    mut fold: impl FnMut(A, R) -> A,
) -> Result<A, MeshError> {
    let mut answers = Vec::with_capacity(mailboxes.len());
    for mb in mailboxes {
        let (reply, answer) = oneshot::channel();
        mb.try_send(make(reply)).map_err(|o| o.error)?;
        answers.push(answer);
    }
    let mut acc = init;
    for answer in answers {
        acc = fold(acc, answer.await.map_err(|_| MeshError::Gone)?);
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Cmd {
        Add(u64, Reply<u64>),
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn full_mailbox_hands_the_command_back() {
        let (mb, _inbox) = mailbox::<u32>(1);
        mb.try_send(1).unwrap();
        let back = mb.try_send(2).unwrap_err();
        assert_eq!(back.command, 2);
        assert_eq!(back.error, MeshError::Overloaded);
    }

    #[test]
    fn closed_mailbox_is_gone() {
        let (mb, inbox) = mailbox::<u32>(1);
        drop(inbox);
        assert_eq!(mb.try_send(1).unwrap_err().error, MeshError::Gone);
    }

    #[test]
    fn map_reduce_folds_every_reply() {
        let mut boxes = Vec::new();
        let mut workers = Vec::new();
        for i in 0..3u64 {
            let (mb, inbox) = mailbox::<Cmd>(4);
            boxes.push(mb);
            workers.push(std::thread::spawn(move || {
                block_on(async {
                    while let Some(Cmd::Add(x, reply)) = inbox.recv().await {
                        let _ = reply.send(x + i);
                    }
                })
            }));
        }
        let sum = block_on(map_reduce(&boxes, |r| Cmd::Add(10, r), 0, |a, r| a + r)).unwrap();
        assert_eq!(sum, 10 + 11 + 12);
        let one = block_on(boxes[2].request(|r| Cmd::Add(1, r))).unwrap();
        assert_eq!(one, 3);
        drop(boxes);
        for w in workers {
            w.join().unwrap();
        }
    }
}

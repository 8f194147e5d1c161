//! Response bodies: a whole buffer, or a live SSE stream of a task.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::Stream;
use http_body::{Frame, SizeHint};
use uuid::Uuid;

use orchd_shards::{rt, FrameMsg, ShardId, Subscribed, SUBSCRIBER_BUFFER};

use crate::app::ShardApp;
use crate::chunks::Chunks;

/// A response body. An enum rather than a boxed trait object: no allocation per
/// plain response, and the variants are all known.
pub(crate) enum Body {
    Full(Option<Bytes>),
    Sse(Box<SseBody>),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let b = bytes.into();
        Body::Full(if b.is_empty() { None } else { Some(b) })
    }

    pub fn empty() -> Body {
        Body::Full(None)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Sse(s) => s.poll_next_frame(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Sse(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Sse(_) => SizeHint::default(),
        }
    }
}

type Subscription = Pin<Box<dyn Future<Output = Option<(Subscribed, flume::Receiver<FrameMsg>)>>>>;

/// Asks the owner shard for the task's frames from `from` on.
pub(crate) fn subscribe(app: Rc<ShardApp>, task: Uuid, owner: ShardId, from: u64) -> Subscription {
    Box::pin(async move {
        let (tx, rx) = flume::bounded(SUBSCRIBER_BUFFER);
        let r = app.shard.subscribe(owner, task, from, tx).await.ok()?;
        Some((r, rx))
    })
}

/// One client's view of a task's frame log: frames as the owner shard sends them
/// (`Bytes` clones, no copy), `: hb` comments when idle, and a fresh subscription from
/// its cursor if the owner dropped it for falling behind.
pub(crate) struct SseBody {
    app: Rc<ShardApp>,
    task: Uuid,
    owner: ShardId,
    rx: Option<flume::r#async::RecvStream<'static, FrameMsg>>,
    /// Id of the next frame this client should see.
    next_id: u64,
    done: bool,
    resubscribing: Option<Subscription>,
    heartbeat: Duration,
    last_sent: Instant,
    timer: Option<rt::Sleep>,
    /// The OpenAI-compatible routes' rendering of the frames; `None`: as they are.
    chunks: Option<Box<Chunks>>,
}

const HEARTBEAT: &[u8] = b": hb\n\n";

/// Largest body chunk [`SseBody`] builds from frames that are already waiting. A
/// client that is behind (a burst from a fast engine, a replay) gets its backlog in
/// chunks of up to this size: one chunk header and one iovec each, so one `sendmsg`
/// carries hundreds of frames instead of the five that fit hyper's 16-iovec queue when
/// every frame is its own chunk. A lone frame is still passed on as it is, uncopied.
/// The chunks are copies, and hyper queues up to five of them for a client that does
/// not read: 4 KiB keeps that under 20 KiB a connection.
const COALESCE_BYTES: usize = 4 * 1024;

/// The `<seq>` of a frame, which starts `id: <seq>\n` (orchd_engine::frame).
fn frame_id(frame: &[u8]) -> Option<u64> {
    let rest = frame.strip_prefix(b"id: ")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

impl Drop for SseBody {
    fn drop(&mut self) {
        let streams = &self.app.shard.probe.admission.active_streams;
        streams.set(streams.get().saturating_sub(1));
    }
}

impl SseBody {
    pub fn new(
        app: Rc<ShardApp>,
        task: Uuid,
        owner: ShardId,
        from: u64,
        rx: flume::Receiver<FrameMsg>,
        chunks: Option<Box<Chunks>>,
    ) -> SseBody {
        let heartbeat = Duration::from_millis(app.app.config.stream.heartbeat_ms);
        let streams = &app.shard.probe.admission.active_streams;
        streams.set(streams.get() + 1);
        SseBody {
            app,
            task,
            owner,
            rx: Some(rx.into_stream()),
            next_id: from,
            done: false,
            resubscribing: None,
            heartbeat,
            last_sent: Instant::now(),
            timer: None,
            chunks,
        }
    }

    /// The next body chunk: the next frame (or heartbeat), joined by the frames queued
    /// behind it up to [`COALESCE_BYTES`].
    fn poll_next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let first = match self.poll_one(cx) {
            Poll::Ready(Some(first)) => first,
            other => return other,
        };
        let mut joined: Option<BytesMut> = None;
        while !self.done && joined.as_ref().map_or(first.len(), |j| j.len()) < COALESCE_BYTES {
            let Some(next) = self.poll_queued(cx) else {
                break;
            };
            joined
                .get_or_insert_with(|| {
                    let mut j = BytesMut::with_capacity(COALESCE_BYTES + 512);
                    j.extend_from_slice(&first);
                    j
                })
                .extend_from_slice(&next);
        }
        Poll::Ready(Some(joined.map_or(first, BytesMut::freeze)))
    }

    /// A frame already waiting in the subscription, without waiting for one.
    fn poll_queued(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        if self.resubscribing.is_some() {
            return None;
        }
        loop {
            match Pin::new(self.rx.as_mut()?).poll_next(cx) {
                Poll::Ready(Some((bytes, terminal))) => {
                    if let Some(b) = self.accept(bytes, terminal) {
                        return Some(b);
                    }
                }
                Poll::Ready(None) => {
                    // Dropped for falling behind: poll_one resubscribes next time.
                    return None;
                }
                Poll::Pending => return None,
            }
        }
    }

    /// Takes a frame from the owner: marks the end, skips frames the client has seen.
    fn accept(&mut self, bytes: Bytes, terminal: bool) -> Option<Bytes> {
        self.done = terminal;
        match frame_id(&bytes) {
            // A client resuming past the frames produced so far is handed the live
            // frames from the next one produced on: skip those at or below its
            // Last-Event-ID.
            Some(id) if id < self.next_id => return None,
            Some(id) => self.next_id = id + 1,
            None => self.next_id += 1,
        }
        self.last_sent = Instant::now();
        match &mut self.chunks {
            None => Some(bytes),
            Some(c) => c.render(&bytes),
        }
    }

    fn poll_one(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(sub) = self.resubscribing.as_mut() {
                match sub.as_mut().poll(cx) {
                    Poll::Ready(Some((Subscribed::Live, rx))) => {
                        self.resubscribing = None;
                        self.rx = Some(rx.into_stream());
                        continue;
                    }
                    Poll::Ready(_) => {
                        self.done = true;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {}
                }
            } else if let Some(rx) = self.rx.as_mut() {
                match Pin::new(rx).poll_next(cx) {
                    Poll::Ready(Some((bytes, terminal))) => match self.accept(bytes, terminal) {
                        Some(b) => return Poll::Ready(Some(b)),
                        None => continue,
                    },
                    Poll::Ready(None) => {
                        // Dropped by the owner before the terminal frame: we fell
                        // behind. Pick up from the cursor.
                        self.rx = None;
                        let app = Rc::clone(&self.app);
                        self.resubscribing =
                            Some(subscribe(app, self.task, self.owner, self.next_id));
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            let now = Instant::now();
            let due = self.last_sent + self.heartbeat;
            if now >= due {
                self.last_sent = now;
                self.timer = None;
                return Poll::Ready(Some(Bytes::from_static(HEARTBEAT)));
            }
            let timer = self.timer.get_or_insert_with(|| rt::sleep(due - now));
            match Pin::new(timer).poll(cx) {
                Poll::Ready(()) => {
                    self.timer = None;
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

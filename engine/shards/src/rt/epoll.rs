//! The epoll runtime: one current-thread tokio runtime per shard thread, its tasks on a
//! `LocalSet` (so that they need not be `Send`, as on glommio), its sockets adapted to
//! hyper by hyper-util's `TokioIo`. Only `rt` (the module above) uses this file.
//!
//! Why tokio and not monoio's legacy driver (`docs/why-epoll-tokio.md`): tokio is
//! hyper's own runtime (its IO traits are what hyper-util adapts, with real vectored
//! writes), it is already in orchd's dependency tree (no new crates), and it is the
//! most used and maintained reactor in Rust; a current-thread runtime per core keeps
//! the shape of the glommio one.

use std::any::Any;
use std::future::Future;
use std::io::{self, IoSlice};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running epoll executor thread.
pub struct Executor<T: Send + 'static>(std::thread::JoinHandle<T>);

impl<T: Send + 'static> Executor<T> {
    /// Waits for the thread to finish; a failure to start shows here.
    pub fn join(self) -> Result<T, String> {
        self.0.join().map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the executor thread panicked".to_string())
        })
    }
}

/// Starts a current-thread tokio runtime on its own thread, pinned to `cpu` when given,
/// and runs the future built by `main` on its `LocalSet`.
pub fn spawn_executor<G, F, T>(name: &str, cpu: Option<usize>, main: G) -> io::Result<Executor<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if let Some(id) = cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                    tracing::warn!(cpu = id, "could not pin the executor thread to its core");
                }
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .unwrap_or_else(|e| panic!("cannot start an epoll runtime: {e}"));
            let local = tokio::task::LocalSet::new();
            // `main` is called inside the runtime and the LocalSet, as glommio calls it
            // inside its executor; a spawned task's panic ends the executor.
            local.block_on(&runtime, async move {
                futures_lite::future::or(main(), panicked()).await
            })
        })
        .map(Executor)
}

/// The panic of a task spawned on this thread's executor, for [`panicked`], and the
/// waker of the executor's main future.
type Panicked = (Option<Box<dyn Any + Send>>, Option<Waker>);

thread_local! {
    static PANIC: std::cell::RefCell<Panicked> = const { std::cell::RefCell::new((None, None)) };
}

/// Never resolves; unwinds with the panic of a spawned task. tokio's `LocalSet` would
/// catch it and keep the executor running without the task (a shard whose command
/// loop died, still holding its mailbox); glommio lets the panic end the executor
/// thread, and so does this.
fn panicked<T>() -> impl Future<Output = T> {
    std::future::poll_fn(|cx| {
        PANIC.with(|p| {
            let mut p = p.borrow_mut();
            if let Some(payload) = p.0.take() {
                drop(p);
                std::panic::resume_unwind(payload);
            }
            p.1 = Some(cx.waker().clone());
            Poll::Pending
        })
    })
}

/// Spawns a task on the current thread's `LocalSet` and lets it run on its own.
pub fn spawn(fut: impl Future<Output = ()> + 'static) {
    drop(tokio::task::spawn_local(CatchPanic(fut)));
}

/// A spawned task that hands its panic to [`panicked`]. A struct rather than an
/// `async` block around `fut`: the block would keep `fut` twice in its state (as the
/// captured value and as the future it awaits), and every connection is such a task
/// (it cost ~1.4 KB per idle connection, `http/tests/hostile.rs`).
struct CatchPanic<F>(F);

impl<F: Future<Output = ()>> Future for CatchPanic<F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: structural pinning of the only field: it is never moved out of `self`
        // and `CatchPanic` has no Drop of its own.
        let fut = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                PANIC.with(|p| {
                    let mut p = p.borrow_mut();
                    p.0.get_or_insert(payload);
                    if let Some(w) = p.1.take() {
                        w.wake();
                    }
                });
                Poll::Ready(())
            }
        }
    }
}

/// Sleeps on the current runtime (tokio's timer wheel: millisecond ticks).
pub fn sleep(d: Duration) -> Sleep {
    Box::pin(tokio::time::sleep(d))
}

pub type Sleep = Pin<Box<tokio::time::Sleep>>;

/// Yields to the other tasks of this thread once this one used its budget.
pub async fn yield_if_needed() {
    tokio::task::coop::consume_budget().await
}

/// A listening socket owned by one shard.
pub struct Listener(tokio::net::TcpListener);

impl Listener {
    /// Adopts a bound, listening socket on the current runtime.
    pub fn adopt(listener: std::net::TcpListener) -> io::Result<Listener> {
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener).map(Listener)
    }

    pub async fn accept(&self) -> io::Result<Conn> {
        let (stream, _) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(Conn(TokioIo::new(stream)))
    }
}

/// One TCP connection, adapted to hyper's IO traits by `TokioIo` (reads into hyper's
/// uninitialized buffer, vectored writes as one `writev`).
pub struct Conn(TokioIo<tokio::net::TcpStream>);

impl Conn {
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.0.inner().peer_addr().ok()
    }

    pub async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.inner_mut().read(buf).await
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.inner_mut().write_all(bytes).await
    }

    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.inner_mut().shutdown().await
    }

    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        hyper::rt::Read::poll_read(Pin::new(&mut self.0), cx, buf)
    }

    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(Pin::new(&mut self.0), cx, bufs)
    }

    pub fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.0)
    }

    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}

/// Runs blocking work (file IO) on the runtime's blocking threads.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Opens a TCP connection to an engine.
pub async fn connect(addr: std::net::SocketAddr, timeout: Duration) -> io::Result<Conn> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(Conn(TokioIo::new(stream)))
}

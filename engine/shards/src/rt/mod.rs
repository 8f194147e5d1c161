//! The runtime seam: every use of glommio (io_uring) and of tokio's reactor (epoll) in
//! orchd is in this module.
//!
//! Executors, pinning, timers, the socket adapter for hyper, and the startup choice of
//! runtime. Both runtimes have one shape: one shared-nothing executor per core (pinned to
//! it unless `server.pin_cores = false`), the same listeners, mailboxes (runtime-free
//! channels), timers and connection adapter. [`choose`] picks one at startup
//! (`server.runtime`); every executor thread knows which it runs, and the functions here
//! act on it. Everything above this module sees plain futures, `Rc`s and the hyper IO
//! traits, and never learns which runtime runs.

mod epoll;
mod uring;

use std::cell::Cell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use orchd_engine::config::RuntimeChoice;

pub use uring::PreflightError;

/// The runtime an executor runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// glommio: io_uring, one ring set per executor.
    IoUring,
    /// tokio's current-thread runtime: epoll.
    Epoll,
}

impl Kind {
    /// The name used in config, logs, `/v1/capabilities` and `runtime_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IoUring => "io_uring",
            Kind::Epoll => "epoll",
        }
    }
}

thread_local! {
    /// The runtime of this thread's executor; set before its main future runs.
    static KIND: Cell<Option<Kind>> = const { Cell::new(None) };
}

/// The runtime of the executor this is called on (`None` off executor threads).
pub fn current() -> Option<Kind> {
    KIND.with(Cell::get)
}

fn kind() -> Kind {
    current().expect("orchd's rt is used only on its executor threads")
}

/// What `server.runtime` resolved to on this host.
#[derive(Debug)]
pub struct Choice {
    pub kind: Kind,
    /// Why `auto` did not take io_uring (the preflight's finding), if it did not.
    pub fallback: Option<PreflightError>,
}

/// Resolves `server.runtime` for `executors` executors: `io_uring` must pass the
/// preflight (else the error names the fix); `epoll` is taken as asked; `auto` takes
/// io_uring when the preflight passes and epoll otherwise, with the reason. Raises the
/// soft file-descriptor limit to the hard one either way (one per connection).
pub fn choose(wanted: RuntimeChoice, executors: usize) -> Result<Choice, PreflightError> {
    raise_soft_limit(libc::RLIMIT_NOFILE);
    let (kind, fallback) = match wanted {
        RuntimeChoice::IoUring => {
            uring::preflight(executors)?;
            (Kind::IoUring, None)
        }
        RuntimeChoice::Epoll => (Kind::Epoll, None),
        RuntimeChoice::Auto => match uring::preflight(executors) {
            Ok(()) => (Kind::IoUring, None),
            Err(e) => (Kind::Epoll, Some(e)),
        },
    };
    Ok(Choice { kind, fallback })
}

/// Raises a soft resource limit to its hard limit and returns the limit in force (a
/// failure leaves it as it was). For locked memory (io_uring rings) and file
/// descriptors (one per connection).
fn raise_soft_limit(resource: libc::__rlimit_resource_t) -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(resource, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(resource, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim
}

/// A running executor thread.
pub struct ExecutorThread<T: Send + 'static>(Executor<T>);

enum Executor<T: Send + 'static> {
    IoUring(uring::Executor<T>),
    Epoll(epoll::Executor<T>),
}

impl<T: Send + 'static> ExecutorThread<T> {
    /// Waits for the executor to finish; a failure to start (e.g. memlock) shows here.
    pub fn join(self) -> Result<T, String> {
        match self.0 {
            Executor::IoUring(e) => e.join(),
            Executor::Epoll(e) => e.join(),
        }
    }
}

/// Starts an executor of runtime `kind` on its own thread, pinned to `cpu` when given,
/// and runs the future built by `main` on it. On io_uring it takes in completed I/O and
/// due timers at least every `io_poll` while it has tasks to run (`server.io_poll_us`);
/// tokio does so every 61 tasks.
pub fn spawn_executor<G, F, T>(
    kind: Kind,
    name: &str,
    cpu: Option<usize>,
    io_poll: Duration,
    main: G,
) -> io::Result<ExecutorThread<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let main = move || {
        KIND.with(|k| k.set(Some(kind)));
        main()
    };
    Ok(ExecutorThread(match kind {
        Kind::IoUring => Executor::IoUring(uring::spawn_executor(name, cpu, io_poll, main)?),
        Kind::Epoll => Executor::Epoll(epoll::spawn_executor(name, cpu, main)?),
    }))
}

/// What kind of work a spawned task is, so that a runtime can run latency-sensitive
/// work ahead of throughput work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Accepting and serving connections, admission, subscribe, control messages:
    /// what a client waits on.
    Latency,
    /// Engine drivers and background work (token production, transcripts, probes).
    Throughput,
}

/// Spawns a future of class `class` on the current executor and lets it run on its
/// own. Both classes share the executor's one task queue today, in spawn order (what
/// every measurement so far was taken with); the latency work gives each its own
/// task queue here, and nowhere else.
pub fn spawn(class: Class, fut: impl Future<Output = ()> + 'static) {
    let _ = class;
    match kind() {
        Kind::IoUring => uring::spawn(fut),
        Kind::Epoll => epoll::spawn(fut),
    }
}

/// Sleeps on the current executor.
pub fn sleep(d: Duration) -> Sleep {
    Sleep(match kind() {
        Kind::IoUring => SleepOn::IoUring(uring::sleep(d)),
        Kind::Epoll => SleepOn::Epoll(epoll::sleep(d)),
    })
}

/// A timer on the current executor.
pub struct Sleep(SleepOn);

enum SleepOn {
    IoUring(uring::Sleep),
    Epoll(epoll::Sleep),
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            SleepOn::IoUring(s) => Pin::new(s).poll(cx),
            SleepOn::Epoll(s) => s.as_mut().poll(cx),
        }
    }
}

/// The grid [`sleep_until_tick`] rounds deadlines up to.
pub const TICK: Duration = Duration::from_millis(1);

/// Sleeps until `at`, rounded up to the next whole [`TICK`] (counted from the first call
/// in the process). Timers on one grid fire together: one wakeup of the shard serves
/// every task due in that millisecond, as tokio's timer wheel does, where deadlines
/// that differ by microseconds would each wake the shard (a park and unpark, with
/// glommio's memory barrier, per timer). For pacing many tasks (the mock engine).
pub async fn sleep_until_tick(at: Instant) {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let tick = TICK.as_nanos();
    let ticks = at
        .saturating_duration_since(epoch)
        .as_nanos()
        .div_ceil(tick);
    let due = epoch + Duration::from_nanos((ticks * tick) as u64);
    let now = Instant::now();
    if due > now {
        sleep(due - now).await
    }
}

/// Yields to other tasks of this executor if the current one ran long enough.
pub async fn yield_if_needed() {
    match kind() {
        Kind::IoUring => uring::yield_if_needed().await,
        Kind::Epoll => epoll::yield_if_needed().await,
    }
}

/// Lets the other tasks of this executor run before continuing.
pub async fn yield_now() {
    futures_lite::future::yield_now().await
}

/// Runs blocking work (file IO) off the executor's thread, so the shard's other tasks
/// keep running meanwhile.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match kind() {
        Kind::IoUring => uring::blocking(f).await,
        Kind::Epoll => epoll::blocking(f).await,
    }
}

/// Runs `fut`, or gives up after `d`.
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(d).await;
        None
    })
    .await
}

/// The cores this process may run on (honours cgroup/cpuset affinity, unlike glommio's
/// own `CpuSet::online()`).
pub fn available_cores() -> Vec<usize> {
    let mut cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if cores.is_empty() {
        cores.push(0);
    }
    cores
}

/// A listening socket owned by one shard.
pub struct Listener(ListenerOn);

enum ListenerOn {
    IoUring(uring::Listener),
    Epoll(epoll::Listener),
}

impl Listener {
    /// Adopts a bound, listening socket on the current executor.
    pub fn adopt(listener: std::net::TcpListener) -> io::Result<Listener> {
        Ok(Listener(match kind() {
            Kind::IoUring => ListenerOn::IoUring(uring::Listener::adopt(listener)),
            Kind::Epoll => ListenerOn::Epoll(epoll::Listener::adopt(listener)?),
        }))
    }

    pub async fn accept(&self) -> io::Result<Conn> {
        Ok(Conn(match &self.0 {
            ListenerOn::IoUring(l) => ConnOn::IoUring(l.accept().await?),
            ListenerOn::Epoll(l) => ConnOn::Epoll(l.accept().await?),
        }))
    }
}

/// Opens a TCP connection to an engine, adapted to hyper's IO traits.
pub async fn connect(addr: std::net::SocketAddr, timeout: Duration) -> io::Result<Conn> {
    Ok(Conn(match kind() {
        Kind::IoUring => ConnOn::IoUring(uring::connect(addr, timeout).await?),
        Kind::Epoll => ConnOn::Epoll(epoll::connect(addr, timeout).await?),
    }))
}

/// One TCP connection, adapted to hyper's IO traits, with vectored writes on both
/// runtimes (what makes hyper pick its zero-copy queue strategy).
pub struct Conn(ConnOn);

enum ConnOn {
    IoUring(uring::Conn),
    Epoll(epoll::Conn),
}

impl Conn {
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.0 {
            ConnOn::IoUring(c) => c.peer_addr(),
            ConnOn::Epoll(c) => c.peer_addr(),
        }
    }

    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            ConnOn::IoUring(c) => c.read_some(buf).await,
            ConnOn::Epoll(c) => c.read_some(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.0 {
            ConnOn::IoUring(c) => c.write_all(bytes).await,
            ConnOn::Epoll(c) => c.write_all(bytes).await,
        }
    }

    async fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.0 {
            ConnOn::IoUring(c) => c.shutdown_write().await,
            ConnOn::Epoll(c) => c.shutdown_write().await,
        }
    }

    /// Answers and closes the connection, for a connection that will not be served:
    /// reads the request head first (what it can within `limit`), writes what `answer`
    /// makes of it (the refusal can speak the route's language), then reads and drops
    /// whatever else comes until the client closes or `limit` passes. Closing with
    /// unread bytes would reset the connection, and the client would lose the answer.
    pub async fn answer_and_close(
        mut self,
        answer: impl FnOnce(&[u8]) -> Vec<u8>,
        limit: Duration,
    ) {
        let until = Instant::now() + limit;
        let mut head = Vec::new();
        let mut sink = [0u8; 1024];
        let read_head = async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                let n = self.read_some(&mut sink).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&sink[..n]);
            }
            io::Result::Ok(())
        };
        let _ = timeout(until.saturating_duration_since(Instant::now()), read_head).await;
        let bytes = answer(&head);
        let answer = async {
            self.write_all(&bytes).await?;
            self.shutdown_write().await?;
            while self.read_some(&mut sink).await? > 0 {}
            io::Result::Ok(())
        };
        let _ = timeout(until.saturating_duration_since(Instant::now()), answer).await;
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            ConnOn::IoUring(c) => Pin::new(c).poll_read(cx, buf),
            ConnOn::Epoll(c) => c.poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            ConnOn::IoUring(c) => Pin::new(c).poll_write(cx, buf),
            ConnOn::Epoll(c) => c.poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            ConnOn::IoUring(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            ConnOn::Epoll(c) => c.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            ConnOn::IoUring(c) => hyper::rt::Write::is_write_vectored(c),
            ConnOn::Epoll(c) => c.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Neither runtime buffers writes.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            ConnOn::IoUring(c) => Pin::new(c).poll_shutdown(cx),
            ConnOn::Epoll(c) => c.poll_shutdown(cx),
        }
    }
}

/// hyper's timer on the shard's executor (header read timeouts, keep-alive).
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardTimer;

impl hyper::rt::Timer for ShardTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ShardSleep(sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}

/// A shard timer that claims `Send + Sync` because hyper's `Sleep` requires it.
struct ShardSleep(Sleep);

// SAFETY: hyper only requires these bounds; it never moves a Sleep across threads here,
// because every connection (and so every timer it creates) is spawned on one shard's
// executor (glommio's `spawn_local`, tokio's `spawn_local`) and lives and dies on that
// shard's thread.
unsafe impl Send for ShardSleep {}
// SAFETY: as above; no `&ShardSleep` is ever shared with another thread.
unsafe impl Sync for ShardSleep {}

impl Future for ShardSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

impl hyper::rt::Sleep for ShardSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    const IO_POLL: Duration = Duration::from_millis(100);

    /// While tasks keep the run queue busy, a timer that fell due is taken in after at
    /// most `io_poll` (`server.io_poll_us`) on io_uring. With a 1 s timer a 1 ms timer
    /// waits for the whole 300 ms busy stretch: the same holds for requests that arrive
    /// on a busy shard.
    #[test]
    fn a_busy_io_uring_shard_takes_in_due_timers_every_io_poll() {
        fn fired_while_busy(io_poll: Duration) -> bool {
            spawn_executor(Kind::IoUring, "busy", None, io_poll, move || async move {
                let fired = Rc::new(Cell::new(false));
                let f = Rc::clone(&fired);
                spawn(Class::Latency, async move {
                    sleep(Duration::from_millis(1)).await;
                    f.set(true);
                });
                // Busy for 300 ms, always ready to run again: the run queue never empties.
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until && !fired.get() {
                    yield_now().await;
                }
                fired.get()
            })
            .unwrap()
            .join()
            .unwrap()
        }
        assert!(fired_while_busy(Duration::from_millis(2)));
        assert!(!fired_while_busy(Duration::from_secs(1)));
    }

    /// A spawned task's panic ends its executor on both runtimes (glommio lets it
    /// unwind; the epoll runtime re-raises it from the executor's main future), so a
    /// shard never keeps running without, say, its command loop.
    #[test]
    fn a_task_panic_ends_the_executor_on_both_runtimes() {
        for kind in [Kind::Epoll, Kind::IoUring] {
            let t = spawn_executor(kind, "panics", None, IO_POLL, || async {
                spawn(Class::Throughput, async { panic!("boom in a task") });
                sleep(Duration::from_secs(30)).await;
            })
            .unwrap();
            let started = Instant::now();
            let err = t.join().expect_err("the executor ended with the panic");
            assert!(started.elapsed() < Duration::from_secs(10), "{kind:?}");
            if kind == Kind::Epoll {
                assert!(err.contains("boom in a task"), "{err}");
            }
        }
    }
}

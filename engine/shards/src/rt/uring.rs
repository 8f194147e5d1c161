//! The io_uring runtime: glommio executors, its timers, and its sockets adapted to
//! hyper. Only `rt` (the module above) uses this file.

use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::{LocalExecutorBuilder, Placement};

/// glommio refuses to start an executor below this memlock limit.
const MIN_MEMLOCK: u64 = 512 * 1024;
/// Registered IO buffer memory per executor. orchd does no DMA file IO on this path,
/// so the smallest size glommio accepts keeps several executors inside the default
/// 8 MiB memlock limit.
const IO_MEMORY: usize = 64 * 1024;

/// Why orchd cannot run its thread-per-core runtime here, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "io_uring is disabled on this host (kernel.io_uring_disabled = {0}); \
         fix: `sysctl -w kernel.io_uring_disabled=0`, or run orchd on epoll (server.runtime = \"epoll\" \
         or \"auto\", --runtime, ORCHD_RUNTIME)"
    )]
    Disabled(u32),
    #[error(
        "{call} failed: {error}; io_uring is blocked here (Docker's and containerd's default \
         seccomp profiles block it). fix: run the container with a seccomp profile that allows \
         io_uring_setup, io_uring_enter and io_uring_register (e.g. --security-opt seccomp=unconfined), \
         or run orchd on epoll, which needs no seccomp change (server.runtime = \"epoll\" or \"auto\", \
         --runtime, ORCHD_RUNTIME)"
    )]
    Blocked {
        call: &'static str,
        error: io::Error,
    },
    #[error(
        "the locked-memory limit is {have} KiB, below the {need} KiB glommio needs for its io_uring \
         executors; fix: `ulimit -l {recommended}` (or higher) in the shell, LimitMEMLOCK= in a systemd \
         unit, or `--ulimit memlock=-1` for a container; or run orchd on epoll (server.runtime = \"epoll\" \
         or \"auto\", --runtime, ORCHD_RUNTIME)"
    )]
    MemLock {
        have: u64,
        need: u64,
        /// Enough to also register every executor's IO memory.
        recommended: u64,
    },
}

/// Checks that io_uring can be set up and that the memlock limit allows `executors`
/// executors, raising the soft memlock limit to the hard one when that helps. glommio
/// itself would panic, exit or hang in these cases; this turns them into a message.
pub fn preflight(executors: usize) -> Result<(), PreflightError> {
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if let Ok(v) = s.trim().parse::<u32>() {
            if v == 2 {
                return Err(PreflightError::Disabled(v));
            }
        }
    }
    probe_io_uring().map_err(|(call, error)| PreflightError::Blocked { call, error })?;

    let recommended = (MIN_MEMLOCK + (IO_MEMORY as u64) * executors as u64).div_ceil(1024);
    let lim = super::raise_soft_limit(libc::RLIMIT_MEMLOCK);
    let have = if lim.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        lim.rlim_cur / 1024
    };
    // root (CAP_IPC_LOCK) is not bound by the limit, but glommio checks it anyway. Below
    // `recommended` only the IO memory registration fails, which glommio logs and
    // orchd (no DMA file IO) does not need.
    let need = MIN_MEMLOCK / 1024;
    if have < need {
        return Err(PreflightError::MemLock {
            have,
            need,
            recommended,
        });
    }
    Ok(())
}

/// A raw `io_uring_setup(2)`, then the `io_uring_register(2)` probe of supported
/// operations that glommio makes when it starts: the cheapest way to learn whether
/// seccomp, a sysctl or an old kernel forbids io_uring without letting glommio find out
/// by panicking.
fn probe_io_uring() -> Result<(), (&'static str, io::Error)> {
    // struct io_uring_params is 120 bytes; zeroed is a valid request.
    let mut params = [0u8; 120];
    // SAFETY: the kernel writes at most sizeof(io_uring_params) into `params`.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(("io_uring_setup", io::Error::last_os_error()));
    }
    // struct io_uring_probe (16 bytes) and 256 struct io_uring_probe_op (8 bytes each),
    // zeroed as the kernel requires; IORING_REGISTER_PROBE is 8.
    let mut probe = vec![0u8; 16 + 256 * 8];
    // SAFETY: the kernel writes at most the 256 ops asked for into `probe`.
    let registered = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd as i32,
            8u32,
            probe.as_mut_ptr(),
            256u32,
        )
    };
    let err = (registered < 0).then(|| ("io_uring_register", io::Error::last_os_error()));
    // SAFETY: fd was just returned by the kernel and is owned here.
    unsafe { libc::close(fd as i32) };
    err.map_or(Ok(()), Err)
}

/// A running glommio executor thread.
pub struct Executor<T: Send + 'static>(glommio::ExecutorJoinHandle<T>);

impl<T: Send + 'static> Executor<T> {
    /// Waits for the executor to finish; a failure to start (e.g. memlock) shows here.
    pub fn join(self) -> Result<T, String> {
        self.0.join().map_err(|e| e.to_string())
    }
}

/// Starts a glommio executor on its own thread, pinned to `cpu` when given, and runs
/// the future built by `main` on it. `io_poll` is glommio's preemption timer: how long
/// its run queue may run before the executor reaps the ring (readable and writable
/// sockets, foreign wakeups, timers).
pub fn spawn_executor<G, F, T>(
    name: &str,
    cpu: Option<usize>,
    io_poll: Duration,
    main: G,
) -> io::Result<Executor<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match cpu {
        Some(c) => Placement::Fixed(c),
        None => Placement::Unbound,
    };
    LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(IO_MEMORY)
        .preempt_timer(io_poll)
        .spawn(main)
        .map(Executor)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Spawns a task on the current executor and lets it run on its own.
pub fn spawn(fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(fut).detach();
}

/// Sleeps on the current executor.
pub fn sleep(d: Duration) -> Sleep {
    Sleep {
        due: Instant::now() + d,
        timer: glommio::timer::Timer::new(d),
        waker: None,
    }
}

/// A timer on the current executor. glommio's timer re-inserts itself into the shard's
/// timer tree (a `BTreeMap` remove and insert, a waker clone, a clock read) every time it
/// is polled; a timer raced against something busy (an SSE body's heartbeat against its
/// frames, a timeout against a stream) is polled at every event. This one goes to
/// glommio only when it is new, due, or asked to wake a different task.
pub struct Sleep {
    timer: glommio::timer::Timer,
    due: Instant,
    /// The waker glommio holds for this timer.
    waker: Option<std::task::Waker>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let registered = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if registered && Instant::now() < this.due {
            return Poll::Pending;
        }
        match Pin::new(&mut this.timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => {
                this.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Yields to other tasks of this executor if the current one ran long enough.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

/// A listening socket owned by one shard.
pub struct Listener(glommio::net::TcpListener);

impl Listener {
    /// Adopts a bound, listening socket on the current executor.
    pub fn adopt(listener: std::net::TcpListener) -> Listener {
        // SAFETY: `into_raw_fd` hands over sole ownership of a listening TCP socket.
        Listener(unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) })
    }

    pub async fn accept(&self) -> io::Result<Conn> {
        let stream = self.0.accept().await.map_err(io::Error::from)?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            window: READ_WINDOW_MIN,
        })
    }
}

/// One TCP connection, adapted to hyper's IO traits.
///
/// Reads go through glommio's own `poll_read`, which is what keeps a request to one
/// `recv`: after a short read glommio arms a readiness poll in the ring, and the next
/// read waits for it instead of trying the socket. (A `recv` of our own first cost two
/// failed `recv`s per request, ours and glommio's, before the poll was armed.) glommio
/// reads into initialized memory, so a read zeroes a window of hyper's spare buffer
/// first: [`READ_WINDOW_MIN`] bytes, doubled each time a read fills it, so an idle
/// stream's connection does not touch pages it never reads into.
/// Writes of several buffers go out in one `sendmsg`, which is what makes hyper pick its
/// zero-copy queue strategy (`is_write_vectored`). When the socket is not writable we
/// fall back to glommio's own poll, which arms the executor's readiness waker.
pub struct Conn {
    stream: glommio::net::TcpStream,
    /// Bytes a read offers (see above).
    window: usize,
}

/// The first read window of a connection: a stream's GET, a cancel, a small task. The
/// zeroed window is memory a connection touches beyond the bytes it reads, and hyper
/// re-offers its spare buffer at every end-of-stream check of a long response: zeroing
/// 1 KiB cost an idle stream ~950 B of RSS, 512 B ~735 B; kept inside the page already
/// in use, ~nothing (`perf/scripts/stream_memory.sh`).
const READ_WINDOW_MIN: usize = 512;
/// The page size that [`READ_WINDOW_MIN`]'s reads try not to cross.
const PAGE: usize = 4096;
/// The largest read window (hyper's read buffer grows to about this much).
const READ_WINDOW_MAX: usize = 64 * 1024;

impl Conn {
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.peer_addr().ok()
    }

    pub async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        futures_lite::AsyncReadExt::read(&mut self.stream, buf).await
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        futures_lite::AsyncWriteExt::write_all(&mut self.stream, bytes).await
    }

    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .await
            .map_err(io::Error::from)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let offered = {
            // SAFETY: the first `n` bytes of hyper's spare buffer are zeroed before they
            // are viewed as initialized bytes; glommio writes at most `n` of them.
            let spare: &mut [MaybeUninit<u8>] = unsafe { buf.as_mut() };
            let mut n = spare.len().min(this.window);
            // Until a read has filled its window, stay inside the page the buffer's
            // free part starts in (when that leaves room for a small request): it holds
            // the bytes read before, so zeroing it touches no new memory.
            let in_page = PAGE - spare.as_ptr() as usize % PAGE;
            if this.window == READ_WINDOW_MIN && in_page >= READ_WINDOW_MIN / 2 {
                n = n.min(in_page);
            }
            unsafe {
                std::ptr::write_bytes(spare.as_mut_ptr(), 0, n);
                std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), n)
            }
        };
        let n = offered.len();
        match Pin::new(&mut this.stream).poll_read(cx, offered) {
            Poll::Ready(Ok(read)) => {
                if read == n && n > 0 {
                    this.window = (n * 2).min(READ_WINDOW_MAX);
                }
                // SAFETY: glommio initialized (wrote) `read` bytes of the buffer.
                unsafe { buf.advance(read) };
                Poll::Ready(Ok(()))
            }
            other => other.map_ok(|_| ()),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let iovcnt = bufs.len().min(libc::UIO_MAXIOV as usize);
        loop {
            // SAFETY: IoSlice is ABI-compatible with iovec; sendmsg only reads them.
            let n = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = iovcnt as _;
                libc::sendmsg(
                    this.stream.as_raw_fd(),
                    &msg,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Poll::Ready(Ok(n as usize));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => break,
                _ => return Poll::Ready(Err(err)),
            }
        }
        // Not writable: glommio's poll_write retries once and arms the waker.
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        Pin::new(&mut this.stream).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // glommio does not buffer writes.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

/// Runs blocking work (file IO) on the executor's blocking thread, so the shard's other
/// tasks keep running meanwhile.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Opens a TCP connection to an engine, adapted to hyper's IO traits.
pub async fn connect(addr: std::net::SocketAddr, timeout: Duration) -> io::Result<Conn> {
    let stream = glommio::net::TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(io::Error::from)?;
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        window: READ_WINDOW_MIN,
    })
}

//! The HTTP server loop: hyper under the axum router, with what `axum::serve` lacks for a
//! public endpoint: time limits on every phase of a connection and a cap on open connections
//! that sheds stalled ones first, so a flood of idle or half-sent connections can neither
//! exhaust file descriptors nor crowd out Crisp's hooks and `/health`.
//!
//! Each connection is in one phase at a time, and each phase has its own limit:
//! - *head*: from the first byte (or the connection opening) until the request's headers are
//!   read: `header_read_timeout`;
//! - *handling*: until the response is ready, body upload included: `request_timeout`
//!   (answered with 408);
//! - *idle*: a keep-alive connection between requests: `idle_timeout`.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use plumbing::ratelimit::RateLimitedWarn;
use plumbing::telemetry::{CloseReason, Metrics};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The connection limits, from settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// Open connections at most; see [`effective_max_connections`].
    pub max_connections: usize,
}

/// File descriptors kept free for everything but client connections (the store, Redis, the
/// outgoing HTTP clients, logs).
const RESERVED_FDS: u64 = 64;

/// `wanted`, lowered to fit the process's open-file limit, which is first raised to its hard
/// maximum (what systemd's `LimitNOFILE` or `ulimit -Hn` allows).
pub fn effective_max_connections(wanted: usize) -> usize {
    let Some(soft) = raise_open_file_limit() else { return wanted };
    let fits = usize::try_from(soft.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
    if fits < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = soft,
            using = fits,
            "MAX_CONNECTIONS lowered to fit the open-file limit (raise LimitNOFILE / ulimit -n)"
        );
    }
    wanted.min(fits)
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force.
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

const HEAD: u8 = 0;
const HANDLING: u8 = 1;
const IDLE: u8 = 2;

/// What the watchdog of one connection knows of it.
struct Conn {
    phase: AtomicU8,
    /// Bumped on every phase change, so the watchdog notices changes between its ticks.
    changes: AtomicU64,
    opened: Instant,
    /// Told to close (shed for a newer connection).
    evict: Notify,
}

impl Conn {
    fn set(&self, phase: u8) {
        self.phase.store(phase, Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Open connections, for the cap and for shedding.
struct Registry {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// The app's registry: `http_connections_closed_total{reason}`.
    metrics: Metrics,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection.
    fn admit(&self, id: u64) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            phase: AtomicU8::new(HEAD),
            changes: AtomicU64::new(0),
            opened: Instant::now(),
            evict: Notify::new(),
        });
        self.lock().insert(id, Arc::clone(&conn));
        conn
    }

    /// Tells the oldest connection that is not in the middle of a request to close. Returns
    /// false when every connection is busy with a request.
    fn shed_oldest_stalled(&self) -> bool {
        let mut open = self.lock();
        let stalled = open
            .iter()
            .filter(|(_, c)| c.phase.load(Ordering::Relaxed) != HANDLING)
            .min_by_key(|(_, c)| c.opened)
            .map(|(id, _)| *id);
        let Some(shed) = stalled.and_then(|id| open.remove(&id)) else { return false };
        shed.evict.notify_one();
        self.metrics.connection_closed(CloseReason::Shed);
        true
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in progress finish
/// (each within its own time limit) and returns. Connections it closes on its own are counted in
/// `metrics`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let registry = Arc::new(Registry { open: Mutex::default(), metrics });
    // One permit per open socket, held until the socket is closed: the process never holds
    // more client sockets than the cap, whatever the clients do.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_errors = RateLimitedWarn::new(1);
    let mut refused = RateLimitedWarn::new(1);
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        // At the cap, make room before accepting: shed the oldest stalled connection and wait
        // for its socket to close. When every slot is busy with a request, accept anyway and
        // close at once (refused quickly, within the file descriptors kept in reserve).
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) if registry.shed_oldest_stalled() => tokio::select! {
                () = &mut shutdown => break,
                slot = Arc::clone(&slots).acquire_owned() => slot.ok(),
            },
            Err(_) => None,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: back off
                    // briefly instead of spinning.
                    if let Some(suppressed) = accept_errors.allow(std::time::Instant::now()) {
                        tracing::error!(error = %e, suppressed, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slot else {
            registry.metrics.connection_closed(CloseReason::Refused);
            if let Some(suppressed) = refused.allow(std::time::Instant::now()) {
                tracing::warn!(suppressed, max = limits.max_connections, "connection refused: every slot is busy");
            }
            drop(stream);
            continue;
        };
        next_id += 1;
        let id = next_id;
        let conn = registry.admit(id);
        let _ = stream.set_nodelay(true);
        let (app, registry, stop) = (app.clone(), Arc::clone(&registry), stop_rx.clone());
        tracker.spawn(async move {
            serve_connection(stream, app, conn, limits, &registry.metrics, stop).await;
            registry.remove(id);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Runs one connection under its watchdog.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    conn: Arc<Conn>,
    limits: ConnectionLimits,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Watched { inner: stream, conn: Arc::clone(&conn) });
    let in_service = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        in_service.set(HANDLING);
        let (app, conn) = (app.clone(), Arc::clone(&in_service));
        async move {
            let response = app.oneshot(request.map(axum::body::Body::new)).await;
            conn.set(IDLE);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog below times the head; hyper's own timer would also cut idle keep-alives.
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);

    let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    let mut seen_changes = u64::MAX;
    let mut phase_since = Instant::now();
    let mut stopping = *stop.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = conn.evict.notified() => return,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
            now = ticks.tick() => {
                let changes = conn.changes.load(Ordering::Relaxed);
                if changes != seen_changes {
                    seen_changes = changes;
                    phase_since = now;
                    continue;
                }
                let (limit, reason) = match conn.phase.load(Ordering::Relaxed) {
                    HEAD => (limits.header_read_timeout, CloseReason::HeaderTimeout),
                    IDLE => (limits.idle_timeout, CloseReason::IdleTimeout),
                    // The router answers 408 at the limit; this only catches a stuck body write.
                    _ => (limits.request_timeout * 2, CloseReason::RequestTimeout),
                };
                if now.duration_since(phase_since) >= limit {
                    metrics.connection_closed(reason);
                    return;
                }
            }
        }
    }
}

/// The socket, noting the first bytes of a new request on a keep-alive connection (idle ->
/// head) without a clock read per call.
struct Watched {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.conn.phase.load(Ordering::Relaxed) == IDLE {
            self.conn.set(HEAD);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

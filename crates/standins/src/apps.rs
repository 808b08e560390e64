//! The listener and the webhook run inside this process, built from a list of settings by the
//! builders their binaries use (`listener::App`, `webhook::App`): for the tests where the
//! process itself is not the point, and for the demo. Nothing of this process's environment or
//! `.env` leaks into their settings.
//!
//! Each app runs on a thread of its own with a Tokio runtime of its own, and logs there what its
//! binary would write to stderr, line for line (the binaries' own log builder,
//! `plumbing::process::log_dispatch`), into a log of its own ([`Running::log`]): a test reads an
//! in-process app's log as it reads a binary's stderr, and two apps in one test keep theirs apart.

use futures_util::FutureExt;
use plumbing::process::Service;
use plumbing::telemetry::Metrics;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Settings as environment variables: `(name, value)`.
pub type Vars<'a> = [(&'a str, String)];

/// One app running on a thread of its own, with a Tokio runtime of its own: its build and every
/// task it spawns run there, and log there, into its own [`Running::log`]. Stopped (as SIGTERM
/// stops its binary) when asked; cut short (its runtime dropped) when dropped.
pub struct Running {
    pub name: &'static str,
    /// The webhook's address (its `BIND_ADDR` port 0 resolved).
    pub addr: Option<SocketAddr>,
    /// The app's own metrics (what its `/metrics` renders): only its series.
    pub metrics: Metrics,
    /// Where `METRICS_ADDR` is bound, when set (port 0 resolved).
    pub metrics_addr: Option<SocketAddr>,
    log: Log,
    stop: Option<oneshot::Sender<()>>,
    /// Dropped (with this value), the app's thread drops its runtime: every task of it ends.
    _abort: oneshot::Sender<()>,
    /// How `run` ended, sent once it has.
    ended: Option<oneshot::Receiver<Outcome>>,
    finished: Arc<AtomicBool>,
}

/// How an app's `run` ended.
enum Outcome {
    Returned,
    Failed(String),
    Crashed(String),
}

/// Why an app could not start: its settings or its builder's error, one line.
#[derive(Debug, thiserror::Error)]
#[error("the {app} cannot start: {reason}")]
pub struct StartError {
    pub app: &'static str,
    pub reason: String,
}

/// Builds the listener from `vars` and starts it.
pub async fn listener(vars: &Vars<'_>) -> Result<Running, StartError> {
    start::<listener::App>("listener", vars, |app| (None, app.metrics().clone(), app.metrics_addr())).await
}

/// Builds the webhook from `vars` and starts it.
pub async fn webhook(vars: &Vars<'_>) -> Result<Running, StartError> {
    start::<webhook::App>("webhook", vars, |app| (Some(app.addr()), app.metrics().clone(), app.metrics_addr())).await
}

/// What the harness reads of a built app: its address, metrics and metrics address.
type Parts = (Option<SocketAddr>, Metrics, Option<SocketAddr>);

/// Builds the app `S` from `vars` (as its binary builds it from the environment) on a thread of
/// its own and runs it there, logging as its binary would (`RUST_LOG` and `LOG_FORMAT` of
/// `vars`; `info` by default, as [`crate::Proc`] starts the binaries) into its [`Log`].
async fn start<S: Service + 'static>(
    name: &'static str,
    vars: &Vars<'_>,
    parts: fn(&S) -> Parts,
) -> Result<Running, StartError> {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let var = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let log = Log::default();
    let dispatch = if GLOBAL_LOG.load(Ordering::Relaxed) {
        None
    } else {
        let writer = LogWriter { log: log.clone(), echo: std::env::var_os("RUST_LOG").is_some() };
        Some(plumbing::process::log_dispatch(var("RUST_LOG").as_deref(), var("LOG_FORMAT").as_deref(), move || {
            writer.clone()
        }))
    };
    let (built_tx, built_rx) = oneshot::channel::<Result<Parts, StartError>>();
    let (stop, stopped) = oneshot::channel::<()>();
    let (abort, aborted) = oneshot::channel::<()>();
    let (ended_tx, ended) = oneshot::channel::<Outcome>();
    let finished = Arc::new(AtomicBool::new(false));
    let finished_on_thread = Arc::clone(&finished);
    let thread = std::thread::Builder::new().name(format!("{name}-app")).spawn(move || {
        let _default = dispatch.as_ref().map(tracing::dispatcher::set_default);
        let mut runtime = tokio::runtime::Builder::new_current_thread();
        runtime.enable_all();
        if let Some(dispatch) = dispatch.clone() {
            // The runtime's blocking threads log into the same log.
            runtime
                .on_thread_start(move || THREAD_LOG.set(Some(tracing::dispatcher::set_default(&dispatch))))
                .on_thread_stop(|| THREAD_LOG.set(None));
        }
        let runtime = match runtime.build() {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = built_tx.send(Err(StartError { app: name, reason: format!("no runtime: {e}") }));
                return;
            }
        };
        runtime.block_on(async move {
            let vars: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let app = match build::<S>(name, &vars).await {
                Ok(app) => app,
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                    return;
                }
            };
            if built_tx.send(Ok(parts(&app))).is_err() {
                return;
            }
            let run = std::panic::AssertUnwindSafe(app.run(async move {
                let _ = stopped.await;
            }));
            tokio::select! {
                outcome = run.catch_unwind() => {
                    let outcome = match outcome {
                        Ok(Ok(())) => Outcome::Returned,
                        Ok(Err(e)) => Outcome::Failed(format!("{e:#}")),
                        Err(panic) => Outcome::Crashed(panic_message(&*panic)),
                    };
                    let _ = ended_tx.send(outcome);
                    finished_on_thread.store(true, Ordering::Release);
                }
                _ = aborted => {}
            }
        });
        // Tasks still running are cut short; blocking ones get a moment to end.
        runtime.shutdown_timeout(Duration::from_secs(5));
    });
    if let Err(e) = thread {
        return Err(StartError { app: name, reason: format!("no thread: {e}") });
    }
    let (addr, metrics, metrics_addr) = match built_rx.await {
        Ok(built) => built?,
        Err(_) => return Err(StartError { app: name, reason: format!("its thread ended; log:\n{}", log.text()) }),
    };
    Ok(Running {
        name,
        addr,
        metrics,
        metrics_addr,
        log,
        stop: Some(stop),
        _abort: abort,
        ended: Some(ended),
        finished,
    })
}

/// The app `S` built from `vars` as its binary builds it from the environment.
async fn build<S: Service>(name: &'static str, vars: &Vars<'_>) -> Result<S, StartError> {
    let fail = |reason: String| StartError { app: name, reason };
    let cli = plumbing::process::parse_vars::<S::Cli>(vars).map_err(|e| fail(first_line(&e)))?;
    let settings = S::settings(cli).map_err(|e| fail(e.to_string()))?;
    S::build(settings).await.map_err(|e| fail(e.to_string()))
}

/// The message of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str));
    format!("panicked: {}", message.unwrap_or("(no message)"))
}

thread_local! {
    /// On a blocking thread of an in-process app's runtime: its log, the thread's default.
    static THREAD_LOG: std::cell::Cell<Option<tracing::dispatcher::DefaultGuard>> = const { std::cell::Cell::new(None) };
}

/// Set by [`log_to_global_subscriber`].
static GLOBAL_LOG: AtomicBool = AtomicBool::new(false);

/// Apps started after this call log through this process's global subscriber (the demo's log
/// file), not into a log of their own: their [`Running::log`] stays empty.
pub fn log_to_global_subscriber() {
    GLOBAL_LOG.store(true, Ordering::Relaxed);
}

/// The most an app's [`Log`] keeps: past it, the oldest lines go.
const LOG_LIMIT: usize = 8 << 20;

/// An in-process app's log: the lines its binary would write to stderr, the last
/// [`LOG_LIMIT`] bytes of them.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn append(&self, bytes: &[u8]) {
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        log.extend_from_slice(bytes);
        if log.len() > LOG_LIMIT {
            // The oldest half goes, up to the start of a line.
            let cut = log.len() - LOG_LIMIT / 2;
            let cut = log[cut..].iter().position(|&b| b == b'\n').map_or(cut, |i| cut + i + 1);
            log.drain(..cut);
        }
    }
}

/// Writes into a [`Log`]; with `echo` (`RUST_LOG` set for the test), into the test's captured
/// output too (shown when it fails).
#[derive(Clone)]
struct LogWriter {
    log: Log,
    echo: bool,
}

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log.append(buf);
        if self.echo {
            print!("{}", String::from_utf8_lossy(buf));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `vars` for an app started in `cwd`, as the binary started there would read them: the
/// activity file and `DATA_DIR` default to `cwd`, relative paths are taken from `cwd`, and
/// with `TEST_REDIS_URL` set the app uses that Redis under a prefix of its own (as
/// [`crate::Proc`] does for the binaries).
pub fn in_dir<'a>(cwd: &Path, vars: &Vars<'a>) -> Vec<(&'a str, String)> {
    let mut out: Vec<(&'a str, String)> = Vec::with_capacity(vars.len() + 4);
    for (name, default) in [("EVENT_DATA_PATH", "event_data.txt"), ("DATA_DIR", "data")] {
        if !vars.iter().any(|(k, _)| *k == name) {
            out.push((name, cwd.join(default).display().to_string()));
        }
    }
    out.extend(crate::test_redis(cwd));
    for (name, value) in vars {
        let is_path = matches!(*name, "EVENT_DATA_PATH" | "DATA_DIR" | "TRACE_DIR" | "SYSTEM_PROMPT_PATH");
        let value = if is_path && !value.is_empty() { cwd.join(value).display().to_string() } else { value.clone() };
        out.retain(|(k, _)| k != name);
        out.push((name, value));
    }
    out
}

impl Running {
    pub fn is_running(&self) -> bool {
        self.ended.is_some() && !self.finished.load(Ordering::Acquire)
    }

    /// What the app has logged so far: the lines its binary would write to stderr.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Why the app stopped on its own, when it did; `None` while it runs.
    pub fn stopped_early(&mut self) -> Option<String> {
        if self.is_running() {
            return None;
        }
        let outcome = match self.ended.take()?.try_recv() {
            Ok(Outcome::Returned) => "it returned".to_owned(),
            Ok(Outcome::Failed(e) | Outcome::Crashed(e)) => e,
            Err(_) => "unknown".to_owned(),
        };
        Some(format!("the {} stopped ({outcome})", self.name))
    }

    /// Asks the app to stop (its graceful shutdown) and waits up to `limit`.
    pub async fn stop(&mut self, limit: Duration) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(ended) = self.ended.take() else { return Err(format!("the {} had already stopped", self.name)) };
        match tokio::time::timeout(limit, ended).await {
            Ok(Ok(Outcome::Returned)) => Ok(()),
            Ok(Ok(Outcome::Failed(e))) => Err(format!("the {} stopped with an error: {e}", self.name)),
            Ok(Ok(Outcome::Crashed(e))) => Err(format!("the {} crashed: {e}", self.name)),
            Ok(Err(_)) => Err(format!("the {} crashed: its thread ended", self.name)),
            Err(_) => Err(format!("the {} did not stop within {} s", self.name, limit.as_secs())),
        }
    }
}

/// An app under test: the binary (where its signals, exit or environment are the point) or
/// in-process.
pub enum Runner {
    Binary(crate::Proc),
    InProcess(Running),
}

impl Runner {
    /// The binary's process.
    pub fn proc(&self) -> &crate::Proc {
        match self {
            Runner::Binary(proc) => proc,
            Runner::InProcess(running) => panic!("the in-process {} has no process", running.name),
        }
    }

    pub fn proc_mut(&mut self) -> &mut crate::Proc {
        match self {
            Runner::Binary(proc) => proc,
            Runner::InProcess(running) => panic!("the in-process {} has no process", running.name),
        }
    }

    /// Whether the app still runs: the binary's process, or the in-process app's `run`.
    pub fn is_running(&mut self) -> bool {
        match self {
            Runner::Binary(proc) => proc.is_running(),
            Runner::InProcess(running) => running.is_running(),
        }
    }

    /// The app's log: the binary's stderr, or what the in-process app logged (the same lines).
    pub fn log(&self) -> String {
        match self {
            Runner::Binary(proc) => proc.stderr(),
            Runner::InProcess(running) => running.log(),
        }
    }
}

/// With `RUST_LOG` set, what the test itself logs goes into its captured output (shown when it
/// fails); the apps' logs are echoed there too (at their own level, `info` unless their settings
/// say otherwise).
pub fn log_to_test_output() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

fn first_line(error: &clap::Error) -> String {
    error.to_string().lines().next().unwrap_or_default().to_owned()
}

/// The listener in `dir` (its `DATA_DIR` is `dir/data`, no summaries), in-process, reading a
/// loopback stream that sends `frames` and then stays open; panics when it cannot start.
pub async fn listener_fed(dir: &Path, frames: Vec<bytes::Bytes>) -> (crate::sse_server::SseServer, Running) {
    use crate::sse_server::{Plan, SseServer};
    let stream = SseServer::start(vec![Plan::StreamThenHold(frames)], None).await;
    let env = [
        ("STREAM_URL", stream.url.clone()),
        ("SUMMARY_THRESHOLD", "0".to_owned()),
        ("DATA_DIR", dir.join("data").display().to_string()),
    ];
    let listener = listener(&in_dir(dir, &env)).await.unwrap_or_else(|e| panic!("{e}"));
    (stream, listener)
}

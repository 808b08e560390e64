//! The listener and the webhook run inside this process, built from a list of settings by the
//! builders their binaries use (`listener::App`, `webhook::App`): for the tests where the
//! process itself is not the point, and for the demo. Nothing of this process's environment or
//! `.env` leaks into their settings.

use plumbing::process::Service;
use plumbing::telemetry::Metrics;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Settings as environment variables: `(name, value)`.
pub type Vars<'a> = [(&'a str, String)];

/// One app running on the current runtime; stopped (as SIGTERM stops its binary) when asked
/// or when dropped.
pub struct Running {
    pub name: &'static str,
    /// The webhook's address (its `BIND_ADDR` port 0 resolved).
    pub addr: Option<SocketAddr>,
    /// The app's own metrics (what its `/metrics` renders): only its series.
    pub metrics: Metrics,
    /// Where `METRICS_ADDR` is bound, when set (port 0 resolved).
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
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
    let app = build::<listener::App>("listener", vars).await?;
    let (metrics, metrics_addr) = (app.metrics().clone(), app.metrics_addr());
    let mut running = Running::spawn("listener", None, metrics, |stop| app.run(stop));
    running.metrics_addr = metrics_addr;
    Ok(running)
}

/// Builds the webhook from `vars` and starts it.
pub async fn webhook(vars: &Vars<'_>) -> Result<Running, StartError> {
    let app = build::<webhook::App>("webhook", vars).await?;
    let (addr, metrics, metrics_addr) = (app.addr(), app.metrics().clone(), app.metrics_addr());
    let mut running = Running::spawn("webhook", Some(addr), metrics, |stop| app.run(stop));
    running.metrics_addr = metrics_addr;
    Ok(running)
}

/// The app `S` built from `vars` as its binary builds it from the environment.
async fn build<S: Service>(name: &'static str, vars: &Vars<'_>) -> Result<S, StartError> {
    let fail = |reason: String| StartError { app: name, reason };
    let cli = plumbing::process::parse_vars::<S::Cli>(vars).map_err(|e| fail(first_line(&e)))?;
    let settings = S::settings(cli).map_err(|e| fail(e.to_string()))?;
    S::build(settings).await.map_err(|e| fail(e.to_string()))
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
    /// Spawns `run`, handing it the future that resolves when [`Running::stop`] is called.
    fn spawn<F>(
        name: &'static str,
        addr: Option<SocketAddr>,
        metrics: Metrics,
        run: impl FnOnce(futures_util::future::BoxFuture<'static, ()>) -> F,
    ) -> Running
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async move {
            let _ = stopped.await;
        })));
        Running { name, addr, metrics, metrics_addr: None, stop: Some(stop), task: Some(task) }
    }

    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Why the app stopped on its own, when it did; `None` while it runs.
    pub fn stopped_early(&mut self) -> Option<String> {
        use futures_util::FutureExt;
        let task = self.task.as_mut().filter(|task| task.is_finished())?;
        let outcome = match task.now_or_never() {
            Some(Ok(Ok(()))) => "it returned".to_owned(),
            Some(Ok(Err(e))) => format!("{e:#}"),
            Some(Err(e)) => e.to_string(),
            None => "unknown".to_owned(),
        };
        self.task = None;
        Some(format!("the {} stopped ({outcome})", self.name))
    }

    /// Asks the app to stop (its graceful shutdown) and waits up to `limit`.
    pub async fn stop(&mut self, limit: Duration) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else { return Err(format!("the {} had already stopped", self.name)) };
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("the {} stopped with an error: {e:#}", self.name)),
            Ok(Err(e)) => Err(format!("the {} crashed: {e}", self.name)),
            Err(_) => Err(format!("the {} did not stop within {} s", self.name, limit.as_secs())),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// An app under test: the binary (where its log, signals or exit are the point) or in-process.
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

    /// The binary's log; an in-process app logs into the test's output (with `RUST_LOG`).
    pub fn log(&self) -> String {
        match self {
            Runner::Binary(proc) => proc.stderr(),
            Runner::InProcess(running) => format!(
                "(the in-process {}, running: {}; RUST_LOG=info shows its log)",
                running.name,
                running.is_running()
            ),
        }
    }
}

/// With `RUST_LOG` set, the apps of a test log into its captured output (shown when it fails).
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

//! The listener and the webhook, run in this process through the builders their binaries use
//! (`listener::App`, `webhook::App`), from an explicit list of settings: nothing of the
//! environment or of `.env` leaks in. They log (warnings and errors) into one file.

use anyhow::{Context, Result, anyhow, bail};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One app running on this runtime, stopped as SIGTERM would stop its binary.
pub struct Running {
    pub name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    log: PathBuf,
}

/// Builds the listener from `vars` and starts it.
pub async fn listener(vars: &[(&str, String)], log: &Path) -> Result<Running> {
    let settings = agent_core::process::parse_vars::<listener::config::Cli>(vars)
        .map_err(|e| anyhow!("listener settings: {}", first_line(&e.to_string())))?
        .into_settings()
        .context("listener settings")?;
    let app = listener::App::build(settings).await.context("cannot start the listener")?;
    Ok(Running::spawn("listener", log, |stop| app.run(stop)))
}

/// Builds the webhook from `vars` and starts it; returns it with the address it serves on.
pub async fn webhook(vars: &[(&str, String)], log: &Path) -> Result<(Running, SocketAddr)> {
    let settings = agent_core::process::parse_vars::<webhook::config::Cli>(vars)
        .map_err(|e| anyhow!("webhook settings: {}", first_line(&e.to_string())))?
        .into_settings()
        .context("webhook settings")?;
    let app = webhook::App::build(settings).await.context("cannot start the webhook")?;
    let addr = app.addr();
    Ok((Running::spawn("webhook", log, |stop| app.run(stop)), addr))
}

impl Running {
    /// Spawns `run`, handing it the future that resolves when [`Running::stop`] is called.
    fn spawn<F>(name: &'static str, log: &Path, run: impl FnOnce(BoxFuture<'static, ()>) -> F) -> Running
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async move {
            let _ = stopped.await;
        })));
        Running { name, stop: Some(stop), task: Some(task), log: log.to_owned() }
    }

    /// An error when the app has stopped on its own, with why and the last line logged.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(task) = self.task.as_mut().filter(|task| task.is_finished()) else { return Ok(()) };
        let outcome = match task.now_or_never() {
            Some(Ok(Ok(()))) => "it returned".to_owned(),
            Some(Ok(Err(e))) => format!("{e:#}"),
            Some(Err(e)) => e.to_string(),
            None => "unknown".to_owned(),
        };
        self.task = None;
        bail!("the {} stopped early ({outcome}); last log line: {}", self.name, self.last_log_line())
    }

    /// The last line logged (by either app: they share the log).
    pub fn last_log_line(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing logged)").trim().to_owned()
    }

    /// Asks the app to stop (the graceful shutdown of SIGTERM) and waits up to `limit`.
    pub async fn stop(&mut self, limit: Duration) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else { bail!("the {} had already stopped", self.name) };
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.context(format!("the {} stopped with an error", self.name))),
            Ok(Err(e)) => bail!("the {} crashed: {e}", self.name),
            Err(_) => bail!("the {} did not stop within {} s", self.name, limit.as_secs()),
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

/// Logs warnings and errors of both apps into `path` (`RUST_LOG` overrides the level).
pub fn log_to(path: &Path) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow!("cannot log to {}: {e}", path.display()))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

//! Feeds the per-visitor context store from the stream, off the reading path: a bounded queue
//! and one writer task, so a slow store never stalls the stream (it loses store writes, counted
//! and logged, but never the activity file).

use crate::stream::RateLimitedWarn;
use agent_core::context::ContextStore;
use agent_core::payload::ActionsBatch;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Writes waiting for the store before new ones are dropped.
const QUEUE: usize = 10_000;
/// How often expired sessions and links are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

pub enum StoreWrite {
    Batch(ActionsBatch),
    Summary { session: String, summary: String },
}

#[derive(Clone)]
pub struct StoreFeed {
    tx: mpsc::Sender<StoreWrite>,
}

pub struct StoreWriter {
    handle: JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl StoreFeed {
    pub fn start(store: Arc<dyn ContextStore>) -> (StoreFeed, StoreWriter) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(write_until_stopped(store, rx, stopped));
        (StoreFeed { tx }, StoreWriter { handle, stop })
    }

    /// Queues a write; never waits.
    pub fn send(&self, write: StoreWrite) {
        if self.tx.try_send(write).is_err() {
            tracing::warn!("context store is behind; a write was dropped (the activity file is unaffected)");
        }
    }
}

impl StoreWriter {
    /// Writes what is queued (up to `grace`), then stops.
    pub async fn finish(self, grace: Duration) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(grace, self.handle).await;
    }
}

async fn write_until_stopped(
    store: Arc<dyn ContextStore>,
    mut rx: mpsc::Receiver<StoreWrite>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut errors = RateLimitedWarn::new(10);
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    let mut stopping = false;
    loop {
        let write = if stopping {
            match rx.try_recv() {
                Ok(write) => write,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                write = rx.recv() => match write { Some(write) => write, None => return },
                _ = &mut stopped => { stopping = true; continue; }
            }
        };
        let now = SystemTime::now();
        let result = match &write {
            StoreWrite::Batch(batch) => store.record_batch(batch, now).await,
            StoreWrite::Summary { session, summary } => store.record_summary(session, summary, now).await,
        };
        if let Err(e) = result
            && let Some(suppressed) = errors.allow(Instant::now())
        {
            tracing::error!(error = %e, suppressed_since_last = suppressed, "context store write failed");
        }
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + SWEEP_EVERY;
            match store.sweep_expired(SystemTime::now()).await {
                Ok(removed) if removed > 0 => tracing::debug!(removed, "expired context removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "context sweep failed"),
            }
        }
    }
}

//! Feeds the per-visitor context store from the stream, off the reading path: a bounded queue
//! and one writer task, so a slow store never stalls the stream (it loses store writes, counted
//! and logged, but never the activity file).

use crate::stream::RateLimitedWarn;
use agent_core::context::{ContextStore, StoreError};
use agent_core::payload::ActionsBatch;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
    stop: CancellationToken,
}

impl StoreFeed {
    pub fn start(store: Arc<dyn ContextStore>) -> (StoreFeed, StoreWriter) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let handle = tokio::spawn(write_until_stopped(store, rx, stop.clone()));
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
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, self.handle).await;
    }
}

/// One write; while the store is unreachable (Redis down) it waits and tries again, so queued
/// writes catch up once it is back. The queue in front is bounded, so memory is too.
async fn write_with_patience(
    store: &dyn ContextStore,
    write: &StoreWrite,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let mut delay = Duration::from_millis(250);
    loop {
        let now = SystemTime::now();
        let result = match write {
            StoreWrite::Batch(batch) => store.record_batch(batch, now).await,
            StoreWrite::Summary { session, summary } => store.record_summary(session, summary, now).await,
        };
        match result {
            Err(StoreError::Unavailable(_)) if !stop.is_cancelled() => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

async fn write_until_stopped(
    store: Arc<dyn ContextStore>,
    mut rx: mpsc::Receiver<StoreWrite>,
    stop: CancellationToken,
) {
    let mut errors = RateLimitedWarn::new(10);
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    loop {
        let write = if stop.is_cancelled() {
            match rx.try_recv() {
                Ok(write) => write,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                write = rx.recv() => match write { Some(write) => write, None => return },
                _ = stop.cancelled() => continue,
            }
        };
        let result = write_with_patience(store.as_ref(), &write, &stop).await;
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

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
const QUEUE: usize = 2_000;
/// How often expired sessions and links are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

pub enum StoreWrite {
    Batch(ActionsBatch),
    Summary { session: String, summary: String },
}

#[derive(Clone)]
pub struct StoreFeed {
    tx: mpsc::Sender<StoreWrite>,
    dropped_warn: Arc<std::sync::Mutex<RateLimitedWarn>>,
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
        (
            StoreFeed { tx, dropped_warn: Arc::new(std::sync::Mutex::new(RateLimitedWarn::new(5))) },
            StoreWriter { handle, stop },
        )
    }

    /// Queues a write; never waits.
    pub fn send(&self, write: StoreWrite) {
        if self.tx.try_send(write).is_err() {
            let allowed =
                self.dropped_warn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).allow(Instant::now());
            if let Some(suppressed) = allowed {
                tracing::warn!(
                    dropped_since_last = suppressed,
                    "context store is behind; a write was dropped (the activity file is unaffected)"
                );
            }
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

/// Writes gathered from the queue, in order: consecutive batches go to the store together.
enum Work {
    Batches(Vec<ActionsBatch>),
    Summary { session: String, summary: String },
}

fn gather(first: StoreWrite, rx: &mut mpsc::Receiver<StoreWrite>) -> Vec<Work> {
    let mut work: Vec<Work> = Vec::new();
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(write) = next.take() {
        match (write, work.last_mut()) {
            (StoreWrite::Batch(batch), Some(Work::Batches(batches))) => batches.push(batch),
            (StoreWrite::Batch(batch), _) => work.push(Work::Batches(vec![batch])),
            (StoreWrite::Summary { session, summary }, _) => work.push(Work::Summary { session, summary }),
        }
        taken += 1;
        if taken < MAX_GATHER {
            next = rx.try_recv().ok();
        }
    }
    work
}

/// Writes at most this many queued items per store call.
const MAX_GATHER: usize = 512;

/// One piece of work; while the store is unreachable (Redis down) it waits and tries again,
/// so queued writes catch up once it is back. The queue in front is bounded, so memory is too.
async fn write_with_patience(
    store: &dyn ContextStore,
    work: &Work,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let mut delay = Duration::from_millis(250);
    loop {
        let now = SystemTime::now();
        let result = match work {
            Work::Batches(batches) => store.record_batches(batches, now).await,
            Work::Summary { session, summary } => store.record_summary(session, summary, now).await,
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
        let first = if stop.is_cancelled() {
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
        for work in gather(first, &mut rx) {
            if let Err(e) = write_with_patience(store.as_ref(), &work, &stop).await
                && let Some(suppressed) = errors.allow(Instant::now())
            {
                tracing::error!(error = %e, suppressed_since_last = suppressed, "context store write failed");
            }
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

//! Runs the summaries the per-session bookkeeping asks for, off the stream-reading path.

use crate::store_feed::{StoreFeed, StoreWrite};
use agent_core::activity_file::ActivityFile;
use agent_core::llm::{ChatMessage, ChatRequest, LlmClient, Role};
use agent_core::payload::Action;
use agent_core::summary::{SessionSummaries, SummaryJob, SummaryPolicy, summary_prompt};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// LLM calls in flight at once, across all sessions.
const MAX_CONCURRENT_SUMMARIES: u32 = 8;

pub struct Summarizer {
    sessions: Mutex<SessionSummaries>,
    llm: LlmClient,
    file: ActivityFile,
    store: StoreFeed,
    slots: Arc<Semaphore>,
    /// The runtime summaries run on (the process's), whichever thread starts them.
    runtime: tokio::runtime::Handle,
}

impl Summarizer {
    /// Must be called within the runtime the summaries are to run on.
    pub fn new(llm: LlmClient, threshold: usize, file: ActivityFile, store: StoreFeed) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(SessionSummaries::new(SummaryPolicy::new(threshold))),
            llm,
            file,
            store,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_SUMMARIES as usize)),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Counts a batch; returns the summary now due for its session, if any, for [`Self::start`]
    /// once the batch is in the file (a summary never lands before the actions it covers).
    pub fn record(&self, session: &str, actions: &[Action<'_>]) -> Option<SummaryJob> {
        self.with_sessions(|s| s.record(session, actions, Instant::now()))
    }

    /// Forgets idle sessions, every 30 s, for as long as the listener runs.
    pub async fn sweep_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let forgotten = self.with_sessions(|s| s.forget_idle(Instant::now()));
            if forgotten > 0 {
                tracing::debug!(forgotten, "idle sessions forgotten");
            }
        }
    }

    /// Waits up to `grace` for summaries being written to finish.
    pub async fn drain(&self, grace: Duration) {
        let _ = tokio::time::timeout(grace, self.slots.acquire_many(MAX_CONCURRENT_SUMMARIES)).await;
    }

    fn with_sessions<T>(&self, f: impl FnOnce(&mut SessionSummaries) -> T) -> T {
        f(&mut self.sessions.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs a summary in the background. Never waits.
    pub fn start(self: &Arc<Self>, job: SummaryJob) {
        let this = Arc::clone(self);
        self.runtime.spawn(async move {
            let Ok(_slot) = this.slots.acquire().await else { return };
            let request = ChatRequest {
                messages: vec![ChatMessage::new(Role::User, summary_prompt(&job.actions))],
                temperature: 0.3,
                max_tokens: 256,
            };
            let succeeded = match this.llm.complete(&request).await {
                Ok(summary) => match this.file.append_summary(&summary) {
                    Ok(()) => {
                        this.store.send(StoreWrite::Summary { session: job.session.clone(), summary });
                        metrics::counter!(agent_core::telemetry::SUMMARIES_WRITTEN).increment(1);
                        tracing::info!(session = %job.session, actions = job.actions.len(), "summary written");
                        true
                    }
                    Err(e) => {
                        tracing::error!(session = %job.session, error = %e, path = %this.file.path().display(), "cannot write summary");
                        false
                    }
                },
                Err(e) => {
                    metrics::counter!(agent_core::telemetry::SUMMARIES_FAILED).increment(1);
                    tracing::warn!(session = %job.session, error = %e, "summary failed; its actions stay pending for the next batch");
                    false
                }
            };
            drop(_slot);
            let next = this.with_sessions(|s| s.finish(job, succeeded, Instant::now()));
            if let Some(next) = next {
                this.start(next);
            }
        });
    }
}

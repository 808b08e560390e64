//! Runs the summaries the per-session bookkeeping asks for, off the stream-reading path.
//!
//! Due jobs wait in the bookkeeping's bounded queue (the oldest go when it is full), and a
//! task exists only for a job holding one of the LLM slots: a slow LLM costs a bounded queue,
//! not a task per session.

use crate::store_feed::{StoreFeed, StoreWrite};
use crate::stream::RateLimitedWarn;
use activity::action::ActionRecord;
use activity::activity_file::ActivityFile;
use activity::summary::{SessionSummaries, SummaryJob, SummaryPolicy};
use llm::{ChatMessage, ChatRequest, LlmClient, Role};
use plumbing::telemetry::{Metrics, REDACTIONS, SUMMARIES_FAILED, SUMMARIES_WRITTEN};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// LLM calls in flight at once, across all sessions.
const MAX_CONCURRENT_SUMMARIES: u32 = 8;

pub struct Summarizer {
    sessions: Mutex<SessionSummaries>,
    llm: LlmClient,
    /// Personal data and secrets in the actions never reach the LLM: the summary (written to
    /// the activity file and the store) is made from masked text.
    redactor: Arc<privacy::Redactor>,
    file: ActivityFile,
    store: StoreFeed,
    slots: Arc<Semaphore>,
    /// The runtime summaries run on (the process's), whichever thread starts them.
    runtime: tokio::runtime::Handle,
    write_warn: Mutex<RateLimitedWarn>,
    dropped_warn: Mutex<RateLimitedWarn>,
    /// The listener's registry: summaries written and failed, values redacted.
    metrics: Metrics,
}

impl Summarizer {
    /// Must be called within the runtime the summaries are to run on.
    pub fn new(
        llm: LlmClient,
        threshold: usize,
        redactor: Arc<privacy::Redactor>,
        file: ActivityFile,
        store: StoreFeed,
        metrics: Metrics,
    ) -> Arc<Self> {
        Self::with_policy(llm, SummaryPolicy::new(threshold), redactor, file, store, metrics)
    }

    /// [`Self::new`] with every bound given.
    pub fn with_policy(
        llm: LlmClient,
        policy: SummaryPolicy,
        redactor: Arc<privacy::Redactor>,
        file: ActivityFile,
        store: StoreFeed,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(SessionSummaries::new(policy).with_metrics(&metrics)),
            llm,
            redactor,
            file,
            store,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_SUMMARIES as usize)),
            runtime: tokio::runtime::Handle::current(),
            write_warn: Mutex::new(RateLimitedWarn::new(1)),
            dropped_warn: Mutex::new(RateLimitedWarn::new(1)),
            metrics,
        })
    }

    /// Counts a batch (`session` `None`: an anonymous one, summarised for the activity file
    /// only); returns the summary now due for its session, if any, for [`Self::start`] once
    /// the batch is in the file (a summary never lands before the actions it covers).
    pub fn record(&self, session: Option<&str>, actions: &[ActionRecord<'_>]) -> Option<SummaryJob> {
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

    /// Queues a summary to run in the background. Never waits.
    pub fn start(self: &Arc<Self>, job: SummaryJob) {
        let dropped = self.with_sessions(|s| s.enqueue(job));
        if dropped > 0 {
            let allowed = self.dropped_warn.lock().unwrap_or_else(PoisonError::into_inner).allow(Instant::now());
            if let Some(suppressed) = allowed {
                tracing::warn!(
                    dropped_since_last = suppressed + dropped as u64,
                    "the LLM is behind; the oldest waiting summary was dropped"
                );
            }
        }
        self.pump();
    }

    /// Starts waiting jobs while LLM slots are free.
    fn pump(self: &Arc<Self>) {
        while let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            let Some(job) = self.with_sessions(SessionSummaries::next_waiting) else { return };
            self.runtime.spawn(Arc::clone(self).run(job, slot));
        }
    }

    /// Appends a summary to the activity file on a blocking thread (a slow disk never holds a
    /// runtime worker).
    async fn append_summary(&self, summary: String) -> std::io::Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.append_summary(&summary))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    }

    async fn run(self: Arc<Self>, job: SummaryJob, slot: OwnedSemaphorePermit) {
        let prompt = job.prompt();
        let masked = self.redactor.redact_for_log_counted(&prompt);
        for (kind, n) in masked.counts.iter().filter(|(_, n)| *n > 0) {
            self.metrics.counter_with(REDACTIONS, &[("kind", kind.label())]).increment(n);
        }
        let request = ChatRequest {
            messages: vec![ChatMessage::new(Role::User, masked.text.into_owned())],
            temperature: 0.3,
            max_tokens: 256,
            tools: Vec::new(),
        };
        let session = job.session.as_deref().unwrap_or("(anonymous)");
        let mut refused = None;
        let succeeded = match self.llm.complete(&request).await {
            Ok(summary) => match self.append_summary(summary.clone()).await {
                Ok(()) => {
                    // Anonymous batches share no session: their summary is kept nowhere else.
                    if let Some(session) = &job.session {
                        self.store.send(StoreWrite::Summary { session: session.clone(), summary });
                    }
                    self.metrics.counter(SUMMARIES_WRITTEN).increment(1);
                    tracing::info!(session, actions = job.actions.len(), "summary written");
                    true
                }
                Err(e) => {
                    let allowed = self.write_warn.lock().unwrap_or_else(PoisonError::into_inner).allow(Instant::now());
                    if let Some(suppressed) = allowed {
                        tracing::error!(session, error = %e, path = %self.file.path().display(), suppressed_since_last = suppressed, "cannot write summary");
                    }
                    false
                }
            },
            Err(e) => {
                refused = Some(e);
                false
            }
        };
        drop(slot);
        let session = session.to_owned();
        let next = self.with_sessions(|s| s.finish(job, succeeded, Instant::now()));
        // Told once the actions are pending again: whatever follows the line finds them there.
        if let Some(e) = refused {
            self.metrics.counter(SUMMARIES_FAILED).increment(1);
            tracing::warn!(session, error = %e, "summary failed; its actions stay pending for the next batch");
        }
        match next {
            Some(next) => self.start(next),
            None => self.pump(),
        }
    }
}

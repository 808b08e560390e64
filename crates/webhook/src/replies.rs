//! Background replies: one conversation answered one burst at a time, bounded concurrency
//! across conversations, and a drain on shutdown.

use crate::context::ContextSource;
use agent_core::crisp::{CrispClient, VisitorMessage};
use agent_core::llm::LlmClient;
use agent_core::prompt::reply_request;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Messages waiting across all conversations before new ones are refused (503, Crisp retries).
const MAX_QUEUED: usize = 10_000;
/// How long a delivered message id is remembered to drop redeliveries.
const SEEN_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct ReplyDeps {
    pub llm: LlmClient,
    pub crisp: CrispClient,
    pub context: ContextSource,
    pub system_prompt: String,
}

/// What became of a submitted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// A reply is on its way (alone, or together with messages already waiting).
    Accepted,
    /// The same message was delivered before.
    Duplicate,
    /// Too much waiting already.
    Overloaded,
}

#[derive(Clone)]
pub struct Replies {
    inner: Arc<Inner>,
}

struct Inner {
    deps: ReplyDeps,
    /// Conversations with a reply being written; the value holds messages that came meanwhile.
    busy: Mutex<Busy>,
    slots: Semaphore,
    tracker: TaskTracker,
    seen: moka::sync::Cache<(String, u64), ()>,
}

impl Replies {
    pub fn new(deps: ReplyDeps, max_concurrent: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                deps,
                busy: Mutex::new(Busy::default()),
                slots: Semaphore::new(max_concurrent.max(1)),
                tracker: TaskTracker::new(),
                seen: moka::sync::Cache::builder().max_capacity(200_000).time_to_live(SEEN_TTL).build(),
            }),
        }
    }

    /// Queues a visitor message; never waits.
    pub fn submit(&self, message: VisitorMessage) -> Submitted {
        let seen_key = message.fingerprint.map(|f| (message.session_id.clone(), f));
        if let Some(key) = &seen_key {
            if !self.inner.seen.entry(key.clone()).or_insert(()).is_fresh() {
                return Submitted::Duplicate;
            }
        }
        let mut guard = self.inner.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let busy = &mut *guard;
        if let Some(waiting) = busy.conversations.get_mut(&message.session_id) {
            if busy.waiting >= MAX_QUEUED {
                drop(guard);
                // Not taken: forget it so Crisp's redelivery is not mistaken for a duplicate.
                if let Some(key) = seen_key {
                    self.inner.seen.invalidate(&key);
                }
                return Submitted::Overloaded;
            }
            waiting.push(message);
            busy.waiting += 1;
            return Submitted::Accepted;
        }
        busy.conversations.insert(message.session_id.clone(), Vec::new());
        drop(guard);
        let inner = Arc::clone(&self.inner);
        self.inner.tracker.spawn(async move { inner.run_conversation(vec![message]).await });
        Submitted::Accepted
    }

    /// Stops taking work and waits up to `grace` for every accepted message to be answered.
    /// Returns whether everything finished in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.inner.tracker.close();
        tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_ok()
    }
}

impl Inner {
    async fn run_conversation(self: Arc<Self>, mut burst: Vec<VisitorMessage>) {
        let session = burst[0].session_id.clone();
        loop {
            {
                let Ok(_slot) = self.slots.acquire().await else { return };
                self.reply(&session, &burst).await;
            }
            let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
            let waiting = busy.conversations.get_mut(&session).map(std::mem::take).unwrap_or_default();
            if waiting.is_empty() {
                busy.conversations.remove(&session);
                return;
            }
            busy.waiting -= waiting.len();
            burst = waiting;
        }
    }

    async fn reply(&self, session: &str, burst: &[VisitorMessage]) {
        let question = burst.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
        let activity = self.deps.context.activity_for(session).await;
        tracing::debug!(session, linked_by = ?activity.linked_by, autoplay_session = ?activity.autoplay_session, "context found");
        let request = reply_request(&self.deps.system_prompt, &activity.text, &question);
        let answer = match self.deps.llm.complete(&request).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::error!(session, error = %e, "no answer from the LLM");
                return;
            }
        };
        match self.deps.crisp.send_text(session, &answer).await {
            Ok(_) => tracing::info!(session, messages = burst.len(), "reply sent"),
            Err(e) => tracing::error!(session, error = %e, "Crisp refused the reply"),
        }
    }
}

/// Conversations with a reply being written, each with the messages that came meanwhile.
#[derive(Default)]
struct Busy {
    conversations: HashMap<String, Vec<VisitorMessage>>,
    /// Sum of the waiting messages, to bound memory.
    waiting: usize,
}

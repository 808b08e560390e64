//! Background replies with delivery guarantees:
//! - a redelivered hook (same conversation and fingerprint) is answered once;
//! - one conversation is answered one burst at a time: messages that arrive while an answer is
//!   being written are answered together by the next one;
//! - the typing indicator goes on before any LLM call and always off at the end;
//! - a human operator writing in a conversation silences the bot there for a while;
//! - when the LLM fails for good the visitor still gets a short fallback message;
//! - on shutdown, every accepted message is answered within the grace period.

use crate::context::ContextSource;
use agent_core::crisp::{CrispClient, OperatorMessage, VisitorMessage};
use agent_core::llm::{ChatMessage, LlmClient, Role};
use agent_core::prompt::reply_request;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Messages waiting across all conversations before new ones are refused (503, Crisp retries).
const MAX_QUEUED: usize = 10_000;
/// How long a delivered message id is remembered to drop redeliveries.
const SEEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the bot remembers what it sent, to recognise its own echo.
const OWN_MESSAGE_TTL: Duration = Duration::from_secs(3600);
/// Characters kept of each earlier turn in the prompt.
const HISTORY_TURN_CHARS: usize = 1000;

pub struct ReplyDeps {
    pub llm: LlmClient,
    pub crisp: CrispClient,
    pub context: ContextSource,
    pub system_prompt: String,
    pub fallback_message: Option<String>,
    pub human_takeover: Duration,
    pub history_turns: usize,
}

/// What became of a submitted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// A reply is on its way (alone, or together with messages already waiting).
    Accepted,
    /// The same message was delivered before.
    Duplicate,
    /// A human operator has the conversation.
    HumanHasIt,
    /// Too much waiting already.
    Overloaded,
}

#[derive(Clone)]
pub struct Replies {
    inner: Arc<Inner>,
}

struct Inner {
    deps: ReplyDeps,
    busy: Mutex<Busy>,
    slots: Semaphore,
    tracker: TaskTracker,
    seen: moka::sync::Cache<(String, u64), ()>,
    /// Conversations a human operator took over.
    taken_over: moka::sync::Cache<String, ()>,
    /// Fingerprints of the bot's own messages.
    own_fingerprints: moka::sync::Cache<u64, ()>,
    /// Texts the bot is sending or sent, per conversation: its echo can beat the send's answer.
    own_texts: moka::sync::Cache<(String, String), ()>,
    history: moka::future::Cache<String, Arc<Vec<Value>>>,
}

/// Conversations with a reply being written, each with the messages that came meanwhile.
#[derive(Default)]
struct Busy {
    conversations: HashMap<String, Vec<VisitorMessage>>,
    /// Sum of the waiting messages, to bound memory.
    waiting: usize,
}

impl Replies {
    pub fn new(deps: ReplyDeps, max_concurrent: usize) -> Self {
        let takeover = deps.human_takeover.max(Duration::from_secs(1));
        Self {
            inner: Arc::new(Inner {
                deps,
                busy: Mutex::new(Busy::default()),
                slots: Semaphore::new(max_concurrent.max(1)),
                tracker: TaskTracker::new(),
                seen: moka::sync::Cache::builder().max_capacity(200_000).time_to_live(SEEN_TTL).build(),
                taken_over: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(takeover).build(),
                own_fingerprints: moka::sync::Cache::builder()
                    .max_capacity(200_000)
                    .time_to_live(OWN_MESSAGE_TTL)
                    .build(),
                own_texts: moka::sync::Cache::builder().max_capacity(50_000).time_to_live(OWN_MESSAGE_TTL).build(),
                history: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(30))
                    .build(),
            }),
        }
    }

    /// Queues a visitor message; never waits.
    pub fn submit(&self, message: VisitorMessage) -> Submitted {
        let seen_key = message.fingerprint.map(|f| (message.session_id.clone(), f));
        if let Some(key) = &seen_key
            && !self.inner.seen.entry(key.clone()).or_insert(()).is_fresh()
        {
            return Submitted::Duplicate;
        }
        if self.inner.taken_over.contains_key(&message.session_id) {
            return Submitted::HumanHasIt;
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

    /// An operator wrote in a conversation: unless it is the bot itself, a human took over.
    /// Returns whether it counted as a takeover.
    pub fn operator_wrote(&self, message: &OperatorMessage) -> bool {
        let own_fingerprint = message.fingerprint.is_some_and(|f| self.inner.own_fingerprints.contains_key(&f));
        let own_text = message
            .content
            .as_ref()
            .is_some_and(|text| self.inner.own_texts.contains_key(&(message.session_id.clone(), text.clone())));
        if message.automated || own_fingerprint || own_text {
            return false;
        }
        self.inner.taken_over.insert(message.session_id.clone(), ());
        true
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
            self.reply(&session, &burst).await;
            let mut guard = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
            let busy = &mut *guard;
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
        let crisp = &self.deps.crisp;
        // Typing goes on first, alongside the context lookups, and before the LLM call.
        let (typing, activity, history) = tokio::join!(
            crisp.compose(session, true),
            self.deps.context.activity_for(session),
            self.history(session, burst),
        );
        if let Err(e) = typing {
            tracing::warn!(session, error = %e, "cannot show the typing indicator");
        }
        let outcome = match self.slots.acquire().await {
            Ok(_slot) => self.answer_and_send(session, burst, &activity.text, history).await,
            Err(_) => Outcome::Failed,
        };
        if let Err(e) = crisp.compose(session, false).await {
            tracing::warn!(session, error = %e, "cannot clear the typing indicator");
        }
        match outcome {
            Outcome::Answered => {
                tracing::info!(session, messages = burst.len(), linked_by = ?activity.linked_by, "reply sent")
            }
            Outcome::FallbackSent => tracing::warn!(session, "fallback message sent"),
            Outcome::Silenced => tracing::info!(session, "a human operator took over; reply dropped"),
            Outcome::Failed => {}
        }
    }

    async fn answer_and_send(
        &self,
        session: &str,
        burst: &[VisitorMessage],
        activity: &str,
        history: Vec<ChatMessage>,
    ) -> Outcome {
        let question = burst.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
        let mut request = reply_request(&self.deps.system_prompt, activity, &question);
        request.messages.splice(1..1, history);
        let (text, outcome) = match self.deps.llm.complete(&request).await {
            Ok(answer) => (answer, Outcome::Answered),
            Err(e) => {
                tracing::error!(session, error = %e, "no answer from the LLM");
                match &self.deps.fallback_message {
                    Some(fallback) => (fallback.clone(), Outcome::FallbackSent),
                    None => return Outcome::Failed,
                }
            }
        };
        if self.taken_over.contains_key(session) {
            return Outcome::Silenced;
        }
        let own_key = (session.to_owned(), text.clone());
        self.own_texts.insert(own_key.clone(), ());
        match self.deps.crisp.send_text(session, &text).await {
            Ok(fingerprint) => {
                if let Some(f) = fingerprint {
                    self.own_fingerprints.insert(f, ());
                }
                self.history.invalidate(session).await;
                outcome
            }
            Err(e) => {
                self.own_texts.invalidate(&own_key);
                tracing::error!(session, error = %e, "Crisp refused the reply");
                Outcome::Failed
            }
        }
    }

    /// Earlier turns of the conversation (not the burst being answered), oldest first.
    async fn history(&self, session: &str, burst: &[VisitorMessage]) -> Vec<ChatMessage> {
        if self.deps.history_turns == 0 {
            return Vec::new();
        }
        let crisp = self.deps.crisp.clone();
        let key = session.to_owned();
        let messages =
            self.history.try_get_with(key.clone(), async move { crisp.messages(&key).await.map(Arc::new) }).await;
        let messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(session, error = %e, "cannot read the conversation history; answering without it");
                return Vec::new();
            }
        };
        let current: Vec<u64> = burst.iter().filter_map(|m| m.fingerprint).collect();
        let mut turns: Vec<ChatMessage> = messages
            .iter()
            .filter(|m| m.get("type").and_then(Value::as_str) == Some("text"))
            .filter(|m| !m.get("fingerprint").and_then(Value::as_u64).is_some_and(|f| current.contains(&f)))
            .filter_map(|m| {
                let role = match m.get("from").and_then(Value::as_str)? {
                    "user" => Role::User,
                    "operator" => Role::Assistant,
                    _ => return None,
                };
                let text: String = m.get("content").and_then(Value::as_str)?.chars().take(HISTORY_TURN_CHARS).collect();
                Some(ChatMessage::new(role, text))
            })
            .collect();
        let excess = turns.len().saturating_sub(self.deps.history_turns);
        turns.drain(..excess);
        turns
    }
}

enum Outcome {
    Answered,
    FallbackSent,
    Silenced,
    Failed,
}

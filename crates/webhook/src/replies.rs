//! Background replies with delivery guarantees:
//! - a redelivered hook (same conversation and fingerprint) is answered once;
//! - one conversation is answered one burst at a time: messages that arrive while an answer is
//!   being written are answered together by the next one;
//! - the typing indicator goes on before any LLM call and always off at the end;
//! - a human operator writing in a conversation silences the bot there for a while;
//! - when the LLM fails for good the visitor still gets a short fallback message;
//! - on shutdown, every accepted message is answered within the grace period.

use crate::context::{Activity, ContextSource};
use crate::traces::{ReplyTrace, TraceWriter};
use agent_core::context::BoxFuture;
use agent_core::coordination::{CoordError, CoordTimings, Coordinator, MemoryCoordinator, OwnMark, QueueLimits};
use agent_core::crisp::{CrispClient, OperatorMessage, VisitorMessage, id_for_log};
use agent_core::llm::{ChatMessage, ChatRequest, LlmClient, Role};
use agent_core::prompt::{reply_request, visitor_words};
use agent_core::telemetry;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Messages waiting across all conversations before new ones are refused (503, Crisp retries).
const MAX_QUEUED: usize = 10_000;
/// Characters kept of each earlier turn in the prompt.
const HISTORY_TURN_CHARS: usize = 1000;
/// How often a replica renews its hold on a conversation while writing a reply.
const RENEW_HOLD_EVERY: Duration = Duration::from_secs(20);

pub struct ReplyDeps {
    pub llm: LlmClient,
    pub crisp: CrispClient,
    pub context: ContextSource,
    pub system_prompt: String,
    pub fallback_message: Option<String>,
    pub history_turns: usize,
    /// Shared by webhook replicas (Redis); `None` for a single process.
    pub shared: Option<Arc<dyn Coordinator>>,
    pub timings: CoordTimings,
    pub traces: Option<TraceWriter>,
    /// Bounds on the visitor's words in one prompt.
    pub limits: PromptLimits,
}

/// How much of the visitor's words one prompt carries.
#[derive(Debug, Clone, Copy)]
pub struct PromptLimits {
    /// Characters of the visitor's words (one message or a coalesced burst, newest kept).
    pub max_message_chars: usize,
    /// Newest messages of a burst answered together.
    pub max_burst_messages: usize,
}

/// What became of a submitted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Taken: it will be answered, or dropped as a duplicate or during a human takeover.
    Accepted,
    /// Too much waiting already.
    Overloaded,
}

#[derive(Clone)]
pub struct Replies {
    inner: Arc<Inner>,
}

struct Inner {
    deps: ReplyDeps,
    /// This process's coordination; also the fallback while the shared one is unreachable.
    local: Arc<MemoryCoordinator>,
    slots: Semaphore,
    tracker: TaskTracker,
    /// Hook handlings not finished yet, to bound memory under a flood.
    in_progress: AtomicUsize,
    history: moka::future::Cache<String, Arc<Vec<Value>>>,
}

impl Replies {
    pub fn new(deps: ReplyDeps, max_concurrent: usize) -> Self {
        let limits = QueueLimits { max_waiting: MAX_QUEUED, max_per_conversation: deps.limits.max_burst_messages };
        let local = Arc::new(MemoryCoordinator::new(&deps.timings, limits));
        Self {
            inner: Arc::new(Inner {
                deps,
                local,
                slots: Semaphore::new(max_concurrent.max(1)),
                tracker: TaskTracker::new(),
                in_progress: AtomicUsize::new(0),
                history: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(30))
                    .build(),
            }),
        }
    }

    /// Takes a visitor message; the work (dedupe, queueing, answering) happens in the
    /// background, so the hook's 200 never waits on Redis, the LLM or Crisp.
    pub fn submit(&self, message: VisitorMessage) -> Submitted {
        if self.inner.in_progress.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            self.inner.in_progress.fetch_sub(1, Ordering::Relaxed);
            return Submitted::Overloaded;
        }
        let inner = Arc::clone(&self.inner);
        self.inner.tracker.spawn(async move {
            inner.handle(message).await;
            inner.in_progress.fetch_sub(1, Ordering::Relaxed);
        });
        Submitted::Accepted
    }

    /// An operator wrote in a conversation: unless it is the bot itself, a human took over.
    /// Waits (briefly) until the takeover is recorded, so a visitor message acknowledged after
    /// this hook already finds the bot silenced; a slow Redis finishes in the background.
    pub async fn operator_wrote(&self, message: OperatorMessage) {
        if self.inner.deps.shared.is_none() {
            // Memory only: nothing to wait for, no task needed.
            return self.inner.note_operator(message).await;
        }
        let inner = Arc::clone(&self.inner);
        let noted = self.inner.tracker.spawn(async move { inner.note_operator(message).await });
        let _ = tokio::time::timeout(Duration::from_millis(500), noted).await;
    }

    /// Stops taking work and waits up to `grace` for every accepted message to be answered.
    /// Returns whether everything finished in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.inner.tracker.close();
        tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_ok()
    }
}

impl Inner {
    /// The shared coordinator when there is one and it answers, else the local one.
    async fn ask<'a, T>(
        &'a self,
        op: impl Fn(&'a dyn Coordinator) -> BoxFuture<'a, Result<T, CoordError>>,
    ) -> (Result<T, CoordError>, &'a dyn Coordinator) {
        if let Some(shared) = &self.deps.shared {
            match op(shared.as_ref()).await {
                Err(CoordError::Unavailable(_)) => {}
                other => return (other, shared.as_ref()),
            }
        }
        (op(self.local.as_ref()).await, self.local.as_ref())
    }

    async fn handle(&self, message: VisitorMessage) {
        let session = message.session_id.clone();
        if let Some(fingerprint) = message.fingerprint
            && let (Ok(false), _) = self.ask(|c| c.first_delivery(&session, fingerprint)).await
        {
            return tracing::info!(session = id_for_log(&session), "redelivered message ignored");
        }
        if self.human_has(&session).await {
            return tracing::info!(
                session = id_for_log(&session),
                "a human operator has this conversation; bot stays silent"
            );
        }
        let (queued, coordinator) = self.ask(|c| c.enqueue(&message)).await;
        match queued {
            Ok(true) => self.answer_conversation(coordinator, &session).await,
            Ok(false) => tracing::debug!(session = id_for_log(&session), "queued behind the reply being written"),
            Err(e) => {
                tracing::error!(session = id_for_log(&session), error = %e, "message dropped");
                if let Some(fingerprint) = message.fingerprint {
                    let _ = self.ask(|c| c.forget_delivery(&session, fingerprint)).await;
                }
            }
        }
    }

    async fn human_has(&self, session: &str) -> bool {
        let (shared, _) = self.ask(|c| c.human_has(session)).await;
        shared.unwrap_or(false) || self.local.human_has(session).await.unwrap_or(false)
    }

    async fn note_operator(&self, message: OperatorMessage) {
        if message.automated {
            return; // bots and automations never take a conversation over
        }
        let session = message.session_id.as_str();
        let mut marks = Vec::new();
        marks.extend(message.fingerprint.map(OwnMark::Fingerprint));
        marks.extend(message.content.clone().map(OwnMark::Text));
        for mark in &marks {
            let (shared, _) = self.ask(|c| c.is_own(session, mark)).await;
            if shared.unwrap_or(false) || self.local.is_own(session, mark).await.unwrap_or(false) {
                return;
            }
        }
        let _ = self.local.set_human_takeover(session).await;
        let _ = self.ask(|c| c.set_human_takeover(session)).await;
        tracing::info!(session = id_for_log(session), "human operator took over the conversation");
    }

    async fn remember_own(&self, session: &str, mark: OwnMark) {
        let _ = self.local.remember_own(session, &mark).await;
        let _ = self.ask(|c| c.remember_own(session, &mark)).await;
    }

    /// Answers a held conversation burst by burst until its queue is empty.
    async fn answer_conversation(&self, coordinator: &dyn Coordinator, session: &str) {
        loop {
            let burst = match coordinator.next_burst(session).await {
                Ok(burst) if !burst.is_empty() => burst,
                Ok(_) => return,
                Err(e) => {
                    return tracing::error!(session = id_for_log(session), error = %e, "lost the conversation queue");
                }
            };
            let renew = async {
                loop {
                    tokio::time::sleep(RENEW_HOLD_EVERY).await;
                    let _ = coordinator.keep_holding(session).await;
                }
            };
            let reply_id = format!("{:016x}", rand::random::<u64>());
            let span = tracing::info_span!("reply", session = id_for_log(session), reply_id = %reply_id);
            tokio::select! {
                () = self.reply(session, &reply_id, &burst).instrument(span) => {}
                () = renew => {}
            }
        }
    }

    async fn reply(&self, session: &str, reply_id: &str, burst: &[VisitorMessage]) {
        let crisp = &self.deps.crisp;
        // Typing goes on first, alongside the context lookups, and before the LLM call.
        // The slot bounds all the work of a reply (lookups included), not only the LLM call.
        let Ok(_slot) = self.slots.acquire().await else { return };
        let (typing, activity, history) = tokio::join!(
            crisp.compose(session, true),
            self.deps.context.activity_for(session),
            self.history(session, burst),
        );
        if let Err(e) = typing {
            tracing::warn!(session = id_for_log(session), error = %e, "cannot show the typing indicator");
        }
        let outcome = self.answer_and_send(session, reply_id, burst, &activity, history).await;
        if let Err(e) = crisp.compose(session, false).await {
            tracing::warn!(session = id_for_log(session), error = %e, "cannot clear the typing indicator");
        }
        match outcome {
            Outcome::Answered => {
                metrics::counter!(telemetry::REPLIES_SENT).increment(1);
                tracing::info!(messages = burst.len(), linked_by = ?activity.linked_by, "reply sent")
            }
            Outcome::FallbackSent => {
                metrics::counter!(telemetry::FALLBACKS_SENT).increment(1);
                tracing::warn!("fallback message sent")
            }
            Outcome::Silenced => tracing::info!("a human operator took over; reply dropped"),
            Outcome::Failed => metrics::counter!(telemetry::REPLIES_FAILED).increment(1),
        }
    }

    async fn answer_and_send(
        &self,
        session: &str,
        reply_id: &str,
        burst: &[VisitorMessage],
        activity: &Activity,
        history: Vec<ChatMessage>,
    ) -> Outcome {
        let limits = self.deps.limits;
        let question = visitor_words(
            burst.iter().map(|m| m.content.as_str()),
            limits.max_burst_messages,
            limits.max_message_chars,
        );
        let mut request = reply_request(&self.deps.system_prompt, &activity.text, &question);
        request.messages.splice(1..1, history);
        let (outcome, answer) = self.answer_and_send_request(session, &request).await;
        if let Some(traces) = &self.deps.traces {
            traces.write(&ReplyTrace {
                reply_id,
                crisp_session: session,
                at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                linked_by: format!("{:?}", activity.linked_by),
                autoplay_session: activity.autoplay_session.as_deref(),
                activity: &activity.text,
                model: self.deps.llm.model(),
                request: serde_json::json!({
                    "messages": request.messages,
                    "temperature": request.temperature,
                    "max_tokens": request.max_tokens,
                }),
                answer: answer.as_deref(),
                outcome: outcome.name(),
            });
        }
        outcome
    }

    async fn answer_and_send_request(&self, session: &str, request: &ChatRequest) -> (Outcome, Option<String>) {
        let (text, outcome) = match self.deps.llm.complete(request).await {
            Ok(answer) => (answer, Outcome::Answered),
            Err(e) => {
                tracing::error!(error = %e, "no answer from the LLM");
                match &self.deps.fallback_message {
                    Some(fallback) => (fallback.clone(), Outcome::FallbackSent),
                    None => return (Outcome::Failed, None),
                }
            }
        };
        if self.human_has(session).await {
            return (Outcome::Silenced, Some(text));
        }
        self.remember_own(session, OwnMark::Text(text.clone())).await;
        match self.deps.crisp.send_text(session, &text).await {
            Ok(fingerprint) => {
                if let Some(f) = fingerprint {
                    self.remember_own(session, OwnMark::Fingerprint(f)).await;
                }
                self.history.invalidate(session).await;
                (outcome, Some(text))
            }
            Err(e) => {
                tracing::error!(error = %e, "Crisp refused the reply");
                (Outcome::Failed, Some(text))
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
                tracing::warn!(session = id_for_log(session), error = %e, "cannot read the conversation history; answering without it");
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

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::FallbackSent => "fallback_sent",
            Outcome::Silenced => "silenced_by_human_takeover",
            Outcome::Failed => "failed",
        }
    }
}

//! Background replies around the inbox. A visitor message is recorded durably before its hook's
//! `200` ([`Replies::submit`]); from then on it ends only as
//! - **answered** (Crisp accepted the reply, or the fallback message),
//! - a **duplicate** (a redelivery of a message already recorded),
//! - **handed over** to a human (the visitor asked for a person, or the model cannot help),
//! - **silenced** by a human operator who took the conversation over,
//! - **already answered** (a resumed message that an operator message already follows),
//! - or **expired**, older than `REPLY_MAX_AGE_SECS` when its turn comes,
//!
//! each with a log line and `messages_settled_total{outcome}`. Anything else (the LLM down with no
//! fallback, Crisp refusing, Redis unable to say who has the floor) keeps it recorded and
//! retried with backoff. One conversation is answered one burst at a time, in order (this
//! module: holds, bursts, backoff); a reply to a burst is the named steps of
//! [`Pipeline::reply`], each a type of its own in a file of its own:
//!
//! | step | type | what it knows |
//! |---|---|---|
//! | floor | [`FloorStep`] | who has the floor; the posting locks |
//! | context | [`ContextStep`] | the visitor's activity, the conversation's earlier turns, an offer answered |
//! | knowledge | [`KnowledgeStep`] | the help center |
//! | redaction | [`RedactionStep`] | the redactor, the conversation's placeholders |
//! | prompt | [`PromptStep`] | the system prompt, the bounds on the visitor's words |
//! | LLM with tools | [`LlmStep`] | the LLM, whether it takes tools, the fallback |
//! | post | [`PostStep`] | the Crisp calls of a post, the bot's own marks |
//! | hand-off | [`HandOffStep`] | the hand-off's words, the note, assignment |
//! | outcome | [`OutcomeStep`] | what became of the bot's answers |
//! | trace | [`TraceStep`] | the reply traces (`TRACE_DIR`) |
//! | mark done | [`MarkDoneStep`] | the inbox's done marks, `messages_settled_total` |
//!
//! Exactly one visible reply: every post carries a fingerprint derived from the newest message
//! it answers ([`message_fingerprint`]), so a retry, a restart or another replica posts the
//! same one; the Crisp client reads the conversation before repeating a post that may have been
//! stored, and a resumed burst first settles the messages whose reply is already there.

mod ask_llm;
mod context;
mod floor;
mod handoff;
mod mark_done;
mod outcome;
mod pipeline;
mod post;
mod prompt;
mod redaction;
mod search;
mod trace;

pub use ask_llm::LlmStep;
pub use context::{ContextStep, Conversations};
pub use floor::FloorStep;
pub use handoff::{HandOffStep, HandoffSettings};
pub use mark_done::MarkDoneStep;
pub use outcome::OutcomeStep;
pub use pipeline::Pipeline;
pub use post::PostStep;
pub use prompt::{PromptLimits, PromptStep};
pub use redaction::RedactionStep;
pub use search::KnowledgeStep;
pub use trace::TraceStep;

use crisp::{
    ConversationId, Fingerprint, OperatorMessage, PostKind, SessionData, VisitorMessage, id_for_log,
    message_fingerprint,
};
use delivery::coordination::{Accepted, CoordError, Coordination, Hold, Origin};
use plumbing::retry::Backoff;
use plumbing::telemetry::Settled;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How often conversations nobody holds are looked for (a replica died holding them).
const RESUME_EVERY: Duration = Duration::from_secs(5);
/// Backoff of a burst that could not be answered: doubles from 2 s up to 60 s.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The hook's answer for a visitor message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Recorded: it will be answered (or settled as described above).
    Accepted,
    /// A redelivery of a recorded message.
    Duplicate,
    /// Too many messages waiting: `503`, Crisp retries.
    Overloaded,
    /// It could not be recorded: `503`, Crisp retries.
    NotRecorded,
}

/// A reply attempt's result: settled, kept recorded for another try, or given up because
/// another replica holds the conversation now (it answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Settled(Settled),
    Retry,
    Lost,
}

impl Attempt {
    /// The outcome a trace records.
    fn label(self) -> &'static str {
        match self {
            Attempt::Settled(how) => how.as_str(),
            Attempt::Retry => "failed",
            Attempt::Lost => "hold_lost",
        }
    }
}

/// The burst being answered: the conversation, this process's hold on it, and what its posts
/// are derived from.
struct Turn<'a> {
    hold: &'a Hold,
    session: &'a ConversationId,
    /// The id of the newest message answered: the visible reply's and the note's fingerprints
    /// derive from it.
    answers: String,
    /// The proactive offer the visitor is answering, if any (for outcomes).
    trigger: Option<proactive::Trigger>,
}

impl Turn<'_> {
    fn fingerprint(&self, kind: PostKind) -> Fingerprint {
        reply_fingerprint(kind, self.session, &self.answers)
    }
}

/// The fingerprint of the bot's post of `kind` answering the message with entry id `answers`.
/// The visible reply (an answer, the fallback or the hand-off message) is one fingerprint: the
/// visitor sees one of them.
fn reply_fingerprint(kind: PostKind, session: &ConversationId, answers: &str) -> Fingerprint {
    let kind = if kind == PostKind::Note { "note" } else { "reply" };
    message_fingerprint(&[kind, session.as_str(), answers])
}

/// What a reply sent, for its trace.
struct Sent {
    attempt: Attempt,
    /// The model's own words (placeholders kept), or the fallback or hand-off message.
    text: Option<String>,
    handoff: Option<answer::handoff::Reason>,
    note: Option<String>,
}

impl Sent {
    fn only(attempt: Attempt, text: Option<String>) -> Self {
        Sent { attempt, text, handoff: None, note: None }
    }
}

struct Holder {
    hold: Hold,
    /// Look again before letting go: a message was accepted into the conversation while its
    /// holder was finishing.
    look_again: bool,
    /// Messages of the burst being answered.
    in_flight: usize,
}

#[derive(Clone)]
pub struct Replies {
    inner: Arc<Inner>,
}

struct Inner {
    coordination: Arc<Coordination>,
    pipeline: Pipeline,
    tracker: TaskTracker,
    /// Conversations this process is answering.
    holders: Mutex<HashMap<(Origin, ConversationId), Holder>>,
}

impl Replies {
    /// Answers the messages `coordination` records with `pipeline`.
    pub fn new(coordination: Arc<Coordination>, pipeline: Pipeline) -> Self {
        Self {
            inner: Arc::new(Inner {
                coordination,
                pipeline,
                tracker: TaskTracker::new(),
                holders: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Answers what was recorded and not answered (the journal after a restart, Redis
    /// conversations whose replica died), now and every few seconds, until shutdown.
    pub fn resume_recorded(&self) -> tokio::task::JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            loop {
                for hold in inner.coordination.take_over_orphans().await {
                    tracing::info!(session = id_for_log(hold.session.as_str()), "answering recorded messages");
                    Inner::spawn_holder(&inner, hold);
                }
                tokio::time::sleep(RESUME_EVERY).await;
            }
        })
    }

    /// Records a visitor message durably; the answer is written in the background. The
    /// recording runs to its end in a task of its own whatever becomes of the caller (a client
    /// that hangs up, the request timeout): a message marked seen is always recorded and
    /// answered, or unmarked, and its place in the queue is never leaked.
    pub async fn submit(&self, message: VisitorMessage) -> Submitted {
        let inner = Arc::clone(&self.inner);
        match tokio::spawn(async move { inner.submit(message).await }).await {
            Ok(submitted) => submitted,
            Err(e) => {
                tracing::error!(error = %e, "recording the message failed");
                Submitted::NotRecorded
            }
        }
    }

    /// An operator wrote in a conversation: unless it is the bot itself, a human took over.
    /// Returns once the takeover is recorded, so a visitor message acknowledged after this hook
    /// already finds the bot silenced; an error (Redis cannot record it) asks for a redelivery.
    pub async fn operator_wrote(&self, message: OperatorMessage) -> Result<(), CoordError> {
        let pipeline = &self.inner.pipeline;
        let session = message.session_id.clone();
        if pipeline.floor.operator_wrote(message).await? {
            pipeline.outcome.handed_off(&session, "operator").await;
        }
        Ok(())
    }

    /// An operator resolved the conversation (`session:set_state`): the bot may speak there
    /// again, after a hand-off or a human takeover.
    pub async fn resolved(&self, session: &ConversationId) -> Result<(), CoordError> {
        self.inner.pipeline.floor.resolved(session).await
    }

    /// The widget set session data (`session:set_data`): it may link the conversation to an
    /// Autoplay session before the visitor writes.
    pub async fn session_data(&self, session: &ConversationId, data: &SessionData) {
        self.inner.pipeline.context.session_data(session, data).await;
    }

    /// Stops taking work and waits up to `grace` for the replies being written. Whatever is
    /// not answered by then stays recorded (answered after a restart, or by another replica:
    /// this process lets go of its conversations). Returns how many messages are left: this
    /// process's recorded ones, and on Redis those of the bursts it was answering.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.inner.tracker.close();
        let finished = tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_ok();
        let coordination = &self.inner.coordination;
        let mut left_shared = 0;
        if !finished {
            let held: Vec<(Hold, usize)> =
                self.inner.holders().values().map(|holder| (holder.hold.clone(), holder.in_flight)).collect();
            for (hold, in_flight) in held {
                if hold.origin == Origin::Shared {
                    left_shared += in_flight;
                    coordination.release(&hold).await;
                }
            }
        }
        coordination.sync().await;
        coordination.pending_local() + left_shared
    }
}

impl Inner {
    async fn submit(self: Arc<Self>, message: VisitorMessage) -> Submitted {
        let session = message.session_id.clone();
        match self.coordination.accept(&message).await {
            Ok(Accepted::Holds(hold)) => {
                self.pipeline.outcome.visitor_wrote(&message).await;
                Inner::spawn_holder(&self, hold);
                Submitted::Accepted
            }
            Ok(Accepted::Queued) => {
                self.pipeline.outcome.visitor_wrote(&message).await;
                Submitted::Accepted
            }
            Ok(Accepted::Duplicate) => {
                self.pipeline.mark_done.duplicate();
                tracing::info!(session = id_for_log(session.as_str()), "redelivered message ignored");
                Submitted::Duplicate
            }
            Err(CoordError::Overloaded) => Submitted::Overloaded,
            Err(e) => {
                tracing::error!(session = id_for_log(session.as_str()), error = %e, "cannot record the message");
                Submitted::NotRecorded
            }
        }
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<(Origin, ConversationId), Holder>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts answering a conversation this process now holds, unless it already is.
    fn spawn_holder(this: &Arc<Self>, hold: Hold) {
        {
            let mut holders = this.holders();
            let key = (hold.origin, hold.session.clone());
            if let Some(holder) = holders.get_mut(&key) {
                holder.look_again = true;
                holder.hold = hold;
                return;
            }
            holders.insert(key, Holder { hold: hold.clone(), look_again: false, in_flight: 0 });
        }
        let inner = Arc::clone(this);
        this.tracker.spawn(async move { inner.answer_conversation(hold).await });
    }

    /// Answers a held conversation burst by burst until nothing is recorded for it, or until
    /// its hold is lost to another replica.
    async fn answer_conversation(&self, hold: Hold) {
        let coordination = &self.coordination;
        let session = hold.session.clone();
        let key = (hold.origin, session.clone());
        let mut hold = hold;
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            // The orphan sweep may have taken this conversation's hold again meanwhile (it
            // lapsed while Redis was away): the newest token is the one to use.
            if let Some(holder) = self.holders().get(&key) {
                hold = holder.hold.clone();
            }
            let burst = match coordination.next_burst(&hold).await {
                Ok(burst) if !burst.entries.is_empty() => {
                    if let Some(holder) = self.holders().get_mut(&key) {
                        holder.in_flight = burst.entries.len();
                    }
                    burst
                }
                Ok(_) => {
                    let mut holders = self.holders();
                    if let Some(holder) = holders.get_mut(&key)
                        && holder.look_again
                    {
                        holder.look_again = false;
                        continue;
                    }
                    holders.remove(&key);
                    return;
                }
                Err(CoordError::HoldLost) => {
                    tracing::warn!(
                        session = id_for_log(session.as_str()),
                        "another replica holds the conversation now"
                    );
                    self.holders().remove(&key);
                    return;
                }
                Err(e) => {
                    tracing::warn!(session = id_for_log(session.as_str()), error = %e, "cannot read the conversation's queue; retrying");
                    if self.renewing(&hold, tokio::time::sleep(backoff.next_delay())).await.is_none() {
                        self.holders().remove(&key);
                        return;
                    }
                    continue;
                }
            };
            let reply_id = format!("{:016x}", rand::random::<u64>());
            let span = tracing::info_span!("reply", session = id_for_log(session.as_str()), reply_id = %reply_id);
            let (attempt, already) = self
                .renewing(&hold, self.pipeline.reply(&hold, &burst, &reply_id).instrument(span.clone()))
                .await
                .unwrap_or((Attempt::Lost, 0));
            self.pipeline.mark_done.mark(&hold, &burst, attempt, already).instrument(span.clone()).await;
            match attempt {
                Attempt::Settled(_) => backoff.reset(),
                Attempt::Lost => {
                    self.holders().remove(&key);
                    return;
                }
                Attempt::Retry => {
                    let wait = backoff.next_delay();
                    tracing::warn!(parent: &span, retry_in = ?wait, "reply not delivered; the messages stay recorded and are retried");
                    // Still held while waiting: no other replica answers in between.
                    if self.renewing(&hold, tokio::time::sleep(wait)).await.is_none() {
                        self.holders().remove(&key);
                        return;
                    }
                }
            }
        }
    }

    /// Runs `work` while renewing the hold at a third of the lease, whatever the lease: the
    /// hold never lapses while this process is alive and Redis answers. `None`: the hold was
    /// lost to another replica before `work` ended (it is dropped then).
    async fn renewing<T>(&self, hold: &Hold, work: impl Future<Output = T>) -> Option<T> {
        let coordination = &self.coordination;
        let renew_every = (coordination.lease() / 3).max(Duration::from_millis(100));
        let renew = async {
            loop {
                tokio::time::sleep(renew_every).await;
                if let Ok(false) = coordination.keep_holding(hold).await {
                    return;
                }
            }
        };
        tokio::select! {
            done = work => Some(done),
            () = renew => None,
        }
    }
}

#[cfg(test)]
mod test_support;

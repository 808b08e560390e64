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
//! retried with backoff. One conversation is answered one burst at a time, in order; a reply is
//! the steps of `Inner::reply`.
//!
//! Exactly one visible reply: every post carries a fingerprint derived from the newest message
//! it answers ([`message_fingerprint`]), so a retry, a restart or another replica posts the
//! same one; the Crisp client reads the conversation before repeating a post that may have been
//! stored, and a resumed burst first settles the messages whose reply is already there.

use crate::context::{Activity, ContextSource, LinkedBy};
use crate::knowledge::KnowledgeBase;
use crate::outcomes::{Outcomes, is_short_yes};
use crate::placeholders::PlaceholderBook;
use crate::traces::{ReplyTrace, TraceWriter};
use activity::AutoplaySessionId;
use answer::handoff;
use answer::prompt::{Passages, reply_request_with, visitor_words};
use crisp::{
    ConversationId, ConversationMessage, CrispClient, CrispError, Fingerprint, OperatorMessage, Post, PostKind,
    SessionData, VisitorMessage, id_for_log, message_fingerprint,
};
use delivery::coordination::{Accepted, Burst, CoordError, Coordination, Hold, Origin, OwnMark};
use delivery::inbox::InboxEntry;
use llm::{ChatMessage, ChatRequest, Completion, LlmClient, LlmError, Role};
use plumbing::retry::Backoff;
use plumbing::telemetry::{self, Metrics, Settled};
use proactive::book::{LinkKey, OfferBook};
use proactive::offer::reached_out_line;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Characters kept of each earlier turn in the prompt.
const HISTORY_TURN_CHARS: usize = 1000;
/// After the LLM server refused tools, how long before they are tried again.
const TOOLS_REPROBE_AFTER: Duration = Duration::from_secs(600);
/// Posting locks (conversations share them by hash).
const POSTING_LOCKS: usize = 64;
/// How long an operator hook waits for a bot post already under way in its conversation.
const POSTING_WAIT: Duration = Duration::from_secs(2);
/// How often conversations nobody holds are looked for (a replica died holding them).
const RESUME_EVERY: Duration = Duration::from_secs(5);
/// Backoff of a burst that could not be answered: doubles from 2 s up to 60 s.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

pub struct ReplyDeps {
    pub llm: LlmClient,
    pub crisp: CrispClient,
    pub context: ContextSource,
    pub system_prompt: String,
    pub fallback_message: Option<String>,
    pub history_turns: usize,
    pub coordination: Arc<Coordination>,
    /// Proactive offers' records, when PROACTIVE_TRIGGERS is set: links from session data,
    /// engagement with an offer, hand-offs (no offers after one).
    pub proactive: Option<Arc<OfferBook>>,
    pub traces: Option<TraceWriter>,
    /// Bounds on the visitor's words in one prompt.
    pub limits: PromptLimits,
    pub handoff: HandoffSettings,
    /// A message older than this when its turn comes is settled unanswered.
    pub max_age: Duration,
    /// Replaces personal data and secrets by placeholders in everything the LLM is sent.
    pub redactor: Arc<privacy::Redactor>,
    /// Each conversation's placeholders, so the answer gets its values back.
    pub placeholders: PlaceholderBook,
    /// The product's help center (`KNOWLEDGE_*`), when configured.
    pub knowledge: Option<Arc<KnowledgeBase>>,
    /// What became of the bot's answers: driven by messages, answers and hand-offs.
    pub outcomes: Arc<Outcomes>,
    /// The webhook's registry: replies, hand-offs, settled messages, redactions.
    pub metrics: Metrics,
}

/// The redaction step of one reply: every text bound for the LLM passes [`Redaction::apply`]
/// with the conversation's placeholders; the model's answer gets its values back with
/// [`Redaction::restore`] (cards and secrets stay masked).
struct Redaction<'a> {
    redactor: &'a privacy::Redactor,
    map: privacy::Placeholders,
    counts: privacy::Counts,
}

impl Redaction<'_> {
    fn apply(&mut self, text: &str) -> String {
        let redacted = self.redactor.redact_counted(text, &mut self.map);
        self.counts.merge(&redacted.counts);
        redacted.text.into_owned()
    }

    fn restore(&self, answer: &str) -> String {
        self.map.restore(answer)
    }

    /// Counts what was found, by kind (`redactions_total{kind}`).
    fn count(&self, metrics: &Metrics) {
        for (kind, n) in self.counts.iter() {
            if n > 0 {
                metrics.counter_with(telemetry::REDACTIONS, &[("kind", kind.label())]).increment(n);
            }
        }
    }
}

/// How much of the visitor's words one prompt carries.
#[derive(Debug, Clone, Copy)]
pub struct PromptLimits {
    /// Characters of the visitor's words (one message or a coalesced burst, newest kept).
    pub max_message_chars: usize,
    /// Newest messages of a burst put in the prompt; the burst's reply settles them all.
    pub max_burst_messages: usize,
}

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
enum Attempt {
    Settled(Settled),
    Retry,
    Lost,
}

/// The burst being answered: the conversation, this process's hold on it, and what its posts
/// are derived from.
struct Turn<'a> {
    hold: &'a Hold,
    session: &'a ConversationId,
    /// The id of the newest message answered: the visible reply's and the note's fingerprints
    /// derive from it.
    answers: String,
    /// The trouble the visitor was in (the proactive offer they are answering), for outcomes.
    trouble: ::outcomes::Trouble,
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

/// Whether the bot may post now: nobody else has the floor and the hold is still ours.
enum MayPost {
    Yes,
    Silenced,
    Lost,
    Unknown,
}

/// What the model decided.
enum Decision {
    Answer(String, Settled),
    HandOff(handoff::Decision),
}

/// What a reply sent, for its trace.
struct Sent {
    attempt: Attempt,
    text: Option<String>,
    handoff: Option<handoff::Reason>,
    note: Option<String>,
}

impl Sent {
    fn retry(text: Option<String>) -> Self {
        Self::only(Attempt::Retry, text)
    }

    fn only(attempt: Attempt, text: Option<String>) -> Self {
        Sent { attempt, text, handoff: None, note: None }
    }
}

/// The LLM step's memory of a tools refusal: after the server refused a request with tools,
/// plain requests until [`TOOLS_REPROBE_AFTER`] has passed, then tools are tried again (the
/// server or the model may have changed). Never off for good.
#[derive(Default)]
struct ToolsProbe {
    refused_at: Mutex<Option<Instant>>,
}

impl ToolsProbe {
    fn last_refusal(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.refused_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request at `now` carries tools.
    fn worth_trying(&self, now: Instant) -> bool {
        self.last_refusal().is_none_or(|at| now.saturating_duration_since(at) >= TOOLS_REPROBE_AFTER)
    }

    /// Tools were refused at `now` (a plain request then worked); true the first time since
    /// they last worked (worth a log line).
    fn refused(&self, now: Instant) -> bool {
        self.last_refusal().replace(now).is_none()
    }

    /// A request with tools worked; true when they had been refused before.
    fn accepted(&self) -> bool {
        self.last_refusal().take().is_some()
    }
}

/// What the hand-off says and does, from settings.
#[derive(Debug, Clone)]
pub struct HandoffSettings {
    pub message: String,
    pub offline_message: String,
    pub assign_user_id: Option<String>,
}

fn linked_by_words(linked_by: LinkedBy) -> &'static str {
    match linked_by {
        LinkedBy::SessionData => "the Autoplay session id the widget set (autoplay_session_id)",
        LinkedBy::SignedUser => "the signed user id the widget set (autoplay_user_id)",
        LinkedBy::Conversation => "an Autoplay batch naming this conversation",
        LinkedBy::SharedFile => "the shared activity file (CONTEXT_SCOPE=shared)",
        LinkedBy::Nothing => "nothing",
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
    deps: ReplyDeps,
    slots: Semaphore,
    tracker: TaskTracker,
    /// Conversations this process is answering.
    holders: Mutex<HashMap<(Origin, ConversationId), Holder>>,
    history: moka::future::Cache<ConversationId, Arc<Vec<ConversationMessage>>>,
    /// Whether requests carry the hand-off tool (the LLM server may refuse tools).
    tools: ToolsProbe,
    /// Held (shared) by a post from its last "may the bot speak?" check to Crisp's answer;
    /// taken (exclusive) by an operator's takeover.
    posting: Box<[tokio::sync::RwLock<()>]>,
    availability: moka::future::Cache<(), bool>,
}

impl Replies {
    pub fn new(deps: ReplyDeps, max_concurrent: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                deps,
                slots: Semaphore::new(max_concurrent.max(1)),
                tracker: TaskTracker::new(),
                holders: Mutex::new(HashMap::new()),
                history: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(30))
                    .build(),
                tools: ToolsProbe::default(),
                posting: (0..POSTING_LOCKS).map(|_| tokio::sync::RwLock::new(())).collect(),
                availability: moka::future::Cache::builder().time_to_live(Duration::from_secs(30)).build(),
            }),
        }
    }

    /// Answers what was recorded and not answered (the journal after a restart, Redis
    /// conversations whose replica died), now and every few seconds, until shutdown.
    pub fn resume_recorded(&self) -> tokio::task::JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            loop {
                for hold in inner.deps.coordination.take_over_orphans().await {
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
        self.inner.note_operator(message).await
    }

    /// An operator resolved the conversation (`session:set_state`): the bot may speak there
    /// again, after a hand-off or a human takeover.
    pub async fn resolved(&self, session: &ConversationId) -> Result<(), CoordError> {
        self.inner.resolved(session).await
    }
}

impl Inner {
    async fn submit(self: Arc<Self>, message: VisitorMessage) -> Submitted {
        let session = message.session_id.clone();
        match self.deps.coordination.accept(&message).await {
            Ok(Accepted::Holds(hold)) => {
                self.visitor_wrote(&message).await;
                Inner::spawn_holder(&self, hold);
                Submitted::Accepted
            }
            Ok(Accepted::Queued) => {
                self.visitor_wrote(&message).await;
                Submitted::Accepted
            }
            Ok(Accepted::Duplicate) => {
                self.deps.metrics.settled(Settled::Duplicate, 1);
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
}

impl Inner {
    /// A visitor message was accepted: its outcome event (a new question, a confirmation, a
    /// reopening) and offer learning's (an offer answered).
    async fn visitor_wrote(&self, message: &VisitorMessage) {
        let now = proactive::now_secs();
        self.deps.outcomes.visitor_wrote(&message.session_id, now, &message.content).await;
    }
}

impl Replies {
    /// The widget set session data (`session:set_data`): it may link the conversation to an
    /// Autoplay session before the visitor writes.
    pub async fn session_data(&self, session: &ConversationId, data: &SessionData) {
        self.inner.session_data(session, data).await;
    }

    /// Stops taking work and waits up to `grace` for the replies being written. Whatever is
    /// not answered by then stays recorded (answered after a restart, or by another replica:
    /// this process lets go of its conversations). Returns how many messages are left: this
    /// process's recorded ones, and on Redis those of the bursts it was answering.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.inner.tracker.close();
        let finished = tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_ok();
        let coordination = &self.inner.deps.coordination;
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
        let coordination = &self.deps.coordination;
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
            let (attempt, settled) = self
                .renewing(&hold, self.reply(&hold, &burst, &reply_id).instrument(span.clone()))
                .await
                .unwrap_or((Attempt::Lost, 0));
            match attempt {
                Attempt::Settled(how) => {
                    backoff.reset();
                    let replied = burst.entries.len() - settled;
                    if let Err(e) = coordination.finish(&hold, &burst, burst.entries.len()).await {
                        tracing::warn!(parent: &span, error = %e, "cannot mark the burst done; it will be checked against the conversation when resumed");
                    }
                    if settled > 0 {
                        self.deps.metrics.settled(Settled::AlreadyAnswered, settled);
                    }
                    self.deps.metrics.settled(how, replied);
                    tracing::info!(parent: &span, messages = replied, already_answered = settled, outcome = how.as_str(), "messages settled");
                }
                Attempt::Lost => {
                    tracing::warn!(parent: &span, "the hold lapsed; another replica answers these messages");
                    if settled > 0 {
                        let _ = coordination.finish(&hold, &burst, settled).await;
                    }
                    self.holders().remove(&key);
                    return;
                }
                Attempt::Retry => {
                    if settled > 0 && coordination.finish(&hold, &burst, settled).await.is_ok() {
                        self.deps.metrics.settled(Settled::AlreadyAnswered, settled);
                    }
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
        let coordination = &self.deps.coordination;
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

    /// One reply to a burst: the already-answered check (a resumed burst), expiry, takeover,
    /// context, history, prompt, LLM, the floor and the hold again, send, trace. Returns the
    /// attempt and how many of the burst's first messages were found answered already.
    async fn reply(&self, hold: &Hold, burst: &Burst, reply_id: &str) -> (Attempt, usize) {
        let session = &burst.session;
        // Resumed: a reply may already be in the conversation. Without the conversation to
        // say, nothing is sent: better late than twice.
        let (already, fresh) = if burst.resumed {
            match self.conversation_fresh(session).await {
                Ok(messages) => (answered_prefix(&messages, burst), Some(messages)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the conversation to see what was answered; retrying");
                    return (Attempt::Retry, 0);
                }
            }
        } else {
            (0, None)
        };
        let rest = &burst.entries[already..];
        let Some(newest) = rest.last() else { return (Attempt::Settled(Settled::AlreadyAnswered), already) };
        let current: Vec<&VisitorMessage> =
            rest.iter().filter(|e| e.age() <= self.deps.max_age).map(|e| &e.message).collect();
        if current.is_empty() {
            return (Attempt::Settled(Settled::Expired), already);
        }
        // Before the typing indicator and the LLM: a human has the conversation.
        match self.deps.coordination.floor(session).await {
            Ok(floor) if floor.human => {
                tracing::info!("a human operator has this conversation; bot stays silent");
                return (Attempt::Settled(Settled::Silenced), already);
            }
            Ok(_) => {}
            Err(e) => return (coordination_unknown(&self.deps.metrics, "floor", &e), already),
        }
        let mut turn = Turn { hold, session, answers: newest.id.to_string(), trouble: ::outcomes::Trouble::default() };
        // The slot bounds all the work of a reply (lookups included), not only the LLM call.
        let Ok(_slot) = self.slots.acquire().await else { return (Attempt::Retry, already) };
        let crisp = &self.deps.crisp;
        let (typing, activity, messages) =
            tokio::join!(crisp.compose(session, true), self.deps.context.activity_for(session), async {
                match fresh {
                    Some(messages) => messages,
                    None => self.conversation(session).await,
                }
            },);
        if let Err(e) = typing {
            tracing::warn!(error = %e, "cannot show the typing indicator");
        }
        let mut history = self.history_turns(&messages, rest);
        if let Some((line, trigger)) = self.answers_an_offer(session).await {
            history.insert(0, ChatMessage::new(Role::System, line));
            turn.trouble.trigger = Some(trigger);
        }
        let attempt = self.answer(&turn, reply_id, &current, &activity, history).await;
        if let Err(e) = crisp.compose(session, false).await {
            tracing::warn!(error = %e, "cannot clear the typing indicator");
        }
        match attempt {
            Attempt::Settled(Settled::Answered) => {
                self.deps.metrics.counter(telemetry::REPLIES_SENT).increment(1);
                tracing::info!(messages = current.len(), linked_by = ?activity.linked_by, "reply sent")
            }
            Attempt::Settled(Settled::FallbackSent) => {
                self.deps.metrics.counter(telemetry::FALLBACKS_SENT).increment(1);
                tracing::warn!("fallback message sent")
            }
            Attempt::Retry => self.deps.metrics.counter(telemetry::REPLIES_FAILED).increment(1),
            Attempt::Settled(_) | Attempt::Lost => {}
        }
        (attempt, already)
    }

    /// Asked right before anything is posted: a human may have written meanwhile, and the
    /// hold may have lapsed to another replica (which then answers).
    async fn may_post(&self, turn: &Turn<'_>) -> MayPost {
        let coordination = &self.deps.coordination;
        match coordination.floor(turn.session).await {
            Ok(floor) if floor.human => return MayPost::Silenced,
            Ok(_) => {}
            Err(e) => {
                coordination_unknown(&self.deps.metrics, "floor", &e);
                return MayPost::Unknown;
            }
        }
        match coordination.still_holds(turn.hold).await {
            Ok(true) => MayPost::Yes,
            Ok(false) => MayPost::Lost,
            Err(e) => {
                coordination_unknown(&self.deps.metrics, "hold", &e);
                MayPost::Unknown
            }
        }
    }

    /// Prompt, LLM (or the fallback), the takeover check, the send, the trace.
    async fn answer(
        &self,
        turn: &Turn<'_>,
        reply_id: &str,
        burst: &[&VisitorMessage],
        activity: &Activity,
        history: Vec<ChatMessage>,
    ) -> Attempt {
        let limits = self.deps.limits;
        let left_out = burst.len().saturating_sub(limits.max_burst_messages);
        if left_out > 0 {
            self.deps.metrics.counter(telemetry::BURST_MESSAGES_LEFT_OUT).increment(left_out as u64);
        }
        let question = visitor_words(
            burst.iter().map(|m| m.content.as_str()),
            limits.max_burst_messages,
            limits.max_message_chars,
        );
        let session = turn.session;
        // The help center, searched with what the visitor is doing (their page, their last
        // actions); searched here, on this host, before anything is masked.
        let hits = match &self.deps.knowledge {
            Some(knowledge) => {
                let actions = activity.context.as_ref().map_or(&[][..], |c| c.actions.as_slice());
                knowledge.search(&crate::knowledge::query_for(&question, actions)).await
            }
            None => Vec::new(),
        };
        let passages = self
            .deps
            .knowledge
            .as_ref()
            .map(|k| (knowledge::format_passages(&hits, crate::knowledge::MAX_PASSAGE_CHARS), k.strict()));
        // Nothing personal leaves for the LLM: the visitor's words, the activity (titles,
        // URLs, summaries) and the earlier turns all pass the redactor.
        let mut redaction = Redaction {
            redactor: &self.deps.redactor,
            map: self.deps.placeholders.load(session).await,
            counts: privacy::Counts::default(),
        };
        let question = redaction.apply(&question);
        let activity_text = redaction.apply(&activity.text);
        let passages = passages.map(|(text, strict)| (redaction.apply(&text), strict));
        let history: Vec<ChatMessage> = history
            .into_iter()
            .map(|mut turn| {
                turn.content = redaction.apply(&turn.content);
                turn
            })
            .collect();
        redaction.count(&self.deps.metrics);
        self.deps.placeholders.save(session, &redaction.map).await;
        let mut request = reply_request_with(
            &self.deps.system_prompt,
            &activity_text,
            passages.as_ref().map(|(text, strict)| Passages { text, strict: *strict }),
            &question,
        );
        request.messages.splice(1..1, history);
        let used = crate::knowledge::articles_line(&hits);
        let sent = self.decide_and_send(turn, &request, &question, activity, &redaction, used.as_deref()).await;
        if let Some(traces) = &self.deps.traces {
            traces.write(&ReplyTrace {
                reply_id,
                crisp_session: session.as_str(),
                at: delivery::inbox::now_ms() / 1000,
                linked_by: format!("{:?}", activity.linked_by),
                autoplay_session: activity.autoplay_session.as_ref().map(AutoplaySessionId::as_str),
                activity: &activity_text,
                model: self.deps.llm.model(),
                request: serde_json::json!({
                    "messages": request.messages,
                    "temperature": request.temperature,
                    "max_tokens": request.max_tokens,
                }),
                answer: sent.text.as_deref(),
                outcome: match &sent.attempt {
                    Attempt::Settled(how) => how.as_str(),
                    Attempt::Retry => "failed",
                    Attempt::Lost => "hold_lost",
                },
                handoff: sent.handoff.map(handoff::Reason::name),
                note: sent.note.as_deref(),
            });
        }
        sent.attempt
    }

    /// The model's decision (an answer, or a hand-off through its tool), the takeover check,
    /// then what goes to Crisp.
    async fn decide_and_send(
        &self,
        turn: &Turn<'_>,
        request: &ChatRequest,
        words: &str,
        activity: &Activity,
        redaction: &Redaction<'_>,
        articles: Option<&str>,
    ) -> Sent {
        let decision = if is_short_yes(words) && self.after_follow_up(turn.session).await {
            // "Still stuck? I can get a person." — "yes": a request for a person.
            Ok(Completion::ToolCall { name: handoff::TOOL_NAME.into(), arguments: r#"{"reason":"asked"}"#.into() })
        } else {
            self.ask_llm(request, words).await
        };
        let decision = match decision {
            Ok(Completion::Text(text)) => Decision::Answer(text, Settled::Answered),
            Ok(Completion::ToolCall { arguments, .. }) => {
                Decision::HandOff(handoff::Decision::from_arguments(&arguments))
            }
            Err(e) => {
                tracing::error!(error = %e, "no answer from the LLM");
                match &self.deps.fallback_message {
                    Some(fallback) => Decision::Answer(fallback.clone(), Settled::FallbackSent),
                    None => return Sent::retry(None),
                }
            }
        };
        // Whether the bot may still speak (a human may have written meanwhile, or the hold
        // lapsed) is asked right before the post, in `post`.
        match decision {
            Decision::Answer(text, settled) => {
                // The visitor reads the values the placeholders stand for (cards and secrets
                // stay masked); the trace keeps the model's own words.
                let visible = redaction.restore(&text);
                if let Err(not_sent) = self.send_own_text(turn, &visible).await {
                    return Sent::only(not_sent, Some(text));
                }
                // A visitor left with the fallback: operators get the context, as on a hand-off.
                let failed = (settled == Settled::FallbackSent).then_some(handoff::Reason::Failed);
                let now = proactive::now_secs();
                match failed {
                    Some(reason) => self.deps.outcomes.handed_off(turn.session, now, reason.name()).await,
                    None => {
                        let actions = activity.context.as_ref().map(|c| c.actions.as_slice()).unwrap_or_default();
                        let trouble = turn.trouble.clone().with_activity(actions);
                        self.deps.outcomes.answered(turn.session, now, &visible, actions, trouble).await;
                    }
                }
                let note = match failed {
                    Some(reason) => Some(self.send_note(turn, reason, None, activity, articles).await),
                    None => None,
                };
                Sent { attempt: Attempt::Settled(settled), text: Some(text), handoff: failed, note }
            }
            Decision::HandOff(mut decision) => {
                decision.summary = decision.summary.map(|summary| redaction.restore(&summary));
                self.hand_off(turn, decision, activity, articles).await
            }
        }
    }

    /// The model's completion with the hand-off tool; when the server takes no tools (it refuses
    /// the request), a plain one, with explicit requests for a person caught by the phrase
    /// detector.
    async fn ask_llm(&self, request: &ChatRequest, words: &str) -> Result<Completion, LlmError> {
        if self.tools.worth_trying(Instant::now()) {
            match self.deps.llm.complete_with_tools(request).await {
                Err(LlmError::Status { status: 400 | 404 | 422, .. }) => {}
                other => {
                    if other.is_ok() && self.tools.accepted() {
                        tracing::info!("the LLM server takes tools again");
                    }
                    return other;
                }
            }
        }
        if handoff::asks_for_a_person(words) {
            return Ok(Completion::ToolCall {
                name: handoff::TOOL_NAME.into(),
                arguments: r#"{"reason":"asked"}"#.into(),
            });
        }
        let mut plain = request.clone();
        plain.tools.clear();
        let answer = self.deps.llm.complete_with_tools(&plain).await;
        if answer.is_ok() && self.tools.refused(Instant::now()) {
            tracing::warn!(
                "the LLM server refuses tools; hand-offs rely on detecting explicit requests (tools are tried again every 10 minutes)"
            );
        }
        answer
    }

    /// Hands the conversation over: the visitor is told (online or offline wording), the bot
    /// falls silent there, operators get the context note, and the conversation is marked
    /// unresolved (and assigned, when configured).
    async fn hand_off(
        &self,
        turn: &Turn<'_>,
        decision: handoff::Decision,
        activity: &Activity,
        articles: Option<&str>,
    ) -> Sent {
        let session = turn.session;
        let online = self.operators_online().await;
        let settings = &self.deps.handoff;
        let text = if online { settings.message.clone() } else { settings.offline_message.clone() };
        if let Err(not_sent) = self.send_own_text(turn, &text).await {
            return Sent::only(not_sent, Some(text));
        }
        if let Err(e) = self.deps.coordination.set_human_takeover(session).await {
            tracing::error!(error = %e, "cannot record the hand-off; the bot may answer the next message");
        }
        let now = proactive::now_secs();
        if let Some(book) = &self.deps.proactive {
            book.update(session, now, |gate| gate.handed_off = true).await;
        }
        self.deps.outcomes.handed_off(session, now, decision.reason.name()).await;
        let note = self.send_note(turn, decision.reason, decision.summary.as_deref(), activity, articles).await;
        let crisp = &self.deps.crisp;
        if let Some(operator) = &settings.assign_user_id
            && let Err(e) = crisp.assign(session, operator).await
        {
            tracing::warn!(error = %e, "cannot assign the conversation");
        }
        if let Err(e) = crisp.set_state(session, "unresolved").await {
            tracing::warn!(error = %e, "cannot mark the conversation unresolved");
        }
        tracing::info!(reason = decision.reason.name(), online, "handed over to a human");
        Sent {
            attempt: Attempt::Settled(Settled::HandedOver),
            text: Some(text),
            handoff: Some(decision.reason),
            note: Some(note),
        }
    }

    /// The context note for operators; returns its text (sent or not: a failure is logged).
    async fn send_note(
        &self,
        turn: &Turn<'_>,
        reason: handoff::Reason,
        model_summary: Option<&str>,
        activity: &Activity,
        articles: Option<&str>,
    ) -> String {
        self.deps.metrics.counter_with(telemetry::HANDOFFS, &[("reason", reason.name())]).increment(1);
        let now = proactive::now_secs();
        let linked_by = linked_by_words(activity.linked_by);
        let mut note = handoff::note(reason, model_summary, activity.context.as_ref(), linked_by, now);
        if let Some(articles) = articles {
            note.push_str("\n\n");
            note.push_str(articles);
        }
        if let Err(e) = self.post(turn, PostKind::Note, &note).await {
            tracing::warn!(error = %e, "cannot post the context note for operators");
        }
        note
    }

    /// Posts the bot's own message of `kind`, marked as the bot's first (its echo never reads
    /// as a human taking over). Whether the bot may speak is asked again right before each
    /// attempt, under the conversation's posting lock: an operator hook waits for a post that
    /// passed that check, so once it is acknowledged nothing more of the bot's arrives.
    async fn post(&self, turn: &Turn<'_>, kind: PostKind, content: &str) -> Result<(), CrispError> {
        let session = turn.session;
        let _posting = self.posting_lock(session).read().await;
        let fingerprint = turn.fingerprint(kind);
        let coordination = &self.deps.coordination;
        coordination.remember_own(session, OwnMark::Text(content.to_owned())).await;
        coordination.remember_own(session, OwnMark::Fingerprint(fingerprint)).await;
        let post = Post { kind, content, fingerprint };
        if kind == PostKind::Note {
            // Operators' eyes only: a note never talks over anyone (and follows the bot's own
            // hand-off, which gave the floor to a human).
            return self.deps.crisp.post(session, &post).await;
        }
        let still = || -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
            Box::pin(async { matches!(self.may_post(turn).await, MayPost::Yes) })
        };
        self.deps.crisp.post_while(session, &post, still).await
    }

    /// Posts the bot's visible reply; when it was not posted, what becomes of the burst: a
    /// human took over (silenced), another replica holds it (lost), or it is tried again.
    async fn send_own_text(&self, turn: &Turn<'_>, text: &str) -> Result<(), Attempt> {
        match self.post(turn, PostKind::Reply, text).await {
            Ok(()) => {
                self.history.invalidate(turn.session).await;
                Ok(())
            }
            Err(CrispError::Withdrawn) => Err(match self.may_post(turn).await {
                MayPost::Silenced => Attempt::Settled(Settled::Silenced),
                MayPost::Lost => Attempt::Lost,
                MayPost::Yes | MayPost::Unknown => Attempt::Retry,
            }),
            Err(e) => {
                tracing::error!(error = %e, "Crisp refused the reply");
                Err(Attempt::Retry)
            }
        }
    }

    /// Whether an operator is online, cached for 30 s; unknown counts as online (the visitor
    /// is told a teammate will reply, which stays true).
    async fn operators_online(&self) -> bool {
        let crisp = self.deps.crisp.clone();
        self.availability
            .get_with((), async move {
                crisp.operators_online().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read operator availability");
                    true
                })
            })
            .await
    }

    /// When the visitor writes within ten minutes of a proactive offer: the line that tells
    /// the model why the bot reached out. The first such message counts as engagement.
    async fn answers_an_offer(&self, session: &ConversationId) -> Option<(String, proactive::Trigger)> {
        let book = self.deps.proactive.as_ref()?;
        let now = proactive::now_secs();
        let (offer, first) = book.update(session, now, |gate| gate.visitor_wrote(now)).await??;
        if first {
            self.deps.metrics.counter(telemetry::PROACTIVE_ENGAGED).increment(1);
            tracing::info!(trigger = offer.trigger.as_str(), "the visitor answered a proactive offer");
        }
        Some((reached_out_line(&offer, now), offer.trigger))
    }

    /// Whether the bot's last visible message in the conversation is the current answer's
    /// follow-up ("Still stuck? I can get a person."), read afresh from Crisp.
    async fn after_follow_up(&self, session: &ConversationId) -> bool {
        let Some(fingerprint) = self.deps.outcomes.follow_up_sent(session).await else { return false };
        let Ok(messages) = self.conversation_fresh(session).await else { return false };
        messages
            .iter()
            .rev()
            .find(|m| m.from == "operator" && m.kind != "note" && m.kind != "event")
            .is_some_and(|m| m.fingerprint == Some(fingerprint))
    }

    /// The widget set session data: links for proactive offers (same trust rules as the
    /// replies' links), and the replies' cached links are read afresh.
    async fn session_data(&self, session: &ConversationId, data: &SessionData) {
        self.deps.context.forget_links(session).await;
        let Some(book) = &self.deps.proactive else { return };
        let (autoplay_session, verified_user) = self.deps.context.links_in(data);
        let now = proactive::now_secs();
        if let Some(autoplay_session) = &autoplay_session {
            book.link(LinkKey::Session(autoplay_session.as_str()), session, now).await;
        }
        if let Some(user) = &verified_user {
            book.link(LinkKey::User(user), session, now).await;
        }
        if autoplay_session.is_some() || verified_user.is_some() {
            tracing::info!(
                session = id_for_log(session.as_str()),
                by_session = autoplay_session.is_some(),
                by_signed_user = verified_user.is_some(),
                "conversation linked to its Autoplay activity"
            );
        }
    }

    /// An operator resolved the conversation: the bot answers there again.
    async fn resolved(&self, session: &ConversationId) -> Result<(), CoordError> {
        self.deps.coordination.clear_human_takeover(session).await?;
        tracing::info!(session = id_for_log(session.as_str()), "conversation resolved; the bot answers again");
        Ok(())
    }

    /// The posting lock of a conversation (one of a fixed set, by the conversation's hash).
    fn posting_lock(&self, session: &ConversationId) -> &tokio::sync::RwLock<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(session);
        &self.posting[(hash % POSTING_LOCKS as u64) as usize]
    }

    async fn note_operator(&self, message: OperatorMessage) -> Result<(), CoordError> {
        if message.automated {
            return Ok(()); // bots and automations never take a conversation over
        }
        let session = &message.session_id;
        let marks = message.fingerprint.map(OwnMark::Fingerprint).into_iter().chain(message.content.map(OwnMark::Text));
        for mark in marks {
            if self.deps.coordination.is_own(session, &mark).await {
                return Ok(());
            }
        }
        self.deps.coordination.set_human_takeover(session).await?;
        // A post that passed its last check before the takeover was recorded finishes first
        // (briefly bounded): after this hook's `200` the bot posts nothing more here.
        let _ = tokio::time::timeout(POSTING_WAIT, self.posting_lock(session).write()).await;
        tracing::info!(session = id_for_log(session.as_str()), "human operator took over the conversation");
        self.deps.outcomes.handed_off(session, proactive::now_secs(), "operator").await;
        Ok(())
    }

    /// The conversation's latest messages for the prompt, cached briefly. Empty when Crisp
    /// cannot say.
    async fn conversation(&self, session: &ConversationId) -> Arc<Vec<ConversationMessage>> {
        if self.deps.history_turns == 0 {
            return Arc::default();
        }
        self.read_conversation(session).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the conversation's messages; answering without them");
            Arc::default()
        })
    }

    /// The conversation's latest messages read afresh (a resumed burst: they say what was
    /// answered already).
    async fn conversation_fresh(
        &self,
        session: &ConversationId,
    ) -> Result<Arc<Vec<ConversationMessage>>, Arc<CrispError>> {
        self.history.invalidate(session).await;
        self.read_conversation(session).await
    }

    async fn read_conversation(
        &self,
        session: &ConversationId,
    ) -> Result<Arc<Vec<ConversationMessage>>, Arc<CrispError>> {
        let crisp = self.deps.crisp.clone();
        let key = session.clone();
        self.history.try_get_with(key.clone(), async move { crisp.messages(&key).await.map(Arc::new) }).await
    }

    /// Earlier turns of the conversation (not the messages being answered), oldest first.
    fn history_turns(&self, messages: &[ConversationMessage], answering: &[InboxEntry]) -> Vec<ChatMessage> {
        if self.deps.history_turns == 0 {
            return Vec::new();
        }
        let current: Vec<Fingerprint> = answering.iter().filter_map(|e| e.message.fingerprint).collect();
        let mut turns: Vec<ChatMessage> = messages
            .iter()
            .filter(|m| m.fingerprint.is_none_or(|f| !current.contains(&f)))
            .filter_map(|m| {
                let role = match m.from.as_str() {
                    "user" => Role::User,
                    "operator" => Role::Assistant,
                    _ => return None,
                };
                let text: String = m.text.as_deref()?.chars().take(HISTORY_TURN_CHARS).collect();
                Some(ChatMessage::new(role, text))
            })
            .collect();
        let excess = turns.len().saturating_sub(self.deps.history_turns);
        turns.drain(..excess);
        turns
    }
}

/// A Redis that cannot say who has the floor (or whether the hold is still ours): the reply
/// waits and is tried again; it is never sent on a guess.
fn coordination_unknown(metrics: &Metrics, step: &'static str, e: &CoordError) -> Attempt {
    metrics.counter_with(telemetry::COORDINATION_UNAVAILABLE, &[("step", step)]).increment(1);
    tracing::warn!(error = %e, step, "Redis cannot say whether the bot may speak; the reply waits");
    Attempt::Retry
}

/// How many of a resumed burst's first messages were answered already: up to the newest one
/// whose reply (by its derived fingerprint) is in the conversation.
fn answered_prefix(messages: &[ConversationMessage], burst: &Burst) -> usize {
    let present: std::collections::HashSet<Fingerprint> = messages.iter().filter_map(|m| m.fingerprint).collect();
    burst
        .entries
        .iter()
        .rposition(|e| present.contains(&reply_fingerprint(PostKind::Reply, &burst.session, &e.id.to_string())))
        .map_or(0, |at| at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crisp::WebsiteId;
    use delivery::inbox::InboxEntry;

    fn s() -> ConversationId {
        ConversationId::parse("s").unwrap()
    }

    fn said(from: &str, fingerprint: u64) -> ConversationMessage {
        said_fp(from, Fingerprint::from_wire(fingerprint))
    }

    fn said_fp(from: &str, fingerprint: Fingerprint) -> ConversationMessage {
        ConversationMessage {
            kind: "text".into(),
            from: from.into(),
            text: None,
            fingerprint: Some(fingerprint),
            timestamp: None,
        }
    }

    fn burst(n: u64) -> Burst {
        let entries = (0..n)
            .map(|i| {
                let message = VisitorMessage {
                    website_id: WebsiteId::parse("w").unwrap(),
                    session_id: s(),
                    content: format!("q{i}"),
                    fingerprint: Some(Fingerprint::from_wire(100 + i)),
                    timestamp: None,
                };
                InboxEntry { id: i + 1, accepted_at_ms: 0, message }
            })
            .collect();
        Burst { session: s(), entries, origin: Origin::Local, resumed: true }
    }

    fn reply_to(entry_id: u64) -> ConversationMessage {
        said_fp("operator", reply_fingerprint(PostKind::Reply, &s(), &entry_id.to_string()))
    }

    #[test]
    fn a_tools_refusal_is_probed_again_after_a_while_never_off_for_good() {
        let probe = ToolsProbe::default();
        let t0 = Instant::now();
        assert!(probe.worth_trying(t0), "tools are tried first");
        assert!(probe.refused(t0), "the first refusal is news");
        assert!(!probe.refused(t0), "a second one is not");
        assert!(!probe.worth_trying(t0 + TOOLS_REPROBE_AFTER / 2), "plain requests meanwhile");
        assert!(probe.worth_trying(t0 + TOOLS_REPROBE_AFTER), "tried again after the wait");
        assert!(probe.accepted(), "they work again: news");
        assert!(!probe.accepted());
        assert!(probe.worth_trying(t0), "no refusal on record");
    }

    #[test]
    fn a_resumed_burst_settles_up_to_the_newest_message_whose_reply_is_there() {
        let b = burst(3);
        assert_eq!(answered_prefix(&[said("user", 100)], &b), 0, "nothing answered");
        assert_eq!(answered_prefix(&[said("user", 100), reply_to(1), said("user", 101)], &b), 1);
        assert_eq!(answered_prefix(&[reply_to(2)], &b), 2, "a reply covers the messages before it");
        assert_eq!(answered_prefix(&[reply_to(3), reply_to(1)], &b), 3);
        // A reply posted after a later message arrived does not answer that message.
        assert_eq!(answered_prefix(&[said("user", 100), said("user", 101), reply_to(1)], &b), 1);
        // A human's reply or a note is not the bot's reply.
        let note = said_fp("operator", reply_fingerprint(PostKind::Note, &s(), "3"));
        assert_eq!(answered_prefix(&[said("operator", 5), note], &b), 0);
    }
}

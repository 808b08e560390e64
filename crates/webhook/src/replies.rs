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
//! fallback, Crisp refusing) keeps it recorded and retried with backoff. One conversation is
//! answered one burst at a time, in order; a reply is the steps of `Inner::reply`.

use crate::context::{Activity, ContextSource, LinkedBy};
use crate::traces::{ReplyTrace, TraceWriter};
use agent_core::coordination::{Accepted, Burst, CoordError, Coordination, Origin, OwnMark};
use agent_core::crisp::{ConversationMessage, CrispClient, OperatorMessage, SessionData, VisitorMessage, id_for_log};
use agent_core::handoff;
use agent_core::llm::{ChatMessage, ChatRequest, Completion, LlmClient, LlmError, Role};
use agent_core::proactive::book::{LinkKey, OfferBook};
use agent_core::proactive::offer::reached_out_line;
use agent_core::prompt::{reply_request, visitor_words};
use agent_core::retry::Backoff;
use agent_core::telemetry::{self, Settled};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Characters kept of each earlier turn in the prompt.
const HISTORY_TURN_CHARS: usize = 1000;
/// How often the hold on a conversation is renewed while a reply is written (a third of the
/// lease at most).
const RENEW_HOLD_EVERY: Duration = Duration::from_secs(10);
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

/// A reply attempt's result: settled, or kept recorded for another try.
enum Attempt {
    Settled(Settled),
    Retry,
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
        Sent { attempt: Attempt::Retry, text, handoff: None, note: None }
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

#[derive(Default)]
struct Holder {
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
    holders: Mutex<HashMap<(Origin, String), Holder>>,
    history: moka::future::Cache<String, Arc<Vec<ConversationMessage>>>,
    /// Whether the LLM server takes tools; false once it refused them.
    tools_supported: AtomicBool,
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
                tools_supported: AtomicBool::new(true),
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
                for (origin, session) in inner.deps.coordination.take_over_orphans().await {
                    tracing::info!(session = id_for_log(&session), "answering recorded messages");
                    Inner::spawn_holder(&inner, origin, session);
                }
                tokio::time::sleep(RESUME_EVERY).await;
            }
        })
    }

    /// Records a visitor message durably; the answer is written in the background.
    pub async fn submit(&self, message: VisitorMessage) -> Submitted {
        let session = message.session_id.clone();
        match self.inner.deps.coordination.accept(&message).await {
            Ok(Accepted::Holds(origin)) => {
                Inner::spawn_holder(&self.inner, origin, session);
                Submitted::Accepted
            }
            Ok(Accepted::Queued) => Submitted::Accepted,
            Ok(Accepted::Duplicate) => {
                telemetry::settled(Settled::Duplicate, 1);
                tracing::info!(session = id_for_log(&session), "redelivered message ignored");
                Submitted::Duplicate
            }
            Err(CoordError::Overloaded) => Submitted::Overloaded,
            Err(e) => {
                tracing::error!(session = id_for_log(&session), error = %e, "cannot record the message");
                Submitted::NotRecorded
            }
        }
    }

    /// An operator wrote in a conversation: unless it is the bot itself, a human took over.
    /// Waits (briefly) until the takeover is recorded, so a visitor message acknowledged after
    /// this hook already finds the bot silenced; a slow Redis finishes in the background.
    pub async fn operator_wrote(&self, message: OperatorMessage) {
        // The bot's own echoes (and other automations) never take a conversation over, and
        // without Redis the takeover is noted at once: no task on the acknowledgement path.
        if message.automated || !self.inner.deps.coordination.is_shared() {
            return self.inner.note_operator(message).await;
        }
        let inner = Arc::clone(&self.inner);
        let noted = self.inner.tracker.spawn(async move { inner.note_operator(message).await });
        let _ = tokio::time::timeout(Duration::from_millis(500), noted).await;
    }

    /// An operator resolved the conversation (`session:set_state`): the bot may speak there
    /// again, after a hand-off or a human takeover.
    pub async fn resolved(&self, session: &str) {
        self.inner.resolved(session).await;
    }

    /// The widget set session data (`session:set_data`): it may link the conversation to an
    /// Autoplay session before the visitor writes.
    pub async fn session_data(&self, session: &str, data: &SessionData) {
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
            let held: Vec<((Origin, String), usize)> =
                self.inner.holders().iter().map(|(key, holder)| (key.clone(), holder.in_flight)).collect();
            for ((origin, session), in_flight) in held {
                if origin == Origin::Shared {
                    left_shared += in_flight;
                    coordination.release(origin, &session).await;
                }
            }
        }
        coordination.sync().await;
        coordination.pending_local() + left_shared
    }
}

impl Inner {
    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<(Origin, String), Holder>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts answering a conversation this process now holds, unless it already is.
    fn spawn_holder(this: &Arc<Self>, origin: Origin, session: String) {
        {
            let mut holders = this.holders();
            if let Some(holder) = holders.get_mut(&(origin, session.clone())) {
                holder.look_again = true;
                return;
            }
            holders.insert((origin, session.clone()), Holder::default());
        }
        let inner = Arc::clone(this);
        this.tracker.spawn(async move { inner.answer_conversation(origin, session).await });
    }

    /// Answers a held conversation burst by burst until nothing is recorded for it.
    async fn answer_conversation(&self, origin: Origin, session: String) {
        let coordination = &self.deps.coordination;
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            let key = (origin, session.clone());
            let burst = match coordination.next_burst(origin, &session).await {
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
                Err(e) => {
                    tracing::warn!(session = id_for_log(&session), error = %e, "cannot read the conversation's queue; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let renew = async {
                loop {
                    tokio::time::sleep(RENEW_HOLD_EVERY).await;
                    coordination.keep_holding(origin, &session).await;
                }
            };
            let reply_id = format!("{:016x}", rand::random::<u64>());
            let span = tracing::info_span!("reply", session = id_for_log(&session), reply_id = %reply_id);
            // `renew` never ends: the reply always finishes first.
            let attempt = tokio::select! {
                attempt = self.reply(&burst, &reply_id).instrument(span.clone()) => attempt,
                () = renew => Attempt::Retry,
            };
            match attempt {
                Attempt::Settled(how) => {
                    backoff.reset();
                    if let Err(e) = coordination.finish(&burst).await {
                        tracing::warn!(parent: &span, error = %e, "cannot mark the burst done; it will be checked against the conversation when resumed");
                    }
                    telemetry::settled(how, burst.entries.len());
                    tracing::info!(parent: &span, messages = burst.entries.len(), outcome = how.as_str(), "messages settled");
                }
                Attempt::Retry => {
                    let wait = backoff.next_delay();
                    tracing::warn!(parent: &span, retry_in = ?wait, "reply not delivered; the messages stay recorded and are retried");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One reply to a burst: expiry, takeover, context, history, the already-answered check,
    /// prompt, LLM, takeover check again, send, trace.
    async fn reply(&self, burst: &Burst, reply_id: &str) -> Attempt {
        let session = burst.session.as_str();
        let current: Vec<&VisitorMessage> =
            burst.entries.iter().filter(|e| e.age() <= self.deps.max_age).map(|e| &e.message).collect();
        if current.is_empty() {
            return Attempt::Settled(Settled::Expired);
        }
        // Before the typing indicator and the LLM: a human has the conversation.
        if self.deps.coordination.floor(session).await.human {
            tracing::info!("a human operator has this conversation; bot stays silent");
            return Attempt::Settled(Settled::Silenced);
        }
        // The slot bounds all the work of a reply (lookups included), not only the LLM call.
        let Ok(_slot) = self.slots.acquire().await else { return Attempt::Retry };
        let crisp = &self.deps.crisp;
        let (typing, activity, messages) = tokio::join!(
            crisp.compose(session, true),
            self.deps.context.activity_for(session),
            self.conversation(session, burst.resumed),
        );
        if let Err(e) = typing {
            tracing::warn!(error = %e, "cannot show the typing indicator");
        }
        let attempt = if burst.resumed && already_answered(&messages, burst) {
            Attempt::Settled(Settled::AlreadyAnswered)
        } else {
            let mut history = self.history_turns(&messages, burst);
            if let Some(line) = self.answers_an_offer(session).await {
                history.insert(0, ChatMessage::new(Role::System, line));
            }
            self.answer(session, reply_id, &current, &activity, history).await
        };
        if let Err(e) = crisp.compose(session, false).await {
            tracing::warn!(error = %e, "cannot clear the typing indicator");
        }
        match attempt {
            Attempt::Settled(Settled::Answered) => {
                metrics::counter!(telemetry::REPLIES_SENT).increment(1);
                tracing::info!(messages = current.len(), linked_by = ?activity.linked_by, "reply sent")
            }
            Attempt::Settled(Settled::FallbackSent) => {
                metrics::counter!(telemetry::FALLBACKS_SENT).increment(1);
                tracing::warn!("fallback message sent")
            }
            Attempt::Retry => metrics::counter!(telemetry::REPLIES_FAILED).increment(1),
            Attempt::Settled(_) => {}
        }
        attempt
    }

    /// Prompt, LLM (or the fallback), the takeover check, the send, the trace.
    async fn answer(
        &self,
        session: &str,
        reply_id: &str,
        burst: &[&VisitorMessage],
        activity: &Activity,
        history: Vec<ChatMessage>,
    ) -> Attempt {
        let limits = self.deps.limits;
        let left_out = burst.len().saturating_sub(limits.max_burst_messages);
        if left_out > 0 {
            metrics::counter!(telemetry::BURST_MESSAGES_LEFT_OUT).increment(left_out as u64);
        }
        let question = visitor_words(
            burst.iter().map(|m| m.content.as_str()),
            limits.max_burst_messages,
            limits.max_message_chars,
        );
        let mut request = reply_request(&self.deps.system_prompt, &activity.text, &question);
        request.messages.splice(1..1, history);
        let sent = self.decide_and_send(session, &request, &question, activity).await;
        if let Some(traces) = &self.deps.traces {
            traces.write(&ReplyTrace {
                reply_id,
                crisp_session: session,
                at: agent_core::inbox::now_ms() / 1000,
                linked_by: format!("{:?}", activity.linked_by),
                autoplay_session: activity.autoplay_session.as_deref(),
                activity: &activity.text,
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
                },
                handoff: sent.handoff.map(handoff::Reason::name),
                note: sent.note.as_deref(),
            });
        }
        sent.attempt
    }

    /// The model's decision (an answer, or a hand-off through its tool), the takeover check,
    /// then what goes to Crisp.
    async fn decide_and_send(&self, session: &str, request: &ChatRequest, words: &str, activity: &Activity) -> Sent {
        let decision = match self.ask_llm(request, words).await {
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
        // Again after the LLM: a human may have written meanwhile.
        if self.deps.coordination.floor(session).await.human {
            return Sent { attempt: Attempt::Settled(Settled::Silenced), text: None, handoff: None, note: None };
        }
        match decision {
            Decision::Answer(text, settled) => {
                if !self.send_own_text(session, &text).await {
                    return Sent::retry(Some(text));
                }
                // A visitor left with the fallback: operators get the context, as on a hand-off.
                let failed = (settled == Settled::FallbackSent).then_some(handoff::Reason::Failed);
                let note = match failed {
                    Some(reason) => Some(self.send_note(session, reason, None, activity).await),
                    None => None,
                };
                Sent { attempt: Attempt::Settled(settled), text: Some(text), handoff: failed, note }
            }
            Decision::HandOff(decision) => self.hand_off(session, decision, activity).await,
        }
    }

    /// The model's completion with the hand-off tool; when the server takes no tools (it refuses
    /// the request), a plain one, with explicit requests for a person caught by the phrase
    /// detector.
    async fn ask_llm(&self, request: &ChatRequest, words: &str) -> Result<Completion, LlmError> {
        if self.tools_supported.load(Ordering::Relaxed) {
            match self.deps.llm.complete_with_tools(request).await {
                Err(LlmError::Status { status: 400 | 404 | 422, .. }) => {}
                other => return other,
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
        if answer.is_ok() && self.tools_supported.swap(false, Ordering::Relaxed) {
            tracing::warn!("the LLM server refuses tools; hand-offs now rely on detecting explicit requests");
        }
        answer
    }

    /// Hands the conversation over: the visitor is told (online or offline wording), the bot
    /// falls silent there, operators get the context note, and the conversation is marked
    /// unresolved (and assigned, when configured).
    async fn hand_off(&self, session: &str, decision: handoff::Decision, activity: &Activity) -> Sent {
        let online = self.operators_online().await;
        let settings = &self.deps.handoff;
        let text = if online { settings.message.clone() } else { settings.offline_message.clone() };
        if !self.send_own_text(session, &text).await {
            return Sent::retry(Some(text));
        }
        self.deps.coordination.set_human_takeover(session).await;
        if let Some(book) = &self.deps.proactive {
            let now = agent_core::proactive::now_secs();
            book.update(session, now, |gate| gate.handed_off = true).await;
        }
        let note = self.send_note(session, decision.reason, decision.summary.as_deref(), activity).await;
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
        session: &str,
        reason: handoff::Reason,
        model_summary: Option<&str>,
        activity: &Activity,
    ) -> String {
        metrics::counter!(telemetry::HANDOFFS, "reason" => reason.name()).increment(1);
        let now = agent_core::proactive::now_secs();
        let linked_by = linked_by_words(activity.linked_by);
        let note = handoff::note(reason, model_summary, activity.context.as_ref(), linked_by, now);
        self.deps.coordination.remember_own(session, OwnMark::Text(note.clone())).await;
        if let Err(e) = self.deps.crisp.send_note(session, &note).await {
            tracing::warn!(error = %e, "cannot post the context note for operators");
        }
        note
    }

    /// Posts the bot's own text message; false when Crisp refused it.
    async fn send_own_text(&self, session: &str, text: &str) -> bool {
        self.deps.coordination.remember_own(session, OwnMark::Text(text.to_owned())).await;
        match self.deps.crisp.send_text(session, text).await {
            Ok(fingerprint) => {
                if let Some(f) = fingerprint {
                    self.deps.coordination.remember_own(session, OwnMark::Fingerprint(f)).await;
                }
                self.history.invalidate(session).await;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "Crisp refused the reply");
                false
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
    async fn answers_an_offer(&self, session: &str) -> Option<String> {
        let book = self.deps.proactive.as_ref()?;
        let now = agent_core::proactive::now_secs();
        let (offer, first) = book.update(session, now, |gate| gate.visitor_wrote(now)).await??;
        if first {
            metrics::counter!(telemetry::PROACTIVE_ENGAGED).increment(1);
            tracing::info!(trigger = offer.trigger.as_str(), "the visitor answered a proactive offer");
        }
        Some(reached_out_line(&offer, now))
    }

    /// The widget set session data: links for proactive offers (same trust rules as the
    /// replies' links), and the replies' cached links are read afresh.
    async fn session_data(&self, session: &str, data: &SessionData) {
        self.deps.context.forget_links(session).await;
        let Some(book) = &self.deps.proactive else { return };
        let (autoplay_session, verified_user) = self.deps.context.links_in(data);
        let now = agent_core::proactive::now_secs();
        if let Some(autoplay_session) = &autoplay_session {
            book.link(LinkKey::Session(autoplay_session), session, now).await;
        }
        if let Some(user) = &verified_user {
            book.link(LinkKey::User(user), session, now).await;
        }
        if autoplay_session.is_some() || verified_user.is_some() {
            tracing::info!(
                session = id_for_log(session),
                by_session = autoplay_session.is_some(),
                by_signed_user = verified_user.is_some(),
                "conversation linked to its Autoplay activity"
            );
        }
    }

    /// An operator resolved the conversation: the bot answers there again.
    async fn resolved(&self, session: &str) {
        self.deps.coordination.clear_human_takeover(session).await;
        tracing::info!(session = id_for_log(session), "conversation resolved; the bot answers again");
    }

    async fn note_operator(&self, message: OperatorMessage) {
        if message.automated {
            return; // bots and automations never take a conversation over
        }
        let session = message.session_id.as_str();
        let marks = message.fingerprint.map(OwnMark::Fingerprint).into_iter().chain(message.content.map(OwnMark::Text));
        for mark in marks {
            if self.deps.coordination.is_own(session, &mark).await {
                return;
            }
        }
        self.deps.coordination.set_human_takeover(session).await;
        tracing::info!(session = id_for_log(session), "human operator took over the conversation");
    }

    /// The conversation's latest messages: cached for prompts, read afresh for a resumed
    /// burst (it decides whether a reply already went out). Empty when Crisp cannot say.
    async fn conversation(&self, session: &str, fresh: bool) -> Arc<Vec<ConversationMessage>> {
        if !fresh && self.deps.history_turns == 0 {
            return Arc::default();
        }
        if fresh {
            self.history.invalidate(session).await;
        }
        let crisp = self.deps.crisp.clone();
        let key = session.to_owned();
        match self.history.try_get_with(key.clone(), async move { crisp.messages(&key).await.map(Arc::new) }).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the conversation's messages; answering without them");
                Arc::default()
            }
        }
    }

    /// Earlier turns of the conversation (not the burst being answered), oldest first.
    fn history_turns(&self, messages: &[ConversationMessage], burst: &Burst) -> Vec<ChatMessage> {
        if self.deps.history_turns == 0 {
            return Vec::new();
        }
        let current: Vec<u64> = burst.entries.iter().filter_map(|e| e.message.fingerprint).collect();
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

/// Whether an operator message (the bot's or a human's) already follows the burst's newest
/// message in the conversation: found by its fingerprint, else by time.
fn already_answered(messages: &[ConversationMessage], burst: &Burst) -> bool {
    let Some(newest) = burst.entries.last() else { return false };
    let is_reply = |m: &ConversationMessage| m.from == "operator" && !matches!(m.kind.as_str(), "note" | "event");
    if let Some(fingerprint) = newest.message.fingerprint
        && let Some(at) = messages.iter().position(|m| m.fingerprint == Some(fingerprint))
    {
        return messages[at + 1..].iter().any(is_reply);
    }
    let since = newest.message.timestamp.unwrap_or(newest.accepted_at_ms as i64);
    messages.iter().any(|m| is_reply(m) && m.timestamp.is_some_and(|t| t > since))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::inbox::InboxEntry;

    fn said(from: &str, kind: &str, fingerprint: Option<u64>, timestamp: i64) -> ConversationMessage {
        ConversationMessage {
            kind: kind.into(),
            from: from.into(),
            text: None,
            fingerprint,
            timestamp: Some(timestamp),
        }
    }

    fn burst(fingerprint: Option<u64>, timestamp: i64) -> Burst {
        let message = VisitorMessage {
            website_id: "w".into(),
            session_id: "s".into(),
            content: "q".into(),
            fingerprint,
            timestamp: Some(timestamp),
        };
        Burst { session: "s".into(), entries: vec![InboxEntry::new(message)], origin: Origin::Local, resumed: true }
    }

    #[test]
    fn an_operator_message_after_the_newest_one_means_answered() {
        let visitor = said("user", "text", Some(7), 100);
        let reply = said("operator", "text", Some(8), 101);
        let note = said("operator", "note", Some(9), 102);
        assert!(already_answered(&[visitor.clone(), reply.clone()], &burst(Some(7), 100)));
        assert!(!already_answered(&[reply.clone(), visitor.clone()], &burst(Some(7), 100)), "the reply came before it");
        assert!(!already_answered(&[visitor.clone(), note], &burst(Some(7), 100)), "a private note is no answer");
        assert!(
            already_answered(std::slice::from_ref(&reply), &burst(None, 100)),
            "by time when there is no fingerprint"
        );
        assert!(!already_answered(&[reply], &burst(Some(70), 200)), "by time when the message is not on the page");
        assert!(!already_answered(&[], &burst(Some(7), 100)));
    }
}

//! Proactive offers: the webhook reads the firings the listener records, and for each one
//! decides whether the bot may reach out to that visitor, asks the LLM for the words (or
//! whether to stay quiet), and sends one short operator message.
//!
//! The steps of [`Offers::consider`]: link (the firing's Autoplay session to a Crisp
//! conversation: the stream's `conversation_id` only when that conversation's own link points
//! to the same Autoplay session, or with `TRUST_STREAM_CONVERSATION_ID`), once per firing, the floor ([`Coordination::floor`], the same question replies
//! ask), the gate (cooldown, offers per conversation and per Autoplay session,
//! dismissals), the conversation's last messages
//! (quiet for two minutes?), the site-wide cap, the LLM, the floor again, then
//! `initiate` (when the visitor never wrote) and the message. Each firing ends with one
//! outcome in logs and `proactive_offers_total{trigger,outcome}`.

use crate::context::ContextSource;
use crate::traces::TraceWriter;
use activity::AutoplaySessionId;
use activity::context::{NO_ACTIVITY, StoreReader, render_context};
use crisp::{ConversationId, CrispClient, CrispError, Post, PostKind, id_for_log, message_fingerprint};
use delivery::coordination::{Coordination, OwnMark};
use llm::LlmClient;
use plumbing::telemetry;
use proactive::book::{OfferBook, RecordKey};
use proactive::feed::{FiringFeed, POLL_EVERY};
use proactive::gate::{GateSettings, Outcome, Suppressed, VisitorGate};
use proactive::offer::{OfferAnswer, clip_offer, offer_request, parse_offer};
use proactive::{Firing, Trigger, now_secs};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// A firing recorded longer ago than this is no longer worth an offer.
const MAX_FIRING_AGE_SECS: f64 = 60.0;
/// Firings decided at once (each may wait for the LLM).
const CONCURRENT_OFFERS: usize = 8;

/// The proactive settings of the webhook.
#[derive(Debug, Clone)]
pub struct ProactiveSettings {
    /// Triggers offers are made for (`PROACTIVE_TRIGGERS`); empty: off.
    pub triggers: Vec<Trigger>,
    pub gate: GateSettings,
    /// Offers per minute across the site.
    pub max_per_minute: usize,
    /// What is sent when the LLM fails, per trigger.
    pub templates: HashMap<Trigger, String>,
}

pub struct OfferDeps {
    pub settings: ProactiveSettings,
    pub book: Arc<OfferBook>,
    pub coordination: Arc<Coordination>,
    pub crisp: CrispClient,
    pub llm: LlmClient,
    /// The context store (the visitor's own activity for the offer's prompt).
    pub store: Option<StoreReader>,
    /// The conversations' own links, which a stream's `conversation_id` claim must agree with.
    pub context: ContextSource,
    /// `TRUST_STREAM_CONVERSATION_ID`: the claim is taken as is.
    pub trust_stream_conversation_id: bool,
    pub context_max_chars: usize,
    pub traces: Option<TraceWriter>,
    /// Answers' outcomes (a firing after an answer may mean the visitor is stuck) and offer
    /// learning (a paused trigger offers nothing; each offer sent is judged).
    pub outcomes: Arc<crate::outcomes::Outcomes>,
    /// The webhook's registry: `proactive_offers_total{trigger,outcome}`.
    pub metrics: plumbing::telemetry::Metrics,
}

pub struct Offers {
    deps: OfferDeps,
    slots: Arc<Semaphore>,
}

/// What the offer's trace records besides the outcome.
#[derive(Default)]
struct Attempt {
    conversation: Option<ConversationId>,
    message: Option<String>,
    from_template: bool,
    initiated: bool,
}

impl Offers {
    pub fn new(deps: OfferDeps) -> Arc<Self> {
        Arc::new(Self { deps, slots: Arc::new(Semaphore::new(CONCURRENT_OFFERS)) })
    }

    /// Reads the feed until the task is aborted: each batch is decided, then marked handled.
    pub fn run(self: &Arc<Self>, mut feed: FiringFeed) -> tokio::task::JoinHandle<()> {
        let offers = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let batch = feed.read().await;
                if batch.skipped > 0 {
                    tracing::warn!(skipped = batch.skipped, "firings that could not be read were skipped");
                }
                if batch.firings.is_empty() {
                    feed.done(batch).await;
                    tokio::time::sleep(POLL_EVERY).await;
                    continue;
                }
                let mut deciding = tokio::task::JoinSet::new();
                for firing in batch.firings.iter().cloned() {
                    let Ok(slot) = Arc::clone(&offers.slots).acquire_owned().await else { return };
                    let offers = Arc::clone(&offers);
                    let span = tracing::info_span!("offer", firing = %id_for_log(&firing.id), trigger = firing.trigger.as_str());
                    deciding.spawn(
                        async move {
                            offers.consider(firing).await;
                            drop(slot);
                        }
                        .instrument(span),
                    );
                }
                deciding.join_all().await;
                feed.done(batch).await;
            }
        })
    }

    /// Decides one firing and, when the gate lets it, sends the offer.
    pub async fn consider(&self, firing: Firing) {
        let now = now_secs();
        if !self.deps.settings.triggers.contains(&firing.trigger) {
            return tracing::debug!("trigger not in PROACTIVE_TRIGGERS; ignored");
        }
        if firing.recorded_at > 0.0 && now - firing.recorded_at > MAX_FIRING_AGE_SECS {
            return tracing::info!(
                age_secs = (now - firing.recorded_at) as u64,
                "firing too old for an offer; dropped"
            );
        }
        if !self.deps.book.first_sight(&firing.id, now).await {
            return tracing::debug!("firing handled before");
        }
        let mut attempt = Attempt::default();
        let outcome = self.decide_and_send(&firing, now, &mut attempt).await;
        if outcome == Outcome::Sent
            && let Some(conversation) = &attempt.conversation
        {
            self.deps.outcomes.offered(firing.trigger, conversation, now).await;
        }
        self.settle(&firing, outcome, &attempt);
    }

    async fn decide_and_send(&self, firing: &Firing, now: f64, attempt: &mut Attempt) -> Outcome {
        let deps = &self.deps;
        let Some(conversation) = self.conversation_for(firing).await else {
            return Outcome::Suppressed(Suppressed::Unlinked);
        };
        // After an answer, the same trouble again means the visitor is stuck.
        let fired_at = if firing.recorded_at > 0.0 { firing.recorded_at } else { now };
        deps.outcomes.trigger_fired(&conversation, fired_at, firing.trigger).await;
        if deps.outcomes.offer_paused(firing.trigger, now).await {
            attempt.conversation = Some(conversation);
            tracing::info!(trigger = firing.trigger.as_str(), "offer learning paused this trigger; no offer");
            return Outcome::Suppressed(Suppressed::Capped);
        }
        // The Autoplay session's own record: its offers and cooldown across conversations.
        let session_key = RecordKey::AutoplaySession(&firing.session_id);
        attempt.conversation = Some(conversation.clone());
        let conversation = &conversation;
        // The cheap checks first: no Crisp call for a visitor the gate holds back anyway.
        let mut floor = match deps.coordination.floor(conversation).await {
            Ok(floor) => floor,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell who has the floor; no offer");
                return Outcome::Failed;
            }
        };
        let gate = deps.settings.gate;
        let precheck = deps
            .book
            .update(conversation, now, |g| g.check(now, &firing.session_id, &floor, &gate).map(|()| g.visitor_wrote_at))
            .await;
        let known = match precheck {
            None => return Outcome::Suppressed(Suppressed::Busy),
            Some(Err(reason)) => return Outcome::Suppressed(reason),
            Some(Ok(known)) => known,
        };
        match deps.book.update(session_key, now, |g| g.check_session(now, &gate)).await {
            None => return Outcome::Suppressed(Suppressed::Busy),
            Some(Err(reason)) => return Outcome::Suppressed(reason),
            Some(Ok(())) => {}
        }
        // The last messages from either side, and whether the visitor ever wrote: from Crisp,
        // else (it cannot say) from what this bot saw of the visitor.
        let history = match deps.crisp.messages(conversation).await {
            Ok(messages) => Some(messages),
            Err(CrispError::Status { status: 404, .. }) => Some(Vec::new()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the conversation's messages; judging by what the bot saw");
                None
            }
        };
        let from_crisp = history.as_deref().unwrap_or_default();
        let visitor_wrote = known.is_some() || from_crisp.iter().any(|m| m.from == "user");
        let last_in_crisp = from_crisp
            .iter()
            .filter(|m| matches!(m.from.as_str(), "user" | "operator") && m.kind != "event")
            .filter_map(|m| m.timestamp)
            .max()
            .map(|ms| ms as f64 / 1000.0);
        floor.last_message_at = match (last_in_crisp, known) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        // Decided and recorded in one step, under the visitor's lock (on Redis, across replicas).
        let reserved = deps
            .book
            .update(conversation, now, |g| {
                let before = g.clone();
                g.check(now, &firing.session_id, &floor, &gate)?;
                g.offered(now, firing.trigger, &firing.id, &firing.detail);
                Ok(before)
            })
            .await;
        let before = match reserved {
            None => return Outcome::Suppressed(Suppressed::Busy),
            Some(Err(reason)) => return Outcome::Suppressed(reason),
            Some(Ok(before)) => before,
        };
        let reserved = deps
            .book
            .update(session_key, now, |g| {
                let before = g.clone();
                g.check_session(now, &gate)?;
                g.offered(now, firing.trigger, &firing.id, &firing.detail);
                Ok(before)
            })
            .await;
        let session_before = match reserved {
            Some(Ok(before)) => before,
            refused => {
                self.withdraw(conversation.into(), firing, before).await;
                return Outcome::Suppressed(refused.map_or(Suppressed::Busy, |r| r.err().unwrap_or(Suppressed::Busy)));
            }
        };
        let Some(slot) = deps.book.take_minute_slot(now, deps.settings.max_per_minute).await else {
            self.withdraw(conversation.into(), firing, before).await;
            self.withdraw(session_key, firing, session_before).await;
            return Outcome::Suppressed(Suppressed::Capped);
        };
        // On disk before anything is sent: a restart never sends this offer again.
        deps.book.save_now().await;
        let outcome = self.write_and_send(firing, conversation, visitor_wrote, attempt).await;
        if outcome != Outcome::Sent {
            self.withdraw(conversation.into(), firing, before).await;
            self.withdraw(session_key, firing, session_before).await;
            deps.book.give_back(slot).await;
        }
        outcome
    }

    /// The conversation a firing's visitor is in. The stream's `conversation_id` is a claim: it
    /// counts when that conversation's own link (session data, or signed user id) points to the
    /// firing's Autoplay session, or when `TRUST_STREAM_CONVERSATION_ID` says the operator's
    /// connector sets it; otherwise the session's (or signed user's) linked conversation.
    async fn conversation_for(&self, firing: &Firing) -> Option<ConversationId> {
        let deps = &self.deps;
        let claimed = firing.conversation_id.as_deref().and_then(|c| ConversationId::parse(c).ok());
        if let Some(claimed) = claimed {
            let links = match AutoplaySessionId::parse(firing.session_id.as_str()) {
                Ok(session) => deps.context.conversation_links_to(&claimed, &session).await,
                Err(_) => false,
            };
            if deps.trust_stream_conversation_id || links {
                return Some(claimed);
            }
            tracing::info!(
                claimed = id_for_log(claimed.as_str()),
                autoplay_session = id_for_log(&firing.session_id),
                "the stream's conversation_id is not that conversation's link; ignored"
            );
        }
        deps.book.conversation_for(firing).await
    }

    /// The LLM's words (or the template), the floor again, then Crisp.
    async fn write_and_send(
        &self,
        firing: &Firing,
        conversation: &ConversationId,
        visitor_wrote: bool,
        attempt: &mut Attempt,
    ) -> Outcome {
        let deps = &self.deps;
        let message = match self.ask_llm(firing).await {
            Some(OfferAnswer::Send(message)) => message,
            Some(OfferAnswer::Decline) => return Outcome::Declined,
            None => {
                attempt.from_template = true;
                match deps.settings.templates.get(&firing.trigger) {
                    Some(template) => clip_offer(template),
                    None => return Outcome::Failed,
                }
            }
        };
        attempt.message = Some(message.clone());
        // The visitor (or a human) may have written while the LLM was busy.
        let floor = match deps.coordination.floor(conversation).await {
            Ok(floor) => floor,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell who has the floor; no offer");
                return Outcome::Failed;
            }
        };
        if floor.human {
            return Outcome::Suppressed(Suppressed::Human);
        }
        if floor.bot_busy {
            return Outcome::Suppressed(Suppressed::Busy);
        }
        if !visitor_wrote {
            if let Err(e) = deps.crisp.initiate(conversation).await {
                tracing::warn!(error = %e, "cannot initiate the conversation");
                return Outcome::Failed;
            }
            attempt.initiated = true;
        }
        // Derived from the firing: a retry or a replay posts the same fingerprint, and the
        // Crisp client never shows the visitor the same offer twice.
        let fingerprint = message_fingerprint(&["offer", conversation.as_str(), &firing.id]);
        deps.coordination.remember_own(conversation, OwnMark::Text(message.clone())).await;
        deps.coordination.remember_own(conversation, OwnMark::Fingerprint(fingerprint)).await;
        let post = Post { kind: PostKind::Offer, content: &message, fingerprint };
        match deps.crisp.post(conversation, &post).await {
            Ok(()) => Outcome::Sent,
            Err(e) => {
                tracing::warn!(error = %e, "Crisp refused the offer");
                Outcome::Failed
            }
        }
    }

    /// The model's decision; `None` when it could not be had (the template goes instead).
    async fn ask_llm(&self, firing: &Firing) -> Option<OfferAnswer> {
        let activity = self.activity(&firing.session_id).await;
        let request = offer_request(&activity, firing.trigger, &firing.detail, &firing.page);
        match self.deps.llm.complete(&request).await {
            Ok(answer) => match parse_offer(&answer) {
                Ok(decision) => Some(decision),
                Err(e) => {
                    tracing::warn!(error = %e, "the LLM's offer was not understood; sending the template");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no offer from the LLM; sending the template");
                None
            }
        }
    }

    /// The visitor's own recent activity (the firing's Autoplay session).
    async fn activity(&self, session: &str) -> String {
        let Some(store) = &self.deps.store else { return NO_ACTIVITY.to_owned() };
        let Ok(session) = AutoplaySessionId::parse(session) else { return NO_ACTIVITY.to_owned() };
        match store.session_context(&session, SystemTime::now()).await {
            Ok(Some(context)) => render_context(&context, self.deps.context_max_chars),
            Ok(None) => NO_ACTIVITY.to_owned(),
            Err(e) => {
                tracing::warn!(error = %e, "context store lookup failed");
                NO_ACTIVITY.to_owned()
            }
        }
    }

    /// Takes back the offer recorded for this firing (it was not sent).
    async fn withdraw(&self, record: RecordKey<'_>, firing: &Firing, before: VisitorGate) {
        let id = firing.id.as_str();
        let undone = self
            .deps
            .book
            .update(record, now_secs(), |g| {
                if g.last_offer.as_ref().is_some_and(|o| o.firing_id == id) {
                    g.withdraw(before);
                }
            })
            .await;
        if undone.is_none() {
            tracing::warn!("cannot take back an offer that was not sent; the visitor's cooldown stands");
        }
    }

    /// The firing's one log line, count and trace.
    fn settle(&self, firing: &Firing, outcome: Outcome, attempt: &Attempt) {
        self.deps
            .metrics
            .counter_with(
                telemetry::PROACTIVE_OFFERS,
                &[("trigger", firing.trigger.as_str()), ("outcome", outcome.name())],
            )
            .increment(1);
        let conversation = attempt.conversation.as_ref().map(|c| id_for_log(c.as_str()));
        match outcome {
            Outcome::Sent => tracing::info!(
                conversation,
                autoplay_session = id_for_log(&firing.session_id),
                template = attempt.from_template,
                initiated = attempt.initiated,
                "proactive offer sent"
            ),
            Outcome::Failed => tracing::warn!(conversation, outcome = outcome.name(), "proactive offer not sent"),
            _ => tracing::info!(conversation, outcome = outcome.name(), "proactive offer not sent"),
        }
        // A trace per firing that reached a conversation (an unlinked one is no offer).
        if let Some(traces) = self.deps.traces.as_ref().filter(|_| attempt.conversation.is_some()) {
            traces.write_offer(&crate::traces::OfferTrace {
                firing_id: &firing.id,
                trigger: firing.trigger.as_str(),
                at: now_secs() as u64,
                autoplay_session: &firing.session_id,
                crisp_session: attempt.conversation.as_ref().map(ConversationId::as_str),
                detail: &firing.detail,
                page: &firing.page,
                outcome: outcome.name(),
                message: attempt.message.as_deref(),
                from_template: attempt.from_template,
                initiated: attempt.initiated,
            });
        }
    }
}

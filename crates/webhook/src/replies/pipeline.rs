//! A reply to one burst, as its named steps in order. [`Pipeline::reply`] is the one place they
//! are composed; each step knows only what it needs (see the table in [`super`]).

use super::ask_llm::{Decision, LlmStep};
use super::context::ContextStep;
use super::floor::FloorStep;
use super::handoff::HandOffStep;
use super::mark_done::MarkDoneStep;
use super::outcome::OutcomeStep;
use super::post::PostStep;
use super::prompt::PromptStep;
use super::redaction::{ForLlm, RedactionStep, Restorer};
use super::search::KnowledgeStep;
use super::trace::TraceStep;
use super::{Attempt, Sent, Turn};
use crate::context::Activity;
use answer::handoff;
use crisp::VisitorMessage;
use delivery::coordination::{Burst, Hold};
use plumbing::telemetry::{self, Metrics, Settled};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The reply's steps, built once per app (`startup`).
pub struct Pipeline {
    pub floor: Arc<FloorStep>,
    pub context: ContextStep,
    pub knowledge: KnowledgeStep,
    pub redaction: RedactionStep,
    pub prompt: PromptStep,
    pub llm: LlmStep,
    pub post: PostStep,
    pub handoff: HandOffStep,
    pub outcome: OutcomeStep,
    pub trace: TraceStep,
    pub mark_done: MarkDoneStep,
    /// A message older than this when its turn comes is settled unanswered
    /// (`REPLY_MAX_AGE_SECS`).
    pub max_age: Duration,
    /// Replies written at once (`MAX_CONCURRENT_REPLIES`): a slot bounds all the work of a
    /// reply, lookups included, not only the LLM call.
    pub slots: Semaphore,
    /// Replies sent, fallbacks sent, replies failed.
    pub metrics: Metrics,
}

impl Pipeline {
    /// One reply to a burst. Returns the attempt and how many of the burst's first messages were
    /// found answered already (a resumed burst); marking done is the caller's, after this.
    pub(super) async fn reply(&self, hold: &Hold, burst: &Burst, reply_id: &str) -> (Attempt, usize) {
        let session = &burst.session;
        // Resumed: the replies already in the conversation settle their messages.
        let (already, fresh) = match self.context.answered_already(burst).await {
            Ok(found) => found,
            Err(attempt) => return (attempt, 0),
        };
        let rest = &burst.entries[already..];
        let Some(newest) = rest.last() else { return (Attempt::Settled(Settled::AlreadyAnswered), already) };
        // Expiry.
        let current: Vec<&VisitorMessage> =
            rest.iter().filter(|e| e.age() <= self.max_age).map(|e| &e.message).collect();
        if current.is_empty() {
            return (Attempt::Settled(Settled::Expired), already);
        }
        // Floor: before the typing indicator and the LLM.
        if let Err(attempt) = self.floor.open(session).await {
            return (attempt, already);
        }
        let Ok(_slot) = self.slots.acquire().await else { return (Attempt::Retry, already) };
        // Context, with the typing indicator on meanwhile.
        let ((), gathered) = tokio::join!(self.post.typing(session, true), self.context.gather(session, rest, fresh));
        let turn = Turn { hold, session, answers: newest.id.to_string(), trigger: gathered.trigger };
        let question = self.prompt.words(&current);
        let activity = gathered.activity;
        // Knowledge: searched on this host, before anything is masked.
        let found = self.knowledge.search(&question, &activity).await;
        let articles = found.articles();
        // Redaction: nothing personal leaves for the LLM.
        let parts = ForLlm { question, activity: activity.text.clone(), help: found.help, history: gathered.history };
        let (masked, restorer) = self.redaction.mask(session, parts).await;
        // Prompt.
        let request = self.prompt.request(&masked);
        // LLM with tools (a "yes" to the follow-up asks for a person without it).
        let wants_person = self.outcome.said_yes_to_follow_up(session, &masked.question).await;
        let sent = match self.llm.decide(&request, &masked.question, wants_person).await {
            // Post, and the outcome.
            Some(decision) => self.send(&turn, decision, &activity, &restorer, articles.as_deref()).await,
            None => Sent::only(Attempt::Retry, None),
        };
        // Trace.
        self.trace.write(reply_id, session, &activity, &masked.activity, self.llm.model(), &request, &sent);
        self.post.typing(session, false).await;
        match sent.attempt {
            Attempt::Settled(Settled::Answered) => {
                self.metrics.counter(telemetry::REPLIES_SENT).increment(1);
                tracing::info!(messages = current.len(), linked_by = ?activity.linked_by, "reply sent")
            }
            Attempt::Settled(Settled::FallbackSent) => {
                self.metrics.counter(telemetry::FALLBACKS_SENT).increment(1);
                tracing::warn!("fallback message sent")
            }
            Attempt::Retry => self.metrics.counter(telemetry::REPLIES_FAILED).increment(1),
            Attempt::Settled(_) | Attempt::Lost => {}
        }
        (sent.attempt, already)
    }

    /// Posts what the model decided, and records its outcome: an answer (the visitor reads the
    /// values its placeholders stand for), the fallback (operators get the context, as on a
    /// hand-off), or the hand-off.
    async fn send(
        &self,
        turn: &Turn<'_>,
        decision: Decision,
        activity: &Activity,
        restorer: &Restorer,
        articles: Option<&str>,
    ) -> Sent {
        match decision {
            Decision::Answer(text, how) => {
                let visible = restorer.restore(&text);
                if let Err(not_sent) = self.post.reply(turn, &visible).await {
                    return Sent::only(not_sent, Some(text));
                }
                if how != Settled::FallbackSent {
                    self.outcome.answered(turn, &visible, activity).await;
                    return Sent::only(Attempt::Settled(how), Some(text));
                }
                let reason = handoff::Reason::Failed;
                self.outcome.handed_off(turn.session, reason.name()).await;
                let note = self.handoff.note(&self.post, turn, reason, None, activity, articles).await;
                Sent { attempt: Attempt::Settled(how), text: Some(text), handoff: Some(reason), note: Some(note) }
            }
            Decision::HandOff(decision) => {
                let summary = decision.summary.map(|summary| restorer.restore(&summary));
                let told = self.handoff.words().await;
                if let Err(not_sent) = self.post.reply(turn, &told.text).await {
                    return Sent::only(not_sent, Some(told.text));
                }
                self.handoff.silence_bot(turn.session).await;
                self.outcome.handed_off(turn.session, decision.reason.name()).await;
                let note =
                    self.handoff.note(&self.post, turn, decision.reason, summary.as_deref(), activity, articles).await;
                self.handoff.to_operators(turn.session, decision.reason, told.online).await;
                Sent {
                    attempt: Attempt::Settled(Settled::HandedOver),
                    text: Some(told.text),
                    handoff: Some(decision.reason),
                    note: Some(note),
                }
            }
        }
    }
}

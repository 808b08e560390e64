//! What became of the bot's answer in one conversation: the state machine.
//!
//! One [`ConversationOutcome`] per Crisp conversation. Its current *cycle* is the visitor's
//! question, the bot's answer to it and what followed; a new answer archives the cycle in
//! [`ConversationOutcome::earlier`] and starts the next. Every event takes its time (Unix
//! seconds), so the rules are tested without a clock and a replica replaying the same events
//! decides the same things: each [`Outcome`] is decided at most once per answer, and a replayed
//! event returns no effects.

use crate::confirm::{confirms, reports_failure};
use crate::settings::Settings;
use crate::steps::{Step, folded_words, is_stop_word, matches_step, steps_in_activity, steps_named};
use agent_core::action::ActionRecord;
use agent_core::proactive::Trigger;
use serde::{Deserialize, Serialize};

/// Earlier answers kept per conversation (for the report).
pub const MAX_EARLIER: usize = 50;
/// Pages remembered after an answer (ping-pong detection).
const MAX_PAGES: usize = 6;
/// Topic words remembered per cycle.
const MAX_TOPIC_WORDS: usize = 64;

/// What became of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The visitor did what the answer said (an action matched a step within
    /// `OUTCOME_CONFIRM_SECS`), said it worked, or the model judged so.
    Confirmed,
    /// Nothing more was heard within `OUTCOME_WINDOW_SECS`: no message, no hand-off, no sign of
    /// being stuck.
    Assumed,
    /// Handed over to a human.
    Escalated,
    /// The same trouble came back after the answer (the trigger fired again, an error page,
    /// ping-pong between the same pages).
    Stuck,
    /// After a confirmed or assumed answer, the visitor came back on the same topic within
    /// `OUTCOME_WINDOW_SECS`.
    Reopened,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Confirmed, Outcome::Assumed, Outcome::Escalated, Outcome::Stuck, Outcome::Reopened];

    /// The label of `conversation_outcomes_total{outcome}`, and the name in the report.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Assumed => "assumed",
            Outcome::Escalated => "escalated",
            Outcome::Stuck => "stuck",
            Outcome::Reopened => "reopened",
        }
    }

    /// The Crisp segment set on the conversation.
    pub const fn segment(self) -> &'static str {
        match self {
            Outcome::Confirmed => "bot-confirmed",
            Outcome::Assumed => "bot-assumed",
            Outcome::Escalated => "bot-escalated",
            Outcome::Stuck => "bot-stuck",
            Outcome::Reopened => "bot-reopened",
        }
    }

    /// Confirmed or assumed: the answer is taken to have solved it.
    pub const fn is_resolved(self) -> bool {
        matches!(self, Outcome::Confirmed | Outcome::Assumed)
    }

    pub fn parse(label: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.label() == label || o.segment() == label)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What the caller does after an event, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Add this segment to the conversation (read its segments, write
    /// [`crate::segments::merge_segments`]).
    SetSegment(&'static str),
    /// `conversation_outcomes_total{outcome}` += 1.
    CountOutcome(Outcome),
    /// Post this message to the visitor, then `bot_follow_ups_total` += 1. At most one per
    /// answer; the state already records it as sent.
    SendFollowUp { text: String },
    /// `bot_first_reply_seconds` observes this (the conversation's first answer).
    ObserveFirstReply { secs: f64 },
}

/// The trouble the visitor was in before the answer, as far as the caller knows (the proactive
/// firing the conversation came from, or the firings and pages seen just before).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Trouble {
    /// The trigger that fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// The error page the visitor landed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_page: Option<String>,
    /// The pages visited back and forth (one or two).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ping_pong: Vec<String>,
}

impl Trouble {
    /// From a proactive firing: its trigger and page.
    pub fn from_firing(firing: &agent_core::proactive::Firing) -> Self {
        let page = (!firing.page.is_empty()).then(|| firing.page.clone());
        match firing.trigger {
            Trigger::ErrorPage => Trouble { trigger: Some(firing.trigger), error_page: page, ping_pong: Vec::new() },
            Trigger::PingPong => {
                Trouble { trigger: Some(firing.trigger), error_page: None, ping_pong: page.into_iter().collect() }
            }
            _ => Trouble { trigger: Some(firing.trigger), ..Trouble::default() },
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Trouble::default()
    }
}

/// An archived cycle: what the report needs of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PastAnswer {
    pub question_at: Option<f64>,
    pub answered_at: Option<f64>,
    pub reply_secs: Option<f64>,
    /// The last outcome decided (`None`: superseded by a new question before any).
    pub outcome: Option<Outcome>,
    pub decided: Vec<Outcome>,
    pub decided_at: Option<f64>,
    pub follow_up_sent: bool,
    pub handoff_reason: Option<String>,
}

/// One conversation's outcome record (plain serde data; the caller keeps it in an
/// [`crate::store::OutcomeStore`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConversationOutcome {
    pub conversation_id: String,
    /// `OUTCOME_CONFIRM_SECS` when the record was made (kept so replays decide alike).
    pub confirm_secs: f64,
    /// `OUTCOME_WINDOW_SECS` when the record was made.
    pub window_secs: f64,
    /// The first visitor message not answered yet (where reply latency starts).
    pub question_at: Option<f64>,
    /// Content words of the visitor's messages not answered yet.
    pub pending_topic: Vec<String>,
    /// When the bot answered (the current cycle).
    pub answered_at: Option<f64>,
    /// Answers so far in the conversation.
    pub answers: u32,
    /// Names in the answer ([`steps_named`]), before the activity filter.
    pub named: Vec<Step>,
    /// The steps the answer pointed to: names seen in the visitor's activity before the answer
    /// (and added when seen after it).
    pub steps: Vec<Step>,
    /// The topic of the current cycle: the question's content words and the steps' words.
    pub topic: Vec<String>,
    /// The trouble seen before the answer.
    pub trouble: Trouble,
    /// Seconds from the visitor's first message to the bot's first answer.
    pub first_reply_secs: Option<f64>,
    /// Seconds from the question to this answer.
    pub reply_secs: Option<f64>,
    pub follow_up_sent: bool,
    pub visitor_wrote_since_answer: bool,
    /// The current outcome.
    pub outcome: Option<Outcome>,
    /// When it was decided.
    pub decided_at: Option<f64>,
    /// Every outcome decided for this answer, in order (each at most once).
    pub decided: Vec<Outcome>,
    pub handoff_reason: Option<String>,
    /// Pages visited since the answer, newest last (consecutive repeats folded).
    pub pages_since_answer: Vec<String>,
    pub last_visitor_message_at: Option<f64>,
    /// The time of the latest event applied.
    pub updated_at: f64,
    /// Earlier cycles, oldest first, at most [`MAX_EARLIER`].
    pub earlier: Vec<PastAnswer>,
}

impl ConversationOutcome {
    pub fn new(conversation_id: &str, settings: &Settings) -> Self {
        Self {
            conversation_id: conversation_id.to_owned(),
            confirm_secs: settings.confirm_secs,
            window_secs: settings.window_secs,
            ..Self::default()
        }
    }

    /// The visitor wrote. A confirming phrase ([`confirms`]) confirms an answer not resolved
    /// yet; after a confirmed or assumed answer, a message on the same topic (or saying it did
    /// not work) within the window reopens it; anything else is a new question (its answer
    /// starts a new window).
    pub fn visitor_wrote(&mut self, at: f64, text: &str) -> Vec<Effect> {
        if self.last_visitor_message_at.is_some_and(|last| at <= last) || self.is_before_answer(at) {
            return Vec::new(); // replayed, or part of what was answered
        }
        self.last_visitor_message_at = Some(at);
        self.touch(at);
        if let Some(answered_at) = self.answered_at
            && at - answered_at <= self.window_secs
        {
            match self.outcome {
                None | Some(Outcome::Stuck) if confirms(text) => return self.decide(Outcome::Confirmed, at),
                Some(o) if o.is_resolved() && (reports_failure(text) || self.same_topic(text)) => {
                    self.question(at, text);
                    return self.decide(Outcome::Reopened, at);
                }
                _ => {}
            }
        }
        if self.answered_at.is_some() {
            self.visitor_wrote_since_answer = true;
        }
        self.question(at, text);
        Vec::new()
    }

    /// The bot answered with `answer_text`; `recent_actions` are the visitor's activity before
    /// it (what the prompt showed), `trouble` what was wrong. Starts a new cycle.
    pub fn answered(
        &mut self,
        at: f64,
        answer_text: &str,
        recent_actions: &[ActionRecord<'_>],
        trouble: Trouble,
    ) -> Vec<Effect> {
        if self.answered_at.is_some_and(|last| at <= last) {
            return Vec::new(); // replayed
        }
        self.archive();
        self.touch(at);
        let mut effects = Vec::new();
        self.answers += 1;
        self.answered_at = Some(at);
        self.named = steps_named(answer_text);
        self.steps = steps_in_activity(&self.named, recent_actions);
        self.trouble = trouble;
        if let Some(question_at) = self.question_at.take() {
            let secs = (at - question_at).max(0.0);
            self.reply_secs = Some(secs);
            if self.first_reply_secs.is_none() {
                self.first_reply_secs = Some(secs);
                effects.push(Effect::ObserveFirstReply { secs });
            }
        }
        let mut topic = std::mem::take(&mut self.pending_topic);
        topic.extend(self.steps.iter().flat_map(|s| s.words.iter().map(|w| crate::steps::fold(w))));
        topic.sort_unstable();
        topic.dedup();
        topic.truncate(MAX_TOPIC_WORDS);
        self.topic = topic;
        effects
    }

    /// The model said the visitor's problem is solved.
    pub fn model_confirmed(&mut self, at: f64) -> Vec<Effect> {
        match (self.answered_at, self.outcome) {
            (Some(answered_at), None | Some(Outcome::Stuck))
                if at >= answered_at && at - answered_at <= self.window_secs =>
            {
                self.touch(at);
                self.decide(Outcome::Confirmed, at)
            }
            _ => Vec::new(),
        }
    }

    /// The conversation was handed over to a human (`reason`: `asked`, `unable`, `operator`…).
    pub fn handed_off(&mut self, at: f64, reason: &str) -> Vec<Effect> {
        if self.decided.contains(&Outcome::Escalated) || self.is_before_answer(at) {
            return Vec::new();
        }
        if self.outcome.is_some_and(Outcome::is_resolved) && self.question_at.is_some() {
            // A new question after a resolved answer: the hand-off is about it, not the answer.
            self.archive();
        }
        self.touch(at);
        self.handoff_reason = Some(reason.chars().take(40).collect());
        self.decide(Outcome::Escalated, at)
    }

    /// A proactive trigger fired for the visitor: the same trigger again after the answer is
    /// the same trouble (stuck); an error page is stuck whatever fired before.
    pub fn trigger_fired(&mut self, at: f64, trigger: Trigger) -> Vec<Effect> {
        if !self.may_get_stuck(at) {
            return Vec::new();
        }
        if self.trouble.trigger == Some(trigger) || trigger == Trigger::ErrorPage {
            self.touch(at);
            return self.stuck(at);
        }
        Vec::new()
    }

    /// The visitor's actions (in order) at `at`: an action after the answer that matches a step
    /// within `OUTCOME_CONFIRM_SECS` confirms it; an error page, or going back and forth between
    /// the trouble's pages, within the window, is stuck. An action's own time is used when it
    /// has one, `at` otherwise.
    pub fn activity(&mut self, at: f64, actions: &[ActionRecord<'_>]) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(answered_at) = self.answered_at else { return effects };
        for action in actions {
            let t = action_time(action).unwrap_or(at);
            if t < answered_at || t - answered_at > self.window_secs {
                continue;
            }
            if matches!(self.outcome, None | Some(Outcome::Stuck))
                && t - answered_at <= self.confirm_secs
                && let Some(step) = self.named.iter().find(|s| matches_step(s, action))
            {
                if !self.steps.contains(step) {
                    self.steps.push(step.clone());
                }
                self.touch(t);
                effects.extend(self.decide(Outcome::Confirmed, t));
                continue;
            }
            let page = action.canonical_url.trim_end_matches('/');
            if !page.is_empty() && self.pages_since_answer.last().map(String::as_str) != Some(page) {
                self.pages_since_answer.push(page.to_owned());
                if self.pages_since_answer.len() > MAX_PAGES {
                    self.pages_since_answer.remove(0);
                }
            }
            if self.may_get_stuck(t) && (self.is_error_page(action) || self.ping_pong_again()) {
                self.touch(t);
                effects.extend(self.stuck(t));
            }
        }
        effects
    }

    /// Time passed: an answer with no visitor message, no hand-off and no sign of being stuck
    /// for `OUTCOME_WINDOW_SECS` is assumed to have worked.
    pub fn tick(&mut self, now: f64) -> Vec<Effect> {
        match (self.answered_at, self.outcome) {
            (Some(answered_at), None) if now - answered_at >= self.window_secs && !self.visitor_wrote_since_answer => {
                self.touch(now);
                self.decide(Outcome::Assumed, now)
            }
            _ => Vec::new(),
        }
    }

    /// Whether nothing more can happen to this record until the visitor writes again (the
    /// caller may stop ticking it).
    pub fn is_settled(&self) -> bool {
        self.answered_at.is_none() || self.outcome.is_some_and(|o| o != Outcome::Stuck)
    }

    /// The time of the latest event, for [`crate::store::OutcomeStore::list_since`].
    pub fn last_event_at(&self) -> f64 {
        self.updated_at
    }

    /// The current cycle as an archived one (the report reads both alike).
    pub fn current(&self) -> PastAnswer {
        PastAnswer {
            question_at: self.question_at,
            answered_at: self.answered_at,
            reply_secs: self.reply_secs,
            outcome: self.outcome,
            decided: self.decided.clone(),
            decided_at: self.decided_at,
            follow_up_sent: self.follow_up_sent,
            handoff_reason: self.handoff_reason.clone(),
        }
    }

    fn decide(&mut self, outcome: Outcome, at: f64) -> Vec<Effect> {
        if self.decided.contains(&outcome) {
            return Vec::new();
        }
        self.decided.push(outcome);
        self.outcome = Some(outcome);
        self.decided_at = Some(at);
        vec![Effect::SetSegment(outcome.segment()), Effect::CountOutcome(outcome)]
    }

    fn stuck(&mut self, at: f64) -> Vec<Effect> {
        let mut effects = self.decide(Outcome::Stuck, at);
        if !effects.is_empty() && !self.follow_up_sent && !self.visitor_wrote_since_answer {
            self.follow_up_sent = true;
            effects.push(Effect::SendFollowUp { text: follow_up_text(self.steps.first()) });
        }
        effects
    }

    fn may_get_stuck(&self, at: f64) -> bool {
        self.outcome.is_none()
            && self.answered_at.is_some_and(|answered_at| at >= answered_at && at - answered_at <= self.window_secs)
    }

    fn is_before_answer(&self, at: f64) -> bool {
        self.answered_at.is_some_and(|answered_at| at < answered_at)
    }

    fn is_error_page(&self, action: &ActionRecord<'_>) -> bool {
        let page = action.canonical_url.trim_end_matches('/');
        self.trouble.error_page.as_deref().is_some_and(|p| !page.is_empty() && p.trim_end_matches('/') == page)
            || looks_like_error(action)
    }

    /// The last four pages go A, B, A, B and one of them is a page of the trouble's ping-pong.
    fn ping_pong_again(&self) -> bool {
        let pages = &self.pages_since_answer;
        let [.., a, b, c, d] = pages.as_slice() else { return false };
        a == c && b == d && a != b && {
            let known = |p: &String| self.trouble.ping_pong.iter().any(|t| t.trim_end_matches('/') == p);
            known(a) || known(b)
        }
    }

    fn question(&mut self, at: f64, text: &str) {
        self.question_at.get_or_insert(at);
        for word in content_words(text) {
            if self.pending_topic.len() < MAX_TOPIC_WORDS && !self.pending_topic.contains(&word) {
                self.pending_topic.push(word);
            }
        }
    }

    fn same_topic(&self, text: &str) -> bool {
        content_words(text).any(|w| self.topic.binary_search(&w).is_ok())
    }

    fn archive(&mut self) {
        if self.answered_at.is_none() && self.decided.is_empty() {
            return;
        }
        let past = PastAnswer { question_at: None, ..self.current() };
        self.earlier.push(past);
        if self.earlier.len() > MAX_EARLIER {
            self.earlier.remove(0);
        }
        self.answered_at = None;
        self.named.clear();
        self.steps.clear();
        self.topic.clear();
        self.trouble = Trouble::default();
        self.reply_secs = None;
        self.follow_up_sent = false;
        self.visitor_wrote_since_answer = false;
        self.outcome = None;
        self.decided_at = None;
        self.decided.clear();
        self.handoff_reason = None;
        self.pages_since_answer.clear();
    }

    fn touch(&mut self, at: f64) {
        if at > self.updated_at {
            self.updated_at = at;
        }
    }
}

/// The follow-up sent once when the visitor seems stuck after an answer.
pub fn follow_up_text(step: Option<&Step>) -> String {
    match step {
        Some(step) => {
            format!("Still stuck on {}? I can get a person.", agent_core::proactive::one_line(&step.name, 80))
        }
        None => "Still stuck? I can get a person.".to_owned(),
    }
}

/// An action's time: its end, else its start; `None` when it has neither.
fn action_time(action: &ActionRecord<'_>) -> Option<f64> {
    [action.timestamp_end, action.timestamp_start].into_iter().find(|t| *t > 0.0 && t.is_finite())
}

/// Words of a page title or URL path that mark an error page.
const ERROR_WORDS: &[&str] = &["error", "404", "500", "502", "503"];
const ERROR_PHRASES: &[&str] = &["not found", "something went wrong", "went wrong", "oops"];

/// A page whose title or URL path looks like an error (`error`, `404`, `500`, "not found",
/// "something went wrong", "oops").
pub fn looks_like_error(action: &ActionRecord<'_>) -> bool {
    let title = action.title.to_lowercase();
    let url = action.canonical_url.split_once("://").map_or(&*action.canonical_url, |(_, rest)| rest);
    folded_words(&action.title)
        .chain(folded_words(url.split_once('/').map_or("", |(_, p)| p)))
        .any(|w| ERROR_WORDS.contains(&w.as_str()))
        || ERROR_PHRASES.iter().any(|p| title.contains(p))
}

/// The words of a message that name its topic: lowercase, folded, no stop words, three
/// letters or more.
fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    folded_words(text).filter(|w| w.chars().count() >= 3 && !is_stop_word(w) && !COMMON.contains(&w.as_str()))
}

/// Frequent words of chat messages that say nothing of the topic (folded).
const COMMON: &[&str] = &[
    "hello", "thank", "thanks", "again", "still", "have", "want", "need", "would", "could", "should", "just", "also",
    "but", "not", "now", "one", "get", "work", "working", "worked", "doesn't", "don't", "problem", "issue", "help",
    "bonjour", "merci", "hallo", "danke", "hola", "gracia", "all", "any", "some", "yes", "okay", "about", "this",
    "that", "thi", "doe", "vou", "there", "when", "which", "who", "will", "way", "like",
];

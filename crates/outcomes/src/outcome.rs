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
use activity::action::ActionRecord;
use proactive::Trigger;
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
    pub fn from_firing(firing: &proactive::Firing) -> Self {
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

    /// Adds what the visitor's activity before the answer shows: going back and forth between
    /// two pages (A, B, A, B among the last pages, repeats folded) and an error page as the
    /// latest page. What is known already (from a firing) is kept.
    pub fn with_activity(mut self, actions: &[ActionRecord<'_>]) -> Self {
        let mut pages: Vec<&str> = Vec::new();
        for action in actions {
            let page = action.canonical_url.trim_end_matches('/');
            if !page.is_empty() && pages.last() != Some(&page) {
                pages.push(page);
            }
        }
        if self.ping_pong.is_empty()
            && let Some(pair) = pages.windows(4).rev().find(|w| w[0] == w[2] && w[1] == w[3] && w[0] != w[1])
        {
            self.ping_pong = vec![pair[0].to_owned(), pair[1].to_owned()];
        }
        if self.error_page.is_none()
            && let Some(last) = actions.iter().rev().find(|a| !a.canonical_url.is_empty())
            && looks_like_error(last)
        {
            self.error_page = Some(last.canonical_url.trim_end_matches('/').to_owned());
        }
        self
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
    /// The time of the latest action applied: actions before it are not read again.
    pub activity_seen_until: Option<f64>,
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

    /// The visitor wrote. A confirming phrase ([`confirms`]) within the window confirms an
    /// answer not resolved yet; after a confirmed or assumed answer, a message on the same topic
    /// (a content word of the question or of a step), or saying it did not work
    /// ([`reports_failure`]), within `OUTCOME_WINDOW_SECS` of that resolution reopens it; anything else is a new question (its answer
    /// starts a new window).
    pub fn visitor_wrote(&mut self, at: f64, text: &str) -> Vec<Effect> {
        if self.last_visitor_message_at.is_some_and(|last| at <= last) || self.is_before_answer(at) {
            return Vec::new(); // replayed, or part of what was answered
        }
        self.last_visitor_message_at = Some(at);
        self.touch(at);
        if let Some(answered_at) = self.answered_at {
            let in_window = |since: Option<f64>| since.is_some_and(|since| at - since <= self.window_secs);
            match self.outcome {
                None | Some(Outcome::Stuck) if in_window(Some(answered_at)) && confirms(text) => {
                    return self.decide(Outcome::Confirmed, at);
                }
                Some(o)
                    if o.is_resolved()
                        && in_window(self.decided_at)
                        && (reports_failure(text) || self.same_topic(text)) =>
                {
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
    /// has one, `at` otherwise; actions older than the latest one applied are skipped, so a
    /// replayed batch changes nothing (its newest action is read again, to no effect).
    pub fn activity(&mut self, at: f64, actions: &[ActionRecord<'_>]) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(answered_at) = self.answered_at else { return effects };
        let seen_until = self.activity_seen_until;
        for action in actions {
            let t = action_time(action).unwrap_or(at);
            if seen_until.is_some_and(|seen| t < seen) {
                continue; // applied already (a replayed batch)
            }
            self.activity_seen_until = Some(self.activity_seen_until.map_or(t, |seen| seen.max(t)));
            if t < answered_at || t - answered_at > self.window_secs {
                continue;
            }
            let page = action.canonical_url.trim_end_matches('/');
            if !page.is_empty() && self.pages_since_answer.last().map(String::as_str) != Some(page) {
                self.pages_since_answer.push(page.to_owned());
                if self.pages_since_answer.len() > MAX_PAGES {
                    self.pages_since_answer.remove(0);
                }
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
            format!("Still stuck on {}? I can get a person.", proactive::one_line(&step.name, 80))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Short windows: confirmed within 2 s, watched for 4 s.
    fn settings() -> Settings {
        Settings { confirm_secs: 2.0, window_secs: 4.0, ..Settings::default() }
    }

    fn at(title: &str, url: &str, t: f64) -> ActionRecord<'static> {
        ActionRecord {
            title: title.to_owned().into(),
            canonical_url: url.to_owned().into(),
            timestamp_start: t,
            ..ActionRecord::default()
        }
    }

    fn decided(effects: &[Effect]) -> Vec<Outcome> {
        effects.iter().filter_map(|e| if let Effect::CountOutcome(o) = e { Some(*o) } else { None }).collect()
    }

    fn follow_ups(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| if let Effect::SendFollowUp { text } = e { Some(text.clone()) } else { None })
            .collect()
    }

    const ANSWER: &str = "open Settings, then click Export CSV";

    /// Asked at 100, answered at 101 naming Settings and Export CSV; the visitor had clicked
    /// Export CSV before (so it is a step), never Settings.
    fn answered(trouble: Trouble) -> ConversationOutcome {
        let mut c = ConversationOutcome::new("session_1", &settings());
        assert!(c.visitor_wrote(100.0, "How do I export my invoices?").is_empty());
        let before = [at("Click Export CSV button", "https://app.example.com/reports", 99.0)];
        assert_eq!(c.answered(101.0, ANSWER, &before, trouble), [Effect::ObserveFirstReply { secs: 1.0 }]);
        c
    }

    #[test]
    fn a_click_on_the_named_step_confirms() {
        let mut c = answered(Trouble::default());
        assert_eq!(c.named.len(), 2);
        assert_eq!(c.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["Export CSV"]);
        let later = [at("Page Load: Reports", "https://app.example.com/reports", 101.5)];
        assert!(c.activity(101.5, &later).is_empty(), "not a step");
        let click = [at("Click Export CSV button", "https://app.example.com/reports", 102.0)];
        let effects = c.activity(102.0, &click);
        assert_eq!(effects, [Effect::SetSegment("bot-confirmed"), Effect::CountOutcome(Outcome::Confirmed)]);
        assert_eq!((c.outcome, c.decided_at), (Some(Outcome::Confirmed), Some(102.0)));
        assert!(c.activity(102.0, &click).is_empty(), "replayed");
        assert!(c.tick(200.0).is_empty(), "decided once");
        assert!(c.is_settled());
    }

    #[test]
    fn a_step_matched_after_the_confirm_window_or_before_the_answer_does_not_confirm() {
        let mut c = answered(Trouble::default());
        assert!(c.activity(110.0, &[at("Click Export CSV button", "/reports", 100.5)]).is_empty(), "before");
        assert!(c.activity(110.0, &[at("Click Export CSV button", "/reports", 103.5)]).is_empty(), "2.5 s after");
        assert_eq!(c.outcome, None);
        // A name the visitor never met before is a step once their activity after the answer has it.
        let mut c = answered(Trouble::default());
        let effects = c.activity(102.0, &[at("Page Load: Settings", "https://app.example.com/settings", 0.0)]);
        assert_eq!(decided(&effects), [Outcome::Confirmed], "the action's own time, else the event's");
        assert_eq!(c.steps.len(), 2);
    }

    #[test]
    fn names_not_in_the_visitors_activity_are_not_steps_and_sentence_start_capitals_are_ignored() {
        let mut c = ConversationOutcome::new("c", &settings());
        c.answered(10.0, "Great question. Export is under Reports, ask Stripe.", &[], Trouble::default());
        let names: Vec<&str> = c.named.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Reports", "Stripe"], "Great and Export start sentences");
        assert!(c.steps.is_empty(), "nothing the visitor did names them");
        assert!(c.activity(11.0, &[at("Click Export", "/data", 11.0)]).is_empty());
        assert_eq!(decided(&c.activity(11.0, &[at("Page Load: Reports", "/reports", 11.0)])), [Outcome::Confirmed]);
    }

    #[test]
    fn silence_for_the_window_is_assumed() {
        let mut c = answered(Trouble::default());
        assert!(c.tick(104.9).is_empty());
        assert_eq!(c.tick(105.0), [Effect::SetSegment("bot-assumed"), Effect::CountOutcome(Outcome::Assumed)]);
        assert!(c.tick(106.0).is_empty());
        // A message, not a confirmation, keeps it from being assumed.
        let mut c = answered(Trouble::default());
        c.visitor_wrote(102.0, "and what about the PDF version?");
        assert!(c.tick(200.0).is_empty());
        assert!(!c.is_settled() || c.outcome.is_none());
        // So does a hand-off (escalated) or being stuck.
        let mut c = answered(Trouble::default());
        c.handed_off(102.0, "asked");
        assert!(c.tick(200.0).is_empty());
    }

    #[test]
    fn thanks_that_worked_or_the_model_confirms() {
        let mut c = answered(Trouble::default());
        assert_eq!(decided(&c.visitor_wrote(102.0, "Thanks, that worked!")), [Outcome::Confirmed]);
        assert!(c.visitor_wrote(102.0, "Thanks, that worked!").is_empty(), "replayed");
        let mut c = answered(Trouble::default());
        assert!(c.model_confirmed(100.0).is_empty(), "before the answer");
        assert_eq!(decided(&c.model_confirmed(103.0)), [Outcome::Confirmed]);
        assert!(c.model_confirmed(103.5).is_empty());
        let mut c = answered(Trouble::default());
        assert!(c.visitor_wrote(102.0, "it still doesn't work").is_empty());
        assert!(c.visitor_wrote(110.0, "thanks, that worked").is_empty(), "past the window");
    }

    #[test]
    fn a_hand_off_escalates_once() {
        let mut c = answered(Trouble::default());
        let effects = c.handed_off(102.0, "unable");
        assert_eq!(effects, [Effect::SetSegment("bot-escalated"), Effect::CountOutcome(Outcome::Escalated)]);
        assert_eq!(c.handoff_reason.as_deref(), Some("unable"));
        assert!(c.handed_off(102.0, "unable").is_empty());
        assert!(c.handed_off(103.0, "asked").is_empty());
        // Without any answer: the question was escalated.
        let mut c = ConversationOutcome::new("c", &settings());
        c.visitor_wrote(5.0, "a human please");
        assert_eq!(decided(&c.handed_off(6.0, "asked")), [Outcome::Escalated]);
        assert_eq!(c.first_reply_secs, None);
    }

    #[test]
    fn the_same_trigger_again_is_stuck_with_exactly_one_follow_up() {
        let trouble = Trouble { trigger: Some(Trigger::Repeat), ..Trouble::default() };
        let mut c = answered(trouble);
        assert!(c.trigger_fired(101.5, Trigger::Dwell).is_empty(), "another trigger");
        let effects = c.trigger_fired(102.0, Trigger::Repeat);
        assert_eq!(
            effects,
            [
                Effect::SetSegment("bot-stuck"),
                Effect::CountOutcome(Outcome::Stuck),
                Effect::SendFollowUp { text: "Still stuck on Export CSV? I can get a person.".into() }
            ]
        );
        assert!(c.follow_up_sent);
        assert!(c.trigger_fired(102.5, Trigger::Repeat).is_empty());
        assert!(c.activity(102.5, &[at("Error 500", "https://app.example.com/error", 102.5)]).is_empty());
        assert!(c.tick(300.0).is_empty(), "stuck is not assumed");
        // Getting unstuck by the step still confirms, without another follow-up.
        let effects = c.activity(102.8, &[at("Click Export CSV button", "/reports", 102.8)]);
        assert_eq!(decided(&effects), [Outcome::Confirmed]);
        assert!(follow_ups(&effects).is_empty());
        assert_eq!(c.decided, [Outcome::Stuck, Outcome::Confirmed]);
    }

    #[test]
    fn an_error_page_or_ping_pong_between_the_same_pages_is_stuck() {
        let mut c = answered(Trouble::default());
        let effects = c.activity(102.0, &[at("Oops, something went wrong", "https://app.example.com/x", 102.0)]);
        assert_eq!(decided(&effects), [Outcome::Stuck]);
        assert_eq!(follow_ups(&effects).len(), 1);

        let trouble = Trouble {
            trigger: Some(Trigger::PingPong),
            ping_pong: vec!["https://app.example.com/billing".into()],
            ..Trouble::default()
        };
        let mut c = answered(trouble.clone());
        let pages = |urls: &[&str], t0: f64| -> Vec<ActionRecord<'static>> {
            urls.iter().enumerate().map(|(i, u)| at("Page Load", u, t0 + i as f64 * 0.1)).collect()
        };
        let other = pages(&["https://app.example.com/a", "https://app.example.com/b"], 101.1);
        let other: Vec<_> = other.iter().chain(other.iter()).cloned().collect();
        assert!(c.activity(101.5, &other).is_empty(), "back and forth elsewhere");
        let effects = c.activity(
            102.0,
            &pages(
                &[
                    "https://app.example.com/billing",
                    "https://app.example.com/plans/",
                    "https://app.example.com/billing",
                    "https://app.example.com/plans",
                ],
                101.6,
            ),
        );
        assert_eq!(decided(&effects), [Outcome::Stuck]);
        // After the window, nothing is stuck any more.
        let mut c = answered(Trouble { error_page: Some("https://app.example.com/oops".into()), ..trouble });
        assert!(c.activity(106.0, &[at("Page Load", "https://app.example.com/oops", 106.0)]).is_empty());
        assert!(c.trigger_fired(106.0, Trigger::PingPong).is_empty());
    }

    #[test]
    fn no_follow_up_once_the_visitor_wrote() {
        let trouble = Trouble { trigger: Some(Trigger::Dwell), ..Trouble::default() };
        let mut c = answered(trouble);
        c.visitor_wrote(101.5, "hmm where exactly?");
        let effects = c.trigger_fired(102.0, Trigger::Dwell);
        assert_eq!(decided(&effects), [Outcome::Stuck]);
        assert!(follow_ups(&effects).is_empty(), "the bot is answering them anyway");
    }

    #[test]
    fn the_same_topic_after_a_resolved_answer_reopens_it_a_new_question_does_not() {
        let mut c = answered(Trouble::default());
        c.visitor_wrote(102.0, "thanks!");
        let effects = c.visitor_wrote(103.0, "the exported invoices are empty though");
        assert_eq!(effects, [Effect::SetSegment("bot-reopened"), Effect::CountOutcome(Outcome::Reopened)]);
        assert!(c.visitor_wrote(103.0, "the exported invoices are empty though").is_empty(), "replayed");
        assert_eq!(c.question_at, Some(103.0), "a question waiting for its answer");

        let mut c = answered(Trouble::default());
        c.tick(105.0);
        assert_eq!(c.outcome, Some(Outcome::Assumed));
        assert!(c.visitor_wrote(105.0, "how do I invite a teammate?").is_empty(), "another topic");
        assert_eq!(decided(&c.visitor_wrote(108.9, "it still doesn't work")), [Outcome::Reopened], "4 s after");

        let mut c = answered(Trouble::default());
        c.model_confirmed(102.0);
        assert!(c.visitor_wrote(106.5, "export invoices again?").is_empty(), "past the window: a new question");
    }

    #[test]
    fn a_new_answer_starts_a_new_cycle() {
        let trouble = Trouble { trigger: Some(Trigger::Repeat), ..Trouble::default() };
        let mut c = answered(trouble.clone());
        c.trigger_fired(102.0, Trigger::Repeat);
        c.visitor_wrote(102.5, "where is it exactly?");
        assert!(c.answered(103.0, "click Export CSV at the top", &[], trouble).is_empty(), "first reply seen already");
        assert_eq!(c.answers, 2);
        assert_eq!(c.reply_secs, Some(0.5));
        assert_eq!(c.earlier.len(), 1);
        assert_eq!(c.earlier[0].outcome, Some(Outcome::Stuck));
        assert!(c.earlier[0].follow_up_sent);
        assert!(!c.follow_up_sent && c.outcome.is_none());
        let effects = c.trigger_fired(103.5, Trigger::Repeat);
        assert_eq!(follow_ups(&effects), ["Still stuck? I can get a person."], "one per answer; no step seen");
        assert!(c.answered(103.0, "replayed", &[], Trouble::default()).is_empty());
        assert_eq!(c.answers, 2);
    }

    /// Two replicas: one applies the events and stores the record; the other loads it and
    /// replays the same events (a redelivery): nothing is decided or sent twice.
    #[test]
    fn replayed_events_give_one_outcome() {
        let trouble = Trouble { trigger: Some(Trigger::ErrorPage), ..Trouble::default() };
        let events = |c: &mut ConversationOutcome| -> Vec<Effect> {
            let mut effects = c.visitor_wrote(100.0, "export fails");
            let before = [at("Click Export CSV button", "/reports", 99.0)];
            effects.extend(c.answered(101.0, ANSWER, &before, trouble.clone()));
            effects.extend(c.trigger_fired(101.5, Trigger::ErrorPage));
            effects.extend(c.activity(102.0, &[at("Click Export CSV button", "/reports", 102.0)]));
            effects.extend(c.visitor_wrote(102.5, "thanks, that worked"));
            effects.extend(c.tick(110.0));
            effects
        };
        let mut first = ConversationOutcome::new("c", &settings());
        let effects = events(&mut first);
        assert_eq!(decided(&effects), [Outcome::Stuck, Outcome::Confirmed]);
        assert_eq!(follow_ups(&effects).len(), 1);
        let stored = serde_json::to_string(&first).unwrap();
        let mut second: ConversationOutcome = serde_json::from_str(&stored).unwrap();
        assert_eq!(second, first);
        assert!(events(&mut second).is_empty());
        assert_eq!(second, first);
    }
}

//! The outcomes report (`webhook report`): what became of the bot's answers since a time.

use crate::offers::OfferStats;
use crate::outcome::{ConversationOutcome, Outcome, PastAnswer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One trigger's offers in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerReport {
    pub trigger: String,
    /// Offers sent (since the offer record began; offers are not dated).
    pub offered: u64,
    pub accepted: u64,
    pub ignored: u64,
    /// `accepted / (accepted + ignored)`; `None` before any result.
    pub acceptance: Option<f64>,
    /// When learning paused it: until when (Unix seconds), and why.
    pub paused_until: Option<f64>,
    pub pause_reason: Option<String>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Unix seconds.
    pub since: f64,
    /// Conversations with an answer or a hand-off since `since`.
    pub conversations: usize,
    /// Answers (and hand-offs without an answer) since `since`.
    pub answers: usize,
    /// Per outcome label, answers whose last decided outcome it is (every label present).
    pub outcomes: BTreeMap<String, usize>,
    /// Answers with no outcome yet (still in their window, or superseded by a new question).
    pub undecided: usize,
    /// `outcomes / answers` per label.
    pub rates: BTreeMap<String, f64>,
    /// Confirmed + assumed, over answers.
    pub resolution_rate: Option<f64>,
    /// Time to the bot's first reply in a conversation, seconds.
    pub first_reply_median_secs: Option<f64>,
    pub first_reply_p90_secs: Option<f64>,
    pub follow_ups: usize,
    /// Hand-offs by reason (`asked`, `unable`, …).
    pub handoffs: BTreeMap<String, usize>,
    pub offers: Vec<TriggerReport>,
    /// Triggers paused by offer learning.
    pub paused_triggers: Vec<String>,
}

impl Report {
    /// The report of `outcomes` (each conversation's record) and `offers`, for answers since
    /// `since` (Unix seconds).
    pub fn from(outcomes: &[ConversationOutcome], offers: &OfferStats, since: f64) -> Report {
        let mut counts: BTreeMap<String, usize> = Outcome::ALL.iter().map(|o| (o.label().to_owned(), 0)).collect();
        let (mut conversations, mut answers, mut undecided, mut follow_ups) = (0, 0, 0, 0);
        let mut handoffs: BTreeMap<String, usize> = BTreeMap::new();
        let mut first_replies = Vec::new();
        for conversation in outcomes {
            let current = conversation.current();
            let cycles = conversation.earlier.iter().chain(std::iter::once(&current));
            let mut counted = false;
            for cycle in cycles.filter(|c| cycle_time(c).is_some_and(|t| t >= since)) {
                counted = true;
                answers += 1;
                match cycle.outcome {
                    Some(outcome) => *counts.entry(outcome.label().to_owned()).or_default() += 1,
                    None => undecided += 1,
                }
                follow_ups += usize::from(cycle.follow_up_sent);
                if let Some(reason) = &cycle.handoff_reason {
                    *handoffs.entry(reason.clone()).or_default() += 1;
                }
            }
            if counted {
                conversations += 1;
                first_replies.extend(conversation.first_reply_secs.filter(|s| s.is_finite()));
            }
        }
        let rate = |n: usize| (answers > 0).then(|| n as f64 / answers as f64);
        let rates = counts.iter().filter_map(|(label, n)| Some((label.clone(), rate(*n)?))).collect();
        let resolved = counts["confirmed"] + counts["assumed"];
        first_replies.sort_by(f64::total_cmp);
        let offers_report: Vec<TriggerReport> = offers
            .triggers
            .iter()
            .map(|t| {
                let results = t.accepted + t.ignored;
                TriggerReport {
                    trigger: t.trigger.as_str().to_owned(),
                    offered: t.offered,
                    accepted: t.accepted,
                    ignored: t.ignored,
                    acceptance: (results > 0).then(|| t.accepted as f64 / results as f64),
                    paused_until: offers.paused_until(t.trigger),
                    pause_reason: offers.pause_reason(t.trigger).map(str::to_owned),
                }
            })
            .collect();
        let paused_triggers =
            offers_report.iter().filter(|t| t.paused_until.is_some()).map(|t| t.trigger.clone()).collect();
        Report {
            since,
            conversations,
            answers,
            outcomes: counts,
            undecided,
            rates,
            resolution_rate: rate(resolved),
            first_reply_median_secs: percentile(&first_replies, 0.5),
            first_reply_p90_secs: percentile(&first_replies, 0.9),
            follow_ups,
            handoffs,
            offers: offers_report,
            paused_triggers,
        }
    }

    /// The report as plain text, for a terminal.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let pct = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{:.1} %", r * 100.0));
        let secs = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
        let _ = writeln!(out, "Bot outcomes since {}", self.since);
        let _ = writeln!(out, "  conversations handled: {}", self.conversations);
        let _ = writeln!(out, "  answers: {} (undecided {})", self.answers, self.undecided);
        let _ = writeln!(out, "  resolution rate (confirmed + assumed): {}", pct(self.resolution_rate));
        for outcome in Outcome::ALL {
            let label = outcome.label();
            let n = self.outcomes.get(label).copied().unwrap_or(0);
            let _ = writeln!(out, "  {label:<10} {n:>6}  {}", pct(self.rates.get(label).copied()));
        }
        let _ = writeln!(
            out,
            "  time to first reply: median {}, p90 {}",
            secs(self.first_reply_median_secs),
            secs(self.first_reply_p90_secs)
        );
        let _ = writeln!(out, "  follow-ups sent: {}", self.follow_ups);
        if self.handoffs.is_empty() {
            let _ = writeln!(out, "  hand-offs: none");
        } else {
            let by_reason: Vec<String> = self.handoffs.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(out, "  hand-offs: {}", by_reason.join(", "));
        }
        let _ = writeln!(out, "Proactive offers per trigger");
        for t in &self.offers {
            let _ = write!(
                out,
                "  {:<10} offered {:>5}  accepted {:>5}  ignored {:>5}  acceptance {}",
                t.trigger,
                t.offered,
                t.accepted,
                t.ignored,
                pct(t.acceptance)
            );
            if let Some(until) = t.paused_until {
                let _ = write!(out, "  PAUSED until {until}");
            }
            out.push('\n');
            if let Some(reason) = &t.pause_reason {
                let _ = writeln!(out, "    {reason}");
            }
        }
        if self.paused_triggers.is_empty() {
            let _ = writeln!(out, "Paused triggers: none");
        } else {
            let _ = writeln!(out, "Paused triggers: {}", self.paused_triggers.join(", "));
        }
        out
    }
}

/// When a cycle happened: its answer, else its question, else its decision.
fn cycle_time(cycle: &PastAnswer) -> Option<f64> {
    cycle.answered_at.or(cycle.question_at).or(cycle.decided_at)
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Trouble;
    use crate::settings::{OfferSettings, Settings};
    use proactive::Trigger;

    fn settings() -> Settings {
        Settings { confirm_secs: 2.0, window_secs: 4.0, ..Settings::default() }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&[3.0], 0.9), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn figures_of_a_small_day() {
        let s = settings();
        let mut records = Vec::new();
        // c0: asked at 100, answered at 102 (2 s), thanked: confirmed.
        let mut c = ConversationOutcome::new("c0", &s);
        c.visitor_wrote(100.0, "how do I export?");
        c.answered(102.0, "click Export CSV", &[], Trouble::default());
        c.visitor_wrote(103.0, "thanks, that worked");
        records.push(c);
        // c1: asked at 100, answered at 104 (4 s), then silence: assumed.
        let mut c = ConversationOutcome::new("c1", &s);
        c.visitor_wrote(100.0, "where is billing?");
        c.answered(104.0, "open Billing", &[], Trouble::default());
        c.tick(200.0);
        records.push(c);
        // c2: asked at 100, handed over at once: escalated, no reply.
        let mut c = ConversationOutcome::new("c2", &s);
        c.visitor_wrote(100.0, "a human please");
        c.handed_off(101.0, "asked");
        records.push(c);
        // c3: answered at 110 s after its question (10 s), still open.
        let mut c = ConversationOutcome::new("c3", &s);
        c.visitor_wrote(100.0, "refund?");
        c.answered(110.0, "see Refunds", &[], Trouble::default());
        records.push(c);
        // c4: before `since`.
        let mut c = ConversationOutcome::new("c4", &s);
        c.visitor_wrote(1.0, "old");
        c.answered(2.0, "old", &[], Trouble::default());
        c.tick(50.0);
        records.push(c);
        let mut offers = OfferStats::new(OfferSettings { window: 2, accept_secs: 2.0, ..OfferSettings::default() });
        offers.offered(Trigger::Dwell, "c0", 90.0, 90.0);
        offers.visitor_wrote("c0", 91.0);
        offers.offered(Trigger::ErrorPage, "c9", 90.0, 90.0);
        offers.offered(Trigger::ErrorPage, "c8", 91.0, 91.0);
        offers.settle(100.0);

        let report = Report::from(&records, &offers, 60.0);
        assert_eq!((report.conversations, report.answers, report.undecided), (4, 4, 1));
        assert_eq!(report.outcomes["confirmed"], 1);
        assert_eq!(report.outcomes["assumed"], 1);
        assert_eq!(report.outcomes["escalated"], 1);
        assert_eq!(report.outcomes["stuck"], 0);
        assert_eq!(report.rates["confirmed"], 0.25);
        assert_eq!(report.resolution_rate, Some(0.5));
        assert_eq!(report.first_reply_median_secs, Some(4.0), "2, 4, 10");
        assert_eq!(report.first_reply_p90_secs, Some(10.0));
        assert_eq!(report.handoffs.get("asked"), Some(&1));
        let dwell = report.offers.iter().find(|t| t.trigger == "dwell").unwrap();
        assert_eq!((dwell.offered, dwell.accepted, dwell.acceptance), (1, 1, Some(1.0)));
        assert_eq!(report.paused_triggers, ["error_page"]);
        let text = report.render_text();
        assert!(text.contains("conversations handled: 4"), "{text}");
        assert!(text.contains("confirmed       1  25.0 %"), "{text}");
        assert!(text.contains("median 4.0 s, p90 10.0 s"), "{text}");
        assert!(text.contains("hand-offs: asked 1"), "{text}");
        assert!(text.contains("Paused triggers: error_page"), "{text}");
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }
}

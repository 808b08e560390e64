//! Offer learning: per proactive trigger, the results of its last `OFFER_LEARN_WINDOW` offers
//! (accepted: the visitor wrote within `OFFER_ACCEPT_SECS`; ignored otherwise). A trigger whose
//! acceptance over a full window is below `OFFER_MIN_ACCEPT` is paused for a day; its window
//! then starts empty, so it is judged again only on offers made after the pause.
//! `OFFER_LEARNING=off` keeps counting results and never pauses.

use crate::settings::OfferSettings;
use proactive::Trigger;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Offers waiting for their result, per trigger (the oldest is settled as ignored beyond it).
pub const MAX_PENDING: usize = 10_000;

/// What became of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferResult {
    Accepted,
    Ignored,
}

impl OfferResult {
    pub const ALL: [OfferResult; 2] = [OfferResult::Accepted, OfferResult::Ignored];

    /// The `result` label of `proactive_offer_results_total{trigger,result}`.
    pub const fn label(self) -> &'static str {
        match self {
            OfferResult::Accepted => "accepted",
            OfferResult::Ignored => "ignored",
        }
    }
}

/// What the caller does after an offer event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferEvent {
    /// `proactive_offer_results_total{trigger,result}` += 1.
    Result { trigger: Trigger, result: OfferResult },
    /// `proactive_trigger_paused{trigger}` = 1, and log `reason`; no offers for `trigger`
    /// before `until` (Unix seconds).
    Paused { trigger: Trigger, until: f64, reason: String },
    /// `proactive_trigger_paused{trigger}` = 0.
    Resumed { trigger: Trigger },
}

/// An offer sent, waiting for the visitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOffer {
    pub conversation_id: String,
    pub at: f64,
}

/// One trigger's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerOffers {
    pub trigger: Trigger,
    /// The last results, oldest first, at most `OFFER_LEARN_WINDOW`.
    #[serde(default)]
    pub recent: VecDeque<OfferResult>,
    #[serde(default)]
    pub pending: VecDeque<PendingOffer>,
    /// Totals since the record began.
    #[serde(default)]
    pub offered: u64,
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub ignored: u64,
    #[serde(default)]
    pub paused_until: Option<f64>,
    #[serde(default)]
    pub pause_reason: Option<String>,
    #[serde(default)]
    pub pauses: u32,
}

impl TriggerOffers {
    fn new(trigger: Trigger) -> Self {
        Self {
            trigger,
            recent: VecDeque::new(),
            pending: VecDeque::new(),
            offered: 0,
            accepted: 0,
            ignored: 0,
            paused_until: None,
            pause_reason: None,
            pauses: 0,
        }
    }

    /// Accepted share of the results in the window (`None` before any).
    pub fn acceptance(&self) -> Option<f64> {
        let accepted = self.recent.iter().filter(|r| **r == OfferResult::Accepted).count();
        (!self.recent.is_empty()).then(|| accepted as f64 / self.recent.len() as f64)
    }
}

/// Every trigger's offers (plain serde data; kept by the caller, see
/// [`crate::store::OutcomeStore::put_offers`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferStats {
    #[serde(skip, default)]
    settings: OfferSettings,
    pub triggers: Vec<TriggerOffers>,
}

impl Default for OfferStats {
    fn default() -> Self {
        Self::new(OfferSettings::default())
    }
}

impl OfferStats {
    pub fn new(settings: OfferSettings) -> Self {
        Self { settings, triggers: Trigger::ALL.into_iter().map(TriggerOffers::new).collect() }
    }

    /// The same record under `settings` (the settings are not stored: apply the current ones
    /// after loading).
    pub fn with_settings(mut self, settings: OfferSettings) -> Self {
        self.settings = settings;
        for trigger in Trigger::ALL {
            if !self.triggers.iter().any(|t| t.trigger == trigger) {
                self.triggers.push(TriggerOffers::new(trigger));
            }
        }
        for t in &mut self.triggers {
            while t.recent.len() > settings.window {
                t.recent.pop_front();
            }
        }
        self
    }

    pub fn settings(&self) -> &OfferSettings {
        &self.settings
    }

    pub fn trigger(&self, trigger: Trigger) -> &TriggerOffers {
        self.triggers.iter().find(|t| t.trigger == trigger).expect("every trigger has a record")
    }

    fn trigger_mut(&mut self, trigger: Trigger) -> &mut TriggerOffers {
        if let Some(i) = self.triggers.iter().position(|t| t.trigger == trigger) {
            return &mut self.triggers[i];
        }
        self.triggers.push(TriggerOffers::new(trigger));
        self.triggers.last_mut().expect("just pushed")
    }

    /// An offer for `trigger` was sent to `conversation_id` at `at`. The same offer recorded
    /// twice counts once.
    pub fn offered(&mut self, trigger: Trigger, conversation_id: &str, at: f64, now: f64) -> Vec<OfferEvent> {
        let mut events = Vec::new();
        let t = self.trigger_mut(trigger);
        if t.pending.iter().any(|p| p.conversation_id == conversation_id && p.at == at) {
            return events;
        }
        t.offered += 1;
        t.pending.push_back(PendingOffer { conversation_id: conversation_id.to_owned(), at });
        if t.pending.len() > MAX_PENDING {
            t.pending.pop_front();
            events.extend(self.record(trigger, OfferResult::Ignored, now));
        }
        events
    }

    /// The visitor of `conversation_id` wrote at `at`: their offers sent up to
    /// `OFFER_ACCEPT_SECS` before are accepted; older ones ignored.
    pub fn visitor_wrote(&mut self, conversation_id: &str, at: f64) -> Vec<OfferEvent> {
        let accept_secs = self.settings.accept_secs;
        let mut results = Vec::new();
        for t in &mut self.triggers {
            t.pending.retain(|p| {
                if p.conversation_id != conversation_id || p.at > at {
                    return true;
                }
                let result = if at - p.at <= accept_secs { OfferResult::Accepted } else { OfferResult::Ignored };
                results.push((t.trigger, result));
                false
            });
        }
        results.into_iter().flat_map(|(trigger, result)| self.record(trigger, result, at)).collect()
    }

    /// Time passed: offers unanswered for `OFFER_ACCEPT_SECS` are ignored; pauses that ended
    /// are lifted.
    pub fn settle(&mut self, now: f64) -> Vec<OfferEvent> {
        let accept_secs = self.settings.accept_secs;
        let mut results = Vec::new();
        let mut events = Vec::new();
        for t in &mut self.triggers {
            while t.pending.front().is_some_and(|p| now - p.at > accept_secs) {
                t.pending.pop_front();
                results.push(t.trigger);
            }
            // Any others out of order.
            let before = t.pending.len();
            t.pending.retain(|p| now - p.at <= accept_secs);
            results.extend(std::iter::repeat_n(t.trigger, before - t.pending.len()));
            if t.paused_until.is_some_and(|until| now >= until) {
                t.paused_until = None;
                t.pause_reason = None;
                events.push(OfferEvent::Resumed { trigger: t.trigger });
            }
        }
        for trigger in results {
            events.extend(self.record(trigger, OfferResult::Ignored, now));
        }
        events
    }

    /// When `trigger` may offer again, if learning paused it.
    pub fn paused_until(&self, trigger: Trigger) -> Option<f64> {
        if !self.settings.learning {
            return None;
        }
        self.triggers.iter().find(|t| t.trigger == trigger)?.paused_until
    }

    /// Whether `trigger` is paused at `now`.
    pub fn is_paused(&self, trigger: Trigger, now: f64) -> bool {
        self.paused_until(trigger).is_some_and(|until| now < until)
    }

    /// Why `trigger` is paused (for the log and the report).
    pub fn pause_reason(&self, trigger: Trigger) -> Option<&str> {
        self.paused_until(trigger)?;
        self.triggers.iter().find(|t| t.trigger == trigger)?.pause_reason.as_deref()
    }

    fn record(&mut self, trigger: Trigger, result: OfferResult, now: f64) -> Vec<OfferEvent> {
        let settings = self.settings;
        let t = self.trigger_mut(trigger);
        match result {
            OfferResult::Accepted => t.accepted += 1,
            OfferResult::Ignored => t.ignored += 1,
        }
        t.recent.push_back(result);
        while t.recent.len() > settings.window {
            t.recent.pop_front();
        }
        let mut events = vec![OfferEvent::Result { trigger, result }];
        let acceptance = t.acceptance().unwrap_or(1.0);
        let paused = t.paused_until.is_some_and(|until| now < until);
        if settings.learning && !paused && t.recent.len() >= settings.window && acceptance < settings.min_accept {
            let until = now + settings.pause_secs;
            let accepted = t.recent.iter().filter(|r| **r == OfferResult::Accepted).count();
            let reason = format!(
                "{trigger}: {accepted} of the last {} offers accepted ({:.1} %), below OFFER_MIN_ACCEPT {:.1} %: paused for {} h",
                settings.window,
                acceptance * 100.0,
                settings.min_accept * 100.0,
                (settings.pause_secs / 3600.0).round()
            );
            t.paused_until = Some(until);
            t.pause_reason = Some(reason.clone());
            t.pauses += 1;
            t.recent.clear();
            events.push(OfferEvent::Paused { trigger, until, reason });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(window: usize) -> OfferSettings {
        OfferSettings { learning: true, accept_secs: 2.0, window, min_accept: 0.05, pause_secs: 86_400.0 }
    }

    fn paused(events: &[OfferEvent]) -> bool {
        events.iter().any(|e| matches!(e, OfferEvent::Paused { .. }))
    }

    #[test]
    fn accepted_within_the_window_ignored_after() {
        let mut stats = OfferStats::new(settings(50));
        stats.offered(Trigger::Dwell, "c1", 100.0, 100.0);
        stats.offered(Trigger::Dwell, "c1", 100.0, 100.0); // replayed
        stats.offered(Trigger::PingPong, "c2", 100.0, 100.0);
        assert_eq!(
            stats.visitor_wrote("c1", 102.0),
            [OfferEvent::Result { trigger: Trigger::Dwell, result: OfferResult::Accepted }]
        );
        assert!(stats.visitor_wrote("c1", 102.5).is_empty(), "counted once");
        assert!(stats.settle(101.0).is_empty());
        assert_eq!(
            stats.settle(102.1),
            [OfferEvent::Result { trigger: Trigger::PingPong, result: OfferResult::Ignored }]
        );
        assert_eq!(stats.trigger(Trigger::Dwell).offered, 1);
        assert_eq!(stats.trigger(Trigger::Dwell).acceptance(), Some(1.0));
        assert_eq!(stats.trigger(Trigger::PingPong).acceptance(), Some(0.0));
        stats.offered(Trigger::Repeat, "c3", 200.0, 200.0);
        assert_eq!(
            stats.visitor_wrote("c3", 203.0),
            [OfferEvent::Result { trigger: Trigger::Repeat, result: OfferResult::Ignored }],
            "too late to accept"
        );
    }

    #[test]
    fn a_zero_acceptance_trigger_is_paused_after_its_window_and_not_before() {
        let mut stats = OfferStats::new(settings(5));
        for i in 0..4 {
            stats.offered(Trigger::Dwell, &format!("c{i}"), f64::from(i), f64::from(i));
        }
        let events = stats.settle(10.0);
        assert_eq!(events.len(), 4);
        assert!(!paused(&events), "four of five: not a full window");
        assert_eq!(stats.paused_until(Trigger::Dwell), None);
        stats.offered(Trigger::Dwell, "c4", 20.0, 20.0);
        let events = stats.settle(30.0);
        assert!(paused(&events), "{events:?}");
        assert_eq!(stats.paused_until(Trigger::Dwell), Some(86_430.0));
        assert!(stats.is_paused(Trigger::Dwell, 86_429.0));
        assert!(!stats.is_paused(Trigger::PingPong, 100.0));
        let reason = stats.pause_reason(Trigger::Dwell).unwrap();
        assert!(reason.starts_with("dwell: 0 of the last 5 offers accepted (0.0 %)"), "{reason}");
        assert_eq!(stats.settle(86_430.0), [OfferEvent::Resumed { trigger: Trigger::Dwell }]);
        assert!(!stats.is_paused(Trigger::Dwell, 86_430.0));
        assert!(stats.trigger(Trigger::Dwell).recent.is_empty(), "judged afresh after a pause");
    }

    #[test]
    fn one_acceptance_in_the_window_keeps_it_on_and_learning_can_be_off() {
        let mut stats = OfferStats::new(OfferSettings { min_accept: 0.2, ..settings(5) });
        stats.offered(Trigger::Repeat, "a", 0.0, 0.0);
        stats.visitor_wrote("a", 1.0);
        for i in 1..5 {
            stats.offered(Trigger::Repeat, "b", f64::from(i), f64::from(i));
        }
        assert!(!paused(&stats.settle(100.0)), "1 of 5 = 20 % is not below 20 %");
        let mut off = OfferStats::new(OfferSettings { learning: false, ..settings(2) });
        for i in 0..4 {
            off.offered(Trigger::Dwell, "x", f64::from(i), f64::from(i));
        }
        assert!(!paused(&off.settle(100.0)));
        assert_eq!(off.paused_until(Trigger::Dwell), None);
        assert_eq!(off.trigger(Trigger::Dwell).ignored, 4, "results still counted");
    }

    #[test]
    fn the_record_round_trips_and_takes_the_current_settings() {
        let mut stats = OfferStats::new(settings(3));
        stats.offered(Trigger::ErrorPage, "c", 1.0, 1.0);
        let json = serde_json::to_string(&stats).unwrap();
        let back: OfferStats = serde_json::from_str::<OfferStats>(&json).unwrap().with_settings(settings(3));
        assert_eq!(back, stats);
    }
}

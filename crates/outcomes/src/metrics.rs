//! Metric names for the integrator to register (the webhook's recorder; see
//! `plumbing::telemetry`). Label values come from [`crate::Outcome::label`],
//! [`crate::OfferResult::label`] and `Trigger::as_str`.

/// `conversation_outcomes_total{outcome}`: outcomes decided ([`crate::Effect::CountOutcome`]);
/// `outcome` is `confirmed`, `assumed`, `escalated`, `stuck` or `reopened`.
pub const CONVERSATION_OUTCOMES: &str = "conversation_outcomes_total";
/// `bot_first_reply_seconds` (histogram): from a conversation's first visitor message to the
/// bot's first answer ([`crate::Effect::ObserveFirstReply`]).
pub const FIRST_REPLY_SECONDS: &str = "bot_first_reply_seconds";
/// `bot_follow_ups_total`: follow-ups sent ([`crate::Effect::SendFollowUp`]).
pub const FOLLOW_UPS: &str = "bot_follow_ups_total";
/// `proactive_offer_results_total{trigger,result}`: `result` `accepted` or `ignored`
/// ([`crate::OfferEvent::Result`]).
pub const OFFER_RESULTS: &str = "proactive_offer_results_total";
/// `proactive_trigger_paused{trigger}` (gauge, 0 or 1): offer learning paused the trigger
/// ([`crate::OfferEvent::Paused`], [`crate::OfferEvent::Resumed`]).
pub const TRIGGER_PAUSED: &str = "proactive_trigger_paused";

/// Label names.
pub const OUTCOME_LABEL: &str = "outcome";
pub const TRIGGER_LABEL: &str = "trigger";
pub const RESULT_LABEL: &str = "result";

/// Buckets for `bot_first_reply_seconds` (seconds: a reply takes seconds to a minute or two).
pub const FIRST_REPLY_BUCKETS: &[f64] = &[1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Every new series as (name, labels) with each label value, so the integrator registers them
/// all at 0 before the first event.
pub fn series() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let mut out = Vec::new();
    for outcome in crate::Outcome::ALL {
        out.push((CONVERSATION_OUTCOMES, vec![(OUTCOME_LABEL, outcome.label())]));
    }
    out.push((FOLLOW_UPS, Vec::new()));
    for trigger in proactive::Trigger::ALL {
        for result in crate::OfferResult::ALL {
            out.push((OFFER_RESULTS, vec![(TRIGGER_LABEL, trigger.as_str()), (RESULT_LABEL, result.label())]));
        }
        out.push((TRIGGER_PAUSED, vec![(TRIGGER_LABEL, trigger.as_str())]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DASHBOARD: &str = include_str!("../../../deploy/grafana-dashboard.json");
    const ALERTS: &str = include_str!("../../../deploy/prometheus-alerts.yml");

    #[test]
    fn the_dashboard_and_alerts_name_these_metrics() {
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
        assert!(dashboard["panels"].as_array().is_some_and(|p| !p.is_empty()));
        for name in [CONVERSATION_OUTCOMES, FIRST_REPLY_SECONDS, FOLLOW_UPS, OFFER_RESULTS, TRIGGER_PAUSED] {
            assert!(DASHBOARD.contains(name), "{name} on the dashboard");
        }
        for name in [CONVERSATION_OUTCOMES, FOLLOW_UPS, TRIGGER_PAUSED] {
            assert!(ALERTS.contains(name), "{name} in the alerts");
        }
        use plumbing::telemetry::{HOOKS_RECEIVED, LLM_SECONDS, MESSAGES_SETTLED, REPLIES_FAILED};
        for name in [LLM_SECONDS, MESSAGES_SETTLED, REPLIES_FAILED, HOOKS_RECEIVED] {
            assert!(DASHBOARD.contains(name) && ALERTS.contains(name), "{name}");
        }
    }

    #[test]
    fn every_series_is_listed() {
        let series = series();
        assert_eq!(series.len(), 5 + 1 + 4 * 3);
        assert!(series.contains(&(OFFER_RESULTS, vec![(TRIGGER_LABEL, "dwell"), (RESULT_LABEL, "ignored")])));
    }
}

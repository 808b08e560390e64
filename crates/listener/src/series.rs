//! The listener's metric series, registered at start so the first scrape lists them all.

use plumbing::telemetry::*;

/// Registers every series the listener documents, so the first scrape lists them all.
pub fn register_series(metrics: &Metrics) {
    for name in [
        ACTIONS_INGESTED,
        FRAMES_SKIPPED,
        SUMMARIES_WRITTEN,
        SUMMARIES_FAILED,
        SUMMARIES_DROPPED,
        SUMMARY_ACTIONS_DROPPED,
        STREAM_RECONNECTS,
    ] {
        metrics.counter(name).increment(0);
    }
    metrics.gauge(STREAM_CONNECTED).set(0.0);
    for trigger in proactive::Trigger::ALL {
        metrics.counter_with(PROACTIVE_FIRINGS, &[("trigger", trigger.as_str())]).increment(0);
    }
    let _ = metrics.histogram_with(LLM_SECONDS, &[("outcome", "ok")]);
}

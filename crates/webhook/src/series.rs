//! The webhook's metric series, registered at start so the first scrape lists them all.

use plumbing::telemetry::*;

/// `crisp_request_duration_seconds{call}`: the calls the webhook makes.
const CRISP_CALLS: [&str; 5] = ["message", "compose", "meta", "messages", "initiate"];

/// Registers every series the webhook documents, so the first scrape lists them all (counters
/// at 0) instead of each appearing only once it happened.
pub fn register_series(metrics: &Metrics) {
    for outcome in HookOutcome::ALL {
        metrics.counter_with(HOOKS_RECEIVED, &[("outcome", outcome.as_str())]).increment(0);
    }
    for outcome in Settled::ALL {
        metrics.counter_with(MESSAGES_SETTLED, &[("outcome", outcome.as_str())]).increment(0);
    }
    for reason in HANDOFF_REASONS {
        metrics.counter_with(HANDOFFS, &[("reason", reason)]).increment(0);
    }
    for reason in CloseReason::ALL {
        metrics.counter_with(CONNECTIONS_CLOSED, &[("reason", reason.as_str())]).increment(0);
    }
    for name in [REPLIES_SENT, REPLIES_FAILED, FALLBACKS_SENT, BURST_MESSAGES_LEFT_OUT, INBOX_COMPACTIONS_FAILED] {
        metrics.counter(name).increment(0);
    }
    for kind in privacy::Kind::ALL {
        metrics.counter_with(REDACTIONS, &[("kind", kind.label())]).increment(0);
    }
    for outcome in ["found", "absent", "unknown"] {
        metrics.counter_with(CRISP_POSTS_CHECKED, &[("outcome", outcome)]).increment(0);
    }
    // Each tool's outcomes; a request refused before any tool is `none`, `unauthorized`.
    for tool in [McpTool::VisitorActivity, McpTool::LiveUserActivity, McpTool::SearchKnowledge] {
        for outcome in McpOutcome::ALL.iter().filter(|o| !matches!(o, McpOutcome::Unauthorized | McpOutcome::Replayed))
        {
            metrics.counter_with(MCP_CALLS, &[("tool", tool.as_str()), ("outcome", outcome.as_str())]).increment(0);
        }
    }
    for outcome in [McpOutcome::Unauthorized, McpOutcome::Replayed] {
        metrics
            .counter_with(MCP_CALLS, &[("tool", McpTool::None.as_str()), ("outcome", outcome.as_str())])
            .increment(0);
    }
    for trigger in proactive::Trigger::ALL {
        for outcome in proactive::gate::Outcome::ALL {
            metrics
                .counter_with(PROACTIVE_OFFERS, &[("trigger", trigger.as_str()), ("outcome", outcome.name())])
                .increment(0);
        }
    }
    metrics.counter(PROACTIVE_ENGAGED).increment(0);
    let _ = metrics.histogram_with(LLM_SECONDS, &[("outcome", "ok")]);
    for call in CRISP_CALLS {
        let _ = metrics.histogram_with(CRISP_SECONDS, &[("call", call), ("outcome", "ok")]);
    }
}

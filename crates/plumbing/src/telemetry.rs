//! Prometheus metrics: names in one place, and the recorder set-up both binaries use.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::time::Duration;

pub const HOOKS_RECEIVED: &str = "hooks_received_total";
pub const REPLIES_SENT: &str = "replies_sent_total";
pub const REPLIES_FAILED: &str = "replies_failed_total";
pub const FALLBACKS_SENT: &str = "fallback_replies_total";
pub const LLM_SECONDS: &str = "llm_request_duration_seconds";
pub const CRISP_SECONDS: &str = "crisp_request_duration_seconds";
pub const ACTIONS_INGESTED: &str = "actions_ingested_total";
pub const FRAMES_SKIPPED: &str = "frames_skipped_total";
pub const SUMMARIES_WRITTEN: &str = "summaries_written_total";
pub const SUMMARIES_FAILED: &str = "summaries_failed_total";
pub const STREAM_CONNECTED: &str = "stream_connected";
pub const STREAM_RECONNECTS: &str = "stream_reconnects_total";
/// Summary jobs dropped unrun because too many were waiting for an LLM slot.
pub const SUMMARIES_DROPPED: &str = "summaries_dropped_total";
/// Pending actions dropped unsummarised (a session over its bound, or forgotten to make room
/// for another while it had actions pending).
pub const SUMMARY_ACTIONS_DROPPED: &str = "summary_actions_dropped_total";
/// `proactive_firings_total{trigger}`: proactive triggers the listener fired (see
/// `proactive::Trigger::as_str`).
pub const PROACTIVE_FIRINGS: &str = "proactive_firings_total";
pub const MESSAGES_SETTLED: &str = "messages_settled_total";
pub const HANDOFFS: &str = "handoffs_total";
/// `proactive_offers_total{trigger,outcome}`: what became of each trigger firing
/// (`proactive::gate::Outcome`).
pub const PROACTIVE_OFFERS: &str = "proactive_offers_total";
/// Visitors who wrote within 10 minutes of an offer.
pub const PROACTIVE_ENGAGED: &str = "proactive_engaged_total";
/// `handoffs_total{reason}`.
pub const HANDOFF_REASONS: [&str; 3] = ["asked", "unable", "failed"];
pub const BURST_MESSAGES_LEFT_OUT: &str = "burst_messages_left_out_total";
pub const CONNECTIONS_CLOSED: &str = "http_connections_closed_total";
/// `mcp_calls_total{tool,outcome}`: calls to the webhook's MCP server (`/mcp`).
pub const MCP_CALLS: &str = "mcp_calls_total";
/// `crisp_posts_checked_total{outcome}`: posts whose first try may have been stored, looked up
/// in the conversation before a repeat (`found`: not posted again; `absent`: posted again;
/// `unknown`: the conversation could not be read, kept for later).
pub const CRISP_POSTS_CHECKED: &str = "crisp_posts_checked_total";
/// `redactions_total{kind}`: personal values and secrets replaced by placeholders before text
/// went to the LLM (`email`, `phone`, `card`, `iban`, `secret`, `url_query`).
pub const REDACTIONS: &str = "redactions_total";
/// `inbox_compactions_failed_total`: journal rewrites that failed (the old file kept).
pub const INBOX_COMPACTIONS_FAILED: &str = "inbox_compactions_failed_total";
/// `coordination_unavailable_total{step}`: replies put back because Redis could not say who
/// has the floor or whether the hold is still ours.
pub const COORDINATION_UNAVAILABLE: &str = "coordination_unavailable_total";
/// A label's values as an enum: a misspelt value does not compile, `ALL` registers each.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

labels!(
    /// `hooks_received_total{outcome}`: every outcome a hook can have.
    HookOutcome {
        Unauthorized => "unauthorized",
        BadSignature => "bad_signature",
        BadRequest => "bad_request",
        VisitorMessage => "visitor_message",
        Overloaded => "overloaded",
        NotRecorded => "not_recorded",
        OperatorMessage => "operator_message",
        Resolved => "resolved",
        SessionData => "session_data",
        Ignored => "ignored",
    }
);

labels!(
    /// `messages_settled_total{outcome}`: how accepted visitor messages ended.
    Settled {
        Answered => "answered",
        FallbackSent => "fallback_sent",
        HandedOver => "handed_over",
        Duplicate => "duplicate",
        Silenced => "silenced_by_human_takeover",
        AlreadyAnswered => "already_answered",
        Expired => "expired",
    }
);

labels!(
    /// `http_connections_closed_total{reason}`: connections the server closed on its own.
    CloseReason {
        HeaderTimeout => "header_timeout",
        IdleTimeout => "idle_timeout",
        RequestTimeout => "request_timeout",
        Shed => "shed",
        Refused => "refused",
    }
);

labels!(
    /// `mcp_calls_total{tool}`: the MCP tools; `none` for a request refused before any tool.
    McpTool {
        VisitorActivity => "get_visitor_activity",
        LiveUserActivity => "get_live_user_activity",
        SearchKnowledge => "search_knowledge",
        None => "none",
    }
);

labels!(
    /// `mcp_calls_total{outcome}`: what became of an MCP request.
    McpOutcome {
        Ok => "ok",
        NoActivity => "no_activity",
        NoConversation => "no_conversation",
        Refused => "refused",
        BadRequest => "bad_request",
        Unauthorized => "unauthorized",
        UnknownConversation => "unknown_conversation",
        Replayed => "replayed",
    }
);

/// Counts an MCP request by tool and outcome.
pub fn mcp_call(tool: McpTool, outcome: McpOutcome) {
    metrics::counter!(MCP_CALLS, "tool" => tool.as_str(), "outcome" => outcome.as_str()).increment(1);
}

/// Counts a hook by outcome; the counters are looked up once, not on every request.
pub fn hook_received(outcome: HookOutcome) {
    static COUNTERS: std::sync::OnceLock<Vec<metrics::Counter>> = std::sync::OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        HookOutcome::ALL.iter().map(|o| metrics::counter!(HOOKS_RECEIVED, "outcome" => o.as_str())).collect()
    });
    counters[outcome as usize].increment(1);
}

/// Counts `messages` accepted visitor messages settled as `outcome`.
pub fn settled(outcome: Settled, messages: usize) {
    metrics::counter!(MESSAGES_SETTLED, "outcome" => outcome.as_str()).increment(messages as u64);
}

/// Counts a connection the server closed on its own.
pub fn connection_closed(reason: CloseReason) {
    metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason.as_str()).increment(1);
}

const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).unwrap_or_else(|_| PrometheusBuilder::new())
}

/// Installs the recorder and returns the handle that renders `/metrics`.
pub fn install_recorder() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = builder().install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Installs the recorder and serves `/metrics` on `addr` (the listener's optional endpoint),
/// (the caller registers its series).
pub fn serve_on(addr: SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    builder().with_http_listener(addr).install()?;
    Ok(())
}

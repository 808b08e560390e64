//! Prometheus metrics: names in one place, and [`Metrics`], the registry each app owns (there
//! is no global recorder: what records is handed its app's `Metrics`).

use metrics::{Key, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::sync::{Arc, OnceLock};
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

const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How often an app's recorder folds histogram samples in when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

pub use metrics::{Counter, Gauge, Histogram, IntoLabels, Label};

/// What the recorder is told of a series' origin (the Prometheus recorder ignores it).
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One app's metrics: a Prometheus registry of its own (never installed as the process's global
/// recorder), so two apps in one process (the in-process tests, `webhook simulate`) each count
/// and render only their own series. Cheap to clone: every clone records into the same
/// registry. Built once per app, where the app is built from its settings, and handed to what
/// records. [`Metrics::default`] records nothing (a client made outside an app).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Option<Arc<Registry>>,
}

struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `hooks_received_total{outcome}`, looked up once (the hook path), by `HookOutcome`.
    hooks: OnceLock<Vec<Counter>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("recording", &self.inner.is_some()).finish()
    }
}

impl Metrics {
    /// A new, empty registry. Inside a Tokio runtime its upkeep runs every few seconds (until
    /// the last clone is dropped), as the global recorder's did.
    pub fn new() -> Self {
        let recorder =
            PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = recorder.build_recorder();
        let handle = recorder.handle();
        let registry = Arc::new(Registry { recorder, handle, hooks: OnceLock::new() });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let registry = Arc::downgrade(&registry);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(registry) = registry.upgrade() else { return };
                    registry.handle.run_upkeep();
                }
            });
        }
        Self { inner: Some(registry) }
    }

    /// The exposition text (`GET /metrics`): this registry's series only. Empty for
    /// [`Metrics::default`].
    pub fn render(&self) -> String {
        self.inner.as_ref().map(|r| r.handle.render()).unwrap_or_default()
    }

    /// The counter `name` without labels.
    pub fn counter(&self, name: &'static str) -> Counter {
        self.counter_with(name, NO_LABELS)
    }

    /// The counter `name{labels}` (e.g. `&[("outcome", "ok")]`).
    pub fn counter_with(&self, name: &'static str, labels: impl IntoLabels) -> Counter {
        match &self.inner {
            Some(r) => r.recorder.register_counter(&Key::from_parts(name, labels), &METADATA),
            None => Counter::noop(),
        }
    }

    /// The gauge `name` without labels.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        self.gauge_with(name, NO_LABELS)
    }

    /// The gauge `name{labels}`.
    pub fn gauge_with(&self, name: &'static str, labels: impl IntoLabels) -> Gauge {
        match &self.inner {
            Some(r) => r.recorder.register_gauge(&Key::from_parts(name, labels), &METADATA),
            None => Gauge::noop(),
        }
    }

    /// The histogram `name` without labels (buckets: `LATENCY_BUCKETS`).
    pub fn histogram(&self, name: &'static str) -> Histogram {
        self.histogram_with(name, NO_LABELS)
    }

    /// The histogram `name{labels}`.
    pub fn histogram_with(&self, name: &'static str, labels: impl IntoLabels) -> Histogram {
        match &self.inner {
            Some(r) => r.recorder.register_histogram(&Key::from_parts(name, labels), &METADATA),
            None => Histogram::noop(),
        }
    }

    /// Counts an MCP request by tool and outcome.
    pub fn mcp_call(&self, tool: McpTool, outcome: McpOutcome) {
        self.counter_with(MCP_CALLS, &[("tool", tool.as_str()), ("outcome", outcome.as_str())]).increment(1);
    }

    /// Counts a hook by outcome; the counters are looked up once, not on every request.
    pub fn hook_received(&self, outcome: HookOutcome) {
        let Some(r) = &self.inner else { return };
        let counters = r.hooks.get_or_init(|| {
            HookOutcome::ALL.iter().map(|o| self.counter_with(HOOKS_RECEIVED, &[("outcome", o.as_str())])).collect()
        });
        counters[outcome as usize].increment(1);
    }

    /// Counts `messages` accepted visitor messages settled as `outcome`.
    pub fn settled(&self, outcome: Settled, messages: usize) {
        self.counter_with(MESSAGES_SETTLED, &[("outcome", outcome.as_str())]).increment(messages as u64);
    }

    /// Counts a connection the server closed on its own.
    pub fn connection_closed(&self, reason: CloseReason) {
        self.counter_with(CONNECTIONS_CLOSED, &[("reason", reason.as_str())]).increment(1);
    }
}

/// Labels of a series that has none.
const NO_LABELS: &[(&str, &str)] = &[];

/// How long the metrics server waits for a request's headers.
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `metrics` on `listener` (the listener's `METRICS_ADDR`) until `shutdown` resolves, as
/// the exporter's HTTP listener did before: `/health` answers `OK`, any other path the
/// exposition text.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics, shutdown: impl Future<Output = ()>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics: accept failed");
                    // Out of descriptors, say: let it pass rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let response = metrics_response(request.uri().path(), &metrics);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(METRICS_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics: connection ended");
            }
        });
    }
}

fn metrics_response(path: &str, metrics: &Metrics) -> hyper::Response<String> {
    use hyper::header::{CONTENT_TYPE, HeaderValue};
    let body = if path == "/health" { "OK".to_owned() } else { metrics.render() };
    let mut response = hyper::Response::new(body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

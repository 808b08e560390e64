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

const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).unwrap_or_else(|_| PrometheusBuilder::new())
}

/// Installs the recorder and returns the handle that renders `/metrics`.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    let handle = builder().install_recorder().map_err(|e| e.to_string())?;
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

/// Installs the recorder and serves `/metrics` on `addr` (the listener's optional endpoint).
pub fn serve_on(addr: SocketAddr) -> Result<(), String> {
    builder().with_http_listener(addr).install().map_err(|e| e.to_string())
}

//! In-process loopback stand-ins for the three outside services: the Autoplay stream (the tests'
//! SSE server, replaying the bundled sample), an OpenAI-compatible LLM (deterministic, or a
//! recording proxy to a real server) and the Crisp REST API. Each records what it was sent, for
//! the demo to show.

use crate::answer;
use ::standins::crisp::{Crisp, CrispSettings, History};
use ::standins::llm::{Answer, Llm, LlmCall, Upstream, last_user_message};
use ::standins::sse_server::{Plan, SseServer};
use axum::Router;
use axum::body::Bytes;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The bundled sample stream: the repository's `actions-full.sse` fixture (session `ps_demo`)
/// and two more batches of the same visitor.
pub const SAMPLE_BATCHES: [&str; 3] = [
    include_str!("../sample/actions-full.sse"),
    include_str!("../sample/pricing-upgrade.sse"),
    include_str!("../sample/billing-settings.sse"),
];
const HEARTBEAT: &str = include_str!("../../../tests/fixtures/autoplay/heartbeat.sse");
/// Pause before each chunk of the sample, so it arrives as a live visitor's would.
const BATCH_GAP: Duration = Duration::from_millis(500);
/// Heartbeats keep the held stream alive (the listener reconnects after 90 s of silence).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// The Autoplay session id in the sample and in the fake Crisp session data.
pub const AUTOPLAY_SESSION: &str = "ps_demo";
pub const WEBSITE_ID: &str = "demo-site";

/// Starts `app` on a free loopback port.
pub async fn serve(app: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------
// Autoplay
// ---------------------------------------------------------------------------------------------

/// The Autoplay stand-in (the tests' [`::standins::sse_server::SseServer`]): the first
/// connection gets a heartbeat and the sample batches, half a second apart, as a live
/// visitor's would arrive; every connection then heartbeats until the client goes away (a
/// reconnect does not replay the sample).
pub async fn autoplay() -> SseServer {
    let beat = Bytes::from_static(HEARTBEAT.as_bytes());
    let mut sample = vec![beat.clone()];
    sample.extend(SAMPLE_BATCHES.iter().map(|batch| Bytes::from_static(batch.as_bytes())));
    let first = Plan::Live { chunks: sample, gap: BATCH_GAP, heartbeat: Some((beat.clone(), HEARTBEAT_EVERY)) };
    let later =
        Plan::Live { chunks: vec![beat.clone()], gap: Duration::ZERO, heartbeat: Some((beat, HEARTBEAT_EVERY)) };
    SseServer::start(vec![first], Some(later)).await
}

/// The action titles of the sample stream, in order.
pub fn sample_titles() -> Vec<String> {
    SAMPLE_BATCHES
        .iter()
        .flat_map(|batch| batch.lines())
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .flat_map(|frame| frame.get("actions").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|action| action.get("title").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// LLM and Crisp: the shared stand-ins, set up for the demo
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// The listener's summary request (one user message).
    Summary,
    /// The webhook's reply request (system prompt first).
    Reply,
}

/// Which of the two a request is.
fn kind_of_request(request: &Value) -> CallKind {
    let first = request.pointer("/messages/0");
    let role = first.and_then(|m| m.get("role")).and_then(Value::as_str);
    let content = first.and_then(|m| m.get("content")).and_then(Value::as_str).unwrap_or_default();
    if role == Some("user") && content.starts_with(answer::SUMMARY_PROMPT_START) {
        CallKind::Summary
    } else {
        CallKind::Reply
    }
}

/// Which of the two a recorded call was.
pub fn kind_of(call: &LlmCall) -> CallKind {
    call.request.as_ref().map_or(CallKind::Reply, kind_of_request)
}

/// The LLM: deterministic answers ([`answer`]), or `upstream`'s; every request kept.
pub fn llm(upstream: Option<Upstream>) -> Arc<Llm> {
    let answer = match upstream {
        Some(upstream) => Answer::Upstream(upstream),
        None => Answer::Local(Box::new(|request: &Value| match kind_of_request(request) {
            CallKind::Summary => answer::summary(last_user_message(request)),
            CallKind::Reply => answer::reply(last_user_message(request)),
        })),
    };
    Llm::new(answer, true)
}

/// Crisp: the demo's website only; every conversation is linked to the sample's visitor; no
/// earlier messages.
pub fn crisp() -> Arc<Crisp> {
    Crisp::new(CrispSettings {
        website: Some(WEBSITE_ID.to_owned()),
        meta: Box::new(|_| json!({"nickname": "visitor493603", "data": {"autoplay_session_id": AUTOPLAY_SESSION}})),
        history: History::Fixed(json!([])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_one_visitor_in_three_batches() {
        let titles = sample_titles();
        assert_eq!(titles.len(), 6, "{titles:?}");
        assert_eq!(titles.first().map(String::as_str), Some("Page Load: Dashboard"));
        assert_eq!(titles.last().map(String::as_str), Some("Page Load: Billing settings"));
        for batch in SAMPLE_BATCHES {
            assert!(batch.ends_with("\n\n") && batch.contains("\"session_id\":\"ps_demo\""));
            assert!(!batch.contains("ps_abc123"));
        }
    }

    #[test]
    fn summary_requests_are_told_apart_from_replies() {
        let summary = json!({"messages": [{"role": "user", "content": "You are summarising a user's session"}]});
        let reply = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]});
        assert_eq!(kind_of_request(&summary), CallKind::Summary);
        assert_eq!(kind_of_request(&reply), CallKind::Reply);
        assert_eq!(last_user_message(&reply), "q");
    }
}

//! In-process loopback stand-ins for the three outside services: the Autoplay stream (the tests'
//! SSE server, replaying the bundled sample), an OpenAI-compatible LLM (deterministic, or a
//! recording proxy to a real server) and the Crisp REST API. Each records what it was sent, for
//! the demo to show.

use crate::answer;
use ::standins::sse_server::{Plan, SseServer};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bundled sample stream: the repository's `actions-full.sse` fixture (session `ps_demo`)
/// and two more batches of the same visitor.
pub const SAMPLE_BATCHES: [&str; 3] = [
    include_str!("../sample/actions-full.sse"),
    include_str!("../sample/pricing-upgrade.sse"),
    include_str!("../sample/billing-settings.sse"),
];
const HEARTBEAT: &str = include_str!("../sample/heartbeat.sse");
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
// LLM
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// The listener's summary request (one user message).
    Summary,
    /// The webhook's reply request (system prompt first).
    Reply,
}

#[derive(Clone, Debug)]
pub struct LlmCall {
    pub kind: CallKind,
    /// The request body as the binary sent it.
    pub request: Value,
    /// The answer text, or what went wrong.
    pub answer: Result<String, String>,
}

/// A real OpenAI-compatible server the stand-in forwards to.
#[derive(Clone)]
pub struct Upstream {
    pub base_url: String,
    pub api_key: String,
    pub http: reqwest::Client,
}

#[derive(Clone)]
struct LlmState {
    upstream: Option<Upstream>,
    calls: Arc<Mutex<Vec<LlmCall>>>,
}

/// `POST /v1/chat/completions`: answers itself, or forwards the body unchanged to `upstream`
/// and relays its answer; either way the request is recorded in `calls`.
pub fn llm(upstream: Option<Upstream>, calls: Arc<Mutex<Vec<LlmCall>>>) -> Router {
    Router::new().route("/v1/chat/completions", post(chat)).with_state(LlmState { upstream, calls })
}

fn kind_of(request: &Value) -> CallKind {
    let first = request.pointer("/messages/0");
    let role = first.and_then(|m| m.get("role")).and_then(Value::as_str);
    let content = first.and_then(|m| m.get("content")).and_then(Value::as_str).unwrap_or_default();
    if role == Some("user") && content.starts_with(answer::SUMMARY_PROMPT_START) {
        CallKind::Summary
    } else {
        CallKind::Reply
    }
}

/// The last user message's text.
fn last_user_message(request: &Value) -> &str {
    request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"message": message, "type": "demo_stand_in"}}))).into_response()
}

async fn chat(State(state): State<LlmState>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return openai_error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let kind = kind_of(&request);
    let record = |answer: Result<String, String>| {
        if let Ok(mut calls) = state.calls.lock() {
            calls.push(LlmCall { kind, request: request.clone(), answer });
        }
    };
    let Some(upstream) = &state.upstream else {
        let text = match kind {
            CallKind::Summary => answer::summary(last_user_message(&request)),
            CallKind::Reply => answer::reply(last_user_message(&request)),
        };
        record(Ok(text.clone()));
        let model = request.get("model").cloned().unwrap_or(Value::Null);
        return axum::Json(json!({
            "id": "chatcmpl-demo",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        }))
        .into_response();
    };
    let url = format!("{}/chat/completions", upstream.base_url.trim_end_matches('/'));
    let mut forward = upstream.http.post(&url).header(header::CONTENT_TYPE, "application/json").body(body.clone());
    if !upstream.api_key.is_empty() {
        forward = forward.bearer_auth(&upstream.api_key);
    }
    let response = match forward.send().await {
        Ok(response) => response,
        Err(e) => {
            let message = format!("cannot reach {url}: {}", without_url(e));
            record(Err(message.clone()));
            return openai_error(StatusCode::BAD_GATEWAY, &message);
        }
    };
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(e) => {
            let message = format!("{url} broke off its answer: {}", without_url(e));
            record(Err(message.clone()));
            return openai_error(StatusCode::BAD_GATEWAY, &message);
        }
    };
    let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let content = parsed.pointer("/choices/0/message/content").and_then(Value::as_str);
    record(match (status.is_success(), content) {
        (true, Some(text)) if !text.trim().is_empty() => Ok(text.to_owned()),
        (true, _) => Err(format!("{url} answered without any text: {}", snippet(&bytes))),
        (false, _) => Err(format!("{url} answered HTTP {}: {}", status.as_u16(), snippet(&bytes))),
    });
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The error and its causes on one line, without the URL (it is named already).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The first 200 characters of a body, on one line.
fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(200).collect::<String>().replace(['\n', '\r'], " ")
}

// ---------------------------------------------------------------------------------------------
// Crisp
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub struct CrispLog {
    /// Every call, e.g. `PATCH compose (start)`, in arrival order.
    pub calls: Vec<String>,
    /// The operator messages posted into the conversation.
    pub posted: Vec<String>,
    /// The private notes posted for operators.
    pub notes: Vec<String>,
}

/// `/v1/website/{site}/conversation/{session}/{message|compose|meta|messages}`.
pub fn crisp(log: Arc<Mutex<CrispLog>>) -> Router {
    Router::new().route("/v1/website/{site}/conversation/{session}/{leaf}", any(conversation)).with_state(log)
}

async fn conversation(
    State(log): State<Arc<Mutex<CrispLog>>>,
    method: Method,
    Path((site, _session, leaf)): Path<(String, String, String)>,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut call = format!("{method} {leaf}");
    if let Some(kind) = body.get("type").and_then(Value::as_str) {
        call.push_str(&format!(" ({kind})"));
    }
    let reply = |status: StatusCode, reason: &str, data: Value| {
        (status, axum::Json(json!({"error": !status.is_success(), "reason": reason, "data": data}))).into_response()
    };
    if let Ok(mut log) = log.lock() {
        log.calls.push(call);
    }
    if site != WEBSITE_ID {
        return reply(StatusCode::NOT_FOUND, "website_not_found", json!({}));
    }
    match (method, leaf.as_str()) {
        (Method::GET, "meta") => reply(
            StatusCode::OK,
            "resolved",
            json!({"nickname": "visitor493603", "data": {"autoplay_session_id": AUTOPLAY_SESSION}}),
        ),
        (Method::GET, "messages") => reply(StatusCode::OK, "resolved", json!([])),
        (Method::PATCH, "compose") => reply(StatusCode::OK, "updated", json!({})),
        (Method::POST, "message") => {
            let Some(content) = body.get("content").and_then(Value::as_str) else {
                return reply(StatusCode::BAD_REQUEST, "invalid_data", json!({}));
            };
            if let Ok(mut log) = log.lock() {
                // Private notes for operators (the context left with a fallback) are not replies.
                match body.get("type").and_then(Value::as_str) {
                    Some("note") => log.notes.push(content.to_owned()),
                    _ => log.posted.push(content.to_owned()),
                }
            }
            reply(StatusCode::ACCEPTED, "dispatched", json!({"fingerprint": 1}))
        }
        _ => reply(StatusCode::NOT_FOUND, "route_not_found", json!({})),
    }
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
        assert_eq!(kind_of(&summary), CallKind::Summary);
        assert_eq!(kind_of(&reply), CallKind::Reply);
        assert_eq!(last_user_message(&reply), "q");
    }
}

//! An in-memory Crisp for the simulations: the REST calls the reply pipeline makes, answered
//! from and recorded into conversations kept in memory. Each simulated run is a website of its
//! own (its operators online or offline) with one conversation linked to the scenario's
//! Autoplay session through its session data (`autoplay_session_id`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

/// What one conversation received, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conversation {
    /// Every message as `GET messages` lists it (the visitor's and the bot's).
    pub messages: Vec<Value>,
    /// Visible texts the bot posted, in order.
    pub texts: Vec<String>,
    /// Private notes for operators.
    pub notes: Vec<String>,
    /// Conversation states set (`unresolved` on a hand-off).
    pub states: Vec<String>,
    /// Operators the conversation was assigned to.
    pub assigned: Vec<String>,
    /// Segments set through `meta`.
    pub segments: Vec<String>,
    /// Typing indicator cleared: how many times (a reply's last step).
    pub compose_stops: usize,
    /// Calls the in-memory Crisp does not know.
    pub unexpected: Vec<String>,
}

struct Site {
    online: bool,
    /// The conversation's session data.
    data: Value,
    conversations: HashMap<String, Conversation>,
}

#[derive(Default)]
pub struct MemoryCrisp {
    sites: Mutex<HashMap<String, Site>>,
    changed: Notify,
    fingerprint: AtomicU64,
}

impl MemoryCrisp {
    pub fn new() -> Arc<MemoryCrisp> {
        Arc::new(MemoryCrisp { fingerprint: AtomicU64::new(7_000_000_000), ..Default::default() })
    }

    /// Serves the REST API on a loopback port; returns its base URL (`…/v1`).
    pub async fn serve(self: &Arc<Self>) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(format!("http://{addr}/v1"))
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/website/{site}/conversation/{session}/{leaf}", any(conversation))
            .route("/v1/website/{site}/conversation/{session}", any(exists))
            .route("/v1/website/{site}/availability/status", any(availability))
            .route("/v1/website/{site}", any(website))
            .with_state(Arc::clone(self))
    }

    /// A website whose conversations carry `data` as their session data.
    pub fn add_site(&self, site: &str, online: bool, data: Value) {
        let site_state = Site { online, data, conversations: HashMap::new() };
        self.sites().insert(site.to_owned(), site_state);
    }

    pub fn remove_site(&self, site: &str) {
        self.sites().remove(site);
    }

    /// Stores a visitor's message, as Crisp does before its hook leaves.
    pub fn visitor_wrote(&self, site: &str, session: &str, text: &str, fingerprint: u64) {
        let mut sites = self.sites();
        if let Some(site) = sites.get_mut(site) {
            site.conversations.entry(session.to_owned()).or_default().messages.push(json!({
                "type": "text", "from": "user", "origin": "chat", "content": text,
                "fingerprint": fingerprint, "timestamp": now_ms(),
            }));
        }
    }

    /// The conversation as recorded so far.
    pub fn conversation(&self, site: &str, session: &str) -> Conversation {
        self.sites().get(site).and_then(|s| s.conversations.get(session)).cloned().unwrap_or_default()
    }

    /// Waits until `done` holds for the conversation, or `limit` passes; returns it then.
    pub async fn wait_for(
        &self,
        site: &str,
        session: &str,
        limit: std::time::Duration,
        done: impl Fn(&Conversation) -> bool,
    ) -> (Conversation, bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            let now = self.conversation(site, session);
            if done(&now) {
                return (now, true);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let last = self.conversation(site, session);
                let met = done(&last);
                return (last, met);
            }
        }
    }

    fn sites(&self) -> std::sync::MutexGuard<'_, HashMap<String, Site>> {
        self.sites.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn reply(status: StatusCode, reason: &str, data: Value) -> Response {
    (status, axum::Json(json!({"error": !status.is_success(), "reason": reason, "data": data}))).into_response()
}

fn not_found() -> Response {
    reply(StatusCode::NOT_FOUND, "website_not_found", json!({}))
}

async fn website(State(crisp): State<Arc<MemoryCrisp>>, Path(site): Path<String>) -> Response {
    match crisp.sites().contains_key(&site) {
        true => reply(StatusCode::OK, "resolved", json!({"website_id": site})),
        false => not_found(),
    }
}

async fn availability(State(crisp): State<Arc<MemoryCrisp>>, Path(site): Path<String>) -> Response {
    match crisp.sites().get(&site) {
        Some(s) => reply(StatusCode::OK, "resolved", json!({"status": if s.online { "online" } else { "offline" }})),
        None => not_found(),
    }
}

async fn exists(State(crisp): State<Arc<MemoryCrisp>>, Path((site, session)): Path<(String, String)>) -> Response {
    match crisp.sites().contains_key(&site) {
        true => reply(StatusCode::OK, "resolved", json!({"session_id": session})),
        false => not_found(),
    }
}

async fn conversation(
    State(crisp): State<Arc<MemoryCrisp>>,
    method: Method,
    Path((site, session, leaf)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let response = {
        let mut sites = crisp.sites();
        let Some(site) = sites.get_mut(&site) else { return not_found() };
        let data = site.data.clone();
        let conversation = site.conversations.entry(session.clone()).or_default();
        handle(&crisp, conversation, &data, &method, &session, &leaf, &body)
    };
    crisp.changed.notify_waiters();
    response
}

fn handle(
    crisp: &MemoryCrisp,
    conversation: &mut Conversation,
    data: &Value,
    method: &Method,
    session: &str,
    leaf: &str,
    body: &Value,
) -> Response {
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    match (method.as_str(), leaf) {
        ("GET", "meta") => reply(StatusCode::OK, "resolved", json!({"session_id": session, "data": data})),
        ("PATCH" | "PUT", "meta") => {
            if let Some(segments) = body.get("segments").and_then(Value::as_array) {
                conversation.segments = segments.iter().filter_map(Value::as_str).map(str::to_owned).collect();
            }
            reply(StatusCode::OK, "updated", json!({}))
        }
        ("GET", "messages") => reply(StatusCode::OK, "resolved", Value::Array(conversation.messages.clone())),
        ("PATCH", "compose") => {
            if body.get("type").and_then(Value::as_str) == Some("stop") {
                conversation.compose_stops += 1;
            }
            reply(StatusCode::OK, "updated", json!({}))
        }
        ("POST", "message") => {
            let Some(content) = text("content") else {
                return reply(StatusCode::BAD_REQUEST, "invalid_data", json!({}));
            };
            let fingerprint = body
                .get("fingerprint")
                .and_then(Value::as_u64)
                .unwrap_or_else(|| crisp.fingerprint.fetch_add(1, Ordering::Relaxed));
            // A repeat of a post already stored (same fingerprint) is stored once, as Crisp does.
            let known =
                conversation.messages.iter().any(|m| m.get("fingerprint").and_then(Value::as_u64) == Some(fingerprint));
            let kind = text("type").unwrap_or_else(|| "text".into());
            if !known {
                match kind.as_str() {
                    "note" => conversation.notes.push(content.clone()),
                    _ => conversation.texts.push(content.clone()),
                }
                conversation.messages.push(json!({
                    "type": kind, "from": "operator", "origin": "chat", "content": content,
                    "fingerprint": fingerprint, "timestamp": now_ms(),
                }));
            }
            reply(StatusCode::ACCEPTED, "dispatched", json!({"fingerprint": fingerprint}))
        }
        ("PATCH", "state") => {
            conversation.states.push(text("state").unwrap_or_default());
            reply(StatusCode::OK, "updated", json!({}))
        }
        ("PATCH", "routing") => {
            let user = body.pointer("/assigned/user_id").and_then(Value::as_str).unwrap_or_default();
            conversation.assigned.push(user.to_owned());
            reply(StatusCode::OK, "updated", json!({}))
        }
        ("POST", "initiate") => reply(StatusCode::OK, "dispatched", json!({})),
        _ => {
            conversation.unexpected.push(format!("{method} {leaf}"));
            reply(StatusCode::NOT_FOUND, "route_not_found", json!({}))
        }
    }
}

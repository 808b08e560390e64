//! The Crisp REST API on a loopback port (`/v1/website/{site}/conversation/{session}/{leaf}`),
//! for the demo and the benchmarks: `meta` links a conversation to an Autoplay session as its
//! owner says, the conversation itself exists (`GET`), `messages` answers a fixed history (or, with [`History::Stored`], what was posted
//! into the conversation, as Crisp does), `compose` is acknowledged and `message` recorded
//! (operator replies and private notes apart). [`Crisp::set_faults`] makes calls fail the ways
//! real deployments see: stored and then a 502/504 or a cut connection, throttled, refused.
//! (Most tests mount wiremock answers instead, see [`crate::stand_ins`], to assert on the
//! exact requests; the fault suite uses this one.)

use crate::clock::mono_ns;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// How the stand-in answers.
pub struct CrispSettings {
    /// The only website it knows (others get 404); `None`: any.
    pub website: Option<String>,
    /// The `meta` data of a conversation (its session data links it to an Autoplay session).
    pub meta: Box<dyn Fn(&str) -> Value + Send + Sync>,
    /// What `GET messages` answers.
    pub history: History,
}

/// What `GET messages` answers.
pub enum History {
    /// The same messages for every conversation.
    Fixed(Value),
    /// What was posted into the conversation, oldest first (with the fingerprints sent).
    Stored,
}

/// How the stand-in answers one call (see [`Crisp::set_faults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers normally.
    None,
    /// Does what was asked (a post is stored), then answers this status (a proxy's 502/504).
    StoreThen(u16),
    /// Does what was asked, then cuts the connection without an answer.
    StoreThenReset,
    /// Does nothing and answers this status; with `Retry-After: 0` when `retry_after`.
    Refuse { status: u16, retry_after: bool },
}

/// What it was sent.
#[derive(Clone, Debug, Default)]
pub struct CrispLog {
    /// Every call, e.g. `PATCH compose (start)`, in arrival order.
    pub calls: Vec<String>,
    /// Operator messages posted (stored): conversation, text, arrival ([`mono_ns`]).
    pub posted: Vec<Posted>,
    /// The private notes posted for operators.
    pub notes: Vec<String>,
    pub compose: u64,
    pub meta: u64,
    pub history: u64,
}

#[derive(Clone, Debug)]
pub struct Posted {
    pub session: String,
    pub text: String,
    /// The fingerprint the post carried (the stand-in's own when it carried none).
    pub fingerprint: u64,
    /// Whether it was a proactive offer (`automated`).
    pub automated: bool,
    pub received_ns: u64,
}

/// Decides the fault of each call from its method and leaf (`message`, `messages`, …).
pub type Faults = Box<dyn FnMut(&Method, &str) -> Fault + Send>;

pub struct Crisp {
    settings: CrispSettings,
    log: Mutex<CrispLog>,
    fingerprint: AtomicU64,
    /// Each conversation's stored messages, for [`History::Stored`].
    conversations: Mutex<std::collections::HashMap<String, Vec<Value>>>,
    faults: Mutex<Option<Faults>>,
}

impl Crisp {
    pub fn new(settings: CrispSettings) -> Arc<Crisp> {
        Arc::new(Crisp {
            settings,
            log: Mutex::new(CrispLog::default()),
            fingerprint: AtomicU64::new(9_000_000_000),
            conversations: Mutex::default(),
            faults: Mutex::new(None),
        })
    }

    /// From now on each call's fault is `faults(method, leaf)`.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = Some(faults);
    }

    /// No faults from now on.
    pub fn clear_faults(&self) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn fault(&self, method: &Method, leaf: &str) -> Fault {
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        faults.as_mut().map_or(Fault::None, |decide| decide(method, leaf))
    }

    pub fn log(&self) -> CrispLog {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn reset(&self) {
        *self.log.lock().unwrap_or_else(PoisonError::into_inner) = CrispLog::default();
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/website/{site}/conversation/{session}/{leaf}", any(conversation))
            .route("/v1/website/{site}/conversation/{session}", any(exists))
            .with_state(Arc::clone(self))
    }
}

/// `GET` a conversation: every conversation of the website exists.
async fn exists(
    State(crisp): State<Arc<Crisp>>,
    method: Method,
    Path((site, session)): Path<(String, String)>,
) -> Response {
    crisp.log.lock().unwrap_or_else(PoisonError::into_inner).calls.push(format!("{method} conversation"));
    let known = crisp.settings.website.as_ref().is_none_or(|website| *website == site);
    match (method, known) {
        (Method::GET, true) => {
            (StatusCode::OK, axum::Json(json!({"error": false, "reason": "resolved", "data": {"session_id": session}})))
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({"error": true, "reason": "session_not_found", "data": {}})))
            .into_response(),
    }
}

async fn conversation(
    State(crisp): State<Arc<Crisp>>,
    method: Method,
    Path((site, session, leaf)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let received_ns = mono_ns();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = crisp.fault(&method, &leaf);
    if let Fault::Refuse { status, retry_after } = fault {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut response =
            (status, axum::Json(json!({"error": true, "reason": "stand_in_fault", "data": {}}))).into_response();
        if retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("0"));
        }
        return response;
    }
    let response = handle(&crisp, method, &site, session, &leaf, &body, received_ns);
    match fault {
        Fault::StoreThen(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, "<html>bad gateway</html>").into_response()
        }
        // Unwinding the connection's task drops the connection without an answer (and, unlike
        // a panic, prints nothing).
        Fault::StoreThenReset => std::panic::resume_unwind(Box::new("connection reset by the stand-in")),
        Fault::None | Fault::Refuse { .. } => response,
    }
}

fn handle(
    crisp: &Crisp,
    method: Method,
    site: &str,
    session: String,
    leaf: &str,
    body: &Value,
    received_ns: u64,
) -> Response {
    let reply = |status: StatusCode, reason: &str, data: Value| {
        (status, axum::Json(json!({"error": !status.is_success(), "reason": reason, "data": data}))).into_response()
    };
    let mut log = crisp.log.lock().unwrap_or_else(PoisonError::into_inner);
    let mut call = format!("{method} {leaf}");
    if let Some(kind) = body.get("type").and_then(Value::as_str) {
        call.push_str(&format!(" ({kind})"));
    }
    log.calls.push(call);
    if crisp.settings.website.as_ref().is_some_and(|website| website != site) {
        return reply(StatusCode::NOT_FOUND, "website_not_found", json!({}));
    }
    match (method, leaf) {
        (Method::GET, "meta") => {
            log.meta += 1;
            reply(StatusCode::OK, "resolved", (crisp.settings.meta)(&session))
        }
        (Method::GET, "messages") => {
            log.history += 1;
            let history = match &crisp.settings.history {
                History::Fixed(history) => history.clone(),
                History::Stored => {
                    let conversations = crisp.conversations.lock().unwrap_or_else(PoisonError::into_inner);
                    Value::Array(conversations.get(&session).cloned().unwrap_or_default())
                }
            };
            reply(StatusCode::OK, "resolved", history)
        }
        (Method::PATCH, "compose") => {
            log.compose += 1;
            reply(StatusCode::OK, "updated", json!({}))
        }
        (Method::POST, "message") => {
            let Some(content) = body.get("content").and_then(Value::as_str) else {
                return reply(StatusCode::BAD_REQUEST, "invalid_data", json!({}));
            };
            let fingerprint = body
                .get("fingerprint")
                .and_then(Value::as_u64)
                .unwrap_or_else(|| crisp.fingerprint.fetch_add(1, Ordering::Relaxed));
            let kind = body.get("type").and_then(Value::as_str).unwrap_or("text");
            let automated = body.get("automated").and_then(Value::as_bool).unwrap_or(false);
            // Private notes for operators (the context left with a hand-off) are not replies.
            match kind {
                "note" => log.notes.push(content.to_owned()),
                _ => log.posted.push(Posted {
                    session: session.clone(),
                    text: content.to_owned(),
                    fingerprint,
                    automated,
                    received_ns,
                }),
            }
            let stored = json!({
                "type": kind, "from": "operator", "origin": "chat", "content": content,
                "fingerprint": fingerprint, "timestamp": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            });
            crisp.conversations.lock().unwrap_or_else(PoisonError::into_inner).entry(session).or_default().push(stored);
            reply(StatusCode::ACCEPTED, "dispatched", json!({"fingerprint": fingerprint}))
        }
        _ => reply(StatusCode::NOT_FOUND, "route_not_found", json!({})),
    }
}

//! The Crisp REST API on a loopback port (`/v1/website/{site}/conversation/{session}/{leaf}`),
//! for the demo and the benchmarks: `meta` links a conversation to an Autoplay session as its
//! owner says, the conversation itself exists (`GET`), `messages` answers a fixed history, `compose` is acknowledged and `message`
//! recorded (operator replies and private notes apart). (The tests mount wiremock answers
//! instead, see [`crate::stand_ins`], to assert on the exact requests.)

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
    pub history: Value,
}

/// What it was sent.
#[derive(Clone, Debug, Default)]
pub struct CrispLog {
    /// Every call, e.g. `PATCH compose (start)`, in arrival order.
    pub calls: Vec<String>,
    /// Operator messages posted: conversation, text, arrival ([`mono_ns`]).
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
    pub received_ns: u64,
}

pub struct Crisp {
    settings: CrispSettings,
    log: Mutex<CrispLog>,
    fingerprint: AtomicU64,
}

impl Crisp {
    pub fn new(settings: CrispSettings) -> Arc<Crisp> {
        Arc::new(Crisp { settings, log: Mutex::new(CrispLog::default()), fingerprint: AtomicU64::new(9_000_000_000) })
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
    let reply = |status: StatusCode, reason: &str, data: Value| {
        (status, axum::Json(json!({"error": !status.is_success(), "reason": reason, "data": data}))).into_response()
    };
    let mut log = crisp.log.lock().unwrap_or_else(PoisonError::into_inner);
    let mut call = format!("{method} {leaf}");
    if let Some(kind) = body.get("type").and_then(Value::as_str) {
        call.push_str(&format!(" ({kind})"));
    }
    log.calls.push(call);
    if crisp.settings.website.as_ref().is_some_and(|website| *website != site) {
        return reply(StatusCode::NOT_FOUND, "website_not_found", json!({}));
    }
    match (method, leaf.as_str()) {
        (Method::GET, "meta") => {
            log.meta += 1;
            reply(StatusCode::OK, "resolved", (crisp.settings.meta)(&session))
        }
        (Method::GET, "messages") => {
            log.history += 1;
            reply(StatusCode::OK, "resolved", crisp.settings.history.clone())
        }
        (Method::PATCH, "compose") => {
            log.compose += 1;
            reply(StatusCode::OK, "updated", json!({}))
        }
        (Method::POST, "message") => {
            let Some(content) = body.get("content").and_then(Value::as_str) else {
                return reply(StatusCode::BAD_REQUEST, "invalid_data", json!({}));
            };
            // Private notes for operators (the context left with a hand-off) are not replies.
            match body.get("type").and_then(Value::as_str) {
                Some("note") => log.notes.push(content.to_owned()),
                _ => log.posted.push(Posted { session, text: content.to_owned(), received_ns }),
            }
            let fingerprint = crisp.fingerprint.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::ACCEPTED, "dispatched", json!({"fingerprint": fingerprint}))
        }
        _ => reply(StatusCode::NOT_FOUND, "route_not_found", json!({})),
    }
}

//! HTTP routes: the Crisp web hook and health checks.

use crate::replies::{Replies, Submitted};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crisp::{HookEvent, classify, id_for_log};
use plumbing::auth::{SecretDigest, verify_crisp_signature};
use plumbing::ratelimit::RateLimitedWarn;
use plumbing::telemetry::{HookOutcome, Metrics};
use plumbing::{ExposeSecret, SecretString};
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// Largest accepted hook body; Crisp's are a few KiB.
pub const MAX_HOOK_BODY: usize = 1 << 20;

pub struct AppState {
    /// This webhook's metrics (its own registry): what it counts and `/metrics` renders.
    pub metrics: Metrics,
    /// The `?key=` secret, held only as its digest.
    pub hook_key: HookKey,
    pub website_id: crisp::WebsiteId,
    /// Plugin hooks: the X-Crisp-Signature key, when configured.
    pub hook_signing_secret: Option<SecretString>,
    /// With `hook_signing_secret`: a hook whose `X-Crisp-Request-Timestamp` is further than
    /// this from now is refused (`HOOK_MAX_AGE_SECS`).
    pub hook_max_age: std::time::Duration,
    pub replies: Replies,
    /// Rate limit of the "hook refused" log line.
    pub refusals: Mutex<RateLimitedWarn>,
}

/// The public routes; `/metrics` too unless metrics are served on an address of their own.
pub fn router(state: Arc<AppState>, with_metrics: bool) -> Router {
    let mut routes = Router::new().route("/crisp/hooks", post(crisp_hook)).route("/health", get(health));
    if with_metrics {
        routes = routes.route("/metrics", get(render_metrics));
    }
    routes
        .route("/", get(health))
        // The span names the path only: the query holds the hook secret.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
        }))
        .layer(CatchPanicLayer::new())
        .with_state(state)
}

/// `/metrics` alone, for `METRICS_ADDR`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new().route("/metrics", get(render_metrics)).with_state(state)
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Counts a refused hook and answers it; the log line is rate-limited (anyone on the internet
/// can send refused hooks) and says how many refusals it stands for.
fn refuse(state: &AppState, outcome: HookOutcome, status: StatusCode, reason: &str) -> Response {
    state.metrics.hook_received(outcome);
    let allowed = state.refusals.lock().unwrap_or_else(PoisonError::into_inner).allow(std::time::Instant::now());
    if let Some(suppressed) = allowed {
        tracing::warn!(status = status.as_u16(), reason, suppressed_since_last = suppressed, "hook refused");
    }
    error(status, reason)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "running", "version": env!("CARGO_PKG_VERSION")}))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"status": "error", "error": message}))).into_response()
}

/// The hook key (`WEBHOOK_SECRET`): what every hook URL carries as `?key=`. Checked where it
/// enters (the settings) and kept only as its digest, compared in constant time.
#[derive(Clone)]
pub struct HookKey(SecretDigest);

/// What [`HookKey::parse`] accepts (it goes in a URL, percent-encoded where needed).
pub const HOOK_KEY_RULE: &str = "1 to 512 bytes, no control characters";

impl HookKey {
    pub fn parse(key: &str) -> Result<Self, plumbing::ids::IdError> {
        let plain = !key.is_empty() && key.len() <= 512 && !key.chars().any(char::is_control);
        if plain {
            Ok(Self(SecretDigest::new(key.as_bytes())))
        } else {
            Err(plumbing::ids::IdError { kind: "hook key", rule: HOOK_KEY_RULE })
        }
    }
}

impl std::fmt::Debug for HookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookKey(..)")
    }
}

fn key_matches(query: Option<&str>, key: &HookKey) -> bool {
    let given = query
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value);
    given.is_some_and(|given| key.0.matches(given.as_bytes()))
}

/// Why a signed hook was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadSignature {
    /// Missing headers, or a signature that does not match.
    Invalid,
    /// A valid signature over a timestamp too far from now (a replay).
    Stale,
}

/// A hook timestamp in Unix milliseconds: values above 10^12 are milliseconds, others seconds.
fn timestamp_ms(text: &str) -> Option<i128> {
    let value: i128 = text.trim().parse().ok()?;
    if value < 0 {
        return None;
    }
    Some(if value > 1_000_000_000_000 { value } else { value.saturating_mul(1000) })
}

/// Checks a plugin hook's X-Crisp-Signature over the raw body, and that its signed
/// `X-Crisp-Request-Timestamp` is within `max_age` of `now_ms` (Unix milliseconds).
fn signature_matches(
    headers: &HeaderMap,
    body: &[u8],
    secret: &SecretString,
    max_age: std::time::Duration,
    now_ms: i128,
) -> Result<(), BadSignature> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) = (header("x-crisp-request-timestamp"), header("x-crisp-signature")) else {
        return Err(BadSignature::Invalid);
    };
    if !verify_crisp_signature(secret.expose_secret().as_bytes(), timestamp, body, signature) {
        return Err(BadSignature::Invalid);
    }
    match timestamp_ms(timestamp) {
        Some(at) if (now_ms - at).abs() <= max_age.as_millis() as i128 => Ok(()),
        _ => Err(BadSignature::Stale),
    }
}

fn now_ms() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i128)
}

/// The hook's answer once the message is taken (or deliberately ignored): fixed bytes.
fn hook_ok() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response()
}

/// Takes the request whole: the headers are read in place (an extractor would copy them for
/// every hook) and the body is collected here, after the key check.
async fn crisp_hook(State(state): State<Arc<AppState>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    if !key_matches(parts.uri.query(), &state.hook_key) {
        return refuse(&state, HookOutcome::Unauthorized, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_HOOK_BODY).await else {
        return refuse(&state, HookOutcome::BadRequest, StatusCode::PAYLOAD_TOO_LARGE, "body too large or unreadable");
    };
    if let Some(secret) = &state.hook_signing_secret
        && let Err(bad) = signature_matches(&parts.headers, &body, secret, state.hook_max_age, now_ms())
    {
        let reason = match bad {
            BadSignature::Invalid => "bad signature",
            BadSignature::Stale => "stale signature: X-Crisp-Request-Timestamp too far from now",
        };
        return refuse(&state, HookOutcome::BadSignature, StatusCode::UNAUTHORIZED, reason);
    }
    let event = match classify(&body, &state.website_id) {
        Ok(event) => event,
        Err(e) => return refuse(&state, HookOutcome::BadRequest, StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match event {
        HookEvent::VisitorText(message) => {
            let session = id_for_log(message.session_id.as_str()).to_owned();
            match state.replies.submit(message).await {
                Submitted::Accepted | Submitted::Duplicate => {
                    state.metrics.hook_received(HookOutcome::VisitorMessage);
                    tracing::info!(session, "visitor message accepted")
                }
                Submitted::Overloaded => {
                    state.metrics.hook_received(HookOutcome::Overloaded);
                    tracing::error!(session, "too many messages waiting; asking Crisp to retry later");
                    return error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
                }
                Submitted::NotRecorded => {
                    state.metrics.hook_received(HookOutcome::NotRecorded);
                    return error(StatusCode::SERVICE_UNAVAILABLE, "cannot record the message; retry later");
                }
            }
        }
        // Who has the floor must be recorded before the `200`: otherwise Crisp redelivers.
        HookEvent::OperatorText(message) => {
            state.metrics.hook_received(HookOutcome::OperatorMessage);
            if let Err(e) = state.replies.operator_wrote(message).await {
                tracing::error!(error = %e, "cannot record the operator's takeover; asking Crisp to retry");
                return error(StatusCode::SERVICE_UNAVAILABLE, "cannot record the takeover; retry later");
            }
        }
        HookEvent::Resolved { session_id } => {
            state.metrics.hook_received(HookOutcome::Resolved);
            if let Err(e) = state.replies.resolved(&session_id).await {
                tracing::error!(error = %e, "cannot record the resolution; asking Crisp to retry");
                return error(StatusCode::SERVICE_UNAVAILABLE, "cannot record the resolution; retry later");
            }
        }
        HookEvent::SessionData { session_id, data } => {
            state.metrics.hook_received(HookOutcome::SessionData);
            state.replies.session_data(&session_id, &data).await
        }
        HookEvent::Ignored(reason) => {
            state.metrics.hook_received(HookOutcome::Ignored);
            tracing::debug!(reason, "hook ignored")
        }
    }
    hook_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_key_is_checked_where_it_enters_and_matched_from_the_query() {
        for bad in ["", "a\tb", "a\u{7}b", &"k".repeat(513)] {
            assert!(HookKey::parse(bad).is_err(), "{bad:?}");
        }
        let key = HookKey::parse("s3cr%t").unwrap();
        assert!(key_matches(Some("key=s3cr%25t"), &key), "percent-encoded in the URL");
        assert!(key_matches(Some("x=1&key=s3cr%25t"), &key));
        assert!(!key_matches(Some("key=s3cr"), &key));
        assert!(!key_matches(Some("key=s3cr%25tt"), &key));
        assert!(!key_matches(None, &key));
        assert_eq!(format!("{key:?}"), "HookKey(..)", "never shown");
    }

    #[test]
    fn hook_timestamps_above_ten_to_the_twelve_are_milliseconds() {
        assert_eq!(timestamp_ms("1700000000"), Some(1_700_000_000_000));
        assert_eq!(timestamp_ms("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(timestamp_ms("1000000000000"), Some(1_000_000_000_000_000), "10^12 itself is seconds");
        assert_eq!(timestamp_ms("x"), None);
        assert_eq!(timestamp_ms("-5"), None);
        assert_eq!(timestamp_ms("99999999999999999999999999999999999999999"), None);
    }
}

//! The Crisp REST API v1 calls the bot makes, with timeouts and bounded retries.

use super::hook::Lenient;
use crate::ids::{ConversationId, Fingerprint, WebsiteId};
use plumbing::http_body::{BodyError, read_capped};
use plumbing::retry::{RetryPolicy, RetryableError, parse_retry_after};
use plumbing::telemetry::{CRISP_POSTS_CHECKED, CRISP_SECONDS, Metrics};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// Largest Crisp answer read (a page of messages is well under it).
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Per-attempt limit on one Crisp call (the official SDKs use 5-10 s).
pub const CRISP_CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct CrispSettings {
    pub api_base_url: String,
    pub website_id: WebsiteId,
    pub token_identifier: String,
    pub token_key: SecretString,
    pub tier: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CrispError {
    #[error("Crisp request failed: {0}")]
    Transport(#[from] plumbing::http_body::TransportError),
    #[error("Crisp answered HTTP {status} ({reason})")]
    Status { status: u16, reason: String, retry_after: Option<Duration> },
    #[error("Crisp answer could not be read: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("Crisp answer could not be read: {0}")]
    TooLarge(#[source] plumbing::http_body::BodyError),
    #[error("invalid Crisp API base URL")]
    BadBaseUrl,
    /// A post failed in a way that may have stored it, and reading the conversation back to
    /// find out failed too: it must not be posted again until the conversation says.
    #[error("Crisp may have stored the message; reading the conversation to find out failed: {0}")]
    Unconfirmed(#[source] Box<CrispError>),
    /// A post not tried again: the caller's condition no longer holds (a human took over).
    #[error("the post was withdrawn before it was tried again")]
    Withdrawn,
}

impl CrispError {
    /// Whether Crisp may have acted on the request although it failed: the request was written
    /// and the answer is missing, cut or a 5xx. Throttling (420, 429) and a 503 with
    /// `Retry-After` say it was not processed; a connection never made carried nothing.
    pub fn may_have_acted(&self) -> bool {
        match self {
            CrispError::Transport(e) => !e.is_connect(),
            CrispError::Status { status: 420 | 429, .. } => false,
            CrispError::Status { status: 503, retry_after: Some(_), .. } => false,
            CrispError::Status { status, .. } => *status >= 500,
            // Read after the status: the request was taken.
            CrispError::TooLarge(_) => true,
            CrispError::Decode(_) | CrispError::BadBaseUrl | CrispError::Unconfirmed(_) | CrispError::Withdrawn => {
                false
            }
        }
    }
}

impl RetryableError for CrispError {
    fn is_transient(&self) -> bool {
        match self {
            CrispError::Transport(_) => true,
            CrispError::Status { status, .. } => matches!(status, 420 | 429) || *status >= 500,
            CrispError::Decode(_)
            | CrispError::TooLarge(_)
            | CrispError::BadBaseUrl
            | CrispError::Unconfirmed(_)
            | CrispError::Withdrawn => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            CrispError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A conversation's session data, as text: strings (trimmed, non-empty) and numbers; values of
/// other types (booleans, objects) are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionData(std::collections::HashMap<String, String>);

impl SessionData {
    fn from_meta(answer: &Value) -> Self {
        answer.pointer("/data/data").and_then(Value::as_object).map(Self::from_object).unwrap_or_default()
    }

    /// From the `data` object itself (as `session:set_data` hooks carry it).
    pub fn from_object(fields: &serde_json::Map<String, Value>) -> Self {
        Self(
            fields
                .iter()
                .filter_map(|(key, value)| {
                    let text = match value {
                        Value::String(s) => s.trim().to_owned(),
                        Value::Number(n) => n.to_string(),
                        _ => return None,
                    };
                    (!text.is_empty()).then(|| (key.clone(), text))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// A message of a conversation as `GET .../messages` lists it: what the bot reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationMessage {
    /// `text`, `note`, `file`, `event`, …
    pub kind: String,
    /// `user` (the visitor) or `operator` (a human or the bot).
    pub from: String,
    /// The text of a text message.
    pub text: Option<String>,
    pub fingerprint: Option<Fingerprint>,
    /// Epoch milliseconds.
    pub timestamp: Option<i64>,
}

/// `{"data": [...]}`; a field of an unexpected type reads as absent, as in hooks.
#[derive(serde::Deserialize)]
struct MessagesPage {
    #[serde(default)]
    data: Vec<WireMessage>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct WireMessage {
    #[serde(rename = "type")]
    kind: Lenient<String>,
    from: Lenient<String>,
    content: Lenient<String>,
    fingerprint: Lenient<u64>,
    timestamp: Lenient<i64>,
}

impl From<WireMessage> for ConversationMessage {
    fn from(m: WireMessage) -> Self {
        let kind = m.kind.0.unwrap_or_default();
        let text = if kind == "text" { m.content.0 } else { None };
        Self {
            kind,
            from: m.from.0.unwrap_or_default(),
            text,
            fingerprint: m.fingerprint.0.map(Fingerprint::from_wire),
            timestamp: m.timestamp.0,
        }
    }
}

#[derive(Serialize)]
struct OutgoingText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    from: &'static str,
    origin: &'static str,
    content: &'a str,
    /// Ours, derived from what the message answers: a repeat after an ambiguous failure is
    /// recognised in the conversation.
    fingerprint: Fingerprint,
    /// Marks a bot message the visitor did not ask for (a proactive offer).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    automated: bool,
}

/// What the bot posts into a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostKind {
    /// A text the visitor reads: a reply, the fallback, a hand-off message.
    Reply,
    /// A text the visitor did not ask for (a proactive offer), marked `automated`.
    Offer,
    /// A private note for operators.
    Note,
}

/// One message the bot posts, with the fingerprint that makes it recognisable (see
/// [`message_fingerprint`]).
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    pub kind: PostKind,
    pub content: &'a str,
    pub fingerprint: Fingerprint,
}

/// A message fingerprint derived from what the message answers (`parts`: its kind, the
/// conversation, the id of what it answers): a retry, a replay after a restart or another
/// replica derive the same one. 52 bits, so JavaScript clients read it exactly.
pub fn message_fingerprint(parts: &[&str]) -> Fingerprint {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    Fingerprint::from_wire((u64::from_le_bytes(bytes) & ((1 << 52) - 1)).max(1))
}

#[derive(Serialize)]
struct Compose {
    #[serde(rename = "type")]
    kind: &'static str,
    from: &'static str,
}

#[derive(Clone)]
pub struct CrispClient {
    http: reqwest::Client,
    base: Url,
    settings: CrispSettings,
    retry: RetryPolicy,
    /// Posts whose outcome is unknown (conversation, fingerprint): the conversation is read
    /// before any repeat.
    uncertain: moka::sync::Cache<(ConversationId, Fingerprint), ()>,
    /// Where its calls are counted and timed (its app's; none until [`CrispClient::with_metrics`]).
    metrics: Metrics,
}

impl std::fmt::Debug for CrispClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrispClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl CrispClient {
    pub fn new(settings: CrispSettings, retry: RetryPolicy) -> Result<Self, CrispError> {
        let base = Url::parse(settings.api_base_url.trim_end_matches('/')).map_err(|_| CrispError::BadBaseUrl)?;
        if base.cannot_be_a_base() {
            return Err(CrispError::BadBaseUrl);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(CRISP_CALL_TIMEOUT)
            .build()
            .map_err(|e| CrispError::Transport(e.into()))?;
        let uncertain =
            moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(3600)).build();
        Ok(Self { http, base, settings, retry, uncertain, metrics: Metrics::default() })
    }

    /// The same client, counting and timing its calls in `metrics` (its app's registry):
    /// `crisp_request_duration_seconds{call,outcome}`, `crisp_posts_checked_total{outcome}`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn website_id(&self) -> &WebsiteId {
        &self.settings.website_id
    }

    /// The settings it was made with (other clients of the same API reuse them).
    pub fn settings(&self) -> &CrispSettings {
        &self.settings
    }

    /// Posts a message into the conversation as an operator, at most once: after a failure
    /// that may have stored it ([`CrispError::may_have_acted`]), the conversation's latest
    /// messages are read and the post is repeated only when its fingerprint is not among them.
    /// When that read fails too, the answer is [`CrispError::Unconfirmed`] and the post stays
    /// uncertain: the next call with the same fingerprint reads the conversation first.
    pub async fn post(&self, session_id: &ConversationId, post: &Post<'_>) -> Result<(), CrispError> {
        self.post_while(session_id, post, || Box::pin(async { true })).await
    }

    /// [`CrispClient::post`], tried (and tried again) only while `still` says so (asked before
    /// each attempt: a human may have taken the conversation over meanwhile); else
    /// [`CrispError::Withdrawn`].
    pub async fn post_while<'a>(
        &self,
        session_id: &ConversationId,
        post: &Post<'_>,
        still: impl Fn() -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>>,
    ) -> Result<(), CrispError> {
        let still = &still;
        let url = self.website_url(&["conversation", session_id.as_str(), "message"]);
        let body = OutgoingText {
            kind: if post.kind == PostKind::Note { "note" } else { "text" },
            from: "operator",
            origin: "chat",
            content: post.content,
            fingerprint: post.fingerprint,
            automated: post.kind == PostKind::Offer,
        };
        let key = (session_id.to_owned(), post.fingerprint);
        self.retry
            .run("Crisp post", || async {
                if !still().await {
                    return Err(CrispError::Withdrawn);
                }
                if self.uncertain.contains_key(&key) {
                    let found = self.holds_fingerprint(session_id, post.fingerprint).await;
                    let outcome = match &found {
                        Ok(true) => "found",
                        Ok(false) => "absent",
                        Err(_) => "unknown",
                    };
                    self.metrics.counter_with(CRISP_POSTS_CHECKED, &[("outcome", outcome)]).increment(1);
                    match found {
                        Ok(true) => {
                            self.uncertain.invalidate(&key);
                            return Ok(());
                        }
                        Ok(false) => {}
                        Err(e) => return Err(CrispError::Unconfirmed(Box::new(e))),
                    }
                }
                match self.timed_attempt(Method::POST, url.clone(), Some(&body), "message").await {
                    Ok(_) => {
                        self.uncertain.invalidate(&key);
                        Ok(())
                    }
                    Err(e) => {
                        if e.may_have_acted() {
                            self.uncertain.insert(key.clone(), ());
                        }
                        Err(e)
                    }
                }
            })
            .await
    }

    /// Marks a post as possibly stored (a reply resumed after a restart or on another
    /// replica): the next [`CrispClient::post`] of it reads the conversation first.
    pub fn mark_uncertain(&self, session_id: &ConversationId, fingerprint: Fingerprint) {
        self.uncertain.insert((session_id.to_owned(), fingerprint), ());
    }

    /// Whether the conversation's latest messages hold this fingerprint (one attempt).
    async fn holds_fingerprint(
        &self,
        session_id: &ConversationId,
        fingerprint: Fingerprint,
    ) -> Result<bool, CrispError> {
        let answer = self.call_with::<()>(&RetryPolicy::none(), Method::GET, session_id, "messages", None).await?;
        Ok(answer.pointer("/data").and_then(Value::as_array).is_some_and(|messages| {
            messages.iter().any(|m| m.get("fingerprint").and_then(Value::as_u64) == Some(fingerprint.get()))
        }))
    }

    /// Starts the conversation of a session the widget created where nothing was written yet
    /// (`POST …/initiate`, no body), so a first operator message can reach the visitor.
    pub async fn initiate(&self, session_id: &ConversationId) -> Result<(), CrispError> {
        self.call::<()>(Method::POST, session_id, "initiate", None).await.map(drop)
    }

    /// Sets the conversation's state (`pending`, `unresolved` or `resolved`).
    pub async fn set_state(&self, session_id: &ConversationId, state: &str) -> Result<(), CrispError> {
        let body = serde_json::json!({ "state": state });
        self.call(Method::PATCH, session_id, "state", Some(&body)).await.map(drop)
    }

    /// Assigns the conversation to an operator.
    pub async fn assign(&self, session_id: &ConversationId, user_id: &str) -> Result<(), CrispError> {
        let body = serde_json::json!({ "assigned": { "user_id": user_id } });
        self.call(Method::PATCH, session_id, "routing", Some(&body)).await.map(drop)
    }

    /// Whether an operator is available (`GET /website/{id}/availability/status`).
    pub async fn operators_online(&self) -> Result<bool, CrispError> {
        let url = self.website_url(&["availability", "status"]);
        let answer = self.retry.run("Crisp call", || self.attempt::<()>(Method::GET, url.clone(), None)).await?;
        Ok(answer.pointer("/data/status").and_then(Value::as_str) == Some("online"))
    }

    /// Shows (`true`) or clears (`false`) the operator typing indicator. Showing is tried once
    /// (it must not delay the answer); clearing is retried, so it never stays on.
    pub async fn compose(&self, session_id: &ConversationId, typing: bool) -> Result<(), CrispError> {
        let body = Compose { kind: if typing { "start" } else { "stop" }, from: "operator" };
        let policy = if typing { RetryPolicy::none() } else { self.retry.clone() };
        self.call_with(&policy, Method::PATCH, session_id, "compose", Some(&body)).await.map(drop)
    }

    /// The conversation's session data (`data.data` of `GET .../meta`): what the widget set.
    pub async fn session_data(&self, session_id: &ConversationId) -> Result<SessionData, CrispError> {
        let answer = self.call::<()>(Method::GET, session_id, "meta", None).await?;
        Ok(SessionData::from_meta(&answer))
    }

    /// The latest batch of messages of the conversation, oldest first.
    pub async fn messages(&self, session_id: &ConversationId) -> Result<Vec<ConversationMessage>, CrispError> {
        let answer = self.call::<()>(Method::GET, session_id, "messages", None).await?;
        // The lenient fields read from text (they borrow the raw JSON of each value).
        let page: MessagesPage = serde_json::from_str(&answer.to_string()).map_err(CrispError::Decode)?;
        Ok(page.data.into_iter().map(ConversationMessage::from).collect())
    }

    /// `GET /website/{id}`: proves the token, tier and website id work together.
    pub async fn check_website(&self) -> Result<(), CrispError> {
        let url = self.website_url(&[]);
        self.attempt::<()>(Method::GET, url, None).await.map(drop)
    }

    /// `{base}/website/{website_id}/{segments…}`. Each segment is escaped as one; the ids are
    /// plain segments by construction ([`WebsiteId`], [`ConversationId`]).
    fn website_url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["website", self.settings.website_id.as_str()]).extend(segments);
        }
        url
    }

    async fn call<B: Serialize>(
        &self,
        method: Method,
        session_id: &ConversationId,
        leaf: &str,
        body: Option<&B>,
    ) -> Result<Value, CrispError> {
        self.call_with(&self.retry, method, session_id, leaf, body).await
    }

    async fn call_with<B: Serialize>(
        &self,
        policy: &RetryPolicy,
        method: Method,
        session_id: &ConversationId,
        leaf: &str,
        body: Option<&B>,
    ) -> Result<Value, CrispError> {
        let url = self.website_url(&["conversation", session_id.as_str(), leaf]);
        policy.run("Crisp call", || self.timed_attempt(method.clone(), url.clone(), body, leaf)).await
    }

    /// One attempt, its duration recorded by call and outcome.
    async fn timed_attempt<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        leaf: &str,
    ) -> Result<Value, CrispError> {
        let started = std::time::Instant::now();
        let result = self.attempt(method, url, body).await;
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(CrispError::Status { status, .. }) => status.to_string(),
            Err(_) => "error".to_owned(),
        };
        self.metrics
            .histogram_with(CRISP_SECONDS, &[("call", leaf.to_owned()), ("outcome", outcome)])
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn attempt<B: Serialize>(&self, method: Method, url: Url, body: Option<&B>) -> Result<Value, CrispError> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .basic_auth(&self.settings.token_identifier, Some(self.settings.token_key.expose_secret()))
            .header("X-Crisp-Tier", &self.settings.tier)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| CrispError::Transport(e.into()))?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers());
        let bytes = read_capped(response, MAX_ANSWER_BYTES).await.map_err(|e| match e {
            BodyError::Broken(e) => CrispError::Transport(e.into()),
            too_large @ BodyError::TooLarge { .. } => CrispError::TooLarge(too_large),
        })?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let reason = answer.get("reason").and_then(Value::as_str).unwrap_or("no reason given").to_owned();
            return Err(CrispError::Status { status: status.as_u16(), reason, retry_after });
        }
        Ok(answer)
    }

    /// Whether the conversation exists on our website:
    /// `GET /website/{website_id}/conversation/{session_id}`, `404` => false.
    pub async fn conversation_exists(&self, session_id: &ConversationId) -> Result<bool, CrispError> {
        let url = self.website_url(&["conversation", session_id.as_str()]);
        let found = self
            .retry
            .run("Crisp call", || async {
                let started = std::time::Instant::now();
                let result = self.attempt::<()>(Method::GET, url.clone(), None).await;
                let outcome = match &result {
                    Ok(_) => "ok".to_owned(),
                    Err(CrispError::Status { status, .. }) => status.to_string(),
                    Err(_) => "error".to_owned(),
                };
                self.metrics
                    .histogram_with(CRISP_SECONDS, &[("call", "conversation".to_owned()), ("outcome", outcome)])
                    .record(started.elapsed().as_secs_f64());
                result
            })
            .await;
        match found {
            Ok(_) => Ok(true),
            Err(CrispError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The conversation's segments (`data.segments` of `GET …/meta`); none when it has none.
    pub async fn segments(&self, session_id: &ConversationId) -> Result<Vec<String>, CrispError> {
        let answer = self.call::<()>(Method::GET, session_id, "meta", None).await?;
        Ok(answer
            .pointer("/data/segments")
            .and_then(Value::as_array)
            .map(|segments| segments.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default())
    }

    /// Replaces the conversation's segments (`PATCH …/meta` with `{"segments": [...]}`): pass
    /// the ones read with [`CrispClient::segments`] plus yours, so none is lost.
    pub async fn set_segments(&self, session_id: &ConversationId, segments: &[String]) -> Result<(), CrispError> {
        let body = serde_json::json!({ "segments": segments });
        self.call(Method::PATCH, session_id, "meta", Some(&body)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    fn conv(id: &str) -> ConversationId {
        ConversationId::parse(id).unwrap()
    }

    use super::*;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn reply(content: &str, fingerprint: u64) -> Post<'_> {
        let fingerprint = Fingerprint::from_wire(fingerprint);
        Post { kind: PostKind::Reply, content, fingerprint }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        }
    }

    /// A Crisp that stores every post (its `messages` lists them) and answers the first
    /// `failures` posts with `fail` after storing (`stores_first`) or without storing.
    struct Conversation {
        stored: std::sync::Mutex<Vec<Value>>,
        failures: std::sync::atomic::AtomicUsize,
        fail: ResponseTemplate,
        stores_first: bool,
        history_fails: bool,
    }

    impl wiremock::Respond for Conversation {
        fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
            use std::sync::atomic::Ordering;
            if request.method == wiremock::http::Method::GET {
                if self.history_fails {
                    return ResponseTemplate::new(500);
                }
                let data = self.stored.lock().unwrap().clone();
                return ResponseTemplate::new(200).set_body_json(serde_json::json!({"error": false, "data": data}));
            }
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let failing = self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
            if !failing || self.stores_first {
                self.stored.lock().unwrap().push(body.clone());
            }
            if failing {
                return self.fail.clone();
            }
            ResponseTemplate::new(202)
                .set_body_json(serde_json::json!({"error": false, "data": {"fingerprint": body["fingerprint"]}}))
        }
    }

    async fn conversation(server: &MockServer, conversation: Conversation) -> std::sync::Arc<Conversation> {
        let conversation = std::sync::Arc::new(conversation);
        struct Shared(std::sync::Arc<Conversation>);
        impl wiremock::Respond for Shared {
            fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
                self.0.respond(request)
            }
        }
        Mock::given(wiremock::matchers::path_regex("^/v1/website/site/conversation/s/messages?$"))
            .respond_with(Shared(std::sync::Arc::clone(&conversation)))
            .mount(server)
            .await;
        conversation
    }

    fn faulty(failures: usize, fail: ResponseTemplate, stores_first: bool) -> Conversation {
        Conversation { stored: Default::default(), failures: failures.into(), fail, stores_first, history_fails: false }
    }

    #[tokio::test]
    async fn a_post_crisp_stored_before_failing_is_not_posted_again() {
        for fail in [ResponseTemplate::new(504), ResponseTemplate::new(502), ResponseTemplate::new(500)] {
            let server = MockServer::start().await;
            let c = conversation(&server, faulty(1, fail, true)).await;
            client(&server, fast()).post(&conv("s"), &reply("hello", 7)).await.unwrap();
            assert_eq!(c.stored.lock().unwrap().len(), 1, "one visible message");
        }
    }

    #[tokio::test]
    async fn a_timed_out_post_that_was_stored_is_found_not_repeated() {
        let server = MockServer::start().await;
        let slow = ResponseTemplate::new(202).set_delay(Duration::from_secs(30));
        let c = conversation(&server, faulty(1, slow, true)).await;
        let mut crisp = client(&server, fast());
        crisp.http = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
        crisp.post(&conv("s"), &reply("hello", 7)).await.unwrap();
        assert_eq!(c.stored.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_post_that_failed_without_storing_is_posted_again() {
        let server = MockServer::start().await;
        let c = conversation(&server, faulty(2, ResponseTemplate::new(504), false)).await;
        client(&server, fast()).post(&conv("s"), &reply("hello", 7)).await.unwrap();
        assert_eq!(c.stored.lock().unwrap().len(), 1);
        let throttled = ResponseTemplate::new(429).insert_header("Retry-After", "0");
        let server = MockServer::start().await;
        let c = conversation(&server, faulty(1, throttled, false)).await;
        client(&server, fast()).post(&conv("s"), &reply("hello", 7)).await.unwrap();
        assert_eq!(c.stored.lock().unwrap().len(), 1);
        let history_reads =
            server.received_requests().await.unwrap().iter().filter(|r| r.method.as_str() == "GET").count();
        assert_eq!(history_reads, 0, "a 429 says nothing was stored: no read needed");
    }

    #[tokio::test]
    async fn an_unconfirmed_post_is_checked_before_it_is_posted_again() {
        let server = MockServer::start().await;
        let mut broken = faulty(1, ResponseTemplate::new(502), true);
        broken.history_fails = true;
        let c = conversation(&server, broken).await;
        let crisp = client(&server, fast());
        let err = crisp.post(&conv("s"), &reply("hello", 7)).await.unwrap_err();
        assert!(matches!(err, CrispError::Unconfirmed(_)), "{err}");
        assert_eq!(c.stored.lock().unwrap().len(), 1);
        // Later (the reply retried), with the history readable: found, not posted again.
        let server2 = MockServer::start().await;
        let c2 = conversation(&server2, faulty(0, ResponseTemplate::new(200), false)).await;
        c2.stored.lock().unwrap().extend(c.stored.lock().unwrap().clone());
        let mut crisp = crisp;
        crisp.base = Url::parse(&format!("{}/v1", server2.uri())).unwrap();
        crisp.post(&conv("s"), &reply("hello", 7)).await.unwrap();
        assert_eq!(c2.stored.lock().unwrap().len(), 1, "found, not repeated");
    }

    #[tokio::test]
    async fn a_post_is_not_repeated_once_its_condition_fails() {
        let server = MockServer::start().await;
        let c = conversation(&server, faulty(1, ResponseTemplate::new(429), false)).await;
        let err =
            client(&server, fast()).post_while(&conv("s"), &reply("hello", 7), || Box::pin(async { false })).await;
        assert!(matches!(err, Err(CrispError::Withdrawn)), "{err:?}");
        assert!(c.stored.lock().unwrap().is_empty());
    }

    #[test]
    fn fingerprints_are_stable_distinct_and_fit_javascript() {
        let a = message_fingerprint(&["reply", "session_1", "42"]);
        assert_eq!(a, message_fingerprint(&["reply", "session_1", "42"]));
        assert_ne!(a, message_fingerprint(&["note", "session_1", "42"]));
        assert_ne!(message_fingerprint(&["ab", "c"]), message_fingerprint(&["a", "bc"]));
        assert!(a.get() > 0 && a.get() < (1 << 53));
    }

    fn client(server: &MockServer, retry: RetryPolicy) -> CrispClient {
        CrispClient::new(
            CrispSettings {
                api_base_url: format!("{}/v1", server.uri()),
                website_id: WebsiteId::parse("site").unwrap(),
                token_identifier: "ident".into(),
                token_key: SecretString::from("key"),
                tier: "plugin".into(),
            },
            retry,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn sends_an_operator_text_message() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/website/site/conversation/session_1/message"))
            .and(header("authorization", "Basic aWRlbnQ6a2V5"))
            .and(header("x-crisp-tier", "plugin"))
            .and(body_json(serde_json::json!({
                "type":"text","from":"operator","origin":"chat","content":"hello","fingerprint":42
            })))
            .respond_with(ResponseTemplate::new(202).set_body_json(serde_json::json!({
                "error": false, "reason": "dispatched", "data": {"fingerprint": 42}
            })))
            .expect(1)
            .mount(&server)
            .await;
        client(&server, RetryPolicy::none()).post(&conv("session_1"), &reply("hello", 42)).await.unwrap();
    }

    #[tokio::test]
    async fn errors_carry_crisp_reason_and_4xx_is_not_retried() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({
                "error": true, "reason": "not_subscribed", "data": {}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(&server, RetryPolicy::default()).post(&conv("s"), &reply("x", 1)).await.unwrap_err();
        assert_eq!(err.to_string(), "Crisp answered HTTP 404 (not_subscribed)");
    }

    #[test]
    fn an_id_that_is_not_a_plain_segment_is_no_conversation_id() {
        // The client takes only a `ConversationId`, so such an id can never reach a URL.
        for bad in ["", ".", "..", "a/b", "x?y", "a#b", "a%2F"] {
            assert!(ConversationId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_data_keeps_strings_and_numbers() {
        let meta = serde_json::json!({"error": false, "data": {"nickname": "v", "data": {
            "autoplay_session_id": " ps_1 ", "plan": 3, "vip": true, "empty": "  ", "nested": {"a": 1}
        }}});
        let data = SessionData::from_meta(&meta);
        assert_eq!((data.get("autoplay_session_id"), data.get("plan")), (Some("ps_1"), Some("3")));
        assert_eq!((data.get("vip"), data.get("empty"), data.get("nested")), (None, None, None));
        assert_eq!(SessionData::from_meta(&serde_json::json!({"data": null})), SessionData::default());
    }

    #[tokio::test]
    async fn messages_are_read_leniently_into_typed_messages() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/website/site/conversation/s/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"error": false, "data": [
                {"type": "text", "from": "user", "content": "hi", "fingerprint": 1, "timestamp": 10},
                {"type": "file", "from": "user", "content": {"url": "x"}, "fingerprint": "not a number"},
                {"type": "text", "from": "operator", "content": "hello", "fingerprint": 2, "timestamp": 11}
            ]})))
            .mount(&server)
            .await;
        let messages = client(&server, RetryPolicy::none()).messages(&conv("s")).await.unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].text.as_deref(), Some("hi"));
        assert_eq!(
            (messages[1].kind.as_str(), messages[1].text.as_deref(), messages[1].fingerprint),
            ("file", None, None)
        );
        assert_eq!((messages[2].from.as_str(), messages[2].timestamp), ("operator", Some(11)));
    }

    #[tokio::test]
    async fn throttling_is_retried() {
        let server = MockServer::start().await;
        Mock::given(method("PATCH")).respond_with(ResponseTemplate::new(420)).up_to_n_times(1).mount(&server).await;
        Mock::given(method("PATCH"))
            .and(path("/v1/website/site/conversation/s/compose"))
            .and(body_json(serde_json::json!({"type":"stop","from":"operator"})))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"error": false})))
            .mount(&server)
            .await;
        let fast = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        client(&server, fast).compose(&conv("s"), false).await.unwrap();
    }

    #[tokio::test]
    async fn showing_the_typing_indicator_is_tried_once() {
        let server = MockServer::start().await;
        Mock::given(method("PATCH")).respond_with(ResponseTemplate::new(503)).expect(1).mount(&server).await;
        let fast = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        assert!(client(&server, fast).compose(&conv("s"), true).await.is_err());
    }
}

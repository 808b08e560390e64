//! An OpenAI-compatible LLM on a loopback port (`POST /v1/chat/completions`), for the demo and
//! the benchmarks: it answers with text its owner derives from the request, or forwards the
//! request unchanged to a real server; it can wait before answering; it records every call.
//! (The tests mount wiremock answers instead, see [`crate::stand_ins`], to assert on requests.)

use crate::clock::mono_ns;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What answers a request.
pub enum Answer {
    /// Text made from the request (deterministic).
    Local(Box<dyn Fn(&Value) -> String + Send + Sync>),
    /// Text or a tool call made from the request (deterministic).
    LocalReply(Box<dyn Fn(&Value) -> Reply + Send + Sync>),
    /// A real OpenAI-compatible server; its answer is relayed as it is.
    Upstream(Upstream),
}

/// What an [`Answer::LocalReply`] answers: text, or a call of one of the request's tools.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Text(String),
    Tool { name: String, arguments: String },
}

/// A real OpenAI-compatible server the stand-in forwards to.
#[derive(Clone)]
pub struct Upstream {
    pub base_url: String,
    pub api_key: String,
    pub http: reqwest::Client,
}

/// One call as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct LlmCall {
    /// The request body, when requests are kept (see [`Llm::new`]).
    pub request: Option<Value>,
    /// The text after the last `User question: ` of the last message, when there is one.
    pub question: Option<String>,
    /// The answer text, or what went wrong.
    pub answer: Result<String, String>,
    /// When the request arrived and when the answer left, [`mono_ns`].
    pub received_ns: u64,
    pub answered_ns: u64,
}

pub struct Llm {
    answer: Answer,
    delay_ms: AtomicU64,
    keep_requests: bool,
    calls: Mutex<Vec<LlmCall>>,
}

impl Llm {
    /// `keep_requests`: record each request body (the demo shows them; a benchmark of thousands
    /// of calls keeps only the question).
    pub fn new(answer: Answer, keep_requests: bool) -> Arc<Llm> {
        Arc::new(Llm { answer, delay_ms: AtomicU64::new(0), keep_requests, calls: Mutex::new(Vec::new()) })
    }

    /// Waits this long before each answer.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }

    /// The calls so far, oldest first.
    pub fn calls(&self) -> Vec<LlmCall> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn reset(&self) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().route("/v1/chat/completions", post(chat)).with_state(Arc::clone(self))
    }

    fn record(&self, request: &Value, answer: Result<String, String>, received_ns: u64) {
        let call = LlmCall {
            request: self.keep_requests.then(|| request.clone()),
            question: question_of(request),
            answer,
            received_ns,
            answered_ns: mono_ns(),
        };
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }
}

/// The text of the last user message.
pub fn last_user_message(request: &Value) -> &str {
    request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The first line after the last `User question: ` of the last message.
pub fn question_of(request: &Value) -> Option<String> {
    let content = request.get("messages")?.as_array()?.last()?.get("content")?.as_str()?;
    let question = &content[content.rfind("User question: ")? + "User question: ".len()..];
    Some(question.lines().next()?.trim().to_owned())
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"message": message, "type": "stand_in"}}))).into_response()
}

async fn chat(State(llm): State<Arc<Llm>>, body: Bytes) -> Response {
    let received_ns = mono_ns();
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return openai_error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let delay = llm.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let upstream = match &llm.answer {
        Answer::Local(answer) => {
            let text = answer(&request);
            llm.record(&request, Ok(text.clone()), received_ns);
            let model = request.get("model").cloned().unwrap_or(Value::Null);
            return axum::Json(json!({
                "id": "chatcmpl-stand-in",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            }))
            .into_response();
        }
        Answer::LocalReply(answer) => {
            let model = request.get("model").cloned().unwrap_or(Value::Null);
            let (message, recorded) = match answer(&request) {
                Reply::Text(text) => (json!({"role": "assistant", "content": text}), text),
                Reply::Tool { name, arguments } => (
                    json!({"role": "assistant", "content": null, "tool_calls": [{
                        "id": "call_stand_in", "type": "function",
                        "function": {"name": name, "arguments": arguments}
                    }]}),
                    format!("(tool call {name} {arguments})"),
                ),
            };
            llm.record(&request, Ok(recorded), received_ns);
            return axum::Json(json!({
                "id": "chatcmpl-stand-in",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            }))
            .into_response();
        }
        Answer::Upstream(upstream) => upstream,
    };
    let url = format!("{}/chat/completions", upstream.base_url.trim_end_matches('/'));
    let mut forward = upstream.http.post(&url).header(header::CONTENT_TYPE, "application/json").body(body.clone());
    if !upstream.api_key.is_empty() {
        forward = forward.bearer_auth(&upstream.api_key);
    }
    let fail = |message: String| {
        llm.record(&request, Err(message.clone()), received_ns);
        openai_error(StatusCode::BAD_GATEWAY, &message)
    };
    let response = match forward.send().await {
        Ok(response) => response,
        Err(e) => return fail(format!("cannot reach {url}: {}", without_url(e))),
    };
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(e) => return fail(format!("{url} broke off its answer: {}", without_url(e))),
    };
    let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let content = parsed.pointer("/choices/0/message/content").and_then(Value::as_str);
    let answer = match (status.is_success(), content) {
        (true, Some(text)) if !text.trim().is_empty() => Ok(text.to_owned()),
        (true, _) => Err(format!("{url} answered without any text: {}", snippet(&bytes))),
        (false, _) => Err(format!("{url} answered HTTP {}: {}", status.as_u16(), snippet(&bytes))),
    };
    llm.record(&request, answer, received_ns);
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

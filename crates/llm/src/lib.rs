//! A small OpenAI-compatible chat-completions client.
//!
//! Not `async-openai`: that crate retries on its own and honours `Retry-After` without a cap,
//! which would stall a reply for as long as a server asks. Here every call has a timeout and
//! the retries follow our [`RetryPolicy`].

use plumbing::config::{ConfigError, Problem, http_url, non_empty};
use plumbing::http_body::{BodyError, read_capped};
use plumbing::retry::{RetryPolicy, RetryableError, parse_retry_after};
use plumbing::telemetry::{LLM_SECONDS, Metrics};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// One completion request: the model comes from the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub temperature: f32,
    pub max_tokens: u32,
    /// Functions the model may call instead of answering (OpenAI `tools`); empty: none.
    pub tools: Vec<Tool>,
}

/// A function offered to the model: the structured channel for a decision (such as handing
/// over to a human) that must not depend on how the answer is worded.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

/// What the model returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    Text(String),
    /// It called one of the offered tools; `arguments` as it sent them (JSON text).
    ToolCall {
        name: String,
        arguments: String,
    },
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f32,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Vec<WireChoice>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: Option<WireMessage>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    function: WireCalled,
}

#[derive(Deserialize)]
struct WireCalled {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("LLM request failed: {0}")]
    Transport(#[from] plumbing::http_body::TransportError),
    #[error("LLM answered HTTP {status}: {message}")]
    Status { status: u16, message: String, retry_after: Option<Duration> },
    #[error("LLM answer could not be read: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("LLM answer could not be read: {0}")]
    TooLarge(#[source] plumbing::http_body::BodyError),
    #[error("LLM answer had no text")]
    Empty,
}

impl RetryableError for LlmError {
    fn is_transient(&self) -> bool {
        match self {
            LlmError::Transport(_) => true,
            LlmError::Status { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            LlmError::Decode(_) | LlmError::TooLarge(_) | LlmError::Empty => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    endpoint: String,
    api_key: SecretString,
    model: String,
    retry: RetryPolicy,
    /// Where its attempts are timed (its app's; none until [`LlmClient::with_metrics`]).
    metrics: Metrics,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// Largest completion body read; a reply is at most `max_tokens` (512) tokens, a few KiB.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Largest error body read (only its message is kept).
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Per-attempt limit on one completion call.
pub const LLM_CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl LlmClient {
    pub fn new(
        base_url: &str,
        api_key: SecretString,
        model: impl Into<String>,
        retry: RetryPolicy,
    ) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(LLM_CALL_TIMEOUT)
            .build()
            .map_err(|e| LlmError::Transport(e.into()))?;
        Ok(Self {
            http,
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            model: model.into(),
            retry,
            metrics: Metrics::default(),
        })
    }

    /// The same client, timing its attempts in `metrics` (its app's registry):
    /// `llm_request_duration_seconds{outcome}`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// `GET {base}/models`: proves the base URL and key work (for `--check`).
    pub async fn check(&self) -> Result<(), LlmError> {
        let url = self.endpoint.trim_end_matches("/chat/completions").to_owned() + "/models";
        let mut builder = self.http.get(url);
        if !self.api_key.expose_secret().is_empty() {
            builder = builder.bearer_auth(self.api_key.expose_secret());
        }
        let response = builder.send().await.map_err(|e| LlmError::Transport(e.into()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = read_capped(response, MAX_ERROR_BYTES).await.unwrap_or_default();
        Err(LlmError::Status {
            status: status.as_u16(),
            message: error_message(&String::from_utf8_lossy(&text)),
            retry_after: None,
        })
    }

    /// Returns `choices[0].message.content`, retried per the policy. Never an empty `Ok`.
    pub async fn complete(&self, request: &ChatRequest) -> Result<String, LlmError> {
        match self.complete_with_tools(request).await? {
            Completion::Text(text) => Ok(text),
            Completion::ToolCall { .. } => Err(LlmError::Empty),
        }
    }

    /// The text, or the first call of one of `request.tools`, retried per the policy.
    pub async fn complete_with_tools(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        self.retry.run("LLM call", || self.complete_once(request)).await
    }

    async fn complete_once(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let started = std::time::Instant::now();
        let result = self.attempt(request).await;
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(LlmError::Status { status, .. }) => status.to_string(),
            Err(_) => "error".to_owned(),
        };
        self.metrics.histogram_with(LLM_SECONDS, &[("outcome", outcome)]).record(started.elapsed().as_secs_f64());
        result
    }

    async fn attempt(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let tools: Vec<WireTool<'_>> = request
            .tools
            .iter()
            .map(|t| WireTool {
                kind: "function",
                function: WireFunction { name: t.name, description: t.description, parameters: &t.parameters },
            })
            .collect();
        let body = WireRequest {
            model: &self.model,
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            tool_choice: (!tools.is_empty()).then_some("auto"),
            tools,
        };
        let mut builder = self.http.post(&self.endpoint).json(&body);
        if !self.api_key.expose_secret().is_empty() {
            builder = builder.bearer_auth(self.api_key.expose_secret());
        }
        let response = builder.send().await.map_err(|e| LlmError::Transport(e.into()))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = parse_retry_after(response.headers());
            let text = read_capped(response, MAX_ERROR_BYTES).await.unwrap_or_default();
            let message = error_message(&String::from_utf8_lossy(&text));
            return Err(LlmError::Status { status: status.as_u16(), message, retry_after });
        }
        let bytes = read_capped(response, MAX_ANSWER_BYTES).await.map_err(|e| match e {
            BodyError::Broken(e) => LlmError::Transport(e.into()),
            too_large @ BodyError::TooLarge { .. } => LlmError::TooLarge(too_large),
        })?;
        let parsed: WireResponse = serde_json::from_slice(&bytes).map_err(LlmError::Decode)?;
        let message = parsed.choices.into_iter().next().and_then(|c| c.message).ok_or(LlmError::Empty)?;
        // Only a tool that was offered counts as a call.
        if let Some(call) =
            message.tool_calls.into_iter().find(|c| request.tools.iter().any(|t| t.name == c.function.name))
        {
            return Ok(Completion::ToolCall { name: call.function.name, arguments: call.function.arguments });
        }
        message.content.filter(|c| !c.trim().is_empty()).map(Completion::Text).ok_or(LlmError::Empty)
    }
}

/// The OpenAI error envelope's message, else the first 200 characters of the body.
fn error_message(body: &str) -> String {
    let from_envelope = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_owned));
    from_envelope.unwrap_or_else(|| body.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![ChatMessage::new(Role::User, "hi")],
            temperature: 0.3,
            max_tokens: 256,
            tools: Vec::new(),
        }
    }

    fn client(server: &MockServer, retry: RetryPolicy) -> LlmClient {
        LlmClient::new(&format!("{}/v1/", server.uri()), SecretString::from("sk-test"), "gpt-4o-mini", retry).unwrap()
    }

    #[tokio::test]
    async fn sends_the_openai_wire_format() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(header("authorization", "Bearer sk-test"))
            .and(body_json(serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.3,
                "max_tokens": 256
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "choices": [{"message": {"role": "assistant", "content": "hello"}}]
            })))
            .expect(1)
            .mount(&server)
            .await;
        assert_eq!(client(&server, RetryPolicy::none()).complete(&request()).await.unwrap(), "hello");
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused_not_buffered() {
        let server = MockServer::start().await;
        let huge = "x".repeat(MAX_ANSWER_BYTES + 1);
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "choices": [{"message": {"content": huge}}]
            })))
            .mount(&server)
            .await;
        let err = client(&server, RetryPolicy::none()).complete(&request()).await.unwrap_err();
        assert!(matches!(err, LlmError::TooLarge(_)), "{err}");
        // The cause is kept, not flattened into the message.
        let cause = std::error::Error::source(&err).expect("a cause");
        assert!(cause.to_string().contains("larger than"), "{cause}");
    }

    #[tokio::test]
    async fn offered_tools_are_sent_and_their_calls_read_back() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(wiremock::matchers::body_partial_json(serde_json::json!({
                "tool_choice": "auto",
                "tools": [{"type": "function", "function": {"name": "hand_off"}}]
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "hand_off", "arguments": "{\"reason\":\"asked\"}"}}
                ]}}]
            })))
            .expect(1)
            .mount(&server)
            .await;
        let mut with_tool = request();
        with_tool.tools.push(Tool {
            name: "hand_off",
            description: "d",
            parameters: serde_json::json!({"type": "object"}),
        });
        let answer = client(&server, RetryPolicy::none()).complete_with_tools(&with_tool).await.unwrap();
        assert_eq!(answer, Completion::ToolCall { name: "hand_off".into(), arguments: r#"{"reason":"asked"}"#.into() });
    }

    #[tokio::test]
    async fn null_content_is_an_error_not_a_summary() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "choices": [{"message": {"role": "assistant", "content": null}}]
            })))
            .mount(&server)
            .await;
        assert!(matches!(client(&server, RetryPolicy::none()).complete(&request()).await, Err(LlmError::Empty)));
    }

    #[tokio::test]
    async fn retries_server_errors_then_succeeds() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).up_to_n_times(2).mount(&server).await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "choices": [{"message": {"content": "ok"}}]
            })))
            .mount(&server)
            .await;
        let fast = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        };
        assert_eq!(client(&server, fast).complete(&request()).await.unwrap(), "ok");
    }

    #[tokio::test]
    async fn client_errors_are_not_retried_and_carry_the_message() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(401).set_body_json(serde_json::json!({"error": {"message": "bad key"}})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let err = client(&server, RetryPolicy::default()).complete(&request()).await.unwrap_err();
        assert_eq!(err.to_string(), "LLM answered HTTP 401: bad key");
    }
}

/// The OpenAI-compatible server used for summaries and replies.
#[derive(clap::Args, Clone)]
pub struct OpenAiArgs {
    /// API key of the OpenAI-compatible server.
    #[arg(long = "openai-api-key", env = "OPENAI_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Base URL of any OpenAI-compatible server.
    #[arg(
        long = "openai-base-url",
        env = "OPENAI_BASE_URL",
        hide_env_values = true,
        default_value = "https://api.openai.com/v1",
        value_name = "URL"
    )]
    pub base_url: String,
    /// Chat model.
    #[arg(long = "openai-model", env = "OPENAI_MODEL", default_value = "gpt-4o-mini", value_name = "MODEL")]
    pub model: String,
}

impl OpenAiArgs {
    /// Builds the client; the key is required.
    pub fn client(&self, retry: RetryPolicy) -> Result<LlmClient, ConfigError> {
        let key = non_empty(self.api_key.as_deref())
            .ok_or(ConfigError::Missing { var: "OPENAI_API_KEY", flag: "--openai-api-key" })?;
        http_url("OPENAI_BASE_URL", &self.base_url)?;
        LlmClient::new(&self.base_url, SecretString::from(key), self.model.clone(), retry)
            .map_err(|e: LlmError| ConfigError::invalid("OPENAI_BASE_URL", Problem::refused(e)))
    }
}

/// `--check`: the key is accepted and the model named.
pub async fn probe(client: &LlmClient) -> plumbing::checks::Check {
    plumbing::checks::run("OpenAI", async {
        client.check().await.map(|()| format!("key accepted, model {}", client.model())).map_err(|e| e.to_string())
    })
    .await
}

//! The LLM step: the model's decision for a prompt, an answer or a hand-off through its tool.
//! When the LLM server takes no tools (it refuses the request), a plain request, with explicit
//! requests for a person caught by the phrase detector; tools are tried again after a while
//! ([`ToolsProbe`]). No answer at all: the fallback message when one is set, else nothing (the
//! burst is retried).

use answer::handoff;
use llm::{ChatRequest, Completion, LlmClient, LlmError};
use plumbing::telemetry::Settled;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// After the LLM server refused tools, how long before they are tried again.
const TOOLS_REPROBE_AFTER: Duration = Duration::from_secs(600);

pub struct LlmStep {
    llm: LlmClient,
    /// Whether requests carry the hand-off tool.
    tools: ToolsProbe,
    /// Sent when the LLM gives no answer (`FALLBACK_MESSAGE`).
    fallback: Option<String>,
}

/// What the model decided.
#[derive(Debug, PartialEq)]
pub(super) enum Decision {
    /// Words for the visitor: the model's answer, or the fallback.
    Answer(String, Settled),
    HandOff(handoff::Decision),
}

impl LlmStep {
    pub fn new(llm: LlmClient, fallback: Option<String>) -> Self {
        Self { llm, tools: ToolsProbe::default(), fallback }
    }

    pub(super) fn model(&self) -> &str {
        self.llm.model()
    }

    /// The decision for `request` (whose visitor's words are `words`). `wants_person`: the
    /// visitor said yes to "Still stuck? I can get a person.", a request for a person without
    /// asking the model. `None`: no answer and no fallback.
    pub(super) async fn decide(&self, request: &ChatRequest, words: &str, wants_person: bool) -> Option<Decision> {
        let completion = if wants_person { Ok(asked_for_a_person()) } else { self.complete(request, words).await };
        match completion {
            Ok(Completion::Text(text)) => Some(Decision::Answer(text, Settled::Answered)),
            Ok(Completion::ToolCall { arguments, .. }) => {
                Some(Decision::HandOff(handoff::Decision::from_arguments(&arguments)))
            }
            Err(e) => {
                tracing::error!(error = %e, "no answer from the LLM");
                self.fallback.clone().map(|fallback| Decision::Answer(fallback, Settled::FallbackSent))
            }
        }
    }

    async fn complete(&self, request: &ChatRequest, words: &str) -> Result<Completion, LlmError> {
        if self.tools.worth_trying(Instant::now()) {
            match self.llm.complete_with_tools(request).await {
                Err(LlmError::Status { status: 400 | 404 | 422, .. }) => {}
                other => {
                    if other.is_ok() && self.tools.accepted() {
                        tracing::info!("the LLM server takes tools again");
                    }
                    return other;
                }
            }
        }
        if handoff::asks_for_a_person(words) {
            return Ok(asked_for_a_person());
        }
        let mut plain = request.clone();
        plain.tools.clear();
        let answer = self.llm.complete_with_tools(&plain).await;
        if answer.is_ok() && self.tools.refused(Instant::now()) {
            tracing::warn!(
                "the LLM server refuses tools; hand-offs rely on detecting explicit requests (tools are tried again every 10 minutes)"
            );
        }
        answer
    }
}

/// The hand-off tool's call for a visitor who asked for a person.
fn asked_for_a_person() -> Completion {
    Completion::ToolCall { name: handoff::TOOL_NAME.into(), arguments: r#"{"reason":"asked"}"#.into() }
}

/// The LLM step's memory of a tools refusal: after the server refused a request with tools,
/// plain requests until [`TOOLS_REPROBE_AFTER`] has passed, then tools are tried again (the
/// server or the model may have changed). Never off for good.
#[derive(Default)]
struct ToolsProbe {
    refused_at: Mutex<Option<Instant>>,
}

impl ToolsProbe {
    fn last_refusal(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.refused_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request at `now` carries tools.
    fn worth_trying(&self, now: Instant) -> bool {
        self.last_refusal().is_none_or(|at| now.saturating_duration_since(at) >= TOOLS_REPROBE_AFTER)
    }

    /// Tools were refused at `now` (a plain request then worked); true the first time since
    /// they last worked (worth a log line).
    fn refused(&self, now: Instant) -> bool {
        self.last_refusal().replace(now).is_none()
    }

    /// A request with tools worked; true when they had been refused before.
    fn accepted(&self) -> bool {
        self.last_refusal().take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm::{ChatMessage, Role};
    use plumbing::SecretString;
    use plumbing::retry::RetryPolicy;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    fn step(server: &MockServer, fallback: Option<&str>) -> LlmStep {
        let llm = LlmClient::new(&server.uri(), SecretString::from("key"), "model", RetryPolicy::none()).unwrap();
        LlmStep::new(llm, fallback.map(str::to_owned))
    }

    fn request() -> ChatRequest {
        let mut request = answer::prompt::reply_request_with("system", "activity", None, "words");
        request.messages.push(ChatMessage::new(Role::User, "words"));
        request
    }

    fn with_tools(request: &Request) -> bool {
        serde_json::from_slice::<serde_json::Value>(&request.body).is_ok_and(|body| body.get("tools").is_some())
    }

    fn text(words: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "choices": [{"message": {"role": "assistant", "content": words}}]
        }))
    }

    /// An LLM server that refuses requests with tools and answers plain ones.
    async fn refusing_tools() -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(with_tools).respond_with(ResponseTemplate::new(400)).mount(&server).await;
        Mock::given(method("POST")).respond_with(text("Open Billing, then Invoices.")).mount(&server).await;
        server
    }

    async fn sent_with_tools(server: &MockServer) -> Vec<bool> {
        server.received_requests().await.unwrap().iter().map(with_tools).collect()
    }

    #[tokio::test]
    async fn the_models_answer_or_its_hand_off_call() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {
                        "name": handoff::TOOL_NAME, "arguments": "{\"reason\":\"unable\",\"summary\":\"Refund.\"}"
                    }}
                ]}}]
            })))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST")).respond_with(text("Open Billing.")).mount(&server).await;
        let step = step(&server, None);
        let Some(Decision::HandOff(decision)) = step.decide(&request(), "refund me", false).await else {
            panic!("expected a hand-off")
        };
        assert_eq!((decision.reason, decision.summary.as_deref()), (handoff::Reason::Unable, Some("Refund.")));
        assert_eq!(
            step.decide(&request(), "how?", false).await,
            Some(Decision::Answer("Open Billing.".into(), Settled::Answered))
        );
        assert_eq!(sent_with_tools(&server).await, [true, true], "the tool is offered");
    }

    #[tokio::test]
    async fn a_server_refusing_tools_gets_plain_requests_and_a_request_for_a_person_still_hands_off() {
        let server = refusing_tools().await;
        let step = step(&server, None);
        assert_eq!(
            step.decide(&request(), "how do I export?", false).await,
            Some(Decision::Answer("Open Billing, then Invoices.".into(), Settled::Answered))
        );
        assert_eq!(sent_with_tools(&server).await, [true, false], "refused, then plain");
        let Some(Decision::HandOff(decision)) = step.decide(&request(), "can I talk to a human?", false).await else {
            panic!("an explicit request for a person hands off without tools")
        };
        assert_eq!(decision.reason, handoff::Reason::Asked);
        assert_eq!(
            sent_with_tools(&server).await,
            [true, false],
            "no more tools requests meanwhile, no plain one either"
        );
    }

    #[tokio::test]
    async fn a_yes_to_the_follow_up_hands_off_without_asking_the_model() {
        let server = MockServer::start().await;
        let step = step(&server, None);
        let Some(Decision::HandOff(decision)) = step.decide(&request(), "yes", true).await else { panic!() };
        assert_eq!(decision.reason, handoff::Reason::Asked);
        assert!(server.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_answer_is_the_fallback_when_set_else_nothing() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
        assert_eq!(
            step(&server, Some("A teammate will reply.")).decide(&request(), "help", false).await,
            Some(Decision::Answer("A teammate will reply.".into(), Settled::FallbackSent))
        );
        assert_eq!(step(&server, None).decide(&request(), "help", false).await, None, "retried later");
    }

    #[test]
    fn a_tools_refusal_is_probed_again_after_a_while_never_off_for_good() {
        let probe = ToolsProbe::default();
        let t0 = Instant::now();
        assert!(probe.worth_trying(t0), "tools are tried first");
        assert!(probe.refused(t0), "the first refusal is news");
        assert!(!probe.refused(t0), "a second one is not");
        assert!(!probe.worth_trying(t0 + TOOLS_REPROBE_AFTER / 2), "plain requests meanwhile");
        assert!(probe.worth_trying(t0 + TOOLS_REPROBE_AFTER), "tried again after the wait");
        assert!(probe.accepted(), "they work again: news");
        assert!(!probe.accepted());
        assert!(probe.worth_trying(t0), "no refusal on record");
    }
}

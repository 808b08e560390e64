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

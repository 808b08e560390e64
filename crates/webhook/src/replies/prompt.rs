//! The prompt step: the visitor's words (one message or a coalesced burst, within bounds) and
//! the request the model gets: the system prompt, earlier turns, the activity, the help
//! center's passages and the words, in that order. Everything it is given is masked already.

use super::redaction::ForLlm;
use answer::prompt::{Passages, reply_request_with, visitor_words};
use crisp::VisitorMessage;
use llm::ChatRequest;
use plumbing::telemetry::{self, Metrics};

/// How much of the visitor's words one prompt carries.
#[derive(Debug, Clone, Copy)]
pub struct PromptLimits {
    /// Characters of the visitor's words (one message or a coalesced burst, newest kept).
    pub max_message_chars: usize,
    /// Newest messages of a burst put in the prompt; the burst's reply settles them all.
    pub max_burst_messages: usize,
}

pub struct PromptStep {
    system_prompt: String,
    limits: PromptLimits,
    metrics: Metrics,
}

impl PromptStep {
    pub fn new(system_prompt: String, limits: PromptLimits, metrics: Metrics) -> Self {
        Self { system_prompt, limits, metrics }
    }

    /// The words of the burst's newest messages within the bounds; the messages left out are
    /// counted (`burst_messages_left_out_total`).
    pub(super) fn words(&self, burst: &[&VisitorMessage]) -> String {
        let limits = self.limits;
        let left_out = burst.len().saturating_sub(limits.max_burst_messages);
        if left_out > 0 {
            self.metrics.counter(telemetry::BURST_MESSAGES_LEFT_OUT).increment(left_out as u64);
        }
        visitor_words(burst.iter().map(|m| m.content.as_str()), limits.max_burst_messages, limits.max_message_chars)
    }

    /// The request for the model.
    pub(super) fn request(&self, masked: &ForLlm) -> ChatRequest {
        let help = masked.help.as_ref().map(|help| Passages { text: &help.text, strict: help.strict });
        let mut request = reply_request_with(&self.system_prompt, &masked.activity, help, &masked.question);
        request.messages.splice(1..1, masked.history.iter().cloned());
        request
    }
}

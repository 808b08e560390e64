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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::redaction::HelpCenter;
    use crate::replies::test_support::{series, visitor};
    use llm::{ChatMessage, Role};

    fn step(max_burst_messages: usize, max_message_chars: usize) -> PromptStep {
        let limits = PromptLimits { max_message_chars, max_burst_messages };
        PromptStep::new("You are the support agent.".into(), limits, Metrics::new())
    }

    #[test]
    fn a_burst_beyond_its_bounds_keeps_its_newest_messages_and_counts_the_rest() {
        let step = step(2, 1000);
        let messages = [visitor("first", 1), visitor("second", 2), visitor("third", 3)];
        let burst: Vec<&VisitorMessage> = messages.iter().collect();
        let words = step.words(&burst);
        assert!(words.contains("second") && words.contains("third") && !words.contains("first"), "{words}");
        assert_eq!(series(&step.metrics, "burst_messages_left_out_total"), 1.0);

        let long = visitor(&"x".repeat(5000), 4);
        assert!(self::step(2, 100).words(&[&long]).chars().count() <= 100, "characters bounded");
    }

    #[test]
    fn the_request_is_system_prompt_then_earlier_turns_then_activity_passages_and_words() {
        let masked = ForLlm {
            question: "why no invoice?".into(),
            activity: "[0] Action: opened Billing".into(),
            help: Some(HelpCenter { text: "Invoices are sent monthly.".into(), strict: false }),
            history: vec![ChatMessage::new(Role::User, "hello"), ChatMessage::new(Role::Assistant, "hi!")],
        };
        let request = step(5, 1000).request(&masked);
        let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::User]);
        assert_eq!(request.messages[0].content, "You are the support agent.");
        let last = &request.messages[3].content;
        let at = |needle: &str| last.find(needle).unwrap_or_else(|| panic!("{needle} missing from {last}"));
        assert!(
            at("opened Billing") < at("why no invoice?") && at("Invoices are sent monthly.") < at("why no invoice?")
        );
        assert_eq!(request.tools.len(), 1, "the hand-off tool is offered");
    }
}

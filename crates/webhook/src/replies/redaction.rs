//! The redaction step: nothing personal leaves for the LLM. The visitor's words, their activity
//! (titles, URLs, summaries), the help center's passages and the earlier turns all pass the
//! redactor with the conversation's placeholders (kept, so a value keeps its placeholder across
//! replies); the model's answer gets the values back for the visitor ([`Restorer`]; cards and
//! secrets stay masked).

use crate::placeholders::PlaceholderBook;
use crisp::ConversationId;
use llm::ChatMessage;
use plumbing::telemetry::{self, Metrics};
use std::sync::Arc;

pub struct RedactionStep {
    /// Replaces personal data and secrets by placeholders (`REDACT`).
    redactor: Arc<privacy::Redactor>,
    /// Each conversation's placeholders.
    placeholders: PlaceholderBook,
    metrics: Metrics,
}

/// Everything a reply's prompt is made of: masked by [`RedactionStep::mask`].
pub(super) struct ForLlm {
    pub question: String,
    pub activity: String,
    pub help: Option<HelpCenter>,
    pub history: Vec<ChatMessage>,
}

/// The help center's passages for a prompt.
pub(super) struct HelpCenter {
    pub text: String,
    /// Answer only from the passages (`KNOWLEDGE_STRICT`).
    pub strict: bool,
}

/// Gives an answer the values its placeholders stand for.
pub(super) struct Restorer(privacy::Placeholders);

impl Restorer {
    pub fn restore(&self, answer: &str) -> String {
        self.0.restore(answer)
    }
}

impl RedactionStep {
    pub fn new(redactor: Arc<privacy::Redactor>, placeholders: PlaceholderBook, metrics: Metrics) -> Self {
        Self { redactor, placeholders, metrics }
    }

    /// Masks every part of the prompt with the conversation's placeholders, saves them, and
    /// counts what was found by kind (`redactions_total{kind}`).
    pub(super) async fn mask(&self, session: &ConversationId, parts: ForLlm) -> (ForLlm, Restorer) {
        let mut map = self.placeholders.load(session).await;
        let mut counts = privacy::Counts::default();
        let mut apply = |text: &str| {
            let redacted = self.redactor.redact_counted(text, &mut map);
            counts.merge(&redacted.counts);
            redacted.text.into_owned()
        };
        let masked = ForLlm {
            question: apply(&parts.question),
            activity: apply(&parts.activity),
            help: parts.help.map(|help| HelpCenter { text: apply(&help.text), strict: help.strict }),
            history: parts
                .history
                .into_iter()
                .map(|mut turn| {
                    turn.content = apply(&turn.content);
                    turn
                })
                .collect(),
        };
        for (kind, n) in counts.iter() {
            if n > 0 {
                self.metrics.counter_with(telemetry::REDACTIONS, &[("kind", kind.label())]).increment(n);
            }
        }
        self.placeholders.save(session, &map).await;
        (masked, Restorer(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::test_support::{conversation, series};
    use llm::Role;

    const EMAIL: &str = "ana@example.com";

    fn step(dir: &std::path::Path) -> RedactionStep {
        RedactionStep::new(Arc::new(privacy::Redactor::default()), PlaceholderBook::files(dir), Metrics::new())
    }

    fn parts_with(value: &str) -> ForLlm {
        ForLlm {
            question: format!("I changed my email to {value}, why no invoice?"),
            activity: format!("[0] Action: typed {value} in Settings"),
            help: Some(HelpCenter { text: format!("Write to {value} for help"), strict: true }),
            history: vec![ChatMessage::new(Role::User, format!("my email is {value}"))],
        }
    }

    #[tokio::test]
    async fn nothing_personal_in_any_part_and_the_answer_gets_the_value_back() {
        let dir = tempfile::tempdir().unwrap();
        let step = step(dir.path());
        let (masked, restorer) = step.mask(&conversation(), parts_with(EMAIL)).await;
        let help = masked.help.as_ref().unwrap();
        let texts = [&masked.question, &masked.activity, &help.text, &masked.history[0].content];
        for text in texts {
            assert!(!text.contains(EMAIL) && text.contains("[EMAIL_1]"), "masked: {text}");
        }
        assert!(help.strict, "the setting is kept");
        assert_eq!(series(&step.metrics, "redactions_total{kind=\"email\"}"), 4.0);
        assert_eq!(restorer.restore("We wrote to [EMAIL_1]."), format!("We wrote to {EMAIL}."));
    }

    #[tokio::test]
    async fn a_value_keeps_its_placeholder_across_replies_and_conversations_are_apart() {
        let dir = tempfile::tempdir().unwrap();
        let step = step(dir.path());
        step.mask(&conversation(), parts_with("first@example.com")).await;
        // A later reply (even by a restarted process: the placeholders are on disk).
        let later = self::step(dir.path());
        let (masked, restorer) = later.mask(&conversation(), parts_with(EMAIL)).await;
        assert!(masked.question.contains("[EMAIL_2]"), "a new value, a new number: {}", masked.question);
        assert_eq!(restorer.restore("[EMAIL_1]"), "first@example.com", "the earlier value is still known");

        let other = crisp::ConversationId::parse("session_other").unwrap();
        let (_, other_restorer) = later.mask(&other, parts_with(EMAIL)).await;
        assert_eq!(other_restorer.restore("[EMAIL_2]"), "[EMAIL_2]", "another conversation's values are not known");
    }
}

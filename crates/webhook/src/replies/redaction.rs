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

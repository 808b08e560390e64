//! Shared makings of the steps' unit tests.

use crisp::{ConversationId, ConversationMessage, Fingerprint, VisitorMessage, WebsiteId};
use delivery::coordination::{Burst, Origin};
use delivery::inbox::InboxEntry;

/// The conversation the tests speak of.
pub fn conversation() -> ConversationId {
    ConversationId::parse("session_test").unwrap()
}

/// A visitor message in [`conversation`].
pub fn visitor(content: &str, fingerprint: u64) -> VisitorMessage {
    VisitorMessage {
        website_id: WebsiteId::parse("website").unwrap(),
        session_id: conversation(),
        content: content.into(),
        fingerprint: Some(Fingerprint::from_wire(fingerprint)),
        timestamp: None,
    }
}

/// A resumed burst of `n` messages (`q0`…), entry ids from 1, fingerprints from 100.
pub fn burst(n: u64) -> Burst {
    let entries = (0..n)
        .map(|i| InboxEntry { id: i + 1, accepted_at_ms: 0, message: visitor(&format!("q{i}"), 100 + i) })
        .collect();
    Burst { session: conversation(), entries, origin: Origin::Local, resumed: true }
}

pub fn said(from: &str, fingerprint: u64) -> ConversationMessage {
    said_fp(from, Fingerprint::from_wire(fingerprint))
}

pub fn said_fp(from: &str, fingerprint: Fingerprint) -> ConversationMessage {
    ConversationMessage {
        kind: "text".into(),
        from: from.into(),
        text: None,
        fingerprint: Some(fingerprint),
        timestamp: None,
    }
}

pub fn said_text(from: &str, fingerprint: u64, text: &str) -> ConversationMessage {
    ConversationMessage { text: Some(text.into()), ..said(from, fingerprint) }
}

/// An operators' note.
pub fn note_said(fingerprint: u64, text: &str) -> ConversationMessage {
    ConversationMessage { kind: "note".into(), ..said_text("operator", fingerprint, text) }
}

/// A conversation store of this process only (no Redis, no journal).
pub fn local_coordination() -> std::sync::Arc<delivery::coordination::Coordination> {
    use delivery::coordination::{CoordTimings, Coordination, LocalInbox, QueueLimits};
    let limits = QueueLimits { max_waiting: 100, max_per_conversation: 20 };
    std::sync::Arc::new(Coordination::new(LocalInbox::new(&CoordTimings::default(), limits, None, Vec::new()), None))
}

/// Records `message`; the caller must be the one to hold its conversation then.
pub async fn holding(
    coordination: &delivery::coordination::Coordination,
    message: &VisitorMessage,
) -> delivery::coordination::Hold {
    match coordination.accept(message).await {
        Ok(delivery::coordination::Accepted::Holds(hold)) => hold,
        other => panic!("expected to hold the conversation, got {other:?}"),
    }
}

/// A Crisp client of the stand-in at `base`, with no retries.
pub fn crisp_at(base: &str) -> crisp::CrispClient {
    let settings = crisp::CrispSettings {
        api_base_url: base.into(),
        website_id: WebsiteId::parse("website").unwrap(),
        token_identifier: "identifier".into(),
        token_key: plumbing::SecretString::from("key"),
        tier: "plugin".into(),
    };
    crisp::CrispClient::new(settings, plumbing::retry::RetryPolicy::none()).unwrap()
}

/// The value of the series whose exposition line starts with `series` (0 when absent).
pub fn series(metrics: &plumbing::telemetry::Metrics, series: &str) -> f64 {
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The burst's turn: the newest message's entry id is `answers`.
pub fn turn<'a>(hold: &'a delivery::coordination::Hold, answers: u64) -> super::Turn<'a> {
    super::Turn { hold, session: &hold.session, answers: answers.to_string(), trigger: None }
}

/// An operator's text message in [`conversation`].
pub fn operator(content: &str, fingerprint: Option<u64>) -> crisp::OperatorMessage {
    crisp::OperatorMessage {
        session_id: conversation(),
        fingerprint: fingerprint.map(Fingerprint::from_wire),
        automated: false,
        content: Some(content.into()),
    }
}

/// An activity with nothing linked, whose text is `text`.
pub fn activity(text: &str) -> crate::context::Activity {
    crate::context::Activity {
        text: text.into(),
        linked_by: crate::context::LinkedBy::Nothing,
        autoplay_session: None,
        context: None,
    }
}

/// The visitors' activity as the replies find it: per visitor, nothing stored under `dir`.
pub fn context_source(crisp: &crisp::CrispClient, dir: &std::path::Path) -> crate::context::ContextSource {
    use crate::context::{ContextScope, ContextSource, LinkTrust};
    let event_data = dir.join("event_data.txt");
    ContextSource::new(ContextScope::Session, event_data, None, crisp.clone(), None, 2000, LinkTrust::default())
}

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

//! Crisp's ids as types, checked where they enter (a hook, an MCP call, a setting).
//!
//! A Crisp conversation id and an Autoplay session id are both "session ids" on the wire; here
//! they are different types, so one cannot be passed for the other:
//!
//! ```compile_fail
//! fn visitor_activity(_session: &activity::AutoplaySessionId) {}
//! let conversation = crisp::ConversationId::parse("session_6f1e").unwrap();
//! visitor_activity(&conversation); // a Crisp conversation is not an Autoplay session
//! ```
//!
//! ```
//! fn visitor_activity(_session: &activity::AutoplaySessionId) {}
//! let session = activity::AutoplaySessionId::parse("ps_abc123").unwrap();
//! visitor_activity(&session);
//! ```

use plumbing::ids::{PLAIN_ID_RULE, is_plain_id};
use serde::{Deserialize, Serialize};

plumbing::id_type!(
    /// A Crisp conversation: Crisp's `session_id` (`session_<uuid>`), the segment of every
    /// conversation's REST path. Not an Autoplay session.
    ConversationId,
    "Crisp conversation id",
    is_plain_id,
    PLAIN_ID_RULE
);

plumbing::id_type!(
    /// A Crisp website (`WEBSITE_ID`): whose hooks the bot answers, whose conversations it posts in.
    WebsiteId,
    "Crisp website id",
    is_plain_id,
    PLAIN_ID_RULE
);

/// A message's fingerprint: Crisp's id of a message within its conversation, or the one the
/// bot derives for what it posts ([`crate::message_fingerprint`]) so a repeat is recognised.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// A fingerprint as Crisp sends it (any `u64`).
    pub const fn from_wire(value: u64) -> Self {
        Self(value)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

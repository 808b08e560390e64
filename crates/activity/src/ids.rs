//! The Autoplay session as a type: what the stream calls `session_id`, the key of a visitor's
//! activity in the context stores. A Crisp conversation id (`crisp::ConversationId`) is another
//! type, so one cannot be looked up as the other.

/// Longest Autoplay session id accepted for a lookup.
pub const MAX_SESSION_ID_LEN: usize = 512;

/// What [`AutoplaySessionId::parse`] accepts.
pub const SESSION_ID_RULE: &str =
    "1 to 512 bytes, no surrounding spaces or control characters, not a placeholder (unknown, null, undefined, none)";

fn is_session_id(id: &str) -> bool {
    id.len() <= MAX_SESSION_ID_LEN && crate::payload::session_key(id) == Some(id) && !id.chars().any(char::is_control)
}

plumbing::id_type!(
    /// An Autoplay session (the stream's `session_id`, the widget's `autoplay_session_id`):
    /// the key of one visitor's activity. Not a Crisp conversation.
    AutoplaySessionId,
    "Autoplay session id",
    is_session_id,
    SESSION_ID_RULE
);

impl AutoplaySessionId {
    /// A session id as a client wrote it: trimmed first; `None` when nothing usable is left
    /// (see [`crate::payload::session_key`]).
    pub fn from_client(raw: &str) -> Option<Self> {
        crate::payload::session_key(raw).and_then(|key| Self::parse(key).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_is_checked_where_it_enters() {
        assert_eq!(AutoplaySessionId::parse("ps_abc123").unwrap(), "ps_abc123");
        for bad in ["", " ps_1", "null", "Unknown", "a\u{7}b", &"x".repeat(MAX_SESSION_ID_LEN + 1)] {
            assert!(AutoplaySessionId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(AutoplaySessionId::from_client("  ps_1 ").unwrap(), "ps_1");
        assert_eq!(AutoplaySessionId::from_client("undefined"), None);
    }
}

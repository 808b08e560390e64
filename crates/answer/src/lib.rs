//! What the bot writes: the reply prompt built from one visitor's activity ([`prompt`]) and
//! the hand-off to a human ([`handoff`]: the tool the model calls, the phrase rule, the note).
//!
//! Depends on `activity` (the visitor's context) and `llm` (the request types); pure text, no
//! I/O.

pub mod handoff;
pub mod prompt;

//! Exactly one visible reply per visitor message: the inbox journal of accepted messages
//! ([`inbox`], files) and the coordination of replicas ([`coordination`]: acceptance, the
//! fenced holds, who has the floor; in process, or on Redis).
//!
//! Depends on `crisp` (the message it keeps, the floor) and `plumbing`; must never import
//! `activity`, `llm` or the apps: what a reply says is not its business, only that it is
//! sent once.

pub mod coordination;
pub mod inbox;

//! Proactive help: notice a visitor who seems stuck and offer help before they ask.
//!
//! Data flows one way across the two processes:
//! - the listener evaluates [`triggers`] as actions arrive (and on a timer, for a page left
//!   alone) and records each [`Firing`] through its context store writer: a line in
//!   `DATA_DIR/proactive.firings`, or an entry of the Redis stream [`REDIS_FIRINGS_STREAM`];
//! - the webhook reads those firings ([`feed`]), finds the Crisp conversation linked to the
//!   firing's Autoplay session (Crisp's `session:set_data` hook), asks the [`gate`] whether the
//!   bot may speak, has the LLM write a short offer (or decline), and sends it.
//!
//! Depends on `activity` (actions, the firing record), `llm` (the offer's wording), `crisp`
//! (who has a conversation's floor) and `plumbing`; never on the delivery of replies or the
//! apps.

pub mod book;
pub mod feed;
pub mod gate;
pub mod offer;
pub mod triggers;

pub use activity::firing::*;

//! What a visitor is doing, from the wire to the store: the listener writes it, the webhook
//! reads it.
//!
//! Data flows one way: stream bytes ([`sse`]) -> the wire's payloads ([`payload`]) -> the
//! product's action record ([`action`]) -> the activity file ([`activity_file`]), the
//! per-visitor store ([`context::StoreWriter`], read back by [`context::StoreReader`]) and the
//! summaries' bookkeeping ([`summary`]). The store also keeps proactive [`firing`]s, the one
//! record of the `proactive` crate it needs.
//!
//! Depends on `plumbing` only; must never import `crisp`, `llm`, `proactive`, `delivery` or
//! the apps.

pub mod action;
pub mod activity_file;
pub mod config;
pub mod context;
pub mod firing;
pub mod ids;
pub mod payload;
pub mod sse;
pub mod summary;

pub use ids::AutoplaySessionId;

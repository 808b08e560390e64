//! The webhook: Crisp visitor message -> background reply grounded in live activity.
//!
//! It owns the HTTP server (hooks, `/mcp`, `/metrics`), the reply pipeline ([`replies`]: one
//! type per step), linking a conversation to its visitor ([`context`]), proactive offers, the
//! storage of placeholders, the knowledge and outcomes wiring, and the one-shot commands
//! (`simulate`, `report`, `redact`, `knowledge`). It must never import `listener`.
//!
//! At about 9k lines (a quarter of them unit tests) it is the one crate over about 3k: it is
//! the app itself, and its biggest parts (`simulate`, `mcp`, the outcomes wiring) run or read
//! the app's own state, so a crate of their own would have to reach back up into it.

pub mod config;
pub mod context;
pub mod knowledge;
pub mod mcp;
pub mod outcomes;
pub mod placeholders;
pub mod proactive;
pub mod replies;
pub mod routes;
pub mod series;
pub mod server;
pub mod signature_binding;
pub mod simulate;
pub mod startup;
pub mod traces;

pub use startup::App;

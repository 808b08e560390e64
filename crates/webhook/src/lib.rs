//! The webhook: Crisp visitor message -> background reply grounded in live activity.

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

//! The webhook: Crisp visitor message -> background reply grounded in live activity.

pub mod config;
pub mod context;
pub mod mcp;
pub mod proactive;
pub mod replies;
pub mod routes;
pub mod server;
pub mod startup;
pub mod traces;

pub use startup::App;

use config::Settings;

/// `--check`: the LLM, Crisp and Redis, one line each. Returns whether all work.
pub async fn check(settings: &Settings) -> bool {
    let mut checks =
        vec![agent_core::checks::llm(&settings.llm).await, agent_core::checks::crisp(&settings.crisp).await];
    checks.extend(agent_core::checks::redis(&settings.store).await);
    agent_core::checks::report(&checks)
}

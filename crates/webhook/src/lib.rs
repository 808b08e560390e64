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

use agent_core::config::ConfigError;
use config::Settings;

/// What the `webhook` binary runs ([`agent_core::process::main`]).
impl agent_core::process::Service for App {
    type Cli = config::Cli;
    type Settings = Settings;
    type Error = anyhow::Error;

    fn settings(cli: config::Cli) -> Result<Settings, ConfigError> {
        cli.into_settings()
    }

    fn check_only(cli: &config::Cli) -> bool {
        cli.check
    }

    async fn check(settings: &Settings) -> bool {
        check(settings).await
    }

    async fn build(settings: Settings) -> Result<App, ConfigError> {
        App::build(settings).await
    }

    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        App::run(self, shutdown).await
    }
}

/// `--check`: the LLM, Crisp and Redis, one line each. Returns whether all work.
pub async fn check(settings: &Settings) -> bool {
    let mut checks =
        vec![agent_core::checks::llm(&settings.llm).await, agent_core::checks::crisp(&settings.crisp).await];
    checks.extend(agent_core::checks::redis(&settings.store).await);
    agent_core::checks::report(&checks)
}

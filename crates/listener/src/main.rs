use agent_core::process::{parse_cli, serve, shutdown_signal};
use listener::config::Cli;

#[tokio::main]
async fn main() {
    let cli: Cli = parse_cli();
    let check_only = cli.check;
    serve(
        cli.into_settings(),
        check_only,
        async |s| listener::check(s).await,
        async |s| listener::run(s, shutdown_signal()).await,
    )
    .await
}

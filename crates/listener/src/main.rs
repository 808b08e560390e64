use agent_core::process::{parse_cli, runtime, serve, shutdown_signal};
use listener::config::Cli;

fn main() {
    let cli: Cli = parse_cli();
    let check_only = cli.check;
    runtime().block_on(async {
        serve(
            cli.into_settings(),
            check_only,
            async |s| listener::check(s).await,
            async |s| listener::run(s, shutdown_signal()).await,
        )
        .await
    })
}

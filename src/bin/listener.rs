use agent_core::process::{parse_cli, runtime, serve, shutdown_signal};
use listener::App;
use listener::config::Cli;

fn main() {
    let cli: Cli = parse_cli();
    let check_only = cli.check;
    runtime().block_on(serve(
        cli.into_settings(),
        check_only,
        async |settings| listener::check(settings).await,
        App::build,
        async |app| app.run(shutdown_signal()).await,
    ))
}

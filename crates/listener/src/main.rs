use agent_core::process::{fail, init_tracing, parse_cli, shutdown_signal};
use listener::config::Cli;

#[tokio::main]
async fn main() {
    let cli: Cli = parse_cli();
    let check_only = cli.check;
    let settings = cli.into_settings().unwrap_or_else(|e| fail(&format!("error: {e}")));
    if check_only {
        println!("ok      configuration: valid");
        std::process::exit(if listener::check(&settings).await { 0 } else { 1 });
    }
    init_tracing();
    if let Err(e) = listener::run(settings, shutdown_signal()).await {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

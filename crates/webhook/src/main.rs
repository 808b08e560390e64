use agent_core::process::{fail, init_tracing, parse_cli, shutdown_signal};
use webhook::config::Cli;

#[tokio::main]
async fn main() {
    let cli: Cli = parse_cli();
    let check_only = cli.check;
    let settings = cli.into_settings().unwrap_or_else(|e| fail(&format!("error: {e}")));
    if check_only {
        println!("ok      configuration: valid");
        std::process::exit(if webhook::check(&settings).await { 0 } else { 1 });
    }
    init_tracing();
    let listener = match tokio::net::TcpListener::bind(settings.bind_addr).await {
        Ok(listener) => listener,
        Err(e) => fail(&format!("error: BIND_ADDR {}: cannot listen: {e}", settings.bind_addr)),
    };
    if let Err(e) = webhook::run(settings, listener, shutdown_signal()).await {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

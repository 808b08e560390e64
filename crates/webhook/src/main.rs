use agent_core::process::{fail, parse_cli, runtime, serve, shutdown_signal};
use webhook::config::Cli;

fn main() {
    let cli: Cli = parse_cli();
    let check_only = cli.check;
    runtime().block_on(async {
        serve(
            cli.into_settings(),
            check_only,
            async |s| webhook::check(s).await,
            async |s| {
                let listener = match tokio::net::TcpListener::bind(s.bind_addr).await {
                    Ok(listener) => listener,
                    Err(e) => fail(&format!("error: BIND_ADDR {}: cannot listen: {e}", s.bind_addr)),
                };
                webhook::run(s, listener, shutdown_signal()).await
            },
        )
        .await
    })
}

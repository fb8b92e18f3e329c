//! The `tunnel-edge` binary: parse flags, set up logging, serve until SIGTERM or Ctrl-C.
//!
//! Why so thin: everything testable lives in [`tunnel_edge::cli`]; this file owns only what is
//! process-wide (the tracing subscriber, the runtime, signals and the startup line on stdout that
//! scripts and tests wait for).

use clap::Parser;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use tunnel_edge::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tunnel-edge: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tunnel-edge: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), tunnel_edge::StartupError> {
    let startup = cli::start(&cli).await?;
    if cli.cert.is_none() {
        tracing::warn!(
            "no --cert/--key: serving plain WebSocket without TLS (the real cloudflared client \
             always uses TLS)"
        );
    }
    tracing::info!(
        listen = %startup.local_addr,
        origin = %startup.edge.config().origin_description,
        policy = ?startup.edge.access().current().policy(),
        tokens = ?startup.edge.access().current().token_ids(),
        "tunnel-edge started"
    );
    announce(startup.local_addr);
    startup
        .edge
        .serve(startup.listener, shutdown_signal())
        .await;
    if let Some(watcher) = startup.watcher {
        watcher.abort();
    }
    tracing::info!("tunnel-edge stopped");
    Ok(())
}

/// The one stdout line scripts and tests wait for.
#[expect(
    clippy::print_stdout,
    reason = "the startup line is the binary's stdout contract"
)]
fn announce(address: std::net::SocketAddr) {
    println!("tunnel-edge listening on {address}");
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the edge");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

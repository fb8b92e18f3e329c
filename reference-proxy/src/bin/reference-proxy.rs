//! The `reference-proxy` binary: parse flags and the config file, set up logging, run.

use reference_proxy::config::{ConfigError, load_from_args};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match load_from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("reference-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    config.log_warnings();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("reference-proxy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(reference_proxy::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reference-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

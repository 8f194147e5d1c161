//! The orchd binary: flags, config, logging, then `orchd_http::serve` until a signal.

use std::process::ExitCode;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use orchd_http::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", orchd_engine::config::DEFAULT_TOML);
        return ExitCode::SUCCESS;
    }
    let _log = orchd_http::logging::init();

    let config = match cli::load(&cli, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            eprintln!("orchd: {e}");
            return ExitCode::from(2);
        }
    };
    if config.server.api_keys.is_empty() {
        tracing::warn!(addr = %config.server.addr, "no API key configured: auth is off (loopback only)");
    }
    // Registered before serving, so a signal during startup is not lost.
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("orchd: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };

    let started = std::time::Instant::now();
    let server = match orchd_http::serve(config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("orchd: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        addr = %server.local_addr(),
        shards = server.shards(),
        startup_ms = started.elapsed().as_secs_f64() * 1e3,
        "ready"
    );

    let signal = signals.forever().next().unwrap_or(SIGTERM);
    let name = if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    tracing::info!(signal = name, "shutting down");
    match server.shutdown() {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "shutdown failed");
            ExitCode::FAILURE
        }
    }
}

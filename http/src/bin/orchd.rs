//! The orchd binary: flags, config, logging, then `orchd_http::serve` until a signal.

use std::process::ExitCode;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use orchd_http::cli::{self, Cli};

/// Every task allocates and frees its record, frame log and transcript on one shard
/// thread; glibc's allocator spent about a fifth of an admitted task's CPU growing,
/// trimming and consolidating its heaps (docs/why-mimalloc.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit`: its index in `mi_option_e` of the mimalloc v3 that
/// libmimalloc-sys 0.1.49 builds (`c_src/mimalloc/v3/include/mimalloc.h`; the crate
/// names no constant for it). The versions are pinned in the workspace's Cargo.toml.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Arenas committed lazily, so that memory freed after a burst is purged: with
/// mimalloc's default (eager on Linux) an idle keep-alive connection kept 23 KB of RSS
/// instead of 14 KB (docs/why-mimalloc.md). It must be set before the first allocation,
/// which reserves the first arena and happens before `main`: so it runs as an ELF
/// constructor, before the Rust runtime starts.
extern "C" fn mimalloc_options() {
    // SAFETY: sets one option; nothing else runs yet (no thread, no allocation).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[used]
#[link_section = ".init_array"]
static MIMALLOC_OPTIONS: extern "C" fn() = mimalloc_options;

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
        runtime = server.runtime(),
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

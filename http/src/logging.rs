//! JSON log lines (tracing), written by a background thread so that a shard never
//! blocks on stderr. In lossy mode a full log buffer drops lines instead of stalling.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Level from `ORCHD_LOG` (tracing filter syntax),
/// default `info`. Keep the guard alive until exit: dropping it flushes the log.
pub fn init() -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stderr());
    let filter = EnvFilter::try_from_env("ORCHD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .init();
    guard
}

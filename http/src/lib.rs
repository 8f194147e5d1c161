//! orchd-http: the HTTP face of orchd and the `orchd` binary.
//!
//! hyper 1.x HTTP/1.1 served on every shard of the runtime, routing by resource, the
//! middleware of SPEC section 1 (API keys, correlation ids, body limits), the one mapping
//! from the engine's error taxonomy to status codes and envelopes, config loading from
//! file, env and flags, logging, and startup/shutdown wiring. [`serve`] is the whole
//! server as a library call: the binary, the tests and the benches all use it.
//!
//! Must not depend on: glommio directly (only through `orchd_shards::rt`), or on domain
//! rules, which belong to `orchd-engine`.

mod api;
mod app;
mod auth;
mod body;
mod chunks;
pub mod cli;
mod listen;
pub mod logging;
mod respond;
mod router;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use orchd_engine::Config;
use orchd_shards::{Runtime, RuntimeOptions};

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] orchd_engine::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] orchd_shards::StartError),
}

/// A running orchd.
pub struct Server {
    addr: SocketAddr,
    shards: usize,
    runtime: Runtime,
}

impl Server {
    /// The address every shard listens on (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The runtime the shards run on: `io_uring` or `epoll` (`server.runtime`
    /// resolved on this host).
    pub fn runtime(&self) -> &'static str {
        self.runtime.kind().as_str()
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish up to
    /// `server.shutdown_grace_ms`, end the rest, stop the dispatcher, join every thread.
    pub fn shutdown(self) -> Result<(), String> {
        self.runtime.stop()
    }
}

/// Starts orchd with `config`; returns once every shard listens.
pub fn serve(config: Config) -> Result<Server, ServeError> {
    config.validate()?;
    if config.artifacts.backend == orchd_engine::config::ArtifactBackend::Fs {
        // Not fatal: a broken directory fails artifact requests (500), not streaming.
        match orchd_engine::artifact::fs_store::prepare(&config.artifacts.dir) {
            Ok(removed) => {
                tracing::info!(dir = %config.artifacts.dir.display(), removed_temp_files = removed, "artifact directory ready")
            }
            Err(e) => {
                tracing::error!(dir = %config.artifacts.dir.display(), error = %e, "artifact directory unusable; artifact requests will fail")
            }
        }
    }
    let shards = orchd_shards::resolve_shards(config.server.shards);
    let (addr, listeners) =
        listen::bind(config.server.addr, shards).map_err(|source| ServeError::Listen {
            addr: config.server.addr,
            source,
        })?;
    let opts = RuntimeOptions {
        shards,
        mailbox_capacity: config.server.mailbox_capacity,
        ready_timeout: Duration::from_secs(10),
        config: Arc::new(config.clone()),
    };
    let app = Arc::new(app::App::new(config));
    let runtime = Runtime::start(opts, listeners, move |shard, listener, ready| {
        server::shard_main(Arc::clone(&app), shard, listener, ready)
    })?;
    Ok(Server {
        addr,
        shards,
        runtime,
    })
}

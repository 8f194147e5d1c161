//! A real orchd, in this process, on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::path::PathBuf;

use orchd_http::{serve, Config, Server};

/// An orchd started from a config (TOML, as users write it), shut down when dropped.
/// Restartable with the same config, which is how durability is tested.
pub struct Orchd {
    server: Option<Server>,
    config_toml: String,
    pub addr: SocketAddr,
}

impl Orchd {
    /// Starts orchd on an ephemeral loopback port from `toml` (the config file's text;
    /// `server.addr` is overridden).
    pub fn start(toml: &str) -> Result<Orchd, String> {
        let server = start_server(toml)?;
        Ok(Orchd {
            addr: server.local_addr(),
            server: Some(server),
            config_toml: toml.to_string(),
        })
    }

    /// Stops orchd gracefully (SIGTERM semantics: streams end with a terminal frame).
    pub fn stop(&mut self) -> Result<(), String> {
        match self.server.take() {
            Some(s) => s.shutdown(),
            None => Ok(()),
        }
    }

    /// Stops orchd and starts it again with the same config, on a new port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop()?;
        let server = start_server(&self.config_toml)?;
        self.addr = server.local_addr();
        self.server = Some(server);
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }
}

fn start_server(toml: &str) -> Result<Server, String> {
    let mut config = Config::from_toml_str(toml).map_err(|e| e.to_string())?;
    config.server.addr = "127.0.0.1:0".parse().expect("loopback address");
    // `.ci/run` runs the suites once per runtime: ORCHD_RUNTIME picks it, as for the binary.
    if let Ok(runtime) = std::env::var("ORCHD_RUNTIME") {
        config.server.runtime = runtime.parse()?;
    }
    serve(config).map_err(|e| e.to_string())
}

impl Drop for Orchd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A fresh, empty directory under the system temp dir, unique to this process and call.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "orchd-features-{}-{label}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

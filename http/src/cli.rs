//! Command line, environment and config file, merged: flags override env, env
//! overrides the file, the file overrides the built-in default (SPEC section 6).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use orchd_engine::config::{ApiKey, ConfigError, RuntimeChoice};
use orchd_engine::Config;

/// orchd: a thread-per-core LLM task orchestrator.
#[derive(Debug, Parser)]
#[command(name = "orchd", version, about)]
pub struct Cli {
    /// TOML config file; without one the built-in default config is used.
    #[arg(long, env = "ORCHD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Listen address, overriding server.addr.
    #[arg(long, env = "ORCHD_ADDR", value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,

    /// Number of shards (0 = one per core), overriding server.shards.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// Runtime: `auto` (io_uring if it can start here, else epoll), `io_uring` or
    /// `epoll`, overriding server.runtime.
    #[arg(long, env = "ORCHD_RUNTIME", value_name = "auto|io_uring|epoll", value_parser = parse_runtime)]
    pub runtime: Option<RuntimeChoice>,

    /// Print the built-in config (commented TOML) and exit.
    #[arg(long)]
    pub print_default_config: bool,
}

fn parse_runtime(s: &str) -> Result<RuntimeChoice, String> {
    s.parse()
}

/// Builds the effective config: file (or built-in), then `ORCHD_API_KEYS` from `env`,
/// then flags (`--addr` already folds in `ORCHD_ADDR`), then [`Config::validate`].
pub fn load(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut config = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                problems: vec![format!("cannot read config file {}: {e}", path.display())],
            })?;
            Config::from_toml_str(&text).map_err(|mut e| {
                for p in &mut e.problems {
                    *p = format!("{}: {p}", path.display());
                }
                e
            })?
        }
        None => Config::default(),
    };
    if let Some(keys) = env("ORCHD_API_KEYS") {
        config.server.api_keys = keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(ApiKey::new)
            .collect();
    }
    if let Some(addr) = cli.addr {
        config.server.addr = addr;
    }
    if let Some(shards) = cli.shards {
        config.server.shards = shards;
    }
    if let Some(runtime) = cli.runtime {
        config.server.runtime = runtime;
    }
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("orchd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_override_env_override_file() {
        let dir = std::env::temp_dir().join(format!("orchd-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[server]\naddr = \"127.0.0.1:7000\"\nshards = 3\napi_keys = [\"file\"]\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();

        let c = load(&cli(&["--config", p]), |_| None).unwrap();
        assert_eq!(c.server.addr.port(), 7000);
        assert_eq!(c.server.shards, 3);
        assert_eq!(c.server.api_keys, vec![ApiKey::new("file")]);

        let env = |k: &str| (k == "ORCHD_API_KEYS").then(|| " k1, k2 ,".to_string());
        let c = load(
            &cli(&["--config", p, "--addr", "127.0.0.1:7001", "--shards", "1"]),
            env,
        )
        .unwrap();
        assert_eq!(c.server.addr.port(), 7001);
        assert_eq!(c.server.shards, 1);
        assert_eq!(
            c.server.api_keys,
            vec![ApiKey::new("k1"), ApiKey::new("k2")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_loopback_without_keys_is_refused() {
        let err = load(&cli(&["--addr", "0.0.0.0:8080"]), |_| None).unwrap_err();
        assert!(err.to_string().contains("server.addr"), "{err}");
        load(&cli(&["--addr", "0.0.0.0:8080"]), |_| Some("k".into())).unwrap();
    }
}

//! The typed configuration of orchd (SPEC section 6) and its loader.
//!
//! One struct tree with serde defaults; the built-in default is the commented file
//! `default.toml` (what `orchd --print-default-config` prints), and a test keeps the two
//! equal. [`Config::from_toml_str`] reports every unknown key and every bad value in one
//! error; [`Config::validate`] then checks the rules that span fields. Env and flag
//! overrides are applied by the binary between the two.
//!
//! `types` holds the struct tree and its defaults, `load` the TOML loader, `validate`
//! the cross-field rules and engine URL parsing, `error` the error that lists every
//! problem. Everything is re-exported here: callers name `config::Config`,
//! `config::parse_http_url` and so on, never a submodule.

mod error;
mod load;
mod types;
mod validate;

pub use crate::tenant::{Tenant, DEFAULT_TENANT};
pub use error::ConfigError;
pub use types::{
    AdapterConfig, AdapterKind, ApiKey, ArtifactBackend, ArtifactsConfig, Config,
    DispatcherPlacement, OpenAiConfig, PoolConfig, QueuePolicy, Role, RuntimeChoice, ServerConfig,
    SessionsConfig, StreamConfig, TenantConfig, DEFAULT_TOML,
};
pub use validate::{
    key_digest, parse_discover, parse_http_url, Discover, HttpUrl, MAX_REPLICAS, MAX_SLOTS,
};

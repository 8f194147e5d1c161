//! The typed configuration tree: its structs and enums, serde defaults and field docs.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::types::{Engine, Workload};

/// The commented built-in configuration.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub sessions: SessionsConfig,
    pub stream: StreamConfig,
    pub artifacts: ArtifactsConfig,
    pub openai: OpenAiConfig,
    /// At least one pool; the default is one mock pool `default` serving any model.
    pub pools: Vec<PoolConfig>,
    /// Who may call orchd with which keys, and in which role (`[[tenants]]`). The keys
    /// of `server.api_keys` are one more tenant, `default`, with role `operator`.
    pub tenants: Vec<TenantConfig>,
}

/// A tenant: a name, the keys its clients present, and its role.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct TenantConfig {
    /// Unique name, `[A-Za-z0-9_.-]{1,64}` (`default` is the tenant of
    /// `server.api_keys`). Shown in logs; keys never are.
    pub name: String,
    /// Its keys, as clients present them (`X-API-Key` or `Authorization: Bearer`).
    pub keys: Vec<ApiKey>,
    /// Its keys as lowercase hex SHA-256 digests, so the config need not hold them.
    pub key_sha256: Vec<String>,
    /// `client` (tasks, sessions, artifacts) or `operator` (also drain and reload).
    pub role: Role,
    /// Its share of a contended pool's slots, relative to the other tenants' weights
    /// (1 to 1000).
    pub weight: u32,
    /// The most of its tasks waiting in one pool's queue; more is `429` with
    /// `policy_label` `tenant-queued` (0: only the pool's own capacity).
    pub max_queued: u32,
    /// The most slots of one pool its tasks hold at once; its further tasks wait in
    /// the queue (0: no limit).
    pub max_running: u32,
    /// Prompt plus completion tokens per minute over all pools, reserved as
    /// `max_tokens` at admission and settled at the end; more is `429` with
    /// `policy_label` `tenant-tokens` (0: no limit).
    pub tokens_per_minute: u64,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            name: String::new(),
            keys: Vec::new(),
            key_sha256: Vec::new(),
            role: Role::Client,
            weight: 1,
            max_queued: 0,
            max_running: 0,
            tokens_per_minute: 0,
        }
    }
}

/// What a tenant's keys may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submit, stream and cancel tasks, read sessions, store and fetch artifacts.
    Client,
    /// A client that may also drain and reload pools.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Operator => "operator",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Listen address; every shard listens on it (SO_REUSEPORT). Default 127.0.0.1:8080.
    pub addr: SocketAddr,
    /// Number of shards (executors, one thread each); 0 = one per available core.
    pub shards: usize,
    /// Pins each shard's thread to a core (thread-per-core; shard i to the i-th available
    /// core, round robin when there are more shards than cores). `false` leaves placement
    /// to the kernel, which then runs a woken shard on whichever core is idle: for hosts
    /// where other busy processes share orchd's cores (an engine, a load generator, other
    /// services), where a pinned shard waits for its core while another sits idle.
    /// Default `true`.
    pub pin_cores: bool,
    /// Accepted `X-API-Key` values. Empty = auth off, allowed on loopback only.
    pub api_keys: Vec<ApiKey>,
    /// Largest request body accepted; larger gets 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// On SIGTERM, how long in-flight requests and streams may run before they are ended.
    pub shutdown_grace_ms: u64,
    /// A connection that has not sent a full request head by then is closed.
    pub header_read_timeout_ms: u64,
    /// Largest request head (request line and headers) read per request; a larger one
    /// gets 431 and the connection is closed. Bounds each connection's read buffer.
    pub max_header_bytes: usize,
    /// Connections kept open at once, split evenly over the shards; a connection beyond
    /// it is answered 503 REPLICA_EXHAUSTED and closed at once. Bounds file descriptors
    /// and per-connection memory under a connection flood.
    pub max_connections: usize,
    /// Capacity of every cross-shard channel; a full channel is a typed overload.
    pub mailbox_capacity: usize,
    /// Where the dispatcher runs: `shard0` (a task on shard 0's executor: no thread
    /// beyond one per core) or `thread` (an executor of its own).
    pub dispatcher: DispatcherPlacement,
    /// Web pages on these origins (`scheme://host[:port]`, or `*` for any) may call orchd
    /// from a browser (CORS): preflights are answered before auth, and responses name
    /// the origin and expose orchd's headers. Default none.
    pub cors_allow_origins: Vec<String>,
    /// The runtime under the shards: `io_uring` (glommio), `epoll` (tokio, for hosts and
    /// containers that deny io_uring), or `auto` (io_uring when it can start here, else
    /// epoll with one warning naming why). Also `ORCHD_RUNTIME` and `--runtime`.
    pub runtime: RuntimeChoice,
    /// io_uring only: the longest a shard runs ready tasks back to back before it takes
    /// in the I/O that has completed meanwhile (requests that arrived, answers from other
    /// shards, sockets that can take more) and the timers that fell due: glommio's
    /// preemption timer. Shorter takes new requests in sooner during a long burst (one
    /// shard, 1,000 users in waves: first-token p50 about halved at 20 ms) and costs
    /// streaming throughput, likely because each stream's frames then leave in more,
    /// smaller writes (one shard at zero engine latency: 31-41% fewer tokens/s at
    /// 20 ms). The epoll runtime looks every 61 tasks and does not use it (the value is
    /// checked on both). 100..=1000000; default 100000 (100 ms, glommio's own).
    pub io_poll_us: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum RuntimeChoice {
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "io_uring")]
    IoUring,
    #[serde(rename = "epoll")]
    Epoll,
}

impl std::str::FromStr for RuntimeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RuntimeChoice::Auto),
            "io_uring" => Ok(RuntimeChoice::IoUring),
            "epoll" => Ok(RuntimeChoice::Epoll),
            other => Err(format!(
                "unknown runtime `{other}`, expected one of `auto`, `io_uring`, `epoll`"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DispatcherPlacement {
    Shard0,
    Thread,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct SessionsConfig {
    /// Sliding time to live of a session, renewed by each task.
    pub ttl_ms: u64,
    /// Most tasks one session may run.
    pub max_turns: u32,
    /// Tokens a session may spend; 0 = unbounded.
    pub tokens_budget: u64,
    /// Predicted engine time a session may spend; 0 = unbounded.
    pub time_budget_ms: u64,
    /// Cost (tokens x pool cost_per_token) a session may spend; 0 = unbounded.
    pub cost_budget: f64,
    /// Sessions kept at once; a task that would start one more is refused (429,
    /// policy_label "sessions-full") until one expires. Bounds the memory a flood of
    /// fresh session ids can take.
    pub max_sessions: usize,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct StreamConfig {
    /// Interval of `: hb` comments on idle streams.
    pub heartbeat_ms: u64,
    /// A task nobody streams for this long is canceled (reason `orphaned`).
    pub orphan_timeout_ms: u64,
    /// How long a finished task's frames stay for late subscribers.
    pub retention_ms: u64,
    /// A `metrics` frame every this many tokens during decode.
    pub metrics_every_tokens: u32,
    /// Queued tasks hear of their moves up the queue at most this often: the moves
    /// within one interval go out as one `metrics` frame with the latest position. A
    /// queue of N tasks draining at R tasks/s otherwise costs N * R frames a second.
    /// 0 = a frame at every move.
    pub position_update_ms: u64,
}

/// The OpenAI-compatible routes (`/v1/completions`, `/v1/chat/completions`, ...):
/// what their requests cannot say in OpenAI's own fields.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct OpenAiConfig {
    /// A request's deadline when it sends no `X-Deadline-Ms` header.
    pub default_deadline_ms: u64,
    /// A task of these routes is canceled (reason `orphaned`) when its client has been
    /// gone this long without re-attaching (`GET /v1/tasks/{id}/stream?format=openai`):
    /// OpenAI clients expect a disconnect to stop generation.
    pub disconnect_grace_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactBackend {
    Memory,
    Fs,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct ArtifactsConfig {
    pub backend: ArtifactBackend,
    /// Directory of the `fs` backend.
    pub dir: PathBuf,
    /// Bound of the `memory` backend, in bytes of stored content.
    pub max_memory_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum QueuePolicy {
    /// A full queue refuses new tasks with 429 ADMISSION_REJECT.
    #[serde(rename = "reject")]
    Reject,
    /// A full queue evicts its oldest queued batch task (else its oldest task).
    #[serde(rename = "drop-lru")]
    DropLru,
}

impl QueuePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            QueuePolicy::Reject => "reject",
            QueuePolicy::DropLru => "drop-lru",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct PoolConfig {
    /// Unique name, `[A-Za-z0-9_.-]{1,64}`.
    pub id: String,
    pub engine: Engine,
    /// Reported in metrics and health; at most 64 characters.
    pub engine_version: String,
    /// The model served; `*` serves any model_ref until a reload names one.
    pub model_ref: String,
    /// Largest context a task may ask for.
    pub ctx_max: u32,
    /// Tasks that run at once.
    pub slots: u32,
    /// Tasks that may wait beyond the slots.
    pub queue_capacity: u32,
    pub policy: QueuePolicy,
    pub workloads: Vec<Workload>,
    /// Cost charged per token against session cost budgets.
    pub cost_per_token: f64,
    pub adapter: AdapterConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// The built-in deterministic engine.
    Mock,
    /// An OpenAI-compatible server: `POST {url}/v1/completions` with `stream: true`
    /// (vLLM, llama.cpp server, TGI's compatible route).
    Openai,
    /// llama.cpp server's native API: `POST {url}/completion` with `stream: true`.
    Llamacpp,
}

impl AdapterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterKind::Mock => "mock",
            AdapterKind::Openai => "openai",
            AdapterKind::Llamacpp => "llamacpp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct AdapterConfig {
    pub kind: AdapterKind,
    /// Mock: time to first token; 0 = as fast as possible.
    pub ttft_ms: u64,
    /// Mock: time per output token; 0 = as fast as possible.
    pub tpot_ms: u64,
    /// Watchdog: a running task with no token for this long ends with DECODE_TIMEOUT.
    pub decode_timeout_ms: u64,
    /// Mock: time to load a model on reload.
    pub load_ms: u64,
    /// HTTP adapters: the engine's base URL, `http://host:port` (optionally a path).
    pub url: Option<String>,
    /// HTTP adapters, instead of `url`: a replica set, one base URL per engine replica
    /// (issue 20). Each replica has the pool's `slots`; a task goes to its session's
    /// replica (rendezvous hashing over the replicas with a free slot), else to the
    /// replica with the most free slots; a replica that fails its probe takes no task.
    pub urls: Vec<String>,
    /// HTTP adapters, instead of `url` or `urls`: `dns://NAME:PORT`, a replica set of
    /// the name's A/AAAA records (a Kubernetes headless Service, Consul DNS, plain DNS),
    /// each address an engine at `http://ADDRESS:PORT`, resolved again every
    /// `discover_interval_ms`.
    pub discover: Option<String>,
    /// How often `discover`'s name is resolved again.
    pub discover_interval_ms: u64,
    /// The DNS server `discover` asks, `IP:PORT`; absent: the system's resolver
    /// (`/etc/resolv.conf`, `/etc/hosts`).
    pub resolver: Option<String>,
    /// HTTP adapters: each replica's slots are what its engine reports (llama.cpp's
    /// `/props` `total_slots`, read by the health probe) once it has said; the pool's
    /// `slots` until then, and for engines that do not say.
    pub slots_from_engine: bool,
    /// HTTP adapters with several replicas: a task without a session whose prompt is at
    /// least this many bytes goes to the replica chosen by a hash of its first this many
    /// bytes (rendezvous, over the replicas with a free slot), so prompts that start alike
    /// meet their cached prefix on one engine; 0: to the replica with the most free slots.
    pub prefix_bytes: u32,
    /// HTTP adapters with several replicas: spread the replicas over the shards, each
    /// replica's tasks' generations (engine streams) on one core, the fewest on the
    /// pool's owner, which keeps the queue and the tasks; false: all on the owner.
    pub spread_replicas: bool,
    /// HTTP adapters: sent as `Authorization: Bearer ...`; never logged.
    pub api_key: Option<ApiKey>,
    /// HTTP adapters: TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// HTTP adapters: from sending the request to the response head.
    pub first_byte_timeout_ms: u64,
    /// HTTP adapters: retries (after a refused connection or a 5xx) before the first
    /// token, with capped jitter; none once a token has been streamed.
    pub retries: u32,
    /// HTTP adapters: how often the engine's health endpoint is probed.
    pub health_interval_ms: u64,
    /// Mock fault injection: the engine dies after streaming this many tokens of each
    /// task, which ends with WORKER_RESET. Absent: never. For testing clients and
    /// dashboards against engine failures.
    pub fail_after_tokens: Option<u32>,
    /// Mock fault injection: the engine goes silent after this many tokens of each task;
    /// the watchdog (`decode_timeout_ms`) then ends it with DECODE_TIMEOUT. Absent: never.
    pub stall_after_tokens: Option<u32>,
}

/// An API key. Its `Debug` never shows the key, so configs can be logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shards: 0,
            pin_cores: true,
            api_keys: Vec::new(),
            max_body_bytes: 1_048_576,
            shutdown_grace_ms: 10_000,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 65_536,
            max_connections: 16_384,
            mailbox_capacity: 8192,
            dispatcher: DispatcherPlacement::Shard0,
            cors_allow_origins: Vec::new(),
            runtime: RuntimeChoice::Auto,
            io_poll_us: 100_000,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            ttl_ms: 600_000,
            max_turns: 8,
            tokens_budget: 0,
            time_budget_ms: 0,
            cost_budget: 0.0,
            max_sessions: 1_000_000,
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            heartbeat_ms: 15_000,
            orphan_timeout_ms: 30_000,
            retention_ms: 60_000,
            metrics_every_tokens: 32,
            position_update_ms: 10,
        }
    }
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            default_deadline_ms: 600_000,
            disconnect_grace_ms: 1_000,
        }
    }
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            backend: ArtifactBackend::Memory,
            dir: PathBuf::from("artifacts"),
            max_memory_bytes: 268_435_456,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            id: "default".into(),
            engine: Engine::Llamacpp,
            engine_version: "mock-1".into(),
            model_ref: "*".into(),
            ctx_max: 8192,
            slots: 4,
            queue_capacity: 256,
            policy: QueuePolicy::Reject,
            workloads: vec![Workload::Completion],
            cost_per_token: 0.0,
            adapter: AdapterConfig::default(),
        }
    }
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            kind: AdapterKind::Mock,
            ttft_ms: 20,
            tpot_ms: 5,
            decode_timeout_ms: 30_000,
            load_ms: 0,
            url: None,
            urls: Vec::new(),
            discover: None,
            discover_interval_ms: 5_000,
            resolver: None,
            slots_from_engine: false,
            prefix_bytes: 256,
            spread_replicas: true,
            api_key: None,
            connect_timeout_ms: 2_000,
            first_byte_timeout_ms: 30_000,
            retries: 2,
            health_interval_ms: 2_000,
            fail_after_tokens: None,
            stall_after_tokens: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            sessions: SessionsConfig::default(),
            stream: StreamConfig::default(),
            openai: OpenAiConfig::default(),
            artifacts: ArtifactsConfig::default(),
            pools: vec![PoolConfig::default()],
            tenants: Vec::new(),
        }
    }
}

impl Config {
    /// Total slots over all pools (each replica of a replica set has the pool's).
    pub fn total_slots(&self) -> u64 {
        self.pools
            .iter()
            .map(|p| u64::from(p.slots) * p.replicas().len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_file_is_the_default() {
        let parsed = Config::from_toml_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    /// The config fuzz target's seed corpus starts from the built-in file; a seed that
    /// lags it never reaches the parsing of the keys added since.
    #[test]
    fn fuzz_seed_is_the_built_in_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/config/default.toml"
        );
        let seed = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            seed, DEFAULT_TOML,
            "copy engine/src/default.toml over {path}"
        );
    }
}

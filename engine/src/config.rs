//! The typed configuration of orchd (SPEC section 6) and its loader.
//!
//! One struct tree with serde defaults; the built-in default is the commented file
//! `default.toml` (what `orchd --print-default-config` prints), and a test keeps the two
//! equal. [`Config::from_toml_str`] reports every unknown key and every bad value in one
//! error; [`Config::validate`] then checks the rules that span fields. Env and flag
//! overrides are applied by the binary between the two.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::types::{Engine, Workload};

/// The commented built-in configuration.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Limits on numbers a user may write; anything larger is a mistake, not a wish.
const MAX_SHARDS: usize = 1024;
const MAX_SLOTS: u32 = 65_536;
const MAX_QUEUE: u32 = 10_000_000;
const MAX_BODY: usize = 1 << 30;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub sessions: SessionsConfig,
    pub stream: StreamConfig,
    pub artifacts: ArtifactsConfig,
    /// At least one pool; the default is one mock pool `default` serving any model.
    pub pools: Vec<PoolConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Listen address; every shard listens on it (SO_REUSEPORT). Default 127.0.0.1:8080.
    pub addr: SocketAddr,
    /// Number of shards (pinned executors); 0 = one per available core.
    pub shards: usize,
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
            api_keys: Vec::new(),
            max_body_bytes: 1_048_576,
            shutdown_grace_ms: 10_000,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 65_536,
            max_connections: 16_384,
            mailbox_capacity: 8192,
            dispatcher: DispatcherPlacement::Shard0,
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
            artifacts: ArtifactsConfig::default(),
            pools: vec![PoolConfig::default()],
        }
    }
}

/// Every problem found in a configuration, each naming its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.problems.len())?;
        if self.problems.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str("):")?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses a TOML document, reporting every unknown key and every bad value at once.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![syntax_problem(text, &e)],
        })?;
        let mut config: Config = deserialize_reporting_all(value)?;
        // A file that declares no pools keeps the built-in one.
        if config.pools.is_empty() && !text_declares_pools(text) {
            config.pools = Config::default().pools;
        }
        Ok(config)
    }

    /// Checks the rules that span fields; call after env and flag overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let s = &self.server;
        if s.shards > MAX_SHARDS {
            p.push(format!(
                "server.shards: {} is more than {MAX_SHARDS}",
                s.shards
            ));
        }
        if !(1024..=MAX_BODY).contains(&s.max_body_bytes) {
            p.push(format!(
                "server.max_body_bytes: {} is outside 1024..={MAX_BODY}",
                s.max_body_bytes
            ));
        }
        if s.header_read_timeout_ms == 0 {
            p.push("server.header_read_timeout_ms: must be at least 1".into());
        }
        // hyper reads heads into a buffer of at least 8 KiB.
        if !(8192..=1_048_576).contains(&s.max_header_bytes) {
            p.push(format!(
                "server.max_header_bytes: {} is outside 8192..=1048576",
                s.max_header_bytes
            ));
        }
        if !(1..=1_000_000).contains(&s.max_connections) {
            p.push(format!(
                "server.max_connections: {} is outside 1..=1000000",
                s.max_connections
            ));
        }
        if !(1..=1_000_000).contains(&s.mailbox_capacity) {
            p.push(format!(
                "server.mailbox_capacity: {} is outside 1..=1000000",
                s.mailbox_capacity
            ));
        }
        for (i, key) in s.api_keys.iter().enumerate() {
            let k = key.expose();
            if k.is_empty() || k.len() > 256 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                p.push(format!(
                    "server.api_keys[{i}]: must be 1 to 256 visible ASCII characters"
                ));
            }
        }
        if s.api_keys.is_empty() && !s.addr.ip().is_loopback() {
            p.push(format!(
                "server.addr: {} is not a loopback address and no API key is configured; \
                 set server.api_keys or ORCHD_API_KEYS, or listen on 127.0.0.1",
                s.addr
            ));
        }
        let ss = &self.sessions;
        if ss.ttl_ms == 0 {
            p.push("sessions.ttl_ms: must be at least 1".into());
        }
        if !(1..=100_000_000).contains(&ss.max_sessions) {
            p.push(format!(
                "sessions.max_sessions: {} is outside 1..=100000000",
                ss.max_sessions
            ));
        }
        if ss.max_turns == 0 {
            p.push("sessions.max_turns: must be at least 1".into());
        }
        if !(ss.cost_budget.is_finite() && ss.cost_budget >= 0.0) {
            p.push("sessions.cost_budget: must be a finite number >= 0".into());
        }
        let st = &self.stream;
        for (name, v) in [
            ("heartbeat_ms", st.heartbeat_ms),
            ("orphan_timeout_ms", st.orphan_timeout_ms),
        ] {
            if v == 0 {
                p.push(format!("stream.{name}: must be at least 1"));
            }
        }
        if st.metrics_every_tokens == 0 {
            p.push("stream.metrics_every_tokens: must be at least 1".into());
        }
        if st.position_update_ms > 1000 {
            p.push("stream.position_update_ms: must be at most 1000".into());
        }
        if self.artifacts.max_memory_bytes < 1024 {
            p.push("artifacts.max_memory_bytes: must be at least 1024".into());
        }
        if self.artifacts.backend == ArtifactBackend::Fs
            && self.artifacts.dir.as_os_str().is_empty()
        {
            p.push("artifacts.dir: must be set for backend = \"fs\"".into());
        }
        if self.pools.is_empty() {
            p.push("pools: at least one pool is required".into());
        }
        let mut ids = HashSet::new();
        for (i, pool) in self.pools.iter().enumerate() {
            validate_pool(i, pool, &mut ids, &mut p);
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }

    /// Total slots over all pools.
    pub fn total_slots(&self) -> u64 {
        self.pools.iter().map(|p| u64::from(p.slots)).sum()
    }
}

fn validate_pool(i: usize, pool: &PoolConfig, ids: &mut HashSet<String>, p: &mut Vec<String>) {
    let at = format!("pools[{i}]");
    let id_ok = (1..=64).contains(&pool.id.len())
        && pool
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !id_ok {
        p.push(format!(
            "{at}.id: {:?} must match [A-Za-z0-9_.-]{{1,64}}",
            pool.id
        ));
    } else if !ids.insert(pool.id.clone()) {
        p.push(format!("{at}.id: {:?} is used by another pool", pool.id));
    }
    if pool.engine_version.is_empty() || pool.engine_version.len() > 64 {
        p.push(format!("{at}.engine_version: must be 1 to 64 characters"));
    }
    if pool.model_ref.is_empty() || pool.model_ref.len() > 512 {
        p.push(format!("{at}.model_ref: must be 1 to 512 characters"));
    }
    if pool.ctx_max == 0 {
        p.push(format!("{at}.ctx_max: must be at least 1"));
    }
    if !(1..=MAX_SLOTS).contains(&pool.slots) {
        p.push(format!(
            "{at}.slots: {} is outside 1..={MAX_SLOTS}",
            pool.slots
        ));
    }
    if pool.queue_capacity > MAX_QUEUE {
        p.push(format!(
            "{at}.queue_capacity: {} is more than {MAX_QUEUE}",
            pool.queue_capacity
        ));
    }
    if pool.workloads.is_empty() {
        p.push(format!("{at}.workloads: at least one workload is required"));
    }
    let distinct: HashSet<_> = pool.workloads.iter().collect();
    if distinct.len() != pool.workloads.len() {
        p.push(format!("{at}.workloads: lists a workload twice"));
    }
    if !(pool.cost_per_token.is_finite() && pool.cost_per_token >= 0.0) {
        p.push(format!("{at}.cost_per_token: must be a finite number >= 0"));
    }
    let a = &pool.adapter;
    match (a.kind, &a.url) {
        (AdapterKind::Mock, Some(_)) => {
            p.push(format!("{at}.adapter.url: the mock adapter takes no url"))
        }
        (AdapterKind::Openai | AdapterKind::Llamacpp, None) => p.push(format!(
            "{at}.adapter.url: required for kind = \"{}\"",
            a.kind.as_str()
        )),
        (AdapterKind::Openai | AdapterKind::Llamacpp, Some(url)) => {
            if let Err(why) = parse_http_url(url) {
                p.push(format!("{at}.adapter.url: {why}"));
            }
        }
        (AdapterKind::Mock, None) => {}
    }
    if a.kind != AdapterKind::Mock {
        for (name, set) in [
            ("fail_after_tokens", a.fail_after_tokens.is_some()),
            ("stall_after_tokens", a.stall_after_tokens.is_some()),
        ] {
            if set {
                p.push(format!(
                    "{at}.adapter.{name}: only the mock adapter injects faults"
                ));
            }
        }
    }
    for (name, v) in [
        ("connect_timeout_ms", a.connect_timeout_ms),
        ("first_byte_timeout_ms", a.first_byte_timeout_ms),
        ("health_interval_ms", a.health_interval_ms),
    ] {
        if v == 0 || v > 3_600_000 {
            p.push(format!("{at}.adapter.{name}: must be in 1..=3600000"));
        }
    }
    if a.retries > 10 {
        p.push(format!("{at}.adapter.retries: at most 10"));
    }
    if a.decode_timeout_ms == 0 {
        p.push(format!(
            "{at}.adapter.decode_timeout_ms: must be at least 1"
        ));
    }
    for (name, v) in [
        ("ttft_ms", a.ttft_ms),
        ("tpot_ms", a.tpot_ms),
        ("decode_timeout_ms", a.decode_timeout_ms),
        ("load_ms", a.load_ms),
    ] {
        if v > 3_600_000 {
            p.push(format!("{at}.adapter.{name}: {v} is more than an hour"));
        }
    }
}

/// An engine's base URL, split: `http://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// The path prefix, without a trailing slash ("" for none).
    pub base_path: String,
}

/// Parses an engine URL. Only plain `http://` is supported: orchd talks to engines on
/// a trusted network (TLS belongs to a sidecar or the mesh).
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("must start with http:// (https is not supported)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok(HttpUrl {
        host: host.to_string(),
        port,
        base_path: path.to_string(),
    })
}

/// A TOML syntax error, with its line and column in the file. toml gives no message
/// for some errors (a control character in a comment, found by fuzzing): the position
/// is then what tells the user where to look.
fn syntax_problem(text: &str, e: &toml::de::Error) -> String {
    let why = match e.message().trim() {
        "" => "unexpected input",
        m => m,
    };
    let Some(span) = e.span() else {
        return format!("not valid TOML: {why}");
    };
    let before = &text.as_bytes()[..span.start.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    format!("not valid TOML at line {line}, column {column}: {why}")
}

/// `[[pools]]` written with no tables at all (`pools = []`) is an explicit empty list,
/// which validate() refuses; a file without the key keeps the default pool.
fn text_declares_pools(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .map(|t| t.contains_key("pools"))
        .unwrap_or(false)
}

/// Deserializes `value`, collecting every unknown key (via serde_ignored) and every bad
/// value (via serde_path_to_error): each bad value is reported, removed so that its
/// default applies, and the pass is repeated, so one run names every offending key.
fn deserialize_reporting_all<T: DeserializeOwned>(
    mut value: toml::Value,
) -> Result<T, ConfigError> {
    let mut bad = Vec::new();
    // Each pass removes one key, so the number of passes is bounded by the keys present.
    for _ in 0..256 {
        let mut unknown = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let result = {
            let de = serde_path_to_error::Deserializer::new(value.clone(), &mut track);
            serde_ignored::deserialize(de, |path| unknown.push(ignored_path(&path)))
        };
        match result {
            Ok(t) if bad.is_empty() && unknown.is_empty() => return Ok(t),
            Ok(_) => {
                let mut problems: Vec<String> = unknown
                    .into_iter()
                    .map(|k| format!("{k}: unknown key"))
                    .collect();
                problems.append(&mut bad);
                return Err(ConfigError { problems });
            }
            Err(e) => {
                let path = track.path();
                let segs = path_segments(&path);
                bad.push(format!(
                    "{}: {}",
                    render(&segs),
                    strip_position(&e.to_string())
                ));
                if segs.is_empty() || !remove_at(&mut value, &segs) {
                    // Not a removable leaf (e.g. a missing required key): stop here.
                    return Err(ConfigError { problems: bad });
                }
            }
        }
    }
    Err(ConfigError { problems: bad })
}

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push_str("(top level)");
    }
    out
}

fn path_segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    fn walk(p: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
        use serde_ignored::Path;
        match p {
            Path::Root => {}
            Path::Seq { parent, index } => {
                walk(parent, out);
                out.push(Seg::Index(*index));
            }
            Path::Map { parent, key } => {
                walk(parent, out);
                out.push(Seg::Key(key.clone()));
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut segs = Vec::new();
    walk(path, &mut segs);
    render(&segs)
}

fn remove_at(value: &mut toml::Value, segs: &[Seg]) -> bool {
    let (last, parents) = segs.split_last().expect("non-empty path");
    if let Seg::Index(_) = last {
        // An element of a list of scalars: drop the whole list so its default applies.
        return !parents.is_empty() && remove_at(value, parents);
    }
    let mut cur = value;
    for s in parents {
        cur = match (s, cur) {
            (Seg::Key(k), toml::Value::Table(t)) => match t.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        _ => false,
    }
}

/// toml's messages end with a position that means nothing after re-serialization.
fn strip_position(msg: &str) -> String {
    let msg = msg.lines().next().unwrap_or(msg);
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
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

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn every_unknown_key_and_bad_value_is_named_at_once() {
        let text = r#"
            [server]
            adress = "127.0.0.1:1"
            shards = "two"
            max_body_bytes = -5
            [stream]
            heartbeat = 3
            [[pools]]
            id = "a"
            slots = "many"
            policy = "lifo"
            [pools.adapter]
            kind = "mock"
            colour = "red"
        "#;
        let err = Config::from_toml_str(text).unwrap_err();
        let all = err.to_string();
        for key in [
            "server.adress: unknown key",
            "stream.heartbeat: unknown key",
            "pools[0].adapter.colour: unknown key",
            "server.shards:",
            "server.max_body_bytes:",
            "pools[0].slots:",
            "pools[0].policy:",
        ] {
            assert!(all.contains(key), "{key:?} missing from:\n{all}");
        }
        assert_eq!(err.problems.len(), 7, "{all}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = Config::from_toml_str("[server\naddr = 1").unwrap_err();
        assert!(err.problems[0].starts_with("not valid TOML"), "{err}");
    }

    #[test]
    fn syntax_errors_say_where_and_what() {
        // Found by fuzzing (config): a NUL in a comment gave "not valid TOML: ".
        let err = Config::from_toml_str("[server]\n# a\0b\nshards = 1\n").unwrap_err();
        assert_eq!(
            err.problems,
            ["not valid TOML at line 2, column 4: unexpected input"]
        );
        let err = Config::from_toml_str("[a]\n[a]\n").unwrap_err();
        let p = &err.problems[0];
        assert!(
            p.starts_with("not valid TOML at line 2, column 1: ") && p.contains("duplicate key"),
            "{p}"
        );
        let err = Config::from_toml_str("x = \"\u{e9}\u{e9}").unwrap_err();
        assert!(
            err.problems[0].starts_with("not valid TOML at line 1, column "),
            "{err}"
        );
    }

    #[test]
    fn validate_names_cross_field_problems() {
        let mut c = Config::default();
        c.server.addr = "0.0.0.0:8080".parse().unwrap();
        c.pools.push(PoolConfig {
            slots: 0,
            workloads: vec![],
            ..PoolConfig::default()
        });
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("server.addr"), "{err}");
        assert!(
            err.contains("pools[1].id: \"default\" is used by another pool"),
            "{err}"
        );
        assert!(err.contains("pools[1].slots"), "{err}");
        assert!(err.contains("pools[1].workloads"), "{err}");
    }

    #[test]
    fn keys_allow_non_loopback_and_never_print() {
        let mut c = Config::default();
        c.server.addr = "0.0.0.0:8080".parse().unwrap();
        c.server.api_keys = vec![ApiKey::new("s3cret-key")];
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn explicit_empty_pool_list_is_refused() {
        let c = Config::from_toml_str("pools = []").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pools: at least one"));
    }

    #[test]
    fn partial_pool_takes_defaults() {
        let c = Config::from_toml_str(
            "[[pools]]\nid = \"p1\"\nengine = \"vllm\"\n[[pools]]\nid = \"p2\"\nslots = 2\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.pools.len(), 2);
        assert_eq!(c.pools[0].engine, Engine::Vllm);
        assert_eq!(c.pools[1].slots, 2);
        assert_eq!(c.pools[1].queue_capacity, 256);
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn engine_urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8081").unwrap(),
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 8081,
                base_path: String::new()
            }
        );
        assert_eq!(
            parse_http_url("http://engine/api/").unwrap().base_path,
            "/api"
        );
        assert_eq!(parse_http_url("http://engine").unwrap().port, 80);
        assert!(parse_http_url("https://x").is_err());
        assert!(parse_http_url("http://:80").is_err());
        assert!(parse_http_url("http://x:port").is_err());
    }

    #[test]
    fn only_the_mock_injects_faults() {
        let c = Config::from_toml_str(
            "[[pools]]\nid = \"a\"\n[pools.adapter]\nfail_after_tokens = 3\nstall_after_tokens = 5\n",
        )
        .unwrap();
        assert_eq!(c.pools[0].adapter.fail_after_tokens, Some(3));
        assert_eq!(c.pools[0].adapter.stall_after_tokens, Some(5));
        let e = Config::from_toml_str(
            "[[pools]]\nid = \"a\"\n[pools.adapter]\nkind = \"openai\"\nurl = \"http://x:1\"\nfail_after_tokens = 3\n",
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(e
            .to_string()
            .contains("pools[0].adapter.fail_after_tokens: only the mock adapter injects faults"));
    }

    #[test]
    fn http_adapters_need_a_url_and_the_mock_takes_none() {
        let c =
            Config::from_toml_str("[[pools]]\nid = \"a\"\n[pools.adapter]\nkind = \"openai\"\n")
                .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pools[0].adapter.url: required"));
        let c =
            Config::from_toml_str("[[pools]]\nid = \"a\"\n[pools.adapter]\nurl = \"http://x:1\"\n")
                .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mock adapter takes no url"));
        let c = Config::from_toml_str(
            "[[pools]]\nid = \"a\"\n[pools.adapter]\nkind = \"llamacpp\"\nurl = \"http://127.0.0.1:8081\"\napi_key = \"sk-x\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("sk-x"));
    }
}

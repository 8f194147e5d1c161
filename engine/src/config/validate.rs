//! The rules that span fields (`Config::validate`) and the parsing of engine URLs.

use std::collections::HashSet;

use super::{AdapterKind, ArtifactBackend, Config, ConfigError, PoolConfig};
use crate::tenant::{Tenant, DEFAULT_TENANT, MAX_TENANTS};

/// Limits on numbers a user may write; anything larger is a mistake, not a wish.
const MAX_SHARDS: usize = 1024;
/// Slots of one pool (or one replica) at most.
pub const MAX_SLOTS: u32 = 65_536;
const MAX_QUEUE: u32 = 10_000_000;
const MAX_BODY: usize = 1 << 30;
const MAX_TOKENS_PER_MINUTE: u64 = 1_000_000_000_000;

/// What a pool id or a tenant name may be (each names a directory or a metric label).
const NAME_RULE: &str = "1 to 64 of [A-Za-z0-9_.-], not . or ..";

fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && s != "."
        && s != ".."
}

impl Config {
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
        if !(100..=1_000_000).contains(&s.io_poll_us) {
            p.push(format!(
                "server.io_poll_us: {} is outside 100..=1000000",
                s.io_poll_us
            ));
        }
        check_keys("server.api_keys", &s.api_keys, &mut p);
        for (i, o) in s.cors_allow_origins.iter().enumerate() {
            if o != "*" && !is_origin(o) {
                p.push(format!(
                    "server.cors_allow_origins[{i}]: {o:?} is not an origin (scheme://host[:port], no path) or \"*\""
                ));
            }
        }
        if s.api_keys.is_empty() && self.tenants.is_empty() && !s.addr.ip().is_loopback() {
            p.push(format!(
                "server.addr: {} is not a loopback address and no API key is configured; \
                 set server.api_keys, ORCHD_API_KEYS or [[tenants]], or listen on 127.0.0.1",
                s.addr
            ));
        }
        self.validate_tenants(&mut p);
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
        let oa = &self.openai;
        if oa.default_deadline_ms == 0 || oa.default_deadline_ms > crate::task::MAX_DEADLINE_MS {
            p.push(format!(
                "openai.default_deadline_ms: must be in 1..={}",
                crate::task::MAX_DEADLINE_MS
            ));
        }
        if oa.disconnect_grace_ms == 0 {
            p.push("openai.disconnect_grace_ms: must be at least 1".into());
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
}

/// Every key of `keys` (named `at[i]`) is 1 to 256 visible ASCII characters.
fn check_keys(at: &str, keys: &[super::ApiKey], p: &mut Vec<String>) {
    for (i, key) in keys.iter().enumerate() {
        let k = key.expose();
        if k.is_empty() || k.len() > 256 || !k.bytes().all(|b| b.is_ascii_graphic()) {
            p.push(format!(
                "{at}[{i}]: must be 1 to 256 visible ASCII characters"
            ));
        }
    }
}

/// A key as orchd keeps and compares it: its SHA-256 digest.
pub fn key_digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// A `key_sha256` entry: 64 hex digits.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    // from_str_radix alone would take a leading `+`.
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Config {
    /// Every tenant with the digests of its keys, in [`TenantId`](crate::tenant::TenantId)
    /// order: `server.api_keys` as `default` (operator) first when set, then
    /// `[[tenants]]` in order; with no key at all, the one implicit `default` operator
    /// (never empty). Digests that do not parse are left out ([`Config::validate`]
    /// names them).
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut out = Vec::with_capacity(self.tenants.len() + 1);
        if !self.server.api_keys.is_empty() || self.tenants.is_empty() {
            let keys = self.server.api_keys.iter();
            out.push(Tenant::default_operator(
                keys.map(|k| key_digest(k.expose())).collect(),
            ));
        }
        for t in &self.tenants {
            let plain = t.keys.iter().map(|k| key_digest(k.expose()));
            let hashed = t.key_sha256.iter().filter_map(|h| parse_digest(h));
            out.push(Tenant {
                name: t.name.clone(),
                role: t.role,
                digests: plain.chain(hashed).collect(),
                weight: t.weight,
                max_queued: t.max_queued,
                max_running: t.max_running,
                tokens_per_minute: t.tokens_per_minute,
            });
        }
        out
    }

    fn validate_tenants(&self, p: &mut Vec<String>) {
        let mut names = HashSet::new();
        if !self.server.api_keys.is_empty() {
            names.insert(DEFAULT_TENANT.to_string());
        }
        if self.tenants.len() >= MAX_TENANTS {
            p.push(format!(
                "tenants: {} tenants; at most {} (each has its own metric series)",
                self.tenants.len(),
                MAX_TENANTS - 1
            ));
        }
        for (i, t) in self.tenants.iter().enumerate() {
            let at = format!("tenants[{i}]");
            if !is_name(&t.name) {
                p.push(format!("{at}.name: {:?} must be {NAME_RULE}", t.name));
            } else if t.name == DEFAULT_TENANT && !self.server.api_keys.is_empty() {
                p.push(format!(
                    "{at}.name: \"default\" is the tenant of server.api_keys (ORCHD_API_KEYS); \
                     name this one otherwise, or move those keys here"
                ));
            } else if !names.insert(t.name.clone()) {
                p.push(format!("{at}.name: {:?} is used by another tenant", t.name));
            }
            if t.keys.is_empty() && t.key_sha256.is_empty() {
                p.push(format!("{at}: needs at least one key (keys or key_sha256)"));
            }
            if !(1..=1000).contains(&t.weight) {
                p.push(format!("{at}.weight: {} is outside 1..=1000", t.weight));
            }
            if t.max_queued > MAX_QUEUE {
                p.push(format!(
                    "{at}.max_queued: {} is more than {MAX_QUEUE}",
                    t.max_queued
                ));
            }
            if t.max_running > MAX_SLOTS {
                p.push(format!(
                    "{at}.max_running: {} is more than {MAX_SLOTS}",
                    t.max_running
                ));
            }
            if t.tokens_per_minute > MAX_TOKENS_PER_MINUTE {
                p.push(format!(
                    "{at}.tokens_per_minute: {} is more than {MAX_TOKENS_PER_MINUTE}",
                    t.tokens_per_minute
                ));
            }
            check_keys(&format!("{at}.keys"), &t.keys, p);
            for (j, h) in t.key_sha256.iter().enumerate() {
                if parse_digest(h).is_none() {
                    p.push(format!(
                        "{at}.key_sha256[{j}]: must be a SHA-256 digest, 64 hex digits \
                         (`printf %s KEY | sha256sum`)"
                    ));
                }
            }
        }
        // One key, one tenant: a key shared by two tenants would make its owner a guess.
        let offset = usize::from(!self.server.api_keys.is_empty());
        let path = |k: usize| match k.checked_sub(offset) {
            None => "server.api_keys".to_string(),
            Some(i) => format!("tenants[{i}]"),
        };
        let mut seen: std::collections::HashMap<[u8; 32], usize> = Default::default();
        for (k, t) in self.tenants().into_iter().enumerate() {
            let mut own = HashSet::new();
            for d in t.digests {
                if !own.insert(d) {
                    continue;
                }
                if let Some(other) = seen.insert(d, k) {
                    p.push(format!(
                        "{}: has a key that {} has too; each key belongs to one tenant",
                        path(k),
                        path(other)
                    ));
                }
            }
        }
    }
}

fn validate_pool(i: usize, pool: &PoolConfig, ids: &mut HashSet<String>, p: &mut Vec<String>) {
    let at = format!("pools[{i}]");
    if !is_name(&pool.id) {
        p.push(format!("{at}.id: {:?} must be {NAME_RULE}", pool.id));
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
    if let Some(d) = &a.discover {
        if a.kind == AdapterKind::Mock {
            p.push(format!(
                "{at}.adapter.discover: the mock adapter discovers no engines"
            ));
        } else if a.url.is_some() || !a.urls.is_empty() {
            p.push(format!(
                "{at}.adapter.discover: give one of url, urls and discover"
            ));
        } else if let Err(why) = parse_discover(d) {
            p.push(format!("{at}.adapter.discover: {why}"));
        }
        if !(100..=3_600_000).contains(&a.discover_interval_ms) {
            p.push(format!(
                "{at}.adapter.discover_interval_ms: must be in 100..=3600000"
            ));
        }
        if let Some(r) = &a.resolver {
            if r.parse::<std::net::SocketAddr>().is_err() {
                p.push(format!(
                    "{at}.adapter.resolver: {r:?} is not IP:PORT (the DNS server to ask)"
                ));
            }
        }
    } else if a.resolver.is_some() {
        p.push(format!("{at}.adapter.resolver: only with discover"));
    }
    match (a.kind, &a.url, a.urls.is_empty() && a.discover.is_none()) {
        (AdapterKind::Mock, Some(_), _) => {
            p.push(format!("{at}.adapter.url: the mock adapter takes no url"))
        }
        (AdapterKind::Mock, None, false) if !a.urls.is_empty() => {
            p.push(format!("{at}.adapter.urls: the mock adapter takes no urls"))
        }
        (AdapterKind::Mock, None, false) => {}
        (AdapterKind::Openai | AdapterKind::Llamacpp, None, true) => p.push(format!(
            "{at}.adapter.url: required for kind = \"{}\" (or urls, a replica set)",
            a.kind.as_str()
        )),
        (AdapterKind::Openai | AdapterKind::Llamacpp, Some(_), false) if a.discover.is_none() => p
            .push(format!(
                "{at}.adapter.urls: give url (one engine) or urls (a replica set), not both"
            )),
        // discover with url or urls: reported above.
        (AdapterKind::Openai | AdapterKind::Llamacpp, Some(_), false) => {}
        (AdapterKind::Openai | AdapterKind::Llamacpp, Some(url), true) => {
            if let Err(why) = parse_http_url(url) {
                p.push(format!("{at}.adapter.url: {why}"));
            }
        }
        (AdapterKind::Openai | AdapterKind::Llamacpp, None, false) => {
            if a.urls.len() > MAX_REPLICAS {
                p.push(format!(
                    "{at}.adapter.urls: {} replicas, more than {MAX_REPLICAS}",
                    a.urls.len()
                ));
            }
            let mut seen = HashSet::new();
            for (i, url) in a.urls.iter().enumerate() {
                match parse_http_url(url) {
                    Err(why) => p.push(format!("{at}.adapter.urls[{i}]: {why}")),
                    Ok(u) if !seen.insert(replica_id_of(&u)) => p.push(format!(
                        "{at}.adapter.urls[{i}]: names replica {} twice",
                        replica_id_of(&u)
                    )),
                    Ok(_) => {}
                }
            }
        }
        (AdapterKind::Mock, None, true) => {}
    }
    if a.prefix_bytes > MAX_PREFIX_BYTES {
        p.push(format!(
            "{at}.adapter.prefix_bytes: at most {MAX_PREFIX_BYTES}"
        ));
    }
    if a.kind == AdapterKind::Mock && a.slots_from_engine {
        p.push(format!(
            "{at}.adapter.slots_from_engine: the mock adapter reports no slots"
        ));
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

impl PoolConfig {
    /// The pool's engine replicas, in config order: `(id, url)`, the id being what
    /// `replica_id` labels and `replicas[].id` show (issue 20): `mock` for the mock
    /// (no URL), the URL's `host:port` for an HTTP engine (bracketed for IPv6). One for
    /// `url`, one per entry of `urls`.
    pub fn replicas(&self) -> Vec<(String, Option<String>)> {
        if self.adapter.kind == AdapterKind::Mock {
            return vec![("mock".to_string(), None)];
        }
        let urls: Vec<&String> = match &self.adapter.url {
            Some(u) => vec![u],
            None => self.adapter.urls.iter().collect(),
        };
        urls.into_iter()
            .map(|u| {
                // Validation refuses a URL that does not parse (credentials in it
                // included), so `unusable` names a config built past it; the URL is
                // never echoed.
                let id = parse_http_url(u)
                    .map_or_else(|_| "unusable".to_string(), |u| replica_id_of(&u));
                (id, Some(u.clone()))
            })
            .collect()
    }

    /// A replica set: replicas it discovers, or several `urls` (a pool of one engine,
    /// `url` or the mock, is not one).
    pub fn is_replica_set(&self) -> bool {
        let a = &self.adapter;
        a.kind != AdapterKind::Mock
            && (a.discover.is_some() || (a.url.is_none() && a.urls.len() > 1))
    }

    /// The pool's own `replica_id`: what its series carry for what no replica holds
    /// (tasks enqueued, or ended while queued): its one replica's id, its replicas' ids
    /// joined by commas, or the `NAME:PORT` it discovers. What ran on a replica carries
    /// that replica's id.
    pub fn replica_id(&self) -> String {
        if let Some(Ok(d)) = self.adapter.discover.as_deref().map(parse_discover) {
            return format!("{}:{}", d.name, d.port);
        }
        let ids: Vec<String> = self.replicas().into_iter().map(|(id, _)| id).collect();
        ids.join(",")
    }
}

/// Replicas of one pool at most (`adapter.urls`, or the addresses `discover` finds).
pub const MAX_REPLICAS: usize = 64;

/// `adapter.prefix_bytes` at most: a longer prefix routes almost no prompt by it.
pub const MAX_PREFIX_BYTES: u32 = 65_536;

/// `dns://NAME:PORT` of `adapter.discover`, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discover {
    pub name: String,
    pub port: u16,
}

/// Parses `adapter.discover`: `dns://NAME:PORT`, a DNS name (letters, digits, `-`, `_`
/// and dots) and the port its engines listen on.
pub fn parse_discover(d: &str) -> Result<Discover, String> {
    let rest = d
        .strip_prefix("dns://")
        .ok_or_else(|| format!("{d:?} is not dns://NAME:PORT"))?;
    let (name, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{d:?} names no port (dns://NAME:PORT)"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("{d:?}: the port is not 1..=65535"))?;
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 253 || !name.chars().all(ok) {
        return Err(format!("{d:?}: {name:?} is not a DNS name"));
    }
    Ok(Discover {
        name: name.to_string(),
        port,
    })
}

fn replica_id_of(u: &HttpUrl) -> String {
    if u.host.contains(':') && !u.host.starts_with('[') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    }
}

/// Parses an engine URL. Only plain `http://` is supported: orchd talks to engines on
/// a trusted network (TLS belongs to a sidecar or the mesh).
/// A web origin as browsers send it: `http://host` or `https://host`, an optional
/// port, nothing after.
fn is_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
    else {
        return false;
    };
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "80"));
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]".contains(&b))
        && port.parse::<u16>().is_ok()
}

pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("must start with http:// (https is not supported)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.contains('@') {
        // Credentials in a URL end up in logs and metric labels: api_key carries them.
        return Err("has credentials (user@): put the key in adapter.api_key".into());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiKey, Role};

    #[test]
    fn cors_origins_are_origins() {
        let mut c = Config::default();
        c.server.cors_allow_origins = vec![
            "*".into(),
            "http://127.0.0.1:3000".into(),
            "https://chat.example.com".into(),
            "http://example.com/app".into(),
            "example.com".into(),
        ];
        let e = c.validate().unwrap_err();
        let bad: Vec<&String> = e
            .problems
            .iter()
            .filter(|p| p.starts_with("server.cors_allow_origins"))
            .collect();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(
            bad[0].starts_with("server.cors_allow_origins[3]"),
            "{bad:?}"
        );
    }

    #[test]
    fn validate_names_cross_field_problems() {
        let mut c = Config::default();
        c.server.addr = "0.0.0.0:8080".parse().unwrap();
        c.server.io_poll_us = 50;
        c.pools.push(PoolConfig {
            slots: 0,
            workloads: vec![],
            ..PoolConfig::default()
        });
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("server.addr"), "{err}");
        assert!(
            err.contains("server.io_poll_us: 50 is outside 100..=1000000"),
            "{err}"
        );
        assert!(
            err.contains("pools[1].id: \"default\" is used by another pool"),
            "{err}"
        );
        assert!(err.contains("pools[1].slots"), "{err}");
        assert!(err.contains("pools[1].workloads"), "{err}");
    }

    #[test]
    fn tenants_are_named_keyed_and_own_their_keys() {
        let text = r#"
[server]
addr = "0.0.0.0:8080"
api_keys = ["shared-1"]
[[tenants]]
name = "default"
keys = ["k-a"]
[[tenants]]
name = "b c"
[[tenants]]
name = "team"
keys = ["shared-1", "k-x"]
key_sha256 = ["+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f"]
role = "operator"
[[tenants]]
name = "team"
keys = ["k-y"]
key_sha256 = ["9ff6f84bc5dd8e0f5f1b7ec4d2b7f0a40b5c13d3e2c4a1e7d5a7f3a47e0c1e25"]
[[tenants]]
name = "other"
keys = ["k-x"]
[[tenants]]
name = ".."
keys = ["k-z"]
weight = 0
max_running = 70000
tokens_per_minute = 2000000000000
"#;
        let c = Config::from_toml_str(text).unwrap();
        let err = c.validate().unwrap_err().to_string();
        for want in [
            "tenants[0].name: \"default\" is the tenant of server.api_keys",
            "tenants[1].name: \"b c\" must be 1 to 64 of [A-Za-z0-9_.-], not . or ..",
            "tenants[5].name: \"..\" must be",
            "tenants[5].weight: 0 is outside 1..=1000",
            "tenants[5].max_running: 70000 is more than 65536",
            "tenants[5].tokens_per_minute: 2000000000000 is more than",
            "tenants[1]: needs at least one key",
            "tenants[2].key_sha256[0]: must be a SHA-256 digest",
            "tenants[3].name: \"team\" is used by another tenant",
            "tenants[2]: has a key that server.api_keys has too",
            "tenants[4]: has a key that tenants[2] has too",
        ] {
            assert!(err.contains(want), "{want:?} not in:\n{err}");
        }
        assert!(
            !err.contains("shared-1") && !err.contains("k-x"),
            "keys in: {err}"
        );
        // Roles and fields not known are named like any bad key.
        let err = Config::from_toml_str("[[tenants]]\nname = \"t\"\nrole = \"admin\"\nburst = 2\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tenants[0].role") && err.contains("tenants[0].burst: unknown key"),
            "{err}"
        );
        // A tenant's keys alone allow a non-loopback address; server.api_keys come first.
        let mut ok = Config::default();
        ok.server.addr = "0.0.0.0:8080".parse().unwrap();
        ok.tenants = vec![super::super::TenantConfig {
            name: "t".into(),
            key_sha256: vec![hex(key_digest("k"))],
            ..Default::default()
        }];
        ok.validate().unwrap();
        let t = ok.tenants();
        assert_eq!(
            (t.len(), t[0].role, t[0].digests[0]),
            (1, Role::Client, key_digest("k"))
        );
        ok.server.api_keys = vec![ApiKey::new("legacy")];
        let t = ok.tenants();
        assert_eq!(
            (t[0].name.as_str(), t[0].role),
            (DEFAULT_TENANT, Role::Operator)
        );
    }

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
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
        let mut pool = Config::default().pools[0].clone();
        assert_eq!(pool.replica_id(), "mock");
        pool.adapter.kind = AdapterKind::Llamacpp;
        for (url, id) in [
            ("http://10.0.0.7:8080/v1", "10.0.0.7:8080"),
            ("http://engine", "engine:80"),
            ("http://[::1]:9000", "[::1]:9000"),
        ] {
            pool.adapter.url = Some(url.into());
            assert_eq!(pool.replica_id(), id);
        }
        assert!(parse_http_url("http://user:pw@engine:8080")
            .unwrap_err()
            .contains("api_key"));
        assert!(parse_http_url("http://x:port").is_err());
    }

    #[test]
    fn a_replica_set_is_urls_each_checked_and_named() {
        let load = |adapter: &str| {
            let c = Config::from_toml_str(&format!(
                "[[pools]]\nid = \"a\"\n[pools.adapter]\n{adapter}\n"
            ))
            .unwrap();
            c.validate().map(|()| c)
        };
        let c = load(
            "kind = \"llamacpp\"\nurls = [\"http://127.0.0.2:8080\", \"http://127.0.0.3:8080/x\"]",
        )
        .unwrap();
        let ids: Vec<String> = c.pools[0]
            .replicas()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["127.0.0.2:8080", "127.0.0.3:8080"]);
        assert_eq!(c.pools[0].replica_id(), "127.0.0.2:8080,127.0.0.3:8080");
        assert_eq!(c.total_slots(), 2 * u64::from(c.pools[0].slots));
        for (adapter, says) in [
            (
                "kind = \"openai\"\nurl = \"http://x:1\"\nurls = [\"http://y:1\"]",
                "pools[0].adapter.urls: give url (one engine) or urls (a replica set), not both",
            ),
            (
                "urls = [\"http://y:1\"]",
                "pools[0].adapter.urls: the mock adapter takes no urls",
            ),
            (
                "kind = \"openai\"\nurls = [\"http://y:1\", \"https://z:1\"]",
                "pools[0].adapter.urls[1]: ",
            ),
            (
                "kind = \"openai\"\nurls = [\"http://y:1\", \"http://y:1/other\"]",
                "pools[0].adapter.urls[1]: names replica y:1 twice",
            ),
            (
                "kind = \"openai\"\nurls = []",
                "pools[0].adapter.url: required",
            ),
            (
                "slots_from_engine = true",
                "pools[0].adapter.slots_from_engine: the mock adapter reports no slots",
            ),
            (
                "kind = \"openai\"\nurl = \"http://x:1\"\nprefix_bytes = 65537",
                "pools[0].adapter.prefix_bytes: at most 65536",
            ),
        ] {
            let e = load(adapter).unwrap_err().to_string();
            assert!(e.contains(says), "{adapter}: {e}");
        }
        let many: Vec<String> = (0..=MAX_REPLICAS)
            .map(|i| format!("\"http://h{i}:1\""))
            .collect();
        let e = load(&format!("kind = \"openai\"\nurls = [{}]", many.join(", ")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 64"), "{e}");
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

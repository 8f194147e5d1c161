//! The rules that span fields (`Config::validate`) and the parsing of engine URLs.

use std::collections::HashSet;

use super::{AdapterKind, ArtifactBackend, Config, ConfigError, PoolConfig};

/// Limits on numbers a user may write; anything larger is a mistake, not a wish.
const MAX_SHARDS: usize = 1024;
const MAX_SLOTS: u32 = 65_536;
const MAX_QUEUE: u32 = 10_000_000;
const MAX_BODY: usize = 1 << 30;

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
        for (i, key) in s.api_keys.iter().enumerate() {
            let k = key.expose();
            if k.is_empty() || k.len() > 256 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                p.push(format!(
                    "server.api_keys[{i}]: must be 1 to 256 visible ASCII characters"
                ));
            }
        }
        for (i, o) in s.cors_allow_origins.iter().enumerate() {
            if o != "*" && !is_origin(o) {
                p.push(format!(
                    "server.cors_allow_origins[{i}]: {o:?} is not an origin (scheme://host[:port], no path) or \"*\""
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
    use crate::config::ApiKey;

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

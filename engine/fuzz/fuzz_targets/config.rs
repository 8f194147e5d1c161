//! Any text -> the TOML config loader (`Config::from_toml_str`), then what `orchd`
//! does with a loaded file (`ORCHD_API_KEYS` applied, `Config::validate`).
//!
//! Asserts: no panic; every refusal lists at least one problem and each problem says
//! what it is about (`<key>: <why>`); a config that validates has the properties the
//! runtime relies on (at least one pool, unique pool ids, a parseable URL for every
//! HTTP adapter).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use orchd_engine::config::{parse_http_url, AdapterKind, ApiKey, ConfigError};
use orchd_engine::Config;

fn check_problems(e: &ConfigError) {
    assert!(!e.problems.is_empty(), "an error with no problem");
    for p in &e.problems {
        let (about, why) = p
            .split_once(": ")
            .unwrap_or_else(|| panic!("problem names nothing: {p:?}"));
        assert!(!about.is_empty() && !why.is_empty(), "{p:?}");
    }
    let _ = e.to_string();
}

fn check_valid(c: &Config) {
    assert!(!c.pools.is_empty());
    let ids: HashSet<_> = c.pools.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), c.pools.len(), "pool ids are unique");
    for p in &c.pools {
        assert!(p.slots >= 1);
        match p.adapter.kind {
            AdapterKind::Mock => assert!(p.adapter.url.is_none()),
            AdapterKind::Openai | AdapterKind::Llamacpp => {
                let url = p.adapter.url.as_deref().expect("an HTTP adapter has a url");
                parse_http_url(url).expect("a validated url parses");
            }
        }
    }
    let _ = c.total_slots();
    let _ = format!("{c:?}");
}

fuzz_target!(|data: &[u8]| {
    // `orchd --config` reads the file with read_to_string: only UTF-8 gets this far.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut config = match Config::from_toml_str(text) {
        Ok(c) => c,
        Err(e) => return check_problems(&e),
    };
    match config.validate() {
        Ok(()) => check_valid(&config),
        Err(e) => check_problems(&e),
    }
    // As `ORCHD_API_KEYS=k1,k2` does after loading the file.
    config.server.api_keys = vec![ApiKey::new("fuzz-key")];
    match config.validate() {
        Ok(()) => check_valid(&config),
        Err(e) => check_problems(&e),
    }
});

//! The TOML loader: every unknown key and every bad value of a file reported at once.

use serde::de::DeserializeOwned;

use super::{Config, ConfigError};

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
    use crate::types::Engine;

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

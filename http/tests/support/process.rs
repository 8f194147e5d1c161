//! The `orchd` binary as a process: started with env and flags, ready when it logs
//! `ready`, stopped with signals, waited for with a bound.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orchd_testkit::try_wait_until;

pub const BIN: &str = env!("CARGO_BIN_EXE_orchd");

pub fn orchd() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("ORCHD_ADDR")
        .env_remove("ORCHD_CONFIG")
        .env_remove("ORCHD_API_KEYS")
        .stdin(Stdio::null());
    c
}

/// Runs orchd to completion (bounded) and returns (exit code, stderr).
pub fn run_to_end(cmd: &mut Command) -> (i32, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code().unwrap_or(-1), err)
}

/// Waits for the child to exit; kills it and fails after `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    try_wait_until(limit, "orchd to exit", || child.try_wait().unwrap()).unwrap_or_else(|e| {
        let _ = child.kill();
        panic!("{e}")
    })
}

/// An empty directory for this process under the system temp dir (what a run before
/// left there is removed).
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("orchd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `text` written to `orchd.toml` in a directory of its own under the system temp dir;
/// the directory goes when the returned handle is dropped.
pub fn temp_file(name: &str, text: &str) -> TempConfig {
    let dir = std::env::temp_dir().join(format!("orchd-bin-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("orchd.toml");
    std::fs::write(&p, text).unwrap();
    TempConfig(p)
}

/// A config file written by [`temp_file`]; dropping it removes its directory.
pub struct TempConfig(std::path::PathBuf);

impl std::ops::Deref for TempConfig {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempConfig {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts orchd on port 0 and returns it with the address from its `ready` log line.
pub fn start_ready(
    extra_env: &[(&str, &str)],
) -> (Child, String, BufReader<std::process::ChildStderr>) {
    start_ready_with(extra_env, &[])
}

/// Like [`start_ready`], with extra arguments.
pub fn start_ready_with(
    extra_env: &[(&str, &str)],
    args: &[&std::ffi::OsStr],
) -> (Child, String, BufReader<std::process::ChildStderr>) {
    let mut cmd = orchd();
    cmd.args(args);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let started = start_logged(cmd);
    (started.child, started.addr, started.err)
}

/// An orchd process that logged `ready`, with what it logged up to then.
pub struct Started {
    pub child: Child,
    pub addr: String,
    /// The `ready` line.
    pub ready: serde_json::Value,
    /// The lines before it.
    pub before: Vec<serde_json::Value>,
    pub err: BufReader<std::process::ChildStderr>,
}

/// Starts `cmd` on 127.0.0.1:0 with info logs (unless it sets them) and waits
/// (bounded) for its `ready` line.
// The child is handed to the caller, which waits for it; clippy cannot see that.
#[allow(clippy::zombie_processes)]
pub fn start_logged(mut cmd: Command) -> Started {
    for (k, default) in [("ORCHD_ADDR", "127.0.0.1:0"), ("ORCHD_LOG", "info")] {
        if !cmd.get_envs().any(|(name, v)| name == k && v.is_some()) {
            cmd.env(k, default);
        }
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let t = Instant::now();
    let mut line = String::new();
    let mut before = Vec::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 || t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orchd never logged ready; it logged:\n{before:#?}\n{line}");
        }
        let v: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
        if v["message"] == "ready" {
            return Started {
                child,
                addr: v["addr"].as_str().unwrap().to_string(),
                ready: v,
                before,
                err,
            };
        }
        before.push(v);
    }
}

/// Kills the child when dropped: a failing test must not leave an orchd running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! The `orchd` binary as a user runs it: config errors, the loopback rule, the default
//! config printout, readiness and SIGTERM.

mod support;

use std::time::{Duration, Instant};

use orchd_testkit::{assert_well_formed, open_stream, submit, task_body, uuid, Client};
use support::process::{
    fresh_dir, orchd, run_to_end, start_logged, start_ready, start_ready_with, temp_file,
    wait_bounded, KillOnDrop,
};

#[test]
fn bad_config_names_every_offending_key() {
    let p = temp_file(
        "bad",
        "[server]\nadress = \"x\"\nshards = \"two\"\nruntime = \"uring\"\n[[pools]]\nid = \"p\"\nslots = 0\npolicy = \"lifo\"\n",
    );
    let (code, err) = run_to_end(orchd().arg("--config").arg(&p));
    assert_eq!(code, 2, "{err}");
    for key in [
        "server.adress: unknown key",
        "server.shards",
        "server.runtime",
        "pools[0].policy",
    ] {
        assert!(err.contains(key), "{key:?} not named in:\n{err}");
    }
}

#[test]
fn an_unknown_runtime_is_named_with_the_choices() {
    for cmd in [
        orchd().args(["--runtime", "uring"]),
        orchd().env("ORCHD_RUNTIME", "uring"),
    ] {
        let (code, err) = run_to_end(cmd);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("uring") && err.contains("`auto`, `io_uring`, `epoll`"),
            "{err}"
        );
    }
}

#[test]
fn cross_field_problems_stop_startup() {
    let p = temp_file(
        "cross",
        "[[pools]]\nid = \"a\"\nslots = 0\n[[pools]]\nid = \"a\"\n",
    );
    let (code, err) = run_to_end(orchd().arg("--config").arg(&p));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pools[0].slots"), "{err}");
    assert!(err.contains("pools[1].id"), "{err}");
}

#[test]
fn non_loopback_without_keys_is_refused() {
    let (code, err) = run_to_end(orchd().env("ORCHD_ADDR", "0.0.0.0:0"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
}

#[test]
fn default_config_printout_is_the_default() {
    let out = orchd().arg("--print-default-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed = orchd_engine::Config::from_toml_str(&text).unwrap();
    assert_eq!(parsed, orchd_engine::Config::default());
    assert!(text.contains("[[pools]]") && text.contains("kind = \"mock\""));
}

/// `Cpus_allowed_list` of each of `pid`'s shards, in shard order, and of the process
/// (its main thread, which orchd never pins). A shard is every thread named after it:
/// glommio runs a helper thread beside each executor, which pins itself when it first
/// runs, so this reads until each shard's threads agree (bounded).
fn shard_cpus(pid: u32) -> (Vec<String>, String) {
    let allowed = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list in /proc status")
            .trim()
            .to_string()
    };
    let process = allowed(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap());
    let t = Instant::now();
    loop {
        let mut shards = std::collections::BTreeMap::<String, Vec<String>>::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let dir = entry.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if let (true, Ok(status)) = (
                comm.starts_with("orchd-shard-"),
                std::fs::read_to_string(dir.join("status")),
            ) {
                let threads = shards.entry(comm.trim().to_string()).or_default();
                threads.push(allowed(&status));
            }
        }
        let agreed = shards.values_mut().all(|threads| {
            threads.sort();
            threads.dedup();
            threads.len() == 1
        });
        if agreed {
            return (
                shards.into_values().map(|mut t| t.remove(0)).collect(),
                process,
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a shard's threads run on different cores: {shards:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// On a host (or cpuset) of one CPU, pinned and unpinned look alike: there only the
/// pinned half tells anything.
#[test]
fn shards_are_pinned_a_core_each_unless_pin_cores_is_false() {
    let pinned = temp_file("pinned", "[server]\nshards = 2\n");
    let (child, _addr, _err) = start_ready_with(&[], &["--config".as_ref(), pinned.as_os_str()]);
    let child = KillOnDrop(child);
    let (shards, process) = shard_cpus(child.0.id());
    assert_eq!(shards.len(), 2, "{shards:?}");
    for cpus in &shards {
        assert!(
            cpus.parse::<usize>().is_ok(),
            "a pinned shard may run on {cpus:?}"
        );
    }
    if process.contains(['-', ',']) {
        assert_ne!(
            shards[0], shards[1],
            "two cores available ({process}), one used twice"
        );
    }
    drop(child);

    let free = temp_file("unpinned", "[server]\nshards = 2\npin_cores = false\n");
    let (child, _addr, _err) = start_ready_with(&[], &["--config".as_ref(), free.as_os_str()]);
    let child = KillOnDrop(child);
    let (shards, process) = shard_cpus(child.0.id());
    assert_eq!(
        shards,
        vec![process.clone(), process],
        "unpinned shards keep the process's cores"
    );
}

#[test]
fn sigterm_stops_cleanly_with_exit_0() {
    let (mut child, addr, mut err) = start_ready(&[("ORCHD_API_KEYS", "topsecret-key")]);
    // An idle keep-alive connection must not hold shutdown up.
    let idle = std::net::TcpStream::connect(&addr).unwrap();
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let status = wait_bounded(&mut child, Duration::from_secs(15));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(rest.contains("\"stopped\""), "{rest}");
    assert!(!rest.contains("topsecret"), "a key reached the log");
    drop(idle);
}

#[test]
fn sigint_stops_cleanly_too() {
    let (mut child, _addr, _err) = start_ready(&[]);
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_bounded(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn too_low_memlock_limit_fails_fast_naming_the_fix() {
    let mut cmd = low_memlock();
    cmd.args(["--runtime", "io_uring"])
        .env("ORCHD_ADDR", "127.0.0.1:0");
    let (code, err) = run_to_end(&mut cmd);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("locked-memory limit is 64 KiB"), "{err}");
    assert!(err.contains("ulimit -l"), "{err}");
    assert!(err.contains("server.runtime"), "{err}");
}

#[test]
fn too_low_memlock_limit_on_auto_runs_on_epoll_saying_why() {
    let mut cmd = low_memlock();
    cmd.env_remove("ORCHD_RUNTIME");
    let started = start_logged(cmd);
    let _child = KillOnDrop(started.child);
    assert_eq!(started.ready["runtime"], "epoll", "{}", started.ready);
    let warned = started.before.iter().any(|l| {
        l["level"] == "WARN"
            && l["cause"]
                .as_str()
                .is_some_and(|c| c.contains("locked-memory limit is 64 KiB"))
    });
    assert!(warned, "{:#?}", started.before);
}

/// `orchd` with a locked-memory limit (soft and hard) of 64 KiB, below glommio's need.
fn low_memlock() -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = orchd();
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64 * 1024,
                rlim_max: 64 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn sigterm_ends_live_streams_with_a_terminal_frame_and_exits_0() {
    let p = temp_file(
        "grace",
        "[server]\nshutdown_grace_ms = 300\n[[pools]]\nid = \"p\"\n[pools.adapter]\nttft_ms = 0\ntpot_ms = 20\n",
    );
    let (mut child, addr, _err) =
        start_ready_with(&[], &[std::ffi::OsStr::new("--config"), p.as_os_str()]);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let task = uuid();
    let body = task_body(&task, &uuid(), serde_json::json!({"max_tokens": 1000}));
    assert_eq!(submit(addr, &[], &body).status, 202);
    let mut stream = open_stream(addr, &[], &task);
    let started = stream.next_event().unwrap();
    assert_eq!(started.event, "started");
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut all = vec![started];
    all.extend(stream.collect());
    assert!(all.len() > 1, "frames after SIGTERM");
    assert_well_formed(&all);
    let last = all.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "POOL_UNAVAILABLE");
    let status = wait_bounded(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn acknowledged_artifacts_survive_kill_9() {
    let dir = fresh_dir("kill9");
    let cfg = temp_file(
        "kill9",
        &format!(
            "[artifacts]\nbackend = \"fs\"\ndir = {:?}\n",
            dir.to_str().unwrap()
        ),
    );
    let args = [std::ffi::OsStr::new("--config"), cfg.as_os_str()];
    let (mut child, addr, _err) = start_ready_with(&[], &args);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let mut acked = Vec::new();
    let mut client = Client::connect(addr);
    for i in 0..50 {
        let body =
            serde_json::json!({"kind": "other", "content": {"i": i, "pad": "z".repeat(4000)}});
        let r = client.send(
            "POST",
            "/v1/artifacts",
            &[],
            &serde_json::to_vec(&body).unwrap(),
        );
        assert_eq!(r.status, 201);
        acked.push((
            r.json()["id"].as_str().unwrap().to_string(),
            body["content"].clone(),
        ));
    }
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();

    let (mut child, addr, _err) = start_ready_with(&[], &args);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let mut client = Client::connect(addr);
    for (id, content) in &acked {
        let r = client.send("GET", &format!("/v1/artifacts/{id}"), &[], b"");
        assert_eq!(r.status, 200, "{id} lost");
        assert_eq!(&r.json()["content"], content);
    }
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(15)).code(),
        Some(0)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

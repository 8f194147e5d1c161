//! orchd where io_uring is denied, as a container user meets it: the real binary under a
//! real seccomp filter (`orchd_testkit::seccomp`, installed with `prctl` in the child
//! before it runs orchd) that answers the three io_uring calls with `EPERM` (Docker's,
//! containerd's and Kubernetes' default profiles) or `ENOSYS` (no io_uring at all).
//! `server.runtime = "auto"` must come up on epoll, say why in one warning, and serve:
//! a task end to end, a cancel, SIGTERM with a live stream.

mod support;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use orchd_testkit::seccomp::{deny_calls, IO_URING_CALLS, IO_URING_REGISTER};
use orchd_testkit::{assert_well_formed, cancel, open_stream, submit, task_body, uuid, Client};
use support::process::{orchd, run_to_end, start_logged, temp_file, wait_bounded, KillOnDrop};

/// `orchd` with `args`, under a filter denying io_uring with `errno`, on the runtime
/// `auto` (the default: ORCHD_RUNTIME, which CI sets per runtime, is not passed on).
fn denied(errno: i32, args: &[&std::ffi::OsStr]) -> Command {
    denied_calls(errno, IO_URING_CALLS, args)
}

fn denied_calls(errno: i32, calls: [u32; 3], args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = orchd();
    cmd.env_remove("ORCHD_RUNTIME").args(args);
    // SAFETY: deny_calls makes two prctl calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || deny_calls(errno, calls));
    }
    cmd
}

fn auto_serves_on_epoll(errno: i32, cause: &str) {
    let cfg = temp_file(
        &format!("seccomp-{errno}"),
        "[server]\nshutdown_grace_ms = 300\n[[pools]]\nid = \"p\"\n[pools.adapter]\nttft_ms = 0\ntpot_ms = 10\n",
    );
    let started = start_logged(denied(errno, &["--config".as_ref(), cfg.as_os_str()]));
    let mut child = KillOnDrop(started.child);
    assert_eq!(started.ready["runtime"], "epoll", "{}", started.ready);
    let warnings: Vec<_> = started
        .before
        .iter()
        .filter(|l| l["level"] == "WARN" && l["runtime"] == "epoll")
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning naming the cause: {:#?}",
        started.before
    );
    let why = warnings[0]["cause"].as_str().unwrap_or_default();
    assert!(
        why.contains("io_uring_setup failed") && why.contains(cause),
        "{why}"
    );
    let addr: std::net::SocketAddr = started.addr.parse().unwrap();

    // What it runs on, where operators look.
    let caps = Client::connect(addr).send("GET", "/v1/capabilities", &[], b"");
    assert_eq!(caps.json()["runtime"], "epoll");
    let metrics = Client::connect(addr).send("GET", "/metrics", &[], b"");
    assert!(
        metrics.text().contains("runtime_info{runtime=\"epoll\"} 1"),
        "{}",
        metrics.text()
    );

    // A task end to end.
    let task = uuid();
    let body = task_body(&task, &uuid(), serde_json::json!({"max_tokens": 5}));
    assert_eq!(submit(addr, &[], &body).status, 202);
    let frames: Vec<_> = open_stream(addr, &[], &task).collect();
    assert_well_formed(&frames);
    assert_eq!(frames.last().unwrap().event, "end");
    assert_eq!(frames.iter().filter(|f| f.event == "token").count(), 5);

    // A cancel mid-stream.
    let task = uuid();
    let body = task_body(&task, &uuid(), serde_json::json!({"max_tokens": 1000}));
    assert_eq!(submit(addr, &[], &body).status, 202);
    let mut stream = open_stream(addr, &[], &task);
    let mut frames = vec![stream.next_event().unwrap(), stream.next_event().unwrap()];
    let canceled = cancel(addr, &task);
    assert_eq!(canceled.status, 204);
    frames.extend(stream.collect());
    assert_well_formed(&frames);
    let last = frames.last().unwrap();
    assert_eq!(last.event, "end", "{last:?}");
    assert_eq!(last.data["canceled"], true, "{last:?}");
    let n = frames
        .iter()
        .filter(|f| f.event == "token")
        .count()
        .to_string();
    assert_eq!(canceled.header("x-tokens-out"), Some(n.as_str()));

    // SIGTERM with a live stream: a terminal frame, exit 0.
    let task = uuid();
    let body = task_body(&task, &uuid(), serde_json::json!({"max_tokens": 1000}));
    assert_eq!(submit(addr, &[], &body).status, 202);
    let mut stream = open_stream(addr, &[], &task);
    let first = stream.next_event().unwrap();
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let mut frames = vec![first];
    frames.extend(stream.collect());
    assert_well_formed(&frames);
    assert_eq!(frames.last().unwrap().event, "error");
    let status = wait_bounded(&mut child.0, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn auto_runs_on_epoll_where_seccomp_answers_io_uring_with_eperm() {
    auto_serves_on_epoll(libc::EPERM, "Operation not permitted");
}

#[test]
fn auto_runs_on_epoll_where_io_uring_does_not_exist_enosys() {
    auto_serves_on_epoll(libc::ENOSYS, "Function not implemented");
}

#[test]
fn auto_runs_on_epoll_where_a_ring_can_be_set_up_but_not_probed() {
    // glommio probes the ring's operations with io_uring_register when it starts and
    // panics when it cannot; the preflight makes the same call first.
    let started = start_logged(denied_calls(libc::EPERM, IO_URING_REGISTER, &[]));
    let _child = KillOnDrop(started.child);
    assert_eq!(started.ready["runtime"], "epoll", "{}", started.ready);
    let warned = started.before.iter().any(|l| {
        l["cause"]
            .as_str()
            .is_some_and(|c| c.contains("io_uring_register failed"))
    });
    assert!(warned, "{:#?}", started.before);
}

#[test]
fn io_uring_asked_for_where_it_is_denied_fails_naming_the_fix() {
    for errno in [libc::EPERM, libc::ENOSYS] {
        let (code, err) = run_to_end(&mut denied(
            errno,
            &["--runtime".as_ref(), "io_uring".as_ref()],
        ));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("io_uring_setup failed"), "{err}");
        assert!(err.contains("seccomp"), "the fix is named: {err}");
        assert!(
            err.contains("server.runtime"),
            "the epoll way out is named: {err}"
        );
    }
}

#[test]
fn epoll_asked_for_runs_on_epoll_without_a_warning() {
    let mut cmd = orchd();
    cmd.args(["--runtime", "epoll"]);
    let started = start_logged(cmd);
    let _child = KillOnDrop(started.child);
    assert_eq!(started.ready["runtime"], "epoll");
    assert!(
        !started
            .before
            .iter()
            .any(|l| l["level"] == "WARN" && l.get("cause").is_some()),
        "{:#?}",
        started.before
    );
}

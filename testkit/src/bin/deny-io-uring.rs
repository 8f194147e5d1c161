//! `deny-io-uring EPERM|ENOSYS PROGRAM [ARGS...]`: runs PROGRAM under a seccomp filter
//! that denies io_uring as Docker's default profile does (`EPERM`) or as a host without
//! io_uring does (`ENOSYS`). For `deploy/container/steps.sh` and for trying orchd as a
//! container user would, without a container engine.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(errno) = args
        .first()
        .and_then(|a| orchd_testkit::seccomp::errno_named(a))
    else {
        eprintln!("usage: deny-io-uring EPERM|ENOSYS PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let Some(program) = args.get(1) else {
        eprintln!("usage: deny-io-uring EPERM|ENOSYS PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    if let Err(e) = orchd_testkit::seccomp::deny_io_uring(errno) {
        eprintln!("deny-io-uring: cannot install the seccomp filter: {e}");
        return ExitCode::FAILURE;
    }
    let e = Command::new(program).args(&args[2..]).exec();
    eprintln!("deny-io-uring: cannot run {program}: {e}");
    ExitCode::FAILURE
}

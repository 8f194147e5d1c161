//! A real seccomp filter that denies io_uring the way container runtimes do: Docker's
//! (since 25.0) and containerd's (since 2.0) default profiles and Kubernetes'
//! `RuntimeDefault` answer `io_uring_setup`, `io_uring_enter` and `io_uring_register`
//! with `EPERM`; a kernel or sandbox without io_uring answers `ENOSYS`. Installed with
//! `prctl(PR_SET_SECCOMP)` in the process that then runs orchd: no container engine.

use std::io;

/// `io_uring_setup`, `io_uring_enter`, `io_uring_register`: the same numbers on every
/// architecture (the unified syscall table).
pub const IO_URING_CALLS: [u32; 3] = [425, 426, 427];
/// `io_uring_register` alone: a profile that lets a ring be set up but not probed.
pub const IO_URING_REGISTER: [u32; 3] = [427, 427, 427];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
                                     // Elsewhere the filter matches no call (the seccomp tests then fail, saying so).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: u32 = 0;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_MODE_FILTER: libc::c_ulong = 2;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Installs, in the calling process (and so in what it executes next), a filter under
/// which the three io_uring calls fail with `errno` and every other call is allowed.
/// Async-signal-safe (two `prctl`s, no allocation): fit for `Command::pre_exec`.
pub fn deny_io_uring(errno: i32) -> io::Result<()> {
    deny_calls(errno, IO_URING_CALLS)
}

/// As [`deny_io_uring`], for the three system calls `calls` (repeat one to deny fewer).
pub fn deny_calls(errno: i32, calls: [u32; 3]) -> io::Result<()> {
    let deny = SECCOMP_RET_ERRNO | (errno as u32 & 0xffff);
    let [setup, enter, register] = calls;
    let mut prog = [
        op(BPF_LD_W_ABS, 0, 0, ARCH),
        op(BPF_JEQ_K, 0, 4, AUDIT_ARCH), // another ABI: allow
        op(BPF_LD_W_ABS, 0, 0, NR),
        op(BPF_JEQ_K, 3, 0, setup),
        op(BPF_JEQ_K, 2, 0, enter),
        op(BPF_JEQ_K, 1, 0, register),
        op(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        op(BPF_RET_K, 0, 0, deny),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl reads `fprog` and the program it points to, both alive here. No new
    // privileges is required to install a filter without CAP_SYS_ADMIN.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The errno a filter answers with, by name: `EPERM` (container profiles) or `ENOSYS`.
pub fn errno_named(name: &str) -> Option<i32> {
    match name {
        "EPERM" => Some(libc::EPERM),
        "ENOSYS" => Some(libc::ENOSYS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_setup_fails_with_the_chosen_errno_under_the_filter() {
        for (name, errno) in [("EPERM", libc::EPERM), ("ENOSYS", libc::ENOSYS)] {
            // A child process, so the filter stays out of the test runner.
            // SAFETY: fork in a test; the child only makes syscalls and exits.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                let code = match deny_io_uring(errno) {
                    Err(_) => 2,
                    Ok(()) => {
                        let mut params = [0u8; 120];
                        // SAFETY: the kernel writes at most 120 bytes into `params`.
                        let r = unsafe {
                            libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr())
                        };
                        let e = io::Error::last_os_error().raw_os_error();
                        if r < 0 && e == Some(errno) {
                            0
                        } else {
                            3
                        }
                    }
                };
                // SAFETY: leave the forked child without running the parent's atexit.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(libc::WIFEXITED(status), "{name}");
            assert_eq!(
                libc::WEXITSTATUS(status),
                0,
                "{name}: io_uring_setup was not denied"
            );
        }
    }
}

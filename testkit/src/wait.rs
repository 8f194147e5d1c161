//! Waiting for something that happens in its own time (a pool becoming ready, a file
//! being written, a process exiting): poll until it holds or a deadline passes, and
//! then fail naming what was awaited and what the last look saw.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a condition is looked at.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// What a look returns: `true`, `Some(v)` or `Ok(v)` when the wait is over, else what
/// was seen (`Err(e)` says it, for the failure message).
pub trait Ready {
    type Value;
    fn ready(self) -> Result<Self::Value, String>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("not yet".into())
        }
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".into())
    }
}

impl<T, E: Display> Ready for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

fn gave_up(deadline: Duration, what: &str, seen: &str) -> String {
    format!("gave up after {deadline:?} waiting for {what}; last look: {seen}")
}

/// Looks with `f` every [`POLL_EVERY`] until it is ready, or fails with a message
/// naming `what` once `deadline` (from now) has passed. The last look is taken at or
/// after the deadline.
pub fn try_wait_until<R: Ready>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> R,
) -> Result<R::Value, String> {
    let start = Instant::now();
    loop {
        match f().ready() {
            Ok(v) => return Ok(v),
            Err(seen) if start.elapsed() >= deadline => return Err(gave_up(deadline, what, &seen)),
            Err(_) => std::thread::sleep(POLL_EVERY),
        }
    }
}

/// [`try_wait_until`], panicking with its message.
pub fn wait_until<R: Ready>(deadline: Duration, what: &str, f: impl FnMut() -> R) -> R::Value {
    try_wait_until(deadline, what, f).unwrap_or_else(|e| panic!("{e}"))
}

/// [`wait_until`] for tests on tokio: `f` returns the future of one look.
#[cfg(feature = "async")]
pub async fn wait_until_async<R, Fut>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> R::Value
where
    R: Ready,
    Fut: std::future::Future<Output = R>,
{
    let start = Instant::now();
    loop {
        match f().await.ready() {
            Ok(v) => return v,
            Err(seen) if start.elapsed() >= deadline => {
                panic!("{}", gave_up(deadline, what, &seen))
            }
            Err(_) => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_became_ready_and_names_what_never_did() {
        let mut n = 0;
        let v = wait_until(Duration::from_secs(5), "the third look", || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, 3);
        let t = Instant::now();
        let err = try_wait_until(Duration::from_millis(100), "a pool to drain", || {
            Err::<(), _>("state draining")
        })
        .unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            err,
            "gave up after 100ms waiting for a pool to drain; last look: state draining"
        );
    }
}

//! Operational endpoints, exempt from auth: `/livez`, `/readyz`, `/metrics`.

use std::time::Duration;

use futures_lite::future;
use http::{Response, StatusCode};

use orchd_engine::{ApiError, ErrorClass, ErrorKind};
use orchd_shards::rt;

use crate::app::ShardApp;
use crate::body::Body;
use crate::respond;

/// How long `/readyz` waits for the dispatcher.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) fn livez() -> Response<Body> {
    respond::json(StatusCode::OK, r#"{"live":true}"#)
}

/// Ready when this shard is not shutting down and the dispatcher answers.
pub(crate) async fn readyz(app: &ShardApp) -> Result<Response<Body>, ApiError> {
    if app.shard.stopping() {
        return Err(unready("shutting down"));
    }
    let dispatcher = app.shard.dispatcher();
    let ping = dispatcher.ping();
    let answered = future::or(async { ping.await.is_ok() }, async {
        rt::sleep(READY_TIMEOUT).await;
        false
    })
    .await;
    if answered {
        Ok(respond::json(StatusCode::OK, r#"{"ready":true}"#))
    } else {
        Err(unready("the dispatcher does not answer"))
    }
}

fn unready(why: &'static str) -> ApiError {
    ApiError::new(ErrorClass::Unavailable, ErrorKind::Internal, why).retriable(true)
}

//! `GET /v1/capabilities` (SPEC section 3): what the pools offer now, per engine. The
//! dispatcher renders it from its live view, so drains and reloads show at once.

use http::{Response, StatusCode};

use orchd_engine::ApiError;
use orchd_shards::{unavailable, DispatcherCommand};

use crate::app::ShardApp;
use crate::body::Body;
use crate::respond;

pub(crate) async fn get(app: &ShardApp) -> Result<Response<Body>, ApiError> {
    let doc = app
        .shard
        .dispatcher()
        .request(|reply| DispatcherCommand::Capabilities { reply })
        .await
        .map_err(unavailable)?;
    Ok(respond::json(StatusCode::OK, doc))
}

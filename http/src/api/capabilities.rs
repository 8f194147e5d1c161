//! `GET /v1/capabilities` (SPEC section 3): what the pools offer now, per engine. The
//! dispatcher renders it from its live view, so drains and reloads show at once.

use http::{Response, StatusCode};

use orchd_engine::ApiError;

use crate::app::ShardApp;
use crate::body::Body;
use crate::respond;

pub(crate) async fn get(app: &ShardApp) -> Result<Response<Body>, ApiError> {
    let doc = app.shard.dispatcher().capabilities().await?;
    Ok(respond::json(StatusCode::OK, doc))
}

//! `GET /v1/artifacts/{id}` (SPEC section 3): stored artifacts, transcripts included.

use http::{Response, StatusCode};

use orchd_engine::ApiError;
use orchd_shards::ShardCommand;

use crate::app::ShardApp;
use crate::body::Body;
use crate::respond;

pub(crate) async fn get(app: &ShardApp, id: &str) -> Result<Response<Body>, ApiError> {
    let valid = id.len() == 71
        && id.starts_with("sha256:")
        && id[7..].bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(ApiError::invalid(format!(
            "artifact id: {id:?} is not sha256:<64 hex digits>"
        )));
    }
    let found = app
        .shard
        .map_reduce(
            |reply| ShardCommand::Artifact {
                id: id.to_string(),
                reply,
            },
            None,
            |acc, r| acc.or(r),
        )
        .await
        .map_err(crate::api::tasks::overloaded)?;
    match found {
        Some(json) => Ok(respond::json(StatusCode::OK, json)),
        None => Err(ApiError::not_found(format!("artifact {id} is not stored"))),
    }
}

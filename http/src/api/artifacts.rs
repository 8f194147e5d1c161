//! `POST /v1/artifacts`, `GET /v1/artifacts/{id}` (SPEC section 3). Each artifact is
//! kept by one shard, chosen from its id, so a read is one message to that shard; on
//! it, each tenant has its own shelf (an artifact is visible to the tenants that
//! stored it: a transcript to its task's tenant).

use bytes::Bytes;
use http::{Response, StatusCode};

use orchd_engine::artifact::{valid_id, NewArtifact, StoreError};
use orchd_engine::{ApiError, ErrorClass, ErrorKind};

use crate::app::ShardApp;
use crate::auth::Caller;
use crate::body::Body;
use crate::respond;

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Full { .. } => ApiError::new(
            ErrorClass::InsufficientStorage,
            ErrorKind::Internal,
            e.to_string(),
        ),
        StoreError::Corrupt { .. } => ApiError::new(
            ErrorClass::Internal,
            ErrorKind::UntrustedArtifact,
            e.to_string(),
        ),
        StoreError::Io(_) => {
            tracing::error!(error = %e, "artifact store failed");
            ApiError::internal(e.to_string())
        }
    }
}

pub(crate) async fn create(
    app: &ShardApp,
    who: &Caller,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let stored = NewArtifact::parse(&body)?.into_stored();
    let doc = app
        .shard
        .put_artifact(who.id, stored)
        .await?
        .map_err(store_error)?;
    // Answer with the stored document's own fields (the first store's, for content
    // this tenant stored before).
    let v: serde_json::Value =
        serde_json::from_slice(&doc).map_err(|e| ApiError::internal(e.to_string()))?;
    let answer = serde_json::json!({
        "id": v["id"], "kind": v["kind"], "digest": v["digest"], "created_ms": v["created_ms"], "tags": v["tags"],
    });
    Ok(respond::json(
        StatusCode::CREATED,
        serde_json::to_vec(&answer).expect("serializes"),
    ))
}

/// The caller's tenant's artifact (another tenant's, stored or not, is `404`).
pub(crate) async fn get(
    app: &ShardApp,
    who: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::invalid(format!(
            "artifact id: {id:?} is not sha256:<64 lowercase hex digits>"
        )));
    }
    let found = app.shard.artifact(who.id, id).await?.map_err(store_error)?;
    match found {
        Some(json) => Ok(respond::json(StatusCode::OK, json)),
        None => Err(ApiError::not_found(format!("artifact {id} is not stored"))),
    }
}

//! Synchronous calls to a node through the tunnel: `/api/edgenodes/{id}/health`, `/logs`,
//! `/runtime`. Answered from any replica; 409 NODE_OFFLINE when the node is not connected, 504
//! NODE_TIMEOUT when it does not answer in time.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{context::Require, roles::at_least::Viewer},
    error::{ApiError, ApiResult, ErrorBody},
    http::extract::{Json, Path, Query},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(logs)).routes(routes!(runtime))
}

/// Most log lines one call may ask for.
const MAX_TAIL: u32 = 1000;

/// Ask a node how it is
///
/// The node's own health report (status, uptime, agent version, flows running), asked live.
#[utoipa::path(get, path = "/api/edgenodes/{id}/health", tag = "edgenodes",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "Edge node id")),
    responses(
        (status = 200, description = "The node's answer", body = Object),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such edge node", body = ErrorBody),
        (status = 409, description = "NODE_OFFLINE: the node is not connected", body = ErrorBody),
        (status = 502, description = "NODE_ERROR: the node answered with an error", body = ErrorBody),
        (status = 504, description = "NODE_TIMEOUT: the node did not answer in time", body = ErrorBody),
    ))]
async fn health(State(state): State<AppState>, auth: Require<Viewer>, Path(id): Path<Uuid>) -> ApiResult<Json<Value>> {
    Ok(Json(state.hub.call(auth.organization_id, id, "health", json!({})).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogsParams {
    /// How many of the latest lines (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    tail: Option<u32>,
}

/// Read a node's latest log lines
#[utoipa::path(get, path = "/api/edgenodes/{id}/logs", tag = "edgenodes",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "Edge node id"), LogsParams),
    responses(
        (status = 200, description = "The node's answer: {lines: [...]}", body = Object),
        (status = 400, description = "Bad tail", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such edge node", body = ErrorBody),
        (status = 409, description = "NODE_OFFLINE: the node is not connected", body = ErrorBody),
        (status = 502, description = "NODE_ERROR: the node answered with an error", body = ErrorBody),
        (status = 504, description = "NODE_TIMEOUT: the node did not answer in time", body = ErrorBody),
    ))]
async fn logs(
    State(state): State<AppState>,
    auth: Require<Viewer>,
    Path(id): Path<Uuid>,
    Query(params): Query<LogsParams>,
) -> ApiResult<Json<Value>> {
    let tail = params.tail.unwrap_or(100);
    if !(1..=MAX_TAIL).contains(&tail) {
        return Err(ApiError::invalid_field("tail", format!("must be from 1 to {MAX_TAIL}")));
    }
    Ok(Json(state.hub.call(auth.organization_id, id, "logs", json!({"tail": tail})).await?))
}

/// Ask a node what it runs
///
/// The flows the node says it runs right now (as opposed to `flows` on the node, its last report).
#[utoipa::path(get, path = "/api/edgenodes/{id}/runtime", tag = "edgenodes",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "Edge node id")),
    responses(
        (status = 200, description = "The node's answer: {flows: [...]}", body = Object),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such edge node", body = ErrorBody),
        (status = 409, description = "NODE_OFFLINE: the node is not connected", body = ErrorBody),
        (status = 502, description = "NODE_ERROR: the node answered with an error", body = ErrorBody),
        (status = 504, description = "NODE_TIMEOUT: the node did not answer in time", body = ErrorBody),
    ))]
async fn runtime(State(state): State<AppState>, auth: Require<Viewer>, Path(id): Path<Uuid>) -> ApiResult<Json<Value>> {
    Ok(Json(state.hub.call(auth.organization_id, id, "runtime", json!({})).await?))
}

//! The device shadow: `desired` (set here, merge-patched, versioned) and `reported` (from the
//! node). `delta` is what the node has not yet reported as it is desired.

use axum::{
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{
        context::Require,
        roles::at_least::{Operator, Viewer},
    },
    error::{ApiError, ApiResult, ErrorBody},
    events::store::NewEvent,
    http::{
        extract::{Json, Path},
        merge_patch::merge,
        schema::JsonDocument,
        time::Timestamp,
    },
    state::AppState,
    tunnel::bus::{self, BusMessage},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_shadow, patch_shadow))
}

/// Largest desired document, serialized.
const MAX_DESIRED_BYTES: usize = 64 * 1024;

/// A node's shadow.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowView {
    #[schema(value_type = Object)]
    pub desired: Value,
    #[schema(value_type = Object)]
    pub reported: Value,
    /// The parts of `desired` that `reported` does not (yet) match.
    #[schema(value_type = Object)]
    pub delta: Value,
    /// Bumped by every change of `desired`; also the ETag.
    pub version: i64,
    pub reported_at: Option<Timestamp>,
}

#[derive(sqlx::FromRow)]
struct ShadowRow {
    name: String,
    shadow_desired: Value,
    shadow_version: i64,
    shadow_reported: Value,
    shadow_reported_at: Option<DateTime<Utc>>,
}

/// What in `desired` differs from `reported`: objects compared key by key, anything else whole.
pub fn delta(desired: &Value, reported: &Value) -> Value {
    match (desired, reported) {
        (Value::Object(want), Value::Object(have)) => {
            let mut out = Map::new();
            for (key, value) in want {
                match have.get(key) {
                    Some(current) if current == value => {}
                    Some(current) if value.is_object() && current.is_object() => {
                        let inner = delta(value, current);
                        if inner.as_object().is_some_and(|o| !o.is_empty()) {
                            out.insert(key.clone(), inner);
                        }
                    }
                    _ => {
                        out.insert(key.clone(), value.clone());
                    }
                }
            }
            Value::Object(out)
        }
        _ if desired == reported => Value::Object(Map::new()),
        _ => desired.clone(),
    }
}

fn etag(version: i64) -> String {
    crate::http::etag::revision(version)
}

fn view(row: ShadowRow) -> Response {
    let shadow = ShadowView {
        delta: delta(&row.shadow_desired, &row.shadow_reported),
        desired: row.shadow_desired,
        reported: row.shadow_reported,
        version: row.shadow_version,
        reported_at: row.shadow_reported_at.map(Into::into),
    };
    let mut response = Json(shadow).into_response();
    response.headers_mut().insert(header::ETAG, crate::http::etag::header_value(&etag(row.shadow_version)));
    response
}

const SHADOW_COLUMNS: &str = "name, shadow_desired, shadow_version, shadow_reported, shadow_reported_at";

/// A node's shadow
///
/// `desired`, `reported`, `delta` and `version` (also the `ETag`).
#[utoipa::path(get, path = "/api/edgenodes/{id}/shadow", tag = "edgenodes",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "Edge node id")),
    responses(
        (status = 200, description = "The shadow", body = ShadowView, headers(("ETag" = String, description = "The version"))),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such edge node", body = ErrorBody),
    ))]
async fn get_shadow(State(state): State<AppState>, auth: Require<Viewer>, Path(id): Path<Uuid>) -> ApiResult<Response> {
    let row: ShadowRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SHADOW_COLUMNS} FROM edge_nodes WHERE id = $1 AND organization_id = $2"
    )))
    .bind(id)
    .bind(auth.organization_id)
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound("edge node"))?;
    Ok(view(row))
}

/// Change a node's desired state
///
/// JSON Merge Patch of `desired` (a `null` removes a key). Send `If-Match` with the ETag you
/// read to refuse (412) a change made meanwhile by someone else. The node gets the new desired
/// state at once if connected, else when it connects.
#[utoipa::path(patch, path = "/api/edgenodes/{id}/shadow", tag = "edgenodes",
    extensions(("x-required-role" = json!("Operator"))),
    params(("id" = Uuid, Path, description = "Edge node id"), ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    request_body(content = JsonDocument, content_type = "application/merge-patch+json", description = "Merge patch of desired"),
    responses(
        (status = 200, description = "The shadow after the change", body = ShadowView),
        (status = 400, description = "Not a JSON object, or too large", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Operator role", body = ErrorBody),
        (status = 404, description = "No such edge node", body = ErrorBody),
        (status = 412, description = "The shadow changed since the ETag in If-Match", body = ErrorBody),
    ))]
async fn patch_shadow(
    State(state): State<AppState>,
    auth: Require<Operator>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(patch): Json<Value>,
) -> ApiResult<Response> {
    if !patch.is_object() {
        return Err(ApiError::BadRequest("the body must be a JSON object (a merge patch of desired)".into()));
    }
    // PostgreSQL cannot store it; refused before the ETag is looked at, as any invalid change.
    if crate::http::validate::json_has_nul(&patch) {
        return Err(ApiError::BadRequest("the body must not contain NUL characters (\\u0000)".into()));
    }
    let mut tx = state.db.begin().await?;
    let current: ShadowRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SHADOW_COLUMNS} FROM edge_nodes WHERE id = $1 AND organization_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(auth.organization_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("edge node"))?;
    let mut desired = current.shadow_desired;
    merge(&mut desired, &patch);
    if desired.to_string().len() > MAX_DESIRED_BYTES {
        return Err(ApiError::invalid_field("desired", format!("must be at most {MAX_DESIRED_BYTES} bytes")));
    }
    // After the request's own checks: an invalid change is a 400 whatever the ETag.
    crate::http::etag::check_if_match(&headers, &etag(current.shadow_version))?;
    let updated: ShadowRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE edge_nodes SET shadow_desired = $2, shadow_version = shadow_version + 1, updated_at = now() \
         WHERE id = $1 RETURNING {SHADOW_COLUMNS}"
    )))
    .bind(id)
    .bind(&desired)
    .fetch_one(&mut *tx)
    .await?;
    bus::publish(&mut tx, &BusMessage::Shadow { node_id: id }).await?;
    let mut event = NewEvent::audit(
        &auth,
        "node.shadow_update",
        format!("Node: {}", updated.name),
        format!("desired state changed (version {})", updated.shadow_version),
    )
    .with_data(patch);
    event.node_id = Some(id);
    event.record(&mut tx).await?;
    tx.commit().await?;
    Ok(view(updated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delta_lists_what_is_not_yet_reported() {
        let desired = json!({"rate": 5, "mode": "eco", "limits": {"max": 10, "min": 1}});
        let reported = json!({"rate": 5, "mode": "fast", "limits": {"max": 10}});
        assert_eq!(delta(&desired, &reported), json!({"mode": "eco", "limits": {"min": 1}}));
        assert_eq!(delta(&desired, &desired), json!({}));
    }
}

//! `GET /api/organizations/{organizationId}/usage`: what the active organization uses (resource
//! storage, edge nodes, flow definitions, resources, keys) against its limits.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{context::Require, roles::at_least},
    error::{ApiError, ApiResult, ErrorBody},
    http::extract::{Json, Path},
    resources::{references, store as resource_store},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_usage))
}

/// One metered quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageItem {
    pub used: i64,
    /// `null`: no limit.
    pub limit: Option<i64>,
}

impl UsageItem {
    fn unlimited(used: i64) -> Self {
        Self { used, limit: None }
    }
}

/// What the organization uses, against its limits.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub organization_id: Uuid,
    /// Bytes of resource content stored, reserved by open resumable uploads and by uploads in
    /// progress; the limit is the storage quota (uploads past it are refused with 413
    /// `QUOTA_EXCEEDED`).
    pub storage_bytes: UsageItem,
    pub resources: UsageItem,
    pub edge_nodes: UsageItem,
    pub flow_definitions: UsageItem,
    /// Live API keys (not revoked, not expired).
    pub api_keys: UsageItem,
    /// Live registration keys (not revoked, not expired).
    pub registration_keys: UsageItem,
}

async fn count(conn: &mut PgConnection, sql: &'static str, organization_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql).bind(organization_id).fetch_one(conn).await
}

/// The active organization's usage
///
/// Resource storage in bytes, edge nodes, flow definitions, resources and live keys, each with
/// its limit (`null` when there is none). Only the active organization; any other id is 404.
#[utoipa::path(get, path = "/api/organizations/{organizationId}/usage", tag = "organizations",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("organizationId" = Uuid, Path, description = "The active organization's id")),
    responses(
        (status = 200, description = "Usage against limits", body = Usage),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Not the active organization", body = ErrorBody),
    ))]
async fn get_usage(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path(organization_id): Path<Uuid>,
) -> ApiResult<Json<Usage>> {
    if organization_id != auth.organization_id {
        return Err(ApiError::NotFound("organization"));
    }
    let mut conn = state.db.acquire().await?;
    let quota = state.config.storage_quota_bytes;
    let storage = resource_store::storage_used(&mut conn, organization_id, None).await?;
    let resources =
        count(&mut conn, "SELECT count(*) FROM resources WHERE organization_id = $1", organization_id).await?;
    let nodes = count(&mut conn, "SELECT count(*) FROM edge_nodes WHERE organization_id = $1", organization_id).await?;
    let api_keys = count(
        &mut conn,
        "SELECT count(*) FROM api_keys WHERE organization_id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > now())",
        organization_id,
    )
    .await?;
    let registration_keys = count(
        &mut conn,
        "SELECT count(*) FROM registration_keys WHERE organization_id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > now())",
        organization_id,
    )
    .await?;
    let flow_definitions = references::count_flow_definitions(&mut conn, organization_id).await?;
    Ok(Json(Usage {
        organization_id,
        storage_bytes: UsageItem {
            used: storage,
            limit: (quota > 0).then(|| i64::try_from(quota).unwrap_or(i64::MAX)),
        },
        resources: UsageItem::unlimited(resources),
        edge_nodes: UsageItem::unlimited(nodes),
        flow_definitions: UsageItem::unlimited(flow_definitions),
        api_keys: UsageItem::unlimited(api_keys),
        registration_keys: UsageItem::unlimited(registration_keys),
    }))
}

//! What a node receives for a flow (protocol `DeployFlow`), built from a version or a draft, for
//! the deployments code.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    resource_refs::{self, Readiness, ResourceRef},
    store::{self, Lock},
};
use crate::{error::ApiError, tunnel::protocol::DeployFlow};

/// The version `flow_id` of the organization's definition `flow_definition_id` as a node receives
/// it: its content, and each resource it uses with size, sha256 and download URL (under
/// `public_url`). `None` when there is no such definition or version in the organization.
///
/// Locks the definition row `FOR SHARE` until the caller's transaction ends, so call it in the
/// transaction that records the deployment (`node_flows`): the definition cannot be deleted
/// meanwhile. The resource versions must all be Completed (409 `RESOURCE_NOT_COMPLETED`
/// otherwise; publishing already made sure of it).
pub async fn deploy_payload(
    conn: &mut PgConnection,
    organization_id: Uuid,
    flow_definition_id: Uuid,
    flow_id: Uuid,
    public_url: &str,
) -> Result<Option<DeployFlow>, ApiError> {
    let Some(definition) = store::lock_definition(conn, organization_id, flow_definition_id, Lock::Share).await? else {
        return Ok(None);
    };
    let Some(version) = store::find_version(conn, organization_id, flow_definition_id, flow_id).await? else {
        return Ok(None);
    };
    let refs = references(&version.content)?;
    let resources = resource_refs::require_ready(conn, organization_id, &refs, Readiness::Completed).await?;
    Ok(Some(DeployFlow {
        flow_definition_id,
        flow_id: version.id,
        version: i64::from(version.version),
        name: definition.name,
        content: version.content,
        resources: resources.iter().map(|r| r.deploy_resource(public_url)).collect(),
    }))
}

/// The draft `draft_id` of the organization's definition `flow_definition_id` as a node receives
/// it (for DevAndTest nodes): `version` is 0 and `flowId` is the draft's id. A snapshot of the
/// draft as it is now. Resource versions may be Drafts but must have their content uploaded
/// (409 `RESOURCE_NOT_READY` otherwise). `None` when there is no such definition or draft.
/// Locks the definition row `FOR SHARE`, as `deploy_payload` does.
pub async fn draft_payload(
    conn: &mut PgConnection,
    organization_id: Uuid,
    flow_definition_id: Uuid,
    draft_id: Uuid,
    public_url: &str,
) -> Result<Option<DeployFlow>, ApiError> {
    let Some(definition) = store::lock_definition(conn, organization_id, flow_definition_id, Lock::Share).await? else {
        return Ok(None);
    };
    let Some(draft) = store::find_draft(conn, organization_id, flow_definition_id, draft_id, false).await? else {
        return Ok(None);
    };
    let refs = references(&draft.content)?;
    let resources = resource_refs::require_ready(conn, organization_id, &refs, Readiness::Uploaded).await?;
    Ok(Some(DeployFlow {
        flow_definition_id,
        flow_id: draft.id,
        version: 0,
        name: definition.name,
        content: draft.content,
        resources: resources.iter().map(|r| r.deploy_resource(public_url)).collect(),
    }))
}

/// The resource references of stored content (validated when it was written; read leniently so
/// a later, stricter validation never makes an existing version undeployable).
fn references(stored: &serde_json::Value) -> Result<Vec<ResourceRef>, ApiError> {
    let Some(items) = stored.get("resources") else { return Ok(Vec::new()) };
    serde_json::from_value::<Vec<ResourceRef>>(items.clone())
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("stored flow content has malformed resources: {err}")))
}

//! Who uses a resource or a resource version: THE one place that answers it. Deleting a
//! resource or version checks here (409 naming the flows), node downloads are authorized here,
//! and the flows issue calls these too (e.g. before deleting, and to know what a flow version
//! needs).
//!
//! A flow version's use of resource versions is recorded in `flow_version_resources` (one row
//! per flow version and resource version, written by the flows issue when it publishes). The
//! foreign keys of that table back the checks up: a reference added concurrently with a delete
//! makes the delete fail, answered 409 by `on_reference_violation`.

use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// A flow version using a resource (version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct FlowReference {
    pub flow_definition_id: Uuid,
    pub flow_version_id: Uuid,
    pub flow_name: String,
    pub version: i32,
    pub resource_id: Uuid,
    pub resource_version_id: Uuid,
}

/// How many references an error message names before "and N more".
const NAMED_IN_MESSAGE: usize = 10;

/// The flow versions using any version of the resource.
pub async fn resource_users(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_id: Uuid,
) -> Result<Vec<FlowReference>, sqlx::Error> {
    sqlx::query_as(
        "SELECT flow_definition_id, flow_version_id, flow_name, version, resource_id, resource_version_id \
         FROM flow_version_resources WHERE organization_id = $1 AND resource_id = $2 \
         ORDER BY flow_name, version, resource_version_id",
    )
    .bind(organization_id)
    .bind(resource_id)
    .fetch_all(conn)
    .await
}

/// The flow versions using this resource version.
pub async fn version_users(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_version_id: Uuid,
) -> Result<Vec<FlowReference>, sqlx::Error> {
    sqlx::query_as(
        "SELECT flow_definition_id, flow_version_id, flow_name, version, resource_id, resource_version_id \
         FROM flow_version_resources WHERE organization_id = $1 AND resource_version_id = $2 \
         ORDER BY flow_name, version",
    )
    .bind(organization_id)
    .bind(resource_version_id)
    .fetch_all(conn)
    .await
}

/// "Temperature v3, Pressure v1 and 2 more".
fn describe(users: &[FlowReference]) -> String {
    let mut names: Vec<String> = users.iter().map(|u| format!("{} v{}", u.flow_name, u.version)).collect();
    names.dedup();
    let more = names.len().saturating_sub(NAMED_IN_MESSAGE);
    names.truncate(NAMED_IN_MESSAGE);
    let mut text = names.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// 409 `RESOURCE_IN_USE` naming the flows, unless no flow version uses the resource. Call it
/// with the resource row locked.
pub async fn ensure_resource_unused(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_id: Uuid,
) -> ApiResult<()> {
    let users = resource_users(conn, organization_id, resource_id).await?;
    if users.is_empty() {
        return Ok(());
    }
    Err(ApiError::conflict(
        "RESOURCE_IN_USE",
        format!("the resource is used by flow versions and cannot be deleted: {}", describe(&users)),
    ))
}

/// 409 `VERSION_IN_USE` naming the flows, unless no flow version uses the resource version.
/// Call it with the version row locked.
pub async fn ensure_version_unused(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_version_id: Uuid,
) -> ApiResult<()> {
    let users = version_users(conn, organization_id, resource_version_id).await?;
    if users.is_empty() {
        return Ok(());
    }
    Err(ApiError::conflict(
        "VERSION_IN_USE",
        format!("the resource version is used by flow versions and cannot be deleted: {}", describe(&users)),
    ))
}

/// Maps the foreign-key violation of a delete racing a new reference to the same 409.
pub fn on_reference_violation(err: sqlx::Error) -> ApiError {
    match &err {
        sqlx::Error::Database(db)
            if db.constraint().is_some_and(|c| c.starts_with("flow_version_resources_resource")) =>
        {
            ApiError::conflict("RESOURCE_IN_USE", "the resource is used by a flow version and cannot be deleted")
        }
        _ => err.into(),
    }
}

/// Whether the node may download the resource version: a deploy job of that node, not
/// canceled or expired, names it among its flow's resources (deployed, or being deployed).
pub async fn node_may_download(
    conn: &mut PgConnection,
    organization_id: Uuid,
    node_id: Uuid,
    resource_id: Uuid,
    resource_version_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM node_jobs j \
             WHERE j.node_id = $1 AND j.organization_id = $2 AND j.command = 'deploy' \
             AND j.state NOT IN ('Canceled', 'Expired') \
             AND j.flow -> 'resources' @> jsonb_build_array(jsonb_build_object('resourceId', $3::text, 'versionId', $4::text)))",
    )
    .bind(node_id)
    .bind(organization_id)
    .bind(resource_id.to_string())
    .bind(resource_version_id.to_string())
    .fetch_one(conn)
    .await
}

/// The organization's flow definitions, for usage reports.
///
/// PLACEHOLDER until the flows issue lands: the `flow_definitions` table does not exist yet, and
/// this answers 0 while it is absent. Once it exists (with an `organization_id` column), the
/// count is real; the flows issue should then replace this with a plain `count(*)`.
pub async fn count_flow_definitions(conn: &mut PgConnection, organization_id: Uuid) -> Result<i64, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('flow_definitions') IS NOT NULL").fetch_one(&mut *conn).await?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT count(*) FROM flow_definitions WHERE organization_id = $1")
        .bind(organization_id)
        .fetch_one(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, version: i32) -> FlowReference {
        FlowReference {
            flow_definition_id: Uuid::nil(),
            flow_version_id: Uuid::nil(),
            flow_name: name.into(),
            version,
            resource_id: Uuid::nil(),
            resource_version_id: Uuid::nil(),
        }
    }

    #[test]
    fn messages_name_the_flows_and_count_the_rest() {
        assert_eq!(describe(&[reference("Temperature", 3), reference("Pressure", 1)]), "Temperature v3, Pressure v1");
        let many: Vec<_> = (1..=12).map(|v| reference("F", v)).collect();
        assert!(describe(&many).ends_with("F v10 and 2 more"), "{}", describe(&many));
    }
}

//! Flow definitions, drafts and versions in SQL. Every query is scoped by organization id.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

pub use super::payload::{deploy_payload, draft_payload};
use super::resource_refs::ResourceRef;
use crate::{
    error::{ApiError, ApiResult, on_constraint},
    http::list::{Direction, ListQuery, ListSpec, Property, PropertyType},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DefinitionRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub latest_version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DraftSummaryRow {
    pub id: Uuid,
    pub flow_definition_id: Uuid,
    pub name: String,
    pub revision: i64,
    pub content_hash: String,
    pub based_on_flow_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DraftRow {
    pub id: Uuid,
    pub flow_definition_id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub content: Value,
    pub content_hash: String,
    pub revision: i64,
    pub based_on_flow_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionSummaryRow {
    pub id: Uuid,
    pub flow_definition_id: Uuid,
    pub name: String,
    pub version: i32,
    pub description: Option<String>,
    pub content_hash: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub id: Uuid,
    pub flow_definition_id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub version: i32,
    pub description: Option<String>,
    pub content: Value,
    pub content_hash: String,
    pub published_from_draft_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

const DEFINITION_COLUMNS: &str =
    "d.id, d.organization_id, d.name, d.description, d.latest_version, d.created_at, d.updated_at";
const DRAFT_SUMMARY_COLUMNS: &str =
    "f.id, f.flow_definition_id, f.name, f.revision, f.content_hash, f.based_on_flow_id, f.created_at, f.updated_at";
const DRAFT_COLUMNS: &str = "f.id, f.flow_definition_id, f.organization_id, f.name, f.content, f.content_hash, \
                             f.revision, f.based_on_flow_id, f.created_at, f.updated_at";
const VERSION_SUMMARY_COLUMNS: &str =
    "v.id, v.flow_definition_id, v.name, v.version, v.description, v.content_hash, v.created_at";
const VERSION_COLUMNS: &str = "v.id, v.flow_definition_id, v.organization_id, v.name, v.version, v.description, \
                               v.content, v.content_hash, v.published_from_draft_id, v.created_at";

/// What `GET /api/flowdefinitions` may filter and sort on.
pub static LIST_SPEC: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "d.id", PropertyType::Uuid),
        Property::new("name", "d.name", PropertyType::Text),
        Property::new("description", "d.description", PropertyType::Text),
        Property::new("latestVersion", "NULLIF(d.latest_version, 0)", PropertyType::Integer),
        Property::new("createdAt", "d.created_at", PropertyType::Time),
        Property::new("updatedAt", "d.updated_at", PropertyType::Time),
    ],
    default_order: "name",
    default_direction: Direction::Asc,
    tie_breaker: "d.id",
};

/// What `GET /api/flowdefinitions/{id}/flows` may filter and sort on.
pub static VERSION_LIST_SPEC: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "v.id", PropertyType::Uuid),
        Property::new("name", "v.name", PropertyType::Text),
        Property::new("version", "v.version", PropertyType::Integer),
        Property::new("description", "v.description", PropertyType::Text),
        Property::new("contentHash", "v.content_hash", PropertyType::Text),
        Property::new("createdAt", "v.created_at", PropertyType::Time),
    ],
    default_order: "version",
    default_direction: Direction::Desc,
    tie_breaker: "v.id",
};

fn duplicate_name() -> ApiError {
    ApiError::conflict("DUPLICATE_NAME", "a flow definition with this name already exists in the organization")
}

// ---- definitions ----

pub async fn insert_definition(
    conn: &mut PgConnection,
    organization_id: Uuid,
    name: &str,
    description: Option<&str>,
    created_by: Option<Uuid>,
) -> ApiResult<DefinitionRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO flow_definitions AS d (id, organization_id, name, description, created_by) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {DEFINITION_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(organization_id)
    .bind(name)
    .bind(description)
    .bind(created_by)
    .fetch_one(conn)
    .await
    .map_err(on_constraint("flow_definitions_org_name_key", duplicate_name))
}

/// One page of the organization's definitions, and their number when asked.
pub async fn list_definitions(
    conn: &mut PgConnection,
    organization_id: Uuid,
    query: &ListQuery,
) -> ApiResult<(Vec<DefinitionRow>, Option<i64>)> {
    query
        .fetch(conn, DEFINITION_COLUMNS, |q| {
            q.push(" FROM flow_definitions d WHERE d.organization_id = ").push_bind(organization_id);
        })
        .await
}

/// The organization's definition with this id.
pub async fn find_definition(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<DefinitionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DEFINITION_COLUMNS} FROM flow_definitions d WHERE d.id = $1 AND d.organization_id = $2"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// How a definition row is locked for the rest of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Changes to it (publish, rename, delete): one at a time.
    Update,
    /// Reading it while it must not be deleted or get a new version (e.g. while deploying it).
    Share,
}

/// The organization's definition with this id, locked until the transaction ends.
pub async fn lock_definition(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    lock: Lock,
) -> Result<Option<DefinitionRow>, sqlx::Error> {
    let mode = match lock {
        Lock::Update => "FOR UPDATE",
        Lock::Share => "FOR SHARE",
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DEFINITION_COLUMNS} FROM flow_definitions d WHERE d.id = $1 AND d.organization_id = $2 {mode}"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// The drafts of these definitions, oldest first.
pub async fn draft_summaries(
    conn: &mut PgConnection,
    organization_id: Uuid,
    definition_ids: &[Uuid],
) -> Result<Vec<DraftSummaryRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DRAFT_SUMMARY_COLUMNS} FROM flow_drafts f \
         WHERE f.flow_definition_id = ANY($1) AND f.organization_id = $2 ORDER BY f.created_at, f.id"
    )))
    .bind(definition_ids)
    .bind(organization_id)
    .fetch_all(conn)
    .await
}

/// The versions of these definitions, newest first.
pub async fn version_summaries(
    conn: &mut PgConnection,
    organization_id: Uuid,
    definition_ids: &[Uuid],
) -> Result<Vec<VersionSummaryRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_SUMMARY_COLUMNS} FROM flow_versions v \
         WHERE v.flow_definition_id = ANY($1) AND v.organization_id = $2 ORDER BY v.version DESC"
    )))
    .bind(definition_ids)
    .bind(organization_id)
    .fetch_all(conn)
    .await
}

/// Renames and/or re-describes a definition (`None` leaves a field; `Some(None)` clears the
/// description). The name is also kept current in `flow_version_resources`, where the resources
/// name the flows that use them.
pub async fn update_definition(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    name: Option<&str>,
    description: Option<Option<&str>>,
) -> ApiResult<Option<DefinitionRow>> {
    let row: Option<DefinitionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE flow_definitions AS d SET name = COALESCE($3, d.name), \
             description = CASE WHEN $4 THEN $5 ELSE d.description END, updated_at = now() \
         WHERE d.id = $1 AND d.organization_id = $2 RETURNING {DEFINITION_COLUMNS}"
    )))
    .bind(id)
    .bind(organization_id)
    .bind(name)
    .bind(description.is_some())
    .bind(description.flatten())
    .fetch_optional(&mut *conn)
    .await
    .map_err(on_constraint("flow_definitions_org_name_key", duplicate_name))?;
    if let (Some(row), Some(_)) = (&row, name) {
        sqlx::query(
            "UPDATE flow_version_resources SET flow_name = $3 \
             WHERE flow_definition_id = $1 AND organization_id = $2 AND flow_name <> $3",
        )
        .bind(id)
        .bind(organization_id)
        .bind(&row.name)
        .execute(conn)
        .await?;
    }
    Ok(row)
}

/// The nodes meant to run a version or draft of the definition (`node_flows`): up to `limit`
/// names, alphabetically, and how many there are in all.
pub async fn nodes_running(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    limit: i64,
) -> Result<(Vec<String>, i64), sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT n.name FROM node_flows nf JOIN edge_nodes n ON n.id = nf.node_id \
         WHERE nf.flow_definition_id = $1 AND nf.organization_id = $2 ORDER BY n.name LIMIT $3",
    )
    .bind(id)
    .bind(organization_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM node_flows WHERE flow_definition_id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .fetch_one(conn)
            .await?;
    Ok((names, count))
}

/// Deletes the definition with its drafts and versions (and, by cascade, their
/// `flow_version_resources` rows). Lock it first and check `nodes_running`.
pub async fn delete_definition(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM flow_definitions WHERE id = $1 AND organization_id = $2")
        .bind(id)
        .bind(organization_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---- drafts ----

/// A draft to insert.
#[derive(Debug)]
pub struct NewDraft<'a> {
    pub organization_id: Uuid,
    pub flow_definition_id: Uuid,
    pub name: &'a str,
    pub content: &'a Value,
    pub content_hash: &'a str,
    pub based_on_flow_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
}

pub async fn insert_draft(conn: &mut PgConnection, draft: &NewDraft<'_>) -> Result<DraftRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO flow_drafts AS f (id, organization_id, flow_definition_id, name, content, content_hash, \
             based_on_flow_id, created_by, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {DRAFT_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(draft.organization_id)
    .bind(draft.flow_definition_id)
    .bind(draft.name)
    .bind(draft.content)
    .bind(draft.content_hash)
    .bind(draft.based_on_flow_id)
    .bind(draft.created_by)
    .fetch_one(conn)
    .await
}

/// The organization's draft `draft_id` of definition `definition_id`; with `for_update`, locked
/// until the transaction ends.
pub async fn find_draft(
    conn: &mut PgConnection,
    organization_id: Uuid,
    definition_id: Uuid,
    draft_id: Uuid,
    for_update: bool,
) -> Result<Option<DraftRow>, sqlx::Error> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DRAFT_COLUMNS} FROM flow_drafts f \
         WHERE f.id = $1 AND f.flow_definition_id = $2 AND f.organization_id = $3{lock}"
    )))
    .bind(draft_id)
    .bind(definition_id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Replaces a draft's name and content and bumps its revision.
pub async fn update_draft(
    conn: &mut PgConnection,
    organization_id: Uuid,
    draft_id: Uuid,
    name: &str,
    content: &Value,
    content_hash: &str,
    updated_by: Option<Uuid>,
) -> Result<DraftRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE flow_drafts AS f SET name = $3, content = $4, content_hash = $5, updated_by = $6, \
             revision = f.revision + 1, updated_at = now() \
         WHERE f.id = $1 AND f.organization_id = $2 RETURNING {DRAFT_COLUMNS}"
    )))
    .bind(draft_id)
    .bind(organization_id)
    .bind(name)
    .bind(content)
    .bind(content_hash)
    .bind(updated_by)
    .fetch_one(conn)
    .await
}

pub async fn delete_draft(conn: &mut PgConnection, organization_id: Uuid, draft_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM flow_drafts WHERE id = $1 AND organization_id = $2")
        .bind(draft_id)
        .bind(organization_id)
        .execute(conn)
        .await?;
    Ok(())
}

// ---- versions ----

/// One page of a definition's versions, and their number when asked.
pub async fn list_versions(
    conn: &mut PgConnection,
    organization_id: Uuid,
    definition_id: Uuid,
    query: &ListQuery,
) -> ApiResult<(Vec<VersionSummaryRow>, Option<i64>)> {
    query
        .fetch(conn, VERSION_SUMMARY_COLUMNS, |q| {
            q.push(" FROM flow_versions v WHERE v.organization_id = ").push_bind(organization_id);
            q.push(" AND v.flow_definition_id = ").push_bind(definition_id);
        })
        .await
}

/// The organization's version `flow_id` of definition `definition_id`.
pub async fn find_version(
    conn: &mut PgConnection,
    organization_id: Uuid,
    definition_id: Uuid,
    flow_id: Uuid,
) -> Result<Option<VersionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM flow_versions v \
         WHERE v.id = $1 AND v.flow_definition_id = $2 AND v.organization_id = $3"
    )))
    .bind(flow_id)
    .bind(definition_id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// A version to insert (its number comes from the locked definition row).
#[derive(Debug)]
pub struct NewVersion<'a> {
    pub definition: &'a DefinitionRow,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub content: &'a Value,
    pub content_hash: &'a str,
    pub resources: &'a [ResourceRef],
    pub published_from_draft_id: Uuid,
    pub created_by: Option<Uuid>,
}

/// Inserts version `latest_version + 1` of the definition, records the resource versions it
/// uses in `flow_version_resources`, and moves `latest_version` on. The definition row must be
/// locked (`Lock::Update`) by the caller's transaction, so concurrent publishes queue up and
/// get distinct numbers.
pub async fn insert_version(conn: &mut PgConnection, new: &NewVersion<'_>) -> ApiResult<VersionRow> {
    let definition = new.definition;
    let number = definition.latest_version + 1;
    let row: VersionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO flow_versions AS v (id, organization_id, flow_definition_id, version, name, description, \
             content, content_hash, published_from_draft_id, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {VERSION_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(definition.organization_id)
    .bind(definition.id)
    .bind(number)
    .bind(new.name)
    .bind(new.description)
    .bind(new.content)
    .bind(new.content_hash)
    .bind(new.published_from_draft_id)
    .bind(new.created_by)
    .fetch_one(&mut *conn)
    .await
    .map_err(on_constraint("flow_versions_definition_version_key", || {
        ApiError::conflict("CONCURRENT_PUBLISH", "another version was published at the same time; retry")
    }))?;
    if !new.resources.is_empty() {
        let resource_ids: Vec<Uuid> = new.resources.iter().map(|r| r.resource_id).collect();
        let version_ids: Vec<Uuid> = new.resources.iter().map(|r| r.version_id).collect();
        sqlx::query(
            "INSERT INTO flow_version_resources (flow_version_id, flow_definition_id, flow_name, version, \
                 organization_id, resource_id, resource_version_id) \
             SELECT $1, $2, $3, $4, $5, r.resource_id, r.version_id \
             FROM unnest($6::uuid[], $7::uuid[]) AS r (resource_id, version_id)",
        )
        .bind(row.id)
        .bind(definition.id)
        .bind(&definition.name)
        .bind(number)
        .bind(definition.organization_id)
        .bind(&resource_ids)
        .bind(&version_ids)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE flow_definitions SET latest_version = $2, updated_at = now() WHERE id = $1")
        .bind(definition.id)
        .bind(number)
        .execute(conn)
        .await?;
    Ok(row)
}

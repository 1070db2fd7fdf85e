//! Resources and their versions in SQL. Every query is scoped by organization id.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    blobs::Written,
    model::{Resource, ResourceType, ResourceVersion, VersionState},
    references,
};
use crate::{
    error::{ApiError, ApiResult, on_constraint},
    http::list::{Direction, ListQuery, ListSpec, Property, PropertyType},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResourceRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub resource_type: ResourceType,
    pub category: String,
    pub path: Option<String>,
    pub description: Option<String>,
    pub version_count: i64,
    pub latest_completed_version: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const RESOURCE_COLUMNS: &str = "r.id, r.organization_id, r.name, r.resource_type, r.category, r.path, r.description, \
     (SELECT count(*) FROM resource_versions c WHERE c.resource_id = r.id) AS version_count, \
     (SELECT max(c.version) FROM resource_versions c WHERE c.resource_id = r.id AND c.state = 'Completed') \
        AS latest_completed_version, \
     r.created_at, r.updated_at";

impl ResourceRow {
    pub fn into_api(self, versions: Option<Vec<ResourceVersion>>) -> Resource {
        Resource {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            resource_type: self.resource_type,
            category: self.category,
            path: self.path,
            description: self.description,
            version_count: self.version_count,
            latest_completed_version: self.latest_completed_version,
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
            versions,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub resource_id: Uuid,
    pub version: i32,
    pub description: Option<String>,
    pub state: VersionState,
    pub size_in_bytes: i64,
    pub uploaded_bytes: i64,
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub content_type: Option<String>,
    pub blob_key: Option<String>,
    pub uploaded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

const VERSION_COLUMNS: &str = "v.id, v.organization_id, v.resource_id, v.version, v.description, v.state, \
     v.size_in_bytes, v.uploaded_bytes, v.sha256, v.md5, v.content_type, v.blob_key, v.uploaded_at, \
     v.created_at, v.updated_at, v.completed_at";

impl VersionRow {
    pub fn has_content(&self) -> bool {
        self.blob_key.is_some() && self.sha256.is_some()
    }
}

impl From<VersionRow> for ResourceVersion {
    fn from(row: VersionRow) -> Self {
        Self {
            id: row.id,
            resource_id: row.resource_id,
            organization_id: row.organization_id,
            version: row.version,
            description: row.description,
            state: row.state,
            size_in_bytes: row.size_in_bytes,
            uploaded_bytes: row.uploaded_bytes,
            sha256: row.sha256,
            md5: row.md5,
            content_type: row.content_type,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
            uploaded_at: row.uploaded_at.map(Into::into),
            completed_at: row.completed_at.map(Into::into),
        }
    }
}

/// What `GET /api/resources` may filter and sort on.
pub static RESOURCE_LIST_SPEC: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "r.id", PropertyType::Uuid),
        Property::new("name", "r.name", PropertyType::Text),
        Property::new("type", "r.resource_type", PropertyType::Text),
        Property::new("category", "r.category", PropertyType::Text),
        Property::new("path", "r.path", PropertyType::Text),
        Property::new("description", "r.description", PropertyType::Text),
        Property::new("createdAt", "r.created_at", PropertyType::Time),
        Property::new("updatedAt", "r.updated_at", PropertyType::Time),
    ],
    default_order: "name",
    default_direction: Direction::Asc,
    tie_breaker: "r.id",
};

/// What `GET /api/resources/{id}/versions` may filter and sort on.
pub static VERSION_LIST_SPEC: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "v.id", PropertyType::Uuid),
        Property::new("version", "v.version", PropertyType::Integer),
        Property::new("state", "v.state", PropertyType::Text),
        Property::new("description", "v.description", PropertyType::Text),
        Property::new("sizeInBytes", "v.size_in_bytes", PropertyType::Integer),
        Property::new("sha256", "v.sha256", PropertyType::Text),
        Property::new("createdAt", "v.created_at", PropertyType::Time),
        Property::new("updatedAt", "v.updated_at", PropertyType::Time),
        Property::new("completedAt", "v.completed_at", PropertyType::Time),
    ],
    default_order: "version",
    default_direction: Direction::Asc,
    tie_breaker: "v.id",
};

fn duplicate_name() -> ApiError {
    ApiError::conflict("DUPLICATE_NAME", "a resource with this name already exists in this category")
}

/// A resource to insert.
#[derive(Debug)]
pub struct NewResourceRow<'a> {
    pub organization_id: Uuid,
    pub name: &'a str,
    pub resource_type: ResourceType,
    pub category: &'a str,
    pub path: Option<&'a str>,
    pub description: Option<&'a str>,
    pub created_by: Option<Uuid>,
}

pub async fn insert_resource(conn: &mut PgConnection, new: &NewResourceRow<'_>) -> ApiResult<ResourceRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO resources AS r (id, organization_id, name, resource_type, category, path, description, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {RESOURCE_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(new.organization_id)
    .bind(new.name)
    .bind(new.resource_type)
    .bind(new.category)
    .bind(new.path)
    .bind(new.description)
    .bind(new.created_by)
    .fetch_one(conn)
    .await
    .map_err(on_constraint("resources_org_category_name_key", duplicate_name))
}

pub async fn list_resources(
    conn: &mut PgConnection,
    organization_id: Uuid,
    query: &ListQuery,
) -> ApiResult<(Vec<ResourceRow>, Option<i64>)> {
    query
        .fetch(conn, RESOURCE_COLUMNS, |q| {
            q.push(" FROM resources r WHERE r.organization_id = ").push_bind(organization_id);
        })
        .await
}

/// The organization's resource; with `lock`, its row stays locked until the transaction ends
/// (serialising version numbering, deletion and reference checks).
pub async fn find_resource(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<ResourceRow>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE OF r" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.id = $1 AND r.organization_id = $2{lock}"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// A resource's new fields (the handler merges the patch into the current row).
#[derive(Debug)]
pub struct ResourceFields<'a> {
    pub name: &'a str,
    pub resource_type: ResourceType,
    pub category: &'a str,
    pub path: Option<&'a str>,
    pub description: Option<&'a str>,
}

pub async fn update_resource(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    fields: &ResourceFields<'_>,
) -> ApiResult<Option<ResourceRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE resources AS r SET name = $3, resource_type = $4, category = $5, path = $6, description = $7, \
         updated_at = now() WHERE r.id = $1 AND r.organization_id = $2 RETURNING {RESOURCE_COLUMNS}"
    )))
    .bind(id)
    .bind(organization_id)
    .bind(fields.name)
    .bind(fields.resource_type)
    .bind(fields.category)
    .bind(fields.path)
    .bind(fields.description)
    .fetch_optional(conn)
    .await
    .map_err(on_constraint("resources_org_category_name_key", duplicate_name))
}

/// Deletes the resource and its versions and upload sessions; answers the blob keys released
/// (already queued for deletion by the trigger), or None when there is no such resource. A
/// reference that appeared since the caller's check is still a 409.
pub async fn delete_resource(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> ApiResult<Option<Vec<String>>> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT v.blob_key FROM resource_versions v WHERE v.resource_id = $1 AND v.organization_id = $2 \
         AND v.blob_key IS NOT NULL \
         UNION ALL SELECT p.blob_key FROM resource_upload_parts p JOIN resource_uploads u ON u.id = p.upload_id \
         WHERE u.resource_id = $1 AND u.organization_id = $2",
    )
    .bind(id)
    .bind(organization_id)
    .fetch_all(&mut *conn)
    .await?;
    let deleted = sqlx::query("DELETE FROM resources WHERE id = $1 AND organization_id = $2")
        .bind(id)
        .bind(organization_id)
        .execute(&mut *conn)
        .await
        .map_err(references::on_reference_violation)?;
    Ok((deleted.rows_affected() > 0).then_some(keys))
}

/// Creates a draft with the next version number of the (already locked) resource.
pub async fn insert_version(
    conn: &mut PgConnection,
    resource: &ResourceRow,
    description: Option<&str>,
    size_in_bytes: i64,
    created_by: Option<Uuid>,
) -> Result<VersionRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO resource_versions AS v (id, organization_id, resource_id, version, description, size_in_bytes, created_by) \
         VALUES ($1, $2, $3, (SELECT COALESCE(max(version), 0) + 1 FROM resource_versions WHERE resource_id = $3), $4, $5, $6) \
         RETURNING {VERSION_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(resource.organization_id)
    .bind(resource.id)
    .bind(description)
    .bind(size_in_bytes)
    .bind(created_by)
    .fetch_one(conn)
    .await
}

pub async fn list_versions(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_id: Uuid,
    query: &ListQuery,
) -> ApiResult<(Vec<VersionRow>, Option<i64>)> {
    query
        .fetch(conn, VERSION_COLUMNS, |q| {
            q.push(" FROM resource_versions v WHERE v.organization_id = ").push_bind(organization_id);
            q.push(" AND v.resource_id = ").push_bind(resource_id);
        })
        .await
}

/// Every version of the resource, oldest first.
pub async fn all_versions(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_id: Uuid,
) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM resource_versions v WHERE v.resource_id = $1 AND v.organization_id = $2 \
         ORDER BY v.version"
    )))
    .bind(resource_id)
    .bind(organization_id)
    .fetch_all(conn)
    .await
}

/// The organization's version `id` of the resource; with `lock`, locked until the transaction
/// ends (state changes and content swaps take this lock).
pub async fn find_version(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_id: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<VersionRow>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM resource_versions v \
         WHERE v.id = $1 AND v.resource_id = $2 AND v.organization_id = $3{lock}"
    )))
    .bind(id)
    .bind(resource_id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Replaces a version's description, state and declared size; `completed_at` is set when it
/// becomes Completed.
pub async fn update_version(
    conn: &mut PgConnection,
    id: Uuid,
    description: Option<&str>,
    state: VersionState,
    size_in_bytes: i64,
) -> Result<VersionRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE resource_versions AS v SET description = $2, state = $3, size_in_bytes = $4, updated_at = now(), \
         completed_at = CASE WHEN $3 = 'Completed' THEN now() ELSE NULL END \
         WHERE v.id = $1 RETURNING {VERSION_COLUMNS}"
    )))
    .bind(id)
    .bind(description)
    .bind(state)
    .bind(size_in_bytes)
    .fetch_one(conn)
    .await
}

/// Points the (locked, Draft) version at new content; the old blob, if any, is queued for
/// deletion by the trigger. Answers the updated row.
pub async fn set_content(
    conn: &mut PgConnection,
    id: Uuid,
    blob_key: &str,
    written: &Written,
    content_type: &str,
) -> Result<VersionRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE resource_versions AS v SET blob_key = $2, uploaded_bytes = $3, sha256 = $4, md5 = $5, \
         content_type = $6, uploaded_at = now(), updated_at = now() \
         WHERE v.id = $1 AND v.state = 'Draft' RETURNING {VERSION_COLUMNS}"
    )))
    .bind(id)
    .bind(blob_key)
    .bind(i64::try_from(written.size).unwrap_or(i64::MAX))
    .bind(&written.sha256)
    .bind(&written.md5)
    .bind(content_type)
    .fetch_one(conn)
    .await
}

/// Deletes the version (its upload sessions go with it); answers it, or None when absent.
pub async fn delete_version(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_id: Uuid,
    id: Uuid,
) -> ApiResult<Option<VersionRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM resource_versions v WHERE v.id = $1 AND v.resource_id = $2 AND v.organization_id = $3 \
         RETURNING {VERSION_COLUMNS}"
    )))
    .bind(id)
    .bind(resource_id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
    .map_err(references::on_reference_violation)
}

/// A version's content for a download, with what the response needs of its resource.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContentRow {
    pub resource_id: Uuid,
    pub version_id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub path: Option<String>,
    pub state: VersionState,
    pub blob_key: Option<String>,
    pub uploaded_bytes: i64,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
}

pub async fn find_content(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_id: Uuid,
    version_id: Uuid,
) -> Result<Option<ContentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.id AS resource_id, v.id AS version_id, v.organization_id, r.name, r.path, v.state, v.blob_key, \
         v.uploaded_bytes, v.sha256, v.content_type \
         FROM resource_versions v JOIN resources r ON r.id = v.resource_id \
         WHERE v.id = $1 AND v.resource_id = $2 AND v.organization_id = $3",
    )
    .bind(version_id)
    .bind(resource_id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Takes the organization's storage lock until the transaction ends: quota checks and the
/// reservations they grant happen one at a time per organization.
pub async fn lock_storage(conn: &mut PgConnection, organization_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('resource-storage:' || $1::text, 0))")
        .bind(organization_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Resource storage the organization uses, in bytes: stored content, the declared size of open
/// resumable uploads, and the declared size of uploads streaming right now. `except_version`'s
/// current content is left out (an upload to it replaces it).
pub async fn storage_used(
    conn: &mut PgConnection,
    organization_id: Uuid,
    except_version: Option<Uuid>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (COALESCE((SELECT sum(uploaded_bytes) FROM resource_versions \
                           WHERE organization_id = $1 AND blob_key IS NOT NULL AND id IS DISTINCT FROM $2), 0) \
               + COALESCE((SELECT sum(size_in_bytes) FROM resource_uploads WHERE organization_id = $1), 0) \
               + COALESCE((SELECT sum(reserved_bytes) FROM resource_blobs_pending \
                           WHERE organization_id = $1 AND replica_id IS NOT NULL), 0))::bigint",
    )
    .bind(organization_id)
    .bind(except_version)
    .fetch_one(conn)
    .await
}

//! API keys in SQL.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    auth::roles::Role,
    error::{ApiError, ApiResult, on_constraint},
    http::list::{Direction, ListQuery, ListSpec, Property, PropertyType},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveKey {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The key with this hash, if it is neither revoked nor expired. Also notes when it was last used
/// (at most once a minute per key, so authentication stays a single cheap statement).
pub async fn find_live_by_hash(pool: &PgPool, key_hash: &[u8]) -> Result<Option<LiveKey>, sqlx::Error> {
    sqlx::query_as(
        "WITH found AS (SELECT id, organization_id, role, created_at, expires_at, last_used_at FROM api_keys \
                        WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())), \
              touched AS (UPDATE api_keys SET last_used_at = now() WHERE id IN \
                          (SELECT id FROM found WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute')) \
         SELECT id, organization_id, role, created_at, expires_at FROM found",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub const COLUMNS: &str =
    "id, organization_id, name, prefix, role, created_by, created_at, expires_at, last_used_at, revoked_at";

/// What `GET /api/apikeys` may filter and sort on; each name is a property of the listed item.
pub static LIST_SPEC: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "k.id", PropertyType::Uuid),
        Property::new("name", "k.name", PropertyType::Text),
        Property::new("prefix", "k.prefix", PropertyType::Text),
        Property::new("role", "k.role", PropertyType::Text),
        Property::new("createdAt", "k.created_at", PropertyType::Time),
        Property::new("createdBy", "k.created_by", PropertyType::Uuid),
        Property::new("expiresAt", "k.expires_at", PropertyType::Time),
        Property::new("lastUsedAt", "k.last_used_at", PropertyType::Time),
        Property::new("revoked", "k.revoked_at IS NOT NULL", PropertyType::Boolean),
        Property::new("revokedAt", "k.revoked_at", PropertyType::Time),
    ],
    default_order: "createdAt",
    default_direction: Direction::Desc,
    tie_breaker: "k.id",
};

fn duplicate_name() -> ApiError {
    ApiError::conflict("DUPLICATE_NAME", "an API key with this name already exists in the organization")
}

#[allow(clippy::too_many_arguments)]
pub async fn insert(
    conn: &mut PgConnection,
    organization_id: Uuid,
    name: &str,
    prefix: &str,
    key_hash: &[u8],
    role: Role,
    created_by: Option<Uuid>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<ApiKeyRow, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, organization_id, name, prefix, key_hash, role, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(organization_id)
    .bind(name)
    .bind(prefix)
    .bind(key_hash)
    .bind(role)
    .bind(created_by)
    .bind(expires_at)
    .fetch_one(conn)
    .await
    .map_err(on_constraint("api_keys_org_name_key", duplicate_name))
}

/// One page of the organization's keys, and their number when asked.
pub async fn list(
    conn: &mut PgConnection,
    organization_id: Uuid,
    query: &ListQuery,
) -> ApiResult<(Vec<ApiKeyRow>, Option<i64>)> {
    query
        .fetch(conn, COLUMNS, |q| {
            q.push(" FROM api_keys k WHERE k.organization_id = ").push_bind(organization_id);
        })
        .await
}

/// The organization's key with this id (another organization's is not found).
pub async fn find(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND organization_id = $2"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Like `find`, and locks the row until the transaction ends, so two revocations of one key
/// serialise and only the first one records an event.
pub async fn find_for_update(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND organization_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Marks a live key revoked; `find_live_by_hash` refuses it from the next request on.
pub async fn revoke(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET revoked_at = now() \
         WHERE id = $1 AND organization_id = $2 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(organization_id)
    .execute(conn)
    .await?;
    Ok(())
}

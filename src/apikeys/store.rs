//! API keys in SQL.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::auth::roles::Role;

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
) -> Result<ApiKeyRow, sqlx::Error> {
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
}

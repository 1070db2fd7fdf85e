//! Registration keys in SQL.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use crate::{
    edgenodes::model::{Labels, NodeType},
    error::{ApiError, ApiResult, on_constraint},
    http::list::{Direction, ListQuery, ListSpec, Property, PropertyType},
};

/// SQL: whether the key aliased `k` can enrol a node now (a macro, so `COLUMNS` can embed it).
macro_rules! active_sql {
    () => {
        "(k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) \
         AND (k.max_uses IS NULL OR k.uses < k.max_uses))"
    };
}
const ACTIVE_SQL: &str = active_sql!();

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegistrationKeyRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub node_type: NodeType,
    pub labels: Json<Labels>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub expires_at: Option<DateTime<Utc>>,
    pub active: bool,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The columns of `RegistrationKeyRow`, for queries of `registration_keys k`.
const COLUMNS: &str = concat!(
    "k.id, k.organization_id, k.name, k.prefix, k.node_type, k.labels, k.max_uses, k.uses, k.expires_at, ",
    active_sql!(),
    " AS active, k.created_by, k.created_at, k.revoked_at"
);

/// What `GET /api/registrationkeys` may filter and sort on.
pub static LIST_SPEC: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "k.id", PropertyType::Uuid),
        Property::new("name", "k.name", PropertyType::Text),
        Property::new("prefix", "k.prefix", PropertyType::Text),
        Property::new("nodeType", "k.node_type", PropertyType::Text),
        Property::new("maxUses", "k.max_uses", PropertyType::Integer),
        Property::new("uses", "k.uses", PropertyType::Integer),
        Property::new("expiresAt", "k.expires_at", PropertyType::Time),
        Property::new("active", ACTIVE_SQL, PropertyType::Boolean),
        Property::new("createdAt", "k.created_at", PropertyType::Time),
        Property::new("createdBy", "k.created_by", PropertyType::Uuid),
        Property::new("revoked", "k.revoked_at IS NOT NULL", PropertyType::Boolean),
        Property::new("revokedAt", "k.revoked_at", PropertyType::Time),
    ],
    default_order: "createdAt",
    default_direction: Direction::Desc,
    tie_breaker: "k.id",
};

fn duplicate_name() -> ApiError {
    ApiError::conflict("DUPLICATE_NAME", "a registration key with this name already exists in the organization")
}

/// A key to insert.
#[derive(Debug)]
pub struct NewKey<'a> {
    pub organization_id: Uuid,
    pub name: &'a str,
    pub prefix: &'a str,
    pub key_hash: &'a [u8],
    pub node_type: NodeType,
    pub labels: &'a Labels,
    pub max_uses: Option<i32>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
}

/// Inserts a key; a name taken in the organization is a 409 `DUPLICATE_NAME`.
pub async fn insert(conn: &mut PgConnection, key: &NewKey<'_>) -> ApiResult<RegistrationKeyRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO registration_keys AS k (id, organization_id, name, prefix, key_hash, node_type, labels, \
         max_uses, expires_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(key.organization_id)
    .bind(key.name)
    .bind(key.prefix)
    .bind(key.key_hash)
    .bind(key.node_type)
    .bind(Json(key.labels))
    .bind(key.max_uses)
    .bind(key.expires_at)
    .bind(key.created_by)
    .fetch_one(conn)
    .await
    .map_err(on_constraint("registration_keys_org_name_key", duplicate_name))
}

/// One page of the organization's keys, and their number when asked.
pub async fn list(
    conn: &mut PgConnection,
    organization_id: Uuid,
    query: &ListQuery,
) -> ApiResult<(Vec<RegistrationKeyRow>, Option<i64>)> {
    query
        .fetch(conn, COLUMNS, |q| {
            q.push(" FROM registration_keys k WHERE k.organization_id = ").push_bind(organization_id);
        })
        .await
}

/// The organization's key with this id (another organization's is not found).
pub async fn find(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<RegistrationKeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM registration_keys k WHERE k.id = $1 AND k.organization_id = $2"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Marks the organization's key revoked, unless it already is; answers the key as it was before,
/// or `None` when there is no such key. Locks the row, so two revocations serialise and only the
/// first finds it live.
pub async fn revoke(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<RegistrationKeyRow>, sqlx::Error> {
    let found: Option<RegistrationKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM registration_keys k WHERE k.id = $1 AND k.organization_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(&mut *conn)
    .await?;
    if found.as_ref().is_some_and(|k| k.revoked_at.is_none()) {
        sqlx::query("UPDATE registration_keys SET revoked_at = now() WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(found)
}

/// A key presented for enrolment, locked until the transaction ends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedKey {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub node_type: NodeType,
    pub labels: Json<Labels>,
    pub revoked: bool,
    pub expired: bool,
    pub used_up: bool,
}

impl LockedKey {
    /// Why the key cannot enrol a node now, if it cannot.
    pub fn refusal(&self) -> Option<&'static str> {
        if self.revoked {
            Some("revoked")
        } else if self.expired {
            Some("expired")
        } else if self.used_up {
            Some("used up")
        } else {
            None
        }
    }
}

/// The key with this hash, locked (`FOR UPDATE`) so concurrent enrolments with one key take
/// turns: each sees the uses the previous one committed, and the limit holds.
pub async fn lock_by_hash(conn: &mut PgConnection, key_hash: &[u8]) -> Result<Option<LockedKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, organization_id, name, prefix, node_type, labels, \
             revoked_at IS NOT NULL AS revoked, \
             (expires_at IS NOT NULL AND expires_at <= now()) AS expired, \
             (max_uses IS NOT NULL AND uses >= max_uses) AS used_up \
         FROM registration_keys WHERE key_hash = $1 FOR UPDATE",
    )
    .bind(key_hash)
    .fetch_optional(conn)
    .await
}

/// Counts one enrolment with the (locked) key.
pub async fn add_use(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE registration_keys SET uses = uses + 1 WHERE id = $1").bind(id).execute(conn).await?;
    Ok(())
}

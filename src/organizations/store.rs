//! Organizations, memberships and identity providers in SQL. Every query on tenant data is
//! scoped by organization id.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    auth::roles::Role,
    error::{ApiError, ApiResult, on_constraint},
    http::list::{Direction, ListQuery, ListSpec, Property, PropertyType},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrganizationRow {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    description: Option<&str>,
) -> Result<OrganizationRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO organizations (id, name, description) VALUES ($1, $2, $3) \
         RETURNING id, name, description, created_at, updated_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(description)
    .fetch_one(conn)
    .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<OrganizationRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, description, created_at, updated_at FROM organizations WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn add_member(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3)")
        .bind(organization_id)
        .bind(user_id)
        .bind(role)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn member_role(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Role>, sqlx::Error> {
    sqlx::query_scalar("SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2")
        .bind(organization_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

// ----- Organizations as the caller sees them -----

/// An organization with the caller's role in it and cheap counts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrganizationSummaryRow {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub role: Role,
    pub member_count: i64,
    pub identity_provider_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of `OrganizationSummaryRow`, over `organizations o` and a membership `m` with `role`.
const SUMMARY_COLUMNS: &str = "o.id, o.name, o.description, m.role, \
     (SELECT count(*) FROM memberships c WHERE c.organization_id = o.id) AS member_count, \
     (SELECT count(*) FROM identity_providers p WHERE p.organization_id = o.id) AS identity_provider_count, \
     o.created_at, o.updated_at";

pub static ORGANIZATION_LIST: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "o.id", PropertyType::Uuid),
        Property::new("name", "o.name", PropertyType::Text),
        Property::new("role", "m.role", PropertyType::Text),
        Property::new("createdAt", "o.created_at", PropertyType::Time),
    ],
    default_order: "name",
    default_direction: Direction::Asc,
    tie_breaker: "o.id",
};

/// Whose organizations a list shows.
#[derive(Debug, Clone, Copy)]
pub enum Viewer {
    /// Every organization the user is a member of, with the role there.
    User(Uuid),
    /// Only the key's own organization, with the key's role.
    ApiKey { organization_id: Uuid, role: Role },
}

pub async fn list_visible(
    conn: &mut PgConnection,
    list: &ListQuery,
    viewer: Viewer,
) -> ApiResult<(Vec<OrganizationSummaryRow>, Option<i64>)> {
    list.fetch(conn, SUMMARY_COLUMNS, |query| match viewer {
        Viewer::User(user_id) => {
            query
                .push(" FROM organizations o JOIN memberships m ON m.organization_id = o.id WHERE m.user_id = ")
                .push_bind(user_id);
        }
        Viewer::ApiKey { organization_id, role } => {
            query
                .push(" FROM organizations o CROSS JOIN (SELECT ")
                .push_bind(role)
                .push("::text AS role) m WHERE o.id = ")
                .push_bind(organization_id);
        }
    })
    .await
}

/// The organization as seen by a caller with `role` in it.
pub async fn find_summary(
    conn: &mut PgConnection,
    id: Uuid,
    role: Role,
) -> Result<Option<OrganizationSummaryRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM organizations o CROSS JOIN (SELECT $1::text AS role) m WHERE o.id = $2"
    )))
    .bind(role)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Changes name and/or description (`Some(None)` clears the description). False when not found.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    name: Option<&str>,
    description: Option<Option<&str>>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE organizations SET name = coalesce($2, name), \
         description = CASE WHEN $3 THEN $4 ELSE description END, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(name)
    .bind(description.is_some())
    .bind(description.flatten())
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Locks the organization row against every concurrent change, and against new rows that refer
/// to it (sessions, memberships): taken before deleting it, so no session can start in it
/// between revoking its sessions and deleting it. Answers its name.
pub async fn lock_for_delete(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(conn).await
}

/// Deletes the organization and, by cascade, everything it owns. Answers its name.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("DELETE FROM organizations WHERE id = $1 RETURNING name").bind(id).fetch_optional(conn).await
}

// ----- Members -----

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

const MEMBER_COLUMNS: &str = "m.user_id, u.email, u.name, m.role, m.created_at";

pub static MEMBER_LIST: ListSpec = ListSpec {
    properties: &[
        Property::new("userId", "m.user_id", PropertyType::Uuid),
        Property::new("email", "u.email", PropertyType::Text),
        Property::new("name", "u.name", PropertyType::Text),
        Property::new("role", "m.role", PropertyType::Text),
        Property::new("createdAt", "m.created_at", PropertyType::Time),
    ],
    default_order: "email",
    default_direction: Direction::Asc,
    tie_breaker: "m.user_id",
};

pub async fn list_members(
    conn: &mut PgConnection,
    list: &ListQuery,
    organization_id: Uuid,
) -> ApiResult<(Vec<MemberRow>, Option<i64>)> {
    list.fetch(conn, MEMBER_COLUMNS, |query| {
        query
            .push(" FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.organization_id = ")
            .push_bind(organization_id);
    })
    .await
}

fn already_member() -> ApiError {
    ApiError::conflict("ALREADY_MEMBER", "the user is already a member of this organization")
}

/// Adds a member; 409 `ALREADY_MEMBER` when they are one.
pub async fn insert_member(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> Result<MemberRow, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH m AS (INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3) \
                    RETURNING user_id, role, created_at) \
         SELECT {MEMBER_COLUMNS} FROM m JOIN users u ON u.id = m.user_id"
    )))
    .bind(organization_id)
    .bind(user_id)
    .bind(role)
    .fetch_one(conn)
    .await
    .map_err(on_constraint("memberships_pkey", already_member))
}

/// Locks the organization's Owner memberships and answers their user ids. Every change of a
/// membership takes this lock first (always in user id order, so two changes cannot deadlock),
/// then counts: two concurrent demotions cannot both see another Owner left. It first takes a
/// key-share lock on the organization, which orders it before a concurrent deletion of the
/// organization (rather than deadlocking with its cascade).
pub async fn lock_owners(conn: &mut PgConnection, organization_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query("SELECT 1 FROM organizations WHERE id = $1 FOR KEY SHARE")
        .bind(organization_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "SELECT user_id FROM memberships WHERE organization_id = $1 AND role = 'Owner' \
         ORDER BY user_id FOR UPDATE",
    )
    .bind(organization_id)
    .fetch_all(conn)
    .await
}

/// The member, with their membership row locked until the transaction ends.
pub async fn lock_member(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
) -> Result<Option<MemberRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MEMBER_COLUMNS} FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1 AND m.user_id = $2 FOR UPDATE OF m"
    )))
    .bind(organization_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

pub async fn set_member_role(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE memberships SET role = $3 WHERE organization_id = $1 AND user_id = $2")
        .bind(organization_id)
        .bind(user_id)
        .bind(role)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn remove_member(conn: &mut PgConnection, organization_id: Uuid, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2")
        .bind(organization_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

// ----- Identity providers -----

/// An identity provider; the encrypted secret never leaves the database through this row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityProviderRow {
    pub id: Uuid,
    pub name: String,
    pub issuer_url: String,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub enabled: bool,
    pub has_client_secret: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const IDP_COLUMNS: &str = "p.id, p.name, p.issuer_url, p.client_id, p.scopes, p.enabled, \
     (p.client_secret_encrypted IS NOT NULL) AS has_client_secret, p.created_at, p.updated_at";

pub static IDENTITY_PROVIDER_LIST: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "p.id", PropertyType::Uuid),
        Property::new("name", "p.name", PropertyType::Text),
        Property::new("issuerUrl", "p.issuer_url", PropertyType::Text),
        Property::new("clientId", "p.client_id", PropertyType::Text),
        Property::new("enabled", "p.enabled", PropertyType::Boolean),
        Property::new("hasClientSecret", "(p.client_secret_encrypted IS NOT NULL)", PropertyType::Boolean),
        Property::new("createdAt", "p.created_at", PropertyType::Time),
        Property::new("updatedAt", "p.updated_at", PropertyType::Time),
    ],
    default_order: "name",
    default_direction: Direction::Asc,
    tie_breaker: "p.id",
};

fn identity_provider_name_taken() -> ApiError {
    ApiError::conflict("NAME_TAKEN", "an identity provider with this name already exists in the organization")
}

pub async fn list_identity_providers(
    conn: &mut PgConnection,
    list: &ListQuery,
    organization_id: Uuid,
) -> ApiResult<(Vec<IdentityProviderRow>, Option<i64>)> {
    list.fetch(conn, IDP_COLUMNS, |query| {
        query.push(" FROM identity_providers p WHERE p.organization_id = ").push_bind(organization_id);
    })
    .await
}

pub async fn find_identity_provider(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<IdentityProviderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {IDP_COLUMNS} FROM identity_providers p WHERE p.organization_id = $1 AND p.id = $2"
    )))
    .bind(organization_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A new identity provider; the secret, when given, already sealed.
pub struct NewIdentityProviderRow<'a> {
    pub name: &'a str,
    pub issuer_url: &'a str,
    pub client_id: Option<&'a str>,
    pub client_secret_encrypted: Option<Vec<u8>>,
    pub scopes: &'a [String],
    pub enabled: bool,
}

/// Inserts; 409 `NAME_TAKEN` when the organization has one of that name.
pub async fn insert_identity_provider(
    conn: &mut PgConnection,
    organization_id: Uuid,
    new: NewIdentityProviderRow<'_>,
) -> Result<IdentityProviderRow, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO identity_providers AS p \
         (id, organization_id, name, issuer_url, client_id, client_secret_encrypted, scopes, enabled) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {IDP_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(organization_id)
    .bind(new.name)
    .bind(new.issuer_url)
    .bind(new.client_id)
    .bind(new.client_secret_encrypted)
    .bind(new.scopes)
    .bind(new.enabled)
    .fetch_one(conn)
    .await
    .map_err(on_constraint("identity_providers_org_name_key", identity_provider_name_taken))
}

/// The fields a patch changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct IdentityProviderChanges<'a> {
    pub name: Option<&'a str>,
    pub issuer_url: Option<&'a str>,
    /// `Some(None)` clears the client id.
    pub client_id: Option<Option<&'a str>>,
    pub scopes: Option<&'a [String]>,
    pub enabled: Option<bool>,
}

/// Applies the changes; `None` when there is no such provider in the organization.
pub async fn update_identity_provider(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    changes: IdentityProviderChanges<'_>,
) -> Result<Option<IdentityProviderRow>, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE identity_providers AS p SET name = coalesce($3, p.name), \
         issuer_url = coalesce($4, p.issuer_url), \
         client_id = CASE WHEN $5 THEN $6 ELSE p.client_id END, \
         scopes = coalesce($7, p.scopes), enabled = coalesce($8, p.enabled), updated_at = now() \
         WHERE p.organization_id = $1 AND p.id = $2 RETURNING {IDP_COLUMNS}"
    )))
    .bind(organization_id)
    .bind(id)
    .bind(changes.name)
    .bind(changes.issuer_url)
    .bind(changes.client_id.is_some())
    .bind(changes.client_id.flatten())
    .bind(changes.scopes)
    .bind(changes.enabled)
    .fetch_optional(conn)
    .await
    .map_err(on_constraint("identity_providers_org_name_key", identity_provider_name_taken))
}

/// Replaces the client credentials; `None` when there is no such provider in the organization.
pub async fn set_identity_provider_secrets(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    client_id: &str,
    client_secret_encrypted: &[u8],
) -> Result<Option<IdentityProviderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE identity_providers AS p SET client_id = $3, client_secret_encrypted = $4, updated_at = now() \
         WHERE p.organization_id = $1 AND p.id = $2 RETURNING {IDP_COLUMNS}"
    )))
    .bind(organization_id)
    .bind(id)
    .bind(client_id)
    .bind(client_secret_encrypted)
    .fetch_optional(conn)
    .await
}

/// Deletes; answers the name, or `None` when there is no such provider in the organization.
pub async fn delete_identity_provider(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("DELETE FROM identity_providers WHERE organization_id = $1 AND id = $2 RETURNING name")
        .bind(organization_id)
        .bind(id)
        .fetch_optional(conn)
        .await
}

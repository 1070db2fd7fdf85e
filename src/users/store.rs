//! Users in SQL.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    auth::roles::Role,
    error::{ApiError, on_constraint},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const USER_COLUMNS: &str = "id, email, name, password_hash, created_at, updated_at";

fn email_taken() -> ApiError {
    ApiError::conflict("EMAIL_TAKEN", "a user with this email already exists")
}

pub async fn find_by_email(conn: &mut PgConnection, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)")))
        .bind(email)
        .fetch_optional(conn)
        .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The audit subject for a user: `User: <email>` (or the id, should the user be gone).
pub async fn subject(conn: &mut PgConnection, id: Uuid) -> Result<String, sqlx::Error> {
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1").bind(id).fetch_optional(conn).await?;
    Ok(crate::events::model::subject::user(&email.unwrap_or_else(|| id.to_string())))
}

pub async fn count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(conn).await
}

pub async fn insert(conn: &mut PgConnection, email: &str, name: &str, password_hash: &str) -> Result<Uuid, ApiError> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(email)
        .bind(name)
        .bind(password_hash)
        .execute(conn)
        .await
        .map_err(on_constraint("users_email_key", email_taken))?;
    Ok(id)
}

pub async fn update_profile(
    conn: &mut PgConnection,
    id: Uuid,
    name: Option<&str>,
    email: Option<&str>,
) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE users SET name = coalesce($2, name), email = coalesce($3, email), updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(name)
    .bind(email)
    .execute(conn)
    .await
    .map_err(on_constraint("users_email_key", email_taken))?;
    Ok(())
}

pub async fn set_password_hash(conn: &mut PgConnection, id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProfileRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub organizations: sqlx::types::Json<Vec<ProfileMembership>>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ProfileMembership {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
}

/// The user and every membership, in one statement (this backs `GET /api/users/me`, the call every
/// client makes first).
pub async fn profile(conn: &mut PgConnection, user_id: Uuid) -> Result<Option<ProfileRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.name, u.created_at, \
                coalesce(json_agg(json_build_object('id', o.id, 'name', o.name, 'role', m.role) ORDER BY o.name, o.id) \
                         FILTER (WHERE o.id IS NOT NULL), '[]') AS organizations \
         FROM users u LEFT JOIN memberships m ON m.user_id = u.id \
         LEFT JOIN organizations o ON o.id = m.organization_id \
         WHERE u.id = $1 GROUP BY u.id",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipRow {
    pub organization_id: Uuid,
    pub organization_name: String,
    pub role: Role,
}

/// The organizations a user belongs to, most recently signed into first.
pub async fn memberships(conn: &mut PgConnection, user_id: Uuid) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.organization_id, o.name AS organization_name, m.role \
         FROM memberships m JOIN organizations o ON o.id = m.organization_id \
         LEFT JOIN LATERAL (SELECT max(s.created_at) AS last_session FROM sessions s \
                            WHERE s.user_id = m.user_id AND s.organization_id = m.organization_id) s ON true \
         WHERE m.user_id = $1 \
         ORDER BY s.last_session DESC NULLS LAST, m.created_at, o.name",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

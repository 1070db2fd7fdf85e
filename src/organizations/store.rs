//! Organizations and memberships in SQL.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::roles::Role;

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

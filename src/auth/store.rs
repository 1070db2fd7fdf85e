//! Sessions and refresh tokens in SQL.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    revocation,
    tokens::{random_secret, secret_hash},
};

/// Which sessions a revocation ends. Each maps to one fixed SQL condition.
#[derive(Debug, Clone, Copy)]
pub enum RevokeScope {
    Session(Uuid),
    User(Uuid),
    UserExcept {
        user_id: Uuid,
        keep: Uuid,
    },
    UserInOrganization {
        user_id: Uuid,
        organization_id: Uuid,
    },
    /// Every session acting in the organization (it is being deleted).
    Organization(Uuid),
}

/// Ends sessions, announces it to every replica (on commit), and answers the ids ended so the
/// caller can also mark them locally right after commit.
pub async fn revoke(conn: &mut PgConnection, scope: RevokeScope, reason: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    let (condition, a, b) = match scope {
        RevokeScope::Session(id) => ("id = $2", id, None),
        RevokeScope::User(user) => ("user_id = $2", user, None),
        RevokeScope::UserExcept { user_id, keep } => ("user_id = $2 AND id <> $3", user_id, Some(keep)),
        RevokeScope::UserInOrganization { user_id, organization_id } => {
            ("user_id = $2 AND organization_id = $3", user_id, Some(organization_id))
        }
        RevokeScope::Organization(organization_id) => ("organization_id = $2", organization_id, None),
    };
    let sql = format!(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $1 \
         WHERE {condition} AND revoked_at IS NULL RETURNING id"
    );
    let mut query = sqlx::query_scalar::<_, Uuid>(sqlx::AssertSqlSafe(sql)).bind(reason).bind(a);
    if let Some(b) = b {
        query = query.bind(b);
    }
    let ids = query.fetch_all(&mut *conn).await?;
    revocation::notify(conn, &ids).await?;
    Ok(ids)
}

pub struct NewSession {
    pub id: Uuid,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    /// Older sessions ended to stay within the per-user limit.
    pub evicted: Vec<Uuid>,
}

pub async fn create_session(
    conn: &mut PgConnection,
    user_id: Uuid,
    organization_id: Uuid,
    ttl_days: i64,
    max_sessions: i64,
    client_ip: Option<String>,
    user_agent: Option<String>,
) -> Result<NewSession, sqlx::Error> {
    let id = Uuid::now_v7();
    let expires_at = Utc::now() + chrono::Duration::days(ttl_days);
    sqlx::query(
        "INSERT INTO sessions (id, user_id, organization_id, expires_at, client_ip, user_agent) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(user_id)
    .bind(organization_id)
    .bind(expires_at)
    .bind(client_ip)
    .bind(user_agent)
    .execute(&mut *conn)
    .await?;
    // Keep the newest `max_sessions` live sessions (the one just made among them).
    let evicted: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = 'session limit reached' \
         WHERE id IN (SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
                      AND expires_at > now() ORDER BY created_at DESC, id DESC OFFSET $2) \
         RETURNING id",
    )
    .bind(user_id)
    .bind(max_sessions.max(1))
    .fetch_all(&mut *conn)
    .await?;
    revocation::notify(conn, &evicted).await?;
    let refresh_token = insert_refresh_token(conn, id).await?;
    Ok(NewSession { id, refresh_token, expires_at, evicted })
}

pub async fn insert_refresh_token(conn: &mut PgConnection, session_id: Uuid) -> Result<String, sqlx::Error> {
    let token = format!("efr_{}", random_secret(32));
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
        .bind(secret_hash(&token))
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(token)
}

#[derive(Debug, sqlx::FromRow)]
pub struct RefreshTokenRow {
    pub session_id: Uuid,
    pub used_at: Option<DateTime<Utc>>,
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Finds a refresh token and locks it, so two concurrent uses cannot both rotate it.
pub async fn lock_refresh_token(conn: &mut PgConnection, token: &str) -> Result<Option<RefreshTokenRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rt.session_id, rt.used_at, s.user_id, s.organization_id, s.expires_at, s.revoked_at \
         FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id \
         WHERE rt.token_hash = $1 FOR UPDATE OF rt",
    )
    .bind(secret_hash(token))
    .fetch_optional(conn)
    .await
}

/// Marks a refresh token used and issues its successor in the same session.
pub async fn rotate_refresh_token(
    conn: &mut PgConnection,
    token: &str,
    session_id: Uuid,
) -> Result<String, sqlx::Error> {
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(secret_hash(token))
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE sessions SET last_used_at = now() WHERE id = $1").bind(session_id).execute(&mut *conn).await?;
    insert_refresh_token(conn, session_id).await
}

#[derive(Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn find_session(conn: &mut PgConnection, id: Uuid) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, organization_id, created_at, expires_at, revoked_at FROM sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

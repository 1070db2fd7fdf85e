//! Writing events, and reading them back. Audit rows are written in the same transaction as the
//! change they describe, so an action and its record commit (or vanish) together. Every read is
//! scoped by organization in SQL; events without one (e.g. failed sign-ins of unknown emails) are
//! never shown to a tenant.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{
    model::{EventRow, Level, Source},
    query::{EventQuery, Position},
};
use crate::auth::context::AuthContext;

/// An event to record. Build it with `audit` (an API action) or `new`, then add ids and data.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub organization_id: Option<Uuid>,
    pub level: Level,
    pub source: Source,
    /// What happened, dotted: `organization.update`, `auth.login_failed`, `node.connected`.
    pub action: &'static str,
    /// What it happened to: `User: demo@example.com`, `Node: Production5`, `Flow: Temperature`.
    pub subject: String,
    pub message: String,
    pub node_id: Option<Uuid>,
    pub flow_definition_id: Option<Uuid>,
    pub deployment_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub client_ip: Option<String>,
    pub data: Option<Value>,
}

impl NewEvent {
    pub fn new(
        organization_id: Option<Uuid>,
        level: Level,
        source: Source,
        action: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            organization_id,
            level,
            source,
            action,
            subject: subject.into(),
            message: message.into(),
            node_id: None,
            flow_definition_id: None,
            deployment_id: None,
            user_id: None,
            api_key_id: None,
            client_ip: None,
            data: None,
        }
    }

    /// An API action by the caller in its active organization: who, from where, what.
    pub fn audit(
        auth: &AuthContext,
        action: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut event =
            Self::new(Some(auth.organization_id), Level::Info, Source::ControlCenter, action, subject, message);
        event.user_id = auth.user_id();
        event.api_key_id = auth.api_key_id();
        event.client_ip = auth.client_ip.map(|ip| ip.to_string());
        event
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn with_level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    pub async fn record(&self, conn: &mut PgConnection) -> Result<Uuid, sqlx::Error> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO events (id, organization_id, level, source, action, subject, message, \
             node_id, flow_definition_id, deployment_id, user_id, api_key_id, client_ip, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(id)
        .bind(self.organization_id)
        .bind(self.level)
        .bind(self.source)
        .bind(self.action)
        .bind(&self.subject)
        .bind(&self.message)
        .bind(self.node_id)
        .bind(self.flow_definition_id)
        .bind(self.deployment_id)
        .bind(self.user_id)
        .bind(self.api_key_id)
        .bind(&self.client_ip)
        .bind(&self.data)
        .execute(conn)
        .await?;
        Ok(id)
    }
}

/// The columns of `EventRow`, from `events e`.
pub const COLUMNS: &str = "e.id, e.occurred_at, e.level, e.source, e.action, e.subject, e.message, e.organization_id, \
     e.node_id, e.flow_definition_id, e.deployment_id, e.user_id, e.api_key_id, e.client_ip, e.data";

/// One page of the organization's events, and whether more follow it.
pub async fn list(
    conn: &mut PgConnection,
    organization_id: Uuid,
    query: &EventQuery,
) -> Result<(Vec<EventRow>, bool), sqlx::Error> {
    let mut sql = QueryBuilder::new(format!("SELECT {COLUMNS}"));
    query.push_from_where(&mut sql, organization_id);
    // One more than asked tells whether there is a next page.
    let mut page = query.list.clone();
    page.limit += 1;
    page.push_order_and_page(&mut sql);
    let mut rows = sql.build_query_as::<EventRow>().fetch_all(conn).await?;
    let more = rows.len() as i64 > query.list.limit;
    rows.truncate(query.list.limit as usize);
    Ok((rows, more))
}

/// How many of the organization's events match (ignoring paging and the cursor).
pub async fn count(conn: &mut PgConnection, organization_id: Uuid, query: &EventQuery) -> Result<i64, sqlx::Error> {
    let mut sql = QueryBuilder::new("SELECT count(*)");
    query.push_scope(&mut sql, organization_id);
    sql.build_query_scalar::<i64>().fetch_one(conn).await
}

/// The SQL of an export: every matching row in the requested order (after `offset`, and up to
/// `limit` only when the client gave one).
pub fn export_sql(organization_id: Uuid, query: &EventQuery) -> QueryBuilder<Postgres> {
    let mut sql = QueryBuilder::new(format!("SELECT {COLUMNS}"));
    query.push_from_where(&mut sql, organization_id);
    let mut page = query.list.clone();
    if !query.explicit_limit {
        page.limit = i64::MAX;
    }
    page.push_order_and_page(&mut sql);
    sql
}

pub async fn find(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!("SELECT {COLUMNS} FROM events e WHERE e.id = $1 AND e.organization_id = $2")))
        .bind(id)
        .bind(organization_id)
        .fetch_optional(conn)
        .await
}

/// Where an event of the organization sits in time (for `Last-Event-ID`).
pub async fn position_of(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<Position>, sqlx::Error> {
    let at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT occurred_at FROM events WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .fetch_optional(conn)
            .await?;
    Ok(at.map(|at| Position { at, id }))
}

/// The database's clock: where a live stream that resumes from nothing starts.
pub async fn now(conn: &mut PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(conn).await
}

/// Matching events after `from`, oldest first: a stream catching up from the table.
pub async fn following(
    conn: &mut PgConnection,
    organization_id: Uuid,
    query: &EventQuery,
    from: Position,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut sql = QueryBuilder::new(format!("SELECT {COLUMNS}"));
    query.push_scope(&mut sql, organization_id);
    sql.push(" AND (e.occurred_at, e.id) > (").push_bind(from.at).push(", ").push_bind(from.id).push(")");
    sql.push(" ORDER BY e.occurred_at ASC, e.id ASC LIMIT ").push_bind(limit);
    sql.build_query_as::<EventRow>().fetch_all(conn).await
}

/// Those of these events that match, oldest first: a stream's live batch.
pub async fn matching(
    conn: &mut PgConnection,
    organization_id: Uuid,
    query: &EventQuery,
    ids: &[Uuid],
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut sql = QueryBuilder::new(format!("SELECT {COLUMNS}"));
    query.push_scope(&mut sql, organization_id);
    sql.push(" AND e.id = ANY(").push_bind(ids).push(")");
    sql.push(" ORDER BY e.occurred_at ASC, e.id ASC");
    sql.build_query_as::<EventRow>().fetch_all(conn).await
}

/// Whether an API key still works (a stream opened with it ends when it is revoked or expires).
pub async fn api_key_is_live(conn: &mut PgConnection, key_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM api_keys WHERE id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > now()))",
    )
    .bind(key_id)
    .fetch_one(conn)
    .await
}

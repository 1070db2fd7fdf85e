//! Edge nodes in SQL. Every query of tenant data is scoped by organization id; the one exception,
//! `find_for_tunnel`, serves the tunnel's handshake, which checks the node's own access key.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::model::{Labels, NodeType};
use crate::{
    error::{ApiError, ApiResult, on_constraint},
    http::list::{Direction, ListQuery, ListSpec, Property, PropertyType},
    tunnel::presence::{ONLINE_SQL, PENDING_JOBS_SQL},
};

/// A node as shown by the API, with its computed status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EdgeNodeRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub node_type: NodeType,
    pub labels: Json<Labels>,
    pub description: Option<String>,
    pub online: bool,
    pub connected_at: Option<DateTime<Utc>>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub agent_version: Option<String>,
    pub protocol_version: Option<i32>,
    pub reported_flows: Json<Value>,
    pub pending_jobs: i64,
    pub access_key_prefix: String,
    pub key_rotated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of `EdgeNodeRow`, for queries of `edge_nodes n`: one SELECT list shared by list,
/// get, create and update, so they can never disagree.
pub fn node_columns() -> &'static str {
    static COLUMNS: LazyLock<String> = LazyLock::new(|| {
        format!(
            "n.id, n.organization_id, n.name, n.node_type, n.labels, n.description, \
             {ONLINE_SQL} AS online, n.connected_at, n.disconnected_at, n.last_seen_at, \
             n.agent_version, n.protocol_version, n.reported_flows, {PENDING_JOBS_SQL} AS pending_jobs, \
             n.access_key_prefix, n.key_rotated_at, n.created_at, n.updated_at"
        )
    });
    &COLUMNS
}

/// What `GET /api/edgenodes` may filter and sort on; each name is a property of the listed item.
pub static LIST_SPEC: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "n.id", PropertyType::Uuid),
        Property::new("name", "n.name", PropertyType::Text),
        Property::new("type", "n.node_type", PropertyType::Text),
        Property::new("description", "n.description", PropertyType::Text),
        Property::new("online", ONLINE_SQL, PropertyType::Boolean),
        Property::new("createdAt", "n.created_at", PropertyType::Time),
        Property::new("updatedAt", "n.updated_at", PropertyType::Time),
        Property::new("lastSeenAt", "n.last_seen_at", PropertyType::Time),
        Property::new("connectedAt", "n.connected_at", PropertyType::Time),
        Property::new("disconnectedAt", "n.disconnected_at", PropertyType::Time),
        Property::new("agentVersion", "n.agent_version", PropertyType::Text),
        Property::new("protocolVersion", "n.protocol_version", PropertyType::Integer),
        Property::new("pendingJobs", PENDING_JOBS_SQL, PropertyType::Integer),
        Property::new("accessKeyPrefix", "n.access_key_prefix", PropertyType::Text),
        Property::new("keyRotatedAt", "n.key_rotated_at", PropertyType::Time),
    ],
    default_order: "name",
    default_direction: Direction::Asc,
    tie_breaker: "n.id",
};

fn duplicate_name() -> ApiError {
    ApiError::conflict("DUPLICATE_NAME", "an edge node with this name already exists in the organization")
}

/// A node to insert.
#[derive(Debug)]
pub struct NewNode<'a> {
    pub organization_id: Uuid,
    pub name: &'a str,
    pub node_type: NodeType,
    pub labels: &'a Labels,
    pub description: Option<&'a str>,
    pub access_key_hash: &'a [u8],
    pub access_key_prefix: &'a str,
    pub registration_key_id: Option<Uuid>,
}

/// Inserts a node; a name taken in the organization is a 409 `DUPLICATE_NAME`.
pub async fn insert(conn: &mut PgConnection, node: &NewNode<'_>) -> ApiResult<EdgeNodeRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO edge_nodes AS n (id, organization_id, name, node_type, labels, description, \
         access_key_hash, access_key_prefix, registration_key_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {}",
        node_columns()
    )))
    .bind(Uuid::now_v7())
    .bind(node.organization_id)
    .bind(node.name)
    .bind(node.node_type)
    .bind(Json(node.labels))
    .bind(node.description)
    .bind(node.access_key_hash)
    .bind(node.access_key_prefix)
    .bind(node.registration_key_id)
    .fetch_one(conn)
    .await
    .map_err(on_constraint("edge_nodes_org_name_key", duplicate_name))
}

/// One page of the organization's nodes (those whose labels contain every pair of `labels`), and
/// their number when asked.
pub async fn list(
    conn: &mut PgConnection,
    organization_id: Uuid,
    labels: &[(String, String)],
    query: &ListQuery,
) -> ApiResult<(Vec<EdgeNodeRow>, Option<i64>)> {
    query
        .fetch(conn, node_columns(), |q| {
            q.push(" FROM edge_nodes n WHERE n.organization_id = ").push_bind(organization_id);
            for (key, value) in labels {
                let pair = Labels::from([(key.clone(), value.clone())]);
                q.push(" AND n.labels @> ").push_bind(Json(pair)).push("::jsonb");
            }
        })
        .await
}

/// The organization's node with this id (another organization's is not found).
pub async fn find(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<EdgeNodeRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM edge_nodes n WHERE n.id = $1 AND n.organization_id = $2",
        node_columns()
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// The changes of a merge patch: `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct NodeChanges<'a> {
    pub name: Option<&'a str>,
    pub node_type: Option<NodeType>,
    pub labels: Option<&'a Labels>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<&'a str>>,
}

/// Applies the changes to the organization's node; `None` when there is no such node. A name
/// taken in the organization is a 409 `DUPLICATE_NAME`.
pub async fn update(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    changes: &NodeChanges<'_>,
) -> ApiResult<Option<EdgeNodeRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE edge_nodes AS n SET \
             name = COALESCE($3, n.name), \
             node_type = COALESCE($4, n.node_type), \
             labels = COALESCE($5, n.labels), \
             description = CASE WHEN $6 THEN $7 ELSE n.description END, \
             updated_at = now() \
         WHERE n.id = $1 AND n.organization_id = $2 RETURNING {}",
        node_columns()
    )))
    .bind(id)
    .bind(organization_id)
    .bind(changes.name)
    .bind(changes.node_type)
    .bind(changes.labels.map(Json))
    .bind(changes.description.is_some())
    .bind(changes.description.flatten())
    .fetch_optional(conn)
    .await
    .map_err(on_constraint("edge_nodes_org_name_key", duplicate_name))
}

/// Deletes the organization's node (its jobs go with it); answers its name, or `None` when there
/// is no such node.
pub async fn delete(conn: &mut PgConnection, organization_id: Uuid, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("DELETE FROM edge_nodes WHERE id = $1 AND organization_id = $2 RETURNING name")
        .bind(id)
        .bind(organization_id)
        .fetch_optional(conn)
        .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RotatedKeyRow {
    pub id: Uuid,
    pub name: String,
    pub access_key_prefix: String,
    pub key_rotated_at: DateTime<Utc>,
}

/// Replaces the node's access key; `None` when the organization has no such node.
pub async fn rotate_key(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    access_key_hash: &[u8],
    access_key_prefix: &str,
) -> Result<Option<RotatedKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE edge_nodes SET access_key_hash = $3, access_key_prefix = $4, \
             key_rotated_at = now(), updated_at = now() \
         WHERE id = $1 AND organization_id = $2 \
         RETURNING id, name, access_key_prefix, key_rotated_at",
    )
    .bind(id)
    .bind(organization_id)
    .bind(access_key_hash)
    .bind(access_key_prefix)
    .fetch_optional(conn)
    .await
}

/// What the tunnel needs to authenticate a node and label its session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TunnelNode {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub node_type: String,
    pub access_key_hash: Vec<u8>,
}

/// The node with this id, in whatever organization: the caller must compare `access_key_hash`
/// with `secret_hash` of the key the node presented before trusting it.
pub async fn find_for_tunnel(pool: &PgPool, node_id: Uuid) -> Result<Option<TunnelNode>, sqlx::Error> {
    sqlx::query_as("SELECT id, organization_id, name, node_type, access_key_hash FROM edge_nodes WHERE id = $1")
        .bind(node_id)
        .fetch_optional(pool)
        .await
}

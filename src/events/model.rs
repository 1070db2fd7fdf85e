use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Level {
    Info,
    Warning,
    Error,
}
crate::db::text_enum!(Level { Info, Warning, Error });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Source {
    ControlCenter,
    Node,
    Flow,
}
crate::db::text_enum!(Source { ControlCenter, Node, Flow });

/// The spellings of `Level` and `Source`, for filters (`PropertyType::Choice`).
pub const LEVELS: &[&str] = &["Info", "Warning", "Error"];
pub const SOURCES: &[&str] = &["ControlCenter", "Node", "Flow"];

/// The subject vocabulary: what an event happened to, as `<Kind>: <name>`. Filter on it with
/// `filters[0].propertyName=Subject&filters[0].propertyValue=Node: Production5&filters[0].filterType=contains`.
pub mod subject {
    use uuid::Uuid;

    pub fn node(name: &str) -> String {
        format!("Node: {name}")
    }

    pub fn flow(name: &str) -> String {
        format!("Flow: {name}")
    }

    pub fn user(email: &str) -> String {
        format!("User: {email}")
    }

    pub fn deployment(id: Uuid) -> String {
        format!("Deployment: {id}")
    }
}

/// One stored event, as read from the table (always scoped to an organization).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub level: Level,
    pub source: Source,
    pub action: String,
    pub subject: String,
    pub message: String,
    pub organization_id: Uuid,
    pub node_id: Option<Uuid>,
    pub flow_definition_id: Option<Uuid>,
    pub deployment_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub client_ip: Option<String>,
    pub data: Option<Value>,
}

/// Something that happened: an API action (with who and from where), a node or flow event, a job
/// or deployment outcome.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: Uuid,
    /// When it happened.
    pub timestamp: Timestamp,
    pub level: Level,
    pub source: Source,
    /// What happened, dotted: `node.create`, `auth.login_failed`, `node.event`.
    #[schema(example = "node.connected")]
    pub action: String,
    /// What it happened to: `Node: <name>`, `Flow: <name>`, `User: <email>`, `Deployment: <id>`.
    #[schema(example = "Node: Production5")]
    pub subject: String,
    pub message: String,
    pub organization_id: Uuid,
    pub node_id: Option<Uuid>,
    pub flow_definition_id: Option<Uuid>,
    pub deployment_id: Option<Uuid>,
    /// The user who acted (audit events).
    pub user_id: Option<Uuid>,
    /// The API key that acted (audit events).
    pub api_key_id: Option<Uuid>,
    /// The client address the action came from (audit events).
    pub client_ip: Option<String>,
    /// Details, free-form.
    pub data: Option<Value>,
}

impl From<EventRow> for Event {
    fn from(row: EventRow) -> Self {
        Self {
            id: row.id,
            timestamp: row.occurred_at.into(),
            level: row.level,
            source: row.source,
            action: row.action,
            subject: row.subject,
            message: row.message,
            organization_id: row.organization_id,
            node_id: row.node_id,
            flow_definition_id: row.flow_definition_id,
            deployment_id: row.deployment_id,
            user_id: row.user_id,
            api_key_id: row.api_key_id,
            client_ip: row.client_ip,
            data: row.data,
        }
    }
}

/// One page of events. `nextCursor` continues the list (pass it as `after`); it is null at the end,
/// and whenever the list is not in its default order (newest first).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    pub items: Vec<Event>,
    pub offset: i64,
    pub limit: i64,
    /// Events matching the filters, with `includeCount=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_count: Option<i64>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_spellings_match_the_enums() {
        assert_eq!(Level::ALL.iter().map(Level::as_str).collect::<Vec<_>>(), LEVELS);
        assert_eq!(Source::ALL.iter().map(Source::as_str).collect::<Vec<_>>(), SOURCES);
    }
}

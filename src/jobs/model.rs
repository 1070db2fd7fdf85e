use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    http::time::Timestamp,
    tunnel::protocol::{self, JobCommand},
};

/// Where a job is. Queued (not yet written to the node), Sent, InProgress; final: Succeeded,
/// Failed, TimedOut (in progress too long), Canceled, Expired (never delivered in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum JobState {
    Queued,
    Sent,
    InProgress,
    Succeeded,
    Failed,
    TimedOut,
    Canceled,
    Expired,
}
crate::db::text_enum!(JobState { Queued, Sent, InProgress, Succeeded, Failed, TimedOut, Canceled, Expired });

impl JobState {
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Sent | Self::InProgress)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub node_id: Uuid,
    pub seq: i64,
    pub command: String,
    pub flow_definition_id: Option<Uuid>,
    pub deployment_id: Option<Uuid>,
    pub flow: Option<Value>,
    pub state: JobState,
    pub error: Option<String>,
    pub attempts: i32,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

impl JobRow {
    pub fn command(&self) -> JobCommand {
        JobCommand::parse(&self.command).unwrap_or(JobCommand::Stop)
    }

    /// The job as the node receives it.
    pub fn into_message(self) -> protocol::Job {
        protocol::Job {
            id: self.id,
            seq: self.seq,
            command: self.command(),
            flow_definition_id: self.flow_definition_id,
            deployment_id: self.deployment_id,
            flow: self.flow.and_then(|flow| serde_json::from_value(flow).ok()),
        }
    }
}

/// A job of a node.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: Uuid,
    pub node_id: Uuid,
    /// Position in the node's queue: jobs reach the node in this order.
    pub seq: i64,
    /// `deploy`, `start`, `stop` or `remove`.
    pub command: String,
    pub flow_definition_id: Option<Uuid>,
    pub deployment_id: Option<Uuid>,
    pub state: JobState,
    pub error: Option<String>,
    /// How many times it was written to the node (more than one after reconnects).
    pub attempts: i32,
    pub created_by: Option<Uuid>,
    pub created_at: Timestamp,
    pub sent_at: Option<Timestamp>,
    pub received_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub expires_at: Timestamp,
}

impl From<JobRow> for Job {
    fn from(row: JobRow) -> Self {
        Self {
            id: row.id,
            node_id: row.node_id,
            seq: row.seq,
            command: row.command,
            flow_definition_id: row.flow_definition_id,
            deployment_id: row.deployment_id,
            state: row.state,
            error: row.error,
            attempts: row.attempts,
            created_by: row.created_by,
            created_at: row.created_at.into(),
            sent_at: row.sent_at.map(Into::into),
            received_at: row.received_at.map(Into::into),
            started_at: row.started_at.map(Into::into),
            finished_at: row.finished_at.map(Into::into),
            expires_at: row.expires_at.into(),
        }
    }
}

/// A command for many nodes at once: by ids, by labels, or both (ANDed).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkCommand {
    /// `start` or `stop`.
    #[schema(pattern = "^(start|stop)$")]
    pub command: String,
    pub flow_definition_id: Uuid,
    #[serde(default)]
    pub node_ids: Option<Vec<Uuid>>,
    /// Nodes whose labels contain all of these.
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkCommandResult {
    pub count: usize,
    pub jobs: Vec<Job>,
}

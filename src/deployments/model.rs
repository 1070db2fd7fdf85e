use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::time::Timestamp;

/// Where a deployment is. Scheduled (waiting for `scheduledAt`), Running, Paused (no further
/// batches); final: Succeeded, Failed (past the failure threshold, no automatic rollback),
/// Canceled, RolledBack; RollingBack while the previous versions are being restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DeploymentState {
    Scheduled,
    Running,
    Paused,
    Succeeded,
    Failed,
    Canceled,
    RollingBack,
    RolledBack,
}
crate::db::text_enum!(DeploymentState {
    Scheduled,
    Running,
    Paused,
    Succeeded,
    Failed,
    Canceled,
    RollingBack,
    RolledBack
});

/// Where one target node is in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum TargetState {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    TimedOut,
    Canceled,
    RollingBack,
    RolledBack,
    RollbackFailed,
}
crate::db::text_enum!(TargetState {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    TimedOut,
    Canceled,
    RollingBack,
    RolledBack,
    RollbackFailed
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// Every target at once.
    AllAtOnce,
    /// `batchSize` targets at a time; the next batch starts when the current one has finished.
    Rolling,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllAtOnce => "allAtOnce",
            Self::Rolling => "rolling",
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeploymentRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub flow_definition_id: Uuid,
    pub flow_version_id: Option<Uuid>,
    pub flow_draft_id: Option<Uuid>,
    pub flow_name: String,
    pub version: Option<i32>,
    pub flow_payload: Value,
    pub strategy: String,
    pub batch_size: i32,
    pub max_failures: i32,
    pub auto_rollback: bool,
    pub target_timeout_seconds: i32,
    pub state: DeploymentState,
    pub current_batch: i32,
    pub error: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TargetRow {
    pub deployment_id: Uuid,
    pub node_id: Uuid,
    pub node_name: String,
    pub batch: i32,
    pub state: TargetState,
    pub job_id: Option<Uuid>,
    pub rollback_job_id: Option<Uuid>,
    pub previous_version_id: Option<Uuid>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What the node last reported of this flow definition (from its `state` messages).
    pub reported: Option<Value>,
}

/// Counts of targets by state.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub targeted: i64,
    pub pending: i64,
    pub in_progress: i64,
    pub succeeded: i64,
    /// Failed or timed out.
    pub failed: i64,
    pub canceled: i64,
    pub rolled_back: i64,
}

/// One target node of a deployment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub node_id: Uuid,
    pub node_name: String,
    /// The batch (0-based) the node is deployed in.
    pub batch: i32,
    pub state: TargetState,
    pub job_id: Option<Uuid>,
    pub rollback_job_id: Option<Uuid>,
    /// The version the node ran before, restored by a rollback (none: the flow is removed).
    pub previous_flow_id: Option<Uuid>,
    pub error: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// What the node reports it runs of this flow definition.
    #[schema(value_type = Option<Object>)]
    pub reported: Option<Value>,
    /// True when the node reports something else than this deployment put there (after it
    /// succeeded): another version, or the flow not running.
    pub drift: bool,
}

/// A deployment with its targets and counters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub flow_definition_id: Uuid,
    /// The flow version deployed (Crosser's "flow").
    pub flow_id: Option<Uuid>,
    /// Or the draft deployed (DevAndTest nodes only), as it was at deploy time.
    pub draft_id: Option<Uuid>,
    pub flow_name: String,
    pub version: Option<i32>,
    pub strategy: Strategy,
    pub batch_size: i32,
    pub max_failures: i32,
    pub auto_rollback: bool,
    pub target_timeout_seconds: i32,
    pub state: DeploymentState,
    pub current_batch: i32,
    pub error: Option<String>,
    pub scheduled_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub created_by: Option<Uuid>,
    pub created_at: Timestamp,
    pub counters: Counters,
    /// The targets (omitted in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<Target>>,
}

/// Crosser's deploy call: `{"edgeNodes": [<edgeNodeId>, ...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrosserDeploy {
    #[schema(min_items = 1)]
    pub edge_nodes: Vec<Uuid>,
}

/// A deployment to create: a flow version (`flowId`) or a draft (`draftId`, DevAndTest nodes
/// only), to nodes by id and/or by labels.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDeployment {
    pub flow_definition_id: Uuid,
    pub flow_id: Option<Uuid>,
    pub draft_id: Option<Uuid>,
    /// Target nodes by id.
    #[schema(min_items = 1)]
    pub node_ids: Option<Vec<Uuid>>,
    /// Target nodes whose labels contain all of these (ANDed with `nodeIds` when both are given).
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// `allAtOnce` (default) or `rolling`.
    pub strategy: Option<Strategy>,
    /// Rolling: targets per batch (default 1); only with `strategy: rolling`.
    #[schema(minimum = 1)]
    pub batch_size: Option<i32>,
    /// Failed or timed-out targets tolerated before the rollout stops (default 0).
    #[schema(minimum = 0)]
    pub max_failures: Option<i32>,
    /// When the threshold is passed, put every updated target back to what it ran before.
    pub auto_rollback: Option<bool>,
    /// A target that has not finished after this many seconds counts as failed (TimedOut); 1
    /// second to 7 days.
    #[schema(minimum = 1, maximum = 604800)]
    pub target_timeout_seconds: Option<i32>,
    /// Start at this time instead of now.
    pub scheduled_at: Option<Timestamp>,
}

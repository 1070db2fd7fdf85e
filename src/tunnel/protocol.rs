//! The tunnel protocol: JSON text frames, each an object with `type` and its fields beside it.
//! Shared by the server and the reference agent; documented in `openapi/asyncapi.yaml`.
//!
//! Unknown fields are ignored (a newer agent may send more); an unknown `type` or a malformed
//! message is a protocol violation (close 4003).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::http::time::Timestamp;

pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket close codes the server uses.
pub mod close_code {
    /// A newer connection of the same node took over.
    pub const REPLACED: u16 = 4000;
    /// The node was deleted.
    pub const NODE_DELETED: u16 = 4001;
    /// The node's access key was rotated: reconnect with the new one.
    pub const KEY_ROTATED: u16 = 4002;
    /// The node broke the protocol (malformed message, unknown type, no hello first, too fast).
    pub const PROTOCOL_VIOLATION: u16 = 4003;
    /// The server is shutting down: reconnect (to another replica) with jittered backoff.
    pub const GOING_AWAY: u16 = 1001;
    /// Broken WebSocket framing (RFC 6455).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8 (RFC 6455).
    pub const INVALID_DATA: u16 = 1007;
    /// A frame or message over the server's limit (RFC 6455).
    pub const MESSAGE_TOO_BIG: u16 = 1009;

    /// The reason the server gives with one of its own codes.
    pub fn reason(code: u16) -> &'static str {
        match code {
            REPLACED => "replaced by a newer connection",
            NODE_DELETED => "node deleted",
            KEY_ROTATED => "access key rotated",
            PROTOCOL_VIOLATION => "protocol violation",
            GOING_AWAY => "server shutting down",
            _ => "closed by the server",
        }
    }
}

/// Messages a node sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum NodeMessage {
    Hello(Hello),
    JobUpdate(JobUpdate),
    State(StateReport),
    Event(NodeEvent),
    Metrics(MetricsReport),
    Response(CallResponse),
    ShadowReported(ShadowReported),
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    Welcome(Welcome),
    Job(Job),
    JobCanceled(JobCanceled),
    Request(CallRequest),
    Shadow(Shadow),
}

/// The node's first message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub protocol_version: u32,
    pub agent_version: String,
    #[serde(default)]
    pub flows: Vec<FlowReport>,
    /// The highest job seq the node has finished (informational; the server redelivers every
    /// unfinished job and the node skips ids it has already finished).
    #[serde(default)]
    pub last_job_seq: Option<i64>,
}

/// What a node runs of one flow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowReport {
    pub flow_definition_id: Uuid,
    #[serde(default)]
    pub flow_id: Option<Uuid>,
    #[serde(default)]
    pub version: Option<i64>,
    /// `running`, `stopped` or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    pub node_id: Uuid,
    pub session_id: Uuid,
    pub server_time: Timestamp,
    /// The server pings this often; a node not heard from for two periods is offline.
    pub heartbeat_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobCommand {
    Deploy,
    Start,
    Stop,
    Remove,
}

impl JobCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Remove => "remove",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "deploy" => Self::Deploy,
            "start" => Self::Start,
            "stop" => Self::Stop,
            "remove" => Self::Remove,
            _ => return None,
        })
    }
}

/// A job for the node. Jobs arrive in `seq` order, at least once: a node skips an `id` it has
/// already finished (and reports its final state again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: Uuid,
    pub seq: i64,
    pub command: JobCommand,
    pub flow_definition_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<Uuid>,
    /// For `deploy`: the whole flow version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<DeployFlow>,
}

/// A flow version as a node receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployFlow {
    pub flow_definition_id: Uuid,
    pub flow_id: Uuid,
    pub version: i64,
    pub name: String,
    pub content: Value,
    #[serde(default)]
    pub resources: Vec<DeployResource>,
}

/// A file a flow needs, fetched by the node with its own credentials (HTTP Basic nodeId:accessKey).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployResource {
    pub resource_id: Uuid,
    pub version_id: Uuid,
    pub path: Option<String>,
    pub size_in_bytes: i64,
    pub sha256: String,
    pub download_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCanceled {
    pub job_id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobUpdateState {
    Received,
    InProgress,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobUpdate {
    pub job_id: Uuid,
    pub state: JobUpdateState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    pub flows: Vec<FlowReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvent {
    /// `Info`, `Warning` or `Error`.
    pub level: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_definition_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Free-form figures (cpu, memory, messages per second, ...), beside `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    #[serde(flatten)]
    pub values: Map<String, Value>,
}

/// A synchronous call to the node (`health`, `logs`, `runtime`); the node answers `response`
/// with the same `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRequest {
    pub id: Uuid,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallResponse {
    pub id: Uuid,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The desired state the node should converge to, with its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shadow {
    pub desired: Value,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowReported {
    pub reported: Value,
    /// The desired version this report answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_sit_beside_type() {
        let hello: NodeMessage = serde_json::from_value(json!({
            "type": "hello", "protocolVersion": 1, "agentVersion": "1.0.0",
            "flows": [{"flowDefinitionId": Uuid::nil(), "state": "running"}], "lastJobSeq": 3,
            "someFutureField": true
        }))
        .unwrap();
        let NodeMessage::Hello(hello) = hello else { panic!("not hello") };
        assert_eq!((hello.protocol_version, hello.last_job_seq, hello.flows.len()), (1, Some(3), 1));

        let job = ServerMessage::Job(Job {
            id: Uuid::nil(),
            seq: 7,
            command: JobCommand::Start,
            flow_definition_id: Some(Uuid::nil()),
            deployment_id: None,
            flow: None,
        });
        let value = serde_json::to_value(&job).unwrap();
        assert_eq!(value["type"], "job");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["command"], "start");

        let metrics: NodeMessage = serde_json::from_value(json!({"type": "metrics", "cpu": 0.5})).unwrap();
        let NodeMessage::Metrics(metrics) = metrics else { panic!("not metrics") };
        assert_eq!(metrics.values.get("cpu"), Some(&json!(0.5)));
        assert!(serde_json::from_value::<NodeMessage>(json!({"type": "teleport"})).is_err());
    }
}

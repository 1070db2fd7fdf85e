//! One node's socket: the hello handshake, then one loop that reads the node's messages, writes
//! what the hub queues, and pings. A node not heard from for `offline_after` is dropped.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde_json::Value;
use uuid::Uuid;

use super::{
    hub::{Hub, Outbound},
    presence,
    protocol::{Hello, NodeMessage, PROTOCOL_VERSION, ServerMessage, Welcome, close_code},
};
use crate::events::{
    model::{Level, Source},
    store::NewEvent,
};

/// How long a node has to say hello after the upgrade.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Metrics are stored at most this often per node.
const METRICS_EVERY: Duration = Duration::from_secs(10);
/// Limits on what a node's event may carry.
const MAX_EVENT_MESSAGE_CHARS: usize = 2000;
const MAX_EVENT_DATA_BYTES: usize = 16 * 1024;

/// The node behind a socket, as authenticated at the handshake.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
}

/// Why a session ended, for the log and the disconnect event.
struct Ending {
    reason: String,
    /// A close frame to send, if the socket is still usable.
    close: Option<(u16, String)>,
    level: Level,
}

impl Ending {
    fn quiet(reason: &str) -> Self {
        Self { reason: reason.to_owned(), close: None, level: Level::Info }
    }

    fn violation(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self {
            close: Some((close_code::PROTOCOL_VIOLATION, reason.clone())),
            reason: format!("protocol violation: {reason}"),
            level: Level::Warning,
        }
    }
}

/// Messages per second with bursts: a node may exceed its rate briefly, not for long.
struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_second: u32) -> Self {
        let capacity = f64::from(per_second) * 10.0;
        Self { tokens: capacity, capacity, per_second: f64::from(per_second), last: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.chars().take(120).collect::<String>()) };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn receive_hello(socket: &mut WebSocket) -> Result<Hello, Ending> {
    let first = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Err(_) => return Err(Ending::violation("no hello within 10 s")),
        Ok(None | Some(Err(_))) => return Err(Ending::quiet("closed before hello")),
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Ok(_))) => return Err(Ending::violation("the first message must be a hello text frame")),
    };
    match serde_json::from_str::<NodeMessage>(&first) {
        Ok(NodeMessage::Hello(hello)) if hello.protocol_version == PROTOCOL_VERSION => Ok(hello),
        Ok(NodeMessage::Hello(hello)) => Err(Ending::violation(format!(
            "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
            hello.protocol_version
        ))),
        Ok(_) => Err(Ending::violation("the first message must be hello")),
        Err(err) => Err(Ending::violation(format!("malformed hello: {err}"))),
    }
}

pub async fn run(hub: Arc<Hub>, mut socket: WebSocket, node: NodeIdentity, client_ip: Option<String>) {
    let hello = match Box::pin(receive_hello(&mut socket)).await {
        Ok(hello) => hello,
        Err(ending) => {
            if let Some((code, reason)) = ending.close {
                close(&mut socket, code, &reason).await;
            }
            tracing::info!(node = %node.id, reason = %ending.reason, "tunnel refused");
            return;
        }
    };
    let session_id = Uuid::now_v7();
    // Futures that run database queries are large; boxed, they take memory only while they run,
    // not for the whole life of the session (this decides how many nodes a replica holds).
    if let Err(err) = Box::pin(presence::connected(&hub, &node, session_id, &hello, client_ip)).await {
        tracing::warn!(node = %node.id, error = %err, "could not record the connection; closing");
        close(&mut socket, 1011, "server error; reconnect later").await;
        return;
    }
    let mut outbound = hub.attach(node.id, session_id);
    let welcome = ServerMessage::Welcome(Welcome {
        node_id: node.id,
        session_id,
        server_time: chrono::Utc::now().into(),
        heartbeat_seconds: hub.settings.heartbeat.as_secs(),
    });
    let ending = if send(&mut socket, &welcome).await {
        hub.resume(node.id, session_id);
        tracing::info!(node = %node.id, session = %session_id, agent = %hello.agent_version, "node connected");
        serve(&hub, &mut socket, &mut outbound, &node).await
    } else {
        Ending::quiet("connection lost before welcome")
    };
    if let Some((code, reason)) = &ending.close {
        close(&mut socket, *code, reason).await;
    }
    let aborted = ending.reason == ABORTED;
    hub.detach(node.id, session_id);
    if aborted {
        return;
    }
    tracing::info!(node = %node.id, session = %session_id, reason = %ending.reason, "node disconnected");
    if let Err(err) = Box::pin(presence::disconnected(&hub, &node, session_id, &ending.reason, ending.level)).await {
        tracing::warn!(node = %node.id, error = %err, "could not record the disconnection");
    }
}

/// A crash simulation: drop everything, record nothing (tests of what survives a crash).
const ABORTED: &str = "aborted";

async fn serve(
    hub: &Hub,
    socket: &mut WebSocket,
    outbound: &mut tokio::sync::mpsc::Receiver<Outbound>,
    node: &NodeIdentity,
) -> Ending {
    let mut ping = tokio::time::interval(hub.settings.heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut bucket = TokenBucket::new(hub.settings.messages_per_second);
    let mut metrics_stored: Option<Instant> = None;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let message = match incoming {
                    None => return Ending { reason: "connection closed without a close frame".into(), close: None, level: Level::Warning },
                    Some(Err(err)) => return Ending { reason: format!("connection lost: {err}"), close: None, level: Level::Warning },
                    Some(Ok(message)) => message,
                };
                last_heard = Instant::now();
                hub.touch(node.id);
                match message {
                    Message::Text(text) => {
                        if !bucket.take() {
                            return Ending::violation("too many messages");
                        }
                        if let Err(ending) = Box::pin(handle(hub, node, &text, &mut metrics_stored)).await {
                            return ending;
                        }
                    }
                    Message::Binary(_) => return Ending::violation("binary frames are not part of the protocol"),
                    Message::Ping(_) | Message::Pong(_) => {}
                    Message::Close(_) => return Ending::quiet("closed by the node"),
                }
            }
            command = outbound.recv() => match command {
                Some(Outbound::Text(text)) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return Ending { reason: "connection lost while sending".into(), close: None, level: Level::Warning };
                    }
                }
                Some(Outbound::Close { code, reason }) => {
                    return Ending { reason: reason.clone(), close: Some((code, reason)), level: Level::Info };
                }
                Some(Outbound::Abort) => return Ending::quiet(ABORTED),
                None => return Ending::quiet(ABORTED),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= hub.settings.offline_after {
                    return Ending {
                        reason: format!("no heartbeat for {} s", hub.settings.offline_after.as_secs()),
                        close: None,
                        level: Level::Warning,
                    };
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return Ending { reason: "connection lost while pinging".into(), close: None, level: Level::Warning };
                }
            }
        }
    }
}

/// Acts on one message from the node. A malformed message or one that makes no sense now is a
/// protocol violation; a valid one the database fails to store is logged and dropped (the node
/// resends state and job updates when it reconnects).
async fn handle(
    hub: &Hub,
    node: &NodeIdentity,
    text: &str,
    metrics_stored: &mut Option<Instant>,
) -> Result<(), Ending> {
    let message: NodeMessage =
        serde_json::from_str(text).map_err(|err| Ending::violation(format!("malformed message: {err}")))?;
    let stored = match message {
        NodeMessage::Hello(_) => return Err(Ending::violation("hello was already received")),
        NodeMessage::JobUpdate(update) => {
            hub.job_update(node.id, update);
            Ok(())
        }
        NodeMessage::Response(response) => {
            hub.finish_call(response).await;
            Ok(())
        }
        NodeMessage::State(report) => {
            let flows = serde_json::to_value(&report.flows).unwrap_or(Value::Array(Vec::new()));
            sqlx::query("UPDATE edge_nodes SET reported_flows = $2, reported_at = now() WHERE id = $1")
                .bind(node.id)
                .bind(flows)
                .execute(hub.db())
                .await
                .map(drop)
        }
        NodeMessage::ShadowReported(report) => {
            sqlx::query("UPDATE edge_nodes SET shadow_reported = $2, shadow_reported_at = now() WHERE id = $1")
                .bind(node.id)
                .bind(report.reported)
                .execute(hub.db())
                .await
                .map(drop)
        }
        NodeMessage::Metrics(report) => {
            if metrics_stored.is_some_and(|at| at.elapsed() < METRICS_EVERY) {
                return Ok(());
            }
            *metrics_stored = Some(Instant::now());
            sqlx::query("UPDATE edge_nodes SET metrics = $2, metrics_at = now() WHERE id = $1")
                .bind(node.id)
                .bind(Value::Object(report.values))
                .execute(hub.db())
                .await
                .map(drop)
        }
        NodeMessage::Event(event) => {
            let Some(level) = Level::ALL.iter().copied().find(|l| l.as_str().eq_ignore_ascii_case(&event.level)) else {
                return Err(Ending::violation(format!("event level '{}' is not Info, Warning or Error", event.level)));
            };
            // PostgreSQL text and jsonb cannot hold NUL; drop it rather than the event.
            let message: String = event.message.replace('\0', "").chars().take(MAX_EVENT_MESSAGE_CHARS).collect();
            if message.trim().is_empty() {
                return Err(Ending::violation("event message is empty"));
            }
            let data = event.data.map(|data| {
                let text = data.to_string().replace("\\u0000", "");
                if text.len() > MAX_EVENT_DATA_BYTES {
                    serde_json::json!({"truncated": true, "bytes": text.len()})
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::Null)
                }
            });
            let source = if event.flow_definition_id.is_some() { Source::Flow } else { Source::Node };
            let mut record = NewEvent::new(
                Some(node.organization_id),
                level,
                source,
                "node.event",
                format!("Node: {}", node.name),
                message,
            );
            record.node_id = Some(node.id);
            record.flow_definition_id = event.flow_definition_id;
            record.data = data;
            match hub.db().acquire().await {
                Ok(mut conn) => record.record(&mut conn).await.map(drop),
                Err(err) => Err(err),
            }
        }
    };
    if let Err(err) = stored {
        tracing::warn!(node = %node.id, error = %err, "could not store a node's message");
    }
    Ok(())
}

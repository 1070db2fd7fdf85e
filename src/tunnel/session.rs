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
    writer::Report,
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

    /// Reading from the socket failed. A frame or message over the limit (1009), text that is
    /// not UTF-8 (1007) and broken framing (1002) are told to the node before the socket is
    /// dropped; a lost connection has no one left to tell.
    fn read_failed(err: &axum::Error) -> Self {
        use tokio_tungstenite::tungstenite::{Error, error::ProtocolError};
        let code = match std::error::Error::source(err).and_then(|e| e.downcast_ref::<Error>()) {
            Some(Error::Capacity(_)) => Some(close_code::MESSAGE_TOO_BIG),
            Some(Error::Utf8(_)) => Some(close_code::INVALID_DATA),
            Some(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => None,
            Some(Error::Protocol(_)) => Some(close_code::PROTOCOL_ERROR),
            _ => None,
        };
        match code {
            Some(code) => Self {
                close: Some((code, err.to_string())),
                reason: format!("protocol violation: {err}"),
                level: Level::Warning,
            },
            None => Self { reason: format!("connection lost: {err}"), close: None, level: Level::Warning },
        }
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

/// How long a closing session waits for the node to answer its close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Sends the close frame, then reads (and drops) what the node still sends until it answers, or
/// for a second at most. Dropped with unread data, the socket would be reset by the kernel, and
/// a reset can destroy the close frame before the node reads it. After a frame too large to read
/// (1009) the rest of it cannot be read either: then it only waits.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.chars().take(120).collect::<String>()) };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        if code == close_code::MESSAGE_TOO_BIG {
            std::future::pending::<()>().await;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn receive_hello(socket: &mut WebSocket) -> Result<Hello, Ending> {
    let first = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Err(_) => return Err(Ending::violation("no hello within 10 s")),
        Ok(None) => return Err(Ending::quiet("closed before hello")),
        Ok(Some(Err(err))) => return Err(Ending::read_failed(&err)),
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
    let aborted = ending.reason == ABORTED;
    if !aborted {
        // What the node sent before the session ended is stored before it is told why, unless
        // the database is unavailable (then the writer stores it later).
        hub.flush_reports(FLUSH_WITHIN).await;
    }
    if let Some((code, reason)) = &ending.close {
        close(&mut socket, *code, reason).await;
    }
    drop(socket);
    hub.detach(node.id, session_id);
    if aborted {
        return;
    }
    tracing::info!(node = %node.id, session = %session_id, reason = %ending.reason, "node disconnected");
    Box::pin(record_disconnection(&hub, &node, session_id, &ending)).await;
}

/// How long an ending session waits for its node's reports to be stored.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// Records that the session ended. While the database is unavailable it keeps trying (until the
/// replica stops): unrecorded, the node would read online for as long as this replica lives.
async fn record_disconnection(hub: &Hub, node: &NodeIdentity, session_id: Uuid, ending: &Ending) {
    let stopped = hub.stopped();
    let mut retry = Duration::from_millis(500);
    loop {
        let recorded = presence::disconnected(hub, node, session_id, &ending.reason, ending.level).await;
        match recorded {
            Ok(()) => return,
            Err(err) if crate::db::is_unavailable(&err) && !*stopped.borrow() => {
                tracing::warn!(node = %node.id, error = %err, "could not record the disconnection yet; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
            Err(err) => {
                tracing::warn!(node = %node.id, error = %err, "could not record the disconnection");
                return;
            }
        }
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
                    Some(Err(err)) => return Ending::read_failed(&err),
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
/// protocol violation; what a valid one reports is handed to the hub's writer, which stores it
/// without holding up this socket (and keeps it while the database is unavailable).
async fn handle(
    hub: &Hub,
    node: &NodeIdentity,
    text: &str,
    metrics_stored: &mut Option<Instant>,
) -> Result<(), Ending> {
    let message: NodeMessage =
        serde_json::from_str(text).map_err(|err| Ending::violation(format!("malformed message: {err}")))?;
    let report = match message {
        NodeMessage::Hello(_) => return Err(Ending::violation("hello was already received")),
        NodeMessage::JobUpdate(update) => Report::Job { node_id: node.id, update },
        NodeMessage::Response(response) => {
            hub.finish_call(response).await;
            return Ok(());
        }
        NodeMessage::State(report) => Report::State {
            node_id: node.id,
            flows: serde_json::to_value(&report.flows).unwrap_or(Value::Array(Vec::new())),
        },
        NodeMessage::ShadowReported(report) => Report::Shadow { node_id: node.id, reported: report.reported },
        NodeMessage::Metrics(report) => {
            if metrics_stored.is_some_and(|at| at.elapsed() < METRICS_EVERY) {
                return Ok(());
            }
            *metrics_stored = Some(Instant::now());
            Report::Metrics { node_id: node.id, values: Value::Object(report.values) }
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
            Report::Event(record)
        }
    };
    hub.report(report);
    Ok(())
}

//! One tunnel connection: the handshake (HTTP Basic with the node's credentials), `hello`, then
//! serving server messages, job progress, calls and metrics until the connection ends.

use std::{sync::atomic::Ordering, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self,
        client::IntoClientRequest,
        http::{HeaderValue, StatusCode, header::AUTHORIZATION},
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
    },
};
use tracing::Level;

use super::{
    handle::{Control, StopReason},
    pacing::Pacer,
    worker::{SessionEnd, Worker, next_work},
};
use crate::tunnel::protocol::{
    CallRequest, CallResponse, Hello, MetricsReport, NodeMessage, PROTOCOL_VERSION, ServerMessage, ShadowReported,
    close_code,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server has to welcome a hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message accepted from the server (a deploy carries a whole flow).
const MAX_MESSAGE: usize = 16 << 20;

/// Small buffers: a simulated fleet holds thousands of sockets in one process.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// What the current connection knows.
struct Session {
    welcomed: bool,
    heartbeat: Duration,
    /// No frame from the server by then: the connection is dead (half-open TCP).
    deadline: tokio::time::Instant,
}

impl Session {
    /// Two missed heartbeats plus slack; before the welcome, the welcome timeout.
    fn silence_allowed(&self) -> Duration {
        if self.welcomed { self.heartbeat * 3 } else { WELCOME_TIMEOUT }
    }

    fn heard_from_server(&mut self) {
        self.deadline = tokio::time::Instant::now() + self.silence_allowed();
    }
}

enum Flow {
    Continue,
    End(SessionEnd),
}

impl Worker {
    pub(crate) async fn connect_and_serve(&mut self) -> SessionEnd {
        let mut request = match self.tunnel_url.as_str().into_client_request() {
            Ok(request) => request,
            Err(error) => {
                self.log(Level::ERROR, format!("bad tunnel URL {}: {error}", self.tunnel_url));
                return SessionEnd::Stop(StopReason::Failed(format!("bad tunnel URL: {error}")));
            }
        };
        match HeaderValue::from_str(&self.config.authorization()) {
            Ok(value) => {
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            Err(_) => return SessionEnd::Stop(StopReason::Failed("the access key is not a valid header value".into())),
        }
        let connector = match (&self.transport.tls, self.tunnel_url.starts_with("wss://")) {
            (Some(tls), true) => Some(Connector::Rustls(tls.clone())),
            _ => None,
        };
        self.log(Level::DEBUG, format!("connecting to {}", self.tunnel_url));
        let connect = tokio::time::timeout(
            CONNECT_TIMEOUT,
            // Boxed: the handshake future is large, and inline it would size every agent's task.
            Box::pin(tokio_tungstenite::connect_async_tls_with_config(
                request,
                Some(websocket_config()),
                true,
                connector,
            )),
        );
        let socket = match self.idle(connect).await {
            Err(reason) => return SessionEnd::Stop(reason),
            Ok(Err(_elapsed)) => {
                self.log(Level::WARN, format!("connecting to {} timed out", self.tunnel_url));
                return SessionEnd::Retry { welcomed: false };
            }
            Ok(Ok(Err(tungstenite::Error::Http(response)))) => {
                let status = response.status();
                if status == StatusCode::UNAUTHORIZED {
                    self.log(
                        Level::WARN,
                        format!(
                            "the server refused this node's credentials (HTTP 401): check the node id {} and its \
                             access key (deleted node or rotated key?); retrying with backoff",
                            self.config.node_id
                        ),
                    );
                } else {
                    self.log(Level::WARN, format!("the server refused the tunnel: HTTP {status}"));
                }
                return SessionEnd::Retry { welcomed: false };
            }
            Ok(Ok(Err(error))) => {
                self.log(Level::WARN, format!("cannot connect to {}: {error}", self.tunnel_url));
                return SessionEnd::Retry { welcomed: false };
            }
            Ok(Ok(Ok((socket, _response)))) => socket,
        };
        self.serve(socket).await
    }

    async fn serve(&mut self, mut socket: Socket) -> SessionEnd {
        self.outbox.clear();
        let hello = NodeMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: self.config.agent_version.clone(),
            flows: self.runtime.reports(),
            last_job_seq: self.runtime.last_job_seq(),
        });
        if let Err(error) = send(&mut socket, &hello).await {
            self.log(Level::WARN, format!("cannot send hello: {error}"));
            return SessionEnd::Retry { welcomed: false };
        }
        let mut session =
            Session { welcomed: false, heartbeat: Duration::from_secs(30), deadline: tokio::time::Instant::now() };
        session.heard_from_server();
        let period = self.config.metrics_interval.max(Duration::from_millis(100));
        let mut metrics = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_paused = false;
        // The hello took one message of the server's allowance.
        let mut pacer = Pacer::new(self.config.max_messages_per_second, self.config.message_burst.saturating_sub(1));

        let end = loop {
            let control = *self.control.borrow_and_update();
            match control {
                Control::Stop => {
                    Box::pin(close_politely(&mut socket)).await;
                    break SessionEnd::Stop(StopReason::Stopped);
                }
                // Dropping the socket sends no close frame: the server sees the TCP connection end.
                Control::Kill => break SessionEnd::Stop(StopReason::Killed),
                Control::Run | Control::Pause => {}
            }
            let paused = control == Control::Pause;
            if was_paused && !paused {
                session.heard_from_server();
            }
            was_paused = paused;
            let mut paced_until = None;
            if !paused {
                self.start_next_job();
                if session.welcomed && !self.outbox.is_empty() {
                    if pacer.try_take() {
                        if let Some(message) = self.outbox.pop_front()
                            && let Err(error) = send(&mut socket, &message).await
                        {
                            self.log(Level::WARN, format!("connection lost while sending: {error}"));
                            break SessionEnd::Retry { welcomed: true };
                        }
                        continue;
                    }
                    paced_until = Some(pacer.next_token_at());
                }
            }
            tokio::select! {
                changed = self.control.changed() => {
                    if changed.is_err() {
                        Box::pin(close_politely(&mut socket)).await;
                        break SessionEnd::Stop(StopReason::Stopped);
                    }
                }
                frame = socket.next(), if !paused => {
                    session.heard_from_server();
                    match frame {
                        None => {
                            self.log(Level::WARN, "the server ended the connection without a close frame");
                            break SessionEnd::Retry { welcomed: session.welcomed };
                        }
                        Some(Err(error)) => {
                            self.log(Level::WARN, format!("connection lost: {error}"));
                            break SessionEnd::Retry { welcomed: session.welcomed };
                        }
                        Some(Ok(frame)) => {
                            // Boxed (as below): rare, larger futures stay off every agent's task.
                            if let Flow::End(end) = Box::pin(self.on_frame(frame, &mut session, &mut socket)).await {
                                break end;
                            }
                        }
                    }
                }
                result = next_work(&mut self.current), if !paused && self.current.is_some() => {
                    Box::pin(self.finish_job(result)).await;
                }
                _ = metrics.tick(), if !paused && session.welcomed => {
                    self.outbox.push_back(self.metrics());
                }
                () = sleep_until_some(paced_until), if paced_until.is_some() => {}
                () = tokio::time::sleep_until(session.deadline), if !paused => {
                    self.log(
                        Level::WARN,
                        format!("no word from the server for {} s: reconnecting", session.silence_allowed().as_secs()),
                    );
                    break SessionEnd::Retry { welcomed: session.welcomed };
                }
            }
        };
        self.shared.connected.store(false, Ordering::Relaxed);
        self.outbox.clear();
        end
    }

    async fn on_frame(&mut self, frame: tungstenite::Message, session: &mut Session, socket: &mut Socket) -> Flow {
        use tungstenite::Message;
        match frame {
            Message::Text(text) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(message) => self.on_message(message, session).await,
                Err(error) => {
                    self.log(Level::WARN, format!("ignoring a message the agent does not understand: {error}"));
                    Flow::Continue
                }
            },
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                self.shared.details().last_close_code = Some(code);
                // Let tungstenite answer the close frame, then read to the end of the stream.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = socket.next().await {}
                })
                .await;
                Flow::End(self.on_close(code, reason))
            }
            // tungstenite answers pings itself on the next read.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Flow::Continue,
            Message::Binary(_) => {
                self.log(Level::WARN, "ignoring a binary frame");
                Flow::Continue
            }
        }
    }

    fn on_close(&mut self, code: u16, reason: String) -> SessionEnd {
        let why = if reason.is_empty() { String::new() } else { format!(": {reason}") };
        match code {
            close_code::REPLACED => {
                self.log(
                    Level::ERROR,
                    format!("another connection of this node took over (close 4000{why}); stopping so two agents with one identity do not flap"),
                );
                SessionEnd::Stop(StopReason::Closed { code, reason })
            }
            close_code::NODE_DELETED => {
                self.log(Level::ERROR, format!("the node was deleted on the server (close 4001{why}); stopping"));
                SessionEnd::Stop(StopReason::Closed { code, reason })
            }
            close_code::KEY_ROTATED => {
                self.log(
                    Level::ERROR,
                    format!("the node's access key was rotated (close 4002{why}); stopping: restart the agent with the new key"),
                );
                SessionEnd::Stop(StopReason::Closed { code, reason })
            }
            close_code::PROTOCOL_VIOLATION => {
                self.log(
                    Level::ERROR,
                    format!("the server says this agent broke the protocol (close 4003{why}); reconnecting"),
                );
                SessionEnd::Retry { welcomed: true }
            }
            close_code::GOING_AWAY => {
                self.log(Level::INFO, format!("the server is going away (close 1001{why}); reconnecting"));
                SessionEnd::Retry { welcomed: true }
            }
            other => {
                self.log(Level::WARN, format!("the server closed the tunnel (close {other}{why}); reconnecting"));
                SessionEnd::Retry { welcomed: true }
            }
        }
    }

    async fn on_message(&mut self, message: ServerMessage, session: &mut Session) -> Flow {
        match message {
            ServerMessage::Welcome(welcome) => {
                if welcome.node_id != self.config.node_id {
                    self.log(
                        Level::WARN,
                        format!("welcomed as node {}, expected {}", welcome.node_id, self.config.node_id),
                    );
                }
                session.welcomed = true;
                session.heartbeat = Duration::from_secs(welcome.heartbeat_seconds.max(1));
                session.heard_from_server();
                self.shared.connected.store(true, Ordering::Relaxed);
                {
                    let mut details = self.shared.details();
                    details.connections += 1;
                    details.session_id = Some(welcome.session_id);
                }
                self.log(
                    Level::INFO,
                    format!(
                        "connected to {} as node {} (session {}, heartbeat {} s)",
                        self.config.server_base(),
                        self.config.node_id,
                        welcome.session_id,
                        welcome.heartbeat_seconds
                    ),
                );
            }
            ServerMessage::Job(job) => self.on_job(job),
            ServerMessage::JobCanceled(canceled) => self.cancel_job(canceled.job_id),
            ServerMessage::Request(request) => {
                let response = self.call(&request);
                self.outbox.push_back(NodeMessage::Response(response));
            }
            ServerMessage::Shadow(shadow) => {
                let known = self
                    .runtime
                    .shadow()
                    .is_some_and(|known| known.version == shadow.version && known.desired == shadow.desired);
                if !known {
                    self.log(Level::INFO, format!("desired shadow version {}", shadow.version));
                    self.runtime.set_shadow(shadow.desired.clone(), shadow.version);
                    self.persist().await;
                }
                self.outbox.push_back(NodeMessage::ShadowReported(ShadowReported {
                    reported: shadow.desired,
                    version: Some(shadow.version),
                }));
            }
        }
        Flow::Continue
    }

    /// Answers a synchronous call: `health`, `logs {tail}`, `runtime`.
    fn call(&self, request: &CallRequest) -> CallResponse {
        let result = match request.method.as_str() {
            "health" => Some(json!({
                "status": "ok",
                "uptimeSeconds": self.uptime().as_secs(),
                "agentVersion": self.config.agent_version,
                "flowsRunning": self.runtime.running_count(),
                "jobsDone": self.shared.jobs_done.load(Ordering::Relaxed),
                "jobsQueued": self.queue.len() + usize::from(self.current.is_some()),
            })),
            "logs" => {
                let tail = request.params.get("tail").and_then(Value::as_u64).unwrap_or(100);
                let tail = usize::try_from(tail).unwrap_or(usize::MAX).min(self.config.log_capacity);
                Some(json!({"lines": self.shared.logs().tail(tail)}))
            }
            "runtime" => Some(json!({"flows": self.runtime.reports()})),
            _ => None,
        };
        match result {
            Some(result) => CallResponse { id: request.id, ok: true, result: Some(result), error: None },
            None => {
                self.log(Level::DEBUG, format!("unknown method {:?} called", request.method));
                CallResponse { id: request.id, ok: false, result: None, error: Some("unknown method".into()) }
            }
        }
    }

    fn metrics(&self) -> NodeMessage {
        let mut values = Map::new();
        values.insert("flowsRunning".into(), json!(self.runtime.running_count()));
        values.insert("jobsDone".into(), json!(self.shared.jobs_done.load(Ordering::Relaxed)));
        values.insert("jobsFailed".into(), json!(self.shared.jobs_failed.load(Ordering::Relaxed)));
        values.insert("jobsQueued".into(), json!(self.queue.len() + usize::from(self.current.is_some())));
        values.insert("uptimeSeconds".into(), json!(self.uptime().as_secs()));
        NodeMessage::Metrics(MetricsReport { values })
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn send(socket: &mut Socket, message: &NodeMessage) -> Result<(), String> {
    let text = serde_json::to_string(message).map_err(|error| format!("cannot encode a message: {error}"))?;
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(tungstenite::Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("sending timed out".into()),
    }
}

/// Sends a normal close frame and waits briefly for the server's answer.
async fn close_politely(socket: &mut Socket) {
    let frame = CloseFrame { code: CloseCode::Normal, reason: "agent stopping".into() };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if socket.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
}

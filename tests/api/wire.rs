//! A raw tunnel client for tests that need to control every frame (the reference agent is used
//! where a well-behaved node is enough).

#![allow(dead_code)]

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest, protocol::CloseFrame},
};
use uuid::Uuid;

use crate::helpers::{Session, TestApp, body};

pub struct Node {
    pub id: Uuid,
    pub key: String,
    pub name: String,
}

/// Creates an edge node in the session's organization (Crosser's call).
pub async fn create_node(app: &TestApp, session: &Session, name: &str) -> Node {
    create_node_with(
        app,
        session,
        json!({"name": name, "organizationId": session.organization_id, "type": "Production"}),
    )
    .await
}

pub async fn create_node_with(app: &TestApp, session: &Session, body_json: Value) -> Node {
    let response = app.post("/api/edgenodes", session).json(&body_json).send().await.unwrap();
    let (status, value) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    Node {
        id: value["id"].as_str().unwrap().parse().unwrap(),
        key: value["accessKey"].as_str().unwrap().to_owned(),
        name: value["name"].as_str().unwrap().to_owned(),
    }
}

/// Creates a flow definition (no versions yet) to name in start and stop commands.
pub async fn create_flow_definition(app: &TestApp, session: &Session, name: &str) -> Uuid {
    let response = app.post("/api/flowdefinitions", session).json(&json!({"name": name})).send().await.unwrap();
    let (status, value) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value["id"].as_str().unwrap().parse().unwrap()
}

/// Why the node's connections ended, as its `node.disconnected` events say.
pub async fn disconnect_reasons(app: &TestApp, node_id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT message FROM events WHERE node_id = $1 AND action = 'node.disconnected'")
        .bind(node_id)
        .fetch_all(&mut app.db().await)
        .await
        .unwrap()
}

pub fn tunnel_url(app: &TestApp) -> String {
    format!("{}/api/tunnel", app.base_url.replacen("http", "ws", 1))
}

pub struct Wire {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// Opens the tunnel with these credentials; the HTTP status when refused before the upgrade.
pub async fn open(app: &TestApp, node_id: Uuid, key: &str) -> Result<Wire, StatusCode> {
    let mut request = tunnel_url(app).into_client_request().unwrap();
    let credentials = STANDARD.encode(format!("{node_id}:{key}"));
    request.headers_mut().insert("authorization", format!("Basic {credentials}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(Wire { socket }),
        Err(tungstenite::Error::Http(response)) => Err(StatusCode::from_u16(response.status().as_u16()).unwrap()),
        Err(other) => panic!("unexpected connect error: {other}"),
    }
}

impl Wire {
    /// Opens the tunnel and says hello; answers the welcome.
    pub async fn connect(app: &TestApp, node: &Node) -> (Self, Value) {
        let mut wire = open(app, node.id, &node.key).await.expect("tunnel refused");
        wire.send(json!({"type": "hello", "protocolVersion": 1, "agentVersion": "wire-test", "flows": []})).await;
        let welcome = wire.recv().await.expect("welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (wire, welcome)
    }

    pub async fn send(&mut self, message: Value) {
        self.socket.send(Message::Text(message.to_string().into())).await.unwrap();
    }

    /// The next text message within 5 s (pings are answered by tungstenite on read).
    pub async fn recv(&mut self) -> Option<Value> {
        self.recv_within(Duration::from_secs(5)).await
    }

    pub async fn recv_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await.ok()??;
            match next {
                Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next message of this type, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await.unwrap_or_else(|| panic!("no {kind} message"));
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Waits for the server to close; answers its close code.
    pub async fn closed_with(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f: CloseFrame| f.code.into()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) | Err(_) => return None,
            }
        }
    }

    /// Reports a job's progress.
    pub async fn job_update(&mut self, job_id: &str, state: &str) {
        self.send(json!({"type": "jobUpdate", "jobId": job_id, "state": state})).await;
    }
}

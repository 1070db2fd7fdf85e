//! In-process tests of the agent against a scripted fake tunnel server (the real one is tested
//! in tests/api/agent.rs): handshake, jobs, dedupe, restart, calls, shadow, close codes,
//! backoff after 401, kill, pause, dead-connection detection, resource checks, fail fraction.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::server::{ErrorResponse, Request, Response},
        http::StatusCode,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use uuid::Uuid;

use super::*;
use crate::tunnel::protocol::{
    CallRequest, DeployFlow, DeployResource, FlowReport, Hello, Job, JobCanceled, JobCommand, JobUpdate,
    JobUpdateState, NodeMessage, PROTOCOL_VERSION, ServerMessage, Shadow, Welcome,
};

const WAIT: Duration = Duration::from_secs(5);

struct FakeServer {
    base_url: String,
    connections: mpsc::UnboundedReceiver<Conn>,
    /// Refuse this many handshakes with 401 first.
    refuse: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
}

struct Conn {
    ws: WebSocketStream<TcpStream>,
    authorization: String,
}

async fn fake_server() -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let (sender, connections) = mpsc::unbounded_channel();
    let refuse = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicUsize::new(0));
    let (refuse_in_task, attempts_in_task) = (refuse.clone(), attempts.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (sender, refuse, attempts) = (sender.clone(), refuse_in_task.clone(), attempts_in_task.clone());
            tokio::spawn(async move {
                let mut authorization = String::new();
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(request.uri().path(), "/api/tunnel");
                    authorization = request
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if refuse.load(Ordering::SeqCst) > 0 {
                        refuse.fetch_sub(1, Ordering::SeqCst);
                        let mut refused = ErrorResponse::new(Some("bad credentials".into()));
                        *refused.status_mut() = StatusCode::UNAUTHORIZED;
                        return Err(refused);
                    }
                    Ok(response)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
                    let _ = sender.send(Conn { ws, authorization });
                }
            });
        }
    });
    FakeServer { base_url, connections, refuse, attempts }
}

impl FakeServer {
    async fn accept(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.connections.recv()).await.expect("no connection in time").expect("server")
    }

    async fn no_connection_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.connections.recv()).await.is_err()
    }

    fn config(&self, node_id: Uuid) -> AgentConfig {
        let mut config = AgentConfig::new(self.base_url.clone(), node_id, "the-access-key");
        config.job_duration = Duration::from_millis(1);
        config.backoff_base = Duration::from_millis(10);
        config.backoff_max = Duration::from_millis(100);
        config
    }
}

impl Conn {
    async fn recv(&mut self) -> NodeMessage {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no message in time")
                .expect("connection ended")
                .expect("connection error");
            match frame {
                Message::Text(text) => return serde_json::from_str(&text).expect("a node message"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    async fn send(&mut self, message: ServerMessage) {
        let text = serde_json::to_string(&message).unwrap();
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Reads hello and answers welcome.
    async fn welcome(&mut self, node_id: Uuid, heartbeat_seconds: u64) -> Hello {
        let NodeMessage::Hello(hello) = self.recv().await else { panic!("hello first") };
        self.send(ServerMessage::Welcome(Welcome {
            node_id,
            session_id: Uuid::new_v4(),
            server_time: chrono::Utc::now().into(),
            heartbeat_seconds,
        }))
        .await;
        hello
    }

    async fn update(&mut self) -> JobUpdate {
        match self.recv().await {
            NodeMessage::JobUpdate(update) => update,
            other => panic!("expected jobUpdate, got {other:?}"),
        }
    }

    /// Sends a job and reads its updates up to the final one, then the state report (and the
    /// error event of a failure).
    async fn run_job(&mut self, job: &Job) -> (JobUpdate, Vec<FlowReport>) {
        self.send(ServerMessage::Job(job.clone())).await;
        assert_eq!(self.update().await.state, JobUpdateState::Received);
        assert_eq!(self.update().await.state, JobUpdateState::InProgress);
        let last = self.update().await;
        assert_eq!(last.job_id, job.id);
        let NodeMessage::State(state) = self.recv().await else { panic!("state after a job") };
        if last.state == JobUpdateState::Failed {
            let NodeMessage::Event(event) = self.recv().await else { panic!("event after a failure") };
            assert_eq!(event.level, "Error");
            assert_eq!(event.flow_definition_id, job.flow_definition_id);
        }
        (last, state.flows)
    }

    async fn call(&mut self, method: &str, params: serde_json::Value) -> crate::tunnel::protocol::CallResponse {
        let id = Uuid::new_v4();
        self.send(ServerMessage::Request(CallRequest { id, method: method.into(), params })).await;
        loop {
            if let NodeMessage::Response(response) = self.recv().await {
                assert_eq!(response.id, id);
                return response;
            }
        }
    }

    /// Closes with `code` and, as a server does, drops the connection once the agent answers.
    async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_owned().into() };
        let _ = self.ws.close(Some(frame)).await;
        let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }

    /// Reads until the stream ends (answering a close frame); true if a close frame came.
    async fn ends_with_close_frame(&mut self) -> bool {
        let mut closed = false;
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("the connection did not end") {
                Some(Ok(Message::Close(_))) => closed = true,
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return closed,
            }
        }
    }
}

/// Stops the agent while the server side reads and then drops the socket, as a server does, so
/// the close handshake completes at once.
async fn stop(agent: AgentHandle, mut conn: Conn) {
    let server_side = async move { conn.ends_with_close_frame().await };
    let ((), closed) = tokio::join!(agent.stop(), server_side);
    assert!(closed, "stop sends a close frame");
}

fn job(seq: i64, command: JobCommand, flow_definition_id: Uuid) -> Job {
    Job {
        id: Uuid::new_v4(),
        seq,
        command,
        flow_definition_id: Some(flow_definition_id),
        deployment_id: None,
        flow: None,
    }
}

fn deploy(seq: i64, flow_definition_id: Uuid, resources: Vec<DeployResource>) -> Job {
    let flow = DeployFlow {
        flow_definition_id,
        flow_id: Uuid::new_v4(),
        version: seq,
        name: "Temperature".into(),
        content: json!({"modules": [], "connections": []}),
        resources,
    };
    Job { flow: Some(flow), ..job(seq, JobCommand::Deploy, flow_definition_id) }
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("edgeflow-agent-test-{}", Uuid::new_v4().simple()))
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test]
async fn says_hello_runs_jobs_once_and_answers_calls() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let agent = Agent::spawn(server.config(node)).unwrap();
    let mut conn = server.accept().await;
    assert_eq!(conn.authorization, basic_authorization(node, "the-access-key"));
    let hello = conn.welcome(node, 30).await;
    assert_eq!((hello.protocol_version, hello.last_job_seq, hello.flows.len()), (PROTOCOL_VERSION, None, 0));
    assert!(eventually(|| agent.is_connected()).await);

    conn.send(ServerMessage::Shadow(Shadow { desired: json!({"sampleRate": 5}), version: 3 })).await;
    let NodeMessage::ShadowReported(reported) = conn.recv().await else { panic!("shadowReported") };
    assert_eq!((reported.reported, reported.version), (json!({"sampleRate": 5}), Some(3)));

    let definition = Uuid::new_v4();
    let first = deploy(1, definition, vec![]);
    let (update, flows) = conn.run_job(&first).await;
    assert_eq!(update.state, JobUpdateState::Succeeded);
    assert_eq!((flows.len(), flows[0].state.as_str(), flows[0].version), (1, "running", Some(1)));

    // Redelivered: reported again, not run again.
    conn.send(ServerMessage::Job(first.clone())).await;
    let again = conn.update().await;
    assert_eq!((again.job_id, again.state), (first.id, JobUpdateState::Succeeded));
    assert_eq!(agent.executions(first.id), 1);

    let stop_job = job(2, JobCommand::Stop, definition);
    assert_eq!(conn.run_job(&stop_job).await.1[0].state, "stopped");
    let not_there = job(3, JobCommand::Start, Uuid::new_v4());
    let (failed, _) = conn.run_job(&not_there).await;
    assert_eq!((failed.state, failed.error.as_deref()), (JobUpdateState::Failed, Some("flow not deployed")));
    assert_eq!(agent.status().jobs_failed, 1);
    assert_eq!(agent.jobs_done(), 3);

    let health = conn.call("health", json!({})).await;
    assert!(health.ok);
    let health = health.result.unwrap();
    assert_eq!((health["status"].as_str(), health["flowsRunning"].as_u64()), (Some("ok"), Some(0)));
    assert_eq!(health["agentVersion"], DEFAULT_AGENT_VERSION);
    let logs = conn.call("logs", json!({"tail": 2})).await.result.unwrap();
    let lines = logs["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].as_str().unwrap().contains("failed: flow not deployed"), "{lines:?}");
    let runtime = conn.call("runtime", json!(null)).await.result.unwrap();
    assert_eq!(runtime["flows"][0]["flowDefinitionId"], definition.to_string());
    assert_eq!(runtime["flows"][0]["state"], "stopped");
    let unknown = conn.call("teleport", json!({})).await;
    assert_eq!((unknown.ok, unknown.error.as_deref()), (false, Some("unknown method")));

    stop(agent, conn).await;
}

#[tokio::test]
async fn jobs_run_in_order_one_at_a_time_and_queued_ones_can_be_canceled() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let mut config = server.config(node);
    config.job_duration = Duration::from_millis(50);
    let agent = Agent::spawn(config).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    let definition = Uuid::new_v4();
    let jobs =
        [deploy(1, definition, vec![]), job(2, JobCommand::Stop, definition), job(3, JobCommand::Start, definition)];
    let canceled = job(4, JobCommand::Remove, definition);
    for job in jobs.iter().chain([&canceled]) {
        conn.send(ServerMessage::Job(job.clone())).await;
    }
    conn.send(ServerMessage::JobCanceled(JobCanceled { job_id: canceled.id })).await;
    let mut finals = Vec::new();
    let mut in_progress = Vec::new();
    while finals.len() < 3 {
        if let NodeMessage::JobUpdate(update) = conn.recv().await {
            match update.state {
                JobUpdateState::InProgress => {
                    // Never two at once: the previous one finished before this started.
                    assert_eq!(in_progress.len(), finals.len(), "{update:?}");
                    in_progress.push(update.job_id);
                }
                JobUpdateState::Succeeded | JobUpdateState::Failed => finals.push((update.job_id, update.state)),
                JobUpdateState::Received => {}
            }
        }
    }
    assert_eq!(in_progress, jobs.iter().map(|j| j.id).collect::<Vec<_>>());
    assert!(finals.iter().all(|(_, state)| *state == JobUpdateState::Succeeded), "{finals:?}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(agent.executions(canceled.id), 0);
    assert_eq!(agent.flows()[0].state, "running");
    stop(agent, conn).await;
}

#[tokio::test]
async fn a_restarted_agent_resumes_and_does_not_rerun_finished_jobs() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let dir = temp_dir();
    let mut config = server.config(node);
    config.state_dir = Some(dir.clone());

    let agent = Agent::spawn(config.clone()).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    let definition = Uuid::new_v4();
    let first = deploy(7, definition, vec![]);
    conn.run_job(&first).await;
    conn.send(ServerMessage::Shadow(Shadow { desired: json!({"a": 1}), version: 1 })).await;
    conn.recv().await;
    stop(agent, conn).await;

    let restarted = Agent::spawn(config).unwrap();
    let mut conn = server.accept().await;
    let hello = conn.welcome(node, 30).await;
    assert_eq!(hello.last_job_seq, Some(7));
    assert_eq!((hello.flows.len(), hello.flows[0].flow_definition_id), (1, definition));
    conn.send(ServerMessage::Job(first.clone())).await;
    let update = conn.update().await;
    assert_eq!((update.job_id, update.state), (first.id, JobUpdateState::Succeeded));
    assert_eq!(restarted.executions(first.id), 0, "finished before the restart: not run again");
    assert_eq!(restarted.flows().len(), 1);
    stop(restarted, conn).await;

    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["shadow"]["desired"], json!({"a": 1}));
    assert_eq!(saved["finishedJobs"][0]["id"], first.id.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn reconnects_on_going_away_and_protocol_violation_but_not_when_deleted() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let mut agent = Agent::spawn(server.config(node)).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    conn.close(1001, "server shutting down").await;

    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    assert!(eventually(|| agent.status().connections == 2).await);
    assert_eq!(agent.last_close_code(), Some(1001));
    conn.close(4003, "bad message").await;

    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    assert!(eventually(|| agent.status().connections == 3).await);
    conn.close(4001, "node deleted").await;
    let reason = agent.wait_stopped(WAIT).await;
    assert_eq!(reason, Some(StopReason::Closed { code: 4001, reason: "node deleted".into() }));
    assert!(!agent.is_connected());
    assert!(server.no_connection_within(Duration::from_millis(300)).await, "a deleted node does not come back");
}

#[tokio::test]
async fn replaced_and_rotated_stop_the_agent() {
    for code in [4000u16, 4002] {
        let mut server = fake_server().await;
        let node = Uuid::new_v4();
        let mut agent = Agent::spawn(server.config(node)).unwrap();
        let mut conn = server.accept().await;
        conn.welcome(node, 30).await;
        conn.close(code, "").await;
        assert!(matches!(agent.wait_stopped(WAIT).await, Some(StopReason::Closed { code: c, .. }) if c == code));
        assert!(server.no_connection_within(Duration::from_millis(300)).await);
    }
}

#[tokio::test]
async fn backs_off_and_retries_after_401() {
    let mut server = fake_server().await;
    server.refuse.store(3, Ordering::SeqCst);
    let node = Uuid::new_v4();
    let agent = Agent::spawn(server.config(node)).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    assert!(eventually(|| agent.is_connected()).await);
    assert_eq!(server.attempts.load(Ordering::SeqCst), 4);
    assert!(agent.log_lines(100).iter().any(|l| l.contains("HTTP 401")), "{:?}", agent.log_lines(100));
    stop(agent, conn).await;
}

#[tokio::test]
async fn reconnects_when_the_server_falls_silent() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let agent = Agent::spawn(server.config(node)).unwrap();
    let mut first = server.accept().await;
    first.welcome(node, 1).await;
    // No pings for three heartbeats: the agent gives up on this connection.
    let mut second = tokio::time::timeout(Duration::from_secs(6), server.connections.recv()).await.unwrap().unwrap();
    second.welcome(node, 30).await;
    assert!(eventually(|| agent.status().connections == 2).await);
    drop(first);
    stop(agent, second).await;
}

#[tokio::test]
async fn kill_drops_the_socket_without_a_close_frame() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let agent = Agent::spawn(server.config(node)).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    assert!(eventually(|| agent.is_connected()).await);
    agent.kill().await;
    assert!(!conn.ends_with_close_frame().await);
}

#[tokio::test]
async fn a_paused_agent_does_not_answer_pings() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let agent = Agent::spawn(server.config(node)).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    assert!(eventually(|| agent.is_connected()).await);

    conn.ws.send(Message::Ping(b"1".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(WAIT, conn.ws.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(pong, Message::Pong(_)), "{pong:?}");

    agent.pause();
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.ws.send(Message::Ping(b"2".to_vec().into())).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), conn.ws.next()).await.is_err(), "no pong while paused");
    agent.resume();
    let pong = tokio::time::timeout(WAIT, conn.ws.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(pong, Message::Pong(_)), "{pong:?}");
    stop(agent, conn).await;
}

#[tokio::test]
async fn fail_fraction_fails_the_predicted_jobs() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let mut config = server.config(node);
    config.fail_fraction = 0.5;
    config.job_duration = Duration::ZERO;
    let agent = Agent::spawn(config).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    let definition = Uuid::new_v4();
    let mut expected_failures = 0;
    for seq in 1..=20 {
        let job = job(seq, JobCommand::Remove, definition);
        let predicted = fails_by_fraction(job.id, 0.5);
        expected_failures += usize::from(predicted);
        let (update, _) = conn.run_job(&job).await;
        assert_eq!(update.state == JobUpdateState::Failed, predicted);
        if predicted {
            assert!(update.error.unwrap().contains("simulated failure"));
        }
    }
    assert_eq!(agent.status().jobs_failed, expected_failures as u64);
    stop(agent, conn).await;
}

/// A file server for resource downloads that wants the node's Basic credential.
async fn file_server(content: &'static [u8], authorization: String) -> String {
    use axum::{http::HeaderMap, routing::get};
    let app = axum::Router::new().route(
        "/files/{name}",
        get(move |headers: HeaderMap| async move {
            let given = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if given == authorization { Ok(content) } else { Err(axum::http::StatusCode::UNAUTHORIZED) }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn deploy_downloads_and_checks_resources() {
    const CONTENT: &[u8] = b"model weights v1";
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let files = file_server(CONTENT, basic_authorization(node, "the-access-key")).await;
    let dir = temp_dir();
    let mut config = server.config(node);
    config.state_dir = Some(dir.clone());
    let agent = Agent::spawn(config).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;

    let sha = hex::encode(Sha256::digest(CONTENT));
    let resource = |version_id: Uuid, size: usize, sha256: &str| DeployResource {
        resource_id: Uuid::new_v4(),
        version_id,
        path: Some("model.bin".into()),
        size_in_bytes: size as i64,
        sha256: sha256.to_owned(),
        download_url: format!("{files}/files/{version_id}"),
    };
    let definition = Uuid::new_v4();
    let good = Uuid::new_v4();
    let (update, flows) = conn.run_job(&deploy(1, definition, vec![resource(good, CONTENT.len(), &sha)])).await;
    assert_eq!(update.state, JobUpdateState::Succeeded, "{update:?}");
    assert_eq!(flows.len(), 1);
    assert_eq!(std::fs::read(dir.join("resources").join(good.to_string())).unwrap(), CONTENT);

    let wrong_hash = hex::encode(Sha256::digest(b"something else"));
    let (update, flows) =
        conn.run_job(&deploy(2, definition, vec![resource(Uuid::new_v4(), CONTENT.len(), &wrong_hash)])).await;
    assert_eq!(update.state, JobUpdateState::Failed);
    assert!(update.error.as_deref().unwrap().contains("sha256 mismatch"), "{update:?}");
    assert_eq!(flows[0].version, Some(1), "the running version stays");

    let (update, _) = conn.run_job(&deploy(3, definition, vec![resource(Uuid::new_v4(), 3, &sha)])).await;
    assert!(update.error.as_deref().unwrap().contains("size mismatch"), "{update:?}");

    let mut unauthorized = resource(Uuid::new_v4(), CONTENT.len(), &sha);
    unauthorized.download_url = format!("{files}/nothing-here");
    let (update, _) = conn.run_job(&deploy(4, definition, vec![unauthorized])).await;
    assert!(update.error.as_deref().unwrap().contains("HTTP 404"), "{update:?}");

    // Removing the flow removes its files.
    conn.run_job(&job(5, JobCommand::Remove, definition)).await;
    assert!(!dir.join("resources").join(good.to_string()).exists());
    stop(agent, conn).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_job_keeps_running_across_a_reconnect_and_runs_once() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let mut config = server.config(node);
    config.job_duration = Duration::from_millis(300);
    let agent = Agent::spawn(config).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    let slow = deploy(1, Uuid::new_v4(), vec![]);
    conn.send(ServerMessage::Job(slow.clone())).await;
    assert_eq!(conn.update().await.state, JobUpdateState::Received);
    assert_eq!(conn.update().await.state, JobUpdateState::InProgress);
    conn.close(1001, "").await;

    // The server redelivers the unfinished job on the new connection.
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    conn.send(ServerMessage::Job(slow.clone())).await;
    let update = loop {
        let update = conn.update().await;
        if update.state == JobUpdateState::Succeeded {
            break update;
        }
    };
    assert_eq!(update.job_id, slow.id);
    assert_eq!(agent.executions(slow.id), 1);
    stop(agent, conn).await;
}

#[tokio::test]
async fn spawn_refuses_bad_settings() {
    let mut config = AgentConfig::new("ftp://example.com", Uuid::new_v4(), "k");
    assert!(Agent::spawn(config.clone()).is_err());
    config.server = "http://127.0.0.1:1".into();
    config.fail_fraction = 1.5;
    assert!(Agent::spawn(config.clone()).is_err());
    config.fail_fraction = 0.0;
    config.ca_cert = Some(temp_dir().join("missing.pem"));
    assert!(Agent::spawn(config).is_err());
}

#[tokio::test]
async fn messages_are_paced_under_the_server_limit() {
    let mut server = fake_server().await;
    let node = Uuid::new_v4();
    let mut config = server.config(node);
    config.job_duration = Duration::ZERO;
    config.max_messages_per_second = 40;
    config.message_burst = 5;
    let agent = Agent::spawn(config).unwrap();
    let mut conn = server.accept().await;
    conn.welcome(node, 30).await;
    let definition = Uuid::new_v4();
    let jobs: Vec<Job> = (1..=5).map(|seq| job(seq, JobCommand::Remove, definition)).collect();
    for job in &jobs {
        conn.send(ServerMessage::Job(job.clone())).await;
    }
    // 5 jobs x 4 messages (received, inProgress, succeeded, state) = 20; the hello took one of
    // the burst of 5, so 16 wait for tokens at 40 per second: at least 0.4 s.
    let started = std::time::Instant::now();
    for _ in 0..20 {
        conn.recv().await;
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    stop(agent, conn).await;
}

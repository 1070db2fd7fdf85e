//! Pieces the benchmarks share: a fresh database, the server as its own process (so its memory
//! is its own), nodes written straight into the database, and a fleet of minimal tunnel clients
//! that answer every job with success.

#![allow(dead_code)]

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, protocol::WebSocketConfig};
use uuid::Uuid;

pub const EMAIL: &str = "bench@example.com";
pub const PASSWORD: &str = "bench-password-123";

pub fn database_url(name: &str) -> String {
    std::env::var("EDGEFLOW_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("postgres://postgres@127.0.0.1:5432/{name}"))
}

pub async fn fresh_database(url: &str) {
    let (base, name) = url.rsplit_once('/').expect("database url with a name");
    let mut conn = PgConnection::connect(&format!("{base}/postgres")).await.expect("PostgreSQL reachable");
    conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).await.expect("drop");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await.expect("create");
}

/// One row of the benchmark report (scripts/bench-report): with `EDGEFLOW_BENCH_SUMMARY` set to a
/// file, appends `| figure | value | baseline |` to it, so one run of every benchmark ends in one
/// table of every figure next to its baseline.
pub fn summary(figure: &str, value: String, baseline: String) {
    let Some(path) = std::env::var_os("EDGEFLOW_BENCH_SUMMARY") else { return };
    let row = format!("| {figure} | {value} | {baseline} |\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, row.as_bytes()));
    if let Err(err) = written {
        eprintln!("cannot append to the benchmark summary {}: {err}", path.to_string_lossy());
    }
}

pub fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1000.0
}

/// The `edgeflow` binary serving on a free port; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub base: String,
    pub token: String,
    pub organization: Uuid,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// POSTs `body` as the bench user and answers the JSON reply; anything but a 2xx ends the run.
    pub async fn post(&self, client: &reqwest::Client, path: &str, body: Value) -> Value {
        let response = client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let value: Value = response.json().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path}: {status} {value}");
        value
    }

    /// Starts the server binary on `database_url` (`EDGEFLOW_BENCH_SERVER_LOG` shows its logs)
    /// and signs in.
    pub async fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let log = std::env::var("EDGEFLOW_BENCH_SERVER_LOG").ok();
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        command
            .env("DATABASE_URL", database_url)
            .env("EDGEFLOW_LISTEN", format!("127.0.0.1:{port}"))
            .env("EDGEFLOW_ADMIN_EMAIL", EMAIL)
            .env("EDGEFLOW_ADMIN_PASSWORD", PASSWORD)
            .env("EDGEFLOW_DB_MAX_CONNECTIONS", "20")
            .env("RUST_LOG", log.clone().unwrap_or_else(|| "warn".into()))
            .stdout(if log.is_some() { Stdio::inherit() } else { Stdio::null() });
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start the server binary");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tokens: Value = client
            .post(format!("{base}/api/authentication/login"))
            .json(&json!({"email": EMAIL, "password": PASSWORD}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("tokens");
        Self {
            child,
            port,
            base,
            token: tokens["token"].as_str().expect("token").to_owned(),
            organization: tokens["organizationId"].as_str().and_then(|s| s.parse().ok()).expect("organization"),
        }
    }
}

/// `count` nodes labelled `{"bench": "1"}`, written straight into the database (creating them
/// through the API is not what the benchmarks measure). Node i's key is `efn_bench_<i>`, stored
/// as its SHA-256 like the API does.
pub async fn insert_nodes(db: &mut PgConnection, organization: Uuid, count: usize) -> Vec<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO edge_nodes (id, organization_id, name, node_type, labels, access_key_hash, access_key_prefix) \
         SELECT gen_random_uuid(), $1, 'bench-' || i, 'Production', '{\"bench\": \"1\"}', \
                sha256(convert_to('efn_bench_' || i, 'UTF8')), 'efn_bench_' \
         FROM generate_series(0, $2 - 1) AS i ORDER BY i RETURNING id",
    )
    .bind(organization)
    .bind(count as i64)
    .fetch_all(db)
    .await
    .expect("nodes")
}

/// A fleet of minimal nodes: they say hello, and answer every job `succeeded` at once.
pub struct Fleet {
    pub connected: usize,
    pub connect_time: Duration,
    /// When each job arrived, as the nodes receive them.
    pub received: mpsc::UnboundedReceiver<Instant>,
    tasks: Vec<tokio::task::JoinHandle<Option<()>>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub async fn connect_fleet(port: u16, ids: &[Uuid]) -> Fleet {
    let url = format!("ws://127.0.0.1:{port}/api/tunnel");
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    let (received_tx, received) = mpsc::unbounded_channel::<Instant>();
    let mut tasks = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let (gate, url, ready, received) = (gate.clone(), url.clone(), ready_tx.clone(), received_tx.clone());
        let credentials = STANDARD.encode(format!("{id}:efn_bench_{i}"));
        tasks.push(tokio::spawn(async move {
            let mut permit = Some(gate.acquire_owned().await.ok()?);
            let mut request = url.into_client_request().ok()?;
            request.headers_mut().insert("authorization", format!("Basic {credentials}").parse().ok()?);
            let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
            let (mut socket, _) =
                tokio_tungstenite::connect_async_with_config(request, Some(config), true).await.ok()?;
            let hello = json!({"type": "hello", "protocolVersion": 1, "agentVersion": "bench", "flows": []});
            socket.send(Message::Text(hello.to_string().into())).await.ok()?;
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else { continue };
                let value: Value = serde_json::from_str(&text).ok()?;
                match value["type"].as_str() {
                    Some("welcome") => {
                        // Handshake done: free the slot for the next node.
                        permit.take();
                        let _ = ready.send(());
                    }
                    Some("job") => {
                        let _ = received.send(Instant::now());
                        let update = json!({"type": "jobUpdate", "jobId": value["id"], "state": "succeeded"});
                        socket.send(Message::Text(update.to_string().into())).await.ok()?;
                    }
                    _ => {}
                }
            }
            Some(())
        }));
    }
    drop(ready_tx);
    let mut connected = 0;
    while connected < ids.len() {
        match tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await {
            Ok(Some(())) => connected += 1,
            _ => break,
        }
    }
    Fleet { connected, connect_time: started.elapsed(), received, tasks }
}

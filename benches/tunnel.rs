//! Benchmark of the tunnel hub, printing:
//! - how many simulated nodes one server holds connected at once, the server's RSS and RSS per
//!   connection (the server runs as its own process, so its memory is its own);
//! - the time from one API call (a bulk `start` for every node) to each node having received its
//!   job: p50 / p99 / all, and until every job reads Succeeded in the database;
//! - as a baseline in the same run, one `SELECT 1` round trip to the same PostgreSQL.
//!
//! Run: `cargo bench --bench tunnel` (EDGEFLOW_BENCH_NODES, default 10000; needs PostgreSQL at
//! EDGEFLOW_BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/edgeflow_bench_tunnel,
//! which it drops and recreates).

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, protocol::WebSocketConfig};
use uuid::Uuid;

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "bench-password-123";

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1000.0
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn fresh_database(url: &str) {
    let (base, name) = url.rsplit_once('/').expect("database url with a name");
    let mut conn = PgConnection::connect(&format!("{base}/postgres")).await.expect("PostgreSQL reachable");
    conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).await.expect("drop");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await.expect("create");
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let nodes: usize = std::env::var("EDGEFLOW_BENCH_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let database_url = std::env::var("EDGEFLOW_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/edgeflow_bench_tunnel".to_owned());
    fresh_database(&database_url).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_edgeflow"))
            .env("DATABASE_URL", &database_url)
            .env("EDGEFLOW_LISTEN", format!("127.0.0.1:{port}"))
            .env("EDGEFLOW_ADMIN_EMAIL", EMAIL)
            .env("EDGEFLOW_ADMIN_PASSWORD", PASSWORD)
            .env("EDGEFLOW_DB_MAX_CONNECTIONS", "20")
            .env("RUST_LOG", std::env::var("EDGEFLOW_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(if std::env::var_os("EDGEFLOW_BENCH_SERVER_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("start the server binary"),
    );
    let pid = server.0.id();
    let client = reqwest::Client::new();
    for _ in 0..200 {
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
    let token = tokens["token"].as_str().expect("token").to_owned();
    let organization: Uuid = tokens["organizationId"].as_str().and_then(|s| s.parse().ok()).expect("organization");

    // The nodes, written straight into the database (creating 10,000 through the API is not what
    // this measures): key i is "efn_bench_<i>", stored as its SHA-256 like the API does.
    let mut db = PgConnection::connect(&database_url).await.expect("db");
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO edge_nodes (id, organization_id, name, node_type, labels, access_key_hash, access_key_prefix) \
         SELECT gen_random_uuid(), $1, 'bench-' || i, 'Production', '{\"bench\": \"1\"}', \
                sha256(convert_to('efn_bench_' || i, 'UTF8')), 'efn_bench_' \
         FROM generate_series(0, $2 - 1) AS i ORDER BY i RETURNING id",
    )
    .bind(organization)
    .bind(nodes as i64)
    .fetch_all(&mut db)
    .await
    .expect("nodes");

    let idle_rss = rss_kib(pid, "VmRSS:");
    println!("EdgeFlow tunnel benchmark: {nodes} simulated nodes, server pid {pid}");

    // Connect every node, 256 handshakes at a time.
    let url = format!("ws://127.0.0.1:{port}/api/tunnel");
    let connected_at = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (received_tx, mut received_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut tasks = Vec::with_capacity(nodes);
    for (i, id) in ids.iter().enumerate() {
        let (gate, url, ready, received) = (gate.clone(), url.clone(), ready_tx.clone(), received_tx.clone());
        let credentials = STANDARD.encode(format!("{id}:efn_bench_{i}"));
        tasks.push(tokio::spawn(async move {
            let mut permit = Some(gate.acquire_owned().await.ok()?);
            let mut request = url.into_client_request().ok()?;
            request.headers_mut().insert("authorization", format!("Basic {credentials}").parse().ok()?);
            let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
            let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await.ok()?;
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
    drop(received_tx);
    let mut ready = 0;
    while ready < nodes {
        match tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            _ => break,
        }
    }
    let connect_time = connected_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.unwrap_or_default();
    let held: usize = metrics
        .lines()
        .find(|l| l.starts_with("edgeflow_tunnel_connected_nodes "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0, |v| v as usize);
    let online: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM edge_nodes n WHERE n.replica_id IS NOT NULL AND EXISTS \
         (SELECT 1 FROM replicas r WHERE r.id = n.replica_id AND r.alive_until > now())",
    )
    .fetch_one(&mut db)
    .await
    .unwrap_or(0);
    let loaded_rss = rss_kib(pid, "VmRSS:");
    println!("\n-- connections");
    println!("nodes connected (welcome received)   {ready:>8} of {nodes}, in {:.1} s", connect_time.as_secs_f64());
    println!("held by the server (/metrics)        {held:>8}; shown online (SQL): {online}");
    println!("server RSS idle                      {:>8.1} MiB", idle_rss as f64 / 1024.0);
    println!("server RSS with all connected        {:>8.1} MiB", loaded_rss as f64 / 1024.0);
    println!(
        "RSS per connection                   {:>8.1} KiB",
        (loaded_rss.saturating_sub(idle_rss)) as f64 / ready.max(1) as f64
    );

    // One API call: start a flow on every node.
    let flow = Uuid::now_v7();
    let sent = Instant::now();
    let response = client
        .post(format!("{base}/api/edgenodes/jobs"))
        .bearer_auth(&token)
        .json(&json!({"command": "start", "flowDefinitionId": flow, "labels": {"bench": "1"}}))
        .send()
        .await
        .expect("bulk command");
    let api_time = sent.elapsed();
    assert!(response.status().is_success(), "bulk command: {}", response.status());
    let mut latencies = Vec::with_capacity(nodes);
    while latencies.len() < ready {
        match tokio::time::timeout(Duration::from_secs(60), received_rx.recv()).await {
            Ok(Some(at)) => latencies.push(at.duration_since(sent)),
            _ => break,
        }
    }
    latencies.sort();
    let all_received = latencies.last().copied().unwrap_or_default();
    let mut succeeded = 0i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        succeeded = sqlx::query_scalar("SELECT count(*) FROM node_jobs WHERE state = 'Succeeded'")
            .fetch_one(&mut db)
            .await
            .unwrap_or(0);
        if succeeded as usize >= latencies.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_succeeded = sent.elapsed();
    let peak_rss = rss_kib(pid, "VmHWM:");

    let mut baseline = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&mut db).await.expect("select 1");
        baseline.push(t.elapsed());
    }
    baseline.sort();

    println!("\n-- one API call to every node");
    println!("API call answered (jobs committed)   {:>8.1} ms", api_time.as_secs_f64() * 1000.0);
    println!("nodes that received their job        {:>8} of {ready}", latencies.len());
    println!("job received, per node               p50 {:>7.1} ms   p99 {:>7.1} ms   all {:>7.1} ms", percentile(&latencies, 0.5), percentile(&latencies, 0.99), all_received.as_secs_f64() * 1000.0);
    println!("all {succeeded} jobs Succeeded in the database after {:.1} ms", all_succeeded.as_secs_f64() * 1000.0);
    println!("server peak RSS (VmHWM)              {:>8.1} MiB", peak_rss as f64 / 1024.0);
    println!("baseline: SELECT 1 round trip        p50 {:>7.3} ms   p99 {:>7.3} ms", percentile(&baseline, 0.5), percentile(&baseline, 0.99));

    for task in tasks {
        task.abort();
    }
    drop(server);
}

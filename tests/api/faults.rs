//! Fault tests: what the server does when the world around it breaks. PostgreSQL restarted under
//! load, the server process killed mid-deploy, a node's network cut without a close frame, a
//! replica killed while holding nodes, and oversized or malformed input. Real PostgreSQL, real
//! sockets, real processes; each test builds the fault it needs (a private cluster, a TCP proxy,
//! the server binary) and nothing is shared between tests.

mod crashes;
mod database;
mod input;
mod network;
mod postgres;
pub(crate) mod process;
mod proxy;

use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::{
    agent::online,
    helpers::{Session, TestApp, body, eventually},
    wire::Node,
};

/// Generous bounds for things that take a moment (reconnects, deliveries).
const WITHIN: Duration = Duration::from_secs(15);

/// A free port on 127.0.0.1 for a server that will be stopped and started again on it: below
/// the kernel's ephemeral range, so no connection or `bind(0)` elsewhere takes it meanwhile.
fn port_to_keep() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let first_ephemeral = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768_u16);
    loop {
        let port = rand::random_range(10_000..first_ephemeral.max(10_001));
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A test client for a server that does not run in this process (a child process, a proxy).
fn remote(base_url: String, database_url: &str) -> TestApp {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    TestApp { server: None, base_url, database_url: database_url.to_owned(), client }
}

/// Asks the node to start or stop a flow (one job); answers the job's id.
async fn command(app: &TestApp, session: &Session, node: &Node, definition: Uuid, what: &str) -> Uuid {
    let path = format!("/api/edgenodes/{}/flows/{definition}/{what}", node.id);
    let (status, job) = body(app.post(&path, session).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    job["id"].as_str().unwrap().parse().unwrap()
}

/// The states of these jobs, in the order given.
async fn job_states(app: &TestApp, jobs: &[Uuid]) -> Vec<String> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, state FROM node_jobs WHERE id = ANY($1)")
        .bind(jobs)
        .fetch_all(&mut app.db().await)
        .await
        .unwrap();
    jobs.iter()
        .map(|id| rows.iter().find(|(row, _)| row == id).map_or_else(|| "missing".to_owned(), |(_, s)| s.clone()))
        .collect()
}

/// Waits until every one of these jobs is in `state`; fails the test with their states if not.
async fn wait_jobs(app: &TestApp, jobs: &[Uuid], state: &str, within: Duration) {
    let reached = eventually(within, || async { job_states(app, jobs).await.iter().all(|s| s == state) }).await;
    assert!(reached, "jobs never all {state}: {:?}", job_states(app, jobs).await);
}

/// Waits until every node reads online.
async fn wait_online(app: &TestApp, session: &Session, nodes: &[Node]) {
    for node in nodes {
        assert!(eventually(WITHIN, || online(app, session, node.id)).await, "{} never came online", node.name);
    }
}

/// Which replica holds each node (`edge_nodes.replica_id`).
async fn holders(app: &TestApp, nodes: &[Node]) -> Vec<Option<Uuid>> {
    let mut db = app.db().await;
    let mut held = Vec::new();
    for node in nodes {
        let replica: Option<Uuid> = sqlx::query_scalar("SELECT replica_id FROM edge_nodes WHERE id = $1")
            .bind(node.id)
            .fetch_one(&mut db)
            .await
            .unwrap();
        held.push(replica);
    }
    held
}

//! Benchmark of deployments: the time from one deploy call to every target Succeeded, for 1,000
//! simulated nodes (`EDGEFLOW_BENCH_NODES`), all at once and rolling in batches of 100, next to
//! the time the same nodes take to receive and acknowledge a plain bulk job (the floor a
//! deployment's bookkeeping adds to).
//!
//! Run: `cargo bench --bench deployments` (PostgreSQL at EDGEFLOW_BENCH_DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/edgeflow_bench_deployments, dropped and recreated).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use support::{Server, connect_fleet, database_url, fresh_database, insert_nodes, summary};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

/// Polls the deployment until it reaches a final state; answers it and the time taken.
async fn until_finished(client: &reqwest::Client, server: &Server, id: &str, since: Instant) -> (Value, Duration) {
    loop {
        let value: Value = client
            .get(format!("{}/api/deployments/{id}", server.base))
            .bearer_auth(&server.token)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .unwrap_or_default();
        if ["Succeeded", "Failed", "RolledBack", "Canceled"].contains(&value["state"].as_str().unwrap_or_default()) {
            return (value, since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(300) {
            return (value, since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run() {
    let nodes: usize = std::env::var("EDGEFLOW_BENCH_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let database_url = database_url("edgeflow_bench_deployments");
    fresh_database(&database_url).await;
    let server = Server::start(&database_url, &[("EDGEFLOW_DEPLOYMENT_TICK_MILLIS", "200")]).await;
    let client = reqwest::Client::new();
    let mut db = PgConnection::connect(&database_url).await.expect("db");
    let ids = insert_nodes(&mut db, server.organization, nodes).await;
    let mut fleet = connect_fleet(server.port, &ids).await;
    println!("EdgeFlow deployment benchmark: {} of {nodes} simulated nodes connected", fleet.connected);

    // A flow with three versions.
    let definition = server.post(&client, "/api/flowdefinitions", json!({"name": "Bench flow"})).await;
    let definition_id = definition["id"].as_str().expect("id").to_owned();
    let mut versions = Vec::new();
    for v in 0..3 {
        let content = json!({"modules": [{"id": "m", "type": "noop", "config": {"v": v}}], "connections": [], "resources": [], "settings": {}});
        let draft = server
            .post(&client, &format!("/api/flowdefinitions/{definition_id}/drafts"), json!({"content": content}))
            .await;
        let version = server
            .post(
                &client,
                &format!(
                    "/api/flowdefinitions/{definition_id}/drafts/{}/publish",
                    draft["id"].as_str().expect("draft id")
                ),
                json!({"description": "bench"}),
            )
            .await;
        versions.push(version["id"].as_str().expect("version id").to_owned());
    }

    // Baseline: one bulk job to every node, until all are Succeeded.
    let started = Instant::now();
    server
        .post(
            &client,
            "/api/edgenodes/jobs",
            json!({"command": "start", "flowDefinitionId": definition_id, "labels": {"bench": "1"}}),
        )
        .await;
    let mut acknowledged = 0;
    while acknowledged < fleet.connected {
        match tokio::time::timeout(Duration::from_secs(60), fleet.received.recv()).await {
            Ok(Some(_)) => acknowledged += 1,
            _ => break,
        }
    }
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM node_jobs WHERE state = 'Succeeded'")
            .fetch_one(&mut db)
            .await
            .unwrap_or(0);
        if done as usize >= acknowledged || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let baseline = started.elapsed();

    println!("\n-- deploy call to every target Succeeded ({nodes} nodes)");
    println!("baseline: bulk job to all, all Succeeded      {:>8.0} ms", baseline.as_secs_f64() * 1000.0);
    for (label, version, strategy) in [
        ("allAtOnce", &versions[0], json!({"strategy": "allAtOnce"})),
        ("rolling, batches of 100", &versions[1], json!({"strategy": "rolling", "batchSize": 100})),
    ] {
        let mut body = json!({"flowDefinitionId": definition_id, "flowId": version, "labels": {"bench": "1"}});
        if let (Some(target), Some(extra)) = (body.as_object_mut(), strategy.as_object()) {
            target.extend(extra.clone());
        }
        let started = Instant::now();
        let created = server.post(&client, "/api/deployments", body).await;
        let answered = started.elapsed();
        let (done, took) = until_finished(&client, &server, created["id"].as_str().expect("id"), started).await;
        while fleet.received.try_recv().is_ok() {}
        println!(
            "{label:<28} {:>8} answered in {:>6.0} ms, {} of {} Succeeded after {:>8.0} ms ({:.1}x baseline)",
            done["state"].as_str().unwrap_or("?"),
            answered.as_secs_f64() * 1000.0,
            done["counters"]["succeeded"],
            done["counters"]["targeted"],
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() / baseline.as_secs_f64().max(0.001)
        );
        summary(
            &format!("deploy to {nodes} nodes until all Succeeded, {label}"),
            format!(
                "{:.0} ms ({} of {} Succeeded)",
                took.as_secs_f64() * 1000.0,
                done["counters"]["succeeded"],
                done["counters"]["targeted"]
            ),
            format!(
                "a bulk job to the same nodes {:.0} ms ({:.1}x)",
                baseline.as_secs_f64() * 1000.0,
                took.as_secs_f64() / baseline.as_secs_f64().max(0.001)
            ),
        );
    }
    drop(fleet);
    drop(server);
}

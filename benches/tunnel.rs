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

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, PgConnection};
use support::{Server, connect_fleet, database_url, fresh_database, insert_nodes, percentile_ms, rss_kib, summary};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let nodes: usize = std::env::var("EDGEFLOW_BENCH_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let database_url = database_url("edgeflow_bench_tunnel");
    fresh_database(&database_url).await;
    let server = Server::start(&database_url, &[]).await;
    let pid = server.pid();
    let client = reqwest::Client::new();
    let mut db = PgConnection::connect(&database_url).await.expect("db");
    let ids = insert_nodes(&mut db, server.organization, nodes).await;

    let idle_rss = rss_kib(pid, "VmRSS:");
    println!("EdgeFlow tunnel benchmark: {nodes} simulated nodes, server pid {pid}");
    let mut fleet = connect_fleet(server.port, &ids).await;
    let ready = fleet.connected;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics =
        client.get(format!("{}/metrics", server.base)).send().await.expect("metrics").text().await.unwrap_or_default();
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
    println!(
        "nodes connected (welcome received)   {ready:>8} of {nodes}, in {:.1} s",
        fleet.connect_time.as_secs_f64()
    );
    println!("held by the server (/metrics)        {held:>8}; shown online (SQL): {online}");
    println!("server RSS idle                      {:>8.1} MiB", idle_rss as f64 / 1024.0);
    println!("server RSS with all connected        {:>8.1} MiB", loaded_rss as f64 / 1024.0);
    println!(
        "RSS per connection                   {:>8.1} KiB",
        (loaded_rss.saturating_sub(idle_rss)) as f64 / ready.max(1) as f64
    );

    // One API call: start a flow on every node.
    let flow = server.post(&client, "/api/flowdefinitions", json!({"name": "Bench flow"})).await["id"].clone();
    let sent = Instant::now();
    let response = client
        .post(format!("{}/api/edgenodes/jobs", server.base))
        .bearer_auth(&server.token)
        .json(&json!({"command": "start", "flowDefinitionId": flow, "labels": {"bench": "1"}}))
        .send()
        .await
        .expect("bulk command");
    let api_time = sent.elapsed();
    assert!(response.status().is_success(), "bulk command: {}", response.status());
    let mut latencies = Vec::with_capacity(nodes);
    while latencies.len() < ready {
        match tokio::time::timeout(Duration::from_secs(60), fleet.received.recv()).await {
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
    println!(
        "job received, per node               p50 {:>7.1} ms   p99 {:>7.1} ms   all {:>7.1} ms",
        percentile_ms(&latencies, 0.5),
        percentile_ms(&latencies, 0.99),
        all_received.as_secs_f64() * 1000.0
    );
    println!("all {succeeded} jobs Succeeded in the database after {:.1} ms", all_succeeded.as_secs_f64() * 1000.0);
    println!("server peak RSS (VmHWM)              {:>8.1} MiB", peak_rss as f64 / 1024.0);
    println!(
        "baseline: SELECT 1 round trip        p50 {:>7.3} ms   p99 {:>7.3} ms",
        percentile_ms(&baseline, 0.5),
        percentile_ms(&baseline, 0.99)
    );

    let per_node_kib = loaded_rss.saturating_sub(idle_rss) as f64 / ready.max(1) as f64;
    summary(
        "nodes held by one server",
        format!(
            "{ready} of {nodes}, RSS {:.1} MiB ({per_node_kib:.1} KiB per node; peak {:.1} MiB)",
            loaded_rss as f64 / 1024.0,
            peak_rss as f64 / 1024.0
        ),
        format!("{:.1} MiB idle", idle_rss as f64 / 1024.0),
    );
    summary(
        &format!("one API call (bulk start) to {ready} nodes"),
        format!(
            "{} nodes have their job: p50 {:.0} ms, p99 {:.0} ms (call answered in {:.0} ms); all Succeeded after {:.0} ms",
            latencies.len(),
            percentile_ms(&latencies, 0.5),
            percentile_ms(&latencies, 0.99),
            api_time.as_secs_f64() * 1000.0,
            all_succeeded.as_secs_f64() * 1000.0
        ),
        format!("`SELECT 1` round trip p50 {:.3} ms", percentile_ms(&baseline, 0.5)),
    );
    drop(fleet);
    drop(server);
}

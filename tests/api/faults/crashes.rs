//! Servers that die without a word, as real processes killed with SIGKILL: the only server in the
//! middle of a rolling deployment, and one of two replicas while it holds nodes behind a load
//! balancer. No job is lost and the agents run none twice.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use super::{WITHIN, command, holders, process::ServerProcess, proxy::Proxy, remote, wait_jobs, wait_online};
use crate::{
    agent::online,
    deployments::{agent_at, publish_flow, wait_state},
    helpers::*,
    wire::{Node, create_node},
};

/// Deployments advance every 100 ms in these tests.
const FAST_DEPLOYMENTS: [(&str, &str); 1] = [("EDGEFLOW_DEPLOYMENT_TICK_MILLIS", "100")];

fn data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("edgeflow-faults-{}", Uuid::new_v4().simple()))
}

/// The deploy jobs of the deployment: (job id, node id, state).
async fn deploy_jobs(app: &TestApp, deployment: &str) -> Vec<(Uuid, Uuid, String)> {
    sqlx::query_as("SELECT id, node_id, state FROM node_jobs WHERE command = 'deploy' AND deployment_id = $1")
        .bind(deployment.parse::<Uuid>().unwrap())
        .fetch_all(&mut app.db().await)
        .await
        .unwrap()
}

async fn create_deployment(app: &TestApp, owner: &Session, spec: serde_json::Value) -> String {
    let (status, created) = body(app.post("/api/deployments", owner).json(&spec).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// Every node got exactly one deploy job of the deployment, it Succeeded, and its agent ran it
/// once (a redelivered job it had finished is reported again, not run again).
async fn assert_deployed_once(
    app: &TestApp,
    deployment: &str,
    nodes: &[Node],
    agents: &[edgeflow::agent::AgentHandle],
) {
    let jobs = deploy_jobs(app, deployment).await;
    assert_eq!(jobs.len(), nodes.len(), "{jobs:?}");
    for (node, agent) in nodes.iter().zip(agents) {
        let mine: Vec<_> = jobs.iter().filter(|(_, n, _)| *n == node.id).collect();
        assert_eq!(mine.len(), 1, "{} got {mine:?}", node.name);
        let (job, _, state) = mine[0];
        assert_eq!(state, "Succeeded", "{}", node.name);
        assert_eq!(agent.executions(*job), 1, "{} ran its deploy {} times", node.name, agent.executions(*job));
    }
}

#[tokio::test]
async fn the_server_process_killed_mid_rollout_and_restarted_finishes_it_running_every_deploy_once() {
    let database_url = fresh_database().await;
    let dir = data_dir();
    let mut server = ServerProcess::start(&database_url, "127.0.0.1:0".parse().unwrap(), &dir, &FAST_DEPLOYMENTS).await;
    let app = remote(server.url(), &database_url);
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(create_node(&app, &owner, &format!("n{i}")).await);
    }
    // Each deploy takes the node a while, so the kill lands while one is running.
    let agents: Vec<_> = nodes.iter().map(|n| agent_at(&app.base_url, n, false, Duration::from_millis(800))).collect();
    wait_online(&app, &owner, &nodes).await;
    let ids: Vec<Uuid> = nodes.iter().map(|n| n.id).collect();
    let id = create_deployment(
        &app,
        &owner,
        json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": ids, "strategy": "rolling", "batchSize": 1}),
    )
    .await;
    let mid_rollout = eventually(WITHIN, || async {
        let states: Vec<String> = deploy_jobs(&app, &id).await.into_iter().map(|(_, _, s)| s).collect();
        states.iter().any(|s| s == "Succeeded") && states.iter().any(|s| s == "InProgress")
    })
    .await;
    assert!(mid_rollout, "{:?}", deploy_jobs(&app, &id).await);

    server.kill().await;
    // The node finishes its deploy while no server is there to hear it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _restarted = ServerProcess::start(&database_url, server.addr, &dir, &FAST_DEPLOYMENTS).await;
    let done = wait_state(&app, &owner, &id, "Succeeded").await;
    assert!(done["targets"].as_array().unwrap().iter().all(|t| t["state"] == "Succeeded"), "{done}");
    assert_eq!(done["counters"]["succeeded"], 4, "{done}");
    assert_deployed_once(&app, &id, &nodes, &agents).await;
    for agent in agents {
        assert!(agent.status().connections >= 2, "the agent came back to the restarted server");
        agent.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_replica_killed_while_holding_nodes_hands_them_to_another_with_no_job_lost_or_run_twice() {
    // Replica 2 runs in this process; replica 1 is the binary, first in the balancer's list.
    let second = TestApp::spawn_with(|config| config.deployment_tick_millis = 100).await;
    let second_server = second.server.as_ref().unwrap();
    let dir = second_server.state.config.data_dir.clone();
    let mut first =
        ServerProcess::start(&second.database_url, "127.0.0.1:0".parse().unwrap(), &dir, &FAST_DEPLOYMENTS).await;
    let balancer = Proxy::start(vec![first.addr, second_server.addr]).await;
    let owner = second.owner().await;
    let (definition, flows) = publish_flow(&second, &owner, "Temperature", 1).await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(create_node(&second, &owner, &format!("n{i}")).await);
    }
    let agents: Vec<_> =
        nodes.iter().map(|n| agent_at(&balancer.url(), n, false, Duration::from_millis(1000))).collect();
    wait_online(&second, &owner, &nodes).await;
    let second_id = second_server.state.hub.replica_id;
    let held = holders(&second, &nodes).await;
    assert!(
        held.iter().all(|h| h.is_some() && *h != Some(second_id)),
        "the balancer sends nodes to replica 1: {held:?}"
    );

    // Deploys made through replica 2 reach the nodes on replica 1; it dies while they run.
    let ids: Vec<Uuid> = nodes.iter().map(|n| n.id).collect();
    let id =
        create_deployment(&second, &owner, json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": ids}))
            .await;
    let running = eventually(WITHIN, || async {
        let jobs = deploy_jobs(&second, &id).await;
        jobs.len() == nodes.len() && jobs.iter().all(|(_, _, s)| s == "InProgress")
    })
    .await;
    assert!(running, "{:?}", deploy_jobs(&second, &id).await);
    first.kill().await;
    // Jobs made while the nodes are between replicas.
    let mut stops = Vec::new();
    for node in &nodes {
        stops.push(command(&second, &owner, node, definition, "stop").await);
    }

    wait_state(&second, &owner, &id, "Succeeded").await;
    wait_jobs(&second, &stops, "Succeeded", WITHIN).await;
    assert_deployed_once(&second, &id, &nodes, &agents).await;
    for ((node, agent), stop) in nodes.iter().zip(&agents).zip(&stops) {
        assert_eq!(agent.executions(*stop), 1, "{}", node.name);
        assert!(online(&second, &owner, node.id).await, "{} reads offline", node.name);
    }
    assert_eq!(holders(&second, &nodes).await, vec![Some(second_id); nodes.len()], "every node is held by replica 2");
    for agent in agents {
        agent.stop().await;
    }
}

//! Deployments, driven end to end: the real server, reference agents as nodes (some set to fail).

use std::time::Duration;

use edgeflow::agent::{Agent, AgentConfig, AgentHandle};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{helpers::*, wire::*};

async fn fast_app() -> TestApp {
    TestApp::spawn_with(|config| config.deployment_tick_millis = 100).await
}

/// A flow definition with `versions` published versions; answers its id and the version ids.
pub(crate) async fn publish_flow(app: &TestApp, session: &Session, name: &str, versions: usize) -> (Uuid, Vec<Uuid>) {
    let (status, definition) =
        body(app.post("/api/flowdefinitions", session).json(&json!({"name": name})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{definition}");
    let id: Uuid = definition["id"].as_str().unwrap().parse().unwrap();
    let mut flows = Vec::new();
    for v in 0..versions {
        let content = json!({
            "modules": [{"id": "in", "type": "mqtt-in", "name": "source", "config": {"v": v}},
                        {"id": "out", "type": "http-out", "name": "sink"}],
            "connections": [{"from": "in", "to": "out"}],
            "resources": [], "settings": {}
        });
        let (status, draft) = body(
            app.post(&format!("/api/flowdefinitions/{id}/drafts"), session)
                .json(&json!({"content": content}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{draft}");
        let (status, version) = body(
            app.post(&format!("/api/flowdefinitions/{id}/drafts/{}/publish", draft["id"].as_str().unwrap()), session)
                .json(&json!({"description": format!("v{}", v + 1)}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{version}");
        flows.push(version["id"].as_str().unwrap().parse().unwrap());
    }
    (id, flows)
}

fn agent(app: &TestApp, node: &Node, fails: bool) -> AgentHandle {
    agent_with(app, node, fails, Duration::from_millis(10))
}

fn agent_with(app: &TestApp, node: &Node, fails: bool, job_duration: Duration) -> AgentHandle {
    agent_at(&app.base_url, node, fails, job_duration)
}

/// A reference agent for the node, connecting to the server at `server` (a base URL).
pub(crate) fn agent_at(server: &str, node: &Node, fails: bool, job_duration: Duration) -> AgentHandle {
    let mut config = AgentConfig::new(server, node.id, node.key.clone());
    config.fail_fraction = if fails { 1.0 } else { 0.0 };
    config.job_duration = job_duration;
    config.backoff_base = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    config.verbose = false;
    Agent::spawn(config).unwrap()
}

/// Crosser's deploy call, verbatim: `POST .../flow/{flowId}/deploy {"edgeNodes": [...]}`.
pub(crate) async fn crosser_deploy(
    app: &TestApp,
    session: &Session,
    definition: impl std::fmt::Display,
    flow: impl std::fmt::Display,
    edge_nodes: Value,
) -> (StatusCode, Value) {
    let path = format!("/api/flowdefinitions/{definition}/flow/{flow}/deploy");
    body(app.post(&path, session).json(&json!({"edgeNodes": edge_nodes})).send().await.unwrap()).await
}

async fn deployment(app: &TestApp, session: &Session, id: &str) -> Value {
    let (status, value) = body(app.get(&format!("/api/deployments/{id}"), session).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value
}

pub(crate) async fn wait_state(app: &TestApp, session: &Session, id: &str, state: &str) -> Value {
    let reached =
        eventually(Duration::from_secs(20), || async { deployment(app, session, id).await["state"] == state }).await;
    let current = deployment(app, session, id).await;
    assert!(reached, "deployment never reached {state}: {current}");
    current
}

fn target_states(deployment: &Value) -> Vec<(String, String)> {
    deployment["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["nodeName"].as_str().unwrap().to_owned(), t["state"].as_str().unwrap().to_owned()))
        .collect()
}

/// What an agent runs of a flow definition: (flow version id, state).
fn running(agent: &AgentHandle, definition: Uuid) -> Option<(Option<Uuid>, String)> {
    agent.flows().into_iter().find(|f| f.flow_definition_id == definition).map(|f| (f.flow_id, f.state))
}

#[tokio::test]
async fn crosser_walk_through_find_by_name_pick_a_version_deploy_to_nodes_found_by_name() {
    let app = fast_app().await;
    let owner = app.owner().await;
    publish_flow(&app, &owner, "Temperature", 2).await;
    publish_flow(&app, &owner, "Vibration", 1).await;
    let node = create_node(&app, &owner, "Production5").await;
    create_node(&app, &owner, "Production6").await;
    let agent = agent(&app, &node, false);

    // Find the flow definition by name with a filter, then pick a version.
    let (_, definitions) = body(
        app.get("/api/flowdefinitions?filters[0].propertyName=name&filters[0].propertyValue=Temperature&filters[0].filterType=equal", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(definitions["items"].as_array().unwrap().len(), 1, "{definitions}");
    let definition_id = definitions["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, definition) =
        body(app.get(&format!("/api/flowdefinitions/{definition_id}"), &owner).send().await.unwrap()).await;
    let flow = definition["flows"].as_array().unwrap().iter().find(|f| f["version"] == 2).unwrap().clone();
    let flow_id = flow["id"].as_str().unwrap();
    // Find the node by name.
    let (_, nodes) = body(
        app.get("/api/edgenodes?filters[0].propertyName=name&filters[0].propertyValue=Production5&filters[0].filterType=equal", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let node_id = nodes["items"][0]["id"].as_str().unwrap();
    // Deploy, verbatim.
    let (status, created) = crosser_deploy(&app, &owner, &definition_id, &flow_id, json!([node_id])).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["counters"]["targeted"], 1);
    let done = wait_state(&app, &owner, created["id"].as_str().unwrap(), "Succeeded").await;
    assert_eq!(done["targets"][0]["state"], "Succeeded");
    let flow_uuid: Uuid = flow_id.parse().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            running(&agent, definition_id.parse().unwrap()) == Some((Some(flow_uuid), "running".to_owned()))
        })
        .await,
        "{:?}",
        agent.flows()
    );
    // The node reports what it runs: no drift.
    assert!(
        eventually(Duration::from_secs(5), || async {
            deployment(&app, &owner, created["id"].as_str().unwrap()).await["targets"][0]["drift"] == false
        })
        .await
    );
    agent.stop().await;
}

#[tokio::test]
async fn an_offline_target_gets_its_deploy_when_it_connects() {
    let app = fast_app().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let online = create_node(&app, &owner, "online").await;
    let offline = create_node(&app, &owner, "offline").await;
    let first = agent(&app, &online, false);
    let (_, created) = crosser_deploy(&app, &owner, definition, flows[0], json!([online.id, offline.id])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async {
            deployment(&app, &owner, &id).await["counters"]["succeeded"] == 1
        })
        .await
    );
    assert_eq!(deployment(&app, &owner, &id).await["state"], "Running", "waits for the offline node");
    let late = agent(&app, &offline, false);
    wait_state(&app, &owner, &id, "Succeeded").await;
    assert_eq!(running(&late, definition).map(|r| r.0), Some(Some(flows[0])));
    first.stop().await;
    late.stop().await;
}

#[tokio::test]
async fn a_rolling_deployment_stops_at_the_threshold_and_rolls_back_exactly_the_updated_ones() {
    let app = fast_app().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let mut agents = Vec::new();
    for i in 0..10 {
        let node = create_node_with(
            &app,
            &owner,
            json!({"name": format!("n{i:02}"), "organizationId": owner.organization_id, "type": "Production", "labels": {"line": "7"}}),
        )
        .await;
        // Nodes n04, n05 and n06 fail every job.
        agents.push(agent(&app, &node, (4..7).contains(&i)));
    }
    let (status, created) = body(
        app.post("/api/deployments", &owner)
            .json(&json!({"flowDefinitionId": definition, "flowId": flows[0], "labels": {"line": "7"},
                          "strategy": "rolling", "batchSize": 2, "maxFailures": 1, "autoRollback": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().unwrap();
    let done = wait_state(&app, &owner, id, "RolledBack").await;
    let states = target_states(&done);
    let expected: Vec<(String, String)> = [
        ("n00", "RolledBack"),
        ("n01", "RolledBack"),
        ("n02", "RolledBack"),
        ("n03", "RolledBack"),
        ("n04", "Failed"),
        ("n05", "Failed"),
        ("n06", "Canceled"),
        ("n07", "Canceled"),
        ("n08", "Canceled"),
        ("n09", "Canceled"),
    ]
    .iter()
    .map(|(n, s)| (n.to_string(), s.to_string()))
    .collect();
    assert_eq!(states, expected, "{done}");
    assert!(done["error"].as_str().unwrap().contains("2 targets failed"), "{done}");
    // The rolled-back nodes ran nothing of this flow before: it is gone from them again. The
    // nodes after the threshold never got the deploy at all.
    for agent in &agents[..4] {
        assert!(eventually(Duration::from_secs(5), || async { running(agent, definition).is_none() }).await);
    }
    let mut db = app.db().await;
    let deploys_after_threshold: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM node_jobs j JOIN edge_nodes n ON n.id = j.node_id \
         WHERE j.command = 'deploy' AND n.name IN ('n06', 'n07', 'n08', 'n09')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(deploys_after_threshold, 0);
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM events WHERE deployment_id = $1 AND action = 'deployment.state' ORDER BY occurred_at",
    )
    .bind(id.parse::<Uuid>().unwrap())
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(
        events.iter().any(|m| m.contains("RollingBack")) && events.iter().any(|m| m.contains("RolledBack")),
        "{events:?}"
    );
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test]
async fn pause_holds_the_next_batch_and_resume_finishes() {
    let app = fast_app().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(create_node(&app, &owner, &format!("n{i}")).await);
    }
    // Only the first node is connected: the first batch cannot finish before we pause.
    let first = agent(&app, &nodes[0], false);
    let ids: Vec<Uuid> = nodes.iter().map(|n| n.id).collect();
    let (_, created) = body(
        app.post("/api/deployments", &owner)
            .json(&json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": ids, "strategy": "rolling", "batchSize": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, paused) = body(app.post(&format!("/api/deployments/{id}/pause"), &owner).send().await.unwrap()).await;
    assert_eq!((status, paused["state"].as_str()), (StatusCode::OK, Some("Paused")), "{paused}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let held = deployment(&app, &owner, &id).await;
    assert_eq!(held["counters"]["succeeded"], 1, "{held}");
    assert_eq!(held["counters"]["pending"], 2, "no further batch while paused: {held}");
    let (status, value) = body(app.post(&format!("/api/deployments/{id}/pause"), &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::CONFLICT, "INVALID_STATE");
    let others: Vec<AgentHandle> = nodes[1..].iter().map(|n| agent(&app, n, false)).collect();
    let (status, _) = body(app.post(&format!("/api/deployments/{id}/resume"), &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let done = wait_state(&app, &owner, &id, "Succeeded").await;
    assert_eq!(done["counters"]["succeeded"], 3);
    let (status, value) = body(app.post(&format!("/api/deployments/{id}/resume"), &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::CONFLICT, "INVALID_STATE");
    first.stop().await;
    for agent in others {
        agent.stop().await;
    }
}

#[tokio::test]
async fn rollback_of_a_finished_deployment_restores_the_previous_version_everywhere() {
    let app = fast_app().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 2).await;
    let nodes = [create_node(&app, &owner, "a").await, create_node(&app, &owner, "b").await];
    let agents: Vec<AgentHandle> = nodes.iter().map(|n| agent(&app, n, false)).collect();
    let ids: Vec<Uuid> = nodes.iter().map(|n| n.id).collect();
    let deploy = |flow: Uuid| {
        app.post("/api/deployments", &owner)
            .json(&json!({"flowDefinitionId": definition, "flowId": flow, "nodeIds": ids}))
            .send()
    };
    let (_, first) = body(deploy(flows[0]).await.unwrap()).await;
    wait_state(&app, &owner, first["id"].as_str().unwrap(), "Succeeded").await;
    let (_, second) = body(deploy(flows[1]).await.unwrap()).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    wait_state(&app, &owner, &second_id, "Succeeded").await;
    for agent in &agents {
        assert!(
            eventually(Duration::from_secs(5), || async {
                running(agent, definition).map(|r| r.0) == Some(Some(flows[1]))
            })
            .await
        );
    }
    let (status, rolling) =
        body(app.post(&format!("/api/deployments/{second_id}/rollback"), &owner).send().await.unwrap()).await;
    assert_eq!((status, rolling["state"].as_str()), (StatusCode::OK, Some("RollingBack")), "{rolling}");
    let done = wait_state(&app, &owner, &second_id, "RolledBack").await;
    assert!(target_states(&done).iter().all(|(_, s)| s == "RolledBack"), "{done}");
    for agent in &agents {
        assert!(
            eventually(Duration::from_secs(5), || async {
                running(agent, definition) == Some((Some(flows[0]), "running".to_owned()))
            })
            .await,
            "{:?}",
            agent.flows()
        );
    }
    let (status, value) =
        body(app.post(&format!("/api/deployments/{second_id}/rollback"), &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::CONFLICT, "INVALID_STATE");
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test]
async fn a_deployment_survives_a_server_crash_mid_rollout() {
    let mut app = fast_app().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let nodes = [
        create_node(&app, &owner, "a").await,
        create_node(&app, &owner, "b").await,
        create_node(&app, &owner, "c").await,
    ];
    // Each job takes a while on the node, so the crash lands between batches.
    let agents: Vec<AgentHandle> =
        nodes.iter().map(|n| agent_with(&app, n, false, Duration::from_millis(400))).collect();
    let ids: Vec<Uuid> = nodes.iter().map(|n| n.id).collect();
    let (_, created) = body(
        app.post("/api/deployments", &owner)
            .json(&json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": ids, "strategy": "rolling", "batchSize": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let current = deployment(&app, &owner, &id).await;
            current["counters"]["succeeded"].as_i64() >= Some(1) && current["counters"]["pending"].as_i64() >= Some(1)
        })
        .await
    );
    app.crash_and_restart().await;
    let owner = app.owner().await;
    let done = wait_state(&app, &owner, &id, "Succeeded").await;
    assert_eq!(done["counters"]["succeeded"], 3);
    let mut db = app.db().await;
    let deploys: Vec<(String, i64)> = sqlx::query_as(
        "SELECT n.name, count(*) FROM node_jobs j JOIN edge_nodes n ON n.id = j.node_id \
         WHERE j.command = 'deploy' GROUP BY n.name ORDER BY n.name",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(deploys, [("a".to_owned(), 1), ("b".to_owned(), 1), ("c".to_owned(), 1)]);
    for agent in agents {
        assert!(eventually(Duration::from_secs(5), || async { running(&agent, definition).is_some() }).await);
        agent.stop().await;
    }
}

#[tokio::test]
async fn two_replicas_never_drive_one_deployment_twice() {
    let app = fast_app().await;
    let mut config = test_config(&app.database_url);
    config.deployment_tick_millis = 50;
    let replica = TestApp::start(config).await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let mut agents = Vec::new();
    let mut ids = Vec::new();
    for i in 0..6 {
        let node = create_node(&app, &owner, &format!("n{i}")).await;
        ids.push(node.id);
        // Half the nodes hold their socket on the other replica.
        agents.push(agent(if i % 2 == 0 { &app } else { &replica }, &node, false));
    }
    let (_, created) = body(
        app.post("/api/deployments", &owner)
            .json(&json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": ids, "strategy": "rolling", "batchSize": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_state(&app, &owner, &id, "Succeeded").await;
    let mut db = app.db().await;
    let per_node: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM node_jobs WHERE command = 'deploy' GROUP BY node_id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(per_node, vec![1; 6], "every node got exactly one deploy job");
    let batches: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT batch FROM deployment_targets ORDER BY batch")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(batches, (0..6).collect::<Vec<_>>());
    let transitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE action = 'deployment.state' AND message LIKE '%Succeeded%'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(transitions, 1, "the deployment finished once");
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test]
async fn drafts_go_to_dev_and_test_nodes_only_and_bad_requests_are_refused() {
    let app = fast_app().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let (_, draft) = body(
        app.post(&format!("/api/flowdefinitions/{definition}/drafts"), &owner).json(&json!({})).send().await.unwrap(),
    )
    .await;
    let draft_id = draft["id"].as_str().unwrap();
    let production = create_node(&app, &owner, "Production1").await;
    let dev = create_node_with(
        &app,
        &owner,
        json!({"name": "Dev1", "organizationId": owner.organization_id, "type": "DevAndTest"}),
    )
    .await;
    let dev_agent = agent(&app, &dev, false);

    let create = |body_json: Value| app.post("/api/deployments", &owner).json(&body_json).send();
    let (status, value) = body(
        create(json!({"flowDefinitionId": definition, "draftId": draft_id, "nodeIds": [production.id, dev.id]}))
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::CONFLICT, "DRAFT_NOT_ALLOWED");
    assert!(value["error"].as_str().unwrap().contains("Production1"));
    let (status, created) =
        body(create(json!({"flowDefinitionId": definition, "draftId": draft_id, "nodeIds": [dev.id]})).await.unwrap())
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    wait_state(&app, &owner, created["id"].as_str().unwrap(), "Succeeded").await;

    for (body_json, code) in [
        (json!({"flowDefinitionId": definition, "flowId": flows[0]}), "VALIDATION_FAILED"),
        (
            json!({"flowDefinitionId": definition, "flowId": flows[0], "draftId": draft_id, "nodeIds": [dev.id]}),
            "VALIDATION_FAILED",
        ),
        (
            json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": [dev.id], "strategy": "rolling", "batchSize": 0}),
            "VALIDATION_FAILED",
        ),
        (
            json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": [dev.id], "strategy": "sideways"}),
            "BAD_REQUEST",
        ),
        (
            json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": [dev.id], "color": "red"}),
            "BAD_REQUEST",
        ),
    ] {
        let (status, value) = body(create(body_json.clone()).await.unwrap()).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, code);
    }
    // No node with these labels: nothing to deploy to, as for an unknown node.
    let (status, value) = body(
        create(json!({"flowDefinitionId": definition, "flowId": flows[0], "labels": {"nothing": "matches"}}))
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, value) = body(
        create(json!({"flowDefinitionId": definition, "flowId": Uuid::now_v7(), "nodeIds": [dev.id]})).await.unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, value) = body(
        create(json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": [Uuid::now_v7()]})).await.unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    dev_agent.stop().await;
}

#[tokio::test]
async fn a_scheduled_deployment_waits_for_its_time_and_cancel_drops_pending_work() {
    let app = fast_app().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let node = create_node(&app, &owner, "a").await;
    let agent = agent(&app, &node, false);
    let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, scheduled) = body(
        app.post("/api/deployments", &owner)
            .json(&json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": [node.id], "scheduledAt": at}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = scheduled["id"].as_str().unwrap().to_owned();
    assert_eq!(scheduled["state"], "Scheduled", "{scheduled}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deployment(&app, &owner, &id).await["counters"]["pending"], 1);
    wait_state(&app, &owner, &id, "Succeeded").await;

    // Cancel: an offline node's pending deploy is dropped and never delivered.
    let sleeper = create_node(&app, &owner, "sleeper").await;
    let (_, created) = body(
        app.post("/api/deployments", &owner)
            .json(&json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": [sleeper.id]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, canceled) =
        body(app.post(&format!("/api/deployments/{id}/cancel"), &owner).send().await.unwrap()).await;
    assert_eq!((status, canceled["state"].as_str()), (StatusCode::OK, Some("Canceled")), "{canceled}");
    assert_eq!(canceled["targets"][0]["state"], "Canceled");
    let (mut wire, _) = Wire::connect(&app, &sleeper).await;
    assert!(wire.recv_within(Duration::from_millis(700)).await.is_none_or(|m| m["type"] != "job"));
    agent.stop().await;
}

#[tokio::test]
async fn stop_and_start_act_on_every_target() {
    let app = fast_app().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let node = create_node(&app, &owner, "a").await;
    let agent = agent(&app, &node, false);
    let (_, created) = body(
        app.post("/api/deployments", &owner)
            .json(&json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": [node.id]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_state(&app, &owner, &id, "Succeeded").await;
    let (status, _) = body(app.post(&format!("/api/deployments/{id}/stop"), &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(5), || async {
            running(&agent, definition).map(|r| r.1) == Some("stopped".into())
        })
        .await
    );
    // The node runs what it was told: the deployment shows drift only while it disagrees.
    let (status, _) = body(app.post(&format!("/api/deployments/{id}/start"), &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(5), || async {
            running(&agent, definition).map(|r| r.1) == Some("running".into())
        })
        .await
    );
    agent.stop().await;
}

#[tokio::test]
async fn deployments_are_invisible_to_other_organizations_and_need_the_operator_role() {
    let app = fast_app().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let node = create_node(&app, &owner, "a").await;
    let (_, created) = body(
        app.post("/api/deployments", &owner)
            .json(&json!({"flowDefinitionId": definition, "flowId": flows[0], "nodeIds": [node.id]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let stranger = app.register("stranger@example.com", "Stranger").await;
    for path in [format!("/api/deployments/{id}")] {
        let (status, value) = body(app.get(&path, &stranger).send().await.unwrap()).await;
        assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    for action in ["pause", "resume", "start", "stop", "rollback", "cancel"] {
        let (status, value) =
            body(app.post(&format!("/api/deployments/{id}/{action}"), &stranger).send().await.unwrap()).await;
        assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let (_, list) = body(app.get("/api/deployments?includeCount=true", &stranger).send().await.unwrap()).await;
    assert_eq!(list["totalCount"], 0);
    // Their deploy of our flow to our node: not found.
    let (status, value) = crosser_deploy(&app, &stranger, definition, flows[0], json!([node.id])).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    let (_, list) =
        body(app.get(&format!("/api/deployments?nodeId={}&includeCount=true", node.id), &viewer).send().await.unwrap())
            .await;
    assert_eq!(list["totalCount"], 1, "{list}");
    let (status, value) = body(app.post(&format!("/api/deployments/{id}/cancel"), &viewer).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, value) = body(
        app.get("/api/deployments?filters[0].propertyName=color&filters[0].propertyValue=x", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

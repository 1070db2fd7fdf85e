//! The reference agent (`edgeflow::agent`) against the real server: presence, calls, jobs run
//! once (also when redelivered), deploys with resources, shadow, close codes, enrolment, and
//! surviving a server crash.

use std::time::Duration;

use edgeflow::{
    agent::{Agent, AgentConfig, AgentHandle, DEFAULT_AGENT_VERSION, StopReason, enroll},
    jobs::store::{NewJob, enqueue},
    tunnel::protocol::{DeployFlow, DeployResource, JobCommand},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{helpers::*, wire::*};

const WITHIN: Duration = Duration::from_secs(10);

fn config(app: &TestApp, node: &Node) -> AgentConfig {
    let mut config = AgentConfig::new(app.base_url.clone(), node.id, node.key.clone());
    config.job_duration = Duration::from_millis(5);
    config.backoff_base = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    config
}

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("edgeflow-agent-it-{}", Uuid::new_v4().simple()))
}

async fn node_view(app: &TestApp, session: &Session, node_id: Uuid) -> Value {
    let (status, value) = body(app.get(&format!("/api/edgenodes/{node_id}"), session).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value
}

pub(crate) async fn online(app: &TestApp, session: &Session, node_id: Uuid) -> bool {
    node_view(app, session, node_id).await["online"] == true
}

async fn connected(app: &TestApp, session: &Session, agent: &AgentHandle) -> bool {
    eventually(WITHIN, || async { agent.is_connected() && online(app, session, agent.node_id()).await }).await
}

async fn get(app: &TestApp, session: &Session, path: &str) -> (StatusCode, Value) {
    body(app.get(path, session).send().await.unwrap()).await
}

/// Queues a job the API cannot make yet (deploy) straight into the node's job queue.
async fn enqueue_job(
    app: &TestApp,
    session: &Session,
    node: &Node,
    command: JobCommand,
    flow: Option<&DeployFlow>,
) -> Uuid {
    let job = NewJob {
        organization_id: session.organization_id,
        node_id: node.id,
        command,
        flow_definition_id: flow.map(|f| f.flow_definition_id),
        deployment_id: None,
        flow: flow.map(|f| serde_json::to_value(f).unwrap()),
        created_by: Some(session.user_id),
        ttl_seconds: 3600,
    };
    enqueue(&mut app.db().await, &[job]).await.unwrap()[0].id
}

pub(crate) async fn job_state(app: &TestApp, session: &Session, node: &Node, job_id: Uuid) -> Value {
    get(app, session, &format!("/api/edgenodes/{}/jobs/{job_id}", node.id)).await.1
}

#[tokio::test]
async fn an_agent_comes_online_and_answers_health_logs_and_runtime() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    assert!(!online(&app, &owner, node.id).await);

    let agent = Agent::spawn(config(&app, &node)).unwrap();
    assert!(connected(&app, &owner, &agent).await);
    let view = node_view(&app, &owner, node.id).await;
    assert_eq!(view["agentVersion"], DEFAULT_AGENT_VERSION);
    assert_eq!(view["protocolVersion"], 1);

    let (status, health) = get(&app, &owner, &format!("/api/edgenodes/{}/health", node.id)).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!((health["status"].as_str(), health["flowsRunning"].as_u64()), (Some("ok"), Some(0)));
    assert_eq!(health["agentVersion"], DEFAULT_AGENT_VERSION);
    assert!(health["uptimeSeconds"].as_u64().is_some());

    let (status, logs) = get(&app, &owner, &format!("/api/edgenodes/{}/logs?tail=3", node.id)).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    let lines = logs["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 3, "{logs}");
    assert!(lines.iter().any(|l| l.as_str().unwrap().contains("connected to")), "{logs}");

    let (status, runtime) = get(&app, &owner, &format!("/api/edgenodes/{}/runtime", node.id)).await;
    assert_eq!((status, &runtime["flows"]), (StatusCode::OK, &json!([])), "{runtime}");

    agent.stop().await;
    assert!(eventually(WITHIN, || async { !online(&app, &owner, node.id).await }).await);
}

#[tokio::test]
async fn a_killed_agent_goes_offline_and_a_restarted_one_comes_back() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let agent = Agent::spawn(config(&app, &node)).unwrap();
    assert!(connected(&app, &owner, &agent).await);
    agent.kill().await;
    assert!(eventually(WITHIN, || async { !online(&app, &owner, node.id).await }).await);
    let again = Agent::spawn(config(&app, &node)).unwrap();
    assert!(connected(&app, &owner, &again).await);
    again.stop().await;
}

#[tokio::test]
async fn a_paused_agent_is_timed_out_and_comes_back_when_resumed() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let agent = Agent::spawn(config(&app, &node)).unwrap();
    assert!(connected(&app, &owner, &agent).await);
    agent.pause();
    assert!(eventually(WITHIN, || async { !online(&app, &owner, node.id).await }).await, "no pongs: offline");
    agent.resume();
    assert!(eventually(WITHIN, || async { agent.status().connections == 2 }).await);
    assert!(connected(&app, &owner, &agent).await);
    agent.stop().await;
}

#[tokio::test]
async fn start_and_stop_jobs_run_once_and_their_outcome_reaches_the_api() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let agent = Agent::spawn(config(&app, &node)).unwrap();
    assert!(connected(&app, &owner, &agent).await);

    // Nothing is deployed: the agent fails the start and says why.
    let flow = create_flow_definition(&app, &owner, "Temperature").await;
    let response =
        app.post(&format!("/api/edgenodes/{}/flows/{flow}/start?wait=10", node.id), &owner).send().await.unwrap();
    let (status, job) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!((job["state"].as_str(), job["error"].as_str()), (Some("Failed"), Some("flow not deployed")));
    let job_id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(agent.executions(job_id), 1);
    assert!(
        eventually(WITHIN, || async {
            let mut db = app.db().await;
            let messages: Vec<String> = sqlx::query_scalar(
                "SELECT message FROM events WHERE node_id = $1 AND level = 'Error' AND flow_definition_id = $2",
            )
            .bind(node.id)
            .bind(flow)
            .fetch_all(&mut db)
            .await
            .unwrap();
            messages.iter().any(|m| m.contains("flow not deployed"))
        })
        .await,
        "the failure is reported as an event"
    );
    agent.stop().await;
}

#[tokio::test]
async fn jobs_queued_while_offline_run_in_order_once_and_a_lost_update_does_not_rerun_a_job() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let dir = temp_dir();
    let definition = create_flow_definition(&app, &owner, "Temperature").await;
    let flow = DeployFlow {
        flow_definition_id: definition,
        flow_id: Uuid::now_v7(),
        version: 1,
        name: "Temperature".into(),
        content: json!({"modules": [], "connections": []}),
        resources: vec![],
    };
    let deploy = enqueue_job(&app, &owner, &node, JobCommand::Deploy, Some(&flow)).await;
    let (_, stop) =
        body(app.post(&format!("/api/edgenodes/{}/flows/{definition}/stop", node.id), &owner).send().await.unwrap())
            .await;
    let stop: Uuid = stop["id"].as_str().unwrap().parse().unwrap();

    let mut settings = config(&app, &node);
    settings.state_dir = Some(dir.clone());
    let agent = Agent::spawn(settings.clone()).unwrap();
    assert!(
        eventually(WITHIN, || async { job_state(&app, &owner, &node, stop).await["state"] == "Succeeded" }).await,
        "{}",
        job_state(&app, &owner, &node, stop).await
    );
    assert_eq!(job_state(&app, &owner, &node, deploy).await["state"], "Succeeded");
    assert_eq!((agent.executions(deploy), agent.executions(stop)), (1, 1));
    assert!(
        eventually(WITHIN, || async {
            let flows = node_view(&app, &owner, node.id).await["flows"].clone();
            flows[0]["flowDefinitionId"] == definition.to_string() && flows[0]["state"] == "stopped"
        })
        .await,
        "the node shows the flows the agent reported"
    );
    agent.stop().await;

    // The server lost the final update (say, a crash before it was stored): it redelivers the job
    // on the next connection, and the restarted agent reports the outcome without running it again.
    sqlx::query("UPDATE node_jobs SET state = 'Sent', finished_at = NULL WHERE id = $1")
        .bind(stop)
        .execute(&mut app.db().await)
        .await
        .unwrap();
    let restarted = Agent::spawn(settings).unwrap();
    assert!(eventually(WITHIN, || async { job_state(&app, &owner, &node, stop).await["state"] == "Succeeded" }).await);
    assert_eq!(restarted.executions(stop), 0);
    assert_eq!(restarted.flows()[0].state, "stopped", "the runtime came back from the state dir");
    restarted.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_deploy_downloads_its_resources_with_the_node_credentials_and_checks_them() {
    use axum::{http::HeaderMap, routing};
    const CONTENT: &[u8] = b"calibration table";
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let expected = edgeflow::agent::basic_authorization(node.id, &node.key);
    let files = axum::Router::new().route(
        "/files/{name}",
        routing::get(move |headers: HeaderMap| async move {
            let given = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if given == expected { Ok(CONTENT) } else { Err(axum::http::StatusCode::UNAUTHORIZED) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let files_url = format!("http://{}/files", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, files).await });

    let dir = temp_dir();
    let mut settings = config(&app, &node);
    settings.state_dir = Some(dir.clone());
    let agent = Agent::spawn(settings).unwrap();
    assert!(connected(&app, &owner, &agent).await);

    let resource = |sha256: String| {
        let version_id = Uuid::now_v7();
        DeployResource {
            resource_id: Uuid::now_v7(),
            version_id,
            path: Some("calibration.csv".into()),
            size_in_bytes: CONTENT.len() as i64,
            sha256,
            download_url: format!("{files_url}/{version_id}"),
        }
    };
    let good = resource(hex::encode(Sha256::digest(CONTENT)));
    let flow = |version: i64, resources: Vec<DeployResource>| DeployFlow {
        flow_definition_id: Uuid::nil(),
        flow_id: Uuid::now_v7(),
        version,
        name: "Calibrated".into(),
        content: json!({"modules": []}),
        resources,
    };
    let definition = Uuid::now_v7();
    let v1 = DeployFlow { flow_definition_id: definition, ..flow(1, vec![good.clone()]) };
    let ok = enqueue_job(&app, &owner, &node, JobCommand::Deploy, Some(&v1)).await;
    let v2 =
        DeployFlow { flow_definition_id: definition, ..flow(2, vec![resource(hex::encode(Sha256::digest(b"x")))]) };
    let bad = enqueue_job(&app, &owner, &node, JobCommand::Deploy, Some(&v2)).await;
    assert!(eventually(WITHIN, || async { job_state(&app, &owner, &node, bad).await["state"] == "Failed" }).await);
    assert_eq!(job_state(&app, &owner, &node, ok).await["state"], "Succeeded");
    let failed = job_state(&app, &owner, &node, bad).await;
    assert!(failed["error"].as_str().unwrap().contains("sha256 mismatch"), "{failed}");
    assert_eq!(std::fs::read(dir.join("resources").join(good.version_id.to_string())).unwrap(), CONTENT);
    let (_, runtime) = get(&app, &owner, &format!("/api/edgenodes/{}/runtime", node.id)).await;
    assert_eq!(
        (runtime["flows"][0]["version"].as_i64(), runtime["flows"][0]["state"].as_str()),
        (Some(1), Some("running"))
    );
    agent.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_agent_reports_the_desired_shadow() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let path = format!("/api/edgenodes/{}/shadow", node.id);
    let (status, _) = body(app.patch(&path, &owner).json(&json!({"sampleRate": 5})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let agent = Agent::spawn(config(&app, &node)).unwrap();
    assert!(connected(&app, &owner, &agent).await);
    let converged = |expected: Value| {
        let (app, owner, path) = (&app, &owner, &path);
        async move {
            eventually(WITHIN, || async {
                let (_, shadow) = get(app, owner, path).await;
                shadow["reported"] == expected && shadow["delta"] == json!({})
            })
            .await
        }
    };
    assert!(converged(json!({"sampleRate": 5})).await);
    // A change while connected is reported too.
    app.patch(&path, &owner).json(&json!({"mode": "eco"})).send().await.unwrap();
    assert!(converged(json!({"sampleRate": 5, "mode": "eco"})).await);
    agent.stop().await;
}

#[tokio::test]
async fn close_codes_stop_the_agent_when_it_must_not_come_back() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;

    // Two agents with one identity: the older is replaced (4000) and stops; no flapping.
    let node = create_node(&app, &owner, "Line1").await;
    let mut first = Agent::spawn(config(&app, &node)).unwrap();
    assert!(connected(&app, &owner, &first).await);
    let second = Agent::spawn(config(&app, &node)).unwrap();
    assert!(matches!(first.wait_stopped(WITHIN).await, Some(StopReason::Closed { code: 4000, .. })));
    assert!(connected(&app, &owner, &second).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(second.status().connections, 1, "the newer agent keeps its connection");

    // Key rotation: 4002.
    let mut second = second;
    let (status, _) =
        body(app.post(&format!("/api/edgenodes/{}/accesskey", node.id), &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(matches!(second.wait_stopped(WITHIN).await, Some(StopReason::Closed { code: 4002, .. })));

    // Deletion: 4001.
    let other = create_node(&app, &owner, "Line2").await;
    let mut agent = Agent::spawn(config(&app, &other)).unwrap();
    assert!(connected(&app, &owner, &agent).await);
    let response = app.delete(&format!("/api/edgenodes/{}", other.id), &owner).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(matches!(agent.wait_stopped(WITHIN).await, Some(StopReason::Closed { code: 4001, .. })));
}

#[tokio::test]
async fn wrong_credentials_are_retried_with_backoff_not_given_up() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let wrong = Node { key: "efn_wrong".into(), ..node };
    let agent = Agent::spawn(config(&app, &wrong)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!agent.is_connected());
    assert!(!agent.is_finished(), "it keeps trying");
    assert!(agent.log_lines(50).iter().any(|l| l.contains("HTTP 401")), "{:?}", agent.log_lines(50));
    agent.stop().await;
}

#[tokio::test]
async fn the_agent_reconnects_after_a_server_crash_and_gets_its_jobs() {
    let mut app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let agent = Agent::spawn(config(&app, &node)).unwrap();
    assert!(connected(&app, &owner, &agent).await);
    app.crash_and_restart().await;
    let owner = app.owner().await;
    assert!(eventually(WITHIN, || async { agent.status().connections >= 2 && agent.is_connected() }).await);
    let flow = create_flow_definition(&app, &owner, "Temperature").await;
    let (status, job) =
        body(app.post(&format!("/api/edgenodes/{}/flows/{flow}/stop?wait=10", node.id), &owner).send().await.unwrap())
            .await;
    assert_eq!((status, job["state"].as_str()), (StatusCode::OK, Some("Failed")), "{job}");
    agent.stop().await;
}

#[tokio::test]
async fn an_agent_enrols_with_a_registration_key_once() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (status, created) = body(
        app.post("/api/registrationkeys", &owner)
            .json(&json!({"name": "Gateways", "nodeType": "DevAndTest"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap();
    let dir = temp_dir();
    let http = reqwest::Client::new();
    let (credentials, new) = enroll::ensure_enrolled(&http, &app.base_url, key, "gateway-1", &dir).await.unwrap();
    assert!(new);
    let (again, new) = enroll::ensure_enrolled(&http, &app.base_url, key, "gateway-1", &dir).await.unwrap();
    assert!(!new, "the saved credentials are reused");
    assert_eq!(again.node_id, credentials.node_id);

    let node = Node { id: credentials.node_id, key: credentials.access_key, name: "gateway-1".into() };
    let agent = Agent::spawn(config(&app, &node)).unwrap();
    assert!(connected(&app, &owner, &agent).await);
    assert_eq!(node_view(&app, &owner, node.id).await["type"], "DevAndTest");
    agent.stop().await;

    let error = enroll::register(&http, &app.base_url, "efreg_wrong", "gateway-2").await.unwrap_err();
    assert!(format!("{error:#}").contains("HTTP 4"), "{error:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_agent_trusts_a_self_signed_server_with_ca_cert() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let app = TestApp::spawn_with(|config| {
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
    })
    .await;
    let port = app.server.as_ref().unwrap().addr.port();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let https = format!("https://localhost:{port}");
    let login = trusting
        .post(format!("{https}/api/authentication/login"))
        .json(&json!({"email": OWNER_EMAIL, "password": OWNER_PASSWORD}))
        .send()
        .await
        .unwrap();
    let token = login.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let me = trusting.get(format!("{https}/api/users/me")).bearer_auth(&token).send().await.unwrap();
    let organization = me.json::<Value>().await.unwrap()["organization"]["id"].clone();
    let created = trusting
        .post(format!("{https}/api/edgenodes"))
        .bearer_auth(&token)
        .json(&json!({"name": "Secure1", "organizationId": organization, "type": "Production"}))
        .send()
        .await
        .unwrap();
    let created = created.json::<Value>().await.unwrap();
    let node_id: Uuid = created["id"].as_str().unwrap_or_else(|| panic!("{created}")).parse().unwrap();

    // Without the CA the agent cannot connect; with it, it can.
    let mut settings = AgentConfig::new(https.clone(), node_id, created["accessKey"].as_str().unwrap());
    settings.backoff_max = Duration::from_millis(200);
    let untrusting = Agent::spawn(settings.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!untrusting.is_connected());
    untrusting.stop().await;
    settings.ca_cert = Some(cert.clone());
    let agent = Agent::spawn(settings).unwrap();
    assert!(eventually(WITHIN, || async { agent.is_connected() }).await, "{:?}", agent.log_lines(10));
    let health =
        trusting.get(format!("{https}/api/edgenodes/{node_id}/health")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    agent.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

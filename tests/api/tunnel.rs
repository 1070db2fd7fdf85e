//! The tunnel hub: handshake, presence, durable ordered jobs, replicas, calls, shadow.

use std::time::Duration;

use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{helpers::*, wire::*};

async fn node_view(app: &TestApp, session: &Session, node: &Node) -> Value {
    let (status, value) = body(app.get(&format!("/api/edgenodes/{}", node.id), session).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value
}

async fn is_online(app: &TestApp, session: &Session, node: &Node) -> bool {
    node_view(app, session, node).await["online"] == true
}

async fn start(app: &TestApp, session: &Session, node: &Node, flow: Uuid) -> Value {
    let (status, job) =
        body(app.post(&format!("/api/edgenodes/{}/flows/{flow}/start", node.id), session).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    job
}

#[tokio::test]
async fn waiting_for_a_job_ends_before_the_request_timeout() {
    let app = TestApp::spawn_with(|config| config.request_timeout_seconds = 3).await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let flow = create_flow_definition(&app, &owner, "Temperature").await;
    // The node is offline: the job stays queued, and the answer says so (202), not a 503.
    let path = format!("/api/edgenodes/{}/flows/{flow}/start?wait=60", node.id);
    let (status, job) = body(app.post(&path, &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["state"], "Queued");
}

#[tokio::test]
async fn bad_credentials_are_refused_before_the_upgrade() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    assert_eq!(open(&app, node.id, "efn_wrong").await.err(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(open(&app, Uuid::now_v7(), &node.key).await.err(), Some(StatusCode::UNAUTHORIZED));
    // No credentials at all.
    let plain = app.client.get(app.url("/api/tunnel")).send().await.unwrap();
    let (status, value) = body(plain).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // Right credentials, but not a WebSocket upgrade.
    let response = app.client.get(app.url("/api/tunnel")).basic_auth(node.id, Some(&node.key)).send().await.unwrap();
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(open(&app, node.id, &node.key).await.is_ok());
}

#[tokio::test]
async fn hello_welcome_and_honest_presence() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    assert!(!is_online(&app, &owner, &node).await);

    let (mut wire, welcome) = Wire::connect(&app, &node).await;
    assert_eq!(welcome["nodeId"], node.id.to_string());
    assert_eq!(welcome["heartbeatSeconds"], 1);
    let view = node_view(&app, &owner, &node).await;
    assert_eq!(view["online"], true, "{view}");
    assert_eq!(view["agentVersion"], "wire-test");
    assert!(view["connectedAt"].as_str().is_some());

    wire.socket.close(None).await.unwrap();
    assert!(eventually(Duration::from_secs(3), || async { !is_online(&app, &owner, &node).await }).await);
    let mut db = app.db().await;
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM events WHERE node_id = $1 AND action LIKE 'node.%connected' ORDER BY occurred_at",
    )
    .bind(node.id)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(actions, ["node.connected", "node.disconnected"]);
}

#[tokio::test]
async fn a_socket_dropped_without_a_close_frame_goes_offline() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let (wire, _) = Wire::connect(&app, &node).await;
    assert!(is_online(&app, &owner, &node).await);
    drop(wire);
    assert!(eventually(Duration::from_secs(3), || async { !is_online(&app, &owner, &node).await }).await);
}

#[tokio::test]
async fn a_node_that_stops_answering_pings_goes_offline_within_the_threshold() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    // Connected, then never read again: tungstenite answers pings only while reading.
    let (wire, _) = Wire::connect(&app, &node).await;
    let went_silent = std::time::Instant::now();
    assert!(is_online(&app, &owner, &node).await);
    assert!(eventually(Duration::from_secs(6), || async { !is_online(&app, &owner, &node).await }).await);
    let took = went_silent.elapsed();
    assert!(took >= Duration::from_secs(2), "offline after {took:?}, before the threshold");
    drop(wire);
}

#[tokio::test]
async fn jobs_queued_while_offline_arrive_in_order_and_states_follow_updates() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let flow = create_flow_definition(&app, &owner, "Temperature").await;
    let mut queued = Vec::new();
    for _ in 0..5 {
        queued.push(start(&app, &owner, &node, flow).await);
    }
    assert_eq!(queued.iter().map(|j| j["seq"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(queued.iter().all(|j| j["state"] == "Queued"));

    let (mut wire, _) = Wire::connect(&app, &node).await;
    let mut seqs = Vec::new();
    for _ in 0..5 {
        let job = wire.recv_type("job").await;
        assert_eq!(job["command"], "start");
        assert_eq!(job["flowDefinitionId"], flow.to_string());
        seqs.push(job["seq"].as_i64().unwrap());
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let first = queued[0]["id"].as_str().unwrap();
    wire.job_update(first, "received").await;
    wire.job_update(first, "inProgress").await;
    wire.job_update(first, "succeeded").await;
    let second = queued[1]["id"].as_str().unwrap();
    wire.send(json!({"type": "jobUpdate", "jobId": second, "state": "failed", "error": "disk full"})).await;

    let path = format!("/api/edgenodes/{}/jobs/{first}", node.id);
    assert!(
        eventually(Duration::from_secs(3), || async {
            body(app.get(&path, &owner).send().await.unwrap()).await.1["state"] == "Succeeded"
        })
        .await
    );
    let (_, failed) =
        body(app.get(&format!("/api/edgenodes/{}/jobs/{second}", node.id), &owner).send().await.unwrap()).await;
    assert_eq!((failed["state"].as_str(), failed["error"].as_str()), (Some("Failed"), Some("disk full")));
    let (_, pending) = body(
        app.get(
            &format!("/api/edgenodes/{}/jobs?filters[0].propertyName=state&filters[0].propertyValue=Sent&filters[0].filterType=equal&includeCount=true", node.id),
            &owner,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(pending["totalCount"], 3, "{pending}");
    assert_eq!(node_view(&app, &owner, &node).await["pendingJobs"], 3);
}

#[tokio::test]
async fn unfinished_jobs_are_redelivered_after_a_reconnect() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let (mut wire, _) = Wire::connect(&app, &node).await;
    let job = start(&app, &owner, &node, create_flow_definition(&app, &owner, "Temperature").await).await;
    let delivered = wire.recv_type("job").await;
    assert_eq!(delivered["id"], job["id"]);
    wire.job_update(job["id"].as_str().unwrap(), "inProgress").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(wire);

    let (mut again, _) = Wire::connect(&app, &node).await;
    let redelivered = again.recv_type("job").await;
    assert_eq!(redelivered["id"], job["id"], "the unfinished job comes again");
    again.job_update(job["id"].as_str().unwrap(), "succeeded").await;
    let path = format!("/api/edgenodes/{}/jobs/{}", node.id, job["id"].as_str().unwrap());
    assert!(
        eventually(Duration::from_secs(3), || async {
            body(app.get(&path, &owner).send().await.unwrap()).await.1["state"] == "Succeeded"
        })
        .await
    );
    let (_, finished) = body(app.get(&path, &owner).send().await.unwrap()).await;
    assert_eq!(finished["attempts"], 2);
    // A finished job is not sent again.
    drop(again);
    let (mut third, _) = Wire::connect(&app, &node).await;
    assert!(third.recv_within(Duration::from_millis(700)).await.is_none_or(|m| m["type"] != "job"));
}

#[tokio::test]
async fn a_job_created_on_one_replica_reaches_a_node_on_another() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let (mut wire, _) = Wire::connect(&replica, &node).await;
    assert!(is_online(&app, &owner, &node).await, "replica A sees the node held by B as online");
    let job = start(&app, &owner, &node, create_flow_definition(&app, &owner, "Temperature").await).await;
    let delivered = wire.recv_type("job").await;
    assert_eq!(delivered["id"], job["id"]);
}

#[tokio::test]
async fn a_node_message_larger_than_a_frame_buffer_keeps_the_tunnel_open() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let (mut wire, _) = Wire::connect(&app, &node).await;
    let logs = format!("/api/edgenodes/{}/logs?tail=1000", node.id);
    // 100 KB in one frame (as agents send every message), within the message limit.
    let lines: Vec<String> = (0..1000).map(|i| format!("{i:04} {}", "x".repeat(95))).collect();
    let call = app.get(&logs, &owner).send();
    let answer = async {
        let request = wire.recv_type("request").await;
        wire.send(json!({"type": "response", "id": request["id"], "ok": true, "result": {"lines": lines}})).await;
        // Still connected: the next call is answered too.
        let request = wire.recv_type("request").await;
        wire.send(json!({"type": "response", "id": request["id"], "ok": true, "result": {"status": "ok"}})).await;
    };
    let calls = async {
        let (status, value) = body(call.await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        assert_eq!(value["lines"].as_array().map(Vec::len), Some(1000));
        let (status, value) =
            body(app.get(&format!("/api/edgenodes/{}/health", node.id), &owner).send().await.unwrap()).await;
        assert_eq!((status, &value["status"]), (StatusCode::OK, &json!("ok")), "{value}");
    };
    tokio::join!(answer, calls);
}

#[tokio::test]
async fn synchronous_calls_answer_from_any_replica_with_clear_errors() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let health = format!("/api/edgenodes/{}/health", node.id);

    let (status, value) = body(app.get(&health, &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::CONFLICT, "NODE_OFFLINE");

    let (mut wire, _) = Wire::connect(&replica, &node).await;
    let app_call = app.get(&health, &owner).send();
    let answer = async {
        let request = wire.recv_type("request").await;
        assert_eq!(request["method"], "health");
        wire.send(json!({"type": "response", "id": request["id"], "ok": true, "result": {"status": "ok", "big": "x".repeat(20_000)}})).await;
        let logs_request = wire.recv_type("request").await;
        assert_eq!(logs_request["params"]["tail"], 5);
        wire.send(json!({"type": "response", "id": logs_request["id"], "ok": false, "error": "log file missing"}))
            .await;
        // The third call is never answered.
        wire.recv_type("request").await;
        wire
    };
    let calls = async {
        let (status, value) = body(app_call.await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        assert_eq!(value["status"], "ok");
        assert_eq!(value["big"].as_str().unwrap().len(), 20_000, "a large answer crosses replicas through the table");
        let (status, value) =
            body(app.get(&format!("/api/edgenodes/{}/logs?tail=5", node.id), &owner).send().await.unwrap()).await;
        assert_error(status, &value, StatusCode::BAD_GATEWAY, "NODE_ERROR");
        assert!(value["error"].as_str().unwrap().contains("log file missing"));
        let (status, value) =
            body(app.get(&format!("/api/edgenodes/{}/runtime", node.id), &owner).send().await.unwrap()).await;
        assert_error(status, &value, StatusCode::GATEWAY_TIMEOUT, "NODE_TIMEOUT");
    };
    let (_wire, ()) = tokio::join!(answer, calls);
    let (status, value) =
        body(app.get(&format!("/api/edgenodes/{}/logs?tail=0", node.id), &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn shadow_documents_keep_extreme_numbers_and_refuse_nul() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let path = format!("/api/edgenodes/{}/shadow", node.id);
    // Stored as jsonb, read back in full: still the same numbers.
    let extremes = json!({"max": f64::MAX, "min": -f64::MAX, "tiny": 5e-324});
    let (status, shadow) = body(app.patch(&path, &owner).json(&extremes).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{shadow}");
    let (status, shadow) = body(app.get(&path, &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{shadow}");
    assert_eq!(shadow["desired"], extremes);
    // jsonb cannot hold NUL: refused before anything else, whatever If-Match says.
    let response = app.patch(&path, &owner).header("if-match", "\"99\"").json(&json!({"a\u{0}": 1})).send();
    let (status, value) = body(response.await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn shadow_round_trip_with_etags() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let path = format!("/api/edgenodes/{}/shadow", node.id);
    let response = app.get(&path, &owner).send().await.unwrap();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, "\"0\"");

    let response = app
        .patch(&path, &owner)
        .header("if-match", &etag)
        .json(&json!({"sampleRate": 5, "mode": "eco"}))
        .send()
        .await
        .unwrap();
    let (status, shadow) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{shadow}");
    assert_eq!(shadow["version"], 1);
    assert_eq!(shadow["delta"], json!({"sampleRate": 5, "mode": "eco"}));
    // A stale ETag: someone else changed it meanwhile.
    let (status, value) =
        body(app.patch(&path, &owner).header("if-match", &etag).json(&json!({"mode": "fast"})).send().await.unwrap())
            .await;
    assert_error(status, &value, StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED");

    // The node gets the desired state on connect, and reports.
    let (mut wire, _) = Wire::connect(&app, &node).await;
    let pushed = wire.recv_type("shadow").await;
    assert_eq!((pushed["version"].as_i64(), &pushed["desired"]), (Some(1), &json!({"sampleRate": 5, "mode": "eco"})));
    wire.send(json!({"type": "shadowReported", "reported": {"sampleRate": 5, "mode": "fast"}, "version": 1})).await;
    // A change while connected is pushed at once; null removes a key.
    let (_, changed) =
        body(app.patch(&path, &owner).json(&json!({"mode": null, "limit": 3})).send().await.unwrap()).await;
    assert_eq!(changed["version"], 2);
    let pushed = wire.recv_type("shadow").await;
    assert_eq!(pushed["desired"], json!({"sampleRate": 5, "limit": 3}));
    assert!(
        eventually(Duration::from_secs(3), || async {
            let (_, shadow) = body(app.get(&path, &owner).send().await.unwrap()).await;
            shadow["reported"]["mode"] == "fast" && shadow["delta"] == json!({"limit": 3})
        })
        .await
    );
    let (status, value) = body(app.patch(&path, &owner).json(&json!([1, 2])).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn close_codes_for_replaced_rotated_and_deleted_nodes() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;

    // A second connection (here through another replica) replaces the first: 4000.
    let (mut first, _) = Wire::connect(&app, &node).await;
    let (mut second, _) = Wire::connect(&replica, &node).await;
    assert_eq!(first.closed_with().await, Some(4000));
    assert!(is_online(&app, &owner, &node).await, "the newer connection keeps the node online");

    // Key rotation: 4002, and the old key no longer opens the tunnel.
    let (status, rotated) =
        body(app.post(&format!("/api/edgenodes/{}/accesskey", node.id), &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(second.closed_with().await, Some(4002));
    assert_eq!(open(&app, node.id, &node.key).await.err(), Some(StatusCode::UNAUTHORIZED));
    let node = Node { key: rotated["accessKey"].as_str().unwrap().to_owned(), ..node };

    // Deletion: 4001.
    let (mut third, _) = Wire::connect(&app, &node).await;
    let response = app.delete(&format!("/api/edgenodes/{}", node.id), &owner).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(third.closed_with().await, Some(4001));
}

#[tokio::test]
async fn protocol_violations_close_with_4003() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    for first_message in [
        json!({"type": "state", "flows": []}),
        json!({"type": "hello", "protocolVersion": 99, "agentVersion": "x"}),
        json!({"type": "teleport"}),
    ] {
        let mut wire = open(&app, node.id, &node.key).await.unwrap();
        wire.send(first_message.clone()).await;
        assert_eq!(wire.closed_with().await, Some(4003), "{first_message}");
    }
    let (mut wire, _) = Wire::connect(&app, &node).await;
    wire.socket.send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(wire.closed_with().await, Some(4003));
    // Events a node sends are validated.
    let (mut wire, _) = Wire::connect(&app, &node).await;
    wire.send(json!({"type": "event", "level": "Error", "message": "temperature sensor lost"})).await;
    // Lenient where it costs nothing: any case of a level, NUL characters dropped, large data
    // replaced by a marker.
    wire.send(json!({"type": "event", "level": "warning", "message": "fan\u{0}slow", "data": {"note": "a\u{0}b"}}))
        .await;
    wire.send(json!({"type": "event", "level": "Info", "message": "dump", "data": {"blob": "x".repeat(20_000)}})).await;
    wire.send(json!({"type": "event", "level": "Loud", "message": "x"})).await;
    assert_eq!(wire.closed_with().await, Some(4003));
    let stored: Vec<(String, String, Option<Value>)> = sqlx::query_as(
        "SELECT level, message, data FROM events WHERE node_id = $1 AND action = 'node.event' ORDER BY occurred_at",
    )
    .bind(node.id)
    .fetch_all(&mut app.db().await)
    .await
    .unwrap();
    assert_eq!(
        stored,
        [
            ("Error".to_owned(), "temperature sensor lost".to_owned(), None),
            ("Warning".to_owned(), "fanslow".to_owned(), Some(json!({"note": "ab"}))),
            ("Info".to_owned(), "dump".to_owned(), Some(json!({"truncated": true, "bytes": 20_011}))),
        ]
    );
}

#[tokio::test]
async fn a_node_flooding_messages_is_cut_off() {
    let app = TestApp::spawn_with(|config| config.node_messages_per_second = 5).await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let (mut wire, _) = Wire::connect(&app, &node).await;
    for _ in 0..200 {
        if wire
            .socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                json!({"type": "metrics", "cpu": 1}).to_string().into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(wire.closed_with().await, Some(4003));
}

#[tokio::test]
async fn a_crashed_server_loses_no_job() {
    let mut app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let (mut wire, _) = Wire::connect(&app, &node).await;
    let flow = create_flow_definition(&app, &owner, "Temperature").await;
    let first = start(&app, &owner, &node, flow).await;
    wire.recv_type("job").await;
    let second = start(&app, &owner, &node, flow).await;
    wire.recv_type("job").await;
    wire.job_update(first["id"].as_str().unwrap(), "succeeded").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    app.crash_and_restart().await;
    assert!(wire.closed_with().await.is_none(), "a crash sends no close frame");
    let third = start(&app, &owner, &node, flow).await;
    let (mut wire, _) = Wire::connect(&app, &node).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(wire.recv_type("job").await["id"].clone());
    }
    assert_eq!(
        ids,
        [second["id"].clone(), third["id"].clone()],
        "unfinished jobs come back in order; the finished one does not"
    );
}

#[tokio::test]
async fn canceling_a_pending_job() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let job = start(&app, &owner, &node, create_flow_definition(&app, &owner, "Temperature").await).await;
    let path = format!("/api/edgenodes/{}/jobs/{}", node.id, job["id"].as_str().unwrap());
    let (status, canceled) = body(app.delete(&path, &owner).send().await.unwrap()).await;
    assert_eq!((status, canceled["state"].as_str()), (StatusCode::OK, Some("Canceled")));
    let (status, value) = body(app.delete(&path, &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::CONFLICT, "JOB_NOT_CANCELABLE");
    // A canceled job is never delivered.
    let (mut wire, _) = Wire::connect(&app, &node).await;
    assert!(wire.recv_within(Duration::from_millis(700)).await.is_none_or(|m| m["type"] != "job"));
}

#[tokio::test]
async fn wait_answers_the_outcome() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let (mut wire, _) = Wire::connect(&app, &node).await;
    let flow = create_flow_definition(&app, &owner, "Temperature").await;
    let node_side = async {
        let job = wire.recv_type("job").await;
        wire.job_update(job["id"].as_str().unwrap(), "succeeded").await;
        wire
    };
    let call = app.post(&format!("/api/edgenodes/{}/flows/{flow}/stop?wait=5", node.id), &owner).send();
    let (_wire, response) = tokio::join!(node_side, call);
    let (status, job) = body(response.unwrap()).await;
    assert_eq!(
        (status, job["state"].as_str(), job["command"].as_str()),
        (StatusCode::OK, Some("Succeeded"), Some("stop"))
    );
    let (status, value) =
        body(app.post(&format!("/api/edgenodes/{}/flows/{flow}/stop?wait=500", node.id), &owner).send().await.unwrap())
            .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn bulk_commands_reach_every_selected_node() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let mut wires = Vec::new();
    for i in 0..3 {
        let labels = if i < 2 { json!({"line": "3"}) } else { json!({"line": "4"}) };
        let node = create_node_with(&app, &owner, json!({"name": format!("n{i}"), "organizationId": owner.organization_id, "type": "Production", "labels": labels})).await;
        wires.push(Wire::connect(&app, &node).await.0);
    }
    let flow = create_flow_definition(&app, &owner, "Temperature").await;
    let (status, result) = body(
        app.post("/api/edgenodes/jobs", &owner)
            .json(&json!({"command": "start", "flowDefinitionId": flow, "labels": {"line": "3"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, result["count"].as_u64()), (StatusCode::ACCEPTED, Some(2)), "{result}");
    for wire in &mut wires[..2] {
        assert_eq!(wire.recv_type("job").await["flowDefinitionId"], flow.to_string());
    }
    assert!(wires[2].recv_within(Duration::from_millis(700)).await.is_none_or(|m| m["type"] != "job"));
    let (status, value) = body(
        app.post("/api/edgenodes/jobs", &owner)
            .json(&json!({"command": "explode", "flowDefinitionId": flow, "nodeIds": []}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    // A flow definition that does not exist is refused before any job is queued, in bulk and
    // on one node.
    let unknown = Uuid::now_v7();
    let (status, value) = body(
        app.post("/api/edgenodes/jobs", &owner)
            .json(&json!({"command": "start", "flowDefinitionId": unknown, "labels": {"line": "3"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let node_id = create_node(&app, &owner, "n3").await.id;
    let (status, value) =
        body(app.post(&format!("/api/edgenodes/{node_id}/flows/{unknown}/start"), &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (_, jobs) = body(app.get(&format!("/api/edgenodes/{node_id}/jobs"), &owner).send().await.unwrap()).await;
    assert_eq!(jobs["items"], json!([]), "{jobs}");
    for wire in &mut wires[..2] {
        assert!(wire.recv_within(Duration::from_millis(300)).await.is_none_or(|m| m["type"] != "job"));
    }
}

#[tokio::test]
async fn another_organization_cannot_reach_nodes_jobs_calls_or_shadows() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let flow = create_flow_definition(&app, &owner, "Temperature").await;
    let job = start(&app, &owner, &node, flow).await;
    let stranger = app.register("stranger@example.com", "Stranger").await;
    let id = node.id;
    let job_id = job["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/api/edgenodes/{id}/jobs")),
        ("GET", format!("/api/edgenodes/{id}/jobs/{job_id}")),
        ("DELETE", format!("/api/edgenodes/{id}/jobs/{job_id}")),
        ("POST", format!("/api/edgenodes/{id}/flows/{flow}/start")),
        ("POST", format!("/api/edgenodes/{id}/flows/{flow}/stop")),
        ("GET", format!("/api/edgenodes/{id}/health")),
        ("GET", format!("/api/edgenodes/{id}/logs")),
        ("GET", format!("/api/edgenodes/{id}/runtime")),
        ("GET", format!("/api/edgenodes/{id}/shadow")),
        ("PATCH", format!("/api/edgenodes/{id}/shadow")),
    ] {
        let request = app.client.request(method.parse().unwrap(), app.url(&path)).bearer_auth(&stranger.token);
        let request = if method == "PATCH" { request.json(&json!({"a": 1})) } else { request };
        let (status, value) = body(request.send().await.unwrap()).await;
        assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    // Their bulk command cannot name our flow, and never selects our node.
    let bulk = |flow: Uuid| {
        app.post("/api/edgenodes/jobs", &stranger)
            .json(&json!({"command": "stop", "flowDefinitionId": flow, "nodeIds": [id]}))
            .send()
    };
    let (status, value) = body(bulk(flow).await.unwrap()).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let theirs = create_flow_definition(&app, &stranger, "Temperature").await;
    let (status, result) = body(bulk(theirs).await.unwrap()).await;
    assert_eq!((status, &result["count"]), (StatusCode::ACCEPTED, &json!(0)), "{result}");
    // A Viewer of ours may read but not command.
    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    assert_eq!(app.get(&format!("/api/edgenodes/{id}/jobs"), &viewer).send().await.unwrap().status(), StatusCode::OK);
    let (status, value) =
        body(app.post(&format!("/api/edgenodes/{id}/flows/{flow}/start"), &viewer).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
}

#[tokio::test]
async fn the_nodes_of_a_replica_that_dies_read_offline_within_the_threshold() {
    let app = TestApp::spawn().await;
    let mut replica = app.replica().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let (_wire, _) = Wire::connect(&replica, &node).await;
    assert!(is_online(&app, &owner, &node).await);
    // The replica dies without a word: no close frames, no clean-up, its heartbeat stops.
    let died = std::time::Instant::now();
    replica.server.take().unwrap().abort();
    assert!(eventually(Duration::from_secs(6), || async { !is_online(&app, &owner, &node).await }).await);
    let took = died.elapsed();
    assert!(took <= Duration::from_secs(5), "shown online {took:?} after its replica died (threshold 3 s)");
    // Another replica sweeps the dead one's nodes and says why.
    assert!(
        eventually(Duration::from_secs(8), || async {
            disconnect_reasons(&app, node.id).await.iter().any(|m| m.contains("replica"))
        })
        .await
    );
}

#[tokio::test]
async fn a_graceful_shutdown_closes_tunnels_with_1001_and_records_the_nodes_offline() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let (mut wire, _) = Wire::connect(&app, &node).await;
    let mut db = app.db().await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(wire.closed_with().await, Some(1001), "nodes are told to reconnect elsewhere");
    stopping.await.unwrap();
    let (held_by, disconnected): (Option<Uuid>, bool) =
        sqlx::query_as("SELECT replica_id, disconnected_at IS NOT NULL FROM edge_nodes WHERE id = $1")
            .bind(node.id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((held_by, disconnected), (None, true));
    let replicas: i64 = sqlx::query_scalar("SELECT count(*) FROM replicas").fetch_one(&mut db).await.unwrap();
    assert_eq!(replicas, 0, "a replica that stops cleanly removes its heartbeat row");
}

//! `openapi/asyncapi.yaml` documents the tunnel protocol; this fails when a message type of
//! `tunnel::protocol` is missing from it (or the document names one that no longer exists).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeflow::tunnel::protocol::{NodeMessage, ServerMessage};
use serde_json::json;
use uuid::Uuid;

/// One example of every message, so adding a variant without documenting it fails here.
fn every_type() -> Vec<String> {
    let id = Uuid::nil();
    let node: Vec<NodeMessage> = vec![
        serde_json::from_value(json!({"type": "hello", "protocolVersion": 1, "agentVersion": "x"})).unwrap(),
        serde_json::from_value(json!({"type": "jobUpdate", "jobId": id, "state": "received"})).unwrap(),
        serde_json::from_value(json!({"type": "state", "flows": []})).unwrap(),
        serde_json::from_value(json!({"type": "event", "level": "Info", "message": "m"})).unwrap(),
        serde_json::from_value(json!({"type": "metrics"})).unwrap(),
        serde_json::from_value(json!({"type": "response", "id": id, "ok": true})).unwrap(),
        serde_json::from_value(json!({"type": "shadowReported", "reported": {}})).unwrap(),
    ];
    let server: Vec<ServerMessage> = vec![
        serde_json::from_value(json!({"type": "welcome", "nodeId": id, "sessionId": id, "serverTime": "2020-09-29T12:57:10.481896Z", "heartbeatSeconds": 30})).unwrap(),
        serde_json::from_value(json!({"type": "job", "id": id, "seq": 1, "command": "start", "flowDefinitionId": id})).unwrap(),
        serde_json::from_value(json!({"type": "jobCanceled", "jobId": id})).unwrap(),
        serde_json::from_value(json!({"type": "request", "id": id, "method": "health"})).unwrap(),
        serde_json::from_value(json!({"type": "shadow", "desired": {}, "version": 1})).unwrap(),
    ];
    // Exhaustive matches: a new variant fails to compile until it is listed above (and below).
    for message in &node {
        match message {
            NodeMessage::Hello(_)
            | NodeMessage::JobUpdate(_)
            | NodeMessage::State(_)
            | NodeMessage::Event(_)
            | NodeMessage::Metrics(_)
            | NodeMessage::Response(_)
            | NodeMessage::ShadowReported(_) => {}
        }
    }
    for message in &server {
        match message {
            ServerMessage::Welcome(_)
            | ServerMessage::Job(_)
            | ServerMessage::JobCanceled(_)
            | ServerMessage::Request(_)
            | ServerMessage::Shadow(_) => {}
        }
    }
    let mut types: Vec<String> =
        node.iter().map(|m| serde_json::to_value(m).unwrap()["type"].as_str().unwrap().to_owned()).collect();
    types.extend(server.iter().map(|m| serde_json::to_value(m).unwrap()["type"].as_str().unwrap().to_owned()));
    types
}

#[test]
fn asyncapi_documents_every_message_type_and_no_other() {
    let document = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/asyncapi.yaml")).unwrap();
    let types = every_type();
    for kind in &types {
        assert!(document.contains(&format!("type: {{const: {kind}}}")), "asyncapi.yaml does not document `{kind}`");
    }
    let documented = document.matches("type: {const: ").count();
    assert_eq!(documented, types.len(), "asyncapi.yaml documents a message type the code does not have");
    assert!(document.starts_with("asyncapi: 3."));
}

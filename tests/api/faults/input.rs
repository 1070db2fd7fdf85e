//! Oversized and malformed input: JSON bodies, headers and URLs, tunnel frames, uploads. Each is
//! answered with a clean 4xx (in the one error shape where our code answers) or, on the tunnel,
//! a documented close code; the server carries on serving everyone else. Cases already asserted
//! elsewhere are not repeated: a JSON body over the limit and a text/plain body
//! (http_layer.rs), binary frames and flooding (tunnel.rs), uploads larger than declared or than
//! the maximum and part 0 (resources.rs).

use std::time::Duration;

use futures_util::SinkExt;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    },
};

use super::command;
use crate::{
    deployments::publish_flow,
    helpers::*,
    wire::{Wire, create_node, open},
};

/// The server still serves normal requests, is ready, and never answered a 5xx.
async fn still_serving(app: &TestApp, session: &Session) {
    assert_eq!(app.get("/api/users/me", session).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("status=\"5"), "a 5xx was answered:\n{metrics}");
}

/// Sends each request; each must be answered with its status and code in the error shape.
async fn refused(cases: Vec<(&str, RequestBuilder, StatusCode, &str)>) {
    for (what, request, status, code) in cases {
        let (got, value) = send(request).await;
        if let Err(problem) = check_error(got, &value, status, code) {
            panic!("{what}: {problem}");
        }
    }
}

#[tokio::test]
async fn malformed_and_oversized_json_bodies_get_a_clean_4xx() {
    const LIMIT: usize = 64 * 1024;
    let app = TestApp::spawn_with(|config| config.body_limit_bytes = LIMIT).await;
    let owner = app.owner().await;
    let node = create_node(&app, &owner, "Line1").await;
    let json_post =
        |path: &str, body: Vec<u8>| app.post(path, &owner).header("content-type", "application/json").body(body);
    let organizations = "/api/organizations";
    let shadow = format!("/api/edgenodes/{}/shadow", node.id);
    let nested = |depth: usize| format!("{{\"name\": {}{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    // Over the limit without a Content-Length: the body is cut off while it streams.
    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; LIMIT / 4]));
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    refused(vec![
        (
            "a streamed body over the limit",
            app.post(organizations, &owner).header("content-type", "application/json").body(streamed),
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        ("malformed JSON", json_post(organizations, b"{\"name\": }".to_vec()), StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        (
            "truncated JSON",
            json_post(organizations, b"{\"name\": \"Pla".to_vec()),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            "invalid UTF-8",
            json_post(organizations, b"{\"name\": \"\xff\xfe\"}".to_vec()),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        ("JSON nested 20,000 deep", json_post(organizations, nested(20_000)), StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        (
            "a free-form document nested 20,000 deep",
            app.patch(&shadow, &owner).header("content-type", "application/json").body(format!(
                "{{\"a\": {}{}}}",
                "[".repeat(20_000),
                "]".repeat(20_000)
            )),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        ("an empty body", json_post(organizations, Vec::new()), StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        ("not an object", json_post(organizations, b"[1, 2]".to_vec()), StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        (
            "a number out of range",
            json_post("/api/registrationkeys", b"{\"name\": \"k\", \"maxUses\": 1e400}".to_vec()),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            "a NUL character in a free-form document",
            app.patch(&shadow, &owner).json(&json!({"note": "a\u{0}b"})),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            "a NUL character in a label",
            app.patch(&format!("/api/edgenodes/{}", node.id), &owner).json(&json!({"labels": {"line": "3\u{0}"}})),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            "no content type",
            app.post(organizations, &owner).body("{\"name\": \"Plant\"}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ])
    .await;
    still_serving(&app, &owner).await;
}

/// Writes a raw HTTP/1.1 request and answers the status line's code (the server may close the
/// connection right after answering).
async fn raw_status(app: &TestApp, request: &[u8]) -> u16 {
    let addr = app.server.as_ref().unwrap().addr;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no answer: {text:?}"))
}

#[tokio::test]
async fn huge_headers_and_urls_are_refused_and_the_server_carries_on() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let long = "a".repeat(1024 * 1024);
    let get = |path: &str, headers: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{headers}\r\n").into_bytes()
    };
    let many: String = (0..200).map(|i| format!("x-header-{i}: {i}\r\n")).collect();
    for (what, request, expected) in [
        ("a 1 MiB header", get("/api/users/me", &format!("x-big: {long}\r\n")), 431),
        ("200 headers", get("/api/users/me", &many), 431),
        ("a 100 KiB URL", get(&format!("/api/{}", &long[..100 * 1024]), ""), 414),
    ] {
        assert_eq!(raw_status(&app, &request).await, expected, "{what}");
    }
    // A long token is just a wrong one.
    let (status, value) = send(app.client.get(app.url("/api/users/me")).bearer_auth("x".repeat(16 * 1024))).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    still_serving(&app, &owner).await;
}

#[tokio::test]
async fn broken_frames_close_the_tunnel_with_a_documented_code_and_other_nodes_carry_on() {
    const MAX_MESSAGE: usize = 16 * 1024;
    let app = TestApp::spawn_with(|config| config.node_max_message_bytes = MAX_MESSAGE).await;
    let owner = app.owner().await;
    let (definition, _) = publish_flow(&app, &owner, "Temperature", 1).await;
    let node = create_node(&app, &owner, "Line1").await;
    let bystander = create_node(&app, &owner, "Line2").await;
    let (mut other, _) = Wire::connect(&app, &bystander).await;
    let text = |bytes: Vec<u8>, last: bool| Message::Frame(Frame::message(bytes, OpCode::Data(Data::Text), last));
    let more = |bytes: Vec<u8>, last: bool| Message::Frame(Frame::message(bytes, OpCode::Data(Data::Continue), last));
    let part = || vec![b' '; MAX_MESSAGE / 2];
    for (what, frames, code) in [
        ("a frame over the limit", vec![Message::Text("x".repeat(MAX_MESSAGE + 1).into())], 1009),
        (
            "a message over the limit in small frames",
            vec![text(part(), false), more(part(), false), more(part(), true)],
            1009,
        ),
        ("a text frame that is not UTF-8", vec![text(vec![b'{', 0xff, 0xfe, b'}'], true)], 1007),
        ("a continuation with nothing to continue", vec![more(b"{}".to_vec(), true)], 1002),
        ("text that is not JSON", vec![Message::Text("hello?".into())], 4003),
        ("JSON that is not an object", vec![Message::Text("[1, 2, 3]".into())], 4003),
        ("an unknown message type", vec![Message::Text(json!({"type": "teleport"}).to_string().into())], 4003),
        (
            "a job update without a job",
            vec![Message::Text(json!({"type": "jobUpdate", "jobId": "nope", "state": "succeeded"}).to_string().into())],
            4003,
        ),
    ] {
        let (mut wire, _) = Wire::connect(&app, &node).await;
        for frame in frames {
            wire.socket.send(frame).await.unwrap();
        }
        assert_eq!(wire.closed_with().await, Some(code), "{what}");
        // Everyone else is served as before.
        let job = command(&app, &owner, &bystander, definition, "start").await;
        assert_eq!(other.recv_type("job").await["id"], job.to_string(), "after {what}");
    }
    // Before the hello too.
    let mut wire = open(&app, node.id, &node.key).await.unwrap();
    wire.socket.send(Message::Text("x".repeat(MAX_MESSAGE + 1).into())).await.unwrap();
    assert_eq!(wire.closed_with().await, Some(1009), "a hello over the limit");
    // The node that broke the rules may come back, and gets its jobs.
    let job = command(&app, &owner, &node, definition, "stop").await;
    let (mut wire, _) = Wire::connect(&app, &node).await;
    assert_eq!(wire.recv_type("job").await["id"], job.to_string());
    still_serving(&app, &owner).await;
}

#[tokio::test]
async fn broken_uploads_get_a_clean_4xx_and_leave_nothing_behind() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (status, resource) = send(app.post("/api/resources", &owner).json(&json!({
        "organizationId": owner.organization_id, "name": "Table", "type": "File",
        "category": "/organization/", "path": "table.csv"
    })))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{resource}");
    let resource = resource["id"].as_str().unwrap().to_owned();
    let (status, version) = send(
        app.post(&format!("/api/resources/{resource}/versions"), &owner)
            .json(&json!({"description": "draft", "sizeInBytes": 1000})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{version}");
    let content = format!("/api/resources/{resource}/versions/{}/content", version["id"].as_str().unwrap());
    let form = |body: Vec<u8>, content_type: &str| {
        app.post(&content, &owner).header("content-type", content_type.to_owned()).body(body)
    };
    let part = "--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"t.csv\"\r\n\r\n";
    let truncated = format!("{part}{}", "x".repeat(1000)).into_bytes();
    let (status, session) = send(
        app.post(&format!("/api/resources/{resource}/versions/{}/uploads", version["id"].as_str().unwrap()), &owner),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let parts = format!(
        "/api/resources/{resource}/versions/{}/uploads/{}/parts",
        version["id"].as_str().unwrap(),
        session["uploadId"].as_str().unwrap()
    );
    let put_part = |number: &str| {
        app.put(&format!("{parts}/{number}"), &owner).header("content-type", "application/octet-stream").body("x")
    };
    refused(vec![
        (
            "a multipart body cut off",
            form(truncated, "multipart/form-data; boundary=XyZ"),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            "a multipart body without a boundary",
            form(part.into(), "multipart/form-data"),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        ("a part number past the last", put_part("10001"), StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
        ("a part number past any integer", put_part("99999999999999999999"), StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        ("a part number that is not one", put_part("-1"), StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
    ])
    .await;

    // A body shorter than its Content-Length: the client stops sending (and waits).
    let addr = app.server.as_ref().unwrap().addr;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {content} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/octet-stream\r\ncontent-length: 1000\r\n\r\n",
        owner.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 400]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Nothing was kept of any of it.
    let (_, shown) =
        send(app.get(&format!("/api/resources/{resource}/versions/{}", version["id"].as_str().unwrap()), &owner)).await;
    assert_eq!((shown["sha256"].clone(), shown["uploadedBytes"].clone()), (Value::Null, json!(0)), "{shown}");
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM resource_blobs_pending").fetch_one(&mut app.db().await).await.unwrap();
    assert_eq!(pending, 0);
    still_serving(&app, &owner).await;
}

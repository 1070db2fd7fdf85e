//! The cross-cutting HTTP layer: request ids, error bodies, 405, limits, pretty JSON, CORS,
//! health, metrics, OpenAPI and the docs page, TLS.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn request_ids_are_echoed_or_made_and_named_in_errors() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/api/users/me")).header("x-request-id", "trace-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let (_, value) = body(response).await;
    assert_eq!(value["requestId"], "trace-42");

    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    let made = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
    // An unusable id (too long, odd characters) is replaced, not echoed.
    let response = app.client.get(app.url("/healthz")).header("x-request-id", "a b<script>").send().await.unwrap();
    assert_ne!(response.headers()["x-request-id"], "a b<script>");
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_error_body() {
    let app = TestApp::spawn().await;
    let (status, value) = body(app.client.get(app.url("/api/nothing-here")).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");

    let response = app.client.delete(app.url("/api/users/me")).send().await.unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("PATCH"), "{allow}");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn bodies_over_the_limit_and_wrong_content_types_are_refused() {
    let app = TestApp::spawn_with(|config| config.body_limit_bytes = 1024).await;
    let owner = app.owner().await;
    let big = json!({"name": "x".repeat(4096)});
    let (status, value) = body(app.patch("/api/users/me", &owner).json(&big).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");

    let response = app
        .patch("/api/users/me", &owner)
        .header("content-type", "text/plain")
        .body("{\"name\": \"x\"}")
        .send()
        .await
        .unwrap();
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
}

#[tokio::test]
async fn pretty_true_indents_json() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let compact = app.get("/api/users/me", &owner).send().await.unwrap().text().await.unwrap();
    let pretty = app.get("/api/users/me?pretty=true", &owner).send().await.unwrap().text().await.unwrap();
    assert!(!compact.contains('\n'));
    assert!(pretty.contains("\n  \"email\""), "{pretty}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&compact).unwrap(),
        serde_json::from_str::<serde_json::Value>(&pretty).unwrap()
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    app.get("/api/users/me", &owner).send().await.unwrap();
    app.client.get(app.url("/api/users/me")).send().await.unwrap();
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"edgeflow_http_requests_total{method="GET",route="/api/users/me",status="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"edgeflow_http_requests_total{method="GET",route="/api/users/me",status="401"} 1"#));
    assert!(metrics.contains(r#"edgeflow_http_request_duration_seconds_count{method="GET",route="/api/users/me"} 2"#));
    assert!(metrics.contains("edgeflow_db_pool_max_connections 3"));
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let app = TestApp::spawn_with(|config| config.cors_origins = vec!["https://ui.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/users/me"))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let allowed = preflight("https://ui.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://ui.example.com");
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let create = |name: &str, key: &str| {
        app.post("/api/organizations", &owner).header("idempotency-key", key).json(&json!({"name": name})).send()
    };
    let first = create("Plant A", "key-1").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let (_, first) = body(first).await;
    let again = create("Plant A", "key-1").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let (_, again) = body(again).await;
    assert_eq!(first["id"], again["id"]);

    let (status, value) = body(create("Plant B", "key-1").await.unwrap()).await;
    assert_error(status, &value, StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED");
    // Another caller may use the same key for its own request.
    let other = app.register("other@example.com", "Other").await;
    let response = app
        .post("/api/organizations", &other)
        .header("idempotency-key", "key-1")
        .json(&json!({"name": "Plant A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(!response.headers().contains_key("idempotent-replayed"));

    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations WHERE name = 'Plant A'")
        .fetch_one(&mut app.db().await)
        .await
        .unwrap();
    assert_eq!(created, 2, "one per caller, never one per retry");
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_once() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let attempts = (0..8).map(|_| {
        app.post("/api/organizations", &owner).header("idempotency-key", "burst").json(&json!({"name": "Burst"})).send()
    });
    let statuses: Vec<StatusCode> =
        futures_util::future::join_all(attempts).await.into_iter().map(|r| r.unwrap().status()).collect();
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT), "{statuses:?}");
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations WHERE name = 'Burst'")
        .fetch_one(&mut app.db().await)
        .await
        .unwrap();
    assert_eq!(created, 1);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_the_docs_page_works_offline() {
    let app = TestApp::spawn().await;
    let (status, document) = body(app.client.get(app.url("/api/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        document,
        serde_json::from_str::<serde_json::Value>(&edgeflow::openapi::to_pretty_json().unwrap()).unwrap()
    );
    let page = app.client.get(app.url("/docs/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    // Every script and style the page loads is served by us: nothing from a CDN.
    assert!(!page.contains("https://"), "the docs page loads something from the internet");
    for asset in ["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs/swagger-initializer.js"] {
        assert_eq!(app.client.get(app.url(asset)).send().await.unwrap().status(), StatusCode::OK, "{asset}");
    }
}

#[tokio::test]
async fn serves_https_when_given_a_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("edgeflow-tls-{}", uuid::Uuid::new_v4().simple()));
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
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let response = client
        .post(format!("https://localhost:{port}/api/authentication/login"))
        .json(&json!({"email": OWNER_EMAIL, "password": OWNER_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Plain HTTP on the TLS port does not get an answer.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

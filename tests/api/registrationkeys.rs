//! `/api/registrationkeys` and `POST /api/edgenodes/register`: keys shown once and stored hashed,
//! nodes enrolling themselves with the key's organization, type and labels, and the key's limits
//! (uses, also under concurrency; expiry; revocation).

use edgeflow::auth::tokens::secret_hash;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::*;

/// Creates a registration key as `session` with this body, asserting 201.
async fn create_key(app: &TestApp, session: &Session, request: Value) -> Value {
    let response = app.post("/api/registrationkeys", session).json(&request).send().await.expect("create key");
    let (status, value) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value
}

fn key_of(created: &Value) -> String {
    created["key"].as_str().unwrap_or_else(|| panic!("no key in {created}")).to_owned()
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_owned()
}

/// A node enrolling itself: no user credentials, only the registration key.
async fn register(app: &TestApp, key: &str, name: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url("/api/edgenodes/register"))
        .json(&json!({"registrationKey": key, "name": name}))
        .send()
        .await
        .expect("register");
    body(response).await
}

async fn get_key(app: &TestApp, session: &Session, id: &str) -> Value {
    let response = app.get(&format!("/api/registrationkeys/{id}"), session).send().await.expect("get key");
    let (status, value) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value
}

async fn nodes_enrolled_with(app: &TestApp, key_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM edge_nodes WHERE registration_key_id = $1::uuid")
        .bind(key_id)
        .fetch_one(&mut app.db().await)
        .await
        .expect("count")
}

#[tokio::test]
async fn create_list_get_and_revoke() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let created = create_key(
        &app,
        &owner,
        json!({
            "name": "  Plant 1 gateways ", "nodeType": "DevAndTest", "labels": {"site": "plant-1"},
            "maxUses": 10, "expiresAt": "2099-01-01T00:00:00Z",
        }),
    )
    .await;
    let key = key_of(&created);
    assert!(key.starts_with("efreg_") && key.len() == 6 + 43, "{key}");
    assert_eq!(created["name"], "Plant 1 gateways");
    assert_eq!(created["prefix"].as_str(), Some(&key[..12]));
    assert_eq!(created["nodeType"], "DevAndTest");
    assert_eq!(created["labels"], json!({"site": "plant-1"}));
    assert_eq!(created["maxUses"], 10);
    assert_eq!(created["uses"], 0);
    assert_eq!(created["expiresAt"], "2099-01-01T00:00:00.000000Z");
    assert_eq!(created["active"], true);
    assert_eq!(created["revoked"], false);
    assert_eq!(created["createdBy"], owner.user_id.to_string());
    let id = id_of(&created);

    // Only the hash is stored.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM registration_keys WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&mut app.db().await)
        .await
        .expect("row");
    assert_eq!(stored, secret_hash(&key));

    let (status, list) = body(app.get("/api/registrationkeys", &owner).send().await.expect("list")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], id);
    assert!(items[0].get("key").is_none(), "{list}");
    let one = get_key(&app, &owner, &id).await;
    assert_eq!(one, items[0]);

    let response = app.delete(&format!("/api/registrationkeys/{id}"), &owner).send().await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let one = get_key(&app, &owner, &id).await;
    assert_eq!(one["revoked"], true);
    assert_eq!(one["active"], false);
    let revoked_at = one["revokedAt"].clone();
    assert!(revoked_at.as_str().is_some(), "{one}");
    // Again: nothing changes, still 204.
    let response = app.delete(&format!("/api/registrationkeys/{id}"), &owner).send().await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(get_key(&app, &owner, &id).await["revokedAt"], revoked_at);

    // Filters work on the listed properties.
    let (_, list) = body(
        app.get(
            "/api/registrationkeys?filters[0].propertyName=active&filters[0].propertyValue=true&includeCount=true",
            &owner,
        )
        .send()
        .await
        .expect("list"),
    )
    .await;
    assert_eq!(list["totalCount"], 0, "{list}");

    let events: Vec<(String, String)> =
        sqlx::query("SELECT action, subject FROM events WHERE action LIKE 'registrationkey.%' ORDER BY occurred_at")
            .fetch_all(&mut app.db().await)
            .await
            .expect("events")
            .iter()
            .map(|e| (e.get("action"), e.get("subject")))
            .collect();
    assert_eq!(
        events,
        [
            ("registrationkey.create".to_owned(), "RegistrationKey: Plant 1 gateways".to_owned()),
            ("registrationkey.revoke".to_owned(), "RegistrationKey: Plant 1 gateways".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_node_enrols_with_the_keys_organization_type_and_labels() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let created =
        create_key(&app, &owner, json!({"name": "fleet", "nodeType": "DevAndTest", "labels": {"site": "plant-1"}}))
            .await;
    let key_id = id_of(&created);

    let (status, node) = register(&app, &key_of(&created), " gateway-07 ").await;
    assert_eq!(status, StatusCode::CREATED, "{node}");
    let node_id = id_of(&node);
    assert_eq!(node["name"], "gateway-07");
    assert_eq!(node["organizationId"], owner.organization_id.to_string());
    assert_eq!(node["type"], "DevAndTest");
    assert_eq!(node["labels"], json!({"site": "plant-1"}));
    let access_key = node["accessKey"].as_str().expect("accessKey").to_owned();
    assert!(access_key.starts_with("efn_"), "{access_key}");

    // The organization sees the node, as any other.
    let (status, shown) =
        body(app.get(&format!("/api/edgenodes/{node_id}"), &owner).send().await.expect("get node")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["type"], "DevAndTest");
    assert_eq!(shown["labels"], json!({"site": "plant-1"}));
    assert_eq!(shown["online"], false);
    assert_eq!(shown["accessKeyPrefix"].as_str(), Some(&access_key[..12]));
    assert!(shown.get("accessKey").is_none(), "{shown}");

    let row = sqlx::query("SELECT access_key_hash, registration_key_id FROM edge_nodes WHERE id = $1::uuid")
        .bind(&node_id)
        .fetch_one(&mut app.db().await)
        .await
        .expect("node row");
    assert_eq!(row.get::<Vec<u8>, _>("access_key_hash"), secret_hash(&access_key));
    assert_eq!(row.get::<Option<Uuid>, _>("registration_key_id").map(|id| id.to_string()), Some(key_id.clone()));
    assert_eq!(get_key(&app, &owner, &key_id).await["uses"], 1);

    let event = sqlx::query("SELECT subject, node_id, organization_id FROM events WHERE action = 'node.registered'")
        .fetch_one(&mut app.db().await)
        .await
        .expect("event");
    assert_eq!(event.get::<String, _>("subject"), "Node: gateway-07");
    assert_eq!(event.get::<Option<Uuid>, _>("node_id").map(|id| id.to_string()), Some(node_id));
    assert_eq!(event.get::<Option<Uuid>, _>("organization_id"), Some(owner.organization_id));

    // A taken name is 409, and does not use the key up.
    let (status, value) = register(&app, &key_of(&created), "gateway-07").await;
    assert_error(status, &value, StatusCode::CONFLICT, "DUPLICATE_NAME");
    assert_eq!(get_key(&app, &owner, &key_id).await["uses"], 1);

    // Bad bodies are 400.
    for request in [
        json!({"registrationKey": key_of(&created), "name": ""}),
        json!({"registrationKey": key_of(&created), "name": "x".repeat(101)}),
    ] {
        let response =
            app.client.post(app.url("/api/edgenodes/register")).json(&request).send().await.expect("register");
        let (status, value) = body(response).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
    let response = app
        .client
        .post(app.url("/api/edgenodes/register"))
        .json(&json!({"registrationKey": key_of(&created), "name": "n", "type": "Production"}))
        .send()
        .await
        .expect("register");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(nodes_enrolled_with(&app, &key_id).await, 1);
}

#[tokio::test]
async fn the_use_limit_holds() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let created = create_key(&app, &owner, json!({"name": "two", "nodeType": "Production", "maxUses": 2})).await;
    let key = key_of(&created);
    for name in ["a", "b"] {
        let (status, value) = register(&app, &key, name).await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        assert_eq!(value["type"], "Production");
        assert_eq!(value["labels"], json!({}));
    }
    let (status, value) = register(&app, &key, "c").await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let shown = get_key(&app, &owner, &id_of(&created)).await;
    assert_eq!(shown["uses"], 2);
    assert_eq!(shown["active"], false);
    assert_eq!(nodes_enrolled_with(&app, &id_of(&created)).await, 2);
}

#[tokio::test]
async fn concurrent_enrolments_never_exceed_the_limit() {
    // Enough connections for all five enrolments to be inside their transactions at once.
    let app = TestApp::spawn_with(|config| config.db_max_connections = 12).await;
    let owner = app.owner().await;
    let created = create_key(&app, &owner, json!({"name": "three", "nodeType": "Production", "maxUses": 3})).await;
    let key = key_of(&created);

    // Hold new nodes back until all five requests are waiting on a lock, so they truly overlap:
    // each has read the key (or is queued for it) before any has committed.
    let mut blocker = app.db().await;
    sqlx::query("BEGIN").execute(&mut blocker).await.expect("begin");
    sqlx::query("LOCK TABLE edge_nodes IN EXCLUSIVE MODE").execute(&mut blocker).await.expect("lock");

    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let client = app.client.clone();
            let url = app.url("/api/edgenodes/register");
            let request = json!({"registrationKey": key, "name": format!("node-{i}")});
            tokio::spawn(async move { client.post(url).json(&request).send().await.expect("register").status() })
        })
        .collect();
    let mut watcher = app.db().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut all_waiting = false;
    while !all_waiting && tokio::time::Instant::now() < deadline {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'edgeflow' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .expect("pg_stat_activity");
        all_waiting = waiting >= 5;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::query("COMMIT").execute(&mut blocker).await.expect("release");
    assert!(all_waiting, "the five enrolments never overlapped");

    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    let created_count = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused_count = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    assert_eq!((created_count, refused_count), (3, 2), "{statuses:?}");
    assert_eq!(nodes_enrolled_with(&app, &id_of(&created)).await, 3);
    assert_eq!(get_key(&app, &owner, &id_of(&created)).await["uses"], 3);
}

#[tokio::test]
async fn unknown_revoked_and_expired_keys_are_refused_alike() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let revoked = create_key(&app, &owner, json!({"name": "revoked", "nodeType": "Production"})).await;
    let response =
        app.delete(&format!("/api/registrationkeys/{}", id_of(&revoked)), &owner).send().await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let expired = create_key(
        &app,
        &owner,
        json!({"name": "expired", "nodeType": "Production", "expiresAt": "2099-01-01T00:00:00Z"}),
    )
    .await;
    sqlx::query("UPDATE registration_keys SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(id_of(&expired))
        .execute(&mut app.db().await)
        .await
        .expect("expire");
    assert_eq!(get_key(&app, &owner, &id_of(&expired)).await["active"], false);
    let live = create_key(&app, &owner, json!({"name": "live", "nodeType": "Production"})).await;

    let mut messages = Vec::new();
    for key in ["efreg_unknown".to_owned(), key_of(&revoked), key_of(&expired), String::new()] {
        let (status, value) = register(&app, &key, "n").await;
        assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        messages.push(value["error"].clone());
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "the answers tell the cases apart: {messages:?}");
    let (_, page) = body(app.get("/api/edgenodes", &owner).send().await.expect("list")).await;
    assert_eq!(page["items"], json!([]), "no node was created");

    // The organization learns why (the node does not).
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT data->>'reason' FROM events WHERE action = 'node.registration_refused' ORDER BY occurred_at",
    )
    .fetch_all(&mut app.db().await)
    .await
    .expect("events");
    assert_eq!(reasons, ["revoked", "expired"]);

    // A live key of the same organization still works.
    let (status, value) = register(&app, &key_of(&live), "n").await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
}

#[tokio::test]
async fn invalid_keys_are_400_and_taken_names_409() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    for (request, code) in [
        (json!({"name": "k", "nodeType": "Laptop"}), "BAD_REQUEST"),
        (json!({"name": "k", "nodeType": "Production", "uses": 5}), "BAD_REQUEST"),
        (json!({"name": "k"}), "BAD_REQUEST"),
        (json!({"name": "k", "nodeType": "Production", "labels": {"a": 1}}), "BAD_REQUEST"),
        (json!({"name": "", "nodeType": "Production"}), "VALIDATION_FAILED"),
        (json!({"name": "k", "nodeType": "Production", "maxUses": 0}), "VALIDATION_FAILED"),
        (json!({"name": "k", "nodeType": "Production", "expiresAt": "2001-01-01T00:00:00Z"}), "VALIDATION_FAILED"),
        (json!({"name": "k", "nodeType": "Production", "labels": {"a b": "c"}}), "VALIDATION_FAILED"),
    ] {
        let response = app.post("/api/registrationkeys", &owner).json(&request).send().await.expect("create");
        let (status, value) = body(response).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, code);
    }
    create_key(&app, &owner, json!({"name": "fleet", "nodeType": "Production"})).await;
    let response = app
        .post("/api/registrationkeys", &owner)
        .json(&json!({"name": "fleet", "nodeType": "DevAndTest"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::CONFLICT, "DUPLICATE_NAME");
}

#[tokio::test]
async fn only_admins_manage_keys_of_their_own_organization() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let operator = app.member(&owner, "operator@example.com", "Operator").await;
    let admin = app.member(&owner, "admin@example.com", "Admin").await;
    let other = app.register("other@example.com", "Other Corp").await;
    let created = create_key(&app, &admin, json!({"name": "by admin", "nodeType": "Production"})).await;
    let id = id_of(&created);
    let path = format!("/api/registrationkeys/{id}");

    for request in [
        app.client.get(app.url("/api/registrationkeys")),
        app.client.post(app.url("/api/registrationkeys")).json(&json!({"name": "x", "nodeType": "Production"})),
        app.client.get(app.url(&path)),
        app.client.delete(app.url(&path)),
    ] {
        let (status, value) = body(request.send().await.expect("request")).await;
        assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    for request in [
        app.get("/api/registrationkeys", &operator),
        app.post("/api/registrationkeys", &operator).json(&json!({"name": "x", "nodeType": "Production"})),
        app.get(&path, &operator),
        app.delete(&path, &operator),
    ] {
        let (status, value) = body(request.send().await.expect("request")).await;
        assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    for request in [app.get(&path, &other), app.delete(&path, &other)] {
        let (status, value) = body(request.send().await.expect("request")).await;
        assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let (_, list) = body(app.get("/api/registrationkeys", &other).send().await.expect("list")).await;
    assert_eq!(list["items"], json!([]));
    let shown = get_key(&app, &owner, &id).await;
    assert_eq!(shown["revoked"], false, "nobody else revoked it");
    assert_eq!(shown["createdBy"], admin.user_id.to_string());

    // The key enrols into its own organization, whoever presents it.
    let (status, node) = register(&app, &key_of(&created), "n").await;
    assert_eq!(status, StatusCode::CREATED, "{node}");
    assert_eq!(node["organizationId"], owner.organization_id.to_string());
    let (_, page) = body(app.get("/api/edgenodes", &other).send().await.expect("list")).await;
    assert_eq!(page["items"], json!([]));
}

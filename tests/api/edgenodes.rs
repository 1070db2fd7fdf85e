//! `/api/edgenodes`: Crosser's calls verbatim, the access key (shown once, stored hashed,
//! rotated), live status, list filters, merge patch, roles, tenancy and name conflicts.

use std::time::Duration;

use edgeflow::auth::tokens::secret_hash;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Row, postgres::PgListener};
use uuid::Uuid;

use crate::helpers::*;

/// The active organization's id, the way Crosser's docs say to find it.
async fn organization_id(app: &TestApp, session: &Session) -> String {
    let (status, me) = body(app.get("/api/users/me", session).send().await.expect("me")).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    me["organization"]["id"].as_str().expect("organization id").to_owned()
}

/// Creates a node as `session` with this body, asserting 201; answers the creation body.
async fn create(app: &TestApp, session: &Session, request: Value) -> Value {
    let response = app.post("/api/edgenodes", session).json(&request).send().await.expect("create node");
    let (status, value) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value
}

/// Creates a node named `name` with `type` and `labels` in the session's organization.
async fn create_node(app: &TestApp, session: &Session, name: &str, node_type: &str, labels: Value) -> Value {
    create(
        app,
        session,
        json!({"name": name, "organizationId": session.organization_id, "type": node_type, "labels": labels}),
    )
    .await
}

fn labels_with(key: &str, value: &str) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert(key.to_owned(), Value::String(value.to_owned()));
    Value::Object(labels)
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_owned()
}

/// The names of a list answer's items, in order.
fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {list}"))
        .iter()
        .map(|item| item["name"].as_str().expect("name").to_owned())
        .collect()
}

async fn list(app: &TestApp, session: &Session, query: &[(&str, &str)]) -> (StatusCode, Value) {
    let query = serde_urlencoded::to_string(query).expect("query string");
    body(app.get(&format!("/api/edgenodes?{query}"), session).send().await.expect("list")).await
}

async fn stored_key_hash(app: &TestApp, id: &str) -> Vec<u8> {
    sqlx::query_scalar("SELECT access_key_hash FROM edge_nodes WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&mut app.db().await)
        .await
        .expect("node row")
}

/// (action, subject) of the node events, oldest first.
async fn node_events(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query("SELECT action, subject FROM events WHERE action LIKE 'node.%' ORDER BY occurred_at")
        .fetch_all(&mut app.db().await)
        .await
        .expect("events")
        .iter()
        .map(|e| (e.get("action"), e.get("subject")))
        .collect()
}

/// The next `disconnect` message on the tunnel bus (other traffic skipped), as JSON.
async fn next_disconnect(listener: &mut PgListener) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let notification =
            tokio::time::timeout_at(deadline, listener.recv()).await.expect("a disconnect message").expect("recv");
        let message: Value = serde_json::from_str(notification.payload()).expect("JSON payload");
        if message["kind"] == "disconnect" {
            return message;
        }
    }
}

#[tokio::test]
async fn crosser_node_calls_work_verbatim() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let organization = organization_id(&app, &owner).await;

    // POST /api/edgenodes {"name", "organizationId", "type"}: the answer has id and accessKey.
    let created =
        create(&app, &owner, json!({"name": "CrosserDemo", "organizationId": organization, "type": "Production"}))
            .await;
    let id = id_of(&created);
    assert!(id.parse::<Uuid>().is_ok(), "{created}");
    let key = created["accessKey"].as_str().expect("accessKey").to_owned();
    assert!(key.starts_with("efn_") && key.len() == 4 + 43, "{key}");
    assert_eq!(created["name"], "CrosserDemo");
    assert_eq!(created["organizationId"], organization);
    assert_eq!(created["type"], "Production");
    assert_eq!(created["labels"], json!({}));
    assert_eq!(created["description"], Value::Null);
    assert_eq!(created["online"], false, "a node that never connected is offline");
    assert_eq!(created["connectedAt"], Value::Null);
    assert_eq!(created["lastSeenAt"], Value::Null);
    assert_eq!(created["agentVersion"], Value::Null);
    assert_eq!(created["flows"], json!([]));
    assert_eq!(created["pendingJobs"], 0);
    assert_eq!(created["accessKeyPrefix"].as_str(), Some(&key[..12]));
    assert_eq!(created["keyRotatedAt"], Value::Null);
    let created_at = created["createdAt"].as_str().expect("createdAt");
    assert!(created_at.ends_with('Z') && created_at.len() == 27, "{created_at}");

    // Only the key's hash is stored.
    assert_eq!(stored_key_hash(&app, &id).await, secret_hash(&key));
    let stored_anywhere: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM edge_nodes n WHERE position($1 in row_to_json(n)::text) > 0) \
             OR EXISTS (SELECT 1 FROM events e WHERE position($1 in row_to_json(e)::text) > 0)",
    )
    .bind(&key)
    .fetch_one(&mut app.db().await)
    .await
    .expect("search");
    assert!(!stored_anywhere, "the access key itself is stored");

    // GET /api/edgenodes lists it, without the key.
    let (status, page) = list(&app, &owner, &[]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["offset"], 0);
    assert_eq!(page["limit"], 50);
    assert!(page.get("totalCount").is_none(), "{page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["id"], id);
    assert_eq!(items[0]["name"], "CrosserDemo");
    assert_eq!(items[0]["online"], false);
    assert!(items[0].get("accessKey").is_none(), "{page}");

    // GET /api/edgenodes/{id}: the same node, without the key.
    let (status, node) = body(app.get(&format!("/api/edgenodes/{id}"), &owner).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::OK, "{node}");
    assert_eq!(node, items[0]);
    assert!(node.get("accessKey").is_none(), "{node}");
    assert_eq!(node["createdAt"], created["createdAt"]);

    // DELETE /api/edgenodes/{id}.
    let response = app.delete(&format!("/api/edgenodes/{id}"), &owner).send().await.expect("delete");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, value) = body(app.get(&format!("/api/edgenodes/{id}"), &owner).send().await.expect("get")).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (_, page) = list(&app, &owner, &[]).await;
    assert_eq!(page["items"], json!([]));
    let (status, value) = body(app.delete(&format!("/api/edgenodes/{id}"), &owner).send().await.expect("again")).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");

    assert_eq!(
        node_events(&app).await,
        [
            ("node.create".to_owned(), "Node: CrosserDemo".to_owned()),
            ("node.delete".to_owned(), "Node: CrosserDemo".to_owned()),
        ]
    );
    let event_node: Option<Uuid> = sqlx::query_scalar("SELECT node_id FROM events WHERE action = 'node.create'")
        .fetch_one(&mut app.db().await)
        .await
        .expect("event");
    assert_eq!(event_node.map(|n| n.to_string()), Some(id));
}

#[tokio::test]
async fn labels_and_description_are_kept_and_names_trimmed() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let created = create(
        &app,
        &owner,
        json!({
            "name": "  gateway-1  ", "organizationId": owner.organization_id, "type": "DevAndTest",
            "labels": {"site": "plant 1", "k8s.io/zone": "a"}, "description": "  by the press  ",
        }),
    )
    .await;
    assert_eq!(created["name"], "gateway-1");
    assert_eq!(created["type"], "DevAndTest");
    assert_eq!(created["labels"], json!({"site": "plant 1", "k8s.io/zone": "a"}));
    assert_eq!(created["description"], "by the press");
}

#[tokio::test]
async fn rotating_the_access_key_replaces_it_and_closes_the_socket() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let created = create_node(&app, &owner, "rotating", "Production", json!({})).await;
    let id = id_of(&created);
    let old_key = created["accessKey"].as_str().expect("accessKey").to_owned();

    let mut listener = PgListener::connect(&app.database_url).await.expect("listener");
    listener.listen("edgeflow_tunnel").await.expect("listen");

    let response = app.post(&format!("/api/edgenodes/{id}/accesskey"), &owner).send().await.expect("rotate");
    let (status, rotated) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["id"], id);
    let new_key = rotated["accessKey"].as_str().expect("accessKey").to_owned();
    assert!(new_key.starts_with("efn_"), "{new_key}");
    assert_ne!(new_key, old_key);
    assert_eq!(rotated["accessKeyPrefix"].as_str(), Some(&new_key[..12]));
    assert!(rotated["keyRotatedAt"].as_str().is_some(), "{rotated}");

    assert_eq!(stored_key_hash(&app, &id).await, secret_hash(&new_key));
    let message = next_disconnect(&mut listener).await;
    assert_eq!(message["kind"], "disconnect", "{message}");
    assert_eq!(message["nodeId"], id);
    assert_eq!(message["code"], 4002);

    let (_, node) = body(app.get(&format!("/api/edgenodes/{id}"), &owner).send().await.expect("get")).await;
    assert_eq!(node["keyRotatedAt"], rotated["keyRotatedAt"]);
    assert_eq!(node["accessKeyPrefix"], rotated["accessKeyPrefix"]);
    assert!(node.get("accessKey").is_none(), "{node}");

    // Deleting closes the socket too, with 4001.
    let response = app.delete(&format!("/api/edgenodes/{id}"), &owner).send().await.expect("delete");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let message = next_disconnect(&mut listener).await;
    assert_eq!(message["kind"], "disconnect", "{message}");
    assert_eq!(message["nodeId"], id);
    assert_eq!(message["code"], 4001);

    assert_eq!(
        node_events(&app).await.into_iter().map(|(action, _)| action).collect::<Vec<_>>(),
        ["node.create", "node.key_rotated", "node.delete"]
    );
}

#[tokio::test]
async fn online_and_pending_jobs_are_live_and_jobs_go_with_the_node() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let id = id_of(&create_node(&app, &owner, "live", "Production", json!({})).await);
    create_node(&app, &owner, "idle", "Production", json!({})).await;
    let mut db = app.db().await;

    // A queued and a finished job: one is pending.
    for (seq, state) in [(1, "Queued"), (2, "Succeeded")] {
        sqlx::query(
            "INSERT INTO node_jobs (id, organization_id, node_id, seq, command, state, expires_at) \
             VALUES ($1, $2, $3::uuid, $4, 'start', $5, now() + interval '1 day')",
        )
        .bind(Uuid::now_v7())
        .bind(owner.organization_id)
        .bind(&id)
        .bind(seq as i64)
        .bind(state)
        .execute(&mut db)
        .await
        .expect("job");
    }
    // Held by a live replica: online.
    let replica = Uuid::now_v7();
    sqlx::query("INSERT INTO replicas (id, alive_until) VALUES ($1, now() + interval '1 minute')")
        .bind(replica)
        .execute(&mut db)
        .await
        .expect("replica");
    sqlx::query(
        "UPDATE edge_nodes SET replica_id = $1, connected_at = now(), last_seen_at = now(), agent_version = '2.1.0', \
         protocol_version = 1, reported_flows = '[{\"flowId\": \"f\", \"state\": \"Running\"}]' WHERE id = $2::uuid",
    )
    .bind(replica)
    .bind(&id)
    .execute(&mut db)
    .await
    .expect("presence");

    let (status, node) = body(app.get(&format!("/api/edgenodes/{id}"), &owner).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::OK, "{node}");
    assert_eq!(node["online"], true, "{node}");
    assert_eq!(node["pendingJobs"], 1, "{node}");
    assert_eq!(node["agentVersion"], "2.1.0");
    assert_eq!(node["protocolVersion"], 1);
    assert_eq!(node["flows"], json!([{"flowId": "f", "state": "Running"}]));
    assert!(node["connectedAt"].as_str().is_some() && node["lastSeenAt"].as_str().is_some(), "{node}");

    let online = [("filters[0].propertyName", "online"), ("filters[0].propertyValue", "true")];
    let (status, page) = list(&app, &owner, &online).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(names(&page), ["live"]);
    let offline = [("filters[0].propertyName", "online"), ("filters[0].propertyValue", "false")];
    assert_eq!(names(&list(&app, &owner, &offline).await.1), ["idle"]);
    let pending = [
        ("filters[0].propertyName", "pendingJobs"),
        ("filters[0].propertyValue", "0"),
        ("filters[0].filterType", "greaterThan"),
    ];
    assert_eq!(names(&list(&app, &owner, &pending).await.1), ["live"]);

    // The replica's promise lapses: offline, with no one cleaning up.
    sqlx::query("UPDATE replicas SET alive_until = now() - interval '1 second' WHERE id = $1")
        .bind(replica)
        .execute(&mut db)
        .await
        .expect("lapse");
    let (_, node) = body(app.get(&format!("/api/edgenodes/{id}"), &owner).send().await.expect("get")).await;
    assert_eq!(node["online"], false, "{node}");

    // Deleting the node deletes its jobs.
    let response = app.delete(&format!("/api/edgenodes/{id}"), &owner).send().await.expect("delete");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM node_jobs WHERE node_id = $1::uuid")
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(jobs, 0);
}

#[tokio::test]
async fn list_filters_labels_order_and_count() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    create_node(&app, &owner, "plant-1-a", "Production", json!({"site": "plant-1", "line": "1"})).await;
    create_node(&app, &owner, "plant-1-b", "DevAndTest", json!({"site": "plant-1", "line": "2"})).await;
    create_node(&app, &owner, "plant-2-a", "Production", json!({"site": "plant-2"})).await;

    let contains = [
        ("filters[0].propertyName", "Name"),
        ("filters[0].propertyValue", "PLANT-1"),
        ("filters[0].filterType", "contains"),
    ];
    assert_eq!(names(&list(&app, &owner, &contains).await.1), ["plant-1-a", "plant-1-b"]);

    let of_type = [
        ("filters[0].propertyName", "type"),
        ("filters[0].propertyValue", "DevAndTest"),
        ("filters[0].filterType", "equal"),
    ];
    assert_eq!(names(&list(&app, &owner, &of_type).await.1), ["plant-1-b"]);

    assert_eq!(names(&list(&app, &owner, &[("labels", "site=plant-1")]).await.1), ["plant-1-a", "plant-1-b"]);
    assert_eq!(names(&list(&app, &owner, &[("labels", "site=plant-1,line=2")]).await.1), ["plant-1-b"]);
    assert_eq!(names(&list(&app, &owner, &[("labels", "site=plant-3")]).await.1), Vec::<String>::new());
    assert_eq!(names(&list(&app, &owner, &[("labels", "line=1")]).await.1), ["plant-1-a"]);
    // Labels and filters together.
    let both =
        [("labels", "site=plant-1"), ("filters[0].propertyName", "type"), ("filters[0].propertyValue", "Production")];
    assert_eq!(names(&list(&app, &owner, &both).await.1), ["plant-1-a"]);

    let (status, page) = list(&app, &owner, &[("includeCount", "true"), ("limit", "1"), ("offset", "1")]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["totalCount"], 3);
    assert_eq!(page["limit"], 1);
    assert_eq!(page["offset"], 1);
    assert_eq!(names(&page), ["plant-1-b"]);

    let (_, page) = list(&app, &owner, &[("labels", "site=plant-1"), ("includeCount", "true"), ("limit", "1")]).await;
    assert_eq!(page["totalCount"], 2, "the count honours the labels filter: {page}");

    let (_, page) = list(&app, &owner, &[("orderBy", "name"), ("orderDirection", "desc")]).await;
    assert_eq!(names(&page), ["plant-2-a", "plant-1-b", "plant-1-a"]);
    let (_, page) = list(&app, &owner, &[("orderBy", "createdAt")]).await;
    assert_eq!(names(&page), ["plant-1-a", "plant-1-b", "plant-2-a"]);
}

#[tokio::test]
async fn bad_list_parameters_are_400_naming_them() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    for (query, field) in [
        (vec![("filters[0].propertyName", "accessKey"), ("filters[0].propertyValue", "x")], "filters[0].propertyName"),
        (
            vec![
                ("filters[0].propertyName", "name"),
                ("filters[0].propertyValue", "x"),
                ("filters[0].filterType", "like"),
            ],
            "filters[0].filterType",
        ),
        (
            vec![("filters[0].propertyName", "online"), ("filters[0].propertyValue", "maybe")],
            "filters[0].propertyValue",
        ),
        (
            vec![
                ("filters[0].propertyName", "createdAt"),
                ("filters[0].propertyValue", "yesterday"),
                ("filters[0].filterType", "greaterThan"),
            ],
            "filters[0].propertyValue",
        ),
        (vec![("orderBy", "accessKeyHash")], "orderBy"),
        (vec![("limit", "0")], "limit"),
        (vec![("labels", "site")], "labels"),
        (vec![("labels", "site=a,=b")], "labels"),
    ] {
        let (status, value) = list(&app, &owner, &query).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert_eq!(value["details"][0]["field"], field, "{query:?}: {value}");
    }
}

#[tokio::test]
async fn invalid_bodies_are_400_and_create_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let org = owner.organization_id;
    for (request, code) in [
        (json!({"name": "n", "organizationId": org, "type": "Laptop"}), "BAD_REQUEST"),
        (json!({"name": "n", "organizationId": org, "type": "Production", "accessKey": "mine"}), "BAD_REQUEST"),
        (json!({"name": "n", "type": "Production"}), "BAD_REQUEST"),
        (json!({"name": "n", "organizationId": "not-a-uuid", "type": "Production"}), "BAD_REQUEST"),
        (json!({"name": "n", "organizationId": org, "type": "Production", "labels": {"a": 1}}), "BAD_REQUEST"),
        (json!({"name": "n", "organizationId": org, "type": "Production", "labels": ["a"]}), "BAD_REQUEST"),
        (json!({"name": "  ", "organizationId": org, "type": "Production"}), "VALIDATION_FAILED"),
        (json!({"name": "x".repeat(101), "organizationId": org, "type": "Production"}), "VALIDATION_FAILED"),
        (json!({"name": "n", "organizationId": org, "type": "Production", "labels": {"": "x"}}), "VALIDATION_FAILED"),
        (json!({"name": "n", "organizationId": org, "type": "Production", "labels": {"a": ""}}), "VALIDATION_FAILED"),
        (
            json!({"name": "n", "organizationId": org, "type": "Production", "labels": {"a=b": "x"}}),
            "VALIDATION_FAILED",
        ),
        (
            json!({"name": "n", "organizationId": org, "type": "Production", "labels": labels_with(&"k".repeat(64), "x")}),
            "VALIDATION_FAILED",
        ),
        (
            json!({"name": "n", "organizationId": org, "type": "Production", "labels": labels_with("a", &"v".repeat(256))}),
            "VALIDATION_FAILED",
        ),
    ] {
        let response = app.post("/api/edgenodes", &owner).json(&request).send().await.expect("create");
        let (status, value) = body(response).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, code);
    }
    let (_, page) = list(&app, &owner, &[]).await;
    assert_eq!(page["items"], json!([]), "nothing was created");

    // The longest allowed name and labels are fine.
    let request = json!({
        "name": "x".repeat(100), "organizationId": org, "type": "Production",
        "labels": labels_with(&"k".repeat(63), &"v".repeat(255)),
    });
    create(&app, &owner, request).await;
}

#[tokio::test]
async fn patch_is_a_merge_patch() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let created = create(
        &app,
        &owner,
        json!({
            "name": "press-1", "organizationId": owner.organization_id, "type": "Production",
            "labels": {"site": "plant-1", "line": "1"}, "description": "the press",
        }),
    )
    .await;
    let id = id_of(&created);
    create_node(&app, &owner, "press-2", "Production", json!({})).await;
    let path = format!("/api/edgenodes/{id}");
    let patch = |request: Value| {
        let app = &app;
        let owner = &owner;
        let path = &path;
        async move { body(app.patch(path, owner).json(&request).send().await.expect("patch")).await }
    };

    // Nothing given: nothing changes.
    let (status, node) = patch(json!({})).await;
    assert_eq!(status, StatusCode::OK, "{node}");
    assert_eq!(node["name"], "press-1");
    assert_eq!(node["updatedAt"], created["updatedAt"]);

    let (status, node) = patch(json!({"name": " press-one "})).await;
    assert_eq!(status, StatusCode::OK, "{node}");
    assert_eq!(node["name"], "press-one");
    assert_eq!(node["type"], "Production");
    assert_eq!(node["labels"], json!({"site": "plant-1", "line": "1"}), "absent labels stay");
    assert_eq!(node["description"], "the press");
    assert_ne!(node["updatedAt"], created["updatedAt"]);

    let (_, node) = patch(json!({"labels": {"site": "plant-2"}})).await;
    assert_eq!(node["labels"], json!({"site": "plant-2"}), "labels replace the whole map");
    let (_, node) = patch(json!({"type": "DevAndTest", "description": null})).await;
    assert_eq!(node["type"], "DevAndTest");
    assert_eq!(node["description"], Value::Null);
    assert_eq!(node["labels"], json!({"site": "plant-2"}));
    let (_, node) = patch(json!({"labels": null})).await;
    assert_eq!(node["labels"], json!({}), "null clears the labels");
    assert_eq!(node["name"], "press-one");

    for (request, code) in [
        (json!({"name": null}), "VALIDATION_FAILED"),
        (json!({"type": null}), "VALIDATION_FAILED"),
        (json!({"name": ""}), "VALIDATION_FAILED"),
        (json!({"labels": {"bad key": "x"}}), "VALIDATION_FAILED"),
        (json!({"type": "Laptop"}), "BAD_REQUEST"),
        (json!({"organizationId": Uuid::now_v7()}), "BAD_REQUEST"),
        (json!({"accessKeyPrefix": "efn_mine"}), "BAD_REQUEST"),
    ] {
        let (status, value) = patch(request.clone()).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, code);
    }
    let (status, value) = patch(json!({"name": "press-2"})).await;
    assert_error(status, &value, StatusCode::CONFLICT, "DUPLICATE_NAME");

    let (_, node) = body(app.get(&path, &owner).send().await.expect("get")).await;
    assert_eq!(node["name"], "press-one", "failed patches changed nothing");
    assert_eq!(node["type"], "DevAndTest");

    let updates = node_events(&app).await.into_iter().filter(|(action, _)| action == "node.update").count();
    assert_eq!(updates, 4, "one event per applied patch, none for the empty one");
}

#[tokio::test]
async fn calls_need_credentials() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let id = id_of(&create_node(&app, &owner, "n", "Production", json!({})).await);
    let node = format!("/api/edgenodes/{id}");
    let rotate = format!("/api/edgenodes/{id}/accesskey");
    let requests = [
        app.client.get(app.url("/api/edgenodes")),
        app.client.post(app.url("/api/edgenodes")).json(&json!({
            "name": "x", "organizationId": owner.organization_id, "type": "Production",
        })),
        app.client.get(app.url(&node)),
        app.client.patch(app.url(&node)).json(&json!({"name": "y"})),
        app.client.delete(app.url(&node)),
        app.client.post(app.url(&rotate)),
        app.client.get(app.url("/api/edgenodes")).bearer_auth("not-a-token"),
    ];
    for request in requests {
        let response = request.send().await.expect("request");
        assert_eq!(response.headers().get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
        let (status, value) = body(response).await;
        assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let (_, page) = list(&app, &owner, &[]).await;
    assert_eq!(names(&page), ["n"]);
}

#[tokio::test]
async fn viewers_read_operators_change() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    let operator = app.member(&owner, "operator@example.com", "Operator").await;
    let id = id_of(&create_node(&app, &owner, "n", "Production", json!({})).await);
    let node = format!("/api/edgenodes/{id}");

    let (status, page) = list(&app, &viewer, &[]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(names(&page), ["n"]);
    let (status, _) = body(app.get(&node, &viewer).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::OK);

    let denied = [
        app.post("/api/edgenodes", &viewer).json(&json!({
            "name": "by-viewer", "organizationId": viewer.organization_id, "type": "Production",
        })),
        app.patch(&node, &viewer).json(&json!({"name": "renamed"})),
        app.delete(&node, &viewer),
        app.post(&format!("{node}/accesskey"), &viewer),
    ];
    for request in denied {
        let (status, value) = body(request.send().await.expect("request")).await;
        assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    let (_, page) = list(&app, &owner, &[]).await;
    assert_eq!(names(&page), ["n"], "the viewer changed nothing");

    // An Operator may do all of it.
    create_node(&app, &operator, "by-operator", "DevAndTest", json!({})).await;
    let (status, value) = body(app.patch(&node, &operator).json(&json!({"name": "m"})).send().await.expect("p")).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    let (status, value) = body(app.post(&format!("{node}/accesskey"), &operator).send().await.expect("r")).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    let response = app.delete(&node, &operator).send().await.expect("delete");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn another_organization_is_refused_and_its_nodes_are_not_found() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let other = app.register("other@example.com", "Other Corp").await;
    let created = create_node(&app, &owner, "mine", "Production", json!({"site": "a"})).await;
    let id = id_of(&created);
    let node = format!("/api/edgenodes/{id}");

    // Naming another organization in the body: 403, in either direction.
    let response = app
        .post("/api/edgenodes", &owner)
        .json(&json!({"name": "there", "organizationId": other.organization_id, "type": "Production"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let response = app
        .post("/api/edgenodes", &other)
        .json(&json!({"name": "here", "organizationId": owner.organization_id, "type": "Production"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");

    // The other organization's owner cannot see or touch the node: 404, never 403.
    let attempts = [
        app.get(&node, &other),
        app.patch(&node, &other).json(&json!({"name": "stolen"})),
        app.delete(&node, &other),
        app.post(&format!("{node}/accesskey"), &other),
    ];
    for request in attempts {
        let (status, value) = body(request.send().await.expect("request")).await;
        assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let (_, page) = list(&app, &other, &[]).await;
    assert_eq!(page["items"], json!([]));
    let (_, page) = list(&app, &other, &[("labels", "site=a")]).await;
    assert_eq!(page["items"], json!([]));

    let (status, mine) = body(app.get(&node, &owner).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(mine["name"], "mine");
    assert_eq!(mine["keyRotatedAt"], Value::Null);
    assert_eq!(stored_key_hash(&app, &id).await, secret_hash(created["accessKey"].as_str().expect("key")));

    // Names are unique per organization only.
    create_node(&app, &other, "mine", "Production", json!({})).await;
}

#[tokio::test]
async fn a_taken_name_is_409() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    create_node(&app, &owner, "press", "Production", json!({})).await;
    let response = app
        .post("/api/edgenodes", &owner)
        .json(&json!({"name": " press ", "organizationId": owner.organization_id, "type": "DevAndTest"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::CONFLICT, "DUPLICATE_NAME");
    let (_, page) = list(&app, &owner, &[("includeCount", "true")]).await;
    assert_eq!(page["totalCount"], 1);
    let creates = node_events(&app).await.len();
    assert_eq!(creates, 1, "the refused create left no event");
}

#[tokio::test]
async fn the_register_path_is_not_taken_for_a_node_id() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    // GET of /register is not "the node with id register" (400 malformed id) but 405.
    let response = app.get("/api/edgenodes/register", &owner).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    // POST reaches the enrolment handler: a bad key is 401, not 405.
    let response = app
        .client
        .post(app.url("/api/edgenodes/register"))
        .json(&json!({"registrationKey": "efreg_nope", "name": "n"}))
        .send()
        .await
        .expect("register");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // A malformed id is a 400.
    let (status, value) = body(app.get("/api/edgenodes/not-a-uuid", &owner).send().await.expect("get")).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

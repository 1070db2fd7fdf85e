//! `/api/flowdefinitions`: Crosser's walk-through (find a definition by name, pick a version),
//! drafts with ETags, content validation, publishing (numbers, hashes, resources), immutable
//! versions, deletion guarded by deployments, roles and tenancy; and the deploy payloads.

use edgeflow::flows::{content::content_hash, deploy_payload, draft_payload};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::*;

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_owned()
}

fn etag_of(response: &reqwest::Response) -> String {
    response.headers().get("etag").expect("ETag").to_str().expect("ETag text").to_owned()
}

async fn create_definition(app: &TestApp, session: &Session, name: &str) -> Value {
    let response = app
        .post("/api/flowdefinitions", session)
        .json(&json!({"name": name, "organizationId": session.organization_id}))
        .send()
        .await
        .expect("create definition");
    let (status, value) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value
}

async fn create_draft(app: &TestApp, session: &Session, definition: &str, request: Value) -> (Value, String) {
    let response = app
        .post(&format!("/api/flowdefinitions/{definition}/drafts"), session)
        .json(&request)
        .send()
        .await
        .expect("create draft");
    let tag = etag_of(&response);
    let (status, value) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    (value, tag)
}

async fn publish(app: &TestApp, session: &Session, definition: &str, draft: &str, description: &str) -> Value {
    let (status, value) = body(
        app.post(&format!("/api/flowdefinitions/{definition}/drafts/{draft}/publish"), session)
            .json(&json!({"description": description}))
            .send()
            .await
            .expect("publish"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value
}

/// A two-module flow, optionally using resource versions.
fn flow(resources: Value) -> Value {
    json!({
        "modules": [
            {"id": "in", "type": "MqttSubscriber", "name": "Sensor", "config": {"topic": "t/#"}},
            {"id": "out", "type": "HttpPost", "name": "Cloud", "config": {"url": "https://example.com"}}
        ],
        "connections": [{"from": "in", "to": "out"}],
        "resources": resources,
        "settings": {"rate": 1}
    })
}

/// Creates a File resource with one version holding `data`; Completed when asked. Answers
/// (resourceId, versionId).
async fn resource_version(
    app: &TestApp,
    session: &Session,
    name: &str,
    data: &[u8],
    complete: bool,
) -> (String, String) {
    let (status, resource) = body(
        app.post("/api/resources", session)
            .json(&json!({"organizationId": session.organization_id, "name": name, "type": "File",
                          "category": "/organization/", "path": format!("data/{name}.csv")}))
            .send()
            .await
            .expect("create resource"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{resource}");
    let resource_id = id_of(&resource);
    let (status, version) = body(
        app.post(&format!("/api/resources/{resource_id}/versions"), session)
            .json(&json!({"description": "v1", "sizeInBytes": data.len()}))
            .send()
            .await
            .expect("create resource version"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{version}");
    let version_id = id_of(&version);
    let (status, uploaded) = body(
        app.post(&format!("/api/resources/{resource_id}/versions/{version_id}/content"), session)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("upload"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    if complete {
        let (status, done) = body(
            app.put(&format!("/api/resources/{resource_id}/versions/{version_id}"), session)
                .json(&json!({"description": "v1", "state": "Completed"}))
                .send()
                .await
                .expect("complete"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{done}");
    }
    (resource_id, version_id)
}

/// (action, subject) of the flow events, oldest first.
async fn flow_events(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query("SELECT action, subject FROM events WHERE action LIKE 'flow.%' ORDER BY occurred_at, id")
        .fetch_all(&mut app.db().await)
        .await
        .expect("events")
        .iter()
        .map(|e| (e.get("action"), e.get("subject")))
        .collect()
}

#[tokio::test]
async fn crossers_walk_through_finds_a_definition_by_name_and_picks_a_version() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let temperature = create_definition(&app, &owner, "Temperature").await;
    assert_eq!(temperature["flowDrafts"], json!([]));
    assert_eq!(temperature["flows"], json!([]));
    assert_eq!(temperature["latestVersion"], Value::Null);
    create_definition(&app, &owner, "Temperature backup").await;
    let definition_id = id_of(&temperature);
    let (draft, _) =
        create_draft(&app, &owner, &definition_id, json!({"name": "Main", "content": flow(json!([]))})).await;
    let draft_id = id_of(&draft);
    let first = publish(&app, &owner, &definition_id, &draft_id, "first").await;
    let second = publish(&app, &owner, &definition_id, &draft_id, "second").await;

    // Find the definition by name with a filter, as Crosser's docs say.
    let query = "filters[0].propertyName=name&filters[0].propertyValue=Temperature&filters[0].filterType=equal";
    let (status, list) =
        body(app.get(&format!("/api/flowdefinitions?{query}&includeCount=true"), &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["totalCount"], 1, "{list}");
    let found = &list["items"][0];
    assert_eq!(found["id"], definition_id.as_str());
    assert_eq!(found["latestVersion"], 2);
    // Traverse it: its drafts and its versions (newest first).
    assert_eq!(found["flowDrafts"][0]["id"], draft_id.as_str());
    let versions: Vec<i64> =
        found["flows"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, vec![2, 1]);
    let picked = found["flows"].as_array().unwrap().iter().find(|v| v["version"] == 1).unwrap();
    assert_eq!(picked["id"], first["id"]);
    assert_eq!(picked["description"], "first");
    assert_eq!(picked["contentHash"], first["contentHash"]);
    assert!(picked["createdAt"].as_str().unwrap().ends_with('Z'));

    // contains finds both; the GET of one lists the same drafts and versions.
    let (_, both) = body(
        app.get("/api/flowdefinitions?filters[0].propertyName=Name&filters[0].propertyValue=temp&filters[0].filterType=contains", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(both["items"].as_array().unwrap().len(), 2, "{both}");
    let (status, one) =
        body(app.get(&format!("/api/flowdefinitions/{definition_id}"), &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["flows"], found["flows"]);
    assert_eq!(one["flowDrafts"], found["flowDrafts"]);

    // The picked version, whole, and the versions list.
    let response = app
        .get(&format!("/api/flowdefinitions/{definition_id}/flows/{}", picked["id"].as_str().unwrap()), &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(etag_of(&response), format!("\"{}\"", first["contentHash"].as_str().unwrap()));
    let (status, version) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{version}");
    assert_eq!(version["content"], flow(json!([])));
    assert_eq!(version["version"], 1);
    let (status, page) = body(
        app.get(&format!("/api/flowdefinitions/{definition_id}/flows?includeCount=true"), &owner).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["totalCount"], 2);
    assert_eq!(page["items"][0]["id"], second["id"]);
    let (_, oldest_first) = body(
        app.get(&format!("/api/flowdefinitions/{definition_id}/flows?orderBy=version&orderDirection=asc"), &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(oldest_first["items"][0]["id"], first["id"]);
    let (status, value) = body(
        app.get("/api/flowdefinitions?filters[0].propertyName=secret&filters[0].propertyValue=x", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");

    let events = flow_events(&app).await;
    assert!(events.contains(&("flow.create".into(), "Flow: Temperature".into())), "{events:?}");
    assert!(events.contains(&("flow.draft_create".into(), "Flow: Temperature".into())), "{events:?}");
    assert_eq!(events.iter().filter(|e| e.0 == "flow.publish").count(), 2, "{events:?}");
}

#[tokio::test]
async fn two_editors_of_one_draft_the_stale_one_gets_412() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let editor = app.member(&owner, "editor@example.com", "Editor").await;
    let definition_id = id_of(&create_definition(&app, &owner, "Pumps").await);
    let (draft, tag) = create_draft(&app, &owner, &definition_id, json!({})).await;
    let draft_id = id_of(&draft);
    let path = format!("/api/flowdefinitions/{definition_id}/drafts/{draft_id}");
    assert_eq!(tag, "\"1\"");
    assert_eq!(draft["name"], "Draft");
    assert_eq!(draft["content"], json!({"modules": [], "connections": [], "resources": [], "settings": {}}));
    assert_eq!(draft["revision"], 1);

    // Both read revision 1.
    let response = app.get(&path, &editor).send().await.unwrap();
    assert_eq!(etag_of(&response), "\"1\"");

    // The owner saves first, with If-Match.
    let response = app
        .put(&path, &owner)
        .header("if-match", "\"1\"")
        .json(&json!({"name": "Main", "content": flow(json!([]))}))
        .send()
        .await
        .unwrap();
    assert_eq!(etag_of(&response), "\"2\"");
    let (status, saved) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["revision"], 2);
    assert_eq!(saved["contentHash"], content_hash(&flow(json!([]))));

    // The editor saves over their stale copy: refused.
    for request in [
        app.put(&path, &editor).header("if-match", "\"1\"").json(&json!({"name": "Mine", "content": {}})),
        app.patch(&path, &editor).header("if-match", "\"1\"").json(&json!({"name": "Mine"})),
        app.delete(&path, &editor).header("if-match", "\"1\""),
        app.post(&format!("{path}/publish"), &editor).header("if-match", "\"1\"").json(&json!({})),
    ] {
        let (status, value) = body(request.send().await.unwrap()).await;
        assert_error(status, &value, StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED");
    }
    let (_, unchanged) = body(app.get(&path, &editor).send().await.unwrap()).await;
    assert_eq!(unchanged["name"], "Main");

    // With the current ETag it works; a PATCH merges into the content (RFC 7396).
    let response = app
        .patch(&path, &editor)
        .header("if-match", "\"2\"")
        .json(&json!({"content": {"settings": {"rate": null, "batch": 10}, "modules": [{"id": "only", "type": "Log"}], "connections": null}}))
        .send()
        .await
        .unwrap();
    assert_eq!(etag_of(&response), "\"3\"");
    let (status, patched) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "Main");
    assert_eq!(patched["content"]["settings"], json!({"batch": 10}));
    assert_eq!(patched["content"]["modules"], json!([{"id": "only", "type": "Log"}]));
    assert_eq!(patched["content"]["connections"], json!([]));

    // Without If-Match the last write wins.
    let (status, renamed) =
        body(app.patch(&path, &owner).json(&json!({"name": "Renamed"})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["revision"], 4);
    // `*` matches any revision; a weak tag compares too.
    let (status, _) =
        body(app.patch(&path, &owner).header("if-match", "*").json(&json!({})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        body(app.patch(&path, &owner).header("if-match", "W/\"5\"").json(&json!({})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);

    // null is no name / no content: refused. Unknown fields too.
    for patch in [json!({"name": null}), json!({"content": null})] {
        let (status, value) = body(app.patch(&path, &owner).json(&patch).send().await.unwrap()).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
    let (status, value) =
        body(app.put(&path, &owner).json(&json!({"name": "x", "content": {}, "revision": 9})).send().await.unwrap())
            .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");

    // The definition lists the draft; a second draft from nothing is independent.
    let (second, _) = create_draft(&app, &editor, &definition_id, json!({"name": "Experiment"})).await;
    let (_, definition) =
        body(app.get(&format!("/api/flowdefinitions/{definition_id}"), &owner).send().await.unwrap()).await;
    let names: Vec<&str> =
        definition["flowDrafts"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Renamed", "Experiment"]);

    // Delete, with the current ETag.
    let response = app.get(&path, &owner).send().await.unwrap();
    let current = etag_of(&response);
    let response = app.delete(&path, &owner).header("if-match", current).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, value) = body(app.get(&path, &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let response = app
        .delete(&format!("/api/flowdefinitions/{definition_id}/drafts/{}", id_of(&second)), &editor)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let actions: Vec<String> = flow_events(&app).await.into_iter().map(|e| e.0).collect();
    assert_eq!(actions.iter().filter(|a| *a == "flow.draft_update").count(), 5, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "flow.draft_delete").count(), 2, "{actions:?}");
}

#[tokio::test]
async fn content_errors_point_at_the_offending_element() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let other = app.register("other@example.com", "Other").await;
    let definition_id = id_of(&create_definition(&app, &owner, "Checked").await);
    let (draft, _) = create_draft(&app, &owner, &definition_id, json!({})).await;
    let path = format!("/api/flowdefinitions/{definition_id}/drafts/{}", id_of(&draft));
    let (foreign_resource, foreign_version) = resource_version(&app, &other, "foreign", b"abc", true).await;
    let (own_resource, own_version) = resource_version(&app, &owner, "own", b"abc", false).await;

    let content = json!({
        "modules": [
            {"id": "m1", "type": "A"}, {"id": "m2", "type": "B"}, {"id": "m1", "type": "C"},
            {"id": "", "type": "D"}, {"id": "m5"}, "not an object"
        ],
        "connections": [{"from": "m1", "to": "m9"}, {"from": "m2", "to": "m2"}, {"from": "m1", "to": "m2"}, {"from": "m1", "to": "m2"}],
        "resources": [
            {"resourceId": foreign_resource, "versionId": foreign_version},
            {"resourceId": own_resource, "versionId": Uuid::now_v7()},
            {"resourceId": "not-a-uuid", "versionId": own_version}
        ],
        "settings": [],
        "layout": {}
    });
    let (status, value) =
        body(app.put(&path, &owner).json(&json!({"name": "x", "content": content})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let details: Vec<(String, String)> = value["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["field"].as_str().unwrap().to_owned(), d["message"].as_str().unwrap().to_owned()))
        .collect();
    let has = |field: &str, part: &str| details.iter().any(|(f, m)| f == field && m.contains(part));
    assert!(has("content.modules[2].id", "duplicate id 'm1'"), "{details:?}");
    assert!(has("content.modules[3].id", "must not be empty"), "{details:?}");
    assert!(has("content.modules[4].type", "required"), "{details:?}");
    assert!(has("content.modules[5]", "must be an object"), "{details:?}");
    assert!(has("content.connections[0].to", "no module 'm9'"), "{details:?}");
    assert!(has("content.connections[1].to", "itself"), "{details:?}");
    assert!(has("content.connections[3]", "duplicate connection"), "{details:?}");
    assert!(has("content.resources[2].resourceId", "UUID"), "{details:?}");
    assert!(has("content.settings", "must be an object"), "{details:?}");
    assert!(has("content.layout", "unknown property"), "{details:?}");

    // Once the shape is right, the resources are checked in the database: another
    // organization's version and an unknown one are named; the own Draft version is fine.
    let content = flow(json!([
        {"resourceId": foreign_resource, "versionId": foreign_version},
        {"resourceId": own_resource, "versionId": Uuid::now_v7()},
        {"resourceId": own_resource, "versionId": own_version}
    ]));
    let (status, value) =
        body(app.put(&path, &owner).json(&json!({"name": "x", "content": content})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let fields: Vec<&str> = value["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"content.resources[2].resourceId"), "{value}");
    let content = flow(json!([
        {"resourceId": foreign_resource, "versionId": foreign_version},
        {"resourceId": own_resource, "versionId": own_version}
    ]));
    let (status, value) =
        body(app.put(&path, &owner).json(&json!({"name": "x", "content": content})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(
        value["details"],
        json!([{"field": "content.resources[0].versionId", "message": "no such resource version in this organization"}])
    );
    let content = flow(json!([{"resourceId": own_resource, "versionId": own_version}]));
    let (status, value) =
        body(app.put(&path, &owner).json(&json!({"name": "x", "content": content})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{value}");

    // Creating a draft validates too; a blank name is refused.
    let (status, value) = body(
        app.post(&format!("/api/flowdefinitions/{definition_id}/drafts"), &owner)
            .json(
                &json!({"content": {"modules": [{"id": "a", "type": "T"}], "connections": [{"from": "a", "to": "b"}]}}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "content.connections[0].to");
    let (status, value) =
        body(app.put(&path, &owner).json(&json!({"name": "  ", "content": {}})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "name");

    // The size limit holds for what a merge patch builds up.
    let half = "x".repeat(600 * 1024);
    let (status, value) =
        body(app.patch(&path, &owner).json(&json!({"content": {"settings": {"a": half}}})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    let (status, value) =
        body(app.patch(&path, &owner).json(&json!({"content": {"settings": {"b": half}}})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "content");
}

#[tokio::test]
async fn publishing_makes_numbered_versions_with_content_hashes() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let definition_id = id_of(&create_definition(&app, &owner, "Counter").await);
    let (draft, _) =
        create_draft(&app, &owner, &definition_id, json!({"name": "Main", "content": flow(json!([]))})).await;
    let draft_id = id_of(&draft);

    let response = app
        .post(&format!("/api/flowdefinitions/{definition_id}/drafts/{draft_id}/publish"), &owner)
        .json(&json!({"description": "first"}))
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (status, v1) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["name"], "Main");
    assert_eq!(location, format!("/api/flowdefinitions/{definition_id}/flows/{}", id_of(&v1)));
    // sha256 of the canonical JSON: sorted keys, no whitespace.
    let expected = content_hash(&flow(json!([])));
    assert_eq!(v1["contentHash"], expected.as_str());
    let canonical = r#"{"connections":[{"from":"in","to":"out"}],"modules":[{"config":{"topic":"t/#"},"id":"in","name":"Sensor","type":"MqttSubscriber"},{"config":{"url":"https://example.com"},"id":"out","name":"Cloud","type":"HttpPost"}],"resources":[],"settings":{"rate":1}}"#;
    use sha2::Digest;
    assert_eq!(expected, hex::encode(sha2::Sha256::digest(canonical.as_bytes())));

    // The same content again is version 2 with the same hash; a change gives another hash.
    let v2 = publish(&app, &owner, &definition_id, &draft_id, "again").await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["contentHash"], v1["contentHash"]);
    let path = format!("/api/flowdefinitions/{definition_id}/drafts/{draft_id}");
    let (status, _) =
        body(app.patch(&path, &owner).json(&json!({"content": {"settings": {"rate": 2}}})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let v3 = publish(&app, &owner, &definition_id, &draft_id, "faster").await;
    assert_eq!(v3["version"], 3);
    assert_ne!(v3["contentHash"], v1["contentHash"]);

    // Later edits of the draft do not touch the versions.
    let (status, _) =
        body(app.patch(&path, &owner).json(&json!({"content": {"settings": {"rate": 3}}})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, stored) = body(
        app.get(&format!("/api/flowdefinitions/{definition_id}/flows/{}", id_of(&v3)), &owner).send().await.unwrap(),
    )
    .await;
    assert_eq!(stored["content"]["settings"]["rate"], 2);
    assert_eq!(stored["publishedFromDraftId"], draft_id.as_str());

    // Concurrent publishes get distinct, consecutive numbers.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let client = app.client.clone();
        let url = app.url(&format!("/api/flowdefinitions/{definition_id}/drafts/{draft_id}/publish"));
        let token = owner.token.clone();
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"description": format!("race {i}")}))
                .send()
                .await
                .unwrap();
            body(response).await
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        let (status, value) = task.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{value}");
        numbers.push(value["version"].as_i64().unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, vec![4, 5, 6, 7, 8, 9]);
    let (_, definition) =
        body(app.get(&format!("/api/flowdefinitions/{definition_id}"), &owner).send().await.unwrap()).await;
    assert_eq!(definition["latestVersion"], 9);
    assert_eq!(definition["flows"].as_array().unwrap().len(), 9);

    // A draft copied from a version starts from its content.
    let (copy, _) = create_draft(&app, &owner, &definition_id, json!({"fromFlowId": id_of(&v1)})).await;
    assert_eq!(copy["content"], flow(json!([])));
    assert_eq!(copy["name"], "From version 1");
    assert_eq!(copy["basedOnFlowId"], id_of(&v1).as_str());
    let other_definition = id_of(&create_definition(&app, &owner, "Elsewhere").await);
    let (status, value) = body(
        app.post(&format!("/api/flowdefinitions/{other_definition}/drafts"), &owner)
            .json(&json!({"fromFlowId": id_of(&v1)}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "fromFlowId");
}

#[tokio::test]
async fn versions_are_immutable() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let definition_id = id_of(&create_definition(&app, &owner, "Frozen").await);
    let (draft, _) = create_draft(&app, &owner, &definition_id, json!({"content": flow(json!([]))})).await;
    let version = publish(&app, &owner, &definition_id, &id_of(&draft), "v1").await;
    let path = format!("/api/flowdefinitions/{definition_id}/flows/{}", id_of(&version));
    for request in [
        app.put(&path, &owner).json(&json!({"name": "x", "content": {}})),
        app.patch(&path, &owner).json(&json!({"description": "changed"})),
        app.delete(&path, &owner),
    ] {
        let response = request.send().await.unwrap();
        let allow = response.headers().get("allow").expect("Allow").to_str().unwrap().to_owned();
        assert!(allow.contains("GET") && !allow.contains("PUT") && !allow.contains("DELETE"), "{allow}");
        let (status, value) = body(response).await;
        assert_error(status, &value, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    }
    // The database refuses too.
    let updated = sqlx::query("UPDATE flow_versions SET description = 'sneaky'").execute(&mut app.db().await).await;
    assert!(updated.is_err());
    let (_, unchanged) = body(app.get(&path, &owner).send().await.unwrap()).await;
    assert_eq!(unchanged["description"], "v1");
    assert_eq!(unchanged["content"], version["content"]);
}

#[tokio::test]
async fn publishing_needs_completed_resource_versions_and_records_them() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (done_resource, done_version) = resource_version(&app, &owner, "calibration", b"1,2,3\n", true).await;
    let (draft_resource, draft_version) = resource_version(&app, &owner, "lookup", b"a;b", false).await;
    let definition_id = id_of(&create_definition(&app, &owner, "Resourceful").await);
    let content = flow(json!([
        {"resourceId": done_resource, "versionId": done_version},
        {"resourceId": draft_resource, "versionId": draft_version}
    ]));
    let (draft, _) = create_draft(&app, &owner, &definition_id, json!({"content": content})).await;
    let draft_id = id_of(&draft);

    // The draft may use a Draft resource version (for tests on DevAndTest nodes) ...
    let mut conn = app.db().await;
    let organization_id = owner.organization_id;
    let definition = Uuid::parse_str(&definition_id).unwrap();
    let payload = draft_payload(
        &mut conn,
        organization_id,
        definition,
        Uuid::parse_str(&draft_id).unwrap(),
        "https://cc.example.com/",
    )
    .await
    .unwrap()
    .expect("draft payload");
    assert_eq!(payload.version, 0);
    assert_eq!(payload.flow_id.to_string(), draft_id);
    assert_eq!(payload.name, "Resourceful");
    assert_eq!(payload.resources.len(), 2);
    assert_eq!(payload.resources[0].size_in_bytes, 6);
    assert_eq!(payload.resources[0].path.as_deref(), Some("data/calibration.csv"));
    assert_eq!(
        payload.resources[0].download_url,
        edgeflow::resources::download_url(
            "https://cc.example.com",
            Uuid::parse_str(&done_resource).unwrap(),
            Uuid::parse_str(&done_version).unwrap()
        )
    );
    assert!(payload.resources[0].download_url.starts_with("https://cc.example.com/api/"));
    use sha2::Digest;
    assert_eq!(payload.resources[1].sha256, hex::encode(sha2::Sha256::digest(b"a;b")));

    // ... but publishing refuses it, naming it.
    let (status, value) = body(
        app.post(&format!("/api/flowdefinitions/{definition_id}/drafts/{draft_id}/publish"), &owner)
            .json(&json!({"description": "too early"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::CONFLICT, "RESOURCE_NOT_COMPLETED");
    let message = value["error"].as_str().unwrap();
    assert!(
        message.contains("lookup") && message.contains(&draft_version) && !message.contains("calibration"),
        "{message}"
    );
    let (_, definition_now) =
        body(app.get(&format!("/api/flowdefinitions/{definition_id}"), &owner).send().await.unwrap()).await;
    assert_eq!(definition_now["flows"], json!([]));

    // Completed, it publishes, and flow_version_resources records both uses.
    let (status, done) = body(
        app.put(&format!("/api/resources/{draft_resource}/versions/{draft_version}"), &owner)
            .json(&json!({"state": "Completed"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let version = publish(&app, &owner, &definition_id, &draft_id, "ready").await;
    let rows = sqlx::query(
        "SELECT flow_name, version, resource_version_id::text AS rv FROM flow_version_resources \
         WHERE flow_version_id = $1::uuid ORDER BY resource_version_id",
    )
    .bind(id_of(&version))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut recorded: Vec<String> = rows.iter().map(|r| r.get::<String, _>("rv")).collect();
    let mut expected = vec![done_version.clone(), draft_version.clone()];
    recorded.sort();
    expected.sort();
    assert_eq!(recorded, expected);
    assert!(rows.iter().all(|r| r.get::<String, _>("flow_name") == "Resourceful" && r.get::<i32, _>("version") == 1));

    // The deploy payload of the version.
    let flow_id = Uuid::parse_str(&id_of(&version)).unwrap();
    let deploy = deploy_payload(&mut conn, organization_id, definition, flow_id, "https://cc.example.com")
        .await
        .unwrap()
        .expect("deploy payload");
    assert_eq!(deploy.version, 1);
    assert_eq!(deploy.flow_id, flow_id);
    assert_eq!(deploy.content, version["content"]);
    assert_eq!(
        deploy.resources.iter().map(|r| r.version_id.to_string()).collect::<Vec<_>>(),
        vec![done_version.clone(), draft_version.clone()]
    );
    // Another organization sees nothing.
    let other = app.register("other@example.com", "Other").await;
    assert!(deploy_payload(&mut conn, other.organization_id, definition, flow_id, "").await.unwrap().is_none());
    assert!(deploy_payload(&mut conn, organization_id, definition, Uuid::now_v7(), "").await.unwrap().is_none());

    // A rename keeps the resources' view of who uses them current.
    let (status, _) = body(
        app.patch(&format!("/api/flowdefinitions/{definition_id}"), &owner)
            .json(&json!({"name": "Renamed"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT flow_name FROM flow_version_resources").fetch_all(&mut conn).await.unwrap();
    assert_eq!(names, vec!["Renamed".to_owned()]);
}

#[tokio::test]
async fn a_deployed_definition_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let definition_id = id_of(&create_definition(&app, &owner, "Busy").await);
    let (resource, resource_version_id) = resource_version(&app, &owner, "file", b"data", true).await;
    let (draft, _) = create_draft(
        &app,
        &owner,
        &definition_id,
        json!({"content": flow(json!([{"resourceId": resource, "versionId": resource_version_id}]))}),
    )
    .await;
    let version = publish(&app, &owner, &definition_id, &id_of(&draft), "v1").await;
    let (status, node) = body(
        app.post("/api/edgenodes", &owner)
            .json(&json!({"name": "Production5", "organizationId": owner.organization_id, "type": "Production"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{node}");
    let mut conn = app.db().await;
    sqlx::query(
        "INSERT INTO node_flows (node_id, flow_definition_id, organization_id, flow_version_id, version, payload, desired_state) \
         VALUES ($1::uuid, $2::uuid, $3, $4::uuid, 1, '{}', 'running')",
    )
    .bind(id_of(&node))
    .bind(&definition_id)
    .bind(owner.organization_id)
    .bind(id_of(&version))
    .execute(&mut conn)
    .await
    .unwrap();

    let path = format!("/api/flowdefinitions/{definition_id}");
    let (status, value) = body(app.delete(&path, &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::CONFLICT, "FLOW_DEPLOYED");
    assert!(value["error"].as_str().unwrap().contains("'Production5'"), "{value}");
    let (status, _) = body(app.get(&path, &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);

    sqlx::query("DELETE FROM node_flows").execute(&mut conn).await.unwrap();
    let response = app.delete(&path, &owner).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, value) = body(app.get(&path, &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    for table in ["flow_drafts", "flow_versions", "flow_version_resources"] {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(count, 0, "{table}");
    }
    // The resource version is free again.
    let response = app.delete(&format!("/api/resources/{resource}"), &owner).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let events = flow_events(&app).await;
    assert_eq!(events.last(), Some(&("flow.delete".to_owned(), "Flow: Busy".to_owned())));
}

#[tokio::test]
async fn roles_names_and_bodies_are_checked() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    let operator = app.member(&owner, "operator@example.com", "Operator").await;
    let other = app.register("other@example.com", "Other").await;
    let definition_id = id_of(&create_definition(&app, &owner, "Guarded").await);
    let (draft, _) = create_draft(&app, &owner, &definition_id, json!({"content": flow(json!([]))})).await;
    let draft_id = id_of(&draft);
    let version = publish(&app, &owner, &definition_id, &draft_id, "v1").await;
    let base = format!("/api/flowdefinitions/{definition_id}");
    let draft_path = format!("{base}/drafts/{draft_id}");

    // 401 without credentials.
    let (status, value) = body(app.client.get(app.url("/api/flowdefinitions")).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // Viewers and Operators read, but do not write.
    for session in [&viewer, &operator] {
        for path in [
            "/api/flowdefinitions".to_owned(),
            base.clone(),
            draft_path.clone(),
            format!("{base}/flows"),
            format!("{base}/flows/{}", id_of(&version)),
        ] {
            let (status, value) = body(app.get(&path, session).send().await.unwrap()).await;
            assert_eq!(status, StatusCode::OK, "{path}: {value}");
        }
        for request in [
            app.post("/api/flowdefinitions", session).json(&json!({"name": "Mine"})),
            app.patch(&base, session).json(&json!({"name": "Mine"})),
            app.delete(&base, session),
            app.post(&format!("{base}/drafts"), session).json(&json!({})),
            app.put(&draft_path, session).json(&json!({"name": "x", "content": {}})),
            app.patch(&draft_path, session).json(&json!({"name": "x"})),
            app.delete(&draft_path, session),
            app.post(&format!("{draft_path}/publish"), session).json(&json!({})),
        ] {
            let (status, value) = body(request.send().await.unwrap()).await;
            assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
        }
    }

    // Names are unique per organization (create and rename); another organization may reuse one.
    let (status, value) =
        body(app.post("/api/flowdefinitions", &owner).json(&json!({"name": "Guarded"})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::CONFLICT, "DUPLICATE_NAME");
    let second = id_of(&create_definition(&app, &owner, "Second").await);
    let (status, value) = body(
        app.patch(&format!("/api/flowdefinitions/{second}"), &owner)
            .json(&json!({"name": "Guarded"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::CONFLICT, "DUPLICATE_NAME");
    create_definition(&app, &other, "Guarded").await;

    // Bodies: organizationId must be the active one; unknown fields, blank names, bad ids.
    let (status, value) = body(
        app.post("/api/flowdefinitions", &owner)
            .json(&json!({"name": "X", "organizationId": other.organization_id}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, value) =
        body(app.post("/api/flowdefinitions", &owner).json(&json!({"name": "X", "owner": "me"})).send().await.unwrap())
            .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (status, value) =
        body(app.post("/api/flowdefinitions", &owner).json(&json!({"name": " "})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, value) = body(app.get("/api/flowdefinitions/not-a-uuid", &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (status, value) =
        body(app.post(&format!("{draft_path}/publish"), &owner).json(&json!({"version": 7})).send().await.unwrap())
            .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (status, value) = body(
        app.post(&format!("{base}/drafts"), &owner)
            .json(&json!({"fromFlowId": id_of(&version), "content": {}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");

    // A merge patch of the definition: description set, then cleared; null name refused.
    let (status, value) =
        body(app.patch(&base, &owner).json(&json!({"description": "Keeps watch"})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["description"], "Keeps watch");
    assert_eq!(value["flows"].as_array().unwrap().len(), 1);
    let (_, value) = body(app.patch(&base, &owner).json(&json!({"description": null})).send().await.unwrap()).await;
    assert_eq!(value["description"], Value::Null);
    let (status, value) = body(app.patch(&base, &owner).json(&json!({"name": null})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn another_organizations_flows_are_not_found() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let other = app.register("other@example.com", "Other").await;
    let definition_id = id_of(&create_definition(&app, &owner, "Secret").await);
    let (draft, tag) = create_draft(&app, &owner, &definition_id, json!({"content": flow(json!([]))})).await;
    let draft_id = id_of(&draft);
    let version_id = id_of(&publish(&app, &owner, &definition_id, &draft_id, "v1").await);
    let base = format!("/api/flowdefinitions/{definition_id}");
    let draft_path = format!("{base}/drafts/{draft_id}");
    let version_path = format!("{base}/flows/{version_id}");
    // The other organization's own definition, to pair with this one's draft and version ids.
    let theirs = id_of(&create_definition(&app, &other, "Theirs").await);
    let mixed_draft = format!("/api/flowdefinitions/{theirs}/drafts/{draft_id}");
    let mixed_version = format!("/api/flowdefinitions/{theirs}/flows/{version_id}");

    let requests = [
        app.get(&base, &other),
        app.patch(&base, &other).json(&json!({"name": "Stolen"})),
        app.delete(&base, &other),
        app.get(&format!("{base}/flows"), &other),
        app.post(&format!("{base}/drafts"), &other).json(&json!({})),
        app.get(&draft_path, &other),
        app.put(&draft_path, &other).header("if-match", tag.as_str()).json(&json!({"name": "x", "content": {}})),
        app.patch(&draft_path, &other).json(&json!({"name": "x"})),
        app.delete(&draft_path, &other),
        app.post(&format!("{draft_path}/publish"), &other).json(&json!({})),
        app.get(&version_path, &other),
        app.get(&mixed_draft, &other),
        app.patch(&mixed_draft, &other).json(&json!({"name": "x"})),
        app.post(&format!("{mixed_draft}/publish"), &other).json(&json!({})),
        app.get(&mixed_version, &other),
        app.post(&format!("/api/flowdefinitions/{theirs}/drafts"), &other).json(&json!({"fromFlowId": version_id})),
    ];
    for request in requests {
        let request = request.build().unwrap();
        let what = format!("{} {}", request.method(), request.url().path());
        let (status, value) = body(app.client.execute(request).await.unwrap()).await;
        if what.ends_with("/drafts") && what.contains(&theirs) {
            // Their own definition exists: the foreign version id is an invalid field.
            assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        } else {
            assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
        }
        assert!(!value.to_string().contains("Secret"), "{what}: {value}");
    }
    let (_, list) = body(app.get("/api/flowdefinitions?includeCount=true", &other).send().await.unwrap()).await;
    assert_eq!(list["totalCount"], 1, "{list}");
    assert_eq!(list["items"][0]["name"], "Theirs");

    // Nothing changed on this side.
    let (_, mine) = body(app.get(&base, &owner).send().await.unwrap()).await;
    assert_eq!(mine["name"], "Secret");
    assert_eq!(mine["flowDrafts"][0]["revision"], 1);
    assert_eq!(mine["flows"].as_array().unwrap().len(), 1);
}

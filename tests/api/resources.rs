//! `/api/resources`: Crosser's walk-through verbatim, validations, size checks, the maximum and
//! the quota, Range and conditional downloads, resumable uploads, abort and expiry, a server
//! killed mid-upload, delete refused while referenced, node downloads, tenancy and roles.

use std::{
    path::{Path as FsPath, PathBuf},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use edgeflow::{
    jobs::store::{NewJob, enqueue},
    tunnel::protocol::{DeployFlow, DeployResource, JobCommand},
};
use reqwest::{
    StatusCode,
    multipart::{Form, Part},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{faults::process::ServerProcess, helpers::*, wire::create_node};

const MIB: usize = 1024 * 1024;

/// Deterministic bytes that do not compress.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(<md5::Md5 as md5::Digest>::digest(bytes))
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_owned()
}

/// Every file under the test server's blob directory (staging files included).
fn blob_files(app: &TestApp) -> Vec<PathBuf> {
    fn walk(dir: &FsPath, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&blob_dir(app), &mut files);
    files
}

fn blob_dir(app: &TestApp) -> PathBuf {
    app.server.as_ref().expect("running").state.config.data_dir.join("blobs")
}

async fn pending_blobs(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM resource_blobs_pending").fetch_one(&mut app.db().await).await.unwrap()
}

async fn create_resource(app: &TestApp, session: &Session, name: &str, path: &str) -> Value {
    let (status, value) = send(app.post("/api/resources", session).json(&json!({
        "organizationId": session.organization_id, "name": name, "type": "File",
        "category": "/organization/", "path": path
    })))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value
}

async fn create_version(app: &TestApp, session: &Session, resource: &str, size: usize) -> Value {
    let (status, value) = send(
        app.post(&format!("/api/resources/{resource}/versions"), session)
            .json(&json!({"description": "a draft", "sizeInBytes": size})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value
}

async fn upload(app: &TestApp, session: &Session, resource: &str, version: &str, data: &[u8]) -> (StatusCode, Value) {
    let form = Form::new().part("file", Part::bytes(data.to_vec()).file_name("data.bin").mime_str("text/csv").unwrap());
    send(app.post(&format!("/api/resources/{resource}/versions/{version}/content"), session).multipart(form)).await
}

async fn complete(app: &TestApp, session: &Session, resource: &str, version: &Value) -> Value {
    let mut draft = version.clone();
    draft["state"] = json!("Completed");
    let (status, value) =
        send(app.put(&format!("/api/resources/{resource}/versions/{}", id_of(version)), session).json(&draft)).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value
}

/// A Completed version of a new resource holding `data`: (resource id, version id).
async fn completed_resource(app: &TestApp, session: &Session, name: &str, data: &[u8]) -> (String, String) {
    let resource = id_of(&create_resource(app, session, name, &format!("files/{name}.bin")).await);
    let version = create_version(app, session, &resource, data.len()).await;
    let (status, uploaded) = upload(app, session, &resource, &id_of(&version), data).await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    complete(app, session, &resource, &uploaded).await;
    (resource, id_of(&version))
}

/// Records that a flow version uses the resource version (what the flows issue writes when it
/// publishes); creates the flow rows it points at when the flow tables exist. Answers the flow
/// version's id.
async fn reference(
    app: &TestApp,
    organization_id: Uuid,
    resource: &str,
    version: &str,
    flow: &str,
    number: i32,
) -> Uuid {
    let mut db = app.db().await;
    let (definition, flow_version) = (Uuid::now_v7(), Uuid::now_v7());
    let flow_tables: bool =
        sqlx::query_scalar("SELECT to_regclass('flow_versions') IS NOT NULL").fetch_one(&mut db).await.unwrap();
    if flow_tables {
        sqlx::query("INSERT INTO flow_definitions (id, organization_id, name) VALUES ($1, $2, $3)")
            .bind(definition)
            .bind(organization_id)
            .bind(flow)
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO flow_versions (id, organization_id, flow_definition_id, version, name, content, content_hash) \
             VALUES ($1, $2, $3, $4, $5, '{}', 'x')",
        )
        .bind(flow_version)
        .bind(organization_id)
        .bind(definition)
        .bind(number)
        .bind(flow)
        .execute(&mut db)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO flow_version_resources (flow_version_id, flow_definition_id, flow_name, version, organization_id, \
         resource_id, resource_version_id) VALUES ($1, $2, $3, $4, $5, $6::uuid, $7::uuid)",
    )
    .bind(flow_version)
    .bind(definition)
    .bind(flow)
    .bind(number)
    .bind(organization_id)
    .bind(resource)
    .bind(version)
    .execute(&mut db)
    .await
    .unwrap();
    flow_version
}

/// Crosser's walk-through, call for call: users/me for the organization id, create the
/// resource, create a draft (with `sizeInBytes` as the docs write it, a string), upload it as
/// multipart/form-data, PUT the draft back with only `state` changed, then the delete rules.
#[tokio::test]
async fn the_crosser_walk_through_works_verbatim() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (status, me) = send(app.get("/api/users/me", &owner)).await;
    assert_eq!(status, StatusCode::OK);
    let organization_id = me["organization"]["id"].as_str().unwrap().to_owned();

    let (status, list) = send(app.get("/api/resources", &owner)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"], json!([]));

    let (status, resource) = send(app.post("/api/resources", &owner).json(&json!({
        "organizationId": organization_id, "name": "Calibration", "type": "File",
        "category": "/organization/", "path": "data/calibration.csv"
    })))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{resource}");
    let resource_id = id_of(&resource);
    assert_eq!(resource["type"], "File");
    assert_eq!(resource["path"], "data/calibration.csv");

    let data = b"sensor,offset\nt1,0.25\nt2,-0.5\n".to_vec();
    let (status, draft) = send(
        app.post(&format!("/api/resources/{resource_id}/versions"), &owner)
            .json(&json!({"description": "first calibration", "sizeInBytes": data.len().to_string()})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{draft}");
    assert_eq!(draft["state"], "Draft");
    assert_eq!(draft["sizeInBytes"], data.len());
    assert_eq!(draft["version"], 1);
    let draft_id = id_of(&draft);

    let (status, uploaded) = upload(&app, &owner, &resource_id, &draft_id, &data).await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    assert_eq!(uploaded["sha256"], sha256_hex(&data));
    assert_eq!(uploaded["md5"], md5_hex(&data));
    assert_eq!(uploaded["uploadedBytes"], data.len());
    assert_eq!(uploaded["contentType"], "text/csv");

    // "the response when generating the draft ... can be used by just changing the state".
    let mut body_of_creation = draft.clone();
    body_of_creation["state"] = json!("Completed");
    let (status, version) =
        send(app.put(&format!("/api/resources/{resource_id}/versions/{draft_id}"), &owner).json(&body_of_creation))
            .await;
    assert_eq!(status, StatusCode::OK, "{version}");
    assert_eq!(version["state"], "Completed");
    assert_eq!(version["description"], "first calibration");
    assert!(version["completedAt"].is_string(), "{version}");

    // A second draft, completed from its GET body with only the state changed.
    let second = create_version(&app, &owner, &resource_id, 3).await;
    let second_id = id_of(&second);
    assert_eq!(second["version"], 2);
    assert_eq!(upload(&app, &owner, &resource_id, &second_id, b"abc").await.0, StatusCode::OK);
    let (status, read) = send(app.get(&format!("/api/resources/{resource_id}/versions/{second_id}"), &owner)).await;
    assert_eq!(status, StatusCode::OK);
    let completed = complete(&app, &owner, &resource_id, &read).await;
    assert_eq!(completed["state"], "Completed");

    // The resource shows its versions; the list has it.
    let (status, shown) = send(app.get(&format!("/api/resources/{resource_id}"), &owner)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2, "{shown}");
    assert_eq!(shown["latestCompletedVersion"], 2);
    let (_, list) = send(app.get("/api/resources?includeCount=true", &owner)).await;
    assert_eq!(list["totalCount"], 1);
    let (_, versions) =
        send(app.get(&format!("/api/resources/{resource_id}/versions?orderDirection=desc"), &owner)).await;
    assert_eq!(versions["items"][0]["version"], 2, "{versions}");

    // The content comes back as uploaded.
    let response =
        app.get(&format!("/api/resources/{resource_id}/versions/{draft_id}/content"), &owner).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());

    // Delete rules: a version, then the resource with the rest.
    let (status, _) = send(app.delete(&format!("/api/resources/{resource_id}/versions/{second_id}"), &owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(app.delete(&format!("/api/resources/{resource_id}"), &owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, gone) = send(app.get(&format!("/api/resources/{resource_id}"), &owner)).await;
    assert_error(status, &gone, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert!(blob_files(&app).is_empty(), "{:?}", blob_files(&app));

    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM events WHERE action LIKE 'resource.%' ORDER BY occurred_at, id")
            .fetch_all(&mut app.db().await)
            .await
            .unwrap();
    for expected in [
        "resource.create",
        "resource.version.create",
        "resource.version.upload",
        "resource.version.complete",
        "resource.version.delete",
        "resource.delete",
    ] {
        assert!(actions.iter().any(|a| a == expected), "{expected} in {actions:?}");
    }
}

#[tokio::test]
async fn resource_fields_are_validated() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let org = owner.organization_id;
    let bad = [
        (
            json!({"organizationId": org, "name": "a", "type": "Spreadsheet", "category": "/organization/", "path": "a"}),
            None,
        ),
        (
            json!({"organizationId": org, "name": "a", "type": "File", "category": "/files/", "path": "a"}),
            Some("category"),
        ),
        (
            json!({"organizationId": org, "name": "a", "type": "PythonScript", "category": "/organization/"}),
            Some("path"),
        ),
        (
            json!({"organizationId": org, "name": "a", "type": "File", "category": "/organization/", "path": "../etc/passwd"}),
            Some("path"),
        ),
        (
            json!({"organizationId": org, "name": "a", "type": "File", "category": "/organization/", "path": "data/../../x"}),
            Some("path"),
        ),
        (
            json!({"organizationId": org, "name": "", "type": "File", "category": "/organization/", "path": "a"}),
            Some("name"),
        ),
        (
            json!({"organizationId": org, "name": "a", "type": "File", "category": "/organization/", "path": "a", "owner": "me"}),
            None,
        ),
    ];
    for (request, field) in bad {
        let (status, value) = send(app.post("/api/resources", &owner).json(&request)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request} -> {value}");
        if let Some(field) = field {
            assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
            assert_eq!(value["details"][0]["field"], field, "{value}");
        }
    }
    // Settings need no path; every listed type is accepted.
    for (i, kind) in ["Modbus", "OPC", "SiemensS7", "Rockwell", "PiWebApi", "DataTriggerDefinitions"].iter().enumerate()
    {
        let (status, value) = send(app.post("/api/resources", &owner).json(&json!({
            "organizationId": org, "name": format!("settings {i}"), "type": kind, "category": "/organization/plants/"
        })))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        assert_eq!(value["type"], *kind);
    }
    // Another organization's id in the body is refused; a duplicate name conflicts.
    let other = app.register("other@example.com", "Other").await;
    let (status, value) = send(app.post("/api/resources", &owner).json(&json!({
        "organizationId": other.organization_id, "name": "x", "type": "Modbus", "category": "/organization/"
    })))
    .await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let resource = create_resource(&app, &owner, "Table", "t.csv").await;
    let (status, value) = send(app.post("/api/resources", &owner).json(&json!({
        "organizationId": org, "name": "Table", "type": "File", "category": "/organization/", "path": "u.csv"
    })))
    .await;
    assert_error(status, &value, StatusCode::CONFLICT, "DUPLICATE_NAME");

    // Merge patch: a file type keeps needing a path (clearing the stored one conflicts with the
    // stored type; a patch naming both is simply invalid); '..' is refused; changes apply.
    let id = id_of(&resource);
    let (status, value) = send(app.patch(&format!("/api/resources/{id}"), &owner).json(&json!({"path": null}))).await;
    assert_error(status, &value, StatusCode::CONFLICT, "PATH_REQUIRED");
    let (status, value) =
        send(app.patch(&format!("/api/resources/{id}"), &owner).json(&json!({"type": "File", "path": null}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, value) =
        send(app.patch(&format!("/api/resources/{id}"), &owner).json(&json!({"path": "a/../b"}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, value) = send(
        app.patch(&format!("/api/resources/{id}"), &owner)
            .json(&json!({"name": "Table 2", "category": "/organization/line-1/", "description": "d"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(
        (value["name"].as_str(), value["category"].as_str(), value["path"].as_str()),
        (Some("Table 2"), Some("/organization/line-1/"), Some("t.csv"))
    );

    // Versions: sizeInBytes must be a whole number; unknown fields are refused.
    for request in [
        json!({"sizeInBytes": "lots"}),
        json!({"sizeInBytes": -1}),
        json!({"description": "x"}),
        json!({"sizeInBytes": 1, "x": 1}),
    ] {
        let (status, value) = send(app.post(&format!("/api/resources/{id}/versions"), &owner).json(&request)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request} -> {value}");
    }
    let version = create_version(&app, &owner, &id, 4).await;
    let (status, value) = send(
        app.put(&format!("/api/resources/{id}/versions/{}", id_of(&version)), &owner)
            .json(&json!({"state": "Draft", "owner": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    let (status, value) = send(
        app.put(&format!("/api/resources/{id}/versions/{}", id_of(&version)), &owner)
            .json(&json!({"state": "Completed"})),
    )
    .await;
    assert_error(status, &value, StatusCode::CONFLICT, "NO_CONTENT");
}

#[tokio::test]
async fn uploads_must_match_the_declared_size_and_replace_a_drafts_content() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let resource = id_of(&create_resource(&app, &owner, "Sizes", "s.bin").await);
    let version = id_of(&create_version(&app, &owner, &resource, 1000).await);

    for data in [content(999, 1), content(1001, 2), content(3 * MIB, 3)] {
        let (status, value) = upload(&app, &owner, &resource, &version, &data).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert_eq!(value["details"][0]["field"], "sizeInBytes", "{value}");
    }
    // A form without a file is refused too; nothing was kept of any of it.
    let form = Form::new().text("description", "no file");
    let (status, value) =
        send(app.post(&format!("/api/resources/{resource}/versions/{version}/content"), &owner).multipart(form)).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (_, shown) = send(app.get(&format!("/api/resources/{resource}/versions/{version}"), &owner)).await;
    assert_eq!((shown["sha256"].clone(), shown["uploadedBytes"].clone()), (Value::Null, json!(0)), "{shown}");
    assert!(blob_files(&app).is_empty(), "{:?}", blob_files(&app));
    assert_eq!(pending_blobs(&app).await, 0);

    // The right size is stored; uploading again replaces it and deletes the old blob.
    let first = content(1000, 4);
    let (status, value) = upload(&app, &owner, &resource, &version, &first).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["sha256"], sha256_hex(&first));
    let second = content(1000, 5);
    let raw = app
        .post(&format!("/api/resources/{resource}/versions/{version}/content"), &owner)
        .header("content-type", "application/octet-stream")
        .body(second.clone());
    let (status, value) = send(raw).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["sha256"], sha256_hex(&second));
    assert_eq!(value["contentType"], "application/octet-stream");
    assert_eq!(blob_files(&app).len(), 1, "{:?}", blob_files(&app));
    let response =
        app.get(&format!("/api/resources/{resource}/versions/{version}/content"), &owner).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), second.as_slice());

    // Optimistic concurrency: a PUT with the ETag of an older state is refused.
    let response = app.get(&format!("/api/resources/{resource}/versions/{version}"), &owner).send().await.unwrap();
    let stale = response.headers()["etag"].to_str().unwrap().to_owned();
    let (status, _) = send(
        app.put(&format!("/api/resources/{resource}/versions/{version}"), &owner)
            .header("if-match", &stale)
            .json(&json!({"state": "Draft", "description": "renamed"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, value) = send(
        app.put(&format!("/api/resources/{resource}/versions/{version}"), &owner)
            .header("if-match", &stale)
            .json(&json!({"state": "Completed"})),
    )
    .await;
    assert_error(status, &value, StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED");

    // Once Completed, nothing changes any more.
    let (_, read) = send(app.get(&format!("/api/resources/{resource}/versions/{version}"), &owner)).await;
    let completed = complete(&app, &owner, &resource, &read).await;
    let (status, value) = upload(&app, &owner, &resource, &version, &first).await;
    assert_error(status, &value, StatusCode::CONFLICT, "VERSION_COMPLETED");
    let (status, value) =
        send(app.put(&format!("/api/resources/{resource}/versions/{version}"), &owner).json(&completed)).await;
    assert_error(status, &value, StatusCode::CONFLICT, "VERSION_COMPLETED");
    let (status, value) = send(
        app.put(&format!("/api/resources/{resource}/versions/{version}"), &owner)
            .json(&json!({"state": "Draft", "description": "x"})),
    )
    .await;
    assert_error(status, &value, StatusCode::CONFLICT, "VERSION_COMPLETED");
    let (status, value) =
        send(app.post(&format!("/api/resources/{resource}/versions/{version}/uploads"), &owner)).await;
    assert_error(status, &value, StatusCode::CONFLICT, "VERSION_COMPLETED");
    let response =
        app.get(&format!("/api/resources/{resource}/versions/{version}/content"), &owner).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), second.as_slice());
}

#[tokio::test]
async fn the_maximum_and_the_storage_quota_are_enforced() {
    let app = TestApp::spawn_with(|config| {
        config.max_upload_bytes = 2 * MIB as u64;
        config.storage_quota_bytes = 3 * MIB as u64;
    })
    .await;
    let owner = app.owner().await;
    let resource = id_of(&create_resource(&app, &owner, "Big", "big.bin").await);

    let (status, value) = send(
        app.post(&format!("/api/resources/{resource}/versions"), &owner).json(&json!({"sizeInBytes": 2 * MIB + 1})),
    )
    .await;
    assert_error(status, &value, StatusCode::PAYLOAD_TOO_LARGE, "UPLOAD_TOO_LARGE");
    let small = id_of(&create_version(&app, &owner, &resource, 10).await);
    let (status, value) = send(
        app.put(&format!("/api/resources/{resource}/versions/{small}"), &owner)
            .json(&json!({"state": "Draft", "sizeInBytes": 3 * MIB})),
    )
    .await;
    assert_error(status, &value, StatusCode::PAYLOAD_TOO_LARGE, "UPLOAD_TOO_LARGE");

    // 2 MiB fits; a second 2 MiB would pass the 3 MiB quota, by upload or by resumable session.
    let first = id_of(&create_version(&app, &owner, &resource, 2 * MIB).await);
    assert_eq!(upload(&app, &owner, &resource, &first, &content(2 * MIB, 1)).await.0, StatusCode::OK);
    let second = id_of(&create_version(&app, &owner, &resource, 2 * MIB).await);
    let (status, value) = upload(&app, &owner, &resource, &second, &content(2 * MIB, 2)).await;
    assert_error(status, &value, StatusCode::PAYLOAD_TOO_LARGE, "QUOTA_EXCEEDED");
    let (status, value) = send(app.post(&format!("/api/resources/{resource}/versions/{second}/uploads"), &owner)).await;
    assert_error(status, &value, StatusCode::PAYLOAD_TOO_LARGE, "QUOTA_EXCEEDED");
    // Replacing the first version's content is not counted twice.
    assert_eq!(upload(&app, &owner, &resource, &first, &content(2 * MIB, 3)).await.0, StatusCode::OK);

    create_node(&app, &owner, "Line1").await;
    let (status, usage) = send(app.get(&format!("/api/organizations/{}/usage", owner.organization_id), &owner)).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["storageBytes"], json!({"used": 2 * MIB, "limit": 3 * MIB}));
    assert_eq!(usage["resources"]["used"], 1);
    assert_eq!(usage["edgeNodes"]["used"], 1);
    assert_eq!(usage["flowDefinitions"]["used"], 0);
    assert_eq!(usage["apiKeys"]["used"], 0);

    // Deleting frees the space.
    let (status, _) = send(app.delete(&format!("/api/resources/{resource}/versions/{first}"), &owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(upload(&app, &owner, &resource, &second, &content(2 * MIB, 2)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn downloads_answer_ranges_and_conditional_requests() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let data = content(1000, 7);
    let (resource, version) = completed_resource(&app, &owner, "Ranges", &data).await;
    let url = format!("/api/resources/{resource}/versions/{version}/content");
    let etag = format!("\"{}\"", sha256_hex(&data));

    let response = app.get(&url, &owner).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["etag"], etag.as_str());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["content-length"], "1000");
    assert!(headers.get("content-encoding").is_none(), "files are not compressed");
    assert_eq!(headers["content-type"], "text/csv");
    assert_eq!(headers["content-disposition"], "attachment; filename=\"Ranges.bin\"; filename*=UTF-8''Ranges.bin");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());

    for (range, expected, content_range) in [
        ("bytes=0-9", &data[0..10], "bytes 0-9/1000"),
        ("bytes=990-", &data[990..], "bytes 990-999/1000"),
        ("bytes=-10", &data[990..], "bytes 990-999/1000"),
        ("bytes=500-100000", &data[500..], "bytes 500-999/1000"),
    ] {
        let response = app.get(&url, &owner).header("range", range).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(response.headers()["content-range"], content_range);
        assert_eq!(response.headers()["content-length"], expected.len().to_string().as_str());
        assert_eq!(response.bytes().await.unwrap().as_ref(), expected, "{range}");
    }
    let response = app.get(&url, &owner).header("range", "bytes=1000-").send().await.unwrap();
    assert_eq!(response.headers()["content-range"], "bytes */1000");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_NOT_SATISFIABLE");

    let response = app.get(&url, &owner).header("if-none-match", etag.as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()["etag"], etag.as_str());
    assert!(response.bytes().await.unwrap().is_empty());
    let response = app.get(&url, &owner).header("if-none-match", "\"stale\"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // If-Range with another ETag: the whole content, not the range.
    let response =
        app.get(&url, &owner).header("range", "bytes=0-9").header("if-range", "\"stale\"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), 1000);
    let response =
        app.get(&url, &owner).header("range", "bytes=0-9").header("if-range", etag.as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);

    // A draft without content has nothing to download.
    let draft = id_of(&create_version(&app, &owner, &resource, 5).await);
    let (status, value) = send(app.get(&format!("/api/resources/{resource}/versions/{draft}/content"), &owner)).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
}

async fn put_part(app: &TestApp, session: &Session, base: &str, number: usize, data: &[u8]) -> (StatusCode, Value) {
    send(
        app.put(&format!("{base}/parts/{number}"), session)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec()),
    )
    .await
}

#[tokio::test]
async fn a_resumable_upload_of_50_mib_checks_every_etag() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let data = content(50 * MIB, 11);
    let resource = id_of(&create_resource(&app, &owner, "Model", "models/model.onnx").await);
    let version = id_of(&create_version(&app, &owner, &resource, data.len()).await);
    let uploads = format!("/api/resources/{resource}/versions/{version}/uploads");

    let (status, session) = send(app.post(&uploads, &owner)).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let part_size = session["partSize"].as_u64().unwrap() as usize;
    assert_eq!(part_size, 8 * MIB);
    assert_eq!(session["partCount"], 7);
    let base = format!("{uploads}/{}", session["uploadId"].as_str().unwrap());

    let mut etags = Vec::new();
    for (i, chunk) in data.chunks(part_size).enumerate() {
        let (status, part) = put_part(&app, &owner, &base, i + 1, chunk).await;
        assert_eq!(status, StatusCode::OK, "{part}");
        assert_eq!(part["etag"], format!("\"{}\"", md5_hex(chunk)));
        etags.push(part["etag"].as_str().unwrap().to_owned());
    }
    // A part past the part size, a bad Content-MD5 and a bad number are refused.
    let (status, value) = put_part(&app, &owner, &base, 8, &content(part_size + 1, 3)).await;
    assert_error(status, &value, StatusCode::PAYLOAD_TOO_LARGE, "PART_TOO_LARGE");
    let response = app
        .put(&format!("{base}/parts/2"), &owner)
        .header("content-md5", STANDARD.encode([0u8; 16]))
        .body(data[part_size..2 * part_size].to_vec())
        .send()
        .await
        .unwrap();
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, _) = put_part(&app, &owner, &base, 0, b"x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, shown) = send(app.get(&base, &owner)).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["parts"].as_array().unwrap().len(), 7, "{shown}");

    let parts = |etags: &[String]| -> Vec<Value> {
        etags.iter().enumerate().map(|(i, e)| json!({"partNumber": i + 1, "etag": e})).collect()
    };
    // A wrong ETag is rejected, naming the part; the session stays usable.
    let mut wrong = etags.clone();
    wrong[2] = format!("\"{}\"", md5_hex(b"something else"));
    let (status, value) =
        send(app.post(&format!("{base}/complete"), &owner).json(&json!({"parts": parts(&wrong)}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "parts[2].etag", "{value}");
    // Missing a part: the sizes do not add up.
    let (status, value) =
        send(app.post(&format!("{base}/complete"), &owner).json(&json!({"parts": parts(&etags[..6])}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    // A checksum that does not match the whole is refused, nothing published.
    let (status, value) = send(
        app.post(&format!("{base}/complete"), &owner)
            .json(&json!({"parts": parts(&etags), "sha256": sha256_hex(b"other")})),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "sha256");

    // Correct: accepted, verified, joined.
    let (status, completed) = send(app.post(&format!("{base}/complete"), &owner).json(&json!({
        "parts": parts(&etags), "sha256": sha256_hex(&data), "md5": md5_hex(&data)
    })))
    .await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    assert_eq!(completed["sha256"], sha256_hex(&data));
    assert_eq!(completed["uploadedBytes"], data.len());
    let response =
        app.get(&format!("/api/resources/{resource}/versions/{version}/content"), &owner).send().await.unwrap();
    assert_eq!(sha256_hex(&response.bytes().await.unwrap()), sha256_hex(&data));
    // The session and its parts are gone; only the content is stored.
    let (status, _) = send(app.get(&base, &owner)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(blob_files(&app).len(), 1, "{:?}", blob_files(&app));
    assert_eq!(pending_blobs(&app).await, 0);
    complete(&app, &owner, &resource, &completed).await;
}

#[tokio::test]
async fn aborted_and_expired_upload_sessions_leave_nothing_behind() {
    let app = TestApp::spawn_with(|config| config.upload_session_expiry_seconds = 2).await;
    let owner = app.owner().await;
    let resource = id_of(&create_resource(&app, &owner, "Parts", "p.bin").await);
    let version = id_of(&create_version(&app, &owner, &resource, 3 * MIB).await);
    let uploads = format!("/api/resources/{resource}/versions/{version}/uploads");
    let (status, session) = send(app.post(&uploads, &owner).json(&json!({"partSize": MIB}))).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["partCount"], 3);
    let base = format!("{uploads}/{}", session["uploadId"].as_str().unwrap());
    for n in 1..=2 {
        assert_eq!(put_part(&app, &owner, &base, n, &content(MIB, n as u64)).await.0, StatusCode::OK);
    }
    // Sending a part again replaces it (one blob per part).
    assert_eq!(put_part(&app, &owner, &base, 2, &content(MIB, 9)).await.0, StatusCode::OK);
    assert_eq!(blob_files(&app).len(), 2, "{:?}", blob_files(&app));
    let (_, usage) = send(app.get(&format!("/api/organizations/{}/usage", owner.organization_id), &owner)).await;
    assert_eq!(usage["storageBytes"]["used"], 3 * MIB, "the session reserves its size");

    let (status, _) = send(app.delete(&base, &owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(app.get(&base, &owner)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = put_part(&app, &owner, &base, 3, &content(MIB, 3)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(blob_files(&app).is_empty(), "{:?}", blob_files(&app));
    let (_, usage) = send(app.get(&format!("/api/organizations/{}/usage", owner.organization_id), &owner)).await;
    assert_eq!(usage["storageBytes"]["used"], 0);

    // An abandoned session expires with its parts.
    let (_, session) = send(app.post(&uploads, &owner).json(&json!({"partSize": MIB}))).await;
    let base = format!("{uploads}/{}", session["uploadId"].as_str().unwrap());
    assert_eq!(put_part(&app, &owner, &base, 1, &content(MIB, 1)).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let state = &app.server.as_ref().unwrap().state;
    let swept = edgeflow::resources::cleanup::sweep_now(state).await.unwrap();
    assert_eq!(swept.expired_uploads, 1);
    assert!(blob_files(&app).is_empty(), "{:?}", blob_files(&app));
    let (status, _) = send(app.get(&base, &owner)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A real server process is killed (SIGKILL) in the middle of an upload: no version is left
/// Completed or pointing at partial content, and once the dead replica is noticed the sweep
/// removes every byte it wrote.
#[tokio::test]
async fn a_server_killed_mid_upload_leaves_no_completed_version_and_no_orphan() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let resource = id_of(&create_resource(&app, &owner, "Crash", "crash.bin").await);
    let version = id_of(&create_version(&app, &owner, &resource, 64 * MIB).await);

    let data_dir = app.server.as_ref().unwrap().state.config.data_dir.clone();
    let mut child = ServerProcess::start(&app.database_url, "127.0.0.1:0".parse().unwrap(), &data_dir, &[]).await;
    let other = child.url();
    let client = reqwest::Client::new();

    // Stream 12 MiB of the declared 64 MiB to the other process, then kill it.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let upload = tokio::spawn(
        client
            .post(format!("{other}/api/resources/{resource}/versions/{version}/content"))
            .bearer_auth(&owner.token)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(tokio_stream_from(receiver)))
            .send(),
    );
    for i in 0..12 {
        sender.send(Ok(content(MIB, i))).await.unwrap();
    }
    let writing = eventually(Duration::from_secs(20), || async {
        pending_blobs(&app).await == 1
            && blob_files(&app).iter().any(|f| f.metadata().is_ok_and(|m| m.len() >= 5 * MIB as u64))
    })
    .await;
    assert!(writing, "the upload did not reach the disk: {:?}", blob_files(&app));
    child.kill().await;
    drop(sender);
    let _ = upload.await;

    let (status, shown) = send(app.get(&format!("/api/resources/{resource}/versions/{version}"), &owner)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((shown["state"].as_str(), shown["sha256"].clone()), (Some("Draft"), Value::Null), "{shown}");
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM resource_versions WHERE state = 'Completed' OR blob_key IS NOT NULL")
            .fetch_one(&mut app.db().await)
            .await
            .unwrap();
    assert_eq!(completed, 0);
    let (status, value) = send(
        app.put(&format!("/api/resources/{resource}/versions/{version}"), &owner).json(&json!({"state": "Completed"})),
    )
    .await;
    assert_error(status, &value, StatusCode::CONFLICT, "NO_CONTENT");
    assert!(!blob_files(&app).is_empty(), "the partial upload is on disk until the sweep");

    let state = app.server.as_ref().unwrap().state.clone();
    let clean = eventually(Duration::from_secs(30), || {
        let state = state.clone();
        let app = &app;
        async move {
            edgeflow::resources::cleanup::sweep_now(&state).await.unwrap();
            pending_blobs(app).await == 0 && blob_files(app).is_empty()
        }
    })
    .await;
    assert!(clean, "orphans left: {:?}", blob_files(&app));
}

/// A receiver as a byte stream for reqwest.
fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test]
async fn resources_and_versions_used_by_flows_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (resource, version) = completed_resource(&app, &owner, "Lookup", b"k,v\n").await;
    let unused = id_of(&create_version(&app, &owner, &resource, 1).await);
    let flow_version = reference(&app, owner.organization_id, &resource, &version, "Temperature", 3).await;

    let (status, value) = send(app.delete(&format!("/api/resources/{resource}/versions/{version}"), &owner)).await;
    assert_error(status, &value, StatusCode::CONFLICT, "VERSION_IN_USE");
    assert!(value["error"].as_str().unwrap().contains("Temperature v3"), "{value}");
    let (status, value) = send(app.delete(&format!("/api/resources/{resource}"), &owner)).await;
    assert_error(status, &value, StatusCode::CONFLICT, "RESOURCE_IN_USE");
    assert!(value["error"].as_str().unwrap().contains("Temperature v3"), "{value}");
    // The version nobody uses may go; the used one still serves downloads.
    let (status, _) = send(app.delete(&format!("/api/resources/{resource}/versions/{unused}"), &owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let references = edgeflow::resources::references::version_users(
        &mut app.db().await,
        owner.organization_id,
        version.parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(references.len(), 1);
    assert_eq!(references[0].flow_version_id, flow_version);

    sqlx::query("DELETE FROM flow_version_resources WHERE flow_version_id = $1")
        .bind(flow_version)
        .execute(&mut app.db().await)
        .await
        .unwrap();
    let (status, _) = send(app.delete(&format!("/api/resources/{resource}"), &owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(blob_files(&app).is_empty(), "{:?}", blob_files(&app));
}

fn basic(node: &crate::wire::Node) -> String {
    format!("Basic {}", STANDARD.encode(format!("{}:{}", node.id, node.key)))
}

async fn deploy(app: &TestApp, session: &Session, node: &crate::wire::Node, resources: &[(&str, &str)]) -> Uuid {
    let flow = DeployFlow {
        flow_definition_id: Uuid::now_v7(),
        flow_id: Uuid::now_v7(),
        version: 1,
        name: "Temperature".into(),
        content: json!({}),
        resources: resources
            .iter()
            .map(|(resource, version)| DeployResource {
                resource_id: resource.parse().unwrap(),
                version_id: version.parse().unwrap(),
                path: Some("x.bin".into()),
                size_in_bytes: 0,
                sha256: String::new(),
                download_url: edgeflow::resources::download_url(
                    &app.base_url,
                    resource.parse().unwrap(),
                    version.parse().unwrap(),
                ),
            })
            .collect(),
    };
    let job = NewJob {
        organization_id: session.organization_id,
        node_id: node.id,
        command: JobCommand::Deploy,
        flow_definition_id: Some(flow.flow_definition_id),
        deployment_id: None,
        flow: Some(serde_json::to_value(&flow).unwrap()),
        created_by: Some(session.user_id),
        ttl_seconds: 3600,
    };
    enqueue(&mut app.db().await, &[job]).await.unwrap()[0].id
}

#[tokio::test]
async fn nodes_download_only_the_versions_deployed_to_them() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let data = content(4096, 21);
    let (resource, v1) = completed_resource(&app, &owner, "Script", &data).await;
    let v2 = id_of(&create_version(&app, &owner, &resource, 3).await);
    assert_eq!(upload(&app, &owner, &resource, &v2, b"new").await.0, StatusCode::OK);
    let line1 = create_node(&app, &owner, "Line1").await;
    let line2 = create_node(&app, &owner, "Line2").await;
    let job = deploy(&app, &owner, &line1, &[(&resource, &v1)]).await;

    let url = |version: &str| {
        edgeflow::resources::download_url(&app.base_url, resource.parse().unwrap(), version.parse().unwrap())
    };
    let fetch = |node: &crate::wire::Node, version: &str| {
        app.client.get(url(version)).header("authorization", basic(node)).send()
    };

    let response = fetch(&line1, &v1).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], format!("\"{}\"", sha256_hex(&data)).as_str());
    assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());
    let response = app
        .client
        .get(url(&v1))
        .header("authorization", basic(&line1))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);

    let (status, value) = body(fetch(&line1, &v2).await.unwrap()).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, value) = body(fetch(&line2, &v1).await.unwrap()).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let wrong = crate::wire::Node { id: line1.id, key: "efn_wrong".into(), name: line1.name.clone() };
    let (status, value) = body(fetch(&wrong, &v1).await.unwrap()).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // A canceled deploy grants nothing any more.
    sqlx::query("UPDATE node_jobs SET state = 'Canceled' WHERE id = $1")
        .bind(job)
        .execute(&mut app.db().await)
        .await
        .unwrap();
    let (status, _) = body(fetch(&line1, &v1).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A node of another organization, even one deployed with these ids, sees nothing.
    let other = app.register("other@example.com", "Other").await;
    let foreign = create_node(&app, &other, "Foreign").await;
    deploy(&app, &other, &foreign, &[(&resource, &v1)]).await;
    let (status, value) = body(fetch(&foreign, &v1).await.unwrap()).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn other_organizations_see_nothing_and_viewers_only_read() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (resource, version) = completed_resource(&app, &owner, "Private", b"secret").await;
    let draft = id_of(&create_version(&app, &owner, &resource, 6).await);
    let (_, session) = send(app.post(&format!("/api/resources/{resource}/versions/{draft}/uploads"), &owner)).await;
    let upload_id = session["uploadId"].as_str().unwrap().to_owned();

    let other = app.register("other@example.com", "Other").await;
    let (status, list) = send(app.get("/api/resources", &other)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([]));
    let r = format!("/api/resources/{resource}");
    let v = format!("{r}/versions/{version}");
    let d = format!("{r}/versions/{draft}");
    let u = format!("{d}/uploads/{upload_id}");
    let checks = [
        app.get(&r, &other),
        app.patch(&r, &other).json(&json!({"name": "mine"})),
        app.delete(&r, &other),
        app.get(&format!("{r}/versions"), &other),
        app.post(&format!("{r}/versions"), &other).json(&json!({"sizeInBytes": 1})),
        app.get(&v, &other),
        app.put(&d, &other).json(&json!({"state": "Draft"})),
        app.delete(&v, &other),
        app.get(&format!("{v}/content"), &other),
        app.post(&format!("{d}/content"), &other).header("content-type", "application/octet-stream").body("secret"),
        app.post(&format!("{d}/uploads"), &other),
        app.get(&u, &other),
        app.put(&format!("{u}/parts/1"), &other).body("x"),
        app.post(&format!("{u}/complete"), &other).json(&json!({"parts": []})),
        app.delete(&u, &other),
        app.get(&format!("/api/organizations/{}/usage", owner.organization_id), &other),
    ];
    for request in checks {
        let built = request.build().unwrap();
        let what = format!("{} {}", built.method(), built.url().path());
        let (status, value) = body(app.client.execute(built).await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {value}");
    }

    // A viewer of the organization reads but cannot change anything.
    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    let (status, _) = send(app.get(&v, &viewer)).await;
    assert_eq!(status, StatusCode::OK);
    let response = app.get(&format!("{v}/content"), &viewer).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"secret");
    let (status, _) = send(app.get(&format!("/api/organizations/{}/usage", owner.organization_id), &viewer)).await;
    assert_eq!(status, StatusCode::OK);
    let writes = [
        app.post("/api/resources", &viewer).json(&json!({"organizationId": owner.organization_id, "name": "v", "type": "Modbus", "category": "/organization/"})),
        app.patch(&r, &viewer).json(&json!({"name": "mine"})),
        app.delete(&r, &viewer),
        app.post(&format!("{r}/versions"), &viewer).json(&json!({"sizeInBytes": 1})),
        app.post(&format!("{d}/content"), &viewer).header("content-type", "application/octet-stream").body("secret"),
        app.delete(&u, &viewer),
    ];
    for request in writes {
        let (status, value) = send(request).await;
        assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    // Nothing changed.
    let response = app.get(&format!("{v}/content"), &owner).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"secret");
}

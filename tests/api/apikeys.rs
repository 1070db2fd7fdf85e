//! `/api/apikeys`: creating (shown once, stored hashed), listing, showing and revoking keys, and
//! the keys themselves authenticating as `X-API-Key`.

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::*;

const API_KEY: &str = "X-API-Key";

fn key_of(created: &Value) -> String {
    created["key"].as_str().unwrap_or_else(|| panic!("no key in {created}")).to_owned()
}

fn id_of(created: &Value) -> Uuid {
    created["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no id in {created}"))
}

/// A request with only an API key as credential.
fn keyed(app: &TestApp, method: reqwest::Method, path: &str, key: &str) -> RequestBuilder {
    app.client.request(method, app.url(path)).header(API_KEY, key)
}

/// A new user made a member of `admin`'s organization with `role` (directly in the database, so
/// these tests do not depend on the members API), signed in there.
async fn member_with_role(app: &TestApp, admin: &Session, email: &str, role: &str) -> Session {
    let own = app.register(email, &format!("{email} personal")).await;
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3)")
        .bind(admin.organization_id)
        .bind(own.user_id)
        .bind(role)
        .execute(&mut app.db().await)
        .await
        .expect("add membership");
    app.switch(&own, admin.organization_id).await
}

async fn introspect_with_key(app: &TestApp, key: &str) -> (StatusCode, Value) {
    body(keyed(app, reqwest::Method::GET, "/api/authentication/token", key).send().await.expect("introspect")).await
}

#[tokio::test]
async fn create_list_get_and_revoke() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;

    let response = app
        .post("/api/apikeys", &owner)
        .json(&json!({"name": "  CI deploys  ", "role": "Editor", "expiresAt": "2099-01-01T00:00:00Z"}))
        .send()
        .await
        .expect("create");
    let (status, created) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = key_of(&created);
    assert!(key.starts_with("edgeflow_"), "{key}");
    assert!(key.len() >= 9 + 43, "a 32-byte secret after the prefix: {key}");
    assert_eq!(created["name"], "CI deploys", "the name is trimmed");
    assert_eq!(created["role"], "Editor");
    assert_eq!(created["prefix"].as_str(), Some(&key[..16]));
    assert_eq!(created["expiresAt"], "2099-01-01T00:00:00.000000Z");
    assert_eq!(created["createdBy"], owner.user_id.to_string());
    let created_at = created["createdAt"].as_str().expect("createdAt");
    assert!(created_at.ends_with('Z') && created_at.len() == 27, "{created_at}");
    let id = id_of(&created);

    let (status, list) = body(app.get("/api/apikeys", &owner).send().await.expect("list")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["offset"], 0);
    assert_eq!(list["limit"], 50);
    assert!(list.get("totalCount").is_none(), "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    let item = &items[0];
    assert_eq!(item["id"], id.to_string());
    assert_eq!(item["name"], "CI deploys");
    assert_eq!(item["prefix"], created["prefix"]);
    assert_eq!(item["role"], "Editor");
    assert_eq!(item["createdAt"], created["createdAt"]);
    assert_eq!(item["expiresAt"], created["expiresAt"]);
    assert_eq!(item["revoked"], false);
    assert_eq!(item["revokedAt"], Value::Null);
    assert_eq!(item["lastUsedAt"], Value::Null);
    assert!(item.get("key").is_none(), "{item}");

    // Using the key shows up as lastUsedAt.
    let (status, _) = introspect_with_key(&app, &key).await;
    assert_eq!(status, StatusCode::OK);

    let (status, one) = body(app.get(&format!("/api/apikeys/{id}"), &owner).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["id"], id.to_string());
    assert_eq!(one["name"], "CI deploys");
    assert_eq!(one["revoked"], false);
    assert!(one["lastUsedAt"].as_str().is_some(), "{one}");
    assert!(one.get("key").is_none(), "{one}");

    let response = app.delete(&format!("/api/apikeys/{id}"), &owner).send().await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, one) = body(app.get(&format!("/api/apikeys/{id}"), &owner).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["revoked"], true);
    assert!(one["revokedAt"].as_str().is_some(), "{one}");
    let first_revoked_at = one["revokedAt"].clone();

    // Revoking again changes nothing and still answers 204.
    let response = app.delete(&format!("/api/apikeys/{id}"), &owner).send().await.expect("revoke again");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, one) = body(app.get(&format!("/api/apikeys/{id}"), &owner).send().await.expect("get")).await;
    assert_eq!(one["revokedAt"], first_revoked_at);

    // One audit event per change, named after the key, in this organization.
    let events = sqlx::query(
        "SELECT action, subject, user_id, organization_id FROM events \
         WHERE action LIKE 'apikey.%' ORDER BY occurred_at",
    )
    .fetch_all(&mut app.db().await)
    .await
    .expect("events");
    let actions: Vec<(String, String)> = events.iter().map(|e| (e.get("action"), e.get("subject"))).collect();
    assert_eq!(
        actions,
        [
            ("apikey.create".to_owned(), "ApiKey: CI deploys".to_owned()),
            ("apikey.revoke".to_owned(), "ApiKey: CI deploys".to_owned()),
        ]
    );
    for event in &events {
        assert_eq!(event.get::<Option<Uuid>, _>("user_id"), Some(owner.user_id));
        assert_eq!(event.get::<Option<Uuid>, _>("organization_id"), Some(owner.organization_id));
    }
}

#[tokio::test]
async fn a_key_authenticates_as_its_organization_and_role() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let created = app.api_key(&owner, "automation", "Admin").await;
    let key = key_of(&created);

    let (status, info) = introspect_with_key(&app, &key).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["kind"], "apiKey");
    assert_eq!(info["role"], "Admin");
    assert_eq!(info["organizationId"], owner.organization_id.to_string());
    assert_eq!(info["apiKeyId"], created["id"]);
    assert_eq!(info["userId"], Value::Null);

    // An Admin key may manage keys itself.
    let (status, list) =
        body(keyed(&app, reqwest::Method::GET, "/api/apikeys", &key).send().await.expect("list")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"][0]["name"], "automation");

    let response = keyed(&app, reqwest::Method::POST, "/api/apikeys", &key)
        .json(&json!({"name": "made by a key", "role": "Operator"}))
        .send()
        .await
        .expect("create with key");
    let (status, child) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{child}");
    assert_eq!(child["createdBy"], Value::Null, "no user created it");
    let (status, info) = introspect_with_key(&app, &key_of(&child)).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["role"], "Operator");

    // The audit event names the key that acted.
    let acting: Option<Uuid> = sqlx::query_scalar(
        "SELECT api_key_id FROM events WHERE action = 'apikey.create' AND subject = 'ApiKey: made by a key'",
    )
    .fetch_one(&mut app.db().await)
    .await
    .expect("event");
    assert_eq!(acting, Some(id_of(&created)));

    // An Admin key cannot make an Owner key.
    let response = keyed(&app, reqwest::Method::POST, "/api/apikeys", &key)
        .json(&json!({"name": "escalation", "role": "Owner"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
}

#[tokio::test]
async fn a_viewer_key_cannot_manage_keys() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let key = key_of(&app.api_key(&owner, "read only", "Viewer").await);

    let response = keyed(&app, reqwest::Method::POST, "/api/apikeys", &key)
        .json(&json!({"name": "more", "role": "Viewer"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");

    let (status, value) =
        body(keyed(&app, reqwest::Method::GET, "/api/apikeys", &key).send().await.expect("list")).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");

    // Nothing was created.
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&mut app.db().await).await.expect("count");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_key_role_may_not_exceed_the_creators() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let admin = member_with_role(&app, &owner, "a@example.com", "Admin").await;
    assert_eq!(admin.role, "Admin");

    let response = app
        .post("/api/apikeys", &admin)
        .json(&json!({"name": "too strong", "role": "Owner"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");

    // Up to their own role is fine.
    let created = app.api_key(&admin, "as strong", "Admin").await;
    assert_eq!(created["role"], "Admin");
    assert_eq!(created["createdBy"], admin.user_id.to_string());

    // Below Admin, members cannot manage keys at all.
    let editor = member_with_role(&app, &owner, "e@example.com", "Editor").await;
    let response = app
        .post("/api/apikeys", &editor)
        .json(&json!({"name": "editor key", "role": "Viewer"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, value) = body(app.get("/api/apikeys", &editor).send().await.expect("list")).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
}

#[tokio::test]
async fn bad_requests_are_400() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;

    let send = |payload: String| {
        app.post("/api/apikeys", &owner).header("content-type", "application/json").body(payload).send()
    };

    for (payload, code) in [
        ("{\"name\": \"x\", ".to_owned(), "BAD_REQUEST"),
        (json!({"name": "x", "role": "Admin", "organizationId": Uuid::now_v7()}).to_string(), "BAD_REQUEST"),
        (json!({"name": "x"}).to_string(), "BAD_REQUEST"),
        (json!({"name": "x", "role": "Superuser"}).to_string(), "BAD_REQUEST"),
        (json!({"name": "x", "role": "Admin", "expiresAt": "tomorrow"}).to_string(), "BAD_REQUEST"),
    ] {
        let (status, value) = body(send(payload.clone()).await.expect("send")).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, code);
        assert!(!value["error"].as_str().unwrap_or_default().is_empty(), "{payload}: {value}");
    }

    // The unknown field is named.
    let (_, value) =
        body(send(json!({"name": "x", "role": "Admin", "secretBackdoor": true}).to_string()).await.expect("send"))
            .await;
    assert!(value["error"].as_str().unwrap_or_default().contains("secretBackdoor"), "{value}");

    for (payload, field) in [
        (json!({"name": "   ", "role": "Admin"}), "name"),
        (json!({"name": "x".repeat(101), "role": "Admin"}), "name"),
        (json!({"name": "x", "role": "Admin", "expiresAt": "2020-01-01T00:00:00Z"}), "expiresAt"),
    ] {
        let (status, value) = body(send(payload.to_string()).await.expect("send")).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert_eq!(value["details"][0]["field"], field, "{payload}: {value}");
    }
    // Exactly 100 characters is allowed.
    app.api_key(&owner, &"x".repeat(100), "Viewer").await;

    let (status, value) = body(
        app.get("/api/apikeys?filters[0].propertyName=keyHash&filters[0].propertyValue=x", &owner)
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "filters[0].propertyName", "{value}");
    let (status, value) = body(app.get("/api/apikeys?orderBy=key", &owner).send().await.expect("list")).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");

    let (status, value) = body(app.get("/api/apikeys/not-a-uuid", &owner).send().await.expect("get")).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");

    // Nothing but the 100-character key was stored.
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&mut app.db().await).await.expect("count");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn missing_bogus_revoked_and_expired_keys_are_401() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;

    let (status, value) = body(app.client.get(app.url("/api/apikeys")).send().await.expect("list")).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let response = app
        .client
        .post(app.url("/api/apikeys"))
        .json(&json!({"name": "anonymous", "role": "Viewer"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    let bogus = format!("edgeflow_{}", "A".repeat(43));
    let response = keyed(&app, reqwest::Method::GET, "/api/apikeys", &bogus).send().await.expect("list");
    assert_eq!(response.headers().get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // Revoked: works, then stops on the very next request.
    let revoked = app.api_key(&owner, "to revoke", "Admin").await;
    let revoked_key = key_of(&revoked);
    let (status, _) = introspect_with_key(&app, &revoked_key).await;
    assert_eq!(status, StatusCode::OK);
    let response = app.delete(&format!("/api/apikeys/{}", id_of(&revoked)), &owner).send().await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, value) = introspect_with_key(&app, &revoked_key).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (status, value) =
        body(keyed(&app, reqwest::Method::GET, "/api/apikeys", &revoked_key).send().await.expect("list")).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // Expired: works until its expiry passes.
    let expiring = app.api_key(&owner, "to expire", "Admin").await;
    let expiring_key = key_of(&expiring);
    let (status, _) = introspect_with_key(&app, &expiring_key).await;
    assert_eq!(status, StatusCode::OK);
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(id_of(&expiring))
        .execute(&mut app.db().await)
        .await
        .expect("expire");
    let (status, value) = introspect_with_key(&app, &expiring_key).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // A key with a short expiry made through the API stops working when it passes.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(4)).to_rfc3339();
    let response = app
        .post("/api/apikeys", &owner)
        .json(&json!({"name": "short lived", "role": "Viewer", "expiresAt": soon}))
        .send()
        .await
        .expect("create");
    let (status, short) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{short}");
    let short_key = key_of(&short);
    let (status, info) = introspect_with_key(&app, &short_key).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["expiresAt"], short["expiresAt"]);
    assert!(
        eventually(std::time::Duration::from_secs(20), || async {
            introspect_with_key(&app, &short_key).await.0 == StatusCode::UNAUTHORIZED
        })
        .await,
        "a key past its expiry still works"
    );
}

#[tokio::test]
async fn another_organizations_keys_are_not_found() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let other = app.register("other@example.com", "Other Org").await;
    let theirs = app.api_key(&other, "their key", "Admin").await;
    let their_id = id_of(&theirs);
    app.api_key(&owner, "our key", "Admin").await;

    let (status, value) = body(app.get(&format!("/api/apikeys/{their_id}"), &owner).send().await.expect("get")).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, value) =
        body(app.delete(&format!("/api/apikeys/{their_id}"), &owner).send().await.expect("delete")).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    // An id that exists nowhere answers the same.
    let (status, value) =
        body(app.get(&format!("/api/apikeys/{}", Uuid::now_v7()), &owner).send().await.expect("get")).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");

    // Their key still works, and each side lists only its own.
    let (status, _) = introspect_with_key(&app, &key_of(&theirs)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, ours) = body(app.get("/api/apikeys?includeCount=true", &owner).send().await.expect("list")).await;
    assert_eq!(ours["totalCount"], 1, "{ours}");
    assert_eq!(ours["items"][0]["name"], "our key");
    let (_, mine) = body(app.get("/api/apikeys?includeCount=true", &other).send().await.expect("list")).await;
    assert_eq!(mine["totalCount"], 1, "{mine}");
    assert_eq!(mine["items"][0]["name"], "their key");

    // Their key, used as a credential, sees its own organization only.
    let (_, via_key) = body(
        keyed(&app, reqwest::Method::GET, &format!("/api/apikeys/{}", id_of(&ours["items"][0])), &key_of(&theirs))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(via_key["code"], "NOT_FOUND", "{via_key}");

    // The same name may be used in two organizations.
    app.api_key(&other, "our key", "Viewer").await;
}

#[tokio::test]
async fn duplicate_names_conflict() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    app.api_key(&owner, "deployer", "Operator").await;
    let response = app
        .post("/api/apikeys", &owner)
        .json(&json!({"name": " deployer ", "role": "Viewer"}))
        .send()
        .await
        .expect("create");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::CONFLICT, "DUPLICATE_NAME");
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&mut app.db().await).await.expect("count");
    assert_eq!(count, 1);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE action = 'apikey.create'")
        .fetch_one(&mut app.db().await)
        .await
        .expect("count");
    assert_eq!(events, 1, "the failed create left no audit event");
}

#[tokio::test]
async fn the_key_is_shown_once_and_stored_only_as_a_hash() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let created = app.api_key(&owner, "secret", "Viewer").await;
    let key = key_of(&created);
    let id = id_of(&created);
    let secret_part = &key["edgeflow_".len()..];

    let (_, list) = body(app.get("/api/apikeys", &owner).send().await.expect("list")).await;
    let (_, one) = body(app.get(&format!("/api/apikeys/{id}"), &owner).send().await.expect("get")).await;
    for answer in [&list, &one] {
        let text = answer.to_string();
        assert!(!text.contains(&key) && !text.contains(secret_part), "the key leaked: {text}");
        assert!(!text.contains("keyHash") && !text.contains("key_hash"), "{text}");
    }

    let mut db = app.db().await;
    let row =
        sqlx::query("SELECT key_hash, prefix, row_to_json(api_keys)::text AS everything FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_one(&mut db)
            .await
            .expect("row");
    let stored: Vec<u8> = row.get("key_hash");
    assert_eq!(stored, edgeflow::auth::tokens::secret_hash(&key), "the stored hash is the key's SHA-256");
    assert_eq!(row.get::<String, _>("prefix"), &key[..16]);
    let everything: String = row.get("everything");
    assert!(!everything.contains(secret_part), "the key is stored in clear: {everything}");
    let events: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(events)::text FROM events").fetch_all(&mut db).await.expect("events");
    assert!(events.iter().all(|e| !e.contains(secret_part)), "the key is in an event: {events:?}");
}

#[tokio::test]
async fn lists_filter_order_page_and_count() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    for (name, role) in
        [("CI builds", "Viewer"), ("ci deploys", "Operator"), ("Grafana", "Viewer"), ("backup", "Admin")]
    {
        app.api_key(&owner, name, role).await;
    }
    let revoked = app.api_key(&owner, "old CI", "Editor").await;
    let response = app.delete(&format!("/api/apikeys/{}", id_of(&revoked)), &owner).send().await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let list = |query: &'static str| {
        let request = app.get(&format!("/api/apikeys?{query}"), &owner);
        async move {
            let (status, value) = body(request.send().await.expect("list")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {value}");
            value
        }
    };

    // Default order: newest first.
    let all = list("").await;
    assert_eq!(names(&all), ["old CI", "backup", "Grafana", "ci deploys", "CI builds"]);

    let ci = list("filters[0].propertyName=name&filters[0].propertyValue=ci&filters[0].filterType=contains&orderBy=name&orderDirection=asc&includeCount=true").await;
    assert_eq!(names(&ci), ["CI builds", "ci deploys", "old CI"]);
    assert_eq!(ci["totalCount"], 3);

    let live_ci = list("filters[0].propertyName=name&filters[0].propertyValue=ci&filters[0].filterType=contains&filters[1].propertyName=revoked&filters[1].propertyValue=false&orderBy=name&orderDirection=asc").await;
    assert_eq!(names(&live_ci), ["CI builds", "ci deploys"]);

    let revoked_only = list("filters[0].propertyName=REVOKED&filters[0].propertyValue=true").await;
    assert_eq!(names(&revoked_only), ["old CI"]);
    assert_eq!(revoked_only["items"][0]["revoked"], true);

    let viewers = list("filters[0].propertyName=role&filters[0].propertyValue=Viewer,Admin&filters[0].filterType=in&orderBy=createdAt&orderDirection=asc").await;
    assert_eq!(names(&viewers), ["CI builds", "Grafana", "backup"]);

    let prefix = all["items"][0]["prefix"].as_str().expect("prefix").to_owned();
    // The prefix is URL-safe base64 after `edgeflow_`: nothing to escape.
    let by_prefix = app
        .get(&format!("/api/apikeys?filters[0].propertyName=prefix&filters[0].propertyValue={prefix}"), &owner)
        .send()
        .await
        .expect("list");
    let (_, by_prefix) = body(by_prefix).await;
    assert_eq!(names(&by_prefix), ["old CI"]);

    let page = list("orderBy=name&orderDirection=asc&limit=2&offset=1&includeCount=true").await;
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 1);
    assert_eq!(page["totalCount"], 5);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));

    let none = list("filters[0].propertyName=lastUsedAt&filters[0].propertyValue=2000-01-01T00:00:00Z&filters[0].filterType=greaterThan&includeCount=true").await;
    assert_eq!(none["totalCount"], 0);
    assert_eq!(names(&none), Vec::<String>::new());
}

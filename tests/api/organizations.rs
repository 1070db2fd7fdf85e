//! `/api/organizations`: organizations, members and roles, identity providers.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

fn org_path(session: &Session) -> String {
    format!("/api/organizations/{}", session.organization_id)
}

fn members_path(session: &Session) -> String {
    format!("/api/organizations/{}/members", session.organization_id)
}

fn member_path(session: &Session, user_id: Uuid) -> String {
    format!("/api/organizations/{}/members/{user_id}", session.organization_id)
}

fn idps_path(session: &Session) -> String {
    format!("/api/organizations/{}/identityproviders", session.organization_id)
}

fn idp_path(session: &Session, id: &str) -> String {
    format!("/api/organizations/{}/identityproviders/{id}", session.organization_id)
}

/// The subjects of the audit events with this action in this organization (`None`: server-wide).
async fn audit_subjects(app: &TestApp, organization_id: Option<Uuid>, action: &str) -> Vec<String> {
    let mut db = app.db().await;
    sqlx::query_scalar(
        "SELECT subject FROM events WHERE organization_id IS NOT DISTINCT FROM $1 AND action = $2 \
         AND source = 'ControlCenter' ORDER BY occurred_at",
    )
    .bind(organization_id)
    .bind(action)
    .fetch_all(&mut db)
    .await
    .expect("events")
}

async fn owner_count(app: &TestApp, organization_id: Uuid) -> i64 {
    let mut db = app.db().await;
    sqlx::query_scalar("SELECT count(*) FROM memberships WHERE organization_id = $1 AND role = 'Owner'")
        .bind(organization_id)
        .fetch_one(&mut db)
        .await
        .expect("owners")
}

async fn assert_unauthenticated(app: &TestApp, method: reqwest::Method, path: &str) {
    let (status, value) = send(app.client.request(method, app.url(path)).json(&json!({}))).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

fn names(page: &Value) -> Vec<&str> {
    page["items"].as_array().expect("items").iter().map(|i| i["name"].as_str().expect("name")).collect()
}

// ----- Organizations -----

#[tokio::test]
async fn list_shows_every_membership_with_its_role() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let alice = app.register("alice@example.com", "Alice Org").await;
    let (status, _) =
        send(app.post(&members_path(&owner), &owner).json(&json!({"email": "alice@example.com", "role": "Viewer"})))
            .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, page) = send(app.get("/api/organizations?includeCount=true", &alice)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["totalCount"], 2, "{page}");
    assert_eq!((page["offset"].as_i64(), page["limit"].as_i64()), (Some(0), Some(50)));
    assert_eq!(names(&page), ["Alice Org", "Default"]);
    let items = page["items"].as_array().expect("items");
    assert_eq!(items[0]["role"], "Owner");
    assert_eq!(items[0]["id"], alice.organization_id.to_string());
    assert_eq!(items[1]["role"], "Viewer");
    assert_eq!(items[1]["id"], owner.organization_id.to_string());
    assert_eq!(items[1]["memberCount"], 2);
    assert!(items[1]["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{page}");

    let (_, page) =
        send(app.get("/api/organizations?filters[0].propertyName=role&filters[0].propertyValue=Viewer", &alice)).await;
    assert_eq!(names(&page), ["Default"]);
    let (_, page) = send(app.get("/api/organizations?orderBy=name&orderDirection=desc&limit=1", &alice)).await;
    assert_eq!(names(&page), ["Default"]);
    assert_eq!(page["limit"], 1);
    assert!(page.get("totalCount").is_none(), "{page}");

    // The owner of Default does not see Alice's organization.
    let (_, page) = send(app.get("/api/organizations", &owner)).await;
    assert_eq!(names(&page), ["Default"]);

    let (status, value) = send(app.get("/api/organizations?orderBy=secret", &alice)).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "orderBy");
    assert_unauthenticated(&app, reqwest::Method::GET, "/api/organizations").await;
}

#[tokio::test]
async fn creating_an_organization_makes_the_caller_its_owner() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (status, created) =
        send(app.post("/api/organizations", &owner).json(&json!({"name": "  Plant 2 ", "description": "Second site"})))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "Plant 2");
    assert_eq!(created["description"], "Second site");
    assert_eq!(created["role"], "Owner");
    assert_eq!(created["memberCount"], 1);
    assert_eq!(created["identityProviderCount"], 0);
    let id: Uuid = created["id"].as_str().and_then(|s| s.parse().ok()).expect("id");

    // The token keeps acting in Default; the new organization is listed but not reachable by id.
    let (_, me) = send(app.get("/api/users/me", &owner)).await;
    assert_eq!(me["organization"]["id"], owner.organization_id.to_string());
    assert!(
        me["organizations"]
            .as_array()
            .expect("organizations")
            .iter()
            .any(|o| o["id"] == id.to_string() && o["role"] == "Owner"),
        "{me}"
    );
    let (status, value) = send(app.get(&format!("/api/organizations/{id}"), &owner)).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let switched = app.switch(&owner, id).await;
    assert_eq!(switched.role, "Owner");
    let (status, fetched) = send(app.get(&format!("/api/organizations/{id}"), &switched)).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert_eq!(fetched["name"], "Plant 2");

    assert_eq!(audit_subjects(&app, Some(id), "organization.create").await, ["Organization: Plant 2"]);

    for bad in
        [json!({"name": ""}), json!({"name": "x".repeat(201)}), json!({"name": "ok", "description": "d".repeat(2001)})]
    {
        let (status, value) = send(app.post("/api/organizations", &switched).json(&bad)).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(value["details"][0]["field"].is_string(), "{value}");
    }
    for bad in [json!({"name": "x", "color": "red"}), json!({"description": "no name"}), json!({"name": 5})] {
        let (status, value) = send(app.post("/api/organizations", &switched).json(&bad)).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    assert_unauthenticated(&app, reqwest::Method::POST, "/api/organizations").await;
}

#[tokio::test]
async fn only_the_active_organization_is_visible_by_id() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let bob = app.register("bob@example.com", "Bob Org").await;

    let (status, org) = send(app.get(&org_path(&owner), &owner)).await;
    assert_eq!(status, StatusCode::OK, "{org}");
    assert_eq!(
        (org["name"].as_str(), org["role"].as_str(), org["memberCount"].as_i64()),
        (Some("Default"), Some("Owner"), Some(1))
    );
    assert!(org["updatedAt"].as_str().is_some_and(|t| t.ends_with('Z')));

    for path in [org_path(&bob), format!("/api/organizations/{}", Uuid::now_v7())] {
        let (status, value) = send(app.get(&path, &owner)).await;
        assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let (status, value) = send(app.get("/api/organizations/not-a-uuid", &owner)).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");

    // Bob joins Default as a Viewer; his session in Bob Org still cannot read Default by id.
    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    let (status, value) = send(app.get(&org_path(&owner), &bob)).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, org) = send(app.get(&org_path(&owner), &viewer)).await;
    assert_eq!(status, StatusCode::OK, "{org}");
    assert_eq!((org["role"].as_str(), org["memberCount"].as_i64()), (Some("Viewer"), Some(2)));
    assert_unauthenticated(&app, reqwest::Method::GET, &org_path(&owner)).await;
}

#[tokio::test]
async fn patching_an_organization_needs_admin_and_merges() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let path = org_path(&owner);

    let (status, org) = send(app.patch(&path, &owner).json(&json!({"description": "Main site"}))).await;
    assert_eq!(status, StatusCode::OK, "{org}");
    assert_eq!((org["name"].as_str(), org["description"].as_str()), (Some("Default"), Some("Main site")));
    let (_, org) = send(app.patch(&path, &owner).json(&json!({"name": "Renamed"}))).await;
    assert_eq!((org["name"].as_str(), org["description"].as_str()), (Some("Renamed"), Some("Main site")));
    let (_, org) = send(app.patch(&path, &owner).json(&json!({"description": null}))).await;
    assert_eq!(org["description"], Value::Null, "{org}");
    assert_eq!(org["name"], "Renamed");

    let (status, value) = send(app.patch(&path, &owner).json(&json!({"name": null}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "name");
    let (status, value) = send(app.patch(&path, &owner).json(&json!({"name": "  "}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, value) = send(app.patch(&path, &owner).json(&json!({"nmae": "typo"}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");

    let editor = app.member(&owner, "editor@example.com", "Editor").await;
    let (status, value) = send(app.patch(&path, &editor).json(&json!({"name": "Editor was here"}))).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let admin = app.member(&owner, "admin@example.com", "Admin").await;
    let (status, org) = send(app.patch(&path, &admin).json(&json!({"name": "By admin"}))).await;
    assert_eq!(status, StatusCode::OK, "{org}");
    assert_eq!(org["role"], "Admin");

    let stranger = app.register("stranger@example.com", "Elsewhere").await;
    let (status, value) = send(app.patch(&path, &stranger).json(&json!({"name": "Hijacked"}))).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (_, org) = send(app.get(&path, &owner)).await;
    assert_eq!(org["name"], "By admin");

    let subjects = audit_subjects(&app, Some(owner.organization_id), "organization.update").await;
    assert_eq!(
        subjects,
        ["Organization: Default", "Organization: Renamed", "Organization: Renamed", "Organization: By admin"]
    );
    assert_unauthenticated(&app, reqwest::Method::PATCH, &path).await;
}

#[tokio::test]
async fn deleting_an_organization_ends_every_session_in_it() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (_, created) = send(app.post("/api/organizations", &owner).json(&json!({"name": "Doomed"}))).await;
    let doomed_id: Uuid = created["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    let doomed_owner = app.switch(&owner, doomed_id).await;
    let admin = app.member(&doomed_owner, "admin@example.com", "Admin").await;
    let path = org_path(&doomed_owner);

    let (status, value) = send(app.delete(&path, &admin)).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let stranger = app.register("stranger@example.com", "Elsewhere").await;
    let (status, value) = send(app.delete(&path, &stranger)).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_unauthenticated(&app, reqwest::Method::DELETE, &path).await;

    let (status, value) = send(app.delete(&path, &doomed_owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{value}");
    for session in [&doomed_owner, &admin] {
        let (status, value) = send(app.get("/api/organizations", session)).await;
        assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    // The owner still belongs to Default and can sign in there.
    let again = app.login(OWNER_EMAIL, OWNER_PASSWORD).await;
    assert_eq!(again.organization_id, owner.organization_id);
    let (_, page) = send(app.get("/api/organizations", &again)).await;
    assert_eq!(names(&page), ["Default"]);

    let mut db = app.db().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations WHERE id = $1")
        .bind(doomed_id)
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(left, 0);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE organization_id = $1")
        .bind(doomed_id)
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(sessions, 0);
    assert_eq!(audit_subjects(&app, None, "organization.delete").await, ["Organization: Doomed"]);
}

#[tokio::test]
async fn api_keys_see_only_their_own_organization() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (status, _) = send(app.post("/api/organizations", &owner).json(&json!({"name": "Another"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, created) =
        send(app.post("/api/apikeys", &owner).json(&json!({"name": "script", "role": "Admin"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("key").to_owned();
    let keyed =
        |method: reqwest::Method, path: &str| app.client.request(method, app.url(path)).header("X-API-Key", &key);

    let (status, page) = send(keyed(reqwest::Method::GET, "/api/organizations?includeCount=true")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(names(&page), ["Default"]);
    assert_eq!((page["items"][0]["role"].as_str(), page["totalCount"].as_i64()), (Some("Admin"), Some(1)));
    let (status, org) = send(keyed(reqwest::Method::GET, &org_path(&owner))).await;
    assert_eq!((status, org["role"].as_str()), (StatusCode::OK, Some("Admin")), "{org}");
    let (status, value) =
        send(keyed(reqwest::Method::POST, "/api/organizations").json(&json!({"name": "By key"}))).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");

    // An Admin key manages members; the audit event names the key.
    app.register("kim@example.com", "Kim Org").await;
    let (status, member) = send(
        keyed(reqwest::Method::POST, &members_path(&owner))
            .json(&json!({"email": "kim@example.com", "role": "Editor"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let mut db = app.db().await;
    let key_ids: Vec<Option<Uuid>> = sqlx::query_scalar(
        "SELECT api_key_id FROM events WHERE action = 'organization.member_add' AND organization_id = $1",
    )
    .bind(owner.organization_id)
    .fetch_all(&mut db)
    .await
    .expect("events");
    assert_eq!(key_ids, [created["id"].as_str().and_then(|s| s.parse().ok())]);
}

// ----- Members -----

#[tokio::test]
async fn members_can_be_listed_and_added() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let carol = app.register("carol@example.com", "Carol Org").await;

    let (status, member) =
        send(app.post(&members_path(&owner), &owner).json(&json!({"email": "CAROL@example.com", "role": "Operator"})))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    assert_eq!(member["userId"], carol.user_id.to_string());
    assert_eq!(
        (member["email"].as_str(), member["name"].as_str(), member["role"].as_str()),
        (Some("carol@example.com"), Some("carol@example.com"), Some("Operator"))
    );
    assert!(member["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));

    let (status, value) =
        send(app.post(&members_path(&owner), &owner).json(&json!({"email": "carol@example.com", "role": "Viewer"})))
            .await;
    assert_error(status, &value, StatusCode::CONFLICT, "ALREADY_MEMBER");
    let (status, value) =
        send(app.post(&members_path(&owner), &owner).json(&json!({"email": "nobody@example.com", "role": "Viewer"})))
            .await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, value) =
        send(app.post(&members_path(&owner), &owner).json(&json!({"email": "not an email", "role": "Viewer"}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "email");
    for bad in [
        json!({"email": "carol@example.com", "role": "King"}),
        json!({"email": "carol@example.com", "role": "Viewer", "admin": true}),
        json!({"email": "carol@example.com"}),
    ] {
        let (status, value) = send(app.post(&members_path(&owner), &owner).json(&bad)).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }

    let (status, page) = send(app.get(&format!("{}?includeCount=true", members_path(&owner)), &owner)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["totalCount"], 2);
    let emails: Vec<&str> =
        page["items"].as_array().expect("items").iter().map(|m| m["email"].as_str().expect("email")).collect();
    assert_eq!(emails, ["carol@example.com", OWNER_EMAIL]);
    assert_eq!(page["items"][1]["role"], "Owner");
    assert_eq!(page["items"][1]["userId"], owner.user_id.to_string());
    let (_, page) = send(app.get(
        &format!(
            "{}?filters[0].propertyName=email&filters[0].propertyValue=CAROL&filters[0].filterType=contains",
            members_path(&owner)
        ),
        &owner,
    ))
    .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (status, value) = send(app.get(
        &format!("{}?filters[0].propertyName=passwordHash&filters[0].propertyValue=x", members_path(&owner)),
        &owner,
    ))
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");

    // A Viewer may look but not add; an Admin cannot grant Owner.
    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    let (status, _) = send(app.get(&members_path(&owner), &viewer)).await;
    assert_eq!(status, StatusCode::OK);
    app.register("dave@example.com", "Dave Org").await;
    let (status, value) =
        send(app.post(&members_path(&owner), &viewer).json(&json!({"email": "dave@example.com", "role": "Viewer"})))
            .await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let admin = app.member(&owner, "admin@example.com", "Admin").await;
    let (status, value) =
        send(app.post(&members_path(&owner), &admin).json(&json!({"email": "dave@example.com", "role": "Owner"})))
            .await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, value) =
        send(app.post(&members_path(&owner), &admin).json(&json!({"email": "dave@example.com", "role": "Admin"})))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");

    // Another organization's admin cannot reach this member list.
    let stranger = app.register("stranger@example.com", "Elsewhere").await;
    let (status, value) = send(app.get(&members_path(&owner), &stranger)).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, value) = send(
        app.post(&members_path(&owner), &stranger).json(&json!({"email": "stranger@example.com", "role": "Owner"})),
    )
    .await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_unauthenticated(&app, reqwest::Method::GET, &members_path(&owner)).await;
    assert_unauthenticated(&app, reqwest::Method::POST, &members_path(&owner)).await;

    let subjects = audit_subjects(&app, Some(owner.organization_id), "organization.member_add").await;
    assert_eq!(subjects.first().map(String::as_str), Some("User: carol@example.com"));
    assert!(subjects.contains(&"User: dave@example.com".to_owned()), "{subjects:?}");
}

#[tokio::test]
async fn a_role_change_takes_effect_at_once() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let erin = app.member(&owner, "erin@example.com", "Viewer").await;
    let (status, value) = send(app.patch(&org_path(&owner), &erin).json(&json!({"description": "by erin"}))).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");

    let (status, member) =
        send(app.patch(&member_path(&owner, erin.user_id), &owner).json(&json!({"role": "Admin"}))).await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!((member["role"].as_str(), member["email"].as_str()), (Some("Admin"), Some("erin@example.com")));

    // The old token (which says Viewer) is refused at once; a new one carries Admin.
    let (status, value) = send(app.get(&org_path(&owner), &erin)).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (status, value) = send(
        app.client.post(app.url("/api/authentication/refresh")).json(&json!({"refreshToken": erin.refresh_token})),
    )
    .await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let erin = app.signed_in("erin@example.com", PASSWORD, owner.organization_id).await;
    assert_eq!(erin.role, "Admin");
    let (status, org) = send(app.patch(&org_path(&owner), &erin).json(&json!({"description": "by erin"}))).await;
    assert_eq!(status, StatusCode::OK, "{org}");

    let (_, page) = send(app.get(&members_path(&owner), &owner)).await;
    let roles: Vec<(&str, &str)> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| (m["email"].as_str().unwrap_or(""), m["role"].as_str().unwrap_or("")))
        .collect();
    assert!(roles.contains(&("erin@example.com", "Admin")), "{roles:?}");
    assert_eq!(
        audit_subjects(&app, Some(owner.organization_id), "organization.member_role_change").await,
        ["User: erin@example.com"]
    );
}

#[tokio::test]
async fn role_changes_stay_within_the_callers_own_role() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let admin = app.member(&owner, "admin@example.com", "Admin").await;
    let target = app.member(&owner, "target@example.com", "Viewer").await;
    let target_path = member_path(&owner, target.user_id);

    let (status, value) = send(app.patch(&target_path, &admin).json(&json!({"role": "Owner"}))).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, value) =
        send(app.patch(&member_path(&owner, owner.user_id), &admin).json(&json!({"role": "Viewer"}))).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, member) = send(app.patch(&target_path, &admin).json(&json!({"role": "Editor"}))).await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["role"], "Editor");

    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    let (status, value) = send(app.patch(&target_path, &viewer).json(&json!({"role": "Viewer"}))).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");

    for bad in [json!({"role": null})] {
        let (status, value) = send(app.patch(&target_path, &owner).json(&bad)).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
    for bad in [json!({"role": "Boss"}), json!({"role": "Viewer", "email": "x@example.com"})] {
        let (status, value) = send(app.patch(&target_path, &owner).json(&bad)).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let (status, value) =
        send(app.patch(&member_path(&owner, Uuid::now_v7()), &owner).json(&json!({"role": "Viewer"}))).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");

    // From another organization the member is out of reach, by either organization id.
    let stranger = app.register("stranger@example.com", "Elsewhere").await;
    let (status, value) = send(app.patch(&target_path, &stranger).json(&json!({"role": "Viewer"}))).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, value) =
        send(app.patch(&member_path(&stranger, target.user_id), &stranger).json(&json!({"role": "Viewer"}))).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_unauthenticated(&app, reqwest::Method::PATCH, &target_path).await;

    let (_, page) = send(app.get(
        &format!("{}?filters[0].propertyName=email&filters[0].propertyValue=target@example.com", members_path(&owner)),
        &owner,
    ))
    .await;
    assert_eq!(page["items"][0]["role"], "Editor", "{page}");
}

#[tokio::test]
async fn the_last_owner_can_be_neither_demoted_nor_removed() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let own_path = member_path(&owner, owner.user_id);

    let (status, value) = send(app.patch(&own_path, &owner).json(&json!({"role": "Admin"}))).await;
    assert_error(status, &value, StatusCode::CONFLICT, "LAST_OWNER");
    let (status, value) = send(app.delete(&own_path, &owner)).await;
    assert_error(status, &value, StatusCode::CONFLICT, "LAST_OWNER");
    assert_eq!(owner_count(&app, owner.organization_id).await, 1);

    // With a second Owner, the first may step down; then the second is the last one.
    let second = app.member(&owner, "second@example.com", "Owner").await;
    let (status, member) = send(app.patch(&own_path, &owner).json(&json!({"role": "Admin"}))).await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["role"], "Admin");
    let (status, value) = send(app.delete(&member_path(&owner, second.user_id), &second)).await;
    assert_error(status, &value, StatusCode::CONFLICT, "LAST_OWNER");
    let (status, value) =
        send(app.patch(&member_path(&owner, second.user_id), &second).json(&json!({"role": "Viewer"}))).await;
    assert_error(status, &value, StatusCode::CONFLICT, "LAST_OWNER");
    assert_eq!(owner_count(&app, owner.organization_id).await, 1);
}

#[tokio::test]
async fn concurrent_demotions_always_leave_an_owner() {
    let app = TestApp::spawn().await;
    let first = app.owner().await;
    let org = first.organization_id;
    let second = app.member(&first, "second@example.com", "Owner").await;
    let (mut a, mut b) = (first, second);
    for round in 0..4 {
        let (ra, rb) = tokio::join!(
            send(
                app.patch(&format!("/api/organizations/{org}/members/{}", b.user_id), &a)
                    .json(&json!({"role": "Admin"}))
            ),
            send(
                app.patch(&format!("/api/organizations/{org}/members/{}", a.user_id), &b)
                    .json(&json!({"role": "Admin"}))
            ),
        );
        let statuses = [ra.0, rb.0];
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "round {round}: {ra:?} {rb:?}");
        for (status, value) in [&ra, &rb] {
            if *status != StatusCode::OK {
                // The loser either saw the last Owner, or had been demoted (and signed out) first.
                assert!(value["code"] == "LAST_OWNER" || value["code"] == "UNAUTHORIZED", "round {round}: {value}");
            }
        }
        assert_eq!(owner_count(&app, org).await, 1, "round {round}");
        // The remaining Owner promotes the other back, who signs in again.
        let (still, demoted) = if ra.0 == StatusCode::OK { (a, b) } else { (b, a) };
        let (status, value) = send(
            app.patch(&format!("/api/organizations/{org}/members/{}", demoted.user_id), &still)
                .json(&json!({"role": "Owner"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{value}");
        let demoted = app.signed_in(&demoted.email, &demoted.password, org).await;
        assert_eq!(demoted.role, "Owner");
        (a, b) = (still, demoted);
    }
}

#[tokio::test]
async fn removed_members_are_signed_out_at_once() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let frank = app.member(&owner, "frank@example.com", "Editor").await;
    let (status, _) = send(app.get(&org_path(&owner), &frank)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, value) = send(app.delete(&member_path(&owner, frank.user_id), &owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{value}");
    let (status, value) = send(app.get(&org_path(&owner), &frank)).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (_, page) = send(app.get(&members_path(&owner), &owner)).await;
    assert!(!page.to_string().contains("frank@example.com"), "{page}");
    let (status, value) = send(app.delete(&member_path(&owner, frank.user_id), &owner)).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    // The user still exists and signs in to their own organization.
    let frank_again = app.login("frank@example.com", PASSWORD).await;
    assert_ne!(frank_again.organization_id, owner.organization_id);

    // Anyone may leave; only Admins remove others, and not those above them.
    let gina = app.member(&owner, "gina@example.com", "Viewer").await;
    let (status, value) = send(app.delete(&member_path(&owner, gina.user_id), &gina)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{value}");
    let (status, value) = send(app.get(&members_path(&owner), &gina)).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let hank = app.member(&owner, "hank@example.com", "Editor").await;
    let ivan = app.member(&owner, "ivan@example.com", "Viewer").await;
    let (status, value) = send(app.delete(&member_path(&owner, ivan.user_id), &hank)).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let admin = app.member(&owner, "admin@example.com", "Admin").await;
    let (status, value) = send(app.delete(&member_path(&owner, owner.user_id), &admin)).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, _) = send(app.delete(&member_path(&owner, ivan.user_id), &admin)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let stranger = app.register("stranger@example.com", "Elsewhere").await;
    let (status, value) = send(app.delete(&member_path(&owner, hank.user_id), &stranger)).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, value) = send(app.delete(&member_path(&stranger, hank.user_id), &stranger)).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, _) = send(app.get(&org_path(&owner), &hank)).await;
    assert_eq!(status, StatusCode::OK, "hank is untouched");
    assert_unauthenticated(&app, reqwest::Method::DELETE, &member_path(&owner, hank.user_id)).await;

    let subjects = audit_subjects(&app, Some(owner.organization_id), "organization.member_remove").await;
    assert_eq!(subjects, ["User: frank@example.com", "User: gina@example.com", "User: ivan@example.com"]);
}

// ----- Identity providers -----

const ISSUER: &str = "https://login.microsoftonline.com/tenant/v2.0";

async fn create_idp(app: &TestApp, admin: &Session, body: Value) -> Value {
    let (status, idp) = send(app.post(&idps_path(admin), admin).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{idp}");
    idp
}

#[tokio::test]
async fn identity_providers_can_be_created_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let idp = create_idp(&app, &owner, json!({"name": "Entra", "issuerUrl": ISSUER, "clientId": "app-1"})).await;
    assert_eq!(
        (idp["name"].as_str(), idp["issuerUrl"].as_str(), idp["clientId"].as_str()),
        (Some("Entra"), Some(ISSUER), Some("app-1"))
    );
    assert_eq!(idp["scopes"], json!(["openid", "email", "profile"]));
    assert_eq!((idp["enabled"].as_bool(), idp["hasClientSecret"].as_bool()), (Some(true), Some(false)));
    assert!(idp["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')) && idp["updatedAt"].is_string());
    let id = idp["id"].as_str().expect("id").to_owned();

    let (status, fetched) = send(app.get(&idp_path(&owner, &id), &owner)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, idp);
    create_idp(&app, &owner, json!({"name": "Google", "issuerUrl": "https://accounts.google.com", "enabled": false, "scopes": ["openid", "email"]})).await;
    let (status, page) = send(app.get(&format!("{}?includeCount=true", idps_path(&owner)), &owner)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["totalCount"], 2);
    assert_eq!(names(&page), ["Entra", "Google"]);
    let (_, page) =
        send(app.get(
            &format!("{}?filters[0].propertyName=enabled&filters[0].propertyValue=false", idps_path(&owner)),
            &owner,
        ))
        .await;
    assert_eq!(names(&page), ["Google"]);
    let (_, org) = send(app.get(&org_path(&owner), &owner)).await;
    assert_eq!(org["identityProviderCount"], 2);

    let (status, patched) = send(
        app.patch(&idp_path(&owner, &id), &owner)
            .json(&json!({"enabled": false, "scopes": ["openid", "groups"], "clientId": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!((patched["enabled"].as_bool(), patched["clientId"].clone()), (Some(false), Value::Null));
    assert_eq!((patched["scopes"].clone(), patched["name"].as_str()), (json!(["openid", "groups"]), Some("Entra")));
    let (_, patched) =
        send(app.patch(&idp_path(&owner, &id), &owner).json(&json!({"scopes": null, "name": "Entra ID"}))).await;
    assert_eq!(patched["scopes"], json!(["openid", "email", "profile"]));
    assert_eq!(patched["name"], "Entra ID");
    let (status, value) = send(app.patch(&idp_path(&owner, &id), &owner).json(&json!({"issuerUrl": null}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");

    let (status, _) = send(app.delete(&idp_path(&owner, &id), &owner)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for request in [app.get(&idp_path(&owner, &id), &owner), app.delete(&idp_path(&owner, &id), &owner)] {
        let (status, value) = send(request).await;
        assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    }

    let org_id = Some(owner.organization_id);
    assert_eq!(
        audit_subjects(&app, org_id, "identity_provider.create").await,
        ["IdentityProvider: Entra", "IdentityProvider: Google"]
    );
    assert_eq!(
        audit_subjects(&app, org_id, "identity_provider.update").await,
        ["IdentityProvider: Entra", "IdentityProvider: Entra ID"]
    );
    assert_eq!(audit_subjects(&app, org_id, "identity_provider.delete").await, ["IdentityProvider: Entra ID"]);
}

#[tokio::test]
async fn identity_provider_secrets_are_stored_encrypted_and_never_returned() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    const SECRET: &str = "s3cr3t-client-value-XYZ";
    let idp = create_idp(&app, &owner, json!({"name": "Entra", "issuerUrl": ISSUER})).await;
    let id = idp["id"].as_str().expect("id").to_owned();
    let secrets_path = format!("{}/secrets", idp_path(&owner, &id));

    let response = app
        .put(&secrets_path, &owner)
        .json(&json!({"clientId": "343f96ea-client", "clientSecret": SECRET}))
        .send()
        .await
        .expect("put");
    let status = response.status();
    let text = response.text().await.expect("text");
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(!text.contains(SECRET) && !text.contains("clientSecret"), "{text}");
    let updated: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        (updated["hasClientSecret"].as_bool(), updated["clientId"].as_str()),
        (Some(true), Some("343f96ea-client"))
    );

    for path in [idp_path(&owner, &id), idps_path(&owner)] {
        let text = app.get(&path, &owner).send().await.expect("get").text().await.expect("text");
        assert!(!text.contains(SECRET) && text.contains("\"hasClientSecret\":true"), "{text}");
    }

    let mut db = app.db().await;
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT client_secret_encrypted FROM identity_providers WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .expect("stored secret");
    assert!(stored.len() > SECRET.len());
    assert!(!stored.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the secret is stored in plaintext");
    let secrets = &app.server.as_ref().expect("server").state.secrets;
    assert_eq!(secrets.open(&stored).expect("decrypts"), SECRET.as_bytes());
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE message LIKE '%' || $1 || '%' OR data::text LIKE '%' || $1 || '%'",
    )
    .bind(SECRET)
    .fetch_one(&mut db)
    .await
    .expect("events");
    assert_eq!(leaked, 0);
    assert_eq!(
        audit_subjects(&app, Some(owner.organization_id), "identity_provider.secrets_update").await,
        ["IdentityProvider: Entra"]
    );

    // A secret can also come with the provider; it is sealed the same way.
    let response = app.post(&idps_path(&owner), &owner).json(&json!({"name": "Okta", "issuerUrl": "https://acme.okta.com", "clientId": "c", "clientSecret": "okta-secret-987"})).send().await.expect("post");
    assert_eq!(response.status(), StatusCode::CREATED);
    let text = response.text().await.expect("text");
    assert!(!text.contains("okta-secret-987") && text.contains("\"hasClientSecret\":true"), "{text}");

    for bad in [json!({"clientId": "c", "clientSecret": ""}), json!({"clientId": "", "clientSecret": "x"})] {
        let (status, value) = send(app.put(&secrets_path, &owner).json(&bad)).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
    for bad in [json!({"clientSecret": "x"}), json!({"clientId": "c", "clientSecret": "x", "tenant": "t"})] {
        let (status, value) = send(app.put(&secrets_path, &owner).json(&bad)).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let (status, value) = send(
        app.put(&format!("{}/secrets", idp_path(&owner, &Uuid::now_v7().to_string())), &owner)
            .json(&json!({"clientId": "c", "clientSecret": "x"})),
    )
    .await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn identity_providers_are_validated_and_kept_to_admins_of_the_organization() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let idp = create_idp(&app, &owner, json!({"name": "Entra", "issuerUrl": ISSUER})).await;
    let id = idp["id"].as_str().expect("id").to_owned();

    for (bad, field) in [
        (json!({"name": "X", "issuerUrl": "http://idp.example.com"}), "issuerUrl"),
        (json!({"name": "X", "issuerUrl": "https://idp.example.com/?tenant=1"}), "issuerUrl"),
        (json!({"name": "X", "issuerUrl": "not a url"}), "issuerUrl"),
        (json!({"name": "X", "issuerUrl": ISSUER, "scopes": ["email"]}), "scopes"),
        (json!({"name": "", "issuerUrl": ISSUER}), "name"),
    ] {
        let (status, value) = send(app.post(&idps_path(&owner), &owner).json(&bad)).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert_eq!(value["details"][0]["field"], field, "{value}");
    }
    for bad in [json!({"name": "X", "issuerUrl": ISSUER, "clientSecretPlain": "x"}), json!({"issuerUrl": ISSUER})] {
        let (status, value) = send(app.post(&idps_path(&owner), &owner).json(&bad)).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let (status, value) =
        send(app.patch(&idp_path(&owner, &id), &owner).json(&json!({"issuerUrl": "http://plain.example.com"}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, value) = send(app.patch(&idp_path(&owner, &id), &owner).json(&json!({"clientSecret": "x"}))).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");

    let (status, value) = send(
        app.post(&idps_path(&owner), &owner).json(&json!({"name": "Entra", "issuerUrl": "https://other.example.com"})),
    )
    .await;
    assert_error(status, &value, StatusCode::CONFLICT, "NAME_TAKEN");
    create_idp(&app, &owner, json!({"name": "Google", "issuerUrl": "https://accounts.google.com"})).await;
    let (status, value) = send(app.patch(&idp_path(&owner, &id), &owner).json(&json!({"name": "Google"}))).await;
    assert_error(status, &value, StatusCode::CONFLICT, "NAME_TAKEN");

    // Below Admin: 403 everywhere.
    let editor = app.member(&owner, "editor@example.com", "Editor").await;
    let secrets = format!("{}/secrets", idp_path(&owner, &id));
    for request in [
        app.get(&idps_path(&owner), &editor),
        app.post(&idps_path(&owner), &editor).json(&json!({"name": "E", "issuerUrl": ISSUER})),
        app.get(&idp_path(&owner, &id), &editor),
        app.patch(&idp_path(&owner, &id), &editor).json(&json!({"enabled": false})),
        app.delete(&idp_path(&owner, &id), &editor),
        app.put(&secrets, &editor).json(&json!({"clientId": "c", "clientSecret": "x"})),
    ] {
        let (status, value) = send(request).await;
        assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
    }

    // Another organization's Owner: 404 through either organization id.
    let stranger = app.register("stranger@example.com", "Elsewhere").await;
    let (status, page) = send(app.get(&idps_path(&stranger), &stranger)).await;
    assert_eq!((status, page["items"].clone()), (StatusCode::OK, json!([])), "{page}");
    let (status, value) = send(app.get(&idps_path(&owner), &stranger)).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    for org in [&owner, &stranger] {
        for request in [
            app.get(&idp_path(org, &id), &stranger),
            app.patch(&idp_path(org, &id), &stranger).json(&json!({"name": "Hijacked"})),
            app.put(&format!("{}/secrets", idp_path(org, &id)), &stranger)
                .json(&json!({"clientId": "c", "clientSecret": "x"})),
            app.delete(&idp_path(org, &id), &stranger),
        ] {
            let (status, value) = send(request).await;
            assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
        }
    }
    let (_, still) = send(app.get(&idp_path(&owner, &id), &owner)).await;
    assert_eq!((still["name"].as_str(), still["hasClientSecret"].as_bool()), (Some("Entra"), Some(false)));

    for (method, path) in [
        (reqwest::Method::GET, idps_path(&owner)),
        (reqwest::Method::POST, idps_path(&owner)),
        (reqwest::Method::GET, idp_path(&owner, &id)),
        (reqwest::Method::PATCH, idp_path(&owner, &id)),
        (reqwest::Method::DELETE, idp_path(&owner, &id)),
        (reqwest::Method::PUT, secrets.clone()),
    ] {
        assert_unauthenticated(&app, method, &path).await;
    }
}

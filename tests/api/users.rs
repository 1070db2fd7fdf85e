//! `/api/users/me`: profile, password, organization switch.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn me_lists_every_organization_with_its_role() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    let (status, me) = body(app.get("/api/users/me", &viewer).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "viewer@example.com");
    assert_eq!(me["role"], "Viewer");
    assert_eq!(me["organization"]["id"], owner.organization_id.to_string());
    let mut roles: Vec<(String, String)> = me["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap().to_owned(), o["role"].as_str().unwrap().to_owned()))
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [("Default".to_owned(), "Viewer".to_owned()), ("viewer@example.com personal".to_owned(), "Owner".to_owned())]
    );
}

#[tokio::test]
async fn patch_me_merges_and_validates() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    app.register("taken@example.com", "Taken").await;

    let (status, me) =
        body(app.patch("/api/users/me", &owner).json(&json!({"name": "Ada"})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!((me["name"].as_str(), me["email"].as_str()), (Some("Ada"), Some(OWNER_EMAIL)));

    let (status, value) =
        body(app.patch("/api/users/me", &owner).json(&json!({"email": "TAKEN@example.com"})).send().await.unwrap())
            .await;
    assert_error(status, &value, StatusCode::CONFLICT, "EMAIL_TAKEN");
    let (status, value) =
        body(app.patch("/api/users/me", &owner).json(&json!({"name": null})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "name");
    let (status, value) =
        body(app.patch("/api/users/me", &owner).json(&json!({"email": "nope"})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, value) =
        body(app.patch("/api/users/me", &owner).json(&json!({"passwordHash": "x"})).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(value["error"].as_str().unwrap().contains("passwordHash"), "{value}");

    let (status, me) =
        body(app.patch("/api/users/me", &owner).json(&json!({"email": "ada@example.com"})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "Ada");
    app.login("ada@example.com", OWNER_PASSWORD).await;
    let (status, _) = body(app.client.get(app.url("/api/users/me")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn password_change_signs_out_other_sessions_only() {
    let app = TestApp::spawn().await;
    let current = app.owner().await;
    let other = app.owner().await;
    let change = |current_password: &str, new_password: &str| {
        app.post("/api/users/me/password", &current)
            .json(&json!({"currentPassword": current_password, "newPassword": new_password}))
            .send()
    };
    let (status, value) = body(change("wrong-password", "a-new-password-1").await.unwrap()).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "WRONG_PASSWORD");
    let (status, value) = body(change(OWNER_PASSWORD, "short").await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "newPassword");
    assert_eq!(app.get("/api/users/me", &other).send().await.unwrap().status(), StatusCode::OK);

    let response = change(OWNER_PASSWORD, "a-new-password-1").await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get("/api/users/me", &current).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.get("/api/users/me", &other).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.try_login(OWNER_EMAIL, OWNER_PASSWORD).await.0, StatusCode::UNAUTHORIZED);
    app.login(OWNER_EMAIL, "a-new-password-1").await;
}

#[tokio::test]
async fn switching_organization_answers_new_tokens_and_ends_the_old_session() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let editor = app.member(&owner, "editor@example.com", "Editor").await;
    assert_eq!(editor.organization_id, owner.organization_id);
    assert_eq!(editor.role, "Editor");
    let (_, me) = body(app.get("/api/users/me", &editor).send().await.unwrap()).await;
    let personal: uuid::Uuid = me["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["role"] == "Owner")
        .and_then(|o| o["id"].as_str())
        .unwrap()
        .parse()
        .unwrap();

    let back = app.switch(&editor, personal).await;
    assert_eq!((back.organization_id, back.role.as_str()), (personal, "Owner"));
    assert_eq!(app.get("/api/users/me", &editor).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // An organization the user does not belong to: 404, as if it did not exist.
    let stranger = app.register("stranger@example.com", "Stranger Co").await;
    let (status, value) = body(
        app.put("/api/users/me/organization", &back)
            .json(&json!({"organizationId": stranger.organization_id}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, value) = body(
        app.put("/api/users/me/organization", &back).json(&json!({"organizationId": "nope"})).send().await.unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

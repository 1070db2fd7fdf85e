//! `/api/authentication`: login, refresh, logout, introspection, revocation, limits.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn crosser_login_then_users_me_gives_the_organization_id() {
    let app = TestApp::spawn().await;
    // The seed's calls, verbatim.
    let response = app
        .client
        .post(app.url("/api/authentication/login"))
        .json(&json!({"email": OWNER_EMAIL, "password": OWNER_PASSWORD}))
        .send()
        .await
        .unwrap();
    let (status, tokens) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["tokenType"], "Bearer");
    let token = tokens["token"].as_str().unwrap();
    let response = app
        .client
        .get(app.url("/api/users/me"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let (status, me) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["organization"]["id"], tokens["organizationId"]);
    assert_eq!(me["organization"]["name"], "Default");
    assert_eq!(me["organizations"][0]["role"], "Owner");
    let expires = tokens["expiresAt"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.split('.').nth(1).unwrap().len() == 7, "{expires}");
}

#[tokio::test]
async fn login_with_http_basic() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url("/api/authentication/login"))
        .basic_auth(OWNER_EMAIL, Some(OWNER_PASSWORD))
        .send()
        .await
        .unwrap();
    let (status, tokens) = body(response).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(tokens["token"].as_str().is_some());

    let response = app
        .client
        .post(app.url("/api/authentication/login"))
        .basic_auth(OWNER_EMAIL, Some("wrong-password"))
        .send()
        .await
        .unwrap();
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_answer_and_are_audited() {
    let app = TestApp::spawn().await;
    let (s1, wrong_password) = app.try_login(OWNER_EMAIL, "not-the-password").await;
    let (s2, unknown_email) = app.try_login("nobody@example.com", "not-the-password").await;
    assert_error(s1, &wrong_password, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_error(s2, &unknown_email, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(wrong_password["error"], unknown_email["error"]);

    let mut db = app.db().await;
    let rows: Vec<(String, String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT subject, level, data FROM events WHERE action = 'auth.login_failed' ORDER BY occurred_at",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, format!("User: {OWNER_EMAIL}"));
    assert_eq!(rows[0].1, "Warning");
    let everything: String =
        sqlx::query_scalar("SELECT string_agg(events::text, ' ') FROM events").fetch_one(&mut db).await.unwrap();
    assert!(!everything.contains("not-the-password"), "a password reached the audit log");
}

#[tokio::test]
async fn malformed_login_bodies_are_400() {
    let app = TestApp::spawn().await;
    for (content, why) in [
        ("{\"email\": \"a@b.c\"", "truncated JSON"),
        ("{\"email\": \"a@b.c\", \"password\": \"x\", \"remember\": true}", "unknown field"),
        ("{\"email\": \"a@b.c\"}", "missing password"),
        ("", "no body and no Basic credentials"),
    ] {
        let response = app
            .client
            .post(app.url("/api/authentication/login"))
            .header("content-type", "application/json")
            .body(content)
            .send()
            .await
            .unwrap();
        let (status, value) = body(response).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert!(!value["error"].as_str().unwrap().is_empty(), "{why}");
    }
}

#[tokio::test]
async fn bad_tokens_are_401_with_www_authenticate() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let parts: Vec<&str> = owner.token.split('.').collect();

    // Tampered: the payload claims another role, the signature no longer matches.
    let mut payload: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["role"] = json!("Owner");
    payload["org"] = json!(uuid::Uuid::now_v7());
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(payload.to_string()), parts[2]);
    // Wrong algorithm: the same claims with alg "none" and no signature.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let hs512_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
    let alg_hs512 = format!("{hs512_header}.{}.{}", parts[1], parts[2]);

    for (header, why) in [
        (None, "missing"),
        (Some("Bearer".to_owned()), "empty bearer"),
        (Some("Bearer not-a-jwt".to_owned()), "garbage"),
        (Some(format!("Bearer {tampered}")), "tampered"),
        (Some(format!("Bearer {alg_none}")), "alg none"),
        (Some(format!("Bearer {alg_hs512}")), "alg HS512"),
        (Some(format!("Token {}", owner.token)), "wrong scheme"),
    ] {
        let mut request = app.client.get(app.url("/api/users/me"));
        if let Some(header) = header {
            request = request.header("Authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"), "{why}");
        let (status, value) = body(response).await;
        assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn expired_access_tokens_are_401() {
    let app = TestApp::spawn_with(|config| config.access_token_ttl_seconds = -60).await;
    let owner = app.owner().await;
    let (status, value) = body(app.get("/api/users/me", &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert!(value["error"].as_str().unwrap().contains("expired"), "{value}");
}

async fn refresh(app: &TestApp, refresh_token: &str) -> (StatusCode, serde_json::Value) {
    let response = app
        .client
        .post(app.url("/api/authentication/refresh"))
        .json(&json!({"refreshToken": refresh_token}))
        .send()
        .await
        .unwrap();
    body(response).await
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;

    let (status, first) = refresh(&app, &owner.refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["sessionId"], owner.session_id.to_string());
    let second_refresh = first["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, owner.refresh_token);
    let new_access = first["token"].as_str().unwrap().to_owned();
    let response = app.client.get(app.url("/api/users/me")).bearer_auth(&new_access).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The first refresh token again: theft is assumed, the session dies.
    let (status, value) = refresh(&app, &owner.refresh_token).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // Its successor no longer works, nor do the access tokens of the session.
    let (status, value) = refresh(&app, &second_refresh).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    for token in [&owner.token, &new_access] {
        let response = app.client.get(app.url("/api/users/me")).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Another session of the same user is untouched.
    let other = app.owner().await;
    assert_eq!(app.get("/api/users/me", &other).send().await.unwrap().status(), StatusCode::OK);

    let (status, value) = refresh(&app, "efr_unknown").await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let response =
        app.client.post(app.url("/api/authentication/refresh")).json(&json!({"token": "x"})).send().await.unwrap();
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn logout_ends_the_session_at_once_and_on_another_replica() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    let owner = app.owner().await;
    let keep = app.owner().await;
    assert_eq!(replica.get("/api/users/me", &owner).send().await.unwrap().status(), StatusCode::OK);

    let response = app.post("/api/authentication/logout", &owner).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Same replica: at once.
    assert_eq!(app.get("/api/users/me", &owner).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // The other replica learns through NOTIFY, within moments.
    let refused = eventually(Duration::from_secs(3), || async {
        replica.get("/api/users/me", &owner).send().await.unwrap().status() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "the second replica still accepts a logged-out token");
    let (status, _) = refresh(&app, &owner.refresh_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The user's other session is unaffected, on both replicas.
    assert_eq!(app.get("/api/users/me", &keep).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(replica.get("/api/users/me", &keep).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_replica_started_after_a_revocation_refuses_the_token_too() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    app.post("/api/authentication/logout", &owner).send().await.unwrap();
    let late = app.replica().await;
    assert_eq!(late.get("/api/users/me", &owner).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn deleting_tokens_revokes_every_session_of_the_user() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    let first = app.owner().await;
    let second = app.owner().await;
    let response = app.delete("/api/authentication/tokens", &first).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for session in [&first, &second] {
        assert_eq!(app.get("/api/users/me", session).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let refused = eventually(Duration::from_secs(3), || async {
            replica.get("/api/users/me", session).send().await.unwrap().status() == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(refused);
        let (status, _) = refresh(&app, &session.refresh_token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Signing in again works.
    app.owner().await;
}

#[tokio::test]
async fn the_oldest_session_is_revoked_past_the_limit() {
    let app = TestApp::spawn_with(|config| config.max_sessions_per_user = 3).await;
    let oldest = app.owner().await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(app.owner().await);
    }
    assert_eq!(app.get("/api/users/me", &oldest).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    for session in &others {
        assert_eq!(app.get("/api/users/me", session).send().await.unwrap().status(), StatusCode::OK);
    }
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE revoked_at IS NULL")
        .fetch_one(&mut app.db().await)
        .await
        .unwrap();
    assert_eq!(live, 3);
}

#[tokio::test]
async fn introspection_describes_the_session() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let (status, info) = body(app.get("/api/authentication/token", &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["active"], true);
    assert_eq!(info["kind"], "user");
    assert_eq!(info["sessionId"], owner.session_id.to_string());
    assert_eq!(info["userId"], owner.user_id.to_string());
    assert_eq!(info["organizationId"], owner.organization_id.to_string());
    assert_eq!(info["role"], "Owner");
    assert!(info["issuedAt"].as_str().unwrap() < info["expiresAt"].as_str().unwrap());
    assert!(info["sessionExpiresAt"].as_str().is_some());
    let (status, value) = body(app.client.get(app.url("/api/authentication/token")).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn register_creates_an_owner_or_refuses_clearly() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice@example.com", "Alice Inc").await;
    assert_eq!(alice.role, "Owner");
    let (_, me) = body(app.get("/api/users/me", &alice).send().await.unwrap()).await;
    assert_eq!(me["organization"]["name"], "Alice Inc");

    let register = |value: serde_json::Value| {
        let request = app.client.post(app.url("/api/authentication/register")).json(&value);
        async move { body(request.send().await.unwrap()).await }
    };
    let (status, value) =
        register(json!({"email": "ALICE@example.com", "password": PASSWORD, "name": "A", "organizationName": "X"}))
            .await;
    assert_error(status, &value, StatusCode::CONFLICT, "EMAIL_TAKEN");
    let (status, value) =
        register(json!({"email": "not-an-email", "password": "short", "name": "", "organizationName": "X"})).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let fields: Vec<&str> = value["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "name"]);
    let (status, value) =
        register(json!({"email": "b@example.com", "password": "short", "name": "B", "organizationName": "X"})).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(value["details"][0]["field"], "password");
    let (status, value) = register(
        json!({"email": "b@example.com", "password": PASSWORD, "name": "B", "organizationName": "X", "role": "Owner"}),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn register_is_refused_when_signup_is_off() {
    let app = TestApp::spawn_with(|config| config.allow_signup = false).await;
    let response = app
        .client
        .post(app.url("/api/authentication/register"))
        .json(&json!({"email": "a@example.com", "password": PASSWORD, "name": "A", "organizationName": "X"}))
        .send()
        .await
        .unwrap();
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "FORBIDDEN");
}

#[tokio::test]
async fn login_is_rate_limited_per_account_with_retry_after() {
    let app = TestApp::spawn_with(|config| config.rate_limit_login_per_account = 2).await;
    for _ in 0..2 {
        let (status, _) = app.try_login(OWNER_EMAIL, "wrong-password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let response = app
        .client
        .post(app.url("/api/authentication/login"))
        .json(&json!({"email": OWNER_EMAIL, "password": OWNER_PASSWORD}))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    // Another account from the same address is not held back by this one's limit.
    app.register("other@example.com", "Other").await;
    let (status, _) = app.try_login("other@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn login_is_rate_limited_per_ip() {
    let app = TestApp::spawn_with(|config| config.rate_limit_login_per_ip = 3).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(app.try_login(&format!("user{i}@example.com"), "whatever-password").await.0);
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn api_requests_are_rate_limited_per_user() {
    let app = TestApp::spawn_with(|config| config.rate_limit_api_per_second = 2).await;
    let owner = app.owner().await;
    let mut limited = None;
    for _ in 0..10 {
        let response = app.get("/api/users/me", &owner).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("10 requests at once were never limited at 2/s");
    assert!(response.headers().contains_key("retry-after"));
    let (status, value) = body(response).await;
    assert_error(status, &value, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
}

#[tokio::test]
async fn tokens_of_a_deleted_organization_stay_refused_on_a_replica_started_later() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice@example.com", "Alice Inc").await;
    let response = app.delete(&format!("/api/organizations/{}", alice.organization_id), &alice).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let late = app.replica().await;
    assert_eq!(late.get("/api/users/me", &alice).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

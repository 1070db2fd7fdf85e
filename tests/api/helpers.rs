//! Test helpers: a real server on 127.0.0.1:0 against a fresh PostgreSQL database per test,
//! and a reqwest client.

#![allow(dead_code)]

use std::time::Duration;

use edgeflow::{app::RunningServer, config::Config};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

pub const OWNER_EMAIL: &str = "owner@example.com";
pub const OWNER_PASSWORD: &str = "owner-password-123";
pub const PASSWORD: &str = "member-password-123";

/// The server that holds the test databases; override with EDGEFLOW_TEST_DATABASE_URL.
fn admin_database_url() -> String {
    std::env::var("EDGEFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_database(url: &str, name: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{name}")
}

/// Makes an empty database named after the time, and drops test databases older than an hour
/// (left behind by failed runs).
pub async fn fresh_database() -> String {
    let admin = admin_database_url();
    let mut conn = PgConnection::connect(&admin).await.expect("PostgreSQL for tests is not reachable");
    let now = chrono::Utc::now().timestamp();
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'ef_test_%' \
         AND split_part(datname, '_', 3)::bigint < $1",
    )
    .bind(now - 3600)
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    for name in old {
        let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).await;
    }
    let name = format!("ef_test_{now}_{}", Uuid::new_v4().simple());
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await.expect("create test database");
    with_database(&admin, &name)
}

pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::for_database(database_url);
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.admin_email = Some(OWNER_EMAIL.into());
    config.admin_password = Some(OWNER_PASSWORD.into());
    config.allow_signup = true;
    config.db_max_connections = 3;
    config.rate_limit_login_per_ip = 0;
    config.rate_limit_login_per_account = 0;
    config.rate_limit_api_per_second = 0;
    // Fast liveness so offline detection is testable in seconds.
    config.heartbeat_seconds = 1;
    config.offline_after_seconds = 3;
    config.node_call_timeout_seconds = 3;
    config.data_dir = std::env::temp_dir().join(format!("edgeflow-test-{}", Uuid::new_v4().simple()));
    config
}

pub struct TestApp {
    pub server: Option<RunningServer>,
    pub base_url: String,
    pub database_url: String,
    pub client: Client,
}

/// A signed-in user acting in one organization.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub refresh_token: String,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub role: String,
    pub email: String,
    pub password: String,
}

impl Session {
    fn from_tokens(body: &Value, email: &str, password: &str) -> Self {
        let id = |field: &str| {
            body[field].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{field} in {body}"))
        };
        Self {
            token: body["token"].as_str().expect("token").to_owned(),
            refresh_token: body["refreshToken"].as_str().expect("refreshToken").to_owned(),
            session_id: id("sessionId"),
            user_id: id("userId"),
            organization_id: id("organizationId"),
            role: body["role"].as_str().expect("role").to_owned(),
            email: email.to_owned(),
            password: password.to_owned(),
        }
    }
}

pub async fn body(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, value)
}

/// Sends the request; answers the status and the body (JSON, or the text as a string).
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    body(request.send().await.expect("request")).await
}

/// Asserts the one error shape with this status and code.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    if let Err(problem) = check_error(status, body, expected, code) {
        panic!("{problem}");
    }
}

/// The one error shape with this status and code, or what differs from it.
pub fn check_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) -> Result<(), String> {
    let shaped = body["code"] == code
        && body["status"] == expected.as_u16()
        && body["error"].as_str().is_some_and(|e| !e.is_empty())
        && body["requestId"].as_str().is_some();
    if status == expected && shaped { Ok(()) } else { Err(format!("expected {expected} {code}, got {status} {body}")) }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        let database_url = fresh_database().await;
        let mut config = test_config(&database_url);
        configure(&mut config);
        Self::start(config).await
    }

    pub async fn start(config: Config) -> Self {
        // Server logs in test output when asked: RUST_LOG=edgeflow=debug cargo test ...
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let scheme = if config.tls_enabled() { "https" } else { "http" };
        let database_url = config.database_url.clone();
        let server = edgeflow::app::start(config).await.expect("server starts");
        let base_url = format!("{scheme}://{}", server.addr);
        let client = Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Self { server: Some(server), base_url, database_url, client }
    }

    /// A second replica on the same database.
    pub async fn replica(&self) -> Self {
        Self::start(test_config(&self.database_url)).await
    }

    /// Kills this replica as a crash would (no goodbyes), then starts a new one on the same port.
    pub async fn crash_and_restart(&mut self) {
        let server = self.server.take().expect("running");
        let addr = server.addr;
        server.abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut config = test_config(&self.database_url);
        config.listen = addr;
        let restarted = Self::start(config).await;
        self.server = restarted.server;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn get(&self, path: &str, session: &Session) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(&session.token)
    }

    pub fn post(&self, path: &str, session: &Session) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(&session.token)
    }

    pub fn put(&self, path: &str, session: &Session) -> reqwest::RequestBuilder {
        self.client.put(self.url(path)).bearer_auth(&session.token)
    }

    pub fn patch(&self, path: &str, session: &Session) -> reqwest::RequestBuilder {
        self.client.patch(self.url(path)).bearer_auth(&session.token)
    }

    pub fn delete(&self, path: &str, session: &Session) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path)).bearer_auth(&session.token)
    }

    pub async fn try_login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/api/authentication/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login request");
        body(response).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let (status, value) = self.try_login(email, password).await;
        assert_eq!(status, StatusCode::OK, "login failed: {value}");
        Session::from_tokens(&value, email, password)
    }

    /// The first Owner, of the organization "Default".
    pub async fn owner(&self) -> Session {
        self.login(OWNER_EMAIL, OWNER_PASSWORD).await
    }

    /// A new user who owns a new organization of their own.
    pub async fn register(&self, email: &str, organization_name: &str) -> Session {
        let response = self
            .client
            .post(self.url("/api/authentication/register"))
            .json(&json!({"email": email, "password": PASSWORD, "name": email, "organizationName": organization_name}))
            .send()
            .await
            .expect("register request");
        let (status, value) = body(response).await;
        assert_eq!(status, StatusCode::CREATED, "register failed: {value}");
        Session::from_tokens(&value, email, PASSWORD)
    }

    /// A new user added to `admin`'s organization with `role`, signed in there.
    pub async fn member(&self, admin: &Session, email: &str, role: &str) -> Session {
        let own = self.register(email, &format!("{email} personal")).await;
        let response = self
            .post(&format!("/api/organizations/{}/members", admin.organization_id), admin)
            .json(&json!({"email": email, "role": role}))
            .send()
            .await
            .expect("add member");
        let (status, value) = body(response).await;
        assert_eq!(status, StatusCode::CREATED, "add member failed: {value}");
        self.switch(&own, admin.organization_id).await
    }

    /// The same user's new session in another of their organizations.
    pub async fn switch(&self, session: &Session, organization_id: Uuid) -> Session {
        let response = self
            .put("/api/users/me/organization", session)
            .json(&json!({"organizationId": organization_id}))
            .send()
            .await
            .expect("switch");
        let (status, value) = body(response).await;
        assert_eq!(status, StatusCode::OK, "switch failed: {value}");
        Session::from_tokens(&value, &session.email, &session.password)
    }

    /// Creates an API key as `session`, asserting 201; answers the creation body (`id`, `key`, ...).
    pub async fn api_key(&self, session: &Session, name: &str, role: &str) -> Value {
        let (status, value) = send(self.post("/api/apikeys", session).json(&json!({"name": name, "role": role}))).await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        value
    }

    /// A fresh session of the user acting in `organization_id`.
    pub async fn signed_in(&self, email: &str, password: &str, organization_id: Uuid) -> Session {
        let session = self.login(email, password).await;
        if session.organization_id == organization_id { session } else { self.switch(&session, organization_id).await }
    }

    /// A direct connection to this test's database, to check what was stored.
    pub async fn db(&self) -> PgConnection {
        PgConnection::connect(&self.database_url).await.expect("test database")
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(5)).await.expect("shutdown");
        }
    }
}

/// Polls `check` until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

//! `/api/authentication`: register, login (JSON or HTTP Basic), refresh, logout, introspection and
//! revoking every session.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    context::{AuthContext, Principal},
    model::{LoginRequest, RefreshRequest, RegisterRequest, TokenInfo, TokenResponse},
    password::check_password_rules,
    roles::Role,
    session,
    store::{self, RevokeScope},
};
use crate::{
    error::{ApiError, ApiResult, ErrorBody},
    events::{model::Level, model::Source, store::NewEvent},
    http::{client_ip::ClientIp, extract::Json, validate::Checks},
    organizations::store as org_store,
    state::AppState,
    users::store as user_store,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(introspect))
        .routes(routes!(revoke_all))
}

/// Register a user and a new organization (when sign-up is allowed)
///
/// Creates the user, an organization of which they are the Owner, and a session.
#[utoipa::path(post, path = "/api/authentication/register", tag = "authentication",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered and signed in", body = TokenResponse),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 403, description = "Sign-up is disabled on this server", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    ),
    security(()))]
async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    if !state.config.allow_signup {
        return Err(ApiError::Forbidden("sign-up is disabled; ask an administrator to add you".into()));
    }
    state.rate_limits.check_login(ip, &body.email)?;
    let mut checks = Checks::new();
    checks.email("email", &body.email);
    checks.text("name", &body.name, crate::users::model::NAME_MAX);
    checks.text("organizationName", &body.organization_name, crate::organizations::model::NAME_MAX);
    checks.finish()?;
    check_password_rules("password", &body.password)?;
    let hash = state.passwords.hash(body.password).await?;

    let mut tx = state.db.begin().await?;
    let email = body.email.trim();
    let user_id = user_store::insert(&mut tx, email, body.name.trim(), &hash).await?;
    let organization = org_store::insert(&mut tx, body.organization_name.trim(), None).await?;
    org_store::add_member(&mut tx, organization.id, user_id, Role::Owner).await?;
    let ip_text = ip.map(|ip| ip.to_string());
    let started = session::start(
        &mut tx,
        &state,
        user_id,
        organization.id,
        Role::Owner,
        ip_text.clone(),
        session::user_agent(&headers),
    )
    .await?;
    let mut event = NewEvent::new(
        Some(organization.id),
        Level::Info,
        Source::ControlCenter,
        "user.register",
        format!("User: {email}"),
        format!("{email} registered and created organization {}", organization.name),
    );
    event.user_id = Some(user_id);
    event.client_ip = ip_text;
    event.record(&mut tx).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(started.tokens)))
}

/// The email and password of a login: from HTTP Basic when present, else the JSON body.
fn login_credentials(headers: &HeaderMap, body: &Bytes) -> ApiResult<LoginRequest> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or_default();
        if let Some((scheme, encoded)) = text.split_once(' ')
            && scheme.eq_ignore_ascii_case("basic")
        {
            let decoded = STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::BadRequest("malformed HTTP Basic credentials".into()))?;
            let (email, password) = decoded
                .split_once(':')
                .ok_or_else(|| ApiError::BadRequest("HTTP Basic credentials need email:password".into()))?;
            return Ok(LoginRequest { email: email.to_owned(), password: password.to_owned() });
        }
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "send {\"email\", \"password\"} as JSON or use HTTP Basic authentication".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|err| ApiError::BadRequest(format!("invalid request body: {err}")))
}

/// Sign in with email and password
///
/// Send `{"email", "password"}` as JSON, or the same as HTTP Basic credentials. An unknown email and
/// a wrong password get the same answer in the same time.
#[utoipa::path(post, path = "/api/authentication/login", tag = "authentication",
    request_body(content = LoginRequest, description = "Omit when using HTTP Basic"),
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 400, description = "Malformed body or credentials", body = ErrorBody),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 403, description = "The user belongs to no organization", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address or for this account", body = ErrorBody),
    ),
    security((), ("basic" = [])))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<TokenResponse>> {
    let credentials = login_credentials(&headers, &body)?;
    state.rate_limits.check_login(ip, &credentials.email)?;
    let email = credentials.email.trim().to_owned();
    let user = user_store::find_by_email(&mut *state.db.acquire().await?, &email).await?;
    let valid = state.passwords.verify(credentials.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let ip_text = ip.map(|ip| ip.to_string());
    let user = match user {
        Some(user) if valid => user,
        _ => {
            let mut event = NewEvent::new(
                None,
                Level::Warning,
                Source::ControlCenter,
                "auth.login_failed",
                format!("User: {email}"),
                format!("failed sign-in for {email}"),
            );
            event.user_id = user.map(|u| u.id);
            event.client_ip = ip_text;
            event.record(&mut *state.db.acquire().await?).await?;
            return Err(ApiError::Unauthorized("wrong email or password".into()));
        }
    };
    let mut tx = state.db.begin().await?;
    let memberships = user_store::memberships(&mut tx, user.id).await?;
    let Some(membership) = memberships.first() else {
        return Err(ApiError::Forbidden("you are not a member of any organization".into()));
    };
    let started = session::start(
        &mut tx,
        &state,
        user.id,
        membership.organization_id,
        membership.role,
        ip_text.clone(),
        session::user_agent(&headers),
    )
    .await?;
    let mut event = NewEvent::new(
        Some(membership.organization_id),
        Level::Info,
        Source::ControlCenter,
        "auth.login",
        format!("User: {}", user.email),
        format!("{} signed in", user.email),
    );
    event.user_id = Some(user.id);
    event.client_ip = ip_text;
    event.record(&mut tx).await?;
    tx.commit().await?;
    state.revocations.insert(&started.evicted);
    Ok(Json(started.tokens))
}

/// Trade a refresh token for new tokens
///
/// Each refresh token works once and is replaced by the one in the answer. Presenting a token that
/// was already used revokes its whole session (it has probably been stolen).
#[utoipa::path(post, path = "/api/authentication/refresh", tag = "authentication",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Unknown, used, expired or revoked refresh token", body = ErrorBody),
    ),
    security(()))]
async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let invalid = || ApiError::Unauthorized("the refresh token is invalid or expired; sign in again".into());
    let mut tx = state.db.begin().await?;
    let Some(row) = store::lock_refresh_token(&mut tx, &body.refresh_token).await? else {
        return Err(invalid());
    };
    if row.used_at.is_some() {
        let revoked = store::revoke(&mut tx, RevokeScope::Session(row.session_id), "refresh token reused").await?;
        if !revoked.is_empty() {
            let mut event = NewEvent::new(
                Some(row.organization_id),
                Level::Warning,
                Source::ControlCenter,
                "auth.refresh_reuse",
                user_store::subject(&mut tx, row.user_id).await?,
                "a used refresh token was presented again; the session was revoked",
            );
            event.user_id = Some(row.user_id);
            event.client_ip = ip.map(|ip| ip.to_string());
            event.record(&mut tx).await?;
        }
        tx.commit().await?;
        state.revocations.insert(&revoked);
        return Err(ApiError::Unauthorized(
            "this refresh token was already used; the session has been revoked, sign in again".into(),
        ));
    }
    if row.revoked_at.is_some() || row.expires_at <= chrono::Utc::now() {
        return Err(invalid());
    }
    // The role may have changed since sign-in; membership may be gone.
    let Some(role) = org_store::member_role(&mut tx, row.organization_id, row.user_id).await? else {
        let revoked = store::revoke(&mut tx, RevokeScope::Session(row.session_id), "no longer a member").await?;
        tx.commit().await?;
        state.revocations.insert(&revoked);
        return Err(invalid());
    };
    let refresh_token = store::rotate_refresh_token(&mut tx, &body.refresh_token, row.session_id).await?;
    let (token, expires_at) = state.tokens.issue(row.user_id, row.organization_id, row.session_id, role)?;
    tx.commit().await?;
    Ok(Json(TokenResponse {
        token,
        token_type: "Bearer".into(),
        expires_at: expires_at.into(),
        refresh_token,
        refresh_expires_at: row.expires_at.into(),
        session_id: row.session_id,
        user_id: row.user_id,
        organization_id: row.organization_id,
        role,
    }))
}

/// Sign out this session
///
/// The session's access and refresh tokens stop working at once, on every replica.
#[utoipa::path(post, path = "/api/authentication/logout", tag = "authentication",
    extensions(("x-required-role" = json!("Viewer"))),
    // A signed-in user only: API keys act for an organization, not a person (403).
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "API keys have no session", body = ErrorBody),
    ))]
async fn logout(State(state): State<AppState>, auth: AuthContext) -> ApiResult<StatusCode> {
    let (user_id, session_id) = auth.require_user()?;
    let mut tx = state.db.begin().await?;
    let revoked = store::revoke(&mut tx, RevokeScope::Session(session_id), "signed out").await?;
    let subject = user_store::subject(&mut tx, user_id).await?;
    NewEvent::audit(&auth, "auth.logout", subject, "signed out").record(&mut tx).await?;
    tx.commit().await?;
    state.revocations.insert(&revoked);
    Ok(StatusCode::NO_CONTENT)
}

/// Describe the credential of this request
///
/// Introspection: the session, user, organization and role the token stands for, and when it
/// was issued and expires.
#[utoipa::path(get, path = "/api/authentication/token", tag = "authentication",
    extensions(("x-required-role" = json!("Viewer"))),
    responses(
        (status = 200, description = "The credential", body = TokenInfo),
        (status = 401, description = "Missing, invalid, expired or revoked credential", body = ErrorBody),
    ))]
async fn introspect(State(state): State<AppState>, auth: AuthContext) -> ApiResult<Json<TokenInfo>> {
    let session_expires_at = match auth.principal {
        Principal::User { session_id, .. } => {
            store::find_session(&mut *state.db.acquire().await?, session_id).await?.map(|s| s.expires_at)
        }
        Principal::ApiKey { .. } => None,
    };
    Ok(Json(TokenInfo {
        active: true,
        kind: match auth.principal {
            Principal::User { .. } => "user".into(),
            Principal::ApiKey { .. } => "apiKey".into(),
        },
        session_id: match auth.principal {
            Principal::User { session_id, .. } => Some(session_id),
            Principal::ApiKey { .. } => None,
        },
        user_id: auth.user_id(),
        api_key_id: auth.api_key_id(),
        organization_id: auth.organization_id,
        role: auth.role,
        issued_at: auth.issued_at.map(Into::into),
        expires_at: auth.expires_at.map(Into::into),
        session_expires_at: session_expires_at.map(Into::into),
    }))
}

/// Revoke every session of the signed-in user
///
/// Every access and refresh token of the user, on every device, stops working at once.
#[utoipa::path(delete, path = "/api/authentication/tokens", tag = "authentication",
    extensions(("x-required-role" = json!("Viewer"))),
    // A signed-in user only: API keys act for an organization, not a person (403).
    security(("bearer" = [])),
    responses(
        (status = 204, description = "All sessions revoked"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "API keys have no sessions", body = ErrorBody),
    ))]
async fn revoke_all(State(state): State<AppState>, auth: AuthContext) -> ApiResult<StatusCode> {
    let (user_id, _) = auth.require_user()?;
    let mut tx = state.db.begin().await?;
    let revoked = store::revoke(&mut tx, RevokeScope::User(user_id), "all sessions revoked by the user").await?;
    let subject = user_store::subject(&mut tx, user_id).await?;
    NewEvent::audit(&auth, "auth.revoke_all", subject, format!("revoked {} sessions", revoked.len()))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    state.revocations.insert(&revoked);
    Ok(StatusCode::NO_CONTENT)
}

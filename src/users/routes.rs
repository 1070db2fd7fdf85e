//! `/api/users/me`: who am I, my profile, my password, my active organization.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    model::{Me, MePatch, NAME_MAX, OrganizationMembership, OrganizationRef, OrganizationSwitch, PasswordChange},
    store,
};
use crate::{
    auth::{
        context::AuthContext,
        model::TokenResponse,
        password::check_password_rules,
        session,
        store::{self as auth_store, RevokeScope},
    },
    error::{ApiError, ApiResult, ErrorBody},
    events::store::NewEvent,
    http::{extract::Json, validate::Checks},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me, patch_me))
        .routes(routes!(change_password))
        .routes(routes!(switch_organization))
}

async fn load_me(state: &AppState, auth: &AuthContext) -> ApiResult<Me> {
    let (user_id, _) = auth.require_user()?;
    let user = store::profile(&mut *state.db.acquire().await?, user_id).await?.ok_or(ApiError::NotFound("user"))?;
    let organizations = user.organizations.0;
    let active = organizations
        .iter()
        .find(|m| m.id == auth.organization_id)
        .ok_or(ApiError::Unauthorized("you are no longer a member of this organization".into()))?;
    Ok(Me {
        id: user.id,
        email: user.email,
        name: user.name,
        role: auth.role,
        organization: OrganizationRef { id: active.id, name: active.name.clone() },
        organizations: organizations
            .into_iter()
            .map(|m| OrganizationMembership { id: m.id, name: m.name, role: m.role })
            .collect(),
        created_at: user.created_at.into(),
    })
}

/// The signed-in user
///
/// With `organization` (the active one: use its `id` where a path needs an organization id) and
/// `organizations` (every one the user belongs to, with the role there).
#[utoipa::path(get, path = "/api/users/me", tag = "users",
    extensions(("x-required-role" = json!("Viewer"))),
    // A signed-in user only: API keys act for an organization, not a person (403).
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = Me),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "API keys are not users", body = ErrorBody),
    ))]
async fn get_me(State(state): State<AppState>, auth: AuthContext) -> ApiResult<Json<Me>> {
    Ok(Json(load_me(&state, &auth).await?))
}

/// Update the signed-in user's profile
///
/// JSON Merge Patch of `name` and `email`.
#[utoipa::path(patch, path = "/api/users/me", tag = "users",
    extensions(("x-required-role" = json!("Viewer"))),
    // A signed-in user only: API keys act for an organization, not a person (403).
    security(("bearer" = [])),
    request_body(content = MePatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated user", body = Me),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "API keys are not users", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
    ))]
async fn patch_me(State(state): State<AppState>, auth: AuthContext, Json(patch): Json<MePatch>) -> ApiResult<Json<Me>> {
    let (user_id, _) = auth.require_user()?;
    let name = patch.name.required("name")?;
    let email = patch.email.required("email")?;
    let mut checks = Checks::new();
    if let Some(name) = &name {
        checks.text("name", name, NAME_MAX);
    }
    if let Some(email) = &email {
        checks.email("email", email);
    }
    checks.finish()?;
    let (name, email) = (name.as_deref().map(str::trim), email.as_deref().map(str::trim));
    let mut tx = state.db.begin().await?;
    store::update_profile(&mut tx, user_id, name, email).await?;
    let user = store::find(&mut tx, user_id).await?.ok_or(ApiError::NotFound("user"))?;
    NewEvent::audit(&auth, "user.update", format!("User: {}", user.email), "updated the profile")
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(Json(load_me(&state, &auth).await?))
}

/// Change the signed-in user's password
///
/// Every other session of the user is signed out; this one stays.
#[utoipa::path(post, path = "/api/users/me/password", tag = "users",
    extensions(("x-required-role" = json!("Viewer"))),
    // A signed-in user only: API keys act for an organization, not a person (403).
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "The new password breaks the rules", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "The current password is wrong (`WRONG_PASSWORD`), or an API key called", body = ErrorBody),
    ))]
async fn change_password(
    State(state): State<AppState>,
    auth: AuthContext,
    Json(body): Json<PasswordChange>,
) -> ApiResult<StatusCode> {
    let (user_id, session_id) = auth.require_user()?;
    check_password_rules("newPassword", &body.new_password)?;
    let user = store::find(&mut *state.db.acquire().await?, user_id).await?.ok_or(ApiError::NotFound("user"))?;
    if !state.passwords.verify(body.current_password, Some(user.password_hash)).await? {
        // The caller is signed in (not a 401) but failed to prove it again for this change.
        return Err(ApiError::Refused {
            code: "WRONG_PASSWORD",
            message: "currentPassword is not the current password".into(),
        });
    }
    let hash = state.passwords.hash(body.new_password).await?;
    let mut tx = state.db.begin().await?;
    store::set_password_hash(&mut tx, user_id, &hash).await?;
    let revoked =
        auth_store::revoke(&mut tx, RevokeScope::UserExcept { user_id, keep: session_id }, "password changed").await?;
    NewEvent::audit(
        &auth,
        "user.password_change",
        format!("User: {}", user.email),
        format!("changed the password; {} other sessions signed out", revoked.len()),
    )
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    state.revocations.insert(&revoked);
    Ok(StatusCode::NO_CONTENT)
}

/// Switch the active organization
///
/// Ends this session and answers new tokens acting in the chosen organization, with the role the
/// user has there.
#[utoipa::path(put, path = "/api/users/me/organization", tag = "users",
    extensions(("x-required-role" = json!("Viewer"))),
    // A signed-in user only: API keys act for an organization, not a person (403).
    security(("bearer" = [])),
    request_body = OrganizationSwitch,
    responses(
        (status = 200, description = "Tokens for the chosen organization", body = TokenResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "API keys are bound to one organization", body = ErrorBody),
        (status = 404, description = "Not a member of that organization", body = ErrorBody),
    ))]
async fn switch_organization(
    State(state): State<AppState>,
    auth: AuthContext,
    headers: HeaderMap,
    Json(body): Json<OrganizationSwitch>,
) -> ApiResult<Json<TokenResponse>> {
    let (user_id, session_id) = auth.require_user()?;
    let mut tx = state.db.begin().await?;
    let role = crate::organizations::store::member_role(&mut tx, body.organization_id, user_id)
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    let mut revoked = auth_store::revoke(&mut tx, RevokeScope::Session(session_id), "switched organization").await?;
    let ip = auth.client_ip.map(|ip| ip.to_string());
    let started =
        session::start(&mut tx, &state, user_id, body.organization_id, role, ip, session::user_agent(&headers)).await?;
    let mut event = NewEvent::audit(
        &auth,
        "user.switch_organization",
        store::subject(&mut tx, user_id).await?,
        "switched the active organization",
    );
    event.organization_id = Some(body.organization_id);
    event.record(&mut tx).await?;
    tx.commit().await?;
    revoked.extend(started.evicted);
    state.revocations.insert(&revoked);
    Ok(Json(started.tokens))
}

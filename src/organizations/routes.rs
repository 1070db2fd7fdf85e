//! `/api/organizations`: the caller's organizations, the active one's settings and deletion, its
//! members and roles, and its identity providers (OIDC sign-in settings).
//!
//! Only the caller's active organization is reachable by id: any other id answers 404, exactly
//! as an id that does not exist.

use axum::{extract::State, http::StatusCode};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    model::{
        IdentityProvider, IdentityProviderPatch, IdentityProviderSecrets, Member, MemberPatch, NAME_MAX,
        NewIdentityProvider, NewMember, NewOrganization, Organization, OrganizationPatch, check_client_id,
        check_issuer_url, check_scopes, clean_description, default_scopes,
    },
    store::{self, IdentityProviderChanges, NewIdentityProviderRow, Viewer},
};
use crate::{
    auth::{
        context::{AuthContext, Principal, Require},
        roles::{Role, at_least},
        store::{self as auth_store, RevokeScope},
    },
    error::{ApiError, ApiResult, ErrorBody},
    events::store::NewEvent,
    http::{
        extract::{Json, Path},
        list::{ListQuery, Page, QueryParams, list_params},
        validate::Checks,
    },
    state::AppState,
    users::store as user_store,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_organizations, create_organization))
        .routes(routes!(get_organization, patch_organization, delete_organization))
        .routes(routes!(list_members, add_member))
        .routes(routes!(patch_member, remove_member))
        .routes(routes!(list_identity_providers, create_identity_provider))
        .routes(routes!(get_identity_provider, patch_identity_provider, delete_identity_provider))
        .routes(routes!(set_identity_provider_secrets))
}

/// Only the active organization is visible by id; any other is "not found".
fn active(auth: &AuthContext, organization_id: Uuid) -> ApiResult<()> {
    if organization_id == auth.organization_id { Ok(()) } else { Err(ApiError::NotFound("organization")) }
}

fn above_own_role(auth: &AuthContext, role: Role) -> ApiResult<()> {
    if role > auth.role {
        Err(ApiError::Forbidden(format!("you cannot grant the {role} role: it is above your own ({})", auth.role)))
    } else {
        Ok(())
    }
}

fn last_owner() -> ApiError {
    ApiError::conflict("LAST_OWNER", "the organization must keep at least one Owner; make someone else Owner first")
}

// ----- Organizations -----

list_params!(OrganizationListParams = store::ORGANIZATION_LIST);
list_params!(MemberListParams = store::MEMBER_LIST);
list_params!(IdentityProviderListParams = store::IDENTITY_PROVIDER_LIST);

/// The caller's organizations
///
/// Every organization the signed-in user belongs to, with their role there (an API key sees only
/// its own organization). List conventions apply; properties: `name`, `role`, `createdAt`, `id`.
#[utoipa::path(get, path = "/api/organizations", tag = "organizations",
    extensions(("x-required-role" = json!("Viewer"))),
    params(OrganizationListParams),
    responses(
        (status = 200, description = "A page of organizations", body = Page<Organization>),
        (status = 400, description = "Bad list parameters", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn list_organizations(
    State(state): State<AppState>,
    auth: AuthContext,
    params: QueryParams,
) -> ApiResult<Json<Page<Organization>>> {
    let list = ListQuery::parse(&params, &store::ORGANIZATION_LIST)?;
    let viewer = match auth.principal {
        Principal::User { user_id, .. } => Viewer::User(user_id),
        Principal::ApiKey { .. } => Viewer::ApiKey { organization_id: auth.organization_id, role: auth.role },
    };
    let (rows, total) = store::list_visible(&mut *state.db.acquire().await?, &list, viewer).await?;
    Ok(Json(list.page(rows, total).map(Organization::from)))
}

/// Create an organization
///
/// The signed-in user becomes its Owner. This token keeps acting in the current organization;
/// switch with `PUT /api/users/me/organization`.
#[utoipa::path(post, path = "/api/organizations", tag = "organizations",
    extensions(("x-required-role" = json!("Viewer"))),
    // A signed-in user only: API keys act for an organization, not a person (403).
    security(("bearer" = [])),
    request_body = NewOrganization,
    responses(
        (status = 201, description = "Created", body = Organization),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "API keys cannot create organizations", body = ErrorBody),
    ))]
async fn create_organization(
    State(state): State<AppState>,
    auth: AuthContext,
    Json(body): Json<NewOrganization>,
) -> ApiResult<(StatusCode, Json<Organization>)> {
    let (user_id, _) = auth.require_user()?;
    body.check()?;
    let mut tx = state.db.begin().await?;
    let organization = store::insert(&mut tx, body.name.trim(), clean_description(body.description.as_deref())).await?;
    store::add_member(&mut tx, organization.id, user_id, Role::Owner).await?;
    let mut event = NewEvent::audit(
        &auth,
        "organization.create",
        format!("Organization: {}", organization.name),
        format!("created organization {}", organization.name),
    );
    event.organization_id = Some(organization.id);
    event.record(&mut tx).await?;
    let created =
        store::find_summary(&mut tx, organization.id, Role::Owner).await?.ok_or(ApiError::NotFound("organization"))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// The active organization
///
/// Only the organization the caller is acting in can be read; any other id is 404.
#[utoipa::path(get, path = "/api/organizations/{organizationId}", tag = "organizations",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("organizationId" = Uuid, Path, description = "The active organization's id")),
    responses(
        (status = 200, description = "The organization", body = Organization),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Not the active organization", body = ErrorBody),
    ))]
async fn get_organization(
    State(state): State<AppState>,
    auth: AuthContext,
    Path(organization_id): Path<Uuid>,
) -> ApiResult<Json<Organization>> {
    active(&auth, organization_id)?;
    let found = store::find_summary(&mut *state.db.acquire().await?, organization_id, auth.role)
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    Ok(Json(found.into()))
}

/// Update the active organization
///
/// JSON Merge Patch of `name` and `description` (`description: null` clears it). Admin or Owner.
#[utoipa::path(patch, path = "/api/organizations/{organizationId}", tag = "organizations",
    extensions(("x-required-role" = json!("Admin"))),
    params(("organizationId" = Uuid, Path, description = "The active organization's id")),
    request_body(content = OrganizationPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated organization", body = Organization),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role", body = ErrorBody),
        (status = 404, description = "Not the active organization", body = ErrorBody),
    ))]
async fn patch_organization(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path(organization_id): Path<Uuid>,
    Json(patch): Json<OrganizationPatch>,
) -> ApiResult<Json<Organization>> {
    active(&auth, organization_id)?;
    let name = patch.name.required("name")?;
    let description = patch.description.optional();
    let mut checks = Checks::new();
    if let Some(name) = &name {
        checks.text("name", name, NAME_MAX);
    }
    if let Some(Some(description)) = &description {
        checks.description("description", description);
    }
    checks.finish()?;
    let changed: Vec<&str> = [("name", name.is_some()), ("description", description.is_some())]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect();
    let mut tx = state.db.begin().await?;
    if !changed.is_empty() {
        let description = description.as_ref().map(|d| clean_description(d.as_deref()));
        if !store::update(&mut tx, organization_id, name.as_deref().map(str::trim), description).await? {
            return Err(ApiError::NotFound("organization"));
        }
    }
    let updated =
        store::find_summary(&mut tx, organization_id, auth.role).await?.ok_or(ApiError::NotFound("organization"))?;
    if !changed.is_empty() {
        NewEvent::audit(
            &auth,
            "organization.update",
            format!("Organization: {}", updated.name),
            format!("updated {}", changed.join(" and ")),
        )
        .with_data(json!({ "changed": changed }))
        .record(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Json(updated.into()))
}

/// Delete the active organization
///
/// Deletes it with everything it owns (members, keys, identity providers, events). Every session
/// acting in it, the caller's included, ends at once. Owner only.
#[utoipa::path(delete, path = "/api/organizations/{organizationId}", tag = "organizations",
    extensions(("x-required-role" = json!("Owner"))),
    params(("organizationId" = Uuid, Path, description = "The active organization's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Owner role", body = ErrorBody),
        (status = 404, description = "Not the active organization", body = ErrorBody),
    ))]
async fn delete_organization(
    State(state): State<AppState>,
    auth: Require<at_least::Owner>,
    Path(organization_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    active(&auth, organization_id)?;
    let mut tx = state.db.begin().await?;
    let name = store::lock_for_delete(&mut tx, organization_id).await?.ok_or(ApiError::NotFound("organization"))?;
    let revoked =
        auth_store::revoke(&mut tx, RevokeScope::Organization(organization_id), "organization deleted").await?;
    store::delete(&mut tx, organization_id).await?;
    // The organization's own events go with it; this record is server-wide.
    let mut event = NewEvent::audit(
        &auth,
        "organization.delete",
        format!("Organization: {name}"),
        format!("deleted organization {name}; {} sessions signed out", revoked.len()),
    )
    .with_data(json!({ "organizationId": organization_id }));
    event.organization_id = None;
    event.record(&mut tx).await?;
    tx.commit().await?;
    state.revocations.insert(&revoked);
    Ok(StatusCode::NO_CONTENT)
}

// ----- Members -----

/// Members of the active organization
///
/// List conventions apply; properties: `email`, `name`, `role`, `createdAt` (when they joined),
/// `userId`.
#[utoipa::path(get, path = "/api/organizations/{organizationId}/members", tag = "organizations",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("organizationId" = Uuid, Path, description = "The active organization's id"), MemberListParams),
    responses(
        (status = 200, description = "A page of members", body = Page<Member>),
        (status = 400, description = "Bad list parameters", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Not the active organization", body = ErrorBody),
    ))]
async fn list_members(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path(organization_id): Path<Uuid>,
    params: QueryParams,
) -> ApiResult<Json<Page<Member>>> {
    active(&auth, organization_id)?;
    let list = ListQuery::parse(&params, &store::MEMBER_LIST)?;
    let (rows, total) = store::list_members(&mut *state.db.acquire().await?, &list, organization_id).await?;
    Ok(Json(list.page(rows, total).map(Member::from)))
}

/// Add a member
///
/// Adds an existing user, by email, with a role no higher than the caller's own. Admin or Owner.
#[utoipa::path(post, path = "/api/organizations/{organizationId}/members", tag = "organizations",
    extensions(("x-required-role" = json!("Admin"))),
    params(("organizationId" = Uuid, Path, description = "The active organization's id")),
    request_body = NewMember,
    responses(
        (status = 201, description = "Added", body = Member),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role, or the role is above the caller's", body = ErrorBody),
        (status = 404, description = "Not the active organization, or no user has this email", body = ErrorBody),
        (status = 409, description = "Already a member (ALREADY_MEMBER)", body = ErrorBody),
    ))]
async fn add_member(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path(organization_id): Path<Uuid>,
    Json(body): Json<NewMember>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    active(&auth, organization_id)?;
    let mut checks = Checks::new();
    checks.email("email", &body.email);
    checks.finish()?;
    above_own_role(&auth, body.role)?;
    let mut tx = state.db.begin().await?;
    let user = user_store::find_by_email(&mut tx, body.email.trim()).await?.ok_or(ApiError::NotFound("user"))?;
    let member = store::insert_member(&mut tx, organization_id, user.id, body.role).await?;
    NewEvent::audit(
        &auth,
        "organization.member_add",
        format!("User: {}", member.email),
        format!("added {} as {}", member.email, member.role),
    )
    .with_data(json!({ "userId": member.user_id, "role": member.role }))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(member.into())))
}

/// Change a member's role
///
/// JSON Merge Patch of `role`. The caller can neither grant a role above their own nor change a
/// member whose role is above their own; the last Owner cannot be demoted. The member's sessions
/// in this organization end at once, so the new role applies from their next sign-in. Admin or
/// Owner.
#[utoipa::path(patch, path = "/api/organizations/{organizationId}/members/{userId}", tag = "organizations",
    extensions(("x-required-role" = json!("Admin"))),
    params(
        ("organizationId" = Uuid, Path, description = "The active organization's id"),
        ("userId" = Uuid, Path, description = "The member's user id"),
    ),
    request_body(content = MemberPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The member with the new role", body = Member),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role, or a role above the caller's is involved", body = ErrorBody),
        (status = 404, description = "Not the active organization, or not a member", body = ErrorBody),
        (status = 409, description = "The last Owner cannot be demoted (LAST_OWNER)", body = ErrorBody),
    ))]
async fn patch_member(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path((organization_id, user_id)): Path<(Uuid, Uuid)>,
    Json(patch): Json<MemberPatch>,
) -> ApiResult<Json<Member>> {
    active(&auth, organization_id)?;
    let role = patch.role.required("role")?;
    if let Some(role) = role {
        above_own_role(&auth, role)?;
    }
    let mut tx = state.db.begin().await?;
    let owners = store::lock_owners(&mut tx, organization_id).await?;
    let mut member =
        store::lock_member(&mut tx, organization_id, user_id).await?.ok_or(ApiError::NotFound("member"))?;
    let Some(role) = role.filter(|role| *role != member.role) else {
        return Ok(Json(member.into()));
    };
    if member.role > auth.role {
        return Err(ApiError::Forbidden(format!(
            "you cannot change the role of a member who is {} (your role is {})",
            member.role, auth.role
        )));
    }
    if member.role == Role::Owner && owners.iter().all(|owner| *owner == user_id) {
        return Err(last_owner());
    }
    store::set_member_role(&mut tx, organization_id, user_id, role).await?;
    let revoked =
        auth_store::revoke(&mut tx, RevokeScope::UserInOrganization { user_id, organization_id }, "role changed")
            .await?;
    NewEvent::audit(
        &auth,
        "organization.member_role_change",
        format!("User: {}", member.email),
        format!("changed the role of {} from {} to {role}", member.email, member.role),
    )
    .with_data(json!({ "userId": user_id, "from": member.role, "to": role }))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    state.revocations.insert(&revoked);
    member.role = role;
    Ok(Json(member.into()))
}

/// Remove a member
///
/// Admins and Owners remove members (not ones whose role is above their own); anyone may remove
/// themself. The last Owner cannot leave. The removed member's sessions in this organization end
/// at once.
#[utoipa::path(delete, path = "/api/organizations/{organizationId}/members/{userId}", tag = "organizations",
    extensions(("x-required-role" = json!("Admin"))),
    params(
        ("organizationId" = Uuid, Path, description = "The active organization's id"),
        ("userId" = Uuid, Path, description = "The member's user id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role, or the member's role is above the caller's", body = ErrorBody),
        (status = 404, description = "Not the active organization, or not a member", body = ErrorBody),
        (status = 409, description = "The last Owner cannot leave (LAST_OWNER)", body = ErrorBody),
    ))]
async fn remove_member(
    State(state): State<AppState>,
    auth: AuthContext,
    Path((organization_id, user_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    active(&auth, organization_id)?;
    let leaving = auth.user_id() == Some(user_id);
    if !leaving {
        auth.require_role(Role::Admin)?;
    }
    let mut tx = state.db.begin().await?;
    let owners = store::lock_owners(&mut tx, organization_id).await?;
    let member = store::lock_member(&mut tx, organization_id, user_id).await?.ok_or(ApiError::NotFound("member"))?;
    if !leaving && member.role > auth.role {
        return Err(ApiError::Forbidden(format!(
            "you cannot remove a member who is {} (your role is {})",
            member.role, auth.role
        )));
    }
    if member.role == Role::Owner && owners.iter().all(|owner| *owner == user_id) {
        return Err(last_owner());
    }
    store::remove_member(&mut tx, organization_id, user_id).await?;
    let revoked = auth_store::revoke(
        &mut tx,
        RevokeScope::UserInOrganization { user_id, organization_id },
        "removed from the organization",
    )
    .await?;
    let message = if leaving {
        format!("{} left the organization", member.email)
    } else {
        format!("removed {} ({})", member.email, member.role)
    };
    NewEvent::audit(&auth, "organization.member_remove", format!("User: {}", member.email), message)
        .with_data(json!({ "userId": user_id, "role": member.role }))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    state.revocations.insert(&revoked);
    Ok(StatusCode::NO_CONTENT)
}

// ----- Identity providers -----

fn idp_not_found() -> ApiError {
    ApiError::NotFound("identity provider")
}

fn idp_subject(name: &str) -> String {
    format!("IdentityProvider: {name}")
}

/// Identity providers of the active organization
///
/// OpenID Connect providers members can sign in with. List conventions apply; properties:
/// `name`, `issuerUrl`, `clientId`, `enabled`, `hasClientSecret`, `createdAt`, `updatedAt`, `id`.
/// Admin or Owner.
#[utoipa::path(get, path = "/api/organizations/{organizationId}/identityproviders", tag = "organizations",
    extensions(("x-required-role" = json!("Admin"))),
    params(("organizationId" = Uuid, Path, description = "The active organization's id"), IdentityProviderListParams),
    responses(
        (status = 200, description = "A page of identity providers", body = Page<IdentityProvider>),
        (status = 400, description = "Bad list parameters", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role", body = ErrorBody),
        (status = 404, description = "Not the active organization", body = ErrorBody),
    ))]
async fn list_identity_providers(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path(organization_id): Path<Uuid>,
    params: QueryParams,
) -> ApiResult<Json<Page<IdentityProvider>>> {
    active(&auth, organization_id)?;
    let list = ListQuery::parse(&params, &store::IDENTITY_PROVIDER_LIST)?;
    let (rows, total) = store::list_identity_providers(&mut *state.db.acquire().await?, &list, organization_id).await?;
    Ok(Json(list.page(rows, total).map(IdentityProvider::from)))
}

/// Add an identity provider
///
/// `scopes` default to `openid`, `email`, `profile`. A `clientSecret` given here is stored
/// encrypted and never returned. Admin or Owner.
#[utoipa::path(post, path = "/api/organizations/{organizationId}/identityproviders", tag = "organizations",
    extensions(("x-required-role" = json!("Admin"))),
    params(("organizationId" = Uuid, Path, description = "The active organization's id")),
    request_body = NewIdentityProvider,
    responses(
        (status = 201, description = "Created", body = IdentityProvider),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role", body = ErrorBody),
        (status = 404, description = "Not the active organization", body = ErrorBody),
        (status = 409, description = "The name is taken (NAME_TAKEN)", body = ErrorBody),
    ))]
async fn create_identity_provider(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path(organization_id): Path<Uuid>,
    Json(body): Json<NewIdentityProvider>,
) -> ApiResult<(StatusCode, Json<IdentityProvider>)> {
    active(&auth, organization_id)?;
    body.check()?;
    let sealed = match &body.client_secret {
        Some(secret) => Some(state.secrets.seal(secret.trim().as_bytes())?),
        None => None,
    };
    let scopes = body.scopes.unwrap_or_else(default_scopes);
    let mut tx = state.db.begin().await?;
    let created = store::insert_identity_provider(
        &mut tx,
        organization_id,
        NewIdentityProviderRow {
            name: body.name.trim(),
            issuer_url: body.issuer_url.trim(),
            client_id: body.client_id.as_deref().map(str::trim),
            client_secret_encrypted: sealed,
            scopes: &scopes,
            enabled: body.enabled.unwrap_or(true),
        },
    )
    .await?;
    NewEvent::audit(
        &auth,
        "identity_provider.create",
        idp_subject(&created.name),
        format!("added identity provider {} ({})", created.name, created.issuer_url),
    )
    .with_data(json!({ "identityProviderId": created.id }))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// An identity provider
///
/// Admin or Owner.
#[utoipa::path(get, path = "/api/organizations/{organizationId}/identityproviders/{identityProviderId}",
    extensions(("x-required-role" = json!("Admin"))),
    tag = "organizations",
    params(
        ("organizationId" = Uuid, Path, description = "The active organization's id"),
        ("identityProviderId" = Uuid, Path, description = "The identity provider's id"),
    ),
    responses(
        (status = 200, description = "The identity provider", body = IdentityProvider),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role", body = ErrorBody),
        (status = 404, description = "No such identity provider in the active organization", body = ErrorBody),
    ))]
async fn get_identity_provider(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path((organization_id, id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<IdentityProvider>> {
    active(&auth, organization_id)?;
    let found = store::find_identity_provider(&mut *state.db.acquire().await?, organization_id, id)
        .await?
        .ok_or_else(idp_not_found)?;
    Ok(Json(found.into()))
}

/// Update an identity provider
///
/// JSON Merge Patch of `name`, `issuerUrl`, `clientId` (`null` clears it), `scopes` (`null`
/// restores the defaults) and `enabled`. The secret is set with `PUT .../secrets`. Admin or Owner.
#[utoipa::path(patch, path = "/api/organizations/{organizationId}/identityproviders/{identityProviderId}",
    extensions(("x-required-role" = json!("Admin"))),
    tag = "organizations",
    params(
        ("organizationId" = Uuid, Path, description = "The active organization's id"),
        ("identityProviderId" = Uuid, Path, description = "The identity provider's id"),
    ),
    request_body(content = IdentityProviderPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated identity provider", body = IdentityProvider),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role", body = ErrorBody),
        (status = 404, description = "No such identity provider in the active organization", body = ErrorBody),
        (status = 409, description = "The name is taken (NAME_TAKEN)", body = ErrorBody),
    ))]
async fn patch_identity_provider(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path((organization_id, id)): Path<(Uuid, Uuid)>,
    Json(patch): Json<IdentityProviderPatch>,
) -> ApiResult<Json<IdentityProvider>> {
    active(&auth, organization_id)?;
    let name = patch.name.required("name")?;
    let issuer_url = patch.issuer_url.required("issuerUrl")?;
    let client_id = patch.client_id.optional();
    let scopes = patch.scopes.optional().map(|scopes| scopes.unwrap_or_else(default_scopes));
    let enabled = patch.enabled.required("enabled")?;
    let mut checks = Checks::new();
    if let Some(name) = &name {
        checks.text("name", name, NAME_MAX);
    }
    if let Some(url) = &issuer_url {
        check_issuer_url(&mut checks, "issuerUrl", url);
    }
    if let Some(Some(client_id)) = &client_id {
        check_client_id(&mut checks, "clientId", client_id);
    }
    if let Some(scopes) = &scopes {
        check_scopes(&mut checks, "scopes", scopes);
    }
    checks.finish()?;
    let changes = IdentityProviderChanges {
        name: name.as_deref().map(str::trim),
        issuer_url: issuer_url.as_deref().map(str::trim),
        client_id: client_id.as_ref().map(|c| c.as_deref().map(str::trim)),
        scopes: scopes.as_deref(),
        enabled,
    };
    let changed: Vec<&str> = [
        ("name", changes.name.is_some()),
        ("issuerUrl", changes.issuer_url.is_some()),
        ("clientId", changes.client_id.is_some()),
        ("scopes", changes.scopes.is_some()),
        ("enabled", changes.enabled.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    let mut tx = state.db.begin().await?;
    if changed.is_empty() {
        let found = store::find_identity_provider(&mut tx, organization_id, id).await?.ok_or_else(idp_not_found)?;
        return Ok(Json(found.into()));
    }
    let updated =
        store::update_identity_provider(&mut tx, organization_id, id, changes).await?.ok_or_else(idp_not_found)?;
    NewEvent::audit(
        &auth,
        "identity_provider.update",
        idp_subject(&updated.name),
        format!("updated {} of identity provider {}", changed.join(", "), updated.name),
    )
    .with_data(json!({ "identityProviderId": id, "changed": changed }))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Json(updated.into()))
}

/// Delete an identity provider
///
/// Admin or Owner.
#[utoipa::path(delete, path = "/api/organizations/{organizationId}/identityproviders/{identityProviderId}",
    extensions(("x-required-role" = json!("Admin"))),
    tag = "organizations",
    params(
        ("organizationId" = Uuid, Path, description = "The active organization's id"),
        ("identityProviderId" = Uuid, Path, description = "The identity provider's id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role", body = ErrorBody),
        (status = 404, description = "No such identity provider in the active organization", body = ErrorBody),
    ))]
async fn delete_identity_provider(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path((organization_id, id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    active(&auth, organization_id)?;
    let mut tx = state.db.begin().await?;
    let name = store::delete_identity_provider(&mut tx, organization_id, id).await?.ok_or_else(idp_not_found)?;
    NewEvent::audit(&auth, "identity_provider.delete", idp_subject(&name), format!("deleted identity provider {name}"))
        .with_data(json!({ "identityProviderId": id }))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Update client credentials of an identity provider
///
/// Sets the client id and secret of the identity provider's client application (e.g. in Microsoft
/// Entra ID). The secret is stored encrypted and never returned; the answer tells
/// `hasClientSecret`. Admin or Owner.
#[utoipa::path(put, path = "/api/organizations/{organizationId}/identityproviders/{identityProviderId}/secrets",
    extensions(("x-required-role" = json!("Admin"))),
    tag = "organizations",
    params(
        ("organizationId" = Uuid, Path, description = "The active organization's id"),
        ("identityProviderId" = Uuid, Path, description = "The identity provider's id"),
    ),
    request_body = IdentityProviderSecrets,
    responses(
        (status = 200, description = "The identity provider, without its secret", body = IdentityProvider),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Admin role", body = ErrorBody),
        (status = 404, description = "No such identity provider in the active organization", body = ErrorBody),
    ))]
async fn set_identity_provider_secrets(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path((organization_id, id)): Path<(Uuid, Uuid)>,
    Json(body): Json<IdentityProviderSecrets>,
) -> ApiResult<Json<IdentityProvider>> {
    active(&auth, organization_id)?;
    body.check()?;
    let sealed = state.secrets.seal(body.client_secret.trim().as_bytes())?;
    let mut tx = state.db.begin().await?;
    let updated = store::set_identity_provider_secrets(&mut tx, organization_id, id, body.client_id.trim(), &sealed)
        .await?
        .ok_or_else(idp_not_found)?;
    NewEvent::audit(
        &auth,
        "identity_provider.secrets_update",
        idp_subject(&updated.name),
        format!("replaced the client credentials of identity provider {}", updated.name),
    )
    .with_data(json!({ "identityProviderId": id }))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Json(updated.into()))
}

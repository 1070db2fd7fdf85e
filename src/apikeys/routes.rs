//! `/api/apikeys`: create (the key is shown once), list, show and revoke the active
//! organization's API keys. Admins and Owners only.
//!
//! A key created with another API key records no user in `createdBy` (the column names users);
//! the creating key is in the audit event's `api_key_id`.

use axum::{extract::State, http::StatusCode};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    model::{ApiKey, CreateApiKey, CreatedApiKey, NAME_MAX},
    store,
};
use crate::{
    auth::{
        context::Require,
        roles::at_least,
        tokens::{random_secret, secret_hash},
    },
    error::{ApiError, ApiResult, ErrorBody},
    events::store::NewEvent,
    http::{
        extract::{Json, Path},
        list::{ListQuery, Page, QueryParams, list_params},
        validate::Checks,
    },
    state::AppState,
};

/// What every key starts with, so scanners and people can tell one when they see it.
pub const KEY_PREFIX: &str = "edgeflow_";
/// Random bytes in a key (256 bits).
const KEY_BYTES: usize = 32;
/// Characters of the key kept (in clear) to recognise it in lists.
const SHOWN_PREFIX_CHARS: usize = 16;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(get_key, revoke_key))
}

fn new_key() -> (String, String) {
    let key = format!("{KEY_PREFIX}{}", random_secret(KEY_BYTES));
    let prefix = key.chars().take(SHOWN_PREFIX_CHARS).collect();
    (key, prefix)
}

/// Create an API key
///
/// The answer is the only time the key is shown: the server keeps only its hash. The key's role
/// may not be higher than the caller's own.
#[utoipa::path(post, path = "/api/apikeys", tag = "apikeys",
    extensions(("x-required-role" = json!("Admin"))),
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedApiKey),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Admin, or the role is above the caller's", body = ErrorBody),
        (status = 409, description = "A key with this name exists (`DUPLICATE_NAME`)", body = ErrorBody),
    ))]
async fn create_key(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Json(body): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let mut checks = Checks::new();
    checks.text("name", &body.name, NAME_MAX);
    if let Some(expires_at) = body.expires_at
        && expires_at.0 <= chrono::Utc::now()
    {
        checks.fail("expiresAt", "must be in the future");
    }
    checks.finish()?;
    if body.role > auth.role {
        return Err(ApiError::Forbidden(format!(
            "a key's role cannot be higher than your own ({}); asked for {}",
            auth.role, body.role
        )));
    }
    let name = body.name.trim();
    let (key, prefix) = new_key();
    let mut tx = state.db.begin().await?;
    let row = store::insert(
        &mut tx,
        auth.organization_id,
        name,
        &prefix,
        &secret_hash(&key),
        body.role,
        auth.user_id(),
        body.expires_at.map(|t| t.0),
    )
    .await?;
    NewEvent::audit(
        &auth,
        "apikey.create",
        format!("ApiKey: {}", row.name),
        format!("created API key {} ({}) with role {}", row.name, row.prefix, row.role),
    )
    .with_data(json!({"apiKeyId": row.id, "prefix": row.prefix, "role": row.role}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey::new(row, key))))
}

list_params!(ApiKeyListParams = store::LIST_SPEC);

/// List the organization's API keys
///
/// Revoked and expired keys included (filter on `revoked`, `expiresAt`). Never shows the keys.
/// Properties: id, name, prefix, role, createdAt, createdBy, expiresAt, lastUsedAt, revoked,
/// revokedAt. Newest first by default.
#[utoipa::path(get, path = "/api/apikeys", tag = "apikeys",
    extensions(("x-required-role" = json!("Admin"))),
    params(ApiKeyListParams),
    responses(
        (status = 200, description = "One page of keys", body = Page<ApiKey>),
        (status = 400, description = "Bad paging, order or filter", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Admin", body = ErrorBody),
    ))]
async fn list_keys(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    params: QueryParams,
) -> ApiResult<Json<Page<ApiKey>>> {
    let query = ListQuery::parse(&params, &store::LIST_SPEC)?;
    let mut conn = state.db.acquire().await?;
    let (rows, total) = store::list(&mut conn, auth.organization_id, &query).await?;
    Ok(Json(query.page(rows, total).map(ApiKey::from)))
}

/// Show an API key
///
/// Never the key itself.
#[utoipa::path(get, path = "/api/apikeys/{id}", tag = "apikeys",
    extensions(("x-required-role" = json!("Admin"))),
    params(("id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = ApiKey),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Admin", body = ErrorBody),
        (status = 404, description = "No such key in this organization", body = ErrorBody),
    ))]
async fn get_key(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ApiKey>> {
    let row = store::find(&mut *state.db.acquire().await?, auth.organization_id, id)
        .await?
        .ok_or(ApiError::NotFound("API key"))?;
    Ok(Json(row.into()))
}

/// Revoke an API key
///
/// The key stops working from the next request on. Revoking a revoked key changes nothing and
/// answers 204 again.
#[utoipa::path(delete, path = "/api/apikeys/{id}", tag = "apikeys",
    extensions(("x-required-role" = json!("Admin"))),
    params(("id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Admin", body = ErrorBody),
        (status = 404, description = "No such key in this organization", body = ErrorBody),
    ))]
async fn revoke_key(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let row = store::find_for_update(&mut tx, auth.organization_id, id).await?.ok_or(ApiError::NotFound("API key"))?;
    if row.revoked_at.is_none() {
        store::revoke(&mut tx, auth.organization_id, id).await?;
        NewEvent::audit(
            &auth,
            "apikey.revoke",
            format!("ApiKey: {}", row.name),
            format!("revoked API key {} ({})", row.name, row.prefix),
        )
        .with_data(json!({"apiKeyId": row.id, "prefix": row.prefix, "role": row.role}))
        .record(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

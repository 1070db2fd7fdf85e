//! `/api/registrationkeys`: create (the key is shown once), list, show and revoke the active
//! organization's registration keys. Admins and Owners only. Nodes use the keys with
//! `POST /api/edgenodes/register`.

use axum::{extract::State, http::StatusCode};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    model::{CreatedRegistrationKey, NewRegistrationKey, RegistrationKey},
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
    },
    state::AppState,
};

/// What every registration key starts with, so scanners and people can tell one when they see it.
pub const KEY_PREFIX: &str = "efreg_";
/// Random bytes in a key (256 bits).
const KEY_BYTES: usize = 32;
/// Characters of the key kept (in clear) to recognise it in lists.
const SHOWN_PREFIX_CHARS: usize = 12;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(get_key, revoke_key))
}

/// A new key and the prefix shown of it.
fn new_key() -> (String, String) {
    let key = format!("{KEY_PREFIX}{}", random_secret(KEY_BYTES));
    let prefix = key.chars().take(SHOWN_PREFIX_CHARS).collect();
    (key, prefix)
}

/// Create a registration key
///
/// Nodes enrol themselves with it (`POST /api/edgenodes/register`) and get its type and labels.
/// The answer is the only time the key is shown: the server keeps only its hash.
#[utoipa::path(post, path = "/api/registrationkeys", tag = "registrationkeys", operation_id = "create_registration_key",
    extensions(("x-required-role" = json!("Admin"))),
    request_body = NewRegistrationKey,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedRegistrationKey),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Admin", body = ErrorBody),
        (status = 409, description = "A key with this name exists (`DUPLICATE_NAME`)", body = ErrorBody),
    ))]
async fn create_key(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Json(body): Json<NewRegistrationKey>,
) -> ApiResult<(StatusCode, Json<CreatedRegistrationKey>)> {
    body.check()?;
    let (key, prefix) = new_key();
    let labels = body.labels.unwrap_or_default();
    let mut tx = state.db.begin().await?;
    let row = store::insert(
        &mut tx,
        &store::NewKey {
            organization_id: auth.organization_id,
            name: body.name.trim(),
            prefix: &prefix,
            key_hash: &secret_hash(&key),
            node_type: body.node_type,
            labels: &labels,
            max_uses: body.max_uses,
            expires_at: body.expires_at.map(|t| t.0),
            created_by: auth.user_id(),
        },
    )
    .await?;
    NewEvent::audit(
        &auth,
        "registrationkey.create",
        format!("RegistrationKey: {}", row.name),
        format!("created registration key {} ({}) for {} nodes", row.name, row.prefix, row.node_type.as_str()),
    )
    .with_data(json!({
        "registrationKeyId": row.id,
        "prefix": row.prefix,
        "nodeType": row.node_type,
        "labels": row.labels.0,
        "maxUses": row.max_uses,
        "expiresAt": row.expires_at,
    }))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedRegistrationKey { registration_key: row.into(), key })))
}

list_params!(RegistrationKeyListParams = store::LIST_SPEC);

/// List the organization's registration keys
///
/// Revoked, expired and used-up keys included (filter on `active`, `revoked`). Never shows the
/// keys. Properties: id, name, prefix, nodeType, maxUses, uses, expiresAt, active, createdAt,
/// createdBy, revoked, revokedAt. Newest first by default.
#[utoipa::path(get, path = "/api/registrationkeys", tag = "registrationkeys", operation_id = "list_registration_keys",
    extensions(("x-required-role" = json!("Admin"))),
    params(RegistrationKeyListParams),
    responses(
        (status = 200, description = "One page of keys", body = Page<RegistrationKey>),
        (status = 400, description = "Bad paging, order or filter", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Admin", body = ErrorBody),
    ))]
async fn list_keys(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    params: QueryParams,
) -> ApiResult<Json<Page<RegistrationKey>>> {
    let query = ListQuery::parse(&params, &store::LIST_SPEC)?;
    let mut conn = state.db.acquire().await?;
    let (rows, total) = store::list(&mut conn, auth.organization_id, &query).await?;
    Ok(Json(query.page(rows, total).map(RegistrationKey::from)))
}

/// Show a registration key
///
/// Never the key itself.
#[utoipa::path(get, path = "/api/registrationkeys/{id}", tag = "registrationkeys", operation_id = "get_registration_key",
    extensions(("x-required-role" = json!("Admin"))),
    params(("id" = Uuid, Path, description = "The registration key's id")),
    responses(
        (status = 200, description = "The key", body = RegistrationKey),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Admin", body = ErrorBody),
        (status = 404, description = "No such key in this organization", body = ErrorBody),
    ))]
async fn get_key(
    State(state): State<AppState>,
    auth: Require<at_least::Admin>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<RegistrationKey>> {
    let row = store::find(&mut *state.db.acquire().await?, auth.organization_id, id)
        .await?
        .ok_or(ApiError::NotFound("registration key"))?;
    Ok(Json(row.into()))
}

/// Revoke a registration key
///
/// No node can enrol with it any more; nodes it enrolled keep working. Revoking a revoked key
/// changes nothing and answers 204 again.
#[utoipa::path(delete, path = "/api/registrationkeys/{id}", tag = "registrationkeys", operation_id = "revoke_registration_key",
    extensions(("x-required-role" = json!("Admin"))),
    params(("id" = Uuid, Path, description = "The registration key's id")),
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
    let row = store::revoke(&mut tx, auth.organization_id, id).await?.ok_or(ApiError::NotFound("registration key"))?;
    if row.revoked_at.is_none() {
        NewEvent::audit(
            &auth,
            "registrationkey.revoke",
            format!("RegistrationKey: {}", row.name),
            format!("revoked registration key {} ({}); it had enrolled {} nodes", row.name, row.prefix, row.uses),
        )
        .with_data(json!({"registrationKeyId": row.id, "prefix": row.prefix, "uses": row.uses}))
        .record(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

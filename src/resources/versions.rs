//! `/api/resources/{resourceId}/versions`: create drafts, list, show, replace (`PUT` with
//! `"state": "Completed"` freezes a draft) and delete versions.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    cleanup,
    content::{check_max_size, ensure_draft},
    model::{NewVersion, ResourceVersion, VersionState, VersionUpdate, clean_description},
    references,
    routes::resource_event,
    store::{self, VersionRow},
    upload_store,
};
use crate::{
    auth::{context::Require, roles::at_least},
    error::{ApiError, ApiResult, ErrorBody},
    http::{
        extract::{Json, Path},
        list::{ListQuery, Page, QueryParams, list_params},
        validate::Checks,
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_version, list_versions)).routes(routes!(
        get_version,
        put_version,
        delete_version
    ))
}

fn size_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

/// Create a draft version
///
/// Crosser's call: `{"description", "sizeInBytes"}` (`sizeInBytes` as a number or a string of
/// digits). Answers the draft; its `id` is where the content goes
/// (`POST /api/resources/{resourceId}/versions/{id}/content`).
#[utoipa::path(post, path = "/api/resources/{resourceId}/versions", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(("resourceId" = Uuid, Path, description = "The resource's id")),
    request_body = NewVersion,
    responses(
        (status = 201, description = "The new draft", body = ResourceVersion),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such resource in this organization", body = ErrorBody),
        (status = 413, description = "`sizeInBytes` is past the maximum upload size (`UPLOAD_TOO_LARGE`)", body = ErrorBody),
    ))]
async fn create_version(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path(resource_id): Path<Uuid>,
    Json(body): Json<NewVersion>,
) -> ApiResult<(StatusCode, Json<ResourceVersion>)> {
    let mut checks = Checks::new();
    if let Some(description) = &body.description {
        checks.description("description", description);
    }
    checks.finish()?;
    check_max_size(&state, size_of(body.size_in_bytes))?;
    let mut tx = state.db.begin().await?;
    // The resource's lock numbers its versions one at a time.
    let resource = store::find_resource(&mut tx, auth.organization_id, resource_id, true)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    let row = store::insert_version(
        &mut tx,
        &resource,
        clean_description(body.description.as_deref()),
        body.size_in_bytes,
        auth.user_id(),
    )
    .await?;
    resource_event(&auth, "resource.version.create", &resource, format!("created draft version {} of resource {}", row.version, resource.name))
        .with_data(json!({"resourceId": resource.id, "versionId": row.id, "version": row.version, "sizeInBytes": row.size_in_bytes}))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

list_params!(VersionListParams = store::VERSION_LIST_SPEC);

/// List a resource's versions
///
/// Properties: id, version, state, description, sizeInBytes, sha256, createdAt, updatedAt,
/// completedAt. By version number by default.
#[utoipa::path(get, path = "/api/resources/{resourceId}/versions", tag = "resources", operation_id = "list_resource_versions",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("resourceId" = Uuid, Path, description = "The resource's id"), VersionListParams),
    responses(
        (status = 200, description = "One page of versions", body = Page<ResourceVersion>),
        (status = 400, description = "Bad paging, order or filter", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such resource in this organization", body = ErrorBody),
    ))]
async fn list_versions(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path(resource_id): Path<Uuid>,
    params: QueryParams,
) -> ApiResult<Json<Page<ResourceVersion>>> {
    let query = ListQuery::parse(&params, &store::VERSION_LIST_SPEC)?;
    let mut conn = state.db.acquire().await?;
    store::find_resource(&mut conn, auth.organization_id, resource_id, false)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    let (rows, total) = store::list_versions(&mut conn, auth.organization_id, resource_id, &query).await?;
    Ok(Json(query.page(rows, total).map(ResourceVersion::from)))
}

/// Show a resource version
///
/// Its state and its content's metadata. The body, with only `state` changed, is a valid `PUT`.
/// `ETag` changes with every change of the version; `PUT` honours `If-Match`.
#[utoipa::path(get, path = "/api/resources/{resourceId}/versions/{id}", tag = "resources", operation_id = "get_resource_version",
    extensions(("x-required-role" = json!("Viewer"))),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The version's id"),
    ),
    responses(
        (status = 200, description = "The version", body = ResourceVersion),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such version in this organization", body = ErrorBody),
    ))]
async fn get_version(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path((resource_id, id)): Path<(Uuid, Uuid)>,
) -> ApiResult<(HeaderMap, Json<ResourceVersion>)> {
    let row = store::find_version(&mut *state.db.acquire().await?, auth.organization_id, resource_id, id, false)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    Ok((etag_header(&row), Json(row.into())))
}

/// A version's ETag: it changes with every change of the version (its content included).
fn etag(row: &VersionRow) -> String {
    format!("\"{}\"", row.updated_at.timestamp_micros())
}

fn etag_header(row: &VersionRow) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&etag(row)) {
        headers.insert(header::ETAG, value);
    }
    headers
}

/// 412 when `If-Match` names none of the version's current ETag (or `*`).
fn check_if_match(headers: &HeaderMap, row: &VersionRow) -> ApiResult<()> {
    crate::http::etag::check_if_match(headers, &etag(row))
}

/// Update a draft, or make it a Completed version
///
/// Crosser's call: `{"description", "state": "Completed"}` freezes a draft whose content has been
/// uploaded with exactly `sizeInBytes` bytes; its open upload sessions are dropped. `PUT`
/// replaces: `description` absent clears it. The version's read-only properties (as `GET`
/// answers them) are accepted and ignored. Completed versions never change (409). With
/// `If-Match` (the `ETag` of `GET`), a draft changed meanwhile answers 412.
#[utoipa::path(put, path = "/api/resources/{resourceId}/versions/{id}", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The version's id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of `GET`: refuse (412) if the draft changed meanwhile"),
    ),
    request_body = VersionUpdate,
    responses(
        (status = 200, description = "The updated version", body = ResourceVersion),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such version in this organization", body = ErrorBody),
        (status = 409, description = "The version is Completed (`VERSION_COMPLETED`), or has no content of its declared size yet (`NO_CONTENT`, `SIZE_MISMATCH`)", body = ErrorBody),
        (status = 412, description = "`If-Match` names an older state of the draft", body = ErrorBody),
        (status = 413, description = "`sizeInBytes` is past the maximum upload size (`UPLOAD_TOO_LARGE`)", body = ErrorBody),
    ))]
async fn put_version(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((resource_id, id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
    Json(body): Json<VersionUpdate>,
) -> ApiResult<(HeaderMap, Json<ResourceVersion>)> {
    let mut checks = Checks::new();
    if let Some(description) = &body.description {
        checks.description("description", description);
    }
    checks.finish()?;
    let mut tx = state.db.begin().await?;
    let resource = store::find_resource(&mut tx, auth.organization_id, resource_id, false)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    let current = store::find_version(&mut tx, auth.organization_id, resource_id, id, true)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    ensure_draft(&current)?;
    let size_in_bytes = body.size_in_bytes.unwrap_or(current.size_in_bytes);
    if size_in_bytes != current.size_in_bytes {
        check_max_size(&state, size_of(size_in_bytes))?;
    }
    check_if_match(&headers, &current)?;
    let mut released = Vec::new();
    if body.state == VersionState::Completed {
        if !current.has_content() {
            return Err(ApiError::conflict("NO_CONTENT", "upload the draft's content before completing it"));
        }
        if current.uploaded_bytes != size_in_bytes {
            return Err(ApiError::conflict(
                "SIZE_MISMATCH",
                format!(
                    "the uploaded content has {} bytes but sizeInBytes is {size_in_bytes}; upload it again or fix sizeInBytes",
                    current.uploaded_bytes
                ),
            ));
        }
        released = upload_store::delete_for_version(&mut tx, id).await?;
    }
    let row =
        store::update_version(&mut tx, id, clean_description(body.description.as_deref()), body.state, size_in_bytes)
            .await?;
    let (action, message) = match row.state {
        VersionState::Completed => {
            ("resource.version.complete", format!("completed version {} of resource {}", row.version, resource.name))
        }
        VersionState::Draft => {
            ("resource.version.update", format!("updated draft version {} of resource {}", row.version, resource.name))
        }
    };
    resource_event(&auth, action, &resource, message)
        .with_data(json!({"resourceId": resource.id, "versionId": row.id, "version": row.version, "state": row.state, "sha256": row.sha256}))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    cleanup::delete_released(&state, &released).await;
    Ok((etag_header(&row), Json(row.into())))
}

/// Delete a resource version
///
/// A draft or a Completed version, with its content and upload sessions. Refused (409
/// `VERSION_IN_USE`, naming them) while any flow version uses it.
#[utoipa::path(delete, path = "/api/resources/{resourceId}/versions/{id}", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The version's id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such version in this organization", body = ErrorBody),
        (status = 409, description = "Used by flow versions (`VERSION_IN_USE`)", body = ErrorBody),
    ))]
async fn delete_version(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((resource_id, id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let resource = store::find_resource(&mut tx, auth.organization_id, resource_id, false)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    let current = store::find_version(&mut tx, auth.organization_id, resource_id, id, true)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    references::ensure_version_unused(&mut tx, auth.organization_id, id).await?;
    let mut released = upload_store::delete_for_version(&mut tx, id).await?;
    let row = store::delete_version(&mut tx, auth.organization_id, resource_id, id)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    released.extend(row.blob_key.clone());
    resource_event(
        &auth,
        "resource.version.delete",
        &resource,
        format!("deleted version {} of resource {}", current.version, resource.name),
    )
    .with_data(json!({"resourceId": resource.id, "versionId": id, "version": current.version, "state": current.state}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    cleanup::delete_released(&state, &released).await;
    Ok(StatusCode::NO_CONTENT)
}

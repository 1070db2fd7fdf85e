//! `/api/resources`: create, list, show (with versions), merge-patch and delete the active
//! organization's resources; and the router of the whole domain.

use axum::{extract::State, http::StatusCode};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    cleanup, content,
    model::{NAME_MAX, NewResource, Resource, ResourcePatch, check_category, check_path_for, clean_description},
    references,
    store::{self, NewResourceRow, ResourceFields, ResourceRow},
    uploads, versions,
};
use crate::{
    auth::{
        context::{AuthContext, Require},
        roles::at_least,
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

/// Every route of the domain.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_resource, list_resources))
        .routes(routes!(get_resource, patch_resource, delete_resource))
        .merge(versions::router())
        .merge(content::router())
        .merge(uploads::router())
}

/// An audit event about a resource, by the caller.
pub fn resource_event(auth: &AuthContext, action: &'static str, resource: &ResourceRow, message: String) -> NewEvent {
    NewEvent::audit(auth, action, format!("Resource: {}", resource.name), message)
}

/// Create a resource
///
/// Crosser's call. `organizationId` must be the caller's active organization; `category` starts
/// with `/organization/`; `path` is required for File, PythonScript and CSharpScript. Then create
/// a draft (`POST /api/resources/{resourceId}/versions`) and upload its content.
#[utoipa::path(post, path = "/api/resources", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    request_body = NewResource,
    responses(
        (status = 201, description = "Created", body = Resource),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor, or `organizationId` is not the active organization", body = ErrorBody),
        (status = 409, description = "A resource with this name exists in the category (`DUPLICATE_NAME`)", body = ErrorBody),
    ))]
async fn create_resource(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Json(body): Json<NewResource>,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    auth.check_organization(body.organization_id)?;
    body.check()?;
    let mut tx = state.db.begin().await?;
    let row = store::insert_resource(
        &mut tx,
        &NewResourceRow {
            organization_id: auth.organization_id,
            name: body.name.trim(),
            resource_type: body.resource_type,
            category: &body.category,
            path: body.path.as_deref(),
            description: clean_description(body.description.as_deref()),
            created_by: auth.user_id(),
        },
    )
    .await?;
    resource_event(
        &auth,
        "resource.create",
        &row,
        format!("created resource {} ({})", row.name, row.resource_type.as_str()),
    )
    .with_data(json!({"resourceId": row.id, "type": row.resource_type, "category": row.category, "path": row.path}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(row.into_api(None))))
}

list_params!(ResourceListParams = store::RESOURCE_LIST_SPEC);

/// List the organization's resources
///
/// Properties: id, name, type, category, path, description, createdAt, updatedAt. By name by
/// default.
#[utoipa::path(get, path = "/api/resources", tag = "resources",
    extensions(("x-required-role" = json!("Viewer"))),
    params(ResourceListParams),
    responses(
        (status = 200, description = "One page of resources", body = Page<Resource>),
        (status = 400, description = "Bad paging, order or filter", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn list_resources(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    params: QueryParams,
) -> ApiResult<Json<Page<Resource>>> {
    let query = ListQuery::parse(&params, &store::RESOURCE_LIST_SPEC)?;
    let (rows, total) = store::list_resources(&mut *state.db.acquire().await?, auth.organization_id, &query).await?;
    Ok(Json(query.page(rows, total).map(|row| row.into_api(None))))
}

/// Show a resource
///
/// With its versions (drafts included), oldest first.
#[utoipa::path(get, path = "/api/resources/{resourceId}", tag = "resources",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("resourceId" = Uuid, Path, description = "The resource's id")),
    responses(
        (status = 200, description = "The resource and its versions", body = Resource),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such resource in this organization", body = ErrorBody),
    ))]
async fn get_resource(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Resource>> {
    let mut conn = state.db.acquire().await?;
    let row = store::find_resource(&mut conn, auth.organization_id, id, false)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    let versions = store::all_versions(&mut conn, auth.organization_id, id).await?;
    Ok(Json(row.into_api(Some(versions.into_iter().map(Into::into).collect()))))
}

/// Update a resource
///
/// JSON Merge Patch of `name`, `type`, `category`, `path` and `description` (`null` clears `path`
/// or `description`; a file-like type keeps needing a path).
#[utoipa::path(patch, path = "/api/resources/{resourceId}", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(("resourceId" = Uuid, Path, description = "The resource's id")),
    request_body(content = ResourcePatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated resource", body = Resource),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such resource in this organization", body = ErrorBody),
        (status = 409, description = "A resource with this name exists in the category (`DUPLICATE_NAME`), or the patch leaves a file-like resource without a path (`PATH_REQUIRED`)", body = ErrorBody),
    ))]
async fn patch_resource(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path(id): Path<Uuid>,
    Json(patch): Json<ResourcePatch>,
) -> ApiResult<Json<Resource>> {
    let name = patch.name.required("name")?;
    let resource_type = patch.resource_type.required("type")?;
    let category = patch.category.required("category")?;
    let path = patch.path.optional();
    let description = patch.description.optional();
    // A file-like type without a path in the patch itself is a bad request (400, below); one that
    // comes from what is stored is a conflict with the resource's state.
    let type_and_no_path_in_patch = resource_type.is_some() && matches!(path, Some(None));

    let mut tx = state.db.begin().await?;
    let current =
        store::find_resource(&mut tx, auth.organization_id, id, true).await?.ok_or(ApiError::NotFound("resource"))?;
    let name = name.as_deref().map_or(current.name.as_str(), str::trim);
    let resource_type = resource_type.unwrap_or(current.resource_type);
    let category = category.as_deref().unwrap_or(&current.category);
    let path = path.as_ref().map_or(current.path.as_deref(), Option::as_deref);
    let description = description.as_ref().map_or(current.description.as_deref(), |d| clean_description(d.as_deref()));
    if resource_type.needs_path() && path.is_none() && !type_and_no_path_in_patch {
        return Err(ApiError::conflict(
            "PATH_REQUIRED",
            format!("resources of type {} need a path; give one in the same patch", resource_type.as_str()),
        ));
    }

    let mut checks = Checks::new();
    checks.text("name", name, NAME_MAX);
    check_category(&mut checks, "category", category);
    check_path_for(&mut checks, resource_type, path);
    if let Some(description) = description {
        checks.description("description", description);
    }
    checks.finish()?;

    let fields = ResourceFields { name, resource_type, category, path, description };
    let row = store::update_resource(&mut tx, auth.organization_id, id, &fields)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    resource_event(&auth, "resource.update", &row, format!("updated resource {}", row.name))
        .with_data(json!({"resourceId": row.id, "name": row.name, "type": row.resource_type, "category": row.category, "path": row.path}))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(Json(row.into_api(None)))
}

/// Delete a resource
///
/// With all its versions, drafts and upload sessions, and their stored content. Refused (409
/// `RESOURCE_IN_USE`, naming them) while any flow version uses any of its versions.
#[utoipa::path(delete, path = "/api/resources/{resourceId}", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(("resourceId" = Uuid, Path, description = "The resource's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such resource in this organization", body = ErrorBody),
        (status = 409, description = "Used by flow versions (`RESOURCE_IN_USE`)", body = ErrorBody),
    ))]
async fn delete_resource(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let row =
        store::find_resource(&mut tx, auth.organization_id, id, true).await?.ok_or(ApiError::NotFound("resource"))?;
    references::ensure_resource_unused(&mut tx, auth.organization_id, id).await?;
    let released =
        store::delete_resource(&mut tx, auth.organization_id, id).await?.ok_or(ApiError::NotFound("resource"))?;
    resource_event(
        &auth,
        "resource.delete",
        &row,
        format!("deleted resource {} and its {} versions", row.name, row.version_count),
    )
    .with_data(json!({"resourceId": row.id}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    cleanup::delete_released(&state, &released).await;
    Ok(StatusCode::NO_CONTENT)
}

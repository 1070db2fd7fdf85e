//! Versions (Crosser: "flows"): publishing a draft as the next version, and reading versions.
//! Versions are immutable: `/flows/{flowId}` has no PUT, PATCH or DELETE (405 with `Allow`), and
//! the database refuses updates too.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    content,
    definitions::flow_event,
    drafts::{check_if_match, etag},
    model::{FlowVersion, FlowVersionSummary, PublishDraft, clean_description},
    resource_refs::{self, Readiness},
    store::{self, Lock, NewVersion, VersionRow},
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
    OpenApiRouter::new().routes(routes!(publish_draft)).routes(routes!(list_versions)).routes(routes!(get_version))
}

/// A version as the answer; its ETag is its content hash (it never changes).
fn version_response(status: StatusCode, row: VersionRow) -> Response {
    let location = format!("/api/flowdefinitions/{}/flows/{}", row.flow_definition_id, row.id);
    let tag = HeaderValue::from_str(&format!("\"{}\"", row.content_hash)).ok();
    let mut response = (status, Json(FlowVersion::from(row))).into_response();
    if let Some(tag) = tag {
        response.headers_mut().insert(header::ETAG, tag);
    }
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&location)
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Publish a draft as a new version
///
/// Freezes the draft's current content as version n+1 of the flow definition, with a content
/// hash (hex sha256 of the canonical JSON: keys sorted, no whitespace). Every resource version the
/// content references must exist in the organization and be Completed (409
/// `RESOURCE_NOT_COMPLETED` naming the others). The draft stays and can be edited further.
/// Concurrent publishes of one definition get distinct, consecutive numbers. With `If-Match`
/// (the draft's ETag), a draft changed meanwhile is refused with 412.
#[utoipa::path(post, path = "/api/flowdefinitions/{id}/drafts/{draftId}/publish", tag = "flows",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("id" = Uuid, Path, description = "The flow definition's id"),
        ("draftId" = Uuid, Path, description = "The draft's id"),
        ("If-Match" = Option<String>, Header, description = "The draft's ETag: publish only that revision"),
    ),
    request_body = PublishDraft,
    responses(
        (status = 201, description = "The new version", body = FlowVersion,
            headers(("ETag" = String, description = "The content hash"), ("Location" = String, description = "The version's URL"))),
        (status = 400, description = "Malformed body, invalid description, or the draft's content is invalid", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such flow definition or draft in this organization", body = ErrorBody),
        (status = 409, description = "A referenced resource version is missing or not Completed (`RESOURCE_NOT_COMPLETED`)", body = ErrorBody),
        (status = 412, description = "The draft changed since the ETag in If-Match (`PRECONDITION_FAILED`)", body = ErrorBody),
    ))]
async fn publish_draft(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((id, draft_id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
    Json(body): Json<PublishDraft>,
) -> ApiResult<Response> {
    let mut checks = Checks::new();
    if let Some(description) = &body.description {
        checks.description("description", description);
    }
    checks.finish()?;
    let mut tx = state.db.begin().await?;
    // One publish of a definition at a time: the version number comes from this row.
    let definition = store::lock_definition(&mut tx, auth.organization_id, id, Lock::Update)
        .await?
        .ok_or(ApiError::NotFound("flow definition"))?;
    let draft = store::find_draft(&mut tx, auth.organization_id, id, draft_id, false)
        .await?
        .ok_or(ApiError::NotFound("flow draft"))?;
    check_if_match(&headers, &etag(draft.revision))?;
    let (checked, problems) = content::check_shape("content", draft.content);
    let Some(checked) = checked else { return Err(ApiError::validation(problems)) };
    resource_refs::require_ready(&mut tx, auth.organization_id, &checked.resources, Readiness::Completed).await?;
    let row = store::insert_version(
        &mut tx,
        &NewVersion {
            definition: &definition,
            name: &draft.name,
            description: clean_description(body.description.as_deref()),
            content: &checked.content,
            content_hash: &checked.hash,
            resources: &checked.resources,
            published_from_draft_id: draft.id,
            created_by: auth.user_id(),
        },
    )
    .await?;
    flow_event(
        &auth,
        "flow.publish",
        id,
        &definition.name,
        format!("published version {} of flow definition {} from draft {}", row.version, definition.name, draft.name),
    )
    .with_data(json!({
        "flowId": row.id,
        "version": row.version,
        "draftId": draft.id,
        "draftRevision": draft.revision,
        "contentHash": row.content_hash,
        "resources": checked.resources,
    }))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(version_response(StatusCode::CREATED, row))
}

list_params!(VersionListParams = store::VERSION_LIST_SPEC);

/// List a flow definition's versions
///
/// Summaries, newest first by default. Properties: id, name, version, description, contentHash,
/// createdAt. Versions are immutable: there is no way to change or delete one (delete the whole
/// flow definition instead).
#[utoipa::path(get, path = "/api/flowdefinitions/{id}/flows", tag = "flows",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "The flow definition's id"), VersionListParams),
    responses(
        (status = 200, description = "One page of versions", body = Page<FlowVersionSummary>),
        (status = 400, description = "Malformed id, bad paging, order or filter", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such flow definition in this organization", body = ErrorBody),
    ))]
async fn list_versions(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path(id): Path<Uuid>,
    params: QueryParams,
) -> ApiResult<Json<Page<FlowVersionSummary>>> {
    let query = ListQuery::parse(&params, &store::VERSION_LIST_SPEC)?;
    let mut conn = state.db.acquire().await?;
    store::find_definition(&mut conn, auth.organization_id, id).await?.ok_or(ApiError::NotFound("flow definition"))?;
    let (rows, total) = store::list_versions(&mut conn, auth.organization_id, id, &query).await?;
    Ok(Json(query.page(rows, total).map(FlowVersionSummary::from)))
}

/// Show a version
///
/// With its content. Versions are immutable: `PUT`, `PATCH` and `DELETE` on this path answer 405
/// (to change a flow, create a draft from the version with `fromFlowId`, edit it and publish).
/// The `ETag` is the content hash.
#[utoipa::path(get, path = "/api/flowdefinitions/{id}/flows/{flowId}", tag = "flows",
    extensions(("x-required-role" = json!("Viewer"))),
    params(
        ("id" = Uuid, Path, description = "The flow definition's id"),
        ("flowId" = Uuid, Path, description = "The version's id"),
    ),
    responses(
        (status = 200, description = "The version", body = FlowVersion, headers(("ETag" = String, description = "The content hash"))),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such version of this flow definition in this organization", body = ErrorBody),
        (status = 405, description = "Any write: versions are immutable (`METHOD_NOT_ALLOWED`, with `Allow`)", body = ErrorBody),
    ))]
async fn get_version(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path((id, flow_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    let row = store::find_version(&mut *state.db.acquire().await?, auth.organization_id, id, flow_id)
        .await?
        .ok_or(ApiError::NotFound("flow version"))?;
    Ok(version_response(StatusCode::OK, row))
}

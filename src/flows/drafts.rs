//! `/api/flowdefinitions/{id}/drafts`: a definition's editable drafts. Every answer carries the
//! draft's revision as `ETag`; `PUT`, `PATCH` and `DELETE` honour `If-Match`, so of two editors
//! the one who saves second over a stale copy gets a 412 instead of silently overwriting.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    content,
    definitions::flow_event,
    model::{FlowDraft, FlowDraftPatch, FlowDraftUpdate, NAME_MAX, NewFlowDraft},
    store::{self, DraftRow, Lock, NewDraft},
};
use crate::{
    auth::{context::Require, roles::at_least},
    error::{ApiError, ApiResult, ErrorBody},
    http::{
        extract::{Json, Path},
        merge_patch::merge,
        validate::Checks,
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_draft)).routes(routes!(get_draft, put_draft, patch_draft, delete_draft))
}

/// The ETag of a draft revision: `"<revision>"`.
pub(super) fn etag(revision: i64) -> String {
    crate::http::etag::revision(revision)
}

pub(super) use crate::http::etag::check_if_match;

/// A draft as the answer, with its ETag.
fn draft_response(status: StatusCode, row: DraftRow) -> Response {
    let tag = crate::http::etag::header_value(&etag(row.revision));
    let mut response = (status, Json(FlowDraft::from(row))).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

fn check_name(name: &str) -> ApiResult<()> {
    let mut checks = Checks::new();
    checks.text("name", name, NAME_MAX);
    checks.finish()
}

/// Create a draft
///
/// Empty by default; with `content`, that content; with `fromFlowId`, a copy of that version's
/// content (to change a published flow: copy, edit, publish). The content is validated as on
/// every write (see `PUT`).
#[utoipa::path(post, path = "/api/flowdefinitions/{id}/drafts", tag = "flows",
    extensions(("x-required-role" = json!("Editor"))),
    params(("id" = Uuid, Path, description = "The flow definition's id")),
    request_body = NewFlowDraft,
    responses(
        (status = 201, description = "Created", body = FlowDraft, headers(("ETag" = String, description = "The draft's revision"))),
        (status = 400, description = "Malformed body, invalid name or content (`details` point at each element), unknown `fromFlowId`", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such flow definition in this organization", body = ErrorBody),
    ))]
async fn create_draft(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path(id): Path<Uuid>,
    Json(body): Json<NewFlowDraft>,
) -> ApiResult<Response> {
    if body.from_flow_id.is_some() && body.content.is_some() {
        return Err(ApiError::invalid_field("content", "give either content or fromFlowId, not both"));
    }
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    let mut tx = state.db.begin().await?;
    let definition = store::lock_definition(&mut tx, auth.organization_id, id, Lock::Share)
        .await?
        .ok_or(ApiError::NotFound("flow definition"))?;
    let (source, default_name) = match body.from_flow_id {
        Some(flow_id) => {
            let version = store::find_version(&mut tx, auth.organization_id, id, flow_id)
                .await?
                .ok_or_else(|| ApiError::invalid_field("fromFlowId", "no such version of this flow definition"))?;
            (version.content, format!("From version {}", version.version))
        }
        None => (body.content.unwrap_or_else(content::empty), "Draft".to_owned()),
    };
    let checked = content::validate(&mut tx, auth.organization_id, "content", source).await?;
    let name = body.name.as_deref().map_or(default_name.as_str(), str::trim);
    let row = store::insert_draft(
        &mut tx,
        &NewDraft {
            organization_id: auth.organization_id,
            flow_definition_id: id,
            name,
            content: &checked.content,
            content_hash: &checked.hash,
            based_on_flow_id: body.from_flow_id,
            created_by: auth.user_id(),
        },
    )
    .await?;
    flow_event(
        &auth,
        "flow.draft_create",
        id,
        &definition.name,
        format!("created draft {} of flow definition {}", row.name, definition.name),
    )
    .with_data(json!({"draftId": row.id, "basedOnFlowId": row.based_on_flow_id, "contentHash": row.content_hash}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(draft_response(StatusCode::CREATED, row))
}

/// Show a draft
///
/// With its content; the `ETag` is its revision (send it back as `If-Match` when saving).
#[utoipa::path(get, path = "/api/flowdefinitions/{id}/drafts/{draftId}", tag = "flows",
    extensions(("x-required-role" = json!("Viewer"))),
    params(
        ("id" = Uuid, Path, description = "The flow definition's id"),
        ("draftId" = Uuid, Path, description = "The draft's id"),
    ),
    responses(
        (status = 200, description = "The draft", body = FlowDraft, headers(("ETag" = String, description = "The draft's revision"))),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such draft of this flow definition in this organization", body = ErrorBody),
    ))]
async fn get_draft(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path((id, draft_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    let row = store::find_draft(&mut *state.db.acquire().await?, auth.organization_id, id, draft_id, false)
        .await?
        .ok_or(ApiError::NotFound("flow draft"))?;
    Ok(draft_response(StatusCode::OK, row))
}

/// Saves a draft's new name and content after checking `If-Match` against the locked row.
async fn save(
    state: &AppState,
    auth: &Require<at_least::Editor>,
    id: Uuid,
    draft_id: Uuid,
    headers: &HeaderMap,
    action: &'static str,
    change: impl FnOnce(&DraftRow) -> ApiResult<(String, Value)>,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current = store::find_draft(&mut tx, auth.organization_id, id, draft_id, true)
        .await?
        .ok_or(ApiError::NotFound("flow draft"))?;
    let (name, new_content) = change(&current)?;
    let checked = content::validate(&mut tx, auth.organization_id, "content", new_content).await?;
    // After the request's own checks: an invalid change is a 400 whatever the revision.
    check_if_match(headers, &etag(current.revision))?;
    let row = store::update_draft(
        &mut tx,
        auth.organization_id,
        draft_id,
        name.trim(),
        &checked.content,
        &checked.hash,
        auth.user_id(),
    )
    .await?;
    let definition_name =
        store::find_definition(&mut tx, auth.organization_id, id).await?.map_or_else(String::new, |d| d.name);
    flow_event(
        auth,
        action,
        id,
        &definition_name,
        format!("saved draft {} of flow definition {} (revision {})", row.name, definition_name, row.revision),
    )
    .with_data(json!({"draftId": row.id, "revision": row.revision, "contentHash": row.content_hash}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(draft_response(StatusCode::OK, row))
}

/// Replace a draft
///
/// New `name` and `content`. The content is validated: modules have unique non-empty ids and a
/// type; connections join existing modules (no self-loops, no duplicates); resources name
/// existing resource versions of this organization; at most 1 MiB. Problems are a 400
/// `VALIDATION_FAILED` whose `details` point at each element (`content.modules[2].id`).
///
/// Concurrency: send the `ETag` you read as `If-Match`; if the draft changed since, the answer is
/// 412 `PRECONDITION_FAILED` (fetch it again and merge). Without `If-Match` the last write wins.
#[utoipa::path(put, path = "/api/flowdefinitions/{id}/drafts/{draftId}", tag = "flows",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("id" = Uuid, Path, description = "The flow definition's id"),
        ("draftId" = Uuid, Path, description = "The draft's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read; without it the last write wins"),
    ),
    request_body = FlowDraftUpdate,
    responses(
        (status = 200, description = "The saved draft", body = FlowDraft, headers(("ETag" = String, description = "The draft's new revision"))),
        (status = 400, description = "Malformed body, invalid name or content (`details` point at each element)", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such draft of this flow definition in this organization", body = ErrorBody),
        (status = 412, description = "The draft changed since the ETag in If-Match (`PRECONDITION_FAILED`)", body = ErrorBody),
    ))]
async fn put_draft(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((id, draft_id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
    Json(body): Json<FlowDraftUpdate>,
) -> ApiResult<Response> {
    check_name(&body.name)?;
    save(&state, &auth, id, draft_id, &headers, "flow.draft_update", |_| Ok((body.name, body.content))).await
}

/// Update a draft
///
/// JSON Merge Patch (RFC 7396) of `name` and `content`: `content` is merged into the current
/// content (a key set to `null` is removed; arrays such as `modules` are replaced whole). The
/// result is validated as with `PUT`. `If-Match` as with `PUT`; without it the last write wins.
#[utoipa::path(patch, path = "/api/flowdefinitions/{id}/drafts/{draftId}", tag = "flows",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("id" = Uuid, Path, description = "The flow definition's id"),
        ("draftId" = Uuid, Path, description = "The draft's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read; without it the last write wins"),
    ),
    request_body(content = FlowDraftPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The saved draft", body = FlowDraft, headers(("ETag" = String, description = "The draft's new revision"))),
        (status = 400, description = "Malformed body, invalid name or resulting content (`details` point at each element)", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such draft of this flow definition in this organization", body = ErrorBody),
        (status = 412, description = "The draft changed since the ETag in If-Match (`PRECONDITION_FAILED`)", body = ErrorBody),
    ))]
async fn patch_draft(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((id, draft_id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
    Json(patch): Json<FlowDraftPatch>,
) -> ApiResult<Response> {
    let name = patch.name.required("name")?;
    if let Some(name) = &name {
        check_name(name)?;
    }
    let content_patch = patch.content.required("content")?;
    save(&state, &auth, id, draft_id, &headers, "flow.draft_update", move |current| {
        let mut content = current.content.clone();
        if let Some(content_patch) = &content_patch {
            merge(&mut content, content_patch);
        }
        Ok((name.unwrap_or_else(|| current.name.clone()), content))
    })
    .await
}

/// Delete a draft
///
/// The flow definition's versions are not affected. Honours `If-Match` as `PUT` does.
#[utoipa::path(delete, path = "/api/flowdefinitions/{id}/drafts/{draftId}", tag = "flows",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("id" = Uuid, Path, description = "The flow definition's id"),
        ("draftId" = Uuid, Path, description = "The draft's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read; without it the draft is deleted whatever its revision"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such draft of this flow definition in this organization", body = ErrorBody),
        (status = 412, description = "The draft changed since the ETag in If-Match (`PRECONDITION_FAILED`)", body = ErrorBody),
    ))]
async fn delete_draft(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((id, draft_id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let current = store::find_draft(&mut tx, auth.organization_id, id, draft_id, true)
        .await?
        .ok_or(ApiError::NotFound("flow draft"))?;
    check_if_match(&headers, &etag(current.revision))?;
    store::delete_draft(&mut tx, auth.organization_id, draft_id).await?;
    let definition_name =
        store::find_definition(&mut tx, auth.organization_id, id).await?.map_or_else(String::new, |d| d.name);
    flow_event(
        &auth,
        "flow.draft_delete",
        id,
        &definition_name,
        format!("deleted draft {} of flow definition {}", current.name, definition_name),
    )
    .with_data(json!({"draftId": draft_id}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

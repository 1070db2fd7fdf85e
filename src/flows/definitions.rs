//! `/api/flowdefinitions` and `/api/flowdefinitions/{id}`: create, list (with each definition's
//! drafts and versions, so a client can find a definition by name and pick a version in one
//! call), show, rename and delete flow definitions.

use std::collections::HashMap;

use axum::{extract::State, http::StatusCode};
use serde_json::json;
use sqlx::PgConnection;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    model::{FlowDefinition, FlowDefinitionPatch, NAME_MAX, NewFlowDefinition, clean_description},
    store::{self, DefinitionRow, Lock},
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

/// Nodes named in a `FLOW_DEPLOYED` refusal.
const NODES_NAMED: i64 = 10;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_definition, list_definitions)).routes(routes!(
        get_definition,
        patch_definition,
        delete_definition
    ))
}

/// An audit event about a flow definition, by the caller: subject `Flow: <name>`.
pub(super) fn flow_event(
    auth: &AuthContext,
    action: &'static str,
    definition_id: Uuid,
    name: &str,
    message: String,
) -> NewEvent {
    let mut event = NewEvent::audit(auth, action, format!("Flow: {name}"), message);
    event.flow_definition_id = Some(definition_id);
    event
}

/// The definitions with their drafts and versions.
async fn with_children(
    conn: &mut PgConnection,
    organization_id: Uuid,
    rows: Vec<DefinitionRow>,
) -> Result<Vec<FlowDefinition>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut drafts: HashMap<Uuid, Vec<_>> = HashMap::new();
    for draft in store::draft_summaries(conn, organization_id, &ids).await? {
        drafts.entry(draft.flow_definition_id).or_default().push(draft);
    }
    let mut versions: HashMap<Uuid, Vec<_>> = HashMap::new();
    for version in store::version_summaries(conn, organization_id, &ids).await? {
        versions.entry(version.flow_definition_id).or_default().push(version);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let id = row.id;
            FlowDefinition::new(row, drafts.remove(&id).unwrap_or_default(), versions.remove(&id).unwrap_or_default())
        })
        .collect())
}

async fn one_with_children(
    conn: &mut PgConnection,
    organization_id: Uuid,
    row: DefinitionRow,
) -> ApiResult<FlowDefinition> {
    with_children(conn, organization_id, vec![row])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("definition vanished while reading it")))
}

/// Create a flow definition
///
/// A container for a flow's drafts and versions, named uniquely within the organization. If
/// `organizationId` is given it must be the caller's active organization. Start editing with
/// `POST /api/flowdefinitions/{id}/drafts`.
#[utoipa::path(post, path = "/api/flowdefinitions", tag = "flows",
    extensions(("x-required-role" = json!("Editor"))),
    request_body = NewFlowDefinition,
    responses(
        (status = 201, description = "Created", body = FlowDefinition),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor, or `organizationId` is not the active organization", body = ErrorBody),
        (status = 409, description = "A flow definition with this name exists (`DUPLICATE_NAME`)", body = ErrorBody),
    ))]
async fn create_definition(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Json(body): Json<NewFlowDefinition>,
) -> ApiResult<(StatusCode, Json<FlowDefinition>)> {
    if let Some(organization_id) = body.organization_id {
        auth.check_organization(organization_id)?;
    }
    body.check()?;
    let mut tx = state.db.begin().await?;
    let row = store::insert_definition(
        &mut tx,
        auth.organization_id,
        body.name.trim(),
        clean_description(body.description.as_deref()),
        auth.user_id(),
    )
    .await?;
    flow_event(&auth, "flow.create", row.id, &row.name, format!("created flow definition {}", row.name))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(FlowDefinition::new(row, Vec::new(), Vec::new()))))
}

list_params!(DefinitionListParams = store::LIST_SPEC);

/// List the organization's flow definitions
///
/// Each with its drafts (`flowDrafts`) and versions (`flows`, newest first), so a client finds a
/// definition by name and picks a version in one call:
/// `filters[0].propertyName=name&filters[0].propertyValue=Temperature&filters[0].filterType=equal`.
/// Properties: id, name, description, latestVersion, createdAt, updatedAt. By name by default.
#[utoipa::path(get, path = "/api/flowdefinitions", tag = "flows",
    extensions(("x-required-role" = json!("Viewer"))),
    params(DefinitionListParams),
    responses(
        (status = 200, description = "One page of flow definitions", body = Page<FlowDefinition>),
        (status = 400, description = "Bad paging, order or filter", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn list_definitions(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    params: QueryParams,
) -> ApiResult<Json<Page<FlowDefinition>>> {
    let query = ListQuery::parse(&params, &store::LIST_SPEC)?;
    let mut conn = state.db.acquire().await?;
    let (rows, total) = store::list_definitions(&mut conn, auth.organization_id, &query).await?;
    let items = with_children(&mut conn, auth.organization_id, rows).await?;
    Ok(Json(query.page(items, total)))
}

/// Show a flow definition
///
/// With its drafts (`flowDrafts`, oldest first) and versions (`flows`, newest first), as
/// summaries; fetch one for its content.
#[utoipa::path(get, path = "/api/flowdefinitions/{id}", tag = "flows",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "The flow definition's id")),
    responses(
        (status = 200, description = "The flow definition", body = FlowDefinition),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such flow definition in this organization", body = ErrorBody),
    ))]
async fn get_definition(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<FlowDefinition>> {
    let mut conn = state.db.acquire().await?;
    let row = store::find_definition(&mut conn, auth.organization_id, id)
        .await?
        .ok_or(ApiError::NotFound("flow definition"))?;
    Ok(Json(one_with_children(&mut conn, auth.organization_id, row).await?))
}

/// Update a flow definition
///
/// JSON Merge Patch of `name` and `description` (`null` clears it).
#[utoipa::path(patch, path = "/api/flowdefinitions/{id}", tag = "flows",
    extensions(("x-required-role" = json!("Editor"))),
    params(("id" = Uuid, Path, description = "The flow definition's id")),
    request_body(content = FlowDefinitionPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated flow definition", body = FlowDefinition),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such flow definition in this organization", body = ErrorBody),
        (status = 409, description = "A flow definition with this name exists (`DUPLICATE_NAME`)", body = ErrorBody),
    ))]
async fn patch_definition(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path(id): Path<Uuid>,
    Json(patch): Json<FlowDefinitionPatch>,
) -> ApiResult<Json<FlowDefinition>> {
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
    let mut fields = Vec::new();
    if name.is_some() {
        fields.push("name");
    }
    if description.is_some() {
        fields.push("description");
    }
    let mut tx = state.db.begin().await?;
    let current = store::lock_definition(&mut tx, auth.organization_id, id, Lock::Update)
        .await?
        .ok_or(ApiError::NotFound("flow definition"))?;
    if fields.is_empty() {
        let definition = one_with_children(&mut tx, auth.organization_id, current).await?;
        tx.commit().await?;
        return Ok(Json(definition));
    }
    let row = store::update_definition(
        &mut tx,
        auth.organization_id,
        id,
        name.as_deref().map(str::trim),
        description.as_ref().map(|d| clean_description(d.as_deref())),
    )
    .await?
    .ok_or(ApiError::NotFound("flow definition"))?;
    let message = if row.name == current.name {
        format!("updated flow definition {}: {}", row.name, fields.join(", "))
    } else {
        format!("renamed flow definition {} to {}", current.name, row.name)
    };
    flow_event(&auth, "flow.update", id, &row.name, message)
        .with_data(json!({"fields": fields, "previousName": current.name}))
        .record(&mut tx)
        .await?;
    let definition = one_with_children(&mut tx, auth.organization_id, row).await?;
    tx.commit().await?;
    Ok(Json(definition))
}

/// Delete a flow definition
///
/// With all its drafts and versions. Refused with 409 `FLOW_DEPLOYED` while any edge node is
/// meant to run one of its versions or drafts (the answer names up to ten of them): remove it from
/// those nodes first.
#[utoipa::path(delete, path = "/api/flowdefinitions/{id}", tag = "flows",
    extensions(("x-required-role" = json!("Editor"))),
    params(("id" = Uuid, Path, description = "The flow definition's id")),
    responses(
        (status = 204, description = "Deleted, with its drafts and versions"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such flow definition in this organization", body = ErrorBody),
        (status = 409, description = "Deployed on edge nodes (`FLOW_DEPLOYED`, naming them)", body = ErrorBody),
    ))]
async fn delete_definition(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let row = store::lock_definition(&mut tx, auth.organization_id, id, Lock::Update)
        .await?
        .ok_or(ApiError::NotFound("flow definition"))?;
    let (nodes, count) = store::nodes_running(&mut tx, auth.organization_id, id, NODES_NAMED).await?;
    if count > 0 {
        return Err(deployed(&row.name, &nodes, count));
    }
    store::delete_definition(&mut tx, auth.organization_id, id).await?;
    flow_event(
        &auth,
        "flow.delete",
        id,
        &row.name,
        format!("deleted flow definition {} with its drafts and {} versions", row.name, row.latest_version),
    )
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

fn deployed(name: &str, nodes: &[String], count: i64) -> ApiError {
    let listed = nodes.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    let more = count - i64::try_from(nodes.len()).unwrap_or(count);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    let noun = if count == 1 { "edge node" } else { "edge nodes" };
    ApiError::conflict(
        "FLOW_DEPLOYED",
        format!("flow definition '{name}' is deployed on {count} {noun} ({listed}{more}); remove it from them first"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_the_nodes() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let message = deployed("Temp", &names, 12).to_string();
        assert!(message.contains("on 12 edge nodes ('a', 'b' and 10 more)"), "{message}");
        assert!(deployed("Temp", &names[..1], 1).to_string().contains("on 1 edge node ('a')"));
    }
}

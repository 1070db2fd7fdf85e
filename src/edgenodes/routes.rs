//! `/api/edgenodes`: create (the access key is shown once), list with live status, show, change,
//! delete and rotate keys of the active organization's nodes; and `/api/edgenodes/register`,
//! where a node enrols itself with a registration key.

use axum::{extract::State, http::StatusCode};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    model::{
        CreatedEdgeNode, EdgeNode, EdgeNodePatch, NAME_MAX, NewEdgeNode, RegisterEdgeNode, RegisteredEdgeNode,
        RotatedAccessKey, check_labels, clean_description, parse_label_filter,
    },
    store::{self, NewNode, NodeChanges},
};
use crate::{
    auth::{
        context::{AuthContext, Require},
        roles::at_least,
        tokens::{random_secret, secret_hash},
    },
    error::{ApiError, ApiResult, ErrorBody},
    events::{
        model::{Level, Source},
        store::NewEvent,
    },
    http::{
        client_ip::ClientIp,
        extract::{Json, Path},
        list::{ListQuery, Page, QueryParams, list_params},
        validate::Checks,
    },
    registrationkeys::store as key_store,
    state::AppState,
    tunnel::{bus, protocol::close_code},
};

/// What every node access key starts with.
pub const ACCESS_KEY_PREFIX: &str = "efn_";
/// Random bytes in an access key (256 bits).
const ACCESS_KEY_BYTES: usize = 32;
/// Characters of the access key kept (in clear) to recognise it by.
const SHOWN_PREFIX_CHARS: usize = 12;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_node, list_nodes))
        .routes(routes!(get_node, patch_node, delete_node))
        .routes(routes!(rotate_access_key))
        .routes(routes!(register_node))
}

/// A new access key and the prefix shown of it.
fn new_access_key() -> (String, String) {
    let key = format!("{ACCESS_KEY_PREFIX}{}", random_secret(ACCESS_KEY_BYTES));
    let prefix = key.chars().take(SHOWN_PREFIX_CHARS).collect();
    (key, prefix)
}

/// An audit event about a node, by the caller.
fn node_event(auth: &AuthContext, action: &'static str, id: Uuid, name: &str, message: String) -> NewEvent {
    let mut event = NewEvent::audit(auth, action, format!("Node: {name}"), message);
    event.node_id = Some(id);
    event
}

/// Create an edge node
///
/// `organizationId` must be the caller's active organization. The answer holds `id` (the node id)
/// and `accessKey`, which the node needs to connect; it is the only time the key is shown.
#[utoipa::path(post, path = "/api/edgenodes", tag = "edgenodes",
    extensions(("x-required-role" = json!("Operator"))),
    request_body = NewEdgeNode,
    responses(
        (status = 201, description = "Created; `accessKey` is shown only now", body = CreatedEdgeNode),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Operator, or `organizationId` is not the active organization", body = ErrorBody),
        (status = 409, description = "A node with this name exists (`DUPLICATE_NAME`)", body = ErrorBody),
    ))]
async fn create_node(
    State(state): State<AppState>,
    auth: Require<at_least::Operator>,
    Json(body): Json<NewEdgeNode>,
) -> ApiResult<(StatusCode, Json<CreatedEdgeNode>)> {
    auth.check_organization(body.organization_id)?;
    body.check()?;
    let (access_key, prefix) = new_access_key();
    let labels = body.labels.unwrap_or_default();
    let mut tx = state.db.begin().await?;
    let row = store::insert(
        &mut tx,
        &NewNode {
            organization_id: auth.organization_id,
            name: body.name.trim(),
            node_type: body.node_type,
            labels: &labels,
            description: clean_description(body.description.as_deref()),
            access_key_hash: &secret_hash(&access_key),
            access_key_prefix: &prefix,
            registration_key_id: None,
        },
    )
    .await?;
    node_event(
        &auth,
        "node.create",
        row.id,
        &row.name,
        format!("created edge node {} ({})", row.name, row.node_type.as_str()),
    )
    .with_data(json!({"nodeType": row.node_type, "labels": row.labels.0, "accessKeyPrefix": row.access_key_prefix}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedEdgeNode { node: row.into(), access_key })))
}

list_params!(NodeListParams = store::LIST_SPEC);

/// List the organization's edge nodes
///
/// With live status. Properties: id, name, type, description, online, createdAt, updatedAt,
/// lastSeenAt, connectedAt, disconnectedAt, agentVersion, protocolVersion, pendingJobs,
/// accessKeyPrefix, keyRotatedAt. By name by default. `labels=site=plant-1,line=3` keeps the nodes
/// carrying all those labels.
#[utoipa::path(get, path = "/api/edgenodes", tag = "edgenodes",
    extensions(("x-required-role" = json!("Viewer"))),
    params(
        NodeListParams,
        ("labels" = Option<String>, Query, description = "`key=value,key2=value2`: only nodes with all these labels",
            pattern = r"^(\s*|[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*[^,\x00\s][^,\x00]*(,[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*[^,\x00\s][^,\x00]*)*)$"),
    ),
    responses(
        (status = 200, description = "One page of nodes", body = Page<EdgeNode>),
        (status = 400, description = "Bad paging, order, filter or labels", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn list_nodes(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    params: QueryParams,
) -> ApiResult<Json<Page<EdgeNode>>> {
    let query = ListQuery::parse(&params, &store::LIST_SPEC)?;
    let labels = parse_label_filter(params.get("labels").unwrap_or_default())?;
    let mut conn = state.db.acquire().await?;
    let (rows, total) = store::list(&mut conn, auth.organization_id, &labels, &query).await?;
    Ok(Json(query.page(rows, total).map(EdgeNode::from)))
}

/// Show an edge node
///
/// With its live status, reported flows and pending jobs.
#[utoipa::path(get, path = "/api/edgenodes/{id}", tag = "edgenodes",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "The node's id")),
    responses(
        (status = 200, description = "The node", body = EdgeNode),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such node in this organization", body = ErrorBody),
    ))]
async fn get_node(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<EdgeNode>> {
    let row = store::find(&mut *state.db.acquire().await?, auth.organization_id, id)
        .await?
        .ok_or(ApiError::NotFound("edge node"))?;
    Ok(Json(row.into()))
}

/// Update an edge node
///
/// JSON Merge Patch of `name`, `type`, `labels` (replaces the whole map; `null` clears it) and
/// `description` (`null` clears it).
#[utoipa::path(patch, path = "/api/edgenodes/{id}", tag = "edgenodes",
    extensions(("x-required-role" = json!("Operator"))),
    params(("id" = Uuid, Path, description = "The node's id")),
    request_body(content = EdgeNodePatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated node", body = EdgeNode),
        (status = 400, description = "Malformed body or invalid fields", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Operator", body = ErrorBody),
        (status = 404, description = "No such node in this organization", body = ErrorBody),
        (status = 409, description = "A node with this name exists (`DUPLICATE_NAME`)", body = ErrorBody),
    ))]
async fn patch_node(
    State(state): State<AppState>,
    auth: Require<at_least::Operator>,
    Path(id): Path<Uuid>,
    Json(patch): Json<EdgeNodePatch>,
) -> ApiResult<Json<EdgeNode>> {
    let fields = patch.fields();
    let name = patch.name.required("name")?;
    let node_type = patch.node_type.required("type")?;
    let labels = patch.labels.optional().map(Option::unwrap_or_default);
    let description = patch.description.optional();
    let mut checks = Checks::new();
    if let Some(name) = &name {
        checks.text("name", name, NAME_MAX);
    }
    if let Some(labels) = &labels {
        check_labels(&mut checks, "labels", labels);
    }
    if let Some(Some(description)) = &description {
        checks.description("description", description);
    }
    checks.finish()?;
    if fields.is_empty() {
        let row = store::find(&mut *state.db.acquire().await?, auth.organization_id, id)
            .await?
            .ok_or(ApiError::NotFound("edge node"))?;
        return Ok(Json(row.into()));
    }
    let changes = NodeChanges {
        name: name.as_deref().map(str::trim),
        node_type,
        labels: labels.as_ref(),
        description: description.as_ref().map(|d| clean_description(d.as_deref())),
    };
    let mut tx = state.db.begin().await?;
    let row =
        store::update(&mut tx, auth.organization_id, id, &changes).await?.ok_or(ApiError::NotFound("edge node"))?;
    node_event(
        &auth,
        "node.update",
        row.id,
        &row.name,
        format!("updated edge node {}: {}", row.name, fields.join(", ")),
    )
    .with_data(json!({"fields": fields}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Json(row.into()))
}

/// Delete an edge node
///
/// Its pending jobs go with it, and its connection (if any) is closed with code 4001.
#[utoipa::path(delete, path = "/api/edgenodes/{id}", tag = "edgenodes",
    extensions(("x-required-role" = json!("Operator"))),
    params(("id" = Uuid, Path, description = "The node's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Operator", body = ErrorBody),
        (status = 404, description = "No such node in this organization", body = ErrorBody),
    ))]
async fn delete_node(
    State(state): State<AppState>,
    auth: Require<at_least::Operator>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let name = store::delete(&mut tx, auth.organization_id, id).await?.ok_or(ApiError::NotFound("edge node"))?;
    bus::disconnect(&mut tx, id, close_code::NODE_DELETED, "node deleted").await?;
    node_event(&auth, "node.delete", id, &name, format!("deleted edge node {name}")).record(&mut tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate an edge node's access key
///
/// The old key stops working at once and the node's connection (if any) is closed with code
/// 4002; configure the node with the new key. The answer is the only time it is shown.
#[utoipa::path(post, path = "/api/edgenodes/{id}/accesskey", tag = "edgenodes",
    extensions(("x-required-role" = json!("Operator"))),
    params(("id" = Uuid, Path, description = "The node's id")),
    responses(
        (status = 200, description = "The new key; `accessKey` is shown only now", body = RotatedAccessKey),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Operator", body = ErrorBody),
        (status = 404, description = "No such node in this organization", body = ErrorBody),
    ))]
async fn rotate_access_key(
    State(state): State<AppState>,
    auth: Require<at_least::Operator>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<RotatedAccessKey>> {
    let (access_key, prefix) = new_access_key();
    let mut tx = state.db.begin().await?;
    let row = store::rotate_key(&mut tx, auth.organization_id, id, &secret_hash(&access_key), &prefix)
        .await?
        .ok_or(ApiError::NotFound("edge node"))?;
    bus::disconnect(&mut tx, id, close_code::KEY_ROTATED, "access key rotated").await?;
    node_event(
        &auth,
        "node.key_rotated",
        id,
        &row.name,
        format!("rotated the access key of edge node {} (now {})", row.name, row.access_key_prefix),
    )
    .with_data(json!({"accessKeyPrefix": row.access_key_prefix}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Json(RotatedAccessKey::new(row, access_key)))
}

/// Enrol a node with a registration key
///
/// Public: the registration key is the credential. Creates a node in the key's organization with
/// the key's type and labels, and answers its `id` and `accessKey` (shown only now). An unknown,
/// revoked, expired or used-up key is a 401, the same for each.
#[utoipa::path(post, path = "/api/edgenodes/register", tag = "edgenodes",
    request_body = RegisterEdgeNode,
    responses(
        (status = 201, description = "Enrolled; `accessKey` is shown only now", body = RegisteredEdgeNode),
        (status = 400, description = "Malformed body or invalid name", body = ErrorBody),
        (status = 401, description = "Unknown, revoked, expired or used-up registration key", body = ErrorBody),
        (status = 409, description = "A node with this name exists (`DUPLICATE_NAME`)", body = ErrorBody),
    ),
    security(()))]
async fn register_node(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<RegisterEdgeNode>,
) -> ApiResult<(StatusCode, Json<RegisteredEdgeNode>)> {
    let mut checks = Checks::new();
    checks.text("name", &body.name, NAME_MAX);
    checks.finish()?;
    let refused = || ApiError::Unauthorized("the registration key is invalid, revoked, expired or used up".into());
    let client_ip = ip.map(|ip| ip.to_string());
    let name = body.name.trim();

    let mut tx = state.db.begin().await?;
    let key =
        key_store::lock_by_hash(&mut tx, &secret_hash(body.registration_key.trim())).await?.ok_or_else(refused)?;
    let subject = format!("Node: {name}");
    if let Some(reason) = key.refusal() {
        // Tell the organization why its node could not enrol; the node only learns "refused".
        let mut event = NewEvent::new(
            Some(key.organization_id),
            Level::Warning,
            Source::ControlCenter,
            "node.registration_refused",
            subject,
            format!("edge node {name} could not enrol: registration key {} ({}) is {reason}", key.name, key.prefix),
        )
        .with_data(json!({"registrationKeyId": key.id, "prefix": key.prefix, "reason": reason}));
        event.client_ip = client_ip;
        event.record(&mut tx).await?;
        tx.commit().await?;
        return Err(refused());
    }
    let (access_key, prefix) = new_access_key();
    let row = store::insert(
        &mut tx,
        &NewNode {
            organization_id: key.organization_id,
            name,
            node_type: key.node_type,
            labels: &key.labels.0,
            description: None,
            access_key_hash: &secret_hash(&access_key),
            access_key_prefix: &prefix,
            registration_key_id: Some(key.id),
        },
    )
    .await?;
    key_store::add_use(&mut tx, key.id).await?;
    let mut event = NewEvent::new(
        Some(key.organization_id),
        Level::Info,
        Source::ControlCenter,
        "node.registered",
        subject,
        format!("edge node {} enrolled with registration key {} ({})", row.name, key.name, key.prefix),
    )
    .with_data(json!({"registrationKeyId": key.id, "prefix": key.prefix, "nodeType": row.node_type}));
    event.node_id = Some(row.id);
    event.client_ip = client_ip;
    event.record(&mut tx).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(RegisteredEdgeNode {
            id: row.id,
            name: row.name,
            organization_id: row.organization_id,
            access_key,
            node_type: row.node_type,
            labels: row.labels.0,
        }),
    ))
}

//! `/api/edgenodes/{id}/jobs` and the node-level commands that create jobs:
//! `/api/edgenodes/{id}/flows/{flowDefinitionId}/start|stop`, and `/api/edgenodes/jobs` for many
//! nodes at once.

use std::time::Duration;

use axum::{extract::State, http::StatusCode};
use serde::Deserialize;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    model::{BulkCommand, BulkCommandResult, Job, JobRow},
    store::{self, NewJob},
};
use crate::{
    auth::{
        context::Require,
        roles::at_least::{Operator, Viewer},
    },
    error::{ApiError, ApiResult, ErrorBody},
    events::store::NewEvent,
    flows::store as flow_store,
    http::{
        extract::{Json, Path, Query},
        list::{Direction, ListQuery, ListSpec, Page, Property, PropertyType, QueryParams, list_params},
    },
    state::AppState,
    tunnel::{bus, protocol::JobCommand},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job, cancel_job))
        .routes(routes!(start_flow))
        .routes(routes!(stop_flow))
        .routes(routes!(bulk_command))
}

/// Longest `?wait=` accepted, in seconds.
const MAX_WAIT_SECONDS: u64 = 60;
/// Most nodes one bulk command may address.
const MAX_BULK_NODES: usize = 50_000;

static JOB_LIST: ListSpec = ListSpec {
    properties: &[
        Property::new("seq", "seq", PropertyType::Integer),
        Property::new("state", "state", PropertyType::Text),
        Property::new("command", "command", PropertyType::Text),
        Property::new("flowDefinitionId", "flow_definition_id", PropertyType::Uuid),
        Property::new("deploymentId", "deployment_id", PropertyType::Uuid),
        Property::new("createdAt", "created_at", PropertyType::Time),
        Property::new("finishedAt", "finished_at", PropertyType::Time),
        Property::new("id", "id", PropertyType::Uuid),
    ],
    default_order: "seq",
    default_direction: Direction::Desc,
    tie_breaker: "id",
};

/// The node, if it is in the organization: 404 otherwise (also for another organization's node).
async fn node_name(conn: &mut PgConnection, organization_id: Uuid, node_id: Uuid) -> ApiResult<String> {
    sqlx::query_scalar("SELECT name FROM edge_nodes WHERE id = $1 AND organization_id = $2")
        .bind(node_id)
        .bind(organization_id)
        .fetch_optional(conn)
        .await?
        .ok_or(ApiError::NotFound("edge node"))
}

/// The flow definition's name, if it is in the organization: a command for a flow that does not
/// exist could only fail on the node, so it is refused here (404) instead of being queued.
async fn flow_name(conn: &mut PgConnection, organization_id: Uuid, flow_definition_id: Uuid) -> ApiResult<String> {
    let definition = flow_store::find_definition(conn, organization_id, flow_definition_id).await?;
    Ok(definition.ok_or(ApiError::NotFound("flow definition"))?.name)
}

list_params!(JobListParams = JOB_LIST);

/// A node's jobs, newest first
///
/// History and pending jobs; filter by `state` (e.g. `filters[0].propertyName=state&filters[0].propertyValue=Queued,Sent,InProgress&filters[0].filterType=in`).
#[utoipa::path(get, path = "/api/edgenodes/{id}/jobs", tag = "jobs",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "Edge node id"), JobListParams),
    responses(
        (status = 200, description = "A page of jobs", body = Page<Job>),
        (status = 400, description = "Bad list parameters", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such edge node", body = ErrorBody),
    ))]
async fn list_jobs(
    State(state): State<AppState>,
    auth: Require<Viewer>,
    Path(node_id): Path<Uuid>,
    params: QueryParams,
) -> ApiResult<Json<Page<Job>>> {
    let list = ListQuery::parse(&params, &JOB_LIST)?;
    let mut conn = state.db.acquire().await?;
    node_name(&mut conn, auth.organization_id, node_id).await?;
    let organization_id = auth.organization_id;
    let (rows, total) = list
        .fetch::<JobRow>(&mut conn, store::COLUMNS, |query: &mut QueryBuilder<Postgres>| {
            query.push(" FROM node_jobs WHERE node_id = ").push_bind(node_id);
            query.push(" AND organization_id = ").push_bind(organization_id);
        })
        .await?;
    Ok(Json(list.page(rows.into_iter().map(Job::from).collect(), total)))
}

/// One job of a node
#[utoipa::path(get, path = "/api/edgenodes/{id}/jobs/{jobId}", tag = "jobs",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "Edge node id"), ("jobId" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such job or edge node", body = ErrorBody),
    ))]
async fn get_job(
    State(state): State<AppState>,
    auth: Require<Viewer>,
    Path((node_id, job_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<Job>> {
    let mut conn = state.db.acquire().await?;
    let row = store::find(&mut conn, auth.organization_id, node_id, job_id).await?.ok_or(ApiError::NotFound("job"))?;
    Ok(Json(row.into()))
}

/// Cancel a pending job
///
/// Only a job the node has not started (Queued or Sent) can be canceled; the node is told to skip it.
#[utoipa::path(delete, path = "/api/edgenodes/{id}/jobs/{jobId}", tag = "jobs",
    extensions(("x-required-role" = json!("Operator"))),
    params(("id" = Uuid, Path, description = "Edge node id"), ("jobId" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The canceled job", body = Job),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Operator role", body = ErrorBody),
        (status = 404, description = "No such job or edge node", body = ErrorBody),
        (status = 409, description = "The job has started or finished", body = ErrorBody),
    ))]
async fn cancel_job(
    State(state): State<AppState>,
    auth: Require<Operator>,
    Path((node_id, job_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<Job>> {
    let mut tx = state.db.begin().await?;
    let name = node_name(&mut tx, auth.organization_id, node_id).await?;
    let Some(row) = store::cancel(&mut tx, auth.organization_id, node_id, job_id).await? else {
        let current =
            store::find(&mut tx, auth.organization_id, node_id, job_id).await?.ok_or(ApiError::NotFound("job"))?;
        return Err(ApiError::conflict(
            "JOB_NOT_CANCELABLE",
            format!("the job is {}; only Queued or Sent jobs can be canceled", current.state.as_str()),
        ));
    };
    bus::publish(&mut tx, &bus::BusMessage::JobCanceled { node_id, job_id }).await?;
    let mut event = NewEvent::audit(
        &auth,
        "job.cancel",
        format!("Node: {name}"),
        format!("canceled job {} #{}", row.command, row.seq),
    );
    event.node_id = Some(node_id);
    event.record(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(row.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct WaitParams {
    /// Wait up to this many seconds (at most 60, and less than the server's request timeout) for
    /// the job to finish; answers 200 with the final job if it did, else 202 with the job as it is.
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
    #[serde(default)]
    #[param(ignore)]
    #[allow(dead_code)]
    pretty: Option<bool>,
}

async fn node_command(
    state: &AppState,
    auth: &Require<Operator>,
    node_id: Uuid,
    flow_definition_id: Uuid,
    command: JobCommand,
    wait: Option<u64>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let wait = match wait {
        Some(seconds) if seconds > MAX_WAIT_SECONDS => {
            return Err(ApiError::invalid_field("wait", format!("at most {MAX_WAIT_SECONDS} seconds")));
        }
        other => other.unwrap_or(0),
    };
    let mut tx = state.db.begin().await?;
    let name = node_name(&mut tx, auth.organization_id, node_id).await?;
    flow_name(&mut tx, auth.organization_id, flow_definition_id).await?;
    let job = NewJob {
        organization_id: auth.organization_id,
        node_id,
        command,
        flow_definition_id: Some(flow_definition_id),
        deployment_id: None,
        flow: None,
        created_by: auth.user_id(),
        ttl_seconds: state.config.job_ttl_seconds,
    };
    let row = store::enqueue(&mut tx, &[job]).await?.into_iter().next().ok_or(ApiError::NotFound("edge node"))?;
    let mut event = NewEvent::audit(
        auth,
        "job.create",
        format!("Node: {name}"),
        format!("queued {} #{}", command.as_str(), row.seq),
    );
    event.node_id = Some(node_id);
    event.flow_definition_id = Some(flow_definition_id);
    event.record(&mut tx).await?;
    tx.commit().await?;
    if wait == 0 {
        return Ok((StatusCode::ACCEPTED, Json(row.into())));
    }
    // Never into the request timeout (a 503): past it, the answer is the job as it is (202).
    let wait = wait.min(state.config.request_timeout_seconds.saturating_sub(2).max(1));
    let latest = store::wait_final(&state.db, row.id, Duration::from_secs(wait)).await?.unwrap_or(row);
    let status = if latest.state.is_final() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(latest.into())))
}

/// Start a flow on a node
///
/// Queues a `start` job for the node (delivered when it is connected, in order). `?wait=SECONDS`
/// waits for the outcome.
#[utoipa::path(post, path = "/api/edgenodes/{id}/flows/{flowDefinitionId}/start", tag = "jobs",
    extensions(("x-required-role" = json!("Operator"))),
    params(("id" = Uuid, Path, description = "Edge node id"), ("flowDefinitionId" = Uuid, Path, description = "Flow definition id"), WaitParams),
    responses(
        (status = 200, description = "The job finished within the wait", body = Job),
        (status = 202, description = "The job is queued (or still running)", body = Job),
        (status = 400, description = "Bad wait", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Operator role", body = ErrorBody),
        (status = 404, description = "No such edge node or flow definition", body = ErrorBody),
    ))]
async fn start_flow(
    State(state): State<AppState>,
    auth: Require<Operator>,
    Path((node_id, flow_definition_id)): Path<(Uuid, Uuid)>,
    Query(params): Query<WaitParams>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    node_command(&state, &auth, node_id, flow_definition_id, JobCommand::Start, params.wait).await
}

/// Stop a flow on a node
///
/// Queues a `stop` job for the node. `?wait=SECONDS` waits for the outcome.
#[utoipa::path(post, path = "/api/edgenodes/{id}/flows/{flowDefinitionId}/stop", tag = "jobs",
    extensions(("x-required-role" = json!("Operator"))),
    params(("id" = Uuid, Path, description = "Edge node id"), ("flowDefinitionId" = Uuid, Path, description = "Flow definition id"), WaitParams),
    responses(
        (status = 200, description = "The job finished within the wait", body = Job),
        (status = 202, description = "The job is queued (or still running)", body = Job),
        (status = 400, description = "Bad wait", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Operator role", body = ErrorBody),
        (status = 404, description = "No such edge node or flow definition", body = ErrorBody),
    ))]
async fn stop_flow(
    State(state): State<AppState>,
    auth: Require<Operator>,
    Path((node_id, flow_definition_id)): Path<(Uuid, Uuid)>,
    Query(params): Query<WaitParams>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    node_command(&state, &auth, node_id, flow_definition_id, JobCommand::Stop, params.wait).await
}

/// Start or stop a flow on many nodes
///
/// Queues one job per node chosen by `nodeIds` and/or `labels` (all must match), in one
/// transaction: every node gets its job, or none does.
#[utoipa::path(post, path = "/api/edgenodes/jobs", tag = "jobs",
    extensions(("x-required-role" = json!("Operator"))),
    request_body = BulkCommand,
    responses(
        (status = 202, description = "The jobs, queued", body = BulkCommandResult),
        (status = 400, description = "Bad command or no selector", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Operator role", body = ErrorBody),
        (status = 404, description = "No such flow definition", body = ErrorBody),
    ))]
async fn bulk_command(
    State(state): State<AppState>,
    auth: Require<Operator>,
    Json(body): Json<BulkCommand>,
) -> ApiResult<(StatusCode, Json<BulkCommandResult>)> {
    let command = match body.command.as_str() {
        "start" => JobCommand::Start,
        "stop" => JobCommand::Stop,
        _ => return Err(ApiError::invalid_field("command", "must be start or stop")),
    };
    if body.node_ids.is_none() && body.labels.is_none() {
        return Err(ApiError::invalid_field("nodeIds", "give nodeIds, labels or both"));
    }
    let labels = serde_json::to_value(body.labels.unwrap_or_default()).map_err(anyhow::Error::new)?;
    let mut tx = state.db.begin().await?;
    let flow = flow_name(&mut tx, auth.organization_id, body.flow_definition_id).await?;
    let nodes: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM edge_nodes WHERE organization_id = $1 AND labels @> $2 \
         AND ($3::uuid[] IS NULL OR id = ANY($3)) ORDER BY id LIMIT $4",
    )
    .bind(auth.organization_id)
    .bind(&labels)
    .bind(&body.node_ids)
    .bind(MAX_BULK_NODES as i64 + 1)
    .fetch_all(&mut *tx)
    .await?;
    if nodes.len() > MAX_BULK_NODES {
        return Err(ApiError::invalid_field("nodeIds", format!("at most {MAX_BULK_NODES} nodes per command")));
    }
    let jobs: Vec<NewJob> = nodes
        .iter()
        .map(|node_id| NewJob {
            organization_id: auth.organization_id,
            node_id: *node_id,
            command,
            flow_definition_id: Some(body.flow_definition_id),
            deployment_id: None,
            flow: None,
            created_by: auth.user_id(),
            ttl_seconds: state.config.job_ttl_seconds,
        })
        .collect();
    let rows = store::enqueue(&mut tx, &jobs).await?;
    let mut event = NewEvent::audit(
        &auth,
        "job.bulk_create",
        format!("Flow: {flow}"),
        format!("queued {} on {} nodes", command.as_str(), rows.len()),
    );
    event.flow_definition_id = Some(body.flow_definition_id);
    event.record(&mut tx).await?;
    tx.commit().await?;
    let jobs: Vec<Job> = rows.into_iter().map(Job::from).collect();
    Ok((StatusCode::ACCEPTED, Json(BulkCommandResult { count: jobs.len(), jobs })))
}

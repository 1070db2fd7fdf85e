//! Deployments: Crosser's `POST /api/flowdefinitions/{flowDefinitionId}/flow/{flowId}/deploy`,
//! the general `POST /api/deployments`, reading them, and their actions
//! (`POST /api/deployments/{id}/pause|resume|start|stop|rollback|cancel`).

use std::collections::HashMap;

use axum::{extract::State, http::StatusCode};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    driver,
    model::{
        Counters, CrosserDeploy, Deployment, DeploymentRow, DeploymentState, NewDeployment, Strategy, Target, TargetRow,
    },
    store::{self, NewRow},
};
use crate::{
    auth::{
        context::{AuthContext, Require},
        roles::at_least::{Operator, Viewer},
    },
    error::{ApiError, ApiResult, ErrorBody},
    events::store::NewEvent,
    flows::store as flow_store,
    http::{
        extract::{Json, Path},
        list::{Direction, ListQuery, ListSpec, Page, Property, PropertyType, QueryParams, list_params},
    },
    state::AppState,
    tunnel::protocol::JobCommand,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(crosser_deploy))
        .routes(routes!(list_deployments, create_deployment))
        .routes(routes!(get_deployment))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(rollback))
        .routes(routes!(cancel))
}

/// Most targets one deployment may have.
const MAX_TARGETS: usize = 50_000;

static DEPLOYMENT_LIST: ListSpec = ListSpec {
    properties: &[
        Property::new("flowDefinitionId", "d.flow_definition_id", PropertyType::Uuid),
        Property::new("flowId", "d.flow_version_id", PropertyType::Uuid),
        Property::new("flowName", "d.flow_name", PropertyType::Text),
        Property::new("state", "d.state", PropertyType::Text),
        Property::new("strategy", "d.strategy", PropertyType::Text),
        Property::new("createdAt", "d.created_at", PropertyType::Time),
        Property::new("finishedAt", "d.finished_at", PropertyType::Time),
        Property::new("id", "d.id", PropertyType::Uuid),
    ],
    default_order: "createdAt",
    default_direction: Direction::Desc,
    tie_breaker: "d.id",
};

fn drift(row: &TargetRow, deployment: &DeploymentRow) -> bool {
    if row.state != super::model::TargetState::Succeeded {
        return false;
    }
    let Some(reported) = &row.reported else { return true };
    let expected_flow = deployment.flow_version_id.or(deployment.flow_draft_id).map(|id| id.to_string());
    let reported_flow = reported.get("flowId").and_then(|v| v.as_str()).map(str::to_owned);
    reported_flow != expected_flow || reported.get("state").and_then(|v| v.as_str()) != Some("running")
}

fn view(row: DeploymentRow, counters: Counters, targets: Option<Vec<TargetRow>>) -> Deployment {
    let targets = targets.map(|targets| {
        targets
            .into_iter()
            .map(|t| Target {
                drift: drift(&t, &row),
                node_id: t.node_id,
                node_name: t.node_name,
                batch: t.batch,
                state: t.state,
                job_id: t.job_id,
                rollback_job_id: t.rollback_job_id,
                previous_flow_id: t.previous_version_id,
                error: t.error,
                started_at: t.started_at.map(Into::into),
                finished_at: t.finished_at.map(Into::into),
                reported: t.reported,
            })
            .collect()
    });
    Deployment {
        id: row.id,
        organization_id: row.organization_id,
        flow_definition_id: row.flow_definition_id,
        flow_id: row.flow_version_id,
        draft_id: row.flow_draft_id,
        flow_name: row.flow_name,
        version: row.version,
        strategy: if row.strategy == "rolling" { Strategy::Rolling } else { Strategy::AllAtOnce },
        batch_size: row.batch_size,
        max_failures: row.max_failures,
        auto_rollback: row.auto_rollback,
        target_timeout_seconds: row.target_timeout_seconds,
        state: row.state,
        current_batch: row.current_batch,
        error: row.error,
        scheduled_at: row.scheduled_at.map(Into::into),
        started_at: row.started_at.map(Into::into),
        finished_at: row.finished_at.map(Into::into),
        created_by: row.created_by,
        created_at: row.created_at.into(),
        counters,
        targets,
    }
}

async fn full_view(conn: &mut PgConnection, row: DeploymentRow) -> ApiResult<Deployment> {
    let targets = store::targets(conn, &row).await?;
    let counters = store::counters(conn, &[row.id]).await?.remove(&row.id).unwrap_or_default();
    Ok(view(row, counters, Some(targets)))
}

#[derive(sqlx::FromRow)]
struct TargetNode {
    id: Uuid,
    name: String,
    node_type: String,
}

/// Creates a deployment in the caller's transaction and launches its first batch there, so the
/// deployment and its first jobs commit together.
async fn create(
    conn: &mut PgConnection,
    state: &AppState,
    auth: &AuthContext,
    spec: NewDeployment,
) -> ApiResult<DeploymentRow> {
    let public_url = state.config.public_base_url();
    let (payload, version_id, draft_id) = match (spec.flow_id, spec.draft_id) {
        (Some(flow_id), None) => {
            let payload =
                flow_store::deploy_payload(conn, auth.organization_id, spec.flow_definition_id, flow_id, &public_url)
                    .await?
                    .ok_or(ApiError::NotFound("flow"))?;
            (payload, Some(flow_id), None)
        }
        (None, Some(draft_id)) => {
            let payload =
                flow_store::draft_payload(conn, auth.organization_id, spec.flow_definition_id, draft_id, &public_url)
                    .await?
                    .ok_or(ApiError::NotFound("flow draft"))?;
            (payload, None, Some(draft_id))
        }
        _ => return Err(ApiError::invalid_field("flowId", "give exactly one of flowId and draftId")),
    };
    if spec.node_ids.is_none() && spec.labels.is_none() {
        return Err(ApiError::invalid_field("nodeIds", "give nodeIds, labels or both"));
    }
    if spec.node_ids.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid_field("nodeIds", "must name at least one edge node"));
    }
    let labels = serde_json::to_value(spec.labels.clone().unwrap_or_default()).map_err(anyhow::Error::new)?;
    let nodes: Vec<TargetNode> = sqlx::query_as(
        "SELECT id, name, node_type FROM edge_nodes WHERE organization_id = $1 AND labels @> $2 \
         AND ($3::uuid[] IS NULL OR id = ANY($3)) ORDER BY name, id LIMIT $4",
    )
    .bind(auth.organization_id)
    .bind(&labels)
    .bind(&spec.node_ids)
    .bind(MAX_TARGETS as i64 + 1)
    .fetch_all(&mut *conn)
    .await?;
    if let Some(ids) = &spec.node_ids {
        let found: std::collections::HashSet<Uuid> = nodes.iter().map(|n| n.id).collect();
        if ids.iter().any(|id| !found.contains(id)) {
            // Whether a node exists, or has the labels, is the organization's state, not a
            // property of the request: 404, as for any object that is not there.
            return Err(if spec.labels.is_some() {
                ApiError::NotFound("edge node with these labels")
            } else {
                ApiError::NotFound("edge node")
            });
        }
    }
    if nodes.is_empty() {
        return Err(ApiError::NotFound("edge node with these labels"));
    }
    if nodes.len() > MAX_TARGETS {
        return Err(ApiError::invalid_field("nodeIds", format!("at most {MAX_TARGETS} targets per deployment")));
    }
    if draft_id.is_some() {
        let production: Vec<&str> =
            nodes.iter().filter(|n| n.node_type != "DevAndTest").map(|n| n.name.as_str()).collect();
        if !production.is_empty() {
            return Err(ApiError::conflict(
                "DRAFT_NOT_ALLOWED",
                format!("drafts may be deployed only to DevAndTest nodes; not to: {}", production.join(", ")),
            ));
        }
    }
    let strategy = spec.strategy.unwrap_or(Strategy::AllAtOnce);
    let batch_size = match strategy {
        Strategy::AllAtOnce => nodes.len() as i32,
        Strategy::Rolling => spec.batch_size.unwrap_or(1),
    };
    let max_failures = spec.max_failures.unwrap_or(0);
    let timeout = spec.target_timeout_seconds.unwrap_or(state.config.deployment_target_timeout_seconds);
    let mut problems = crate::http::validate::Checks::new();
    if batch_size < 1 {
        problems.fail("batchSize", "must be at least 1");
    }
    if strategy == Strategy::AllAtOnce && spec.batch_size.is_some() {
        problems.fail("batchSize", "applies to the rolling strategy only");
    }
    if max_failures < 0 {
        problems.fail("maxFailures", "must not be negative");
    }
    if !(1..=7 * 24 * 3600).contains(&timeout) {
        problems.fail("targetTimeoutSeconds", "must be from 1 second to 7 days");
    }
    problems.finish()?;
    let scheduled_at = spec.scheduled_at.map(|t| t.0).filter(|at| *at > chrono::Utc::now());
    let targets: Vec<(Uuid, i32)> =
        nodes.iter().enumerate().map(|(i, n)| (n.id, (i as i32) / batch_size.max(1))).collect();
    let payload_json = serde_json::to_value(&payload).map_err(anyhow::Error::new)?;
    let row = NewRow {
        organization_id: auth.organization_id,
        flow_definition_id: spec.flow_definition_id,
        flow_version_id: version_id,
        flow_draft_id: draft_id,
        flow_name: &payload.name,
        version: version_id.map(|_| payload.version as i32),
        flow_payload: &payload_json,
        strategy: strategy.as_str(),
        batch_size,
        max_failures,
        auto_rollback: spec.auto_rollback.unwrap_or(false),
        target_timeout_seconds: timeout,
        scheduled_at,
        created_by: auth.user_id(),
    };
    let deployment = store::insert(conn, &row, &targets).await?;
    if deployment.state == DeploymentState::Running {
        store::launch_batch(conn, &deployment, 0, state.config.job_ttl_seconds).await?;
    }
    let mut event = NewEvent::audit(
        auth,
        "deployment.create",
        format!("Deployment: {}", deployment.id),
        format!(
            "deploy {} {} to {} nodes ({})",
            payload.name,
            version_id.map_or_else(|| "draft".to_owned(), |_| format!("v{}", payload.version)),
            nodes.len(),
            strategy.as_str()
        ),
    );
    event.deployment_id = Some(deployment.id);
    event.flow_definition_id = Some(deployment.flow_definition_id);
    event.record(conn).await?;
    Ok(deployment)
}

async fn create_and_answer(
    state: &AppState,
    auth: &AuthContext,
    spec: NewDeployment,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let mut tx = state.db.begin().await?;
    let deployment = create(&mut tx, state, auth, spec).await?;
    tx.commit().await?;
    let view = full_view(&mut *state.db.acquire().await?, deployment).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Deploy a flow version to nodes (Crosser's call)
///
/// `{"edgeNodes": [<edgeNodeId>, ...]}`: creates a deployment of the version to every node at
/// once; answers it (202) while the nodes apply it. Follow it at `/api/deployments/{id}`.
#[utoipa::path(post, path = "/api/flowdefinitions/{flowDefinitionId}/flow/{flowId}/deploy", tag = "deployments",
    extensions(("x-required-role" = json!("Operator"))),
    params(("flowDefinitionId" = Uuid, Path, description = "Flow definition id"), ("flowId" = Uuid, Path, description = "Flow version id")),
    request_body = CrosserDeploy,
    responses(
        (status = 202, description = "The deployment, under way", body = Deployment),
        (status = 400, description = "Bad body or no nodes", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Operator role", body = ErrorBody),
        (status = 404, description = "No such flow version or edge node", body = ErrorBody),
    ))]
async fn crosser_deploy(
    State(state): State<AppState>,
    auth: Require<Operator>,
    Path((flow_definition_id, flow_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<CrosserDeploy>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let spec = NewDeployment {
        flow_definition_id,
        flow_id: Some(flow_id),
        draft_id: None,
        node_ids: Some(body.edge_nodes),
        labels: None,
        strategy: Some(Strategy::AllAtOnce),
        batch_size: None,
        max_failures: None,
        auto_rollback: None,
        target_timeout_seconds: None,
        scheduled_at: None,
    };
    create_and_answer(&state, &auth, spec).await
}

/// Create a deployment
///
/// A flow version (`flowId`) — or a draft (`draftId`), to DevAndTest nodes only — to nodes by
/// `nodeIds` and/or `labels`, `allAtOnce` or `rolling` in batches of `batchSize`, stopping when
/// more than `maxFailures` targets fail (and with `autoRollback`, putting the updated ones back),
/// now or at `scheduledAt`.
#[utoipa::path(post, path = "/api/deployments", tag = "deployments",
    extensions(("x-required-role" = json!("Operator"))),
    request_body = NewDeployment,
    responses(
        (status = 202, description = "The deployment, under way or scheduled", body = Deployment),
        (status = 400, description = "Invalid fields, or no node matches", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs the Operator role", body = ErrorBody),
        (status = 404, description = "No such flow version, draft or edge node", body = ErrorBody),
        (status = 409, description = "DRAFT_NOT_ALLOWED: a draft to a Production node", body = ErrorBody),
    ))]
async fn create_deployment(
    State(state): State<AppState>,
    auth: Require<Operator>,
    Json(body): Json<NewDeployment>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    create_and_answer(&state, &auth, body).await
}

list_params!(DeploymentListParams = DEPLOYMENT_LIST);

/// Deployments, newest first
///
/// Filter with the list conventions (`flowDefinitionId`, `flowId`, `flowName`, `state`, ...) and
/// `nodeId=<id>` for the deployments that target a node.
#[utoipa::path(get, path = "/api/deployments", tag = "deployments",
    extensions(("x-required-role" = json!("Viewer"))),
    params(DeploymentListParams, ("nodeId" = Option<Uuid>, Query, description = "Only deployments targeting this node")),
    responses(
        (status = 200, description = "A page of deployments (without targets)", body = Page<Deployment>),
        (status = 400, description = "Bad list parameters", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn list_deployments(
    State(state): State<AppState>,
    auth: Require<Viewer>,
    params: QueryParams,
) -> ApiResult<Json<Page<Deployment>>> {
    let list = ListQuery::parse(&params, &DEPLOYMENT_LIST)?;
    let node_id = match params.get("nodeId") {
        Some(text) => Some(text.parse::<Uuid>().map_err(|_| ApiError::invalid_field("nodeId", "expected a UUID"))?),
        None => None,
    };
    let organization_id = auth.organization_id;
    let mut conn = state.db.acquire().await?;
    let columns = store::COLUMNS.split(", ").map(|c| format!("d.{c}")).collect::<Vec<_>>().join(", ");
    let (rows, total) = list
        .fetch::<DeploymentRow>(&mut conn, &columns, |query: &mut QueryBuilder<Postgres>| {
            query.push(" FROM deployments d WHERE d.organization_id = ").push_bind(organization_id);
            if let Some(node_id) = node_id {
                query.push(
                    " AND EXISTS (SELECT 1 FROM deployment_targets t WHERE t.deployment_id = d.id AND t.node_id = ",
                );
                query.push_bind(node_id).push(")");
            }
        })
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut counters: HashMap<Uuid, Counters> = store::counters(&mut conn, &ids).await?;
    let items = rows
        .into_iter()
        .map(|row| {
            let c = counters.remove(&row.id).unwrap_or_default();
            view(row, c, None)
        })
        .collect();
    Ok(Json(list.page(items, total)))
}

/// One deployment, with every target
///
/// Per target: its batch, state, job, error, times, what the node reports, and `drift` (the node
/// reports something else than what this deployment put there).
#[utoipa::path(get, path = "/api/deployments/{id}", tag = "deployments",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "Deployment id")),
    responses(
        (status = 200, description = "The deployment", body = Deployment),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
async fn get_deployment(
    State(state): State<AppState>,
    auth: Require<Viewer>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Deployment>> {
    let mut conn = state.db.acquire().await?;
    let row = store::find(&mut conn, auth.organization_id, id).await?.ok_or(ApiError::NotFound("deployment"))?;
    Ok(Json(full_view(&mut conn, row).await?))
}

#[derive(Clone, Copy)]
enum Action {
    Pause,
    Resume,
    Start,
    Stop,
    Rollback,
    Cancel,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Rollback => "rollback",
            Self::Cancel => "cancel",
        }
    }

    /// The states the action applies in.
    fn valid_from(self) -> &'static [DeploymentState] {
        use DeploymentState::*;
        match self {
            Self::Pause => &[Running],
            Self::Resume => &[Paused],
            Self::Start | Self::Stop => &[Running, Paused, Succeeded, Failed],
            Self::Rollback => &[Running, Paused, Succeeded, Failed, Canceled],
            Self::Cancel => &[Scheduled, Running, Paused],
        }
    }
}

async fn act(state: &AppState, auth: &AuthContext, id: Uuid, action: Action) -> ApiResult<Json<Deployment>> {
    let ttl = state.config.job_ttl_seconds;
    let mut tx = state.db.begin().await?;
    let deployment =
        store::lock_for_action(&mut tx, auth.organization_id, id).await?.ok_or(ApiError::NotFound("deployment"))?;
    if !action.valid_from().contains(&deployment.state) {
        let allowed: Vec<&str> = action.valid_from().iter().map(|s| s.as_str()).collect();
        return Err(ApiError::conflict(
            "INVALID_STATE",
            format!(
                "the deployment is {}; {} applies to {} deployments",
                deployment.state.as_str(),
                action.name(),
                allowed.join(", ")
            ),
        ));
    }
    match action {
        Action::Pause => store::set_state(&mut tx, &deployment, DeploymentState::Paused, None).await?,
        Action::Resume => store::set_state(&mut tx, &deployment, DeploymentState::Running, None).await?,
        Action::Start | Action::Stop => {
            let command = if matches!(action, Action::Stop) { JobCommand::Stop } else { JobCommand::Start };
            store::command_targets(&mut tx, &deployment, command, ttl).await?;
        }
        Action::Rollback => {
            store::cancel_targets(&mut tx, &deployment, true).await?;
            store::roll_back_targets(&mut tx, &deployment, &["Succeeded"], ttl).await?;
            store::set_state(&mut tx, &deployment, DeploymentState::RollingBack, Some("rollback requested")).await?;
        }
        Action::Cancel => {
            store::cancel_targets(&mut tx, &deployment, true).await?;
            store::follow_jobs(&mut tx, &deployment).await?;
            store::set_state(&mut tx, &deployment, DeploymentState::Canceled, None).await?;
        }
    }
    let mut event = NewEvent::audit(
        auth,
        "deployment.action",
        format!("Deployment: {}", deployment.id),
        format!("{} requested for {}", action.name(), deployment.flow_name),
    );
    event.deployment_id = Some(deployment.id);
    event.flow_definition_id = Some(deployment.flow_definition_id);
    event.record(&mut tx).await?;
    tx.commit().await?;
    if matches!(action, Action::Resume) {
        driver::drive(state, id).await?;
    }
    let mut conn = state.db.acquire().await?;
    let row = store::find(&mut conn, auth.organization_id, id).await?.ok_or(ApiError::NotFound("deployment"))?;
    Ok(Json(full_view(&mut conn, row).await?))
}

macro_rules! action_route {
    ($name:ident, $action:expr, $path:literal, $summary:literal, $description:literal) => {
        #[doc = $summary]
        #[doc = ""]
        #[doc = $description]
        #[utoipa::path(post, path = $path, tag = "deployments",
            extensions(("x-required-role" = json!("Operator"))),
            params(("id" = Uuid, Path, description = "Deployment id")),
            responses(
                (status = 200, description = "The deployment after the action", body = Deployment),
                (status = 401, description = "Not signed in", body = ErrorBody),
                (status = 403, description = "Needs the Operator role", body = ErrorBody),
                (status = 404, description = "No such deployment", body = ErrorBody),
                (status = 409, description = "INVALID_STATE: not applicable in the deployment's state", body = ErrorBody),
            ))]
        async fn $name(State(state): State<AppState>, auth: Require<Operator>, Path(id): Path<Uuid>) -> ApiResult<Json<Deployment>> {
            act(&state, &auth, id, $action).await
        }
    };
}

action_route!(
    pause,
    Action::Pause,
    "/api/deployments/{id}/pause",
    "Pause a rollout",
    "No further batches start; targets in progress finish. Running deployments only."
);
action_route!(
    resume,
    Action::Resume,
    "/api/deployments/{id}/resume",
    "Resume a paused rollout",
    "The next batch starts when the current one has finished."
);
action_route!(
    start,
    Action::Start,
    "/api/deployments/{id}/start",
    "Start the flow on every target",
    "Queues `start` on every target the deployment updated."
);
action_route!(
    stop,
    Action::Stop,
    "/api/deployments/{id}/stop",
    "Stop the flow on every target",
    "Queues `stop` on every target the deployment updated; the flow stays installed."
);
action_route!(
    rollback,
    Action::Rollback,
    "/api/deployments/{id}/rollback",
    "Roll a deployment back",
    "Targets not yet started are canceled; every target the deployment updated is put back to what it ran before (or the flow is removed where it ran nothing)."
);
action_route!(
    cancel,
    Action::Cancel,
    "/api/deployments/{id}/cancel",
    "Cancel a deployment",
    "Drops the pending targets and the jobs not yet delivered; what already ran stays."
);

//! Deployments in SQL: creating them with their targets, launching a batch (jobs + what each node
//! should run, in the caller's transaction), following the jobs' outcomes, rolling back.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::model::{Counters, DeploymentRow, DeploymentState, TargetRow};
use crate::{
    events::{
        model::{Level, Source},
        store::NewEvent,
    },
    jobs::store::{self as job_store, NewJob},
    tunnel::protocol::JobCommand,
};

pub const COLUMNS: &str = "id, organization_id, flow_definition_id, flow_version_id, flow_draft_id, flow_name, version, \
     flow_payload, strategy, batch_size, max_failures, auto_rollback, target_timeout_seconds, state, current_batch, \
     error, scheduled_at, started_at, finished_at, created_by, created_at, updated_at";

/// A deployment row to insert.
pub struct NewRow<'a> {
    pub organization_id: Uuid,
    pub flow_definition_id: Uuid,
    pub flow_version_id: Option<Uuid>,
    pub flow_draft_id: Option<Uuid>,
    pub flow_name: &'a str,
    pub version: Option<i32>,
    pub flow_payload: &'a Value,
    pub strategy: &'a str,
    pub batch_size: i32,
    pub max_failures: i32,
    pub auto_rollback: bool,
    pub target_timeout_seconds: i32,
    pub scheduled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_by: Option<Uuid>,
}

pub async fn insert(
    conn: &mut PgConnection,
    row: &NewRow<'_>,
    targets: &[(Uuid, i32)],
) -> Result<DeploymentRow, sqlx::Error> {
    let state = if row.scheduled_at.is_some() { DeploymentState::Scheduled } else { DeploymentState::Running };
    let deployment: DeploymentRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deployments (id, organization_id, flow_definition_id, flow_version_id, flow_draft_id, flow_name, \
             version, flow_payload, strategy, batch_size, max_failures, auto_rollback, target_timeout_seconds, state, \
             scheduled_at, started_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 CASE WHEN $14 = 'Running' THEN now() END, $16) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(row.organization_id)
    .bind(row.flow_definition_id)
    .bind(row.flow_version_id)
    .bind(row.flow_draft_id)
    .bind(row.flow_name)
    .bind(row.version)
    .bind(row.flow_payload)
    .bind(row.strategy)
    .bind(row.batch_size)
    .bind(row.max_failures)
    .bind(row.auto_rollback)
    .bind(row.target_timeout_seconds)
    .bind(state)
    .bind(row.scheduled_at)
    .bind(row.created_by)
    .fetch_one(&mut *conn)
    .await?;
    let (nodes, batches): (Vec<Uuid>, Vec<i32>) = targets.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO deployment_targets (deployment_id, node_id, organization_id, batch, state) \
         SELECT $1, node, $2, batch, 'Pending' FROM unnest($3::uuid[], $4::int[]) AS t(node, batch)",
    )
    .bind(deployment.id)
    .bind(deployment.organization_id)
    .bind(&nodes)
    .bind(&batches)
    .execute(conn)
    .await?;
    Ok(deployment)
}

pub async fn find(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<DeploymentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deployments WHERE id = $1 AND organization_id = $2"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Locks a deployment for this transaction; None when another replica holds it (or it is gone).
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<DeploymentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deployments WHERE id = $1 FOR UPDATE SKIP LOCKED"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Locks a deployment of the organization, waiting for a driver that holds it.
pub async fn lock_for_action(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<DeploymentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deployments WHERE id = $1 AND organization_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

pub async fn set_state(
    conn: &mut PgConnection,
    deployment: &DeploymentRow,
    state: DeploymentState,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let finished = matches!(
        state,
        DeploymentState::Succeeded | DeploymentState::Failed | DeploymentState::Canceled | DeploymentState::RolledBack
    );
    sqlx::query(
        "UPDATE deployments SET state = $2, error = coalesce($3, error), updated_at = now(), \
                started_at = CASE WHEN $2 = 'Running' THEN coalesce(started_at, now()) ELSE started_at END, \
                finished_at = CASE WHEN $4 THEN now() ELSE NULL END \
         WHERE id = $1",
    )
    .bind(deployment.id)
    .bind(state)
    .bind(error)
    .bind(finished)
    .execute(&mut *conn)
    .await?;
    let level = match state {
        DeploymentState::Failed => Level::Error,
        DeploymentState::RollingBack | DeploymentState::Canceled => Level::Warning,
        _ => Level::Info,
    };
    let mut event = NewEvent::new(
        Some(deployment.organization_id),
        level,
        Source::ControlCenter,
        "deployment.state",
        format!("Deployment: {}", deployment.id),
        match error {
            Some(error) => format!("{} {}: {error}", deployment.flow_name, state.as_str()),
            None => format!("{} {}", deployment.flow_name, state.as_str()),
        },
    );
    event.deployment_id = Some(deployment.id);
    event.flow_definition_id = Some(deployment.flow_definition_id);
    event.record(conn).await?;
    Ok(())
}

/// The targets, with node names and what each node reports of the flow definition.
pub async fn targets(conn: &mut PgConnection, deployment: &DeploymentRow) -> Result<Vec<TargetRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.deployment_id, t.node_id, n.name AS node_name, t.batch, t.state, t.job_id, t.rollback_job_id, \
                t.previous_version_id, t.error, t.started_at, t.finished_at, \
                (SELECT f FROM jsonb_array_elements(n.reported_flows) f \
                 WHERE f->>'flowDefinitionId' = $2::text LIMIT 1) AS reported \
         FROM deployment_targets t JOIN edge_nodes n ON n.id = t.node_id \
         WHERE t.deployment_id = $1 ORDER BY t.batch, n.name",
    )
    .bind(deployment.id)
    .bind(deployment.flow_definition_id)
    .fetch_all(conn)
    .await
}

/// Target counts by state for these deployments.
pub async fn counters(conn: &mut PgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, Counters>, sqlx::Error> {
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT deployment_id, state, count(*) FROM deployment_targets WHERE deployment_id = ANY($1) \
         GROUP BY deployment_id, state",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let mut out: HashMap<Uuid, Counters> = HashMap::new();
    for (id, state, count) in rows {
        let c = out.entry(id).or_default();
        c.targeted += count;
        match state.as_str() {
            "Pending" => c.pending += count,
            "InProgress" | "RollingBack" => c.in_progress += count,
            "Succeeded" => c.succeeded += count,
            "Failed" | "TimedOut" | "RollbackFailed" => c.failed += count,
            "Canceled" => c.canceled += count,
            "RolledBack" => c.rolled_back += count,
            _ => {}
        }
    }
    Ok(out)
}

/// What a node is intended to run of a flow definition.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Intended {
    node_id: Uuid,
    flow_version_id: Option<Uuid>,
    flow_draft_id: Option<Uuid>,
    payload: Value,
}

async fn intended(
    conn: &mut PgConnection,
    flow_definition_id: Uuid,
    nodes: &[Uuid],
) -> Result<HashMap<Uuid, Intended>, sqlx::Error> {
    let rows: Vec<Intended> = sqlx::query_as(
        "SELECT node_id, flow_version_id, flow_draft_id, payload FROM node_flows \
         WHERE flow_definition_id = $1 AND node_id = ANY($2)",
    )
    .bind(flow_definition_id)
    .bind(nodes)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.node_id, r)).collect())
}

/// The jobs that take a node from what it runs of a flow definition to `to` (None: nothing):
/// stop and remove the old one, then deploy the new one (which downloads and starts it).
fn replacement_jobs(
    deployment: &DeploymentRow,
    node_id: Uuid,
    has_current: bool,
    to: Option<&Value>,
    ttl_seconds: i64,
) -> Vec<NewJob> {
    let job = |command: JobCommand, flow: Option<Value>| NewJob {
        organization_id: deployment.organization_id,
        node_id,
        command,
        flow_definition_id: Some(deployment.flow_definition_id),
        deployment_id: Some(deployment.id),
        flow,
        created_by: deployment.created_by,
        ttl_seconds,
    };
    let mut jobs = Vec::new();
    if has_current {
        jobs.push(job(JobCommand::Stop, None));
        jobs.push(job(JobCommand::Remove, None));
    }
    if let Some(payload) = to {
        jobs.push(job(JobCommand::Deploy, Some(payload.clone())));
    }
    jobs
}

/// The last job of each node among `rows` (the one whose outcome decides the target's).
fn last_job_per_node(rows: &[crate::jobs::model::JobRow]) -> HashMap<Uuid, Uuid> {
    let mut last: HashMap<Uuid, (i64, Uuid)> = HashMap::new();
    for row in rows {
        let entry = last.entry(row.node_id).or_insert((row.seq, row.id));
        if row.seq >= entry.0 {
            *entry = (row.seq, row.id);
        }
    }
    last.into_iter().map(|(node, (_, job))| (node, job)).collect()
}

/// Starts a batch: for each pending target of it, the jobs that replace what the node runs with
/// the deployed flow, and the node's intended flow set to it; all in the caller's transaction.
pub async fn launch_batch(
    conn: &mut PgConnection,
    deployment: &DeploymentRow,
    batch: i32,
    ttl_seconds: i64,
) -> Result<usize, sqlx::Error> {
    let nodes: Vec<Uuid> = sqlx::query_scalar(
        "SELECT node_id FROM deployment_targets WHERE deployment_id = $1 AND batch = $2 AND state = 'Pending' ORDER BY node_id",
    )
    .bind(deployment.id)
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    if nodes.is_empty() {
        return Ok(0);
    }
    let previous = intended(conn, deployment.flow_definition_id, &nodes).await?;
    let mut jobs = Vec::new();
    for node in &nodes {
        jobs.extend(replacement_jobs(
            deployment,
            *node,
            previous.contains_key(node),
            Some(&deployment.flow_payload),
            ttl_seconds,
        ));
    }
    let created = job_store::enqueue(conn, &jobs).await?;
    let last = last_job_per_node(&created);
    let job_ids: Vec<Option<Uuid>> = nodes.iter().map(|n| last.get(n).copied()).collect();
    let previous_payloads: Vec<Option<Value>> =
        nodes.iter().map(|n| previous.get(n).map(|p| p.payload.clone())).collect();
    let previous_versions: Vec<Option<Uuid>> =
        nodes.iter().map(|n| previous.get(n).and_then(|p| p.flow_version_id)).collect();
    let previous_drafts: Vec<Option<Uuid>> =
        nodes.iter().map(|n| previous.get(n).and_then(|p| p.flow_draft_id)).collect();
    sqlx::query(
        "UPDATE deployment_targets t SET state = 'InProgress', job_id = v.job, previous_payload = v.payload, \
                previous_version_id = v.version, previous_draft_id = v.draft, started_at = now(), error = NULL \
         FROM unnest($2::uuid[], $3::uuid[], $4::jsonb[], $5::uuid[], $6::uuid[]) AS v(node, job, payload, version, draft) \
         WHERE t.deployment_id = $1 AND t.node_id = v.node",
    )
    .bind(deployment.id)
    .bind(&nodes)
    .bind(&job_ids)
    .bind(&previous_payloads)
    .bind(&previous_versions)
    .bind(&previous_drafts)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO node_flows (node_id, flow_definition_id, organization_id, flow_version_id, flow_draft_id, version, \
                                 payload, desired_state, deployment_id) \
         SELECT node, $2, $3, $4, $5, $6, $7, 'running', $1 FROM unnest($8::uuid[]) AS node \
         ON CONFLICT (node_id, flow_definition_id) DO UPDATE SET flow_version_id = EXCLUDED.flow_version_id, \
             flow_draft_id = EXCLUDED.flow_draft_id, version = EXCLUDED.version, payload = EXCLUDED.payload, \
             desired_state = 'running', deployment_id = EXCLUDED.deployment_id, updated_at = now()",
    )
    .bind(deployment.id)
    .bind(deployment.flow_definition_id)
    .bind(deployment.organization_id)
    .bind(deployment.flow_version_id)
    .bind(deployment.flow_draft_id)
    .bind(deployment.version)
    .bind(&deployment.flow_payload)
    .bind(&nodes)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE deployments SET current_batch = $2, updated_at = now() WHERE id = $1")
        .bind(deployment.id)
        .bind(batch)
        .execute(&mut *conn)
        .await?;
    Ok(nodes.len())
}

#[derive(sqlx::FromRow)]
struct RollbackTarget {
    node_id: Uuid,
    previous_payload: Option<Value>,
    previous_version_id: Option<Uuid>,
    previous_draft_id: Option<Uuid>,
}

/// Puts the targets in `states` back to what they ran before this deployment (or removes the
/// flow where they ran nothing), as jobs, and restores their intended flow.
pub async fn roll_back_targets(
    conn: &mut PgConnection,
    deployment: &DeploymentRow,
    states: &[&str],
    ttl_seconds: i64,
) -> Result<usize, sqlx::Error> {
    let targets: Vec<RollbackTarget> = sqlx::query_as(
        "SELECT node_id, previous_payload, previous_version_id, previous_draft_id FROM deployment_targets \
         WHERE deployment_id = $1 AND state = ANY($2) ORDER BY node_id",
    )
    .bind(deployment.id)
    .bind(states)
    .fetch_all(&mut *conn)
    .await?;
    if targets.is_empty() {
        return Ok(0);
    }
    let mut jobs = Vec::new();
    for target in &targets {
        jobs.extend(replacement_jobs(deployment, target.node_id, true, target.previous_payload.as_ref(), ttl_seconds));
    }
    let created = job_store::enqueue(conn, &jobs).await?;
    let last = last_job_per_node(&created);
    let nodes: Vec<Uuid> = targets.iter().map(|t| t.node_id).collect();
    let rollback_jobs: Vec<Option<Uuid>> = nodes.iter().map(|n| last.get(n).copied()).collect();
    sqlx::query(
        "UPDATE deployment_targets t SET state = 'RollingBack', rollback_job_id = v.job, started_at = now() \
         FROM unnest($2::uuid[], $3::uuid[]) AS v(node, job) WHERE t.deployment_id = $1 AND t.node_id = v.node",
    )
    .bind(deployment.id)
    .bind(&nodes)
    .bind(&rollback_jobs)
    .execute(&mut *conn)
    .await?;
    // Restore what each node should run, only where this deployment is still what it runs.
    let restore: Vec<&RollbackTarget> = targets.iter().filter(|t| t.previous_payload.is_some()).collect();
    let removed: Vec<Uuid> = targets.iter().filter(|t| t.previous_payload.is_none()).map(|t| t.node_id).collect();
    sqlx::query("DELETE FROM node_flows WHERE flow_definition_id = $1 AND deployment_id = $2 AND node_id = ANY($3)")
        .bind(deployment.flow_definition_id)
        .bind(deployment.id)
        .bind(&removed)
        .execute(&mut *conn)
        .await?;
    if !restore.is_empty() {
        let nodes: Vec<Uuid> = restore.iter().map(|t| t.node_id).collect();
        let payloads: Vec<Option<Value>> = restore.iter().map(|t| t.previous_payload.clone()).collect();
        let versions: Vec<Option<Uuid>> = restore.iter().map(|t| t.previous_version_id).collect();
        let drafts: Vec<Option<Uuid>> = restore.iter().map(|t| t.previous_draft_id).collect();
        sqlx::query(
            "UPDATE node_flows f SET flow_version_id = v.version_id, flow_draft_id = v.draft_id, payload = v.payload, \
                    version = (v.payload->>'version')::int, desired_state = 'running', deployment_id = NULL, updated_at = now() \
             FROM unnest($3::uuid[], $4::jsonb[], $5::uuid[], $6::uuid[]) AS v(node, payload, version_id, draft_id) \
             WHERE f.node_id = v.node AND f.flow_definition_id = $1 AND f.deployment_id = $2",
        )
        .bind(deployment.flow_definition_id)
        .bind(deployment.id)
        .bind(&nodes)
        .bind(&payloads)
        .bind(&versions)
        .bind(&drafts)
        .execute(&mut *conn)
        .await?;
    }
    Ok(targets.len())
}

/// Follows the jobs of the deployment's targets: finished deploy jobs settle their targets,
/// targets past the timeout are TimedOut (their undelivered jobs canceled), finished rollback
/// jobs settle rollbacks.
pub async fn follow_jobs(conn: &mut PgConnection, deployment: &DeploymentRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deployment_targets t SET \
             state = CASE j.state WHEN 'Succeeded' THEN 'Succeeded' WHEN 'TimedOut' THEN 'TimedOut' \
                                  WHEN 'Canceled' THEN 'Canceled' ELSE 'Failed' END, \
             error = CASE WHEN j.state = 'Succeeded' THEN NULL ELSE coalesce(j.error, lower(j.state)) END, \
             finished_at = now() \
         FROM node_jobs j WHERE t.deployment_id = $1 AND t.state = 'InProgress' AND j.id = t.job_id \
           AND j.state IN ('Succeeded', 'Failed', 'TimedOut', 'Canceled', 'Expired')",
    )
    .bind(deployment.id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE deployment_targets t SET \
             state = CASE j.state WHEN 'Succeeded' THEN 'RolledBack' ELSE 'RollbackFailed' END, \
             error = CASE WHEN j.state = 'Succeeded' THEN t.error ELSE 'rollback: ' || coalesce(j.error, lower(j.state)) END, \
             finished_at = now() \
         FROM node_jobs j WHERE t.deployment_id = $1 AND t.state = 'RollingBack' AND j.id = t.rollback_job_id \
           AND j.state IN ('Succeeded', 'Failed', 'TimedOut', 'Canceled', 'Expired')",
    )
    .bind(deployment.id)
    .execute(&mut *conn)
    .await?;
    let timed_out: Vec<Option<Uuid>> = sqlx::query_scalar(
        "UPDATE deployment_targets SET \
             state = CASE state WHEN 'InProgress' THEN 'TimedOut' ELSE 'RollbackFailed' END, \
             error = 'no outcome within ' || $2 || ' s', finished_at = now() \
         WHERE deployment_id = $1 AND state IN ('InProgress', 'RollingBack') \
           AND started_at < now() - make_interval(secs => $2) \
         RETURNING CASE WHEN rollback_job_id IS NULL THEN job_id ELSE rollback_job_id END",
    )
    .bind(deployment.id)
    .bind(f64::from(deployment.target_timeout_seconds))
    .fetch_all(&mut *conn)
    .await?;
    cancel_undelivered(conn, &timed_out.into_iter().flatten().collect::<Vec<_>>(), "the deployment target timed out")
        .await
}

/// Cancels jobs not yet started on their nodes (and tells the nodes to skip them).
async fn cancel_undelivered(conn: &mut PgConnection, jobs: &[Uuid], reason: &str) -> Result<(), sqlx::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let canceled: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE node_jobs SET state = 'Canceled', finished_at = now(), error = $2 \
         WHERE id = ANY($1) AND state IN ('Queued', 'Sent') RETURNING node_id, id",
    )
    .bind(jobs)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    for (node_id, job_id) in canceled {
        crate::tunnel::bus::publish(conn, &crate::tunnel::bus::BusMessage::JobCanceled { node_id, job_id }).await?;
    }
    Ok(())
}

/// Cancels the targets not yet started, and the undelivered jobs of those in progress.
pub async fn cancel_targets(
    conn: &mut PgConnection,
    deployment: &DeploymentRow,
    in_progress_too: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deployment_targets SET state = 'Canceled', finished_at = now() WHERE deployment_id = $1 AND state = 'Pending'",
    )
    .bind(deployment.id)
    .execute(&mut *conn)
    .await?;
    if in_progress_too {
        let jobs: Vec<Uuid> = sqlx::query_scalar(
            "SELECT j.id FROM node_jobs j WHERE j.deployment_id = $1 AND j.state IN ('Queued', 'Sent')",
        )
        .bind(deployment.id)
        .fetch_all(&mut *conn)
        .await?;
        cancel_undelivered(conn, &jobs, "the deployment was canceled").await?;
        // Their targets settle from their jobs' outcome (now Canceled) at the next follow.
    }
    Ok(())
}

/// Target counts that decide the deployment's next step.
#[derive(Debug, Default, sqlx::FromRow)]
pub struct Progress {
    pub pending: i64,
    pub in_progress: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rolling_back: i64,
    pub next_batch: Option<i32>,
}

pub async fn progress(conn: &mut PgConnection, deployment_id: Uuid) -> Result<Progress, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'Pending') AS pending, \
                count(*) FILTER (WHERE state = 'InProgress') AS in_progress, \
                count(*) FILTER (WHERE state = 'Succeeded') AS succeeded, \
                count(*) FILTER (WHERE state IN ('Failed', 'TimedOut')) AS failed, \
                count(*) FILTER (WHERE state = 'RollingBack') AS rolling_back, \
                min(batch) FILTER (WHERE state = 'Pending') AS next_batch \
         FROM deployment_targets WHERE deployment_id = $1",
    )
    .bind(deployment_id)
    .fetch_one(conn)
    .await
}

/// Queues `start` or `stop` of the flow on every target that got it, and records the intent.
pub async fn command_targets(
    conn: &mut PgConnection,
    deployment: &DeploymentRow,
    command: JobCommand,
    ttl_seconds: i64,
) -> Result<usize, sqlx::Error> {
    let nodes: Vec<Uuid> = sqlx::query_scalar(
        "SELECT t.node_id FROM deployment_targets t JOIN node_flows f \
             ON f.node_id = t.node_id AND f.flow_definition_id = $2 AND f.deployment_id = $1 \
         WHERE t.deployment_id = $1 AND t.state = 'Succeeded' ORDER BY t.node_id",
    )
    .bind(deployment.id)
    .bind(deployment.flow_definition_id)
    .fetch_all(&mut *conn)
    .await?;
    let jobs: Vec<NewJob> = nodes
        .iter()
        .map(|node| NewJob {
            organization_id: deployment.organization_id,
            node_id: *node,
            command,
            flow_definition_id: Some(deployment.flow_definition_id),
            deployment_id: Some(deployment.id),
            flow: None,
            created_by: deployment.created_by,
            ttl_seconds,
        })
        .collect();
    job_store::enqueue(conn, &jobs).await?;
    let desired = if command == JobCommand::Stop { "stopped" } else { "running" };
    sqlx::query(
        "UPDATE node_flows SET desired_state = $3, updated_at = now() \
         WHERE flow_definition_id = $1 AND deployment_id = $2 AND node_id = ANY($4)",
    )
    .bind(deployment.flow_definition_id)
    .bind(deployment.id)
    .bind(desired)
    .bind(&nodes)
    .execute(conn)
    .await?;
    Ok(nodes.len())
}

/// Deployments the driver has work on: running, rolling back, paused with targets still in
/// flight, and scheduled ones whose time has come.
pub async fn due(conn: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM deployments d WHERE state IN ('Running', 'RollingBack', 'Paused') \
            OR (state = 'Scheduled' AND scheduled_at <= now()) \
            OR EXISTS (SELECT 1 FROM deployment_targets t WHERE t.deployment_id = d.id \
                       AND t.state IN ('InProgress', 'RollingBack')) \
         ORDER BY updated_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

//! Jobs in SQL: enqueueing (in the caller's transaction, with the bus poke), taking jobs for
//! delivery, applying the nodes' updates in batches, canceling, expiring.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::model::JobRow;
use crate::tunnel::{
    bus,
    protocol::{JobCommand, JobUpdate, JobUpdateState},
};

pub const COLUMNS: &str = "id, organization_id, node_id, seq, command, flow_definition_id, deployment_id, flow, \
     state, error, attempts, created_by, created_at, sent_at, received_at, started_at, finished_at, expires_at";

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub organization_id: Uuid,
    pub node_id: Uuid,
    pub command: JobCommand,
    pub flow_definition_id: Option<Uuid>,
    pub deployment_id: Option<Uuid>,
    pub flow: Option<Value>,
    pub created_by: Option<Uuid>,
    pub ttl_seconds: i64,
}

/// Creates jobs, each with the next `seq` of its node, and announces them on the bus: both take
/// effect when the caller's transaction commits. Nodes of another organization are skipped, so
/// the caller checks the count when that matters.
pub async fn enqueue(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<JobRow>, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
    let organizations: Vec<Uuid> = jobs.iter().map(|j| j.organization_id).collect();
    let nodes: Vec<Uuid> = jobs.iter().map(|j| j.node_id).collect();
    let commands: Vec<&str> = jobs.iter().map(|j| j.command.as_str()).collect();
    let flow_definitions: Vec<Option<Uuid>> = jobs.iter().map(|j| j.flow_definition_id).collect();
    let deployments: Vec<Option<Uuid>> = jobs.iter().map(|j| j.deployment_id).collect();
    let flows: Vec<Option<Value>> = jobs.iter().map(|j| j.flow.clone()).collect();
    let creators: Vec<Option<Uuid>> = jobs.iter().map(|j| j.created_by).collect();
    let ttls: Vec<i64> = jobs.iter().map(|j| j.ttl_seconds).collect();
    // Numbering: each node's counter is bumped once per job for it, under the node's row lock,
    // so concurrent enqueues for one node get distinct, increasing seqs.
    let rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH input AS (\
             SELECT *, row_number() OVER (PARTITION BY node_id ORDER BY ord) AS nth, \
                    count(*) OVER (PARTITION BY node_id) AS per_node \
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::uuid[], $7::jsonb[], $8::uuid[], $9::bigint[]) \
                  WITH ORDINALITY AS t(id, organization_id, node_id, command, flow_definition_id, deployment_id, flow, created_by, ttl, ord)), \
         bumped AS (\
             UPDATE edge_nodes n SET last_job_seq = n.last_job_seq + c.per_node \
             FROM (SELECT DISTINCT node_id, organization_id, per_node FROM input) c \
             WHERE n.id = c.node_id AND n.organization_id = c.organization_id \
             RETURNING n.id, n.last_job_seq - c.per_node AS base) \
         INSERT INTO node_jobs (id, organization_id, node_id, seq, command, flow_definition_id, deployment_id, flow, created_by, expires_at) \
         SELECT i.id, i.organization_id, i.node_id, b.base + i.nth, i.command, i.flow_definition_id, i.deployment_id, i.flow, \
                i.created_by, now() + make_interval(secs => i.ttl) \
         FROM input i JOIN bumped b ON b.id = i.node_id \
         RETURNING {COLUMNS}"
    )))
    .bind(&ids)
    .bind(&organizations)
    .bind(&nodes)
    .bind(&commands)
    .bind(&flow_definitions)
    .bind(&deployments)
    .bind(&flows)
    .bind(&creators)
    .bind(&ttls)
    .fetch_all(&mut *conn)
    .await?;
    let mut poked: Vec<Uuid> = rows.iter().map(|r| r.node_id).collect();
    poked.sort();
    poked.dedup();
    bus::publish_jobs(conn, &poked).await?;
    let mut rows = rows;
    rows.sort_by_key(|r| (r.node_id, r.seq));
    Ok(rows)
}

pub async fn find(
    conn: &mut PgConnection,
    organization_id: Uuid,
    node_id: Uuid,
    job_id: Uuid,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM node_jobs WHERE id = $1 AND node_id = $2 AND organization_id = $3"
    )))
    .bind(job_id)
    .bind(node_id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

pub async fn find_by_id(pool: &PgPool, job_id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM node_jobs WHERE id = $1")))
        .bind(job_id)
        .fetch_optional(pool)
        .await
}

/// Cancels a job that has not started on the node; answers it, or None when it is not
/// cancelable (or not there).
pub async fn cancel(
    conn: &mut PgConnection,
    organization_id: Uuid,
    node_id: Uuid,
    job_id: Uuid,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE node_jobs SET state = 'Canceled', finished_at = now(), error = 'canceled' \
         WHERE id = $1 AND node_id = $2 AND organization_id = $3 AND state IN ('Queued', 'Sent') \
         RETURNING {COLUMNS}"
    )))
    .bind(job_id)
    .bind(node_id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

/// Jobs of these nodes canceled in the last `within` after they had been sent: the nodes may
/// hold them, and a replica whose bus listener was away may have missed telling them.
pub async fn recently_canceled_after_sending(
    pool: &PgPool,
    nodes: &[Uuid],
    within: Duration,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, id FROM node_jobs WHERE node_id = ANY($1) AND state = 'Canceled' \
         AND sent_at IS NOT NULL AND finished_at > now() - make_interval(secs => $2) ORDER BY node_id, seq",
    )
    .bind(nodes)
    .bind(within.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Marks the queued jobs of these nodes Sent and answers them by node and seq: the delivery
/// worker writes them to the sockets in that order.
pub async fn take_queued(pool: &PgPool, nodes: &[Uuid]) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE node_jobs SET state = 'Sent', sent_at = now(), attempts = attempts + 1 \
         WHERE node_id = ANY($1) AND state = 'Queued' AND expires_at > now() RETURNING {COLUMNS}"
    )))
    .bind(nodes)
    .fetch_all(pool)
    .await?;
    rows.sort_by_key(|r| (r.node_id, r.seq));
    Ok(rows)
}

/// Every unfinished job of these nodes by node and seq, for (re)connected nodes; queued ones
/// become Sent.
pub async fn take_unfinished(pool: &PgPool, nodes: &[Uuid]) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE node_jobs SET state = CASE WHEN state = 'Queued' THEN 'Sent' ELSE state END, \
                sent_at = now(), attempts = attempts + 1 \
         WHERE node_id = ANY($1) AND state IN ('Queued', 'Sent', 'InProgress') AND \
               (state = 'InProgress' OR expires_at > now()) \
         RETURNING {COLUMNS}"
    )))
    .bind(nodes)
    .fetch_all(pool)
    .await?;
    rows.sort_by_key(|r| (r.node_id, r.seq));
    Ok(rows)
}

/// Puts jobs that could not be written to their socket back in the queue.
pub async fn requeue(pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE node_jobs SET state = 'Queued' WHERE id = ANY($1) AND state = 'Sent'")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

fn rank(state: JobUpdateState) -> u8 {
    match state {
        JobUpdateState::Received => 0,
        JobUpdateState::InProgress => 1,
        JobUpdateState::Succeeded | JobUpdateState::Failed => 2,
    }
}

fn update_name(state: JobUpdateState) -> &'static str {
    match state {
        JobUpdateState::Received => "received",
        JobUpdateState::InProgress => "inProgress",
        JobUpdateState::Succeeded => "succeeded",
        JobUpdateState::Failed => "failed",
    }
}

/// Longest error text kept from a node.
const MAX_ERROR_CHARS: usize = 2000;

/// Applies nodes' job updates in one statement: only the furthest update per job counts, only
/// unfinished jobs of the reporting node change, and every job reaching a final state gets its
/// outcome event in the same statement.
pub async fn apply_updates(pool: &PgPool, updates: Vec<(Uuid, JobUpdate)>) -> Result<(), sqlx::Error> {
    let mut furthest: HashMap<Uuid, (Uuid, JobUpdate)> = HashMap::new();
    for (node_id, update) in updates {
        match furthest.get(&update.job_id) {
            Some((_, known)) if rank(known.state) >= rank(update.state) => {}
            _ => {
                furthest.insert(update.job_id, (node_id, update));
            }
        }
    }
    if furthest.is_empty() {
        return Ok(());
    }
    let mut jobs = Vec::with_capacity(furthest.len());
    let mut nodes = Vec::with_capacity(furthest.len());
    let mut states = Vec::with_capacity(furthest.len());
    let mut errors = Vec::with_capacity(furthest.len());
    let mut event_ids = Vec::with_capacity(furthest.len());
    for (job_id, (node_id, update)) in furthest {
        jobs.push(job_id);
        nodes.push(node_id);
        states.push(update_name(update.state));
        errors.push(update.error.map(|e| e.chars().take(MAX_ERROR_CHARS).collect::<String>()));
        event_ids.push(Uuid::now_v7());
    }
    sqlx::query(
        "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[]) \
                         AS t(job_id, node_id, update, error, event_id)), \
         changed AS (\
             UPDATE node_jobs j SET \
                 state = CASE i.update WHEN 'received' THEN (CASE WHEN j.state = 'Queued' THEN 'Sent' ELSE j.state END) \
                                       WHEN 'inProgress' THEN 'InProgress' \
                                       WHEN 'succeeded' THEN 'Succeeded' ELSE 'Failed' END, \
                 received_at = coalesce(j.received_at, now()), \
                 started_at = CASE WHEN i.update = 'received' THEN j.started_at ELSE coalesce(j.started_at, now()) END, \
                 finished_at = CASE WHEN i.update IN ('succeeded', 'failed') THEN now() ELSE j.finished_at END, \
                 error = CASE WHEN i.update = 'failed' THEN coalesce(i.error, 'failed on the node') ELSE j.error END \
             FROM input i \
             WHERE j.id = i.job_id AND j.node_id = i.node_id AND j.state IN ('Queued', 'Sent', 'InProgress') \
             RETURNING j.id, j.organization_id, j.node_id, j.seq, j.command, j.flow_definition_id, j.deployment_id, \
                       j.state, j.error, i.event_id) \
         INSERT INTO events (id, organization_id, level, source, action, subject, message, node_id, \
                             flow_definition_id, deployment_id, data) \
         SELECT c.event_id, c.organization_id, CASE c.state WHEN 'Succeeded' THEN 'Info' ELSE 'Error' END, \
                'ControlCenter', CASE c.state WHEN 'Succeeded' THEN 'job.succeeded' ELSE 'job.failed' END, \
                'Node: ' || n.name, \
                'job ' || c.command || ' #' || c.seq || CASE c.state WHEN 'Succeeded' THEN ' succeeded' \
                                                                      ELSE ' failed: ' || coalesce(c.error, '') END, \
                c.node_id, c.flow_definition_id, c.deployment_id, \
                jsonb_build_object('jobId', c.id, 'seq', c.seq, 'command', c.command) \
         FROM changed c JOIN edge_nodes n ON n.id = c.node_id \
         WHERE c.state IN ('Succeeded', 'Failed')",
    )
    .bind(&jobs)
    .bind(&nodes)
    .bind(&states)
    .bind(&errors)
    .bind(&event_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Expires jobs never delivered in time and times out jobs in progress for too long; answers
/// how many changed. Bounded batches, safe on several replicas at once.
pub async fn sweep(pool: &PgPool, job_timeout_seconds: i64) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "WITH stale AS (\
             SELECT id, CASE WHEN state = 'InProgress' THEN 'TimedOut' ELSE 'Expired' END AS outcome FROM node_jobs \
             WHERE (state IN ('Queued', 'Sent') AND expires_at <= now()) \
                OR (state = 'InProgress' AND started_at < now() - make_interval(secs => $1)) \
             LIMIT 1000 FOR UPDATE SKIP LOCKED), \
         changed AS (\
             UPDATE node_jobs j SET state = s.outcome, finished_at = now(), \
                    error = CASE s.outcome WHEN 'TimedOut' THEN 'the node did not finish the job in time' \
                                           ELSE 'the job was not delivered before it expired' END \
             FROM stale s WHERE j.id = s.id \
             RETURNING j.id, j.organization_id, j.node_id, j.seq, j.command, j.flow_definition_id, j.deployment_id, j.state) \
         INSERT INTO events (id, organization_id, level, source, action, subject, message, node_id, \
                             flow_definition_id, deployment_id, data) \
         SELECT gen_random_uuid(), c.organization_id, 'Warning', 'ControlCenter', \
                CASE c.state WHEN 'TimedOut' THEN 'job.timed_out' ELSE 'job.expired' END, \
                'Node: ' || n.name, 'job ' || c.command || ' #' || c.seq || ' ' || lower(c.state), \
                c.node_id, c.flow_definition_id, c.deployment_id, jsonb_build_object('jobId', c.id, 'seq', c.seq) \
         FROM changed c JOIN edge_nodes n ON n.id = c.node_id",
    )
    .bind(job_timeout_seconds as f64)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub async fn shadows_of(pool: &PgPool, nodes: &[Uuid]) -> Result<Vec<(Uuid, Value, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT id, shadow_desired, shadow_version FROM edge_nodes WHERE id = ANY($1)")
        .bind(nodes)
        .fetch_all(pool)
        .await
}

/// Waits (polling) until the job is final or `within` passes; answers its latest row.
pub async fn wait_final(pool: &PgPool, job_id: Uuid, within: Duration) -> Result<Option<JobRow>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let row = find_by_id(pool, job_id).await?;
        let done = row.as_ref().is_none_or(|r| r.state.is_final());
        if done || tokio::time::Instant::now() >= deadline {
            return Ok(row);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

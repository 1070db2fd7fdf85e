//! Who is online. A node is online while the replica holding its socket is alive: each replica
//! keeps a row in `replicas` with `alive_until` pushed forward by its heartbeat, and claims its
//! nodes by `edge_nodes.replica_id`. A socket that dies silently is closed by its session after two
//! missed heartbeats; a replica that dies stops renewing `alive_until`, and its nodes read as
//! offline once it passes, with no one having to clean up first.

/// SQL: whether the node aliased `n` is online. A fixed fragment for queries of `edge_nodes n`.
pub const ONLINE_SQL: &str = "(n.replica_id IS NOT NULL AND EXISTS (SELECT 1 FROM replicas r \
     WHERE r.id = n.replica_id AND r.alive_until > now()))";

/// SQL: the node's unfinished jobs (queued, sent or in progress).
pub const PENDING_JOBS_SQL: &str = "(SELECT count(*) FROM node_jobs j \
     WHERE j.node_id = n.id AND j.state IN ('Queued', 'Sent', 'InProgress'))";

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::{
    bus::{self, BusMessage},
    hub::Hub,
    protocol::{Hello, close_code},
    session::NodeIdentity,
};
use crate::{
    events::{
        model::{Level, Source},
        store::NewEvent,
    },
    jobs::store as job_store,
};

/// Writes (or renews) this replica's row: its nodes count as online until `alive_until`.
pub async fn heartbeat(hub: &Hub) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO replicas (id, alive_until) VALUES ($1, now() + make_interval(secs => $2)) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), alive_until = EXCLUDED.alive_until",
    )
    .bind(hub.replica_id)
    .bind(hub.settings.offline_after.as_secs_f64())
    .execute(hub.db())
    .await?;
    Ok(())
}

/// Records a node's connection and takes it over from any older session, here or elsewhere.
pub async fn connected(
    hub: &Hub,
    node: &NodeIdentity,
    session_id: Uuid,
    hello: &Hello,
    client_ip: Option<String>,
) -> Result<(), sqlx::Error> {
    let mut tx = hub.db().begin().await?;
    let flows = serde_json::to_value(&hello.flows).unwrap_or_default();
    let previous: Option<(Option<Uuid>,)> = sqlx::query_as(
        "WITH previous AS (SELECT id, tunnel_session_id FROM edge_nodes WHERE id = $1 FOR UPDATE) \
         UPDATE edge_nodes n SET replica_id = $2, tunnel_session_id = $3, connected_at = now(), last_seen_at = now(), \
                disconnected_at = NULL, agent_version = $4, protocol_version = $5, reported_flows = $6, \
                reported_at = now(), client_ip = $7 \
         FROM previous WHERE n.id = previous.id RETURNING previous.tunnel_session_id",
    )
    .bind(node.id)
    .bind(hub.replica_id)
    .bind(session_id)
    .bind(hello.agent_version.chars().take(64).collect::<String>())
    .bind(hello.protocol_version as i32)
    .bind(flows)
    .bind(&client_ip)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((previous_session,)) = previous else {
        // Deleted between the handshake and now.
        return Err(sqlx::Error::RowNotFound);
    };
    if previous_session.is_some() {
        let replaced = BusMessage::Disconnect {
            node_id: node.id,
            code: close_code::REPLACED,
            reason: "replaced by a newer connection".into(),
            keep_session: Some(session_id),
        };
        bus::publish(&mut tx, &replaced).await?;
    }
    let mut event = NewEvent::new(
        Some(node.organization_id),
        Level::Info,
        Source::ControlCenter,
        "node.connected",
        format!("Node: {}", node.name),
        format!("connected (agent {})", hello.agent_version),
    );
    event.node_id = Some(node.id);
    event.client_ip = client_ip;
    event.data = Some(serde_json::json!({"sessionId": session_id, "replicaId": hub.replica_id}));
    event.record(&mut tx).await?;
    tx.commit().await
}

/// Records that a session ended, unless a newer session of the node has taken over.
pub async fn disconnected(
    hub: &Hub,
    node: &NodeIdentity,
    session_id: Uuid,
    reason: &str,
    level: Level,
) -> Result<(), sqlx::Error> {
    let mut tx = hub.db().begin().await?;
    let ended = sqlx::query(
        "UPDATE edge_nodes SET replica_id = NULL, tunnel_session_id = NULL, disconnected_at = now(), \
                last_seen_at = now() WHERE id = $1 AND tunnel_session_id = $2",
    )
    .bind(node.id)
    .bind(session_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if ended {
        let mut event = NewEvent::new(
            Some(node.organization_id),
            level,
            Source::ControlCenter,
            "node.disconnected",
            format!("Node: {}", node.name),
            format!("disconnected: {reason}"),
        );
        event.node_id = Some(node.id);
        event.data = Some(serde_json::json!({"sessionId": session_id}));
        event.record(&mut tx).await?;
    }
    tx.commit().await
}

/// Of these held sessions (node, session), those a bus message would have closed had it not
/// been missed: the node was deleted (4001), another session of it took over (4000), or its key
/// was rotated while connected (4002). Answers (node, session, close code).
pub async fn stale_sessions(pool: &PgPool, held: &[(Uuid, Uuid)]) -> Result<Vec<(Uuid, Uuid, u16)>, sqlx::Error> {
    let (nodes, sessions): (Vec<Uuid>, Vec<Uuid>) = held.iter().copied().unzip();
    let rows: Vec<(Uuid, Uuid, i32)> = sqlx::query_as(
        "SELECT h.node_id, h.session_id, CASE WHEN n.id IS NULL THEN $3 \
                WHEN n.tunnel_session_id IS DISTINCT FROM h.session_id THEN $4 ELSE $5 END \
         FROM unnest($1::uuid[], $2::uuid[]) AS h(node_id, session_id) LEFT JOIN edge_nodes n ON n.id = h.node_id \
         WHERE n.id IS NULL \
            OR (n.tunnel_session_id IS NOT NULL AND n.tunnel_session_id <> h.session_id) \
            OR (n.tunnel_session_id = h.session_id AND n.key_rotated_at > n.connected_at)",
    )
    .bind(nodes)
    .bind(sessions)
    .bind(i32::from(close_code::NODE_DELETED))
    .bind(i32::from(close_code::REPLACED))
    .bind(i32::from(close_code::KEY_ROTATED))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(node, session, code)| (node, session, u16::try_from(code).unwrap_or(close_code::REPLACED)))
        .collect())
}

/// Marks offline the nodes of replicas that stopped renewing their heartbeat (crashed), with an
/// event each, and forgets those replicas. Any replica may run it; each dead replica is taken once.
pub async fn sweep_dead_replicas(pool: &PgPool, grace: Duration) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "WITH dead AS (DELETE FROM replicas WHERE alive_until < now() - make_interval(secs => $1) RETURNING id), \
         orphaned AS (UPDATE edge_nodes n SET replica_id = NULL, tunnel_session_id = NULL, disconnected_at = now() \
                      FROM dead WHERE n.replica_id = dead.id RETURNING n.id, n.organization_id, n.name) \
         INSERT INTO events (id, organization_id, level, source, action, subject, message, node_id) \
         SELECT gen_random_uuid(), organization_id, 'Warning', 'ControlCenter', 'node.disconnected', 'Node: ' || name, \
                'disconnected: the server replica holding it stopped answering', id FROM orphaned",
    )
    .bind(grace.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// On graceful shutdown: this replica's remaining nodes are offline, and its row goes.
pub async fn retire_replica(hub: &Hub) -> Result<(), sqlx::Error> {
    let mut tx = hub.db().begin().await?;
    sqlx::query(
        "UPDATE edge_nodes SET replica_id = NULL, tunnel_session_id = NULL, disconnected_at = now() WHERE replica_id = $1",
    )
    .bind(hub.replica_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM replicas WHERE id = $1").bind(hub.replica_id).execute(&mut *tx).await?;
    tx.commit().await
}

/// The replica's periodic work: renew its heartbeat (a third of the offline threshold, so two
/// can fail before its nodes read as offline), flush last-seen times, expire and time out jobs,
/// sweep dead replicas, and resynchronise deliveries in case a notification was missed.
///
/// Dead replicas are swept only once this replica's own heartbeat has worked for the whole
/// offline threshold: after a database outage every replica's heartbeat has lapsed, and the live
/// ones need that long to renew theirs before they could be told apart from dead ones (sweeping
/// earlier would show their connected nodes offline).
pub fn spawn_maintenance(hub: std::sync::Arc<Hub>) {
    let mut stopped = hub.stopped();
    let period = hub.settings.offline_after / 3;
    let weak = std::sync::Arc::downgrade(&hub);
    drop(hub);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        let mut healthy_since: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => return,
            }
            let Some(hub) = weak.upgrade() else { return };
            if *stopped.borrow() {
                return;
            }
            match heartbeat(&hub).await {
                Ok(()) => {
                    healthy_since.get_or_insert_with(std::time::Instant::now);
                }
                Err(err) => {
                    healthy_since = None;
                    tracing::warn!(error = %err, "replica heartbeat failed; nodes here may read as offline");
                }
            }
            if let Err(err) = hub.flush_last_seen().await {
                tracing::warn!(error = %err, "flushing last-seen times failed");
            }
            hub.prune_calls();
            if let Err(err) = job_store::sweep(hub.db(), hub.settings.job_timeout_seconds).await {
                tracing::warn!(error = %err, "expiring jobs failed");
            }
            if healthy_since.is_some_and(|since| since.elapsed() >= hub.settings.offline_after)
                && let Err(err) = sweep_dead_replicas(hub.db(), hub.settings.offline_after).await
            {
                tracing::warn!(error = %err, "sweeping dead replicas failed");
            }
            hub.resync();
        }
    });
}

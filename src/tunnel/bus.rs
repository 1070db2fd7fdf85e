//! The bus between replicas: PostgreSQL LISTEN/NOTIFY on one channel, JSON payloads. A message
//! published inside a transaction is delivered when (and only if) it commits, so "a job was
//! created" and its announcement can never disagree.
//!
//! Payloads only point at rows (node ids, call ids); the database stays the truth. When the
//! listener reconnects (notifications may have been lost) the hub catches up from the tables.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

pub const CHANNEL: &str = "edgeflow_tunnel";

/// Node ids per `Jobs` message: a NOTIFY payload is at most 8000 bytes.
const NODES_PER_MESSAGE: usize = 180;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum BusMessage {
    /// These nodes have jobs to deliver (or a job was canceled): whoever holds them acts.
    #[serde(rename_all = "camelCase")]
    Jobs { nodes: Vec<Uuid> },
    /// A job was canceled: the node should skip it if it has not started it.
    #[serde(rename_all = "camelCase")]
    JobCanceled { node_id: Uuid, job_id: Uuid },
    /// Close the node's socket (deleted: 4001, key rotated: 4002, replaced: 4000). A replaced
    /// connection names the session to keep.
    #[serde(rename_all = "camelCase")]
    Disconnect { node_id: Uuid, code: u16, reason: String, keep_session: Option<Uuid> },
    /// The node's desired shadow changed.
    #[serde(rename_all = "camelCase")]
    Shadow { node_id: Uuid },
    /// A synchronous call, for the replica holding the node.
    #[serde(rename_all = "camelCase")]
    Call { call_id: Uuid, node_id: Uuid, method: String, params: Value, reply_to: Uuid },
    /// The answer of a call, for the replica that made it: inline, or in `node_call_replies`.
    #[serde(rename_all = "camelCase")]
    CallReply { call_id: Uuid, reply_to: Uuid, body: Option<Value> },
}

pub async fn publish(conn: &mut PgConnection, message: &BusMessage) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_string(message).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(conn).await?;
    Ok(())
}

/// Announces new (or canceled) jobs for these nodes.
pub async fn publish_jobs(conn: &mut PgConnection, nodes: &[Uuid]) -> Result<(), sqlx::Error> {
    for chunk in nodes.chunks(NODES_PER_MESSAGE) {
        publish(conn, &BusMessage::Jobs { nodes: chunk.to_vec() }).await?;
    }
    Ok(())
}

/// Closes a node's socket wherever it is (after the transaction commits).
pub async fn disconnect(conn: &mut PgConnection, node_id: Uuid, code: u16, reason: &str) -> Result<(), sqlx::Error> {
    publish(conn, &BusMessage::Disconnect { node_id, code, reason: reason.to_owned(), keep_session: None }).await
}

/// Starts listening to the bus for the hub: LISTEN is in place when this returns, so nothing
/// published after start-up is missed; then messages are handled until the replica stops. After
/// a reconnect (notifications may have been missed) the hub catches up from the tables.
pub async fn start_listener(hub: std::sync::Arc<super::hub::Hub>) -> Result<(), sqlx::Error> {
    let pool = hub.db().clone();
    let mut listener = crate::db::listener(&pool, CHANNEL).await?;
    let mut stopped = hub.stopped();
    let weak = std::sync::Arc::downgrade(&hub);
    drop(hub);
    tokio::spawn(async move {
        loop {
            let handled = async {
                loop {
                    let notification = listener.try_recv().await?;
                    let Some(hub) = weak.upgrade() else { return Ok::<(), sqlx::Error>(()) };
                    match notification {
                        Some(notification) => match serde_json::from_str::<BusMessage>(notification.payload()) {
                            Ok(message) => hub.on_bus(message).await,
                            Err(err) => tracing::warn!(error = %err, "unreadable bus message ignored"),
                        },
                        // The connection dropped and came back: catch up.
                        None => hub.catch_up().await,
                    }
                }
            };
            tokio::select! {
                result = handled => match result {
                    Ok(()) => return,
                    Err(err) => tracing::warn!(error = %err, "tunnel bus listener lost its connection; reconnecting"),
                },
                _ = stopped.changed() => return,
            }
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                match crate::db::listener(&pool, CHANNEL).await {
                    Ok(fresh) => {
                        listener = fresh;
                        break;
                    }
                    Err(err) => tracing::warn!(error = %err, "tunnel bus listener cannot reconnect yet"),
                }
            }
            if let Some(hub) = weak.upgrade() {
                hub.catch_up().await;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_jobs_message_fits_a_notify_payload() {
        let message = BusMessage::Jobs { nodes: vec![Uuid::now_v7(); NODES_PER_MESSAGE] };
        assert!(serde_json::to_string(&message).unwrap().len() < 8000);
    }
}

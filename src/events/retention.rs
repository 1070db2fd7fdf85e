//! Retention: events older than `EDGEFLOW_EVENT_RETENTION_DAYS` are deleted by a background task
//! on every replica, in small batches (short transactions, few locks), until none is left.
//! Replicas sweeping at once skip each other's rows (`SKIP LOCKED`) rather than wait.
//!
//! Event ids are UUIDv7 made when the event is written, so the primary key is in time order: a
//! batch walks the oldest end of that index, and each row is also checked on `occurred_at`, so an
//! event is never deleted early whatever its id says.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

/// Events per delete.
const BATCH: i64 = 1000;
/// Pause between batches, so a large backlog never hogs the database.
const PAUSE: Duration = Duration::from_millis(50);
/// Time between sweeps.
const EVERY: Duration = Duration::from_secs(300);
/// The first sweep waits a little after start-up.
const FIRST_AFTER: Duration = Duration::from_secs(30);

/// The smallest UUIDv7 of this time: every v7 id made before it sorts lower.
fn first_v7_at(time: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(time.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0_u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

/// Deletes one batch of events older than `cutoff`; answers how many went.
pub async fn delete_batch(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < $1 AND occurred_at < $2 \
         ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)",
    )
    .bind(first_v7_at(cutoff))
    .bind(cutoff)
    .bind(BATCH)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// One sweep: deletes every event older than `days` days, batch by batch; answers how many went.
pub async fn prune(pool: &PgPool, days: u32) -> Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - chrono::TimeDelta::days(i64::from(days));
    let mut deleted = 0;
    loop {
        let batch = delete_batch(pool, cutoff).await?;
        deleted += batch;
        if batch < BATCH as u64 {
            return Ok(deleted);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Runs the sweeps until `stopped` turns true; `days == 0` keeps events forever.
pub fn spawn(pool: PgPool, days: u32, mut stopped: watch::Receiver<bool>) {
    if days == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut wait = FIRST_AFTER;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopped.wait_for(|stopped| *stopped) => return,
            }
            wait = EVERY;
            match prune(&pool, days).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, days, "pruned old events"),
                Err(err) => tracing::warn!(error = %err, "pruning old events failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v7_bound_sorts_between_ids_of_before_and_after() {
        let now = Utc::now();
        let bound = first_v7_at(now);
        let before = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            (now.timestamp_millis() as u64 - 1) / 1000,
            ((now.timestamp_millis() as u64 - 1) % 1000 * 1_000_000) as u32,
        ));
        let after = Uuid::now_v7();
        assert!(before < bound, "{before} < {bound}");
        assert!(bound <= after, "{bound} <= {after}");
        assert_eq!(bound.get_version_num(), 7);
    }
}

//! Blobs no row points at, and how they go away.
//!
//! Every write registers its blob key in `resource_blobs_pending` with this replica's id before
//! the first byte, and removes that row in the transaction that makes the blob live. So a blob
//! that is in the store but not live is always listed there: either its write is still running
//! on a live replica, or it is an orphan (the write failed and its own clean-up did not run, or
//! the replica died). Blobs whose rows were deleted or replaced are listed there too, by a
//! trigger, with no replica. `sweep` (housekeeping, every replica) deletes orphans and garbage
//! and expires abandoned upload sessions.

use std::{sync::Arc, time::Duration};

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::blobs::Blobs;
use crate::state::AppState;

/// A write still registered after this long is taken for abandoned, even on a live replica.
const WRITE_LIFETIME: &str = "1 day";
/// Blobs deleted per sweep transaction.
const BATCH: i64 = 100;

/// Registers a write of `key` on this replica, reserving `reserved_bytes` of the organization's
/// storage quota while it runs. Commit before writing, so a crash leaves the row behind.
pub async fn register_write(
    conn: &mut PgConnection,
    key: &str,
    organization_id: Uuid,
    replica_id: Uuid,
    reserved_bytes: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO resource_blobs_pending (blob_key, organization_id, replica_id, reserved_bytes) VALUES ($1, $2, $3, $4)",
    )
    .bind(key)
    .bind(organization_id)
    .bind(replica_id)
    .bind(reserved_bytes)
    .execute(conn)
    .await?;
    Ok(())
}

/// A registered write. Exactly one of: `claim` in the transaction that makes the blob live and
/// then `keep` after its commit, or `discard`. Dropped while still armed (the request was
/// canceled), it discards in the background.
pub struct PendingBlob {
    blobs: Arc<Blobs>,
    db: PgPool,
    pub key: String,
    armed: bool,
}

impl PendingBlob {
    pub fn new(state: &AppState, key: String) -> Self {
        Self { blobs: state.blobs.clone(), db: state.db.clone(), key, armed: true }
    }

    /// Ends the registration inside the transaction that makes the blob live. False when
    /// housekeeping already took the blob as abandoned: the caller must fail (and roll back).
    pub async fn claim(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        let claimed = sqlx::query("DELETE FROM resource_blobs_pending WHERE blob_key = $1 AND replica_id IS NOT NULL")
            .bind(&self.key)
            .execute(conn)
            .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// The blob is live (its transaction committed).
    pub fn keep(mut self) {
        self.armed = false;
    }

    /// The write failed: deletes what was written and the registration.
    pub async fn discard(mut self) {
        self.armed = false;
        discard(&self.blobs, &self.db, &self.key).await;
    }
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        if self.armed
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (blobs, db, key) = (self.blobs.clone(), self.db.clone(), std::mem::take(&mut self.key));
            runtime.spawn(async move { discard(&blobs, &db, &key).await });
        }
    }
}

/// Turns the registration into garbage, then deletes the blob and the row. When the registration
/// is gone, the blob is not ours to delete: its transaction committed (it is live, even if the
/// commit's answer was lost) or housekeeping took it.
async fn discard(blobs: &Blobs, db: &PgPool, key: &str) {
    let released = sqlx::query(
        "UPDATE resource_blobs_pending SET replica_id = NULL, reserved_bytes = 0 \
         WHERE blob_key = $1 AND replica_id IS NOT NULL",
    )
    .bind(key)
    .execute(db)
    .await;
    match released {
        Ok(done) if done.rows_affected() == 1 => {}
        Ok(_) => return,
        Err(err) => {
            tracing::warn!(error = %err, key, "discarding a failed upload's blob failed; housekeeping will");
            return;
        }
    }
    match blobs.delete(key).await {
        Ok(()) => {
            if let Err(err) =
                sqlx::query("DELETE FROM resource_blobs_pending WHERE blob_key = $1").bind(key).execute(db).await
            {
                tracing::warn!(error = %err, key, "forgetting a discarded blob failed; housekeeping will");
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, key, "deleting a failed upload's blob failed; housekeeping will retry")
        }
    }
}

/// Deletes blobs released by a transaction that just committed (their rows are in the pending
/// table, put there by the trigger). A failure leaves them for housekeeping.
pub async fn delete_released(state: &AppState, keys: &[String]) {
    for key in keys {
        match state.blobs.delete(key).await {
            Ok(()) => {
                let forgotten =
                    sqlx::query("DELETE FROM resource_blobs_pending WHERE blob_key = $1 AND replica_id IS NULL")
                        .bind(key)
                        .execute(&state.db)
                        .await;
                if let Err(err) = forgotten {
                    tracing::warn!(error = %err, key, "forgetting a deleted blob failed; housekeeping will");
                }
            }
            Err(err) => tracing::warn!(error = %err, key, "deleting a released blob failed; housekeeping will retry"),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub expired_uploads: u64,
    pub blobs_deleted: u64,
}

/// Expires abandoned upload sessions (their parts become garbage) and deletes garbage and
/// orphaned blobs: those of writes whose replica stopped its heartbeat more than `dead_after`
/// ago, or that started more than a day ago. Safe on several replicas at once.
pub async fn sweep(db: &PgPool, blobs: &Blobs, dead_after: Duration) -> anyhow::Result<Swept> {
    let expired =
        sqlx::query("DELETE FROM resource_uploads WHERE expires_at < now()").execute(db).await?.rows_affected();
    let mut swept = Swept { expired_uploads: expired, blobs_deleted: 0 };
    loop {
        // The rows stay locked while their blobs are deleted: a write finishing meanwhile waits,
        // then finds its registration gone and fails instead of publishing a deleted blob.
        let mut tx = db.begin().await?;
        let keys: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT p.blob_key FROM resource_blobs_pending p \
             WHERE p.replica_id IS NULL OR p.created_at < now() - interval '{WRITE_LIFETIME}' \
                OR NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = p.replica_id \
                               AND r.alive_until > now() - make_interval(secs => $1)) \
             ORDER BY p.created_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        )))
        .bind(dead_after.as_secs_f64())
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if keys.is_empty() {
            break;
        }
        let mut deleted = Vec::with_capacity(keys.len());
        for key in &keys {
            match blobs.delete(key).await {
                Ok(()) => deleted.push(key.clone()),
                Err(err) => tracing::warn!(error = %err, key, "deleting an orphaned blob failed; will retry"),
            }
        }
        sqlx::query("DELETE FROM resource_blobs_pending WHERE blob_key = ANY($1)")
            .bind(&deleted)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        swept.blobs_deleted += deleted.len() as u64;
        if deleted.len() < keys.len() || keys.len() < BATCH as usize {
            break;
        }
    }
    Ok(swept)
}

/// `sweep` with the server's settings.
pub async fn sweep_now(state: &AppState) -> anyhow::Result<Swept> {
    sweep(&state.db, &state.blobs, Duration::from_secs(state.config.offline_after_seconds)).await
}

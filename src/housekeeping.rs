//! Periodic clean-up every replica runs: expired idempotency records and long-dead sessions.
//! Each statement deletes a bounded batch, so replicas running it at once only share the work.

use std::time::Duration;

use sqlx::PgPool;

use crate::http::idempotency;

const EVERY: Duration = Duration::from_secs(600);

/// Sessions are kept a week past their end, for the audit trail of who was signed in.
async fn prune_sessions(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
         WHERE expires_at < now() - interval '7 days' OR revoked_at < now() - interval '7 days' LIMIT 1000)",
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// A revocation need only be remembered while an access token of the session could be unexpired.
async fn prune_revocations(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let result =
        sqlx::query("DELETE FROM revoked_sessions WHERE revoked_at < now() - interval '1 day'").execute(pool).await?;
    Ok(result.rows_affected())
}

pub fn spawn(pool: PgPool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            if let Err(err) = idempotency::prune(&pool).await {
                tracing::warn!(error = %err, "pruning idempotency records failed");
            }
            if let Err(err) = prune_sessions(&pool).await {
                tracing::warn!(error = %err, "pruning sessions failed");
            }
            if let Err(err) = prune_revocations(&pool).await {
                tracing::warn!(error = %err, "pruning revocations failed");
            }
        }
    });
}

/// How often resource blobs are swept: an upload orphaned by a crashed replica goes soon after the
/// replica is known dead.
const RESOURCE_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Resource storage clean-up: expired resumable upload sessions and their parts, blobs of failed
/// or crashed uploads, and content released by deletes (see `resources::cleanup`). Ends when
/// the replica stops.
pub fn spawn_resource_cleanup(state: crate::state::AppState) {
    let mut stopped = state.hub.stopped();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESOURCE_SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.wait_for(|stopped| *stopped) => return,
            }
            match crate::resources::cleanup::sweep_now(&state).await {
                Ok(swept) if swept.blobs_deleted > 0 || swept.expired_uploads > 0 => {
                    tracing::info!(
                        blobs = swept.blobs_deleted,
                        uploads = swept.expired_uploads,
                        "resource storage swept"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "sweeping resource storage failed"),
            }
        }
    });
}

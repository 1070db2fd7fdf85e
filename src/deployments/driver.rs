//! The deployment driver: every replica runs one, each deployment is advanced by whichever
//! replica locks its row first (`FOR UPDATE SKIP LOCKED`), so two replicas never act on one
//! deployment at once. It wakes on a timer and whenever nodes finish jobs.

use std::time::Duration;

use uuid::Uuid;

use super::{
    model::{DeploymentRow, DeploymentState},
    store,
};
use crate::{error::ApiError, state::AppState};

/// Deployments advanced per round at most (the rest wait for the next round).
const PER_ROUND: i64 = 200;

pub fn spawn(state: AppState) {
    let wake = state.hub.jobs_settled();
    let mut stopped = state.hub.stopped();
    let tick = Duration::from_millis(state.config.deployment_tick_millis.max(50));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = wake.notified() => {}
                _ = stopped.changed() => return,
            }
            if let Err(err) = drive_due(&state).await {
                tracing::warn!(error = %err, "the deployment driver's round failed; retrying");
            }
        }
    });
}

pub async fn drive_due(state: &AppState) -> Result<(), ApiError> {
    let due = store::due(&mut *state.db.acquire().await?, PER_ROUND).await?;
    for id in due {
        drive(state, id).await?;
    }
    Ok(())
}

/// Advances one deployment, if no other replica is doing so right now.
pub async fn drive(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let Some(deployment) = store::lock(&mut tx, id).await? else { return Ok(()) };
    step(&mut tx, state, &deployment).await?;
    tx.commit().await?;
    Ok(())
}

async fn step(conn: &mut sqlx::PgConnection, state: &AppState, deployment: &DeploymentRow) -> Result<(), ApiError> {
    let ttl = state.config.job_ttl_seconds;
    match deployment.state {
        DeploymentState::Scheduled => {
            if deployment.scheduled_at.is_none_or(|at| at <= chrono::Utc::now()) {
                store::set_state(conn, deployment, DeploymentState::Running, None).await?;
                let progress = store::progress(conn, deployment.id).await?;
                if let Some(batch) = progress.next_batch {
                    store::launch_batch(conn, deployment, batch, ttl).await?;
                }
            }
        }
        DeploymentState::Running => {
            store::follow_jobs(conn, deployment).await?;
            let progress = store::progress(conn, deployment.id).await?;
            if progress.failed > i64::from(deployment.max_failures) {
                let why = format!(
                    "{} targets failed, more than the {} tolerated; the rollout stopped",
                    progress.failed, deployment.max_failures
                );
                store::cancel_targets(conn, deployment, false).await?;
                if deployment.auto_rollback {
                    store::roll_back_targets(conn, deployment, &["Succeeded"], ttl).await?;
                    store::set_state(conn, deployment, DeploymentState::RollingBack, Some(&why)).await?;
                } else if progress.in_progress == 0 {
                    store::set_state(conn, deployment, DeploymentState::Failed, Some(&why)).await?;
                }
            } else if progress.in_progress == 0 {
                match progress.next_batch {
                    Some(batch) => {
                        store::launch_batch(conn, deployment, batch, ttl).await?;
                    }
                    None if progress.failed > 0 => {
                        let note = format!(
                            "{} targets failed, within the {} tolerated",
                            progress.failed, deployment.max_failures
                        );
                        store::set_state(conn, deployment, DeploymentState::Succeeded, Some(&note)).await?;
                    }
                    None => store::set_state(conn, deployment, DeploymentState::Succeeded, None).await?,
                }
            }
        }
        DeploymentState::RollingBack => {
            store::follow_jobs(conn, deployment).await?;
            // Targets that finished their deploy after the rollback began are rolled back too.
            store::roll_back_targets(conn, deployment, &["Succeeded"], ttl).await?;
            let progress = store::progress(conn, deployment.id).await?;
            if progress.in_progress == 0 && progress.rolling_back == 0 {
                store::set_state(conn, deployment, DeploymentState::RolledBack, None).await?;
            }
        }
        // Paused, or finished with targets still settling: only follow the jobs.
        _ => store::follow_jobs(conn, deployment).await?,
    }
    Ok(())
}

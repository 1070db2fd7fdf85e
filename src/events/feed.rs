//! The live feed of new events on this replica. A trigger sends `NOTIFY edgeflow_events,
//! '<organizationId>:<eventId>'` for every event inserted with an organization (on commit, from any
//! replica); ONE listener per replica turns those into a tokio broadcast, and each live stream
//! filters it in its own task, reading the rows it wants by id. A stream that falls behind (the
//! broadcast lags) or a listener that reconnects (notifications may have been lost) makes the
//! streams catch up from the table instead, so a slow client only ever delays itself.
//!
//! It also holds the replica's export slots: each running export holds a database connection for
//! as long as the client downloads, so only a few may run at once.

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

pub const CHANNEL: &str = "edgeflow_events";

/// Notices buffered per stream before it lags (and catches up from the table instead).
const CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// An event was committed.
    Inserted { organization_id: Uuid, id: Uuid },
    /// Notifications may have been missed: catch up from the table.
    Resync,
    /// The replica is stopping: end the streams.
    Closing,
}

impl Notice {
    fn parse(payload: &str) -> Option<Self> {
        let (organization_id, id) = payload.split_once(':')?;
        Some(Self::Inserted { organization_id: organization_id.parse().ok()?, id: id.parse().ok()? })
    }
}

pub struct EventFeed {
    sender: broadcast::Sender<Notice>,
    exports: Arc<Semaphore>,
}

impl EventFeed {
    /// Starts listening: LISTEN is in place when this returns, so no event committed after
    /// start-up is missed. The feed follows until `stopped` turns true.
    pub async fn start(
        pool: PgPool,
        max_exports: usize,
        stopped: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, sqlx::Error> {
        let listener = crate::db::listener(&pool, CHANNEL).await?;
        let (sender, _) = broadcast::channel(CAPACITY);
        let feed = Arc::new(Self { sender: sender.clone(), exports: Arc::new(Semaphore::new(max_exports.max(1))) });
        tokio::spawn(follow(pool, listener, sender, stopped));
        Ok(feed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.sender.subscribe()
    }

    /// A slot for one export, or 429 when all are taken.
    pub fn export_slot(&self) -> ApiResult<OwnedSemaphorePermit> {
        self.exports.clone().try_acquire_owned().map_err(|_| ApiError::TooManyRequests { retry_after_seconds: 5 })
    }
}

async fn follow(
    pool: PgPool,
    mut listener: PgListener,
    sender: broadcast::Sender<Notice>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            err = relay(&mut listener, &sender) => {
                tracing::warn!(error = %err, "event listener lost its connection; reconnecting");
            }
            _ = stopped.wait_for(|stopped| *stopped) => {
                let _ = sender.send(Notice::Closing);
                return;
            }
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if *stopped.borrow() {
                let _ = sender.send(Notice::Closing);
                return;
            }
            match crate::db::listener(&pool, CHANNEL).await {
                Ok(fresh) => {
                    listener = fresh;
                    break;
                }
                Err(err) => tracing::warn!(error = %err, "event listener cannot reconnect yet"),
            }
        }
        let _ = sender.send(Notice::Resync);
    }
}

/// Passes notifications on until the connection fails for good.
async fn relay(listener: &mut PgListener, sender: &broadcast::Sender<Notice>) -> sqlx::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match Notice::parse(notification.payload()) {
                // No stream listening is fine.
                Some(notice) => drop(sender.send(notice)),
                None => tracing::warn!(payload = notification.payload(), "unreadable event notification"),
            },
            // The connection dropped and came back: what was sent meanwhile is lost.
            Ok(None) => drop(sender.send(Notice::Resync)),
            Err(err) => return err,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_parse_from_the_trigger_payload() {
        let (organization_id, id) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(Notice::parse(&format!("{organization_id}:{id}")), Some(Notice::Inserted { organization_id, id }));
        assert_eq!(Notice::parse("nonsense"), None);
        assert_eq!(Notice::parse(":"), None);
    }
}

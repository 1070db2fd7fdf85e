//! Revoked sessions, known to every replica without a database query per request.
//!
//! Revoking writes `revoked_at` on the session rows and sends a NOTIFY with their ids in the same
//! transaction; every replica listens and keeps the ids in memory for as long as an access token
//! of theirs could still be unexpired. When the listener reconnects (notifications may have been
//! missed meanwhile) it reloads the recent revocations from the table.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use uuid::Uuid;

pub const CHANNEL: &str = "edgeflow_session_revoked";

/// Ids per NOTIFY payload (PostgreSQL caps a payload at 8000 bytes; a UUID and a comma take 37).
const IDS_PER_NOTIFY: usize = 150;

pub struct RevocationList {
    revoked: RwLock<HashMap<Uuid, DateTime<Utc>>>,
    /// How long an id must be remembered: the access token lifetime plus clock leeway.
    remember: chrono::Duration,
}

impl RevocationList {
    pub fn new(access_token_ttl_seconds: i64) -> Self {
        Self {
            revoked: RwLock::new(HashMap::new()),
            remember: chrono::Duration::seconds(access_token_ttl_seconds.max(0) + 60),
        }
    }

    pub fn is_revoked(&self, session_id: Uuid) -> bool {
        match self.revoked.read() {
            Ok(set) => set.contains_key(&session_id),
            // A poisoned lock means a panic mid-insert elsewhere: refuse rather than admit.
            Err(_) => true,
        }
    }

    pub fn insert(&self, ids: &[Uuid]) {
        let now = Utc::now();
        let mut set = match self.revoked.write() {
            Ok(set) => set,
            Err(poisoned) => poisoned.into_inner(),
        };
        for id in ids {
            set.insert(*id, now);
        }
    }

    fn forget_old(&self) {
        let horizon = Utc::now() - self.remember;
        if let Ok(mut set) = self.revoked.write() {
            set.retain(|_, at| *at > horizon);
        }
    }

    /// Loads the sessions revoked recently enough that their access tokens may still be live.
    pub async fn load_recent(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let horizon = Utc::now() - self.remember;
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT session_id FROM revoked_sessions WHERE revoked_at > $1")
            .bind(horizon)
            .fetch_all(pool)
            .await?;
        self.insert(&ids);
        Ok(())
    }

    /// Listens for revocations from every replica: LISTEN is in place when this returns (so no
    /// revocation after start-up is missed), then the list is kept current until the process ends.
    pub async fn start_listener(self: &Arc<Self>, pool: PgPool) -> Result<(), sqlx::Error> {
        let mut listener = crate::db::listener(&pool, CHANNEL).await?;
        self.load_recent(&pool).await?;
        let list = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(strong) = list.upgrade() else { return };
                if let Err(err) = strong.follow(&mut listener, &pool).await {
                    tracing::warn!(error = %err, "revocation listener lost its connection; reconnecting");
                }
                drop(strong);
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(fresh) = crate::db::listener(&pool, CHANNEL).await {
                        listener = fresh;
                        break;
                    }
                }
                // Revocations made while disconnected were not heard: read them.
                if let Some(strong) = list.upgrade()
                    && let Err(err) = strong.load_recent(&pool).await
                {
                    tracing::warn!(error = %err, "reloading revocations failed");
                }
            }
        });
        let list = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(list) = list.upgrade() else { return };
                list.forget_old();
            }
        });
        Ok(())
    }

    async fn follow(&self, listener: &mut PgListener, pool: &PgPool) -> Result<(), sqlx::Error> {
        loop {
            match listener.try_recv().await? {
                Some(notification) => {
                    let ids: Vec<Uuid> = notification.payload().split(',').filter_map(|id| id.parse().ok()).collect();
                    self.insert(&ids);
                }
                // The connection dropped and was re-established: catch up on what we missed.
                None => self.load_recent(pool).await?,
            }
        }
    }
}

/// Records revoked sessions durably (the record outlives the session rows) and announces them to
/// every replica; both take effect when the transaction commits.
pub async fn notify(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO revoked_sessions (session_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    for chunk in ids.chunks(IDS_PER_NOTIFY) {
        let payload = chunk.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(&mut *conn).await?;
    }
    Ok(())
}

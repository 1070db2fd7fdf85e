//! `AppState`: what every handler may reach, each piece cheap to clone. Handlers take the parts
//! they need with `State<...>` through `FromRef`.

use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::PgPool;

use crate::{
    auth::{password::PasswordHasherPool, revocation::RevocationList, secret_box::SecretBox, tokens::TokenKeys},
    config::Config,
    events::feed::EventFeed,
    http::{metrics::Metrics, rate_limit::RateLimits},
    tunnel::{
        bus,
        hub::{Hub, HubSettings},
        presence,
    },
};

#[derive(Clone, FromRef)]
pub struct AppState {
    pub db: PgPool,
    pub config: Arc<Config>,
    pub tokens: Arc<TokenKeys>,
    pub passwords: PasswordHasherPool,
    pub revocations: Arc<RevocationList>,
    pub rate_limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    pub secrets: Arc<SecretBox>,
    pub hub: Arc<Hub>,
    /// Where resource content is stored.
    pub blobs: Arc<crate::resources::blobs::Blobs>,
    pub events: Arc<EventFeed>,
}

/// A server-wide secret shared by every replica: the configured value, or one generated once and
/// stored in the database (the first replica to start wins the race; the others read its value).
async fn shared_secret(pool: &PgPool, name: &str, configured: Option<&str>) -> anyhow::Result<Vec<u8>> {
    if let Some(value) = configured {
        return Ok(value.as_bytes().to_vec());
    }
    let generated = crate::auth::tokens::random_bytes::<32>();
    sqlx::query("INSERT INTO server_keys (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(generated.as_slice())
        .execute(pool)
        .await?;
    Ok(sqlx::query_scalar("SELECT value FROM server_keys WHERE name = $1").bind(name).fetch_one(pool).await?)
}

impl AppState {
    pub async fn build(config: Config, db: PgPool) -> anyhow::Result<Self> {
        let jwt_secret = shared_secret(&db, "jwt_secret", config.jwt_secret.as_deref()).await?;
        let encryption_key = shared_secret(&db, "encryption_key", config.encryption_key.as_deref()).await?;
        let revocations = Arc::new(RevocationList::new(config.access_token_ttl_seconds));
        revocations.start_listener(db.clone()).await?;
        let rate_limits = Arc::new(RateLimits::new(&config));
        rate_limits.spawn_housekeeping();
        let hub = Hub::start(db.clone(), HubSettings::from_config(&config));
        presence::heartbeat(&hub).await?;
        bus::start_listener(hub.clone()).await?;
        presence::spawn_maintenance(hub.clone());
        let max_exports = config.max_event_exports.unwrap_or(config.db_max_connections as usize / 4);
        let events = EventFeed::start(db.clone(), max_exports, hub.stopped()).await?;
        crate::events::retention::spawn(db.clone(), config.event_retention_days, hub.stopped());
        let blobs = Arc::new(crate::resources::blobs::Blobs::from_config(&config)?);
        Ok(Self {
            blobs,
            tokens: Arc::new(TokenKeys::new(&jwt_secret, config.access_token_ttl_seconds)),
            passwords: PasswordHasherPool::new(config.password_hash_concurrency())?,
            secrets: Arc::new(SecretBox::new(&encryption_key)),
            revocations,
            rate_limits,
            metrics: Arc::new(Metrics::default()),
            hub,
            events,
            config: Arc::new(config),
            db,
        })
    }
}

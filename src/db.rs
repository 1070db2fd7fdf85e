//! The database: connecting (creating the database when missing), migrating under sqlx's advisory
//! lock (safe when several replicas start at once), and small helpers shared by store modules.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    ConnectOptions, Connection, Executor, PgPool,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

use crate::config::Config;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the configured database when it does not exist yet.
pub async fn create_database_if_missing(database_url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(database_url).context("invalid DATABASE_URL")?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let admin = options.clone().database("postgres");
    let mut conn = PgConnection::connect_with(&admin)
        .await
        .context("cannot reach PostgreSQL (is it running? see DATABASE_URL)")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        // An identifier cannot be bound; quote it the way PostgreSQL does.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let created = conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).await;
        match created {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // Another replica created it between our check and our CREATE.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(err) => return Err(err).context("creating the database"),
        }
    }
    conn.close().await.ok();
    Ok(())
}

pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&config.database_url)
        .context("invalid DATABASE_URL")?
        .application_name("edgeflow")
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .min_connections(1)
        // Fail fast when the database is down: requests answer 503 within a few seconds.
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

/// Whether the error means the database cannot be reached right now (down, restarting, out of
/// connections), as opposed to a problem with the statement: worth retrying later, and answered
/// 503 to clients.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        // Class 08: connection exceptions; 57P01-57P03: the server is shutting down, crashed or
        // starting up; 53300: too many connections.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")),
        _ => false,
    }
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying database migrations")
}

/// Implements text storage, `as_str` and `parse` for a fieldless enum stored as `text`.
macro_rules! text_enum {
    ($ty:ident { $($variant:ident),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $($ty::$variant => stringify!($variant)),*
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $(stringify!($variant) => Some($ty::$variant),)*
                    _ => None,
                }
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                Self::parse(text).ok_or_else(|| format!("unexpected {} '{text}'", stringify!($ty)).into())
            }
        }
    };
}
pub(crate) use text_enum;

/// A LISTEN connection on its own single-connection pool, so the replica's long-lived listeners
/// never take connections from the request pool (a listener holds its connection for good).
pub async fn listener(pool: &PgPool, channel: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with((*pool.connect_options()).clone())
        .await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

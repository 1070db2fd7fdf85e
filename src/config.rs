//! Every setting of the server: a command-line flag and an `EDGEFLOW_*` environment variable each.
//! Secrets are redacted from `Debug` so a logged config never leaks them.

use std::{fmt, net::SocketAddr, path::PathBuf};

use clap::Args;

/// Settings of `edgeflow serve` (and of the commands that need the database).
#[derive(Args, Clone)]
pub struct Config {
    /// PostgreSQL connection URL. The database is created when missing and migrated at start-up.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@localhost:5432/edgeflow")]
    pub database_url: String,

    /// Most connections this replica opens to PostgreSQL.
    #[arg(long, env = "EDGEFLOW_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,

    /// Address and port to listen on.
    #[arg(long, env = "EDGEFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for local data (uploaded blobs live under `<dir>/blobs`).
    #[arg(long, env = "EDGEFLOW_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// URL at which clients and edge nodes reach this server (used in links handed to nodes).
    /// Defaults to http(s)://<listen>.
    #[arg(long, env = "EDGEFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Secret that signs access tokens (HS256). When unset, one is generated once and stored in
    /// the database so every replica shares it.
    #[arg(long, env = "EDGEFLOW_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "EDGEFLOW_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 900)]
    pub access_token_ttl_seconds: i64,

    /// Lifetime of a session (and so of its refresh tokens), in days.
    #[arg(long, env = "EDGEFLOW_SESSION_TTL_DAYS", default_value_t = 30)]
    pub session_ttl_days: i64,

    /// Most live sessions per user; signing in once more revokes the oldest.
    #[arg(long, env = "EDGEFLOW_MAX_SESSIONS_PER_USER", default_value_t = 50)]
    pub max_sessions_per_user: i64,

    /// Allow anyone to register a user and organization through `/api/authentication/register`.
    #[arg(long, env = "EDGEFLOW_ALLOW_SIGNUP", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_signup: bool,

    /// Email of the first Owner, created on first start with no user in the database.
    #[arg(long, env = "EDGEFLOW_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of the first Owner. With neither this nor the email set and no user yet, a
    /// password is generated and printed once.
    #[arg(long, env = "EDGEFLOW_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// PEM certificate chain: with `--tls-key`, serve HTTPS (and wss for the tunnel).
    #[arg(long, env = "EDGEFLOW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching `--tls-cert`.
    #[arg(long, env = "EDGEFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "EDGEFLOW_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Origins allowed by CORS, comma-separated (`*` for any). Empty: no CORS headers.
    #[arg(long, env = "EDGEFLOW_CORS_ORIGINS", value_delimiter = ',', default_value = "")]
    pub cors_origins: Vec<String>,

    /// Largest JSON request body, in bytes.
    #[arg(long, env = "EDGEFLOW_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Longest a request may take before it is answered 503, in seconds.
    #[arg(long, env = "EDGEFLOW_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_timeout_seconds: u64,

    /// Trust `X-Forwarded-For` for the client address (only behind a proxy you run).
    #[arg(long, env = "EDGEFLOW_TRUST_PROXY", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_proxy: bool,

    /// Password hashes computed at once (each takes one core for a moment); the rest queue.
    /// Default: half the cores, at least one, so a login burst never starves the API.
    #[arg(long, env = "EDGEFLOW_PASSWORD_HASH_CONCURRENCY")]
    pub password_hash_concurrency: Option<usize>,

    /// Login attempts per client IP per minute (0: no limit).
    #[arg(long, env = "EDGEFLOW_RATE_LIMIT_LOGIN_PER_IP", default_value_t = 60)]
    pub rate_limit_login_per_ip: u32,

    /// Login attempts per account (email) per minute (0: no limit).
    #[arg(long, env = "EDGEFLOW_RATE_LIMIT_LOGIN_PER_ACCOUNT", default_value_t = 10)]
    pub rate_limit_login_per_account: u32,

    /// Authenticated requests per second per user or API key (0: no limit). The organization
    /// as a whole may make ten times as many.
    #[arg(long, env = "EDGEFLOW_RATE_LIMIT_API_PER_SECOND", default_value_t = 0)]
    pub rate_limit_api_per_second: u32,

    /// How often the server pings each connected edge node, in seconds.
    #[arg(long, env = "EDGEFLOW_HEARTBEAT_SECONDS", default_value_t = 30)]
    pub heartbeat_seconds: u64,

    /// A node not heard from for this long is offline (default: two missed heartbeats). Also how
    /// long a replica that stopped answering keeps its nodes shown online at most.
    #[arg(long, env = "EDGEFLOW_OFFLINE_AFTER_SECONDS", default_value_t = 60)]
    pub offline_after_seconds: u64,

    /// A job not delivered (queued or sent, unfinished) within this many seconds expires.
    #[arg(long, env = "EDGEFLOW_JOB_TTL_SECONDS", default_value_t = 7 * 24 * 3600)]
    pub job_ttl_seconds: i64,

    /// A job in progress on a node for longer than this many seconds is marked TimedOut.
    #[arg(long, env = "EDGEFLOW_JOB_TIMEOUT_SECONDS", default_value_t = 900)]
    pub job_timeout_seconds: i64,

    /// How long a synchronous node call (health, logs, runtime) waits for the node, in seconds.
    #[arg(long, env = "EDGEFLOW_NODE_CALL_TIMEOUT_SECONDS", default_value_t = 10)]
    pub node_call_timeout_seconds: u64,

    /// Messages per second a node may send (bursts of ten times as many pass); past it, the
    /// connection is closed as a protocol violation.
    #[arg(long, env = "EDGEFLOW_NODE_MESSAGES_PER_SECOND", default_value_t = 50)]
    pub node_messages_per_second: u32,

    /// Largest tunnel message a node may send, in bytes.
    #[arg(long, env = "EDGEFLOW_NODE_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub node_max_message_bytes: usize,

    /// Where uploaded resource files are kept: `s3://bucket/prefix` (S3 or compatible; needs a
    /// build with the `s3` feature and the usual AWS_* variables, e.g. AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT), `file:///dir` or a directory.
    /// Default: `<data dir>/blobs`, written with fsync.
    #[arg(long, env = "EDGEFLOW_BLOB_URL")]
    pub blob_url: Option<String>,

    /// Largest resource file that may be uploaded, in bytes (413 past it).
    #[arg(long, env = "EDGEFLOW_MAX_UPLOAD_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub max_upload_bytes: u64,

    /// Resource storage each organization may use, in bytes (413 `QUOTA_EXCEEDED` past it;
    /// 0: no quota).
    #[arg(long, env = "EDGEFLOW_STORAGE_QUOTA_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub storage_quota_bytes: u64,

    /// Part size offered to resumable uploads, in bytes (clients may ask for 1 MiB to 256 MiB).
    #[arg(long, env = "EDGEFLOW_UPLOAD_PART_SIZE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub upload_part_size_bytes: u64,

    /// A resumable upload session untouched for this many seconds expires; its parts are deleted.
    #[arg(long, env = "EDGEFLOW_UPLOAD_SESSION_EXPIRY_SECONDS", default_value_t = 24 * 3600)]
    pub upload_session_expiry_seconds: i64,

    /// How often the deployment driver looks at running deployments, in milliseconds (it also
    /// wakes whenever nodes finish jobs).
    #[arg(long, env = "EDGEFLOW_DEPLOYMENT_TICK_MILLIS", default_value_t = 1000)]
    pub deployment_tick_millis: u64,

    /// A deployment target with no outcome after this many seconds counts as failed (TimedOut),
    /// unless the deployment says otherwise.
    #[arg(long, env = "EDGEFLOW_DEPLOYMENT_TARGET_TIMEOUT_SECONDS", default_value_t = 600)]
    pub deployment_target_timeout_seconds: i32,

    /// Key that encrypts stored secrets (identity provider client secrets), any string. When
    /// unset, one is generated once and stored in the database.
    #[arg(long, env = "EDGEFLOW_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,

    /// Events older than this many days are deleted, in small batches, by a background task
    /// (0: keep them forever).
    #[arg(long, env = "EDGEFLOW_EVENT_RETENTION_DAYS", default_value_t = 90)]
    pub event_retention_days: u32,

    /// Seconds between the heartbeat comments of a live event stream (`/api/events/stream`).
    #[arg(long, env = "EDGEFLOW_EVENT_STREAM_KEEPALIVE_SECONDS", default_value_t = 15)]
    pub event_stream_keepalive_seconds: u64,

    /// Event exports (CSV, NDJSON) one replica runs at once; each holds a database connection
    /// while the client downloads. Default: a quarter of the connections, at least one.
    #[arg(long, env = "EDGEFLOW_MAX_EVENT_EXPORTS")]
    pub max_event_exports: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// The configuration with every default, pointed at `database_url`: the base of tests.
    pub fn for_database(database_url: &str) -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut config = Wrapper::parse_from(["edgeflow"]).config;
        config.database_url = database_url.to_owned();
        config
    }

    /// Where clients and nodes reach this server: `EDGEFLOW_PUBLIC_URL`, else derived from the
    /// listen address (fine for one machine; set it behind a proxy or load balancer).
    pub fn public_base_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("{}://{}", if self.tls_enabled() { "https" } else { "http" }, self.listen),
        }
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    pub fn password_hash_concurrency(&self) -> usize {
        self.password_hash_concurrency.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / 2).max(1)
        })
    }
}

fn redact(secret: &Option<String>) -> &'static str {
    if secret.is_some() { "<redacted>" } else { "<unset>" }
}

/// The database URL without its password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("public_url", &self.public_url)
            .field("jwt_secret", &redact(&self.jwt_secret))
            .field("allow_signup", &self.allow_signup)
            .field("admin_email", &self.admin_email)
            .field("admin_password", &redact(&self.admin_password))
            .field("tls", &self.tls_enabled())
            .field("log_format", &self.log_format)
            .field("cors_origins", &self.cors_origins)
            .field("rate_limit_login_per_ip", &self.rate_limit_login_per_ip)
            .field("rate_limit_login_per_account", &self.rate_limit_login_per_account)
            .field("rate_limit_api_per_second", &self.rate_limit_api_per_second)
            .field("encryption_key", &redact(&self.encryption_key))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = Config::for_database("postgres://app:hunter2@db:5432/edgeflow");
        config.jwt_secret = Some("jwt-hunter2".into());
        config.admin_password = Some("pw-hunter2".into());
        config.encryption_key = Some("enc-hunter2".into());
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("postgres://app@db:5432/edgeflow"), "{printed}");
    }
}

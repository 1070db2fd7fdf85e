//! What an agent needs to know, and the clients it shares with other agents in the process.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use base64::Engine;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use uuid::Uuid;

/// One agent's settings. [`AgentConfig::new`] fills in the defaults.
#[derive(Clone)]
pub struct AgentConfig {
    /// The server's base URL, `http(s)://host:port`; the tunnel is `ws(s)://host:port/api/tunnel`.
    pub server: String,
    pub node_id: Uuid,
    pub access_key: String,
    /// Where the runtime, the finished jobs, the shadow and downloaded resources are kept, so a
    /// restarted agent resumes. `None`: memory only (resources are checked, then discarded).
    pub state_dir: Option<PathBuf>,
    /// This fraction (0..=1) of jobs fails on purpose, chosen from the job id (see
    /// [`crate::agent::fails_by_fraction`]) so tests can predict which.
    pub fail_fraction: f64,
    /// Simulated work per job.
    pub job_duration: Duration,
    /// An extra trusted root (PEM) for `https`/`wss` to a server with a self-signed certificate.
    /// With it, only this root is trusted for the tunnel.
    pub ca_cert: Option<PathBuf>,
    pub agent_version: String,
    /// How often figures are reported (`metrics`).
    pub metrics_interval: Duration,
    /// First reconnect delay ceiling; doubles per failure up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A connection that lasted this long was healthy: the backoff starts over after it.
    pub healthy_after: Duration,
    /// How many recent log lines the agent keeps for `logs` calls.
    pub log_capacity: usize,
    /// Wait this long before the first connection (spreads a simulated fleet's start).
    pub start_delay: Duration,
    /// Log job and connection events at info level (off for simulated fleets: debug instead).
    pub verbose: bool,
    /// The agent paces its messages to stay under the server's limit (which closes a flooding
    /// node with 4003; default 50 per second, bursts of 500): `message_burst` at once, then this
    /// many per second. 0: no pacing.
    pub max_messages_per_second: u32,
    pub message_burst: u32,
    /// Sync the state file to disk before replacing it (survives power loss, not only crashes).
    /// Off for simulated fleets, where thousands of agents share one disk.
    pub sync_state: bool,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("node_id", &self.node_id)
            .field("access_key", &"<redacted>")
            .field("state_dir", &self.state_dir)
            .field("fail_fraction", &self.fail_fraction)
            .field("job_duration", &self.job_duration)
            .field("ca_cert", &self.ca_cert)
            .field("agent_version", &self.agent_version)
            .field("metrics_interval", &self.metrics_interval)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_AGENT_VERSION: &str = concat!("edgeflow-agent/", env!("CARGO_PKG_VERSION"));

impl AgentConfig {
    pub fn new(server: impl Into<String>, node_id: Uuid, access_key: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            node_id,
            access_key: access_key.into(),
            state_dir: None,
            fail_fraction: 0.0,
            job_duration: Duration::from_millis(20),
            ca_cert: None,
            agent_version: DEFAULT_AGENT_VERSION.to_owned(),
            metrics_interval: Duration::from_secs(30),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(10),
            log_capacity: 1000,
            start_delay: Duration::ZERO,
            verbose: true,
            max_messages_per_second: 20,
            message_burst: 200,
            sync_state: true,
        }
    }

    /// The server's base URL without a trailing slash.
    pub fn server_base(&self) -> &str {
        self.server.trim_end_matches('/')
    }

    /// `http://h:p` -> `ws://h:p/api/tunnel`, `https://...` -> `wss://...`.
    pub fn tunnel_url(&self) -> anyhow::Result<String> {
        let base = self.server_base();
        let rest = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if base.starts_with("ws://") || base.starts_with("wss://") {
            base.to_owned()
        } else {
            bail!("the server URL must start with http:// or https:// (got {:?})", self.server);
        };
        Ok(format!("{rest}/api/tunnel"))
    }

    /// `Basic base64(nodeId:accessKey)`.
    pub fn authorization(&self) -> String {
        basic_authorization(self.node_id, &self.access_key)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.tunnel_url()?;
        if !(0.0..=1.0).contains(&self.fail_fraction) {
            bail!("the fail fraction must be between 0 and 1 (got {})", self.fail_fraction);
        }
        if self.access_key.is_empty() {
            bail!("the access key is empty");
        }
        Ok(())
    }
}

pub fn basic_authorization(node_id: Uuid, access_key: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{node_id}:{access_key}"));
    format!("Basic {encoded}")
}

/// The HTTP client (resource downloads, enrolment) and the TLS settings for the tunnel. Build one
/// and share it between the agents of a process: clients and TLS configs are not small.
#[derive(Clone)]
pub struct Transport {
    pub http: reqwest::Client,
    /// `None`: the default roots (webpki) for `wss`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("custom_root", &self.tls.is_some()).finish()
    }
}

impl Transport {
    /// Trusts the public roots, or also `ca_cert` (a PEM file) when given.
    pub fn new(ca_cert: Option<&std::path::Path>) -> anyhow::Result<Self> {
        // rustls is built with two crypto providers in this tree, so it cannot pick one by itself;
        // the server makes the same choice. Only the first install in a process counts.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(DEFAULT_AGENT_VERSION);
        let mut tls = None;
        if let Some(path) = ca_cert {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.with_context(|| format!("{} is not a PEM certificate", path.display()))?;
                roots.add(cert).with_context(|| format!("{} holds an unusable certificate", path.display()))?;
            }
            if roots.is_empty() {
                bail!("{} holds no PEM certificate", path.display());
            }
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .context("TLS settings")?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            tls = Some(Arc::new(config));
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("{} is not a PEM certificate", path.display()))?,
            );
        }
        let http = http.build().context("cannot build the HTTP client")?;
        Ok(Self { http, tls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_tunnel_url_and_the_credential() {
        let mut config = AgentConfig::new("http://127.0.0.1:8080/", Uuid::nil(), "key");
        assert_eq!(config.tunnel_url().unwrap(), "ws://127.0.0.1:8080/api/tunnel");
        config.server = "https://cc.example.com".into();
        assert_eq!(config.tunnel_url().unwrap(), "wss://cc.example.com/api/tunnel");
        config.server = "cc.example.com".into();
        assert!(config.validate().is_err());
        assert_eq!(
            basic_authorization(Uuid::nil(), "k"),
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:k", Uuid::nil())))
        );
        assert!(!format!("{config:?}").contains("key\""));
    }
}

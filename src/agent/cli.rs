//! `edgeflow agent`: the command line of the reference agent.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::ArgGroup;
use uuid::Uuid;

use super::{Agent, AgentConfig, SimulateOptions, StopReason, Transport, enroll, simulate};

/// Run the reference edge agent (or a simulated fleet of them).
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("identity").required(true).args(["node_id", "registration_key"])))]
pub struct AgentArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080 (the tunnel is ws(s)://.../api/tunnel).
    #[arg(long, env = "EDGEFLOW_AGENT_SERVER")]
    pub server: String,
    /// The node's id (from POST /api/edgenodes).
    #[arg(long, env = "EDGEFLOW_AGENT_NODE_ID", requires = "access_key", conflicts_with = "registration_key")]
    pub node_id: Option<Uuid>,
    /// The node's access key (shown once when the node was created).
    #[arg(long, env = "EDGEFLOW_AGENT_ACCESS_KEY", hide_env_values = true, requires = "node_id")]
    pub access_key: Option<String>,
    /// Enrol with this registration key (once; the credentials are saved in the state dir).
    #[arg(long, env = "EDGEFLOW_AGENT_REGISTRATION_KEY", hide_env_values = true)]
    pub registration_key: Option<String>,
    /// The node name to enrol as (with --registration-key).
    #[arg(long)]
    pub name: Option<String>,
    /// Keeps deployed flows, finished jobs, resources and credentials; a restart resumes.
    /// Defaults to ./edgeflow-agent when enrolling.
    #[arg(long, env = "EDGEFLOW_AGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Make this fraction (0..1) of jobs fail, chosen deterministically from the job id.
    #[arg(long, default_value_t = 0.0)]
    pub fail_fraction: f64,
    /// Simulated work per job, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub job_duration_ms: u64,
    /// Report metrics this often.
    #[arg(long, default_value_t = 30)]
    pub metrics_seconds: u64,
    /// Run N agents in this process (needs --registration-key), named <name-prefix>-<i>.
    #[arg(long, requires = "registration_key")]
    pub simulate: Option<usize>,
    /// Name prefix of simulated agents.
    #[arg(long, default_value = "sim")]
    pub name_prefix: String,
    /// Spread the simulated agents' first connections over this many seconds (default N/500).
    #[arg(long)]
    pub ramp_seconds: Option<u64>,
    /// Trust this CA certificate (PEM) for a server with a self-signed certificate.
    #[arg(long, env = "EDGEFLOW_AGENT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

const DEFAULT_STATE_DIR: &str = "./edgeflow-agent";

impl AgentArgs {
    fn template(&self, node_id: Uuid, access_key: String, state_dir: Option<PathBuf>) -> AgentConfig {
        let mut config = AgentConfig::new(self.server.clone(), node_id, access_key);
        config.state_dir = state_dir;
        config.fail_fraction = self.fail_fraction;
        config.job_duration = Duration::from_millis(self.job_duration_ms);
        config.metrics_interval = Duration::from_secs(self.metrics_seconds.max(1));
        config.ca_cert = self.ca_cert.clone();
        config
    }
}

/// Runs until Ctrl-C / SIGTERM, or until the server tells the agent not to come back.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let transport = Transport::new(args.ca_cert.as_deref())?;
    if let Some(count) = args.simulate {
        let registration_key = args.registration_key.clone().context("--simulate needs --registration-key")?;
        let state_dir = args.state_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let template = args.template(Uuid::nil(), "unused".into(), None);
        template.validate()?;
        let ramp = Duration::from_secs(args.ramp_seconds.unwrap_or(count.div_ceil(500) as u64));
        let options = SimulateOptions {
            template,
            registration_key,
            count,
            name_prefix: args.name_prefix.clone(),
            state_dir,
            ramp,
            status_every: Duration::from_secs(5),
        };
        return simulate(options, transport, shutdown_signal()).await;
    }

    let (node_id, access_key, state_dir) = match (&args.node_id, &args.access_key, &args.registration_key) {
        (Some(node_id), Some(access_key), _) => (*node_id, access_key.clone(), args.state_dir.clone()),
        (None, _, Some(registration_key)) => {
            let name = args.name.clone().context("--registration-key needs --name (the new node's name)")?;
            let dir = args.state_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
            let (credentials, new) =
                enroll::ensure_enrolled(&transport.http, &args.server, registration_key, &name, &dir).await?;
            if new {
                tracing::info!(node = %credentials.node_id, "enrolled as {name:?}; credentials saved in {}", dir.display());
            } else {
                tracing::info!(node = %credentials.node_id, "using the credentials saved in {}", dir.display());
            }
            (credentials.node_id, credentials.access_key, Some(dir))
        }
        _ => bail!("give --node-id and --access-key, or --registration-key and --name"),
    };
    let mut agent = Agent::spawn_with(args.template(node_id, access_key, state_dir), transport)?;
    tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("stopping the agent");
            agent.stop().await;
            Ok(())
        }
        reason = agent.wait() => match reason {
            Some(StopReason::Closed { code, reason }) => bail!("the server closed the tunnel with {code} {reason}"),
            Some(StopReason::Failed(error)) => bail!("the agent failed: {error}"),
            _ => Ok(()),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

//! The reference edge agent (`edgeflow agent`): keeps the tunnel to the server open, reconnects
//! forever with jittered exponential backoff, applies jobs to a simulated runtime (kept in its
//! state dir so a restart resumes), downloads and checks resources, answers health, logs and
//! runtime calls, and reports state, events and metrics.
//!
//! A library first: tests and benchmarks drive agents in-process.
//!
//! ```no_run
//! # async fn example(node_id: uuid::Uuid) -> anyhow::Result<()> {
//! use edgeflow::agent::{Agent, AgentConfig};
//! let agent = Agent::spawn(AgentConfig::new("http://127.0.0.1:8080", node_id, "access-key"))?;
//! // ... agent.is_connected(), agent.executions(job_id), agent.flows() ...
//! agent.stop().await;
//! # Ok(()) }
//! ```

mod backoff;
pub mod cli;
mod config;
pub mod enroll;
mod handle;
mod pacing;
mod resources;
mod runtime;
mod session;
mod simulate;
mod state;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

pub use backoff::Backoff;
pub use config::{AgentConfig, DEFAULT_AGENT_VERSION, Transport, basic_authorization};
pub use handle::{AgentHandle, AgentStatus, StopReason};
pub use runtime::{FINISHED_JOBS_KEPT, FlowState, InstalledFlow, Runtime, fails_by_fraction};
pub use session::websocket_config;
pub use simulate::{SimulateOptions, simulate};

use handle::{Control, Shared};
use worker::Worker;

/// Starts agents. See [`AgentHandle`] for what a running agent exposes.
pub struct Agent;

impl Agent {
    /// Starts an agent on the current tokio runtime with its own [`Transport`].
    pub fn spawn(config: AgentConfig) -> anyhow::Result<AgentHandle> {
        let transport = Transport::new(config.ca_cert.as_deref())?;
        Self::spawn_with(config, transport)
    }

    /// Starts an agent that shares `transport` (HTTP client, TLS roots) with others.
    pub fn spawn_with(config: AgentConfig, transport: Transport) -> anyhow::Result<AgentHandle> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().context("an agent needs a tokio runtime")?;
        let node_id = config.node_id;
        let shared = Arc::new(Shared::new(config.log_capacity));
        let (control, receiver) = watch::channel(Control::Run);
        let worker = Worker::new(config, transport, shared.clone(), receiver)?;
        let task = runtime.spawn(worker.run());
        Ok(AgentHandle { node_id, shared, control, task: Some(task) })
    }
}

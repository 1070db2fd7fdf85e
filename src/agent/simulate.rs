//! `edgeflow agent --simulate N`: N agents in one process, for load tests. Each enrols once with
//! the registration key (credentials saved under `<state dir>/<prefix>-<i>/`), then they connect
//! spread over a ramp, and a status line is printed every few seconds.

use std::{future::Future, path::PathBuf, sync::atomic::Ordering, time::Duration};

use anyhow::bail;
use futures_util::{StreamExt, stream};
use rand::Rng;

use super::{Agent, AgentConfig, AgentHandle, Transport, enroll};

/// How many enrolments run at once.
const ENROL_CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Settings every agent shares (server, fail fraction, job duration, ...); node id, access
    /// key, state dir, start delay and verbosity are set per agent.
    pub template: AgentConfig,
    pub registration_key: String,
    pub count: usize,
    pub name_prefix: String,
    pub state_dir: PathBuf,
    /// The agents' first connections are spread evenly at random over this long.
    pub ramp: Duration,
    pub status_every: Duration,
}

/// Runs the fleet until `shutdown` resolves, then stops every agent properly.
pub async fn simulate(
    options: SimulateOptions,
    transport: Transport,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let SimulateOptions { template, registration_key, count, name_prefix, state_dir, ramp, status_every } = options;
    println!(
        "simulate: enrolling {count} agents named {name_prefix}-1..{name_prefix}-{count} (state under {})",
        state_dir.display()
    );
    let enrolments: Vec<_> = stream::iter(1..=count)
        .map(|i| {
            let name = format!("{name_prefix}-{i}");
            let dir = state_dir.join(&name);
            let (http, server, key) = (&transport.http, template.server.as_str(), registration_key.as_str());
            async move {
                let result = enroll::ensure_enrolled(http, server, key, &name, &dir).await;
                (name, dir, result)
            }
        })
        .buffered(ENROL_CONCURRENCY)
        .collect()
        .await;

    let mut agents: Vec<AgentHandle> = Vec::with_capacity(count);
    let (mut enrolled, mut failures, mut first_error) = (0usize, 0usize, None);
    for (name, dir, result) in enrolments {
        let credentials = match result {
            Ok((credentials, new)) => {
                enrolled += usize::from(new);
                credentials
            }
            Err(error) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("{name}: {error:#}"));
                continue;
            }
        };
        let mut config = template.clone();
        config.node_id = credentials.node_id;
        config.access_key = credentials.access_key;
        config.state_dir = Some(dir);
        config.verbose = false;
        config.sync_state = false;
        config.log_capacity = config.log_capacity.min(50);
        let ramp_ms = u64::try_from(ramp.as_millis()).unwrap_or(u64::MAX);
        config.start_delay = Duration::from_millis(rand::rng().random_range(0..=ramp_ms));
        agents.push(Agent::spawn_with(config, transport.clone())?);
    }
    if let Some(error) = &first_error {
        eprintln!("simulate: {failures} agents could not enrol; the first: {error}");
    }
    if agents.is_empty() {
        bail!("no agent to run");
    }
    println!("simulate: {} agents ({enrolled} newly enrolled), connecting over {} s", agents.len(), ramp.as_secs());

    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(status_every.max(Duration::from_millis(500)));
    ticker.tick().await;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => println!("{}", status_line(&agents)),
        }
    }
    println!("simulate: stopping {} agents", agents.len());
    stream::iter(agents).for_each_concurrent(512, AgentHandle::stop).await;
    println!("simulate: stopped");
    Ok(())
}

/// `simulate: 10000 agents, 9990 connected, 1234 jobs done (12 failed), 0 ended`
pub fn status_line(agents: &[AgentHandle]) -> String {
    let mut connected = 0;
    let (mut done, mut failed, mut ended) = (0u64, 0u64, 0usize);
    for agent in agents {
        connected += usize::from(agent.is_connected());
        done += agent.shared.jobs_done.load(Ordering::Relaxed);
        failed += agent.shared.jobs_failed.load(Ordering::Relaxed);
        ended += usize::from(agent.is_finished());
    }
    format!(
        "simulate: {} agents, {connected} connected, {done} jobs done ({failed} failed), {ended} ended",
        agents.len()
    )
}

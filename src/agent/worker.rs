//! The agent task: one tokio task per agent that connects, reconnects with backoff, and runs jobs
//! one at a time in arrival order. The job pipeline lives outside any one connection: a job
//! keeps running while the tunnel is down, and the server learns its final state when it
//! redelivers the job after the reconnect.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::watch;
use tracing::Level;

use super::{
    backoff::Backoff,
    config::{AgentConfig, Transport},
    handle::{Control, Shared, StopReason},
    resources::Downloader,
    runtime::{Runtime, fails_by_fraction},
    state,
};
use crate::tunnel::protocol::{Job, JobCommand, JobUpdate, JobUpdateState, NodeEvent, NodeMessage, StateReport};

pub(crate) type Work = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The job being worked on.
pub(crate) struct Running {
    pub job: Job,
    pub work: Work,
}

/// How a connection ended.
pub(crate) enum SessionEnd {
    /// Connect again after a backoff. `welcomed`: the server accepted the connection.
    Retry { welcomed: bool },
    /// End the agent.
    Stop(StopReason),
}

pub(crate) struct Worker {
    pub config: AgentConfig,
    pub transport: Transport,
    pub shared: Arc<Shared>,
    pub control: watch::Receiver<Control>,
    pub runtime: Runtime,
    pub queue: VecDeque<Job>,
    pub current: Option<Running>,
    /// Messages for the server; only sent while a welcomed connection is open, dropped when it
    /// closes (what matters is re-sent: hello carries the flows, redelivered jobs get their
    /// final state again).
    pub outbox: VecDeque<NodeMessage>,
    pub started: Instant,
    pub downloader: Downloader,
    pub tunnel_url: String,
}

impl Worker {
    pub fn new(
        config: AgentConfig,
        transport: Transport,
        shared: Arc<Shared>,
        control: watch::Receiver<Control>,
    ) -> anyhow::Result<Self> {
        let tunnel_url = config.tunnel_url()?;
        let downloader = Downloader {
            http: transport.http.clone(),
            server: config.server_base().to_owned(),
            authorization: config.authorization(),
            dir: config.state_dir.as_deref().map(state::resources_dir),
        };
        Ok(Self {
            config,
            transport,
            shared,
            control,
            runtime: Runtime::new(),
            queue: VecDeque::new(),
            current: None,
            outbox: VecDeque::new(),
            started: Instant::now(),
            downloader,
            tunnel_url,
        })
    }

    pub async fn run(mut self) {
        let reason = self.run_until_stopped().await;
        match &reason {
            StopReason::Stopped | StopReason::Killed => self.log(Level::INFO, format!("agent ended: {reason:?}")),
            StopReason::Closed { .. } | StopReason::Failed(_) => {
                self.log(Level::ERROR, format!("agent ended: {reason:?}"))
            }
        }
        self.shared.connected.store(false, Ordering::Relaxed);
        self.shared.details().stopped = Some(reason);
    }

    async fn run_until_stopped(&mut self) -> StopReason {
        if let Some(dir) = self.config.state_dir.clone() {
            match state::load(&dir).await {
                Ok((runtime, warning)) => {
                    if let Some(warning) = warning {
                        self.log(Level::WARN, warning);
                    }
                    self.runtime = runtime;
                    self.log(
                        Level::INFO,
                        format!(
                            "state loaded from {}: {} flows, {} finished jobs",
                            dir.display(),
                            self.runtime.flows().count(),
                            self.runtime.finished_count()
                        ),
                    );
                }
                Err(error) => return StopReason::Failed(format!("{error:#}")),
            }
        }
        self.publish_flows();
        if !self.config.start_delay.is_zero()
            && let Err(reason) = self.idle(tokio::time::sleep(self.config.start_delay)).await
        {
            return reason;
        }
        let mut backoff = Backoff::new(self.config.backoff_base, self.config.backoff_max);
        loop {
            let attempt = Instant::now();
            match Box::pin(self.connect_and_serve()).await {
                SessionEnd::Stop(reason) => return reason,
                SessionEnd::Retry { welcomed } => {
                    if welcomed && attempt.elapsed() >= self.config.healthy_after {
                        backoff.reset();
                    }
                }
            }
            self.shared.connected.store(false, Ordering::Relaxed);
            let delay = backoff.next_delay();
            self.log(Level::INFO, format!("reconnecting in {} ms", delay.as_millis()));
            if let Err(reason) = self.idle(tokio::time::sleep(delay)).await {
                return reason;
            }
        }
    }

    /// Waits for `fut` while no connection is open: keeps working on jobs (their messages are
    /// dropped), obeys stop and kill, and freezes while paused.
    pub async fn idle<F: Future>(&mut self, fut: F) -> Result<F::Output, StopReason> {
        tokio::pin!(fut);
        loop {
            let control = *self.control.borrow_and_update();
            match control {
                Control::Stop => return Err(StopReason::Stopped),
                Control::Kill => return Err(StopReason::Killed),
                Control::Run | Control::Pause => {}
            }
            let paused = control == Control::Pause;
            if !paused {
                self.start_next_job();
            }
            self.outbox.clear();
            tokio::select! {
                output = &mut fut, if !paused => return Ok(output),
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return Err(StopReason::Stopped);
                    }
                }
                result = next_work(&mut self.current), if !paused && self.current.is_some() => {
                    self.finish_job(result).await;
                }
            }
        }
    }

    /// A job arrived: report a finished one again, ignore one already queued, queue a new one.
    pub fn on_job(&mut self, job: Job) {
        if let Some(finished) = self.runtime.finished(job.id) {
            let update = finished.update();
            self.log(
                Level::DEBUG,
                format!("job {} (seq {}) already finished: reporting {:?} again", job.id, job.seq, update.state),
            );
            self.outbox.push_back(NodeMessage::JobUpdate(update));
            return;
        }
        let known = self.current.as_ref().is_some_and(|running| running.job.id == job.id)
            || self.queue.iter().any(|queued| queued.id == job.id);
        if known {
            self.log(Level::DEBUG, format!("job {} (seq {}) is already queued", job.id, job.seq));
            return;
        }
        self.outbox.push_back(job_update(&job, JobUpdateState::Received, None));
        self.queue.push_back(job);
    }

    pub fn cancel_job(&mut self, job_id: uuid::Uuid) {
        let before = self.queue.len();
        self.queue.retain(|job| job.id != job_id);
        if self.queue.len() < before {
            self.log(Level::INFO, format!("job {job_id} canceled before it started"));
        } else {
            self.log(Level::DEBUG, format!("cancel for job {job_id}, which is not waiting"));
        }
    }

    /// Starts the next queued job if none is running.
    pub fn start_next_job(&mut self) {
        if self.current.is_some() {
            return;
        }
        let Some(job) = self.queue.pop_front() else { return };
        self.shared.details().count_execution(job.id);
        self.log(
            Level::INFO,
            format!(
                "job {} (seq {}): {} {}",
                job.id,
                job.seq,
                job.command.as_str(),
                job.flow_definition_id.map(|id| format!("flow {id}")).unwrap_or_default()
            ),
        );
        self.outbox.push_back(job_update(&job, JobUpdateState::InProgress, None));
        let work = self.work_for(&job);
        self.current = Some(Running { job, work });
    }

    /// The slow part of a job (simulated work, downloads), run concurrently with the socket.
    fn work_for(&self, job: &Job) -> Work {
        let duration = self.config.job_duration;
        let fraction = self.config.fail_fraction;
        let fails = fails_by_fraction(job.id, fraction);
        let download = match (&job.command, &job.flow) {
            (JobCommand::Deploy, Some(flow)) if !fails && !flow.resources.is_empty() => {
                Some((self.downloader.clone(), flow.resources.clone()))
            }
            _ => None,
        };
        Box::pin(async move {
            if !duration.is_zero() {
                tokio::time::sleep(duration).await;
            }
            if fails {
                return Err(format!("simulated failure (fail fraction {fraction})"));
            }
            if let Some((downloader, resources)) = download {
                downloader.fetch_all(&resources).await?;
            }
            Ok(())
        })
    }

    /// The running job's work is done: apply it, remember the outcome, persist, report.
    pub async fn finish_job(&mut self, result: Result<(), String>) {
        let Some(Running { job, .. }) = self.current.take() else { return };
        let result = result.and_then(|()| self.runtime.apply(&job));
        let finished = self.runtime.record_finished(&job, &result);
        if matches!(job.command, JobCommand::Deploy | JobCommand::Remove) && result.is_ok() {
            self.downloader.prune(&self.runtime.resource_versions_in_use()).await;
        }
        self.persist().await;
        self.publish_flows();
        self.shared.jobs_done.fetch_add(1, Ordering::Relaxed);
        self.outbox.push_back(NodeMessage::JobUpdate(finished.update()));
        self.outbox.push_back(NodeMessage::State(StateReport { flows: self.runtime.reports() }));
        match &result {
            Ok(()) => self.log(Level::INFO, format!("job {} succeeded", job.id)),
            Err(error) => {
                self.shared.jobs_failed.fetch_add(1, Ordering::Relaxed);
                self.log(Level::WARN, format!("job {} failed: {error}", job.id));
                self.outbox.push_back(NodeMessage::Event(NodeEvent {
                    level: "Error".into(),
                    message: format!("{} job failed: {error}", job.command.as_str()),
                    flow_definition_id: job.flow_definition_id,
                    data: Some(json!({"jobId": job.id, "seq": job.seq})),
                }));
            }
        }
    }

    /// Writes the state file (when there is a state dir); a failure is logged, not fatal.
    pub async fn persist(&mut self) {
        let Some(dir) = &self.config.state_dir else { return };
        if let Err(error) = state::save(dir, &self.runtime, self.config.sync_state).await {
            self.log(Level::ERROR, format!("cannot save the state: {error:#}"));
        }
    }

    fn publish_flows(&self) {
        self.shared.details().flows = self.runtime.reports();
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Logs to tracing and keeps the line for `logs` calls. A quiet agent (simulated fleets)
    /// logs info and warnings at debug level, so ten thousand of them do not flood the output.
    pub fn log(&self, level: Level, message: impl Into<String>) {
        let message = message.into();
        let time = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        self.shared.logs().push(format!("{time} {level} {message}"));
        let node = self.config.node_id;
        let level = if self.config.verbose || level == Level::ERROR { level } else { Level::DEBUG };
        match level {
            Level::ERROR => tracing::error!(%node, "{message}"),
            Level::WARN => tracing::warn!(%node, "{message}"),
            Level::INFO => tracing::info!(%node, "{message}"),
            _ => tracing::debug!(%node, "{message}"),
        }
    }
}

fn job_update(job: &Job, state: JobUpdateState, error: Option<String>) -> NodeMessage {
    NodeMessage::JobUpdate(JobUpdate { job_id: job.id, state, error })
}

/// Resolves when the running job's work is done; never if there is none. Dropping this future
/// leaves the work in place, to be polled again next time.
pub(crate) async fn next_work(current: &mut Option<Running>) -> Result<(), String> {
    match current {
        Some(running) => running.work.as_mut().await,
        None => std::future::pending().await,
    }
}

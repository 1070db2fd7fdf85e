//! What the outside sees of a running agent: a handle to stop it and small, honest views of its
//! progress (for tests, benchmarks and the simulator's status line).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

use crate::tunnel::protocol::FlowReport;

/// What the handle asks of the agent task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Run,
    /// Neither read nor write the socket (a hung agent: no pongs).
    Pause,
    /// Close the tunnel properly and end.
    Stop,
    /// Drop the socket without a close frame and end (a crashed agent).
    Kill,
}

/// Why an agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// `stop()` (or the handle was dropped).
    Stopped,
    /// `kill()`.
    Killed,
    /// The server closed the tunnel with a code that means "do not come back" (4000, 4001, 4002).
    Closed { code: u16, reason: String },
    /// The state directory could not be read.
    Failed(String),
}

/// A snapshot of an agent's progress.
#[derive(Debug, Clone, Default)]
pub struct AgentStatus {
    /// The server welcomed the current connection.
    pub connected: bool,
    /// How many connections were welcomed so far.
    pub connections: u64,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub session_id: Option<Uuid>,
    /// The close code of the last connection the server closed.
    pub last_close_code: Option<u16>,
    /// Set once the agent has ended.
    pub stopped: Option<StopReason>,
    pub flows: Vec<FlowReport>,
}

#[derive(Debug, Default)]
pub(crate) struct Details {
    pub connections: u64,
    pub session_id: Option<Uuid>,
    pub last_close_code: Option<u16>,
    pub stopped: Option<StopReason>,
    pub flows: Vec<FlowReport>,
    /// How often each recent job was run (the last [`EXECUTIONS_KEPT`] job ids).
    pub executions: HashMap<Uuid, usize>,
    executions_order: VecDeque<Uuid>,
}

/// How many job ids `executions` remembers.
pub(crate) const EXECUTIONS_KEPT: usize = 10_000;

impl Details {
    pub fn count_execution(&mut self, job_id: Uuid) {
        let count = self.executions.entry(job_id).or_default();
        *count += 1;
        if *count == 1 {
            self.executions_order.push_back(job_id);
            while self.executions_order.len() > EXECUTIONS_KEPT {
                if let Some(old) = self.executions_order.pop_front() {
                    self.executions.remove(&old);
                }
            }
        }
    }
}

/// State shared by the agent task and its handle. Counters are atomics so a status line over
/// thousands of agents takes no locks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub connected: AtomicBool,
    pub jobs_done: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub details: Mutex<Details>,
    pub logs: Mutex<LogRing>,
}

impl Shared {
    pub fn new(log_capacity: usize) -> Self {
        Self {
            connected: AtomicBool::new(false),
            jobs_done: AtomicU64::new(0),
            jobs_failed: AtomicU64::new(0),
            details: Mutex::new(Details::default()),
            logs: Mutex::new(LogRing::new(log_capacity)),
        }
    }

    /// The lock, even if a panicking holder poisoned it (the data is plain values).
    pub fn details(&self) -> MutexGuard<'_, Details> {
        self.details.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn logs(&self) -> MutexGuard<'_, LogRing> {
        self.logs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The agent's recent log lines, for `logs` calls.
#[derive(Debug)]
pub(crate) struct LogRing {
    lines: VecDeque<String>,
    capacity: usize,
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        Self { lines: VecDeque::new(), capacity }
    }

    pub fn push(&mut self, line: String) {
        if self.capacity == 0 {
            return;
        }
        while self.lines.len() >= self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        self.lines.iter().skip(self.lines.len().saturating_sub(n)).cloned().collect()
    }
}

/// A running agent. Dropping the handle stops the agent (as `stop` would, without waiting).
#[derive(Debug)]
pub struct AgentHandle {
    pub(crate) node_id: Uuid,
    pub(crate) shared: Arc<Shared>,
    pub(crate) control: watch::Sender<Control>,
    pub(crate) task: Option<JoinHandle<()>>,
}

impl AgentHandle {
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// Closes the tunnel with a close frame and waits for the agent to end.
    pub async fn stop(mut self) {
        self.finish(Control::Stop).await;
    }

    /// Drops the socket abruptly, without a close frame, and waits for the agent to end: to the
    /// server this looks like a crashed node or a broken network.
    pub async fn kill(mut self) {
        self.finish(Control::Kill).await;
    }

    /// Waits until the agent ends by itself (e.g. closed with 4001), and says why.
    pub async fn wait(&mut self) -> Option<StopReason> {
        if let Some(task) = self.task.as_mut() {
            let _ = task.await;
            self.task = None;
        }
        self.shared.details().stopped.clone()
    }

    /// [`wait`](Self::wait), but gives up after `within` (`None`: still running).
    pub async fn wait_stopped(&mut self, within: std::time::Duration) -> Option<StopReason> {
        tokio::time::timeout(within, self.wait()).await.ok().flatten()
    }

    async fn finish(&mut self, control: Control) {
        let _ = self.control.send(control);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops reading and writing the socket (no pongs, no messages), like a hung process; the
    /// server should time the node out. `resume` undoes it.
    pub fn pause(&self) {
        self.control.send_if_modified(|c| replace_if_running(c, Control::Pause));
    }

    pub fn resume(&self) {
        self.control.send_if_modified(|c| {
            let paused = *c == Control::Pause;
            if paused {
                *c = Control::Run;
            }
            paused
        });
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    pub fn jobs_done(&self) -> u64 {
        self.shared.jobs_done.load(Ordering::Relaxed)
    }

    /// How many times the job was actually run here (redeliveries of a finished job are not runs).
    pub fn executions(&self, job_id: Uuid) -> usize {
        self.shared.details().executions.get(&job_id).copied().unwrap_or(0)
    }

    /// The flows the simulated runtime holds, as reported to the server.
    pub fn flows(&self) -> Vec<FlowReport> {
        self.shared.details().flows.clone()
    }

    pub fn last_close_code(&self) -> Option<u16> {
        self.shared.details().last_close_code
    }

    /// The last `n` log lines the agent would answer a `logs` call with.
    pub fn log_lines(&self, n: usize) -> Vec<String> {
        self.shared.logs().tail(n)
    }

    pub fn status(&self) -> AgentStatus {
        let details = self.shared.details();
        AgentStatus {
            connected: self.shared.connected.load(Ordering::Relaxed),
            connections: details.connections,
            jobs_done: self.shared.jobs_done.load(Ordering::Relaxed),
            jobs_failed: self.shared.jobs_failed.load(Ordering::Relaxed),
            session_id: details.session_id,
            last_close_code: details.last_close_code,
            stopped: details.stopped.clone(),
            flows: details.flows.clone(),
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if self.task.is_some() {
            let _ = self.control.send(Control::Stop);
        }
    }
}

fn replace_if_running(current: &mut Control, next: Control) -> bool {
    if *current == Control::Run {
        *current = next;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_are_counted_and_bounded() {
        let mut details = Details::default();
        let first = Uuid::new_v4();
        details.count_execution(first);
        details.count_execution(first);
        assert_eq!(details.executions[&first], 2);
        for _ in 0..EXECUTIONS_KEPT {
            details.count_execution(Uuid::new_v4());
        }
        assert_eq!(details.executions.len(), EXECUTIONS_KEPT);
        assert!(!details.executions.contains_key(&first));
    }

    #[test]
    fn log_ring_keeps_the_last_lines() {
        let mut ring = LogRing::new(3);
        for i in 0..5 {
            ring.push(format!("line {i}"));
        }
        assert_eq!(ring.tail(10), ["line 2", "line 3", "line 4"]);
        assert_eq!(ring.tail(1), ["line 4"]);
        assert!(ring.tail(0).is_empty());
        let mut none = LogRing::new(0);
        none.push("x".into());
        assert!(none.tail(5).is_empty());
    }
}

//! The replica's writer of what nodes report: job updates, flow states, shadow reports, metrics
//! and events. Sessions hand reports over without waiting, so a node's socket is served (pings,
//! jobs, calls) however slow or absent the database is. The writer stores them in batches; while
//! the database is unavailable it keeps them (a node's newer state, shadow report or metrics
//! replace older ones; events wait up to a bound) and retries until they are stored, so an
//! outcome a node reported during a database restart is not lost.

use std::{collections::HashMap, collections::VecDeque, sync::Arc, time::Duration};

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use uuid::Uuid;

use super::protocol::{JobUpdate, JobUpdateState};
use crate::{db, events::store::NewEvent, jobs::store as job_store};

/// Something a node reported, to store.
#[derive(Debug)]
pub enum Report {
    Job {
        node_id: Uuid,
        update: JobUpdate,
    },
    State {
        node_id: Uuid,
        flows: Value,
    },
    Shadow {
        node_id: Uuid,
        reported: Value,
    },
    Metrics {
        node_id: Uuid,
        values: Value,
    },
    Event(NewEvent),
    /// Answered once everything handed over before it is stored.
    Flush(oneshot::Sender<()>),
}

/// Events kept while the database is unavailable; older ones are dropped past this.
const MAX_PENDING_EVENTS: usize = 10_000;
/// Reports taken from the queue per round.
const PER_ROUND: usize = 10_000;
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Starts the writer; it ends when every sender is gone.
pub fn spawn(db: PgPool, settled: Arc<Notify>, stopped: watch::Receiver<bool>) -> mpsc::UnboundedSender<Report> {
    let (sender, reports) = mpsc::unbounded_channel();
    tokio::spawn(run(db, reports, settled, stopped));
    sender
}

async fn run(
    db: PgPool,
    mut reports: mpsc::UnboundedReceiver<Report>,
    settled: Arc<Notify>,
    stopped: watch::Receiver<bool>,
) {
    let mut pending = Pending::default();
    let mut retry = RETRY_FIRST;
    loop {
        if pending.is_empty() {
            match reports.recv().await {
                Some(report) => pending.add(report),
                None => return,
            }
        }
        for _ in 0..PER_ROUND {
            match reports.try_recv() {
                Ok(report) => pending.add(report),
                Err(_) => break,
            }
        }
        match pending.store(&db).await {
            Ok(finished_jobs) => {
                retry = RETRY_FIRST;
                if finished_jobs {
                    settled.notify_one();
                }
            }
            Err(err) if *stopped.borrow() => {
                tracing::warn!(error = %err, "the replica is stopping: dropping nodes' reports it could not store");
                pending = Pending::default();
            }
            Err(err) => {
                let retry_ms = retry.as_millis() as u64;
                tracing::warn!(error = %err, retry_ms, "storing nodes' reports failed; keeping them and retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Reports received and not stored yet.
#[derive(Default)]
struct Pending {
    jobs: Vec<(Uuid, JobUpdate)>,
    states: HashMap<Uuid, Value>,
    shadows: HashMap<Uuid, Value>,
    metrics: HashMap<Uuid, Value>,
    events: VecDeque<NewEvent>,
    /// Events dropped because too many waited (a long outage with chatty nodes).
    events_dropped: u64,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.states.is_empty()
            && self.shadows.is_empty()
            && self.metrics.is_empty()
            && self.events.is_empty()
            && self.flushes.is_empty()
    }

    fn add(&mut self, report: Report) {
        match report {
            Report::Job { node_id, update } => self.jobs.push((node_id, update)),
            Report::State { node_id, flows } => drop(self.states.insert(node_id, flows)),
            Report::Shadow { node_id, reported } => drop(self.shadows.insert(node_id, reported)),
            Report::Metrics { node_id, values } => drop(self.metrics.insert(node_id, values)),
            Report::Event(event) => {
                if self.events.len() >= MAX_PENDING_EVENTS {
                    self.events.pop_front();
                    self.events_dropped += 1;
                    if self.events_dropped % 1000 == 1 {
                        let dropped = self.events_dropped;
                        tracing::warn!(dropped, "too many node events wait for the database; dropping the oldest");
                    }
                }
                self.events.push_back(event);
            }
            Report::Flush(done) => self.flushes.push(done),
        }
    }

    /// Stores everything, part by part; what is stored is forgotten, so after a failure only
    /// the rest is retried. Answers whether jobs reached a final state.
    async fn store(&mut self, db: &PgPool) -> Result<bool, sqlx::Error> {
        let mut finished = false;
        if !self.jobs.is_empty() {
            settle(job_store::apply_updates(db, self.jobs.clone()).await, "job updates")?;
            finished =
                self.jobs.drain(..).any(|(_, u)| matches!(u.state, JobUpdateState::Succeeded | JobUpdateState::Failed));
        }
        for (column, at, reports) in [
            ("reported_flows", "reported_at", &mut self.states),
            ("shadow_reported", "shadow_reported_at", &mut self.shadows),
            ("metrics", "metrics_at", &mut self.metrics),
        ] {
            if !reports.is_empty() {
                let (nodes, values): (Vec<Uuid>, Vec<Value>) = reports.iter().map(|(n, v)| (*n, v.clone())).unzip();
                settle(store_column(db, column, at, &nodes, &values).await, column)?;
                reports.clear();
            }
        }
        if !self.events.is_empty() {
            // One connection for the round's events; failing to get one means the database is away.
            let mut conn = db.acquire().await?;
            while let Some(event) = self.events.front() {
                settle(event.record(&mut conn).await.map(drop), "a node event")?;
                self.events.pop_front();
            }
        }
        for done in self.flushes.drain(..) {
            let _ = done.send(());
        }
        Ok(finished)
    }
}

/// `Err` (keep the reports and retry later) when the database is unavailable. A report the
/// database refuses for good is logged and dropped, so it cannot hold up the others.
fn settle(stored: Result<(), sqlx::Error>, what: &str) -> Result<(), sqlx::Error> {
    match stored {
        Err(err) if db::is_unavailable(&err) => Err(err),
        Err(err) => {
            tracing::error!(error = %err, "the database refused {what} reported by nodes; dropping them");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Writes one reported column (with its `<column>_at` time) for several nodes in one statement.
async fn store_column(
    db: &PgPool,
    column: &str,
    at: &str,
    nodes: &[Uuid],
    values: &[Value],
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE edge_nodes n SET {column} = v.value, {at} = now() \
         FROM unnest($1::uuid[], $2::jsonb[]) AS v(id, value) WHERE n.id = v.id"
    )))
    .bind(nodes)
    .bind(values)
    .execute(db)
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::model::{Level, Source};

    #[test]
    fn a_nodes_newer_reports_replace_older_ones_and_waiting_events_are_bounded() {
        let mut pending = Pending::default();
        let node = Uuid::now_v7();
        pending.add(Report::State { node_id: node, flows: json!([1]) });
        pending.add(Report::State { node_id: node, flows: json!([2]) });
        pending.add(Report::Metrics { node_id: node, values: json!({"cpu": 1}) });
        assert_eq!((pending.states.len(), &pending.states[&node]), (1, &json!([2])));
        for i in 0..MAX_PENDING_EVENTS + 5 {
            let event = NewEvent::new(None, Level::Info, Source::Node, "node.event", "Node: n", i.to_string());
            pending.add(Report::Event(event));
        }
        assert_eq!(pending.events.len(), MAX_PENDING_EVENTS);
        assert_eq!((pending.events[0].message.as_str(), pending.events_dropped), ("5", 5));
        assert!(!pending.is_empty());
    }
}

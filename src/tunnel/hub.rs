//! The hub: which nodes this replica holds, and how messages reach them.
//!
//! - Sessions register here when a node says hello; a newer connection of the same node replaces
//!   the older one (close 4000), on this replica or, through the bus, on another.
//! - Job delivery runs in one worker per replica, so the jobs of a node are always written to its
//!   socket in `seq` order. The worker is poked (by the bus, by a reconnect, by a periodic
//!   resync) and reads the truth from `node_jobs`.
//! - Synchronous calls wait on a oneshot, whether the node is here or on another replica.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    bus::{self, BusMessage},
    protocol::{CallRequest, CallResponse, JobCanceled, ServerMessage, Shadow, close_code},
    writer::Report,
};
use crate::{config::Config, error::ApiError, jobs::store as job_store};

/// How long a failed resume of reconnected nodes waits before it is tried again.
const RESUME_RETRY: Duration = Duration::from_secs(1);
/// How far back a replica whose bus listener reconnected tells its nodes of canceled jobs again.
const CANCELS_TOLD_AGAIN_WITHIN: Duration = Duration::from_secs(15 * 60);

/// Calls answered by the node with a body larger than this go through a table, not the bus.
const INLINE_REPLY_BYTES: usize = 7000;
/// Slots in a session's outbound queue; a node that falls this far behind is disconnected.
const SESSION_QUEUE: usize = 256;

#[derive(Debug, Clone)]
pub struct HubSettings {
    pub heartbeat: Duration,
    pub offline_after: Duration,
    pub call_timeout: Duration,
    pub messages_per_second: u32,
    pub max_message_bytes: usize,
    pub job_timeout_seconds: i64,
}

impl HubSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            heartbeat: Duration::from_secs(config.heartbeat_seconds.max(1)),
            offline_after: Duration::from_secs(config.offline_after_seconds.max(2)),
            call_timeout: Duration::from_secs(config.node_call_timeout_seconds.max(1)),
            messages_per_second: config.node_messages_per_second.max(1),
            max_message_bytes: config.node_max_message_bytes.max(1024),
            job_timeout_seconds: config.job_timeout_seconds,
        }
    }
}

/// What a session is asked to write to its socket.
#[derive(Debug)]
pub enum Outbound {
    Text(String),
    Close {
        code: u16,
        reason: String,
    },
    /// Drop the socket and record nothing: a simulated crash, for tests.
    Abort,
}

struct SessionEntry {
    session_id: Uuid,
    tx: mpsc::Sender<Outbound>,
}

enum PendingCall {
    /// A handler on this replica waits for the answer.
    Local(oneshot::Sender<CallResponse>),
    /// The replica named waits; the answer goes back through the bus.
    Remote { reply_to: Uuid },
}

enum Delivery {
    /// These nodes may have queued jobs.
    Jobs(Vec<Uuid>),
    /// A node (re)connected: send its shadow and every unfinished job, in order.
    Resume { node_id: Uuid, session_id: Uuid },
    /// The node's desired shadow changed.
    Shadow(Uuid),
}

pub struct Hub {
    pub replica_id: Uuid,
    pub settings: HubSettings,
    db: PgPool,
    sessions: RwLock<HashMap<Uuid, SessionEntry>>,
    /// Calls waiting for a node's answer, with when they started (stale ones are pruned).
    calls: Mutex<HashMap<Uuid, (Instant, PendingCall)>>,
    deliveries: mpsc::UnboundedSender<Delivery>,
    /// When each held node was last heard from; flushed to `edge_nodes.last_seen_at` in batches.
    last_seen: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    /// What the nodes report, stored in the background by one writer.
    reports: mpsc::UnboundedSender<Report>,
    /// Signalled when nodes finish jobs, so the deployment driver acts at once.
    jobs_settled: Arc<tokio::sync::Notify>,
    /// Flips to true when the replica stops: background loops end.
    stopped: tokio::sync::watch::Sender<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// Creates the hub and starts its delivery worker.
    pub fn start(db: PgPool, settings: HubSettings) -> Arc<Self> {
        let (deliveries, queue) = mpsc::unbounded_channel();
        let jobs_settled = Arc::new(tokio::sync::Notify::new());
        let stopped = tokio::sync::watch::channel(false).0;
        let reports = super::writer::spawn(db.clone(), jobs_settled.clone(), stopped.subscribe());
        let hub = Arc::new(Self {
            replica_id: Uuid::now_v7(),
            settings,
            db,
            sessions: RwLock::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            deliveries,
            last_seen: Mutex::new(HashMap::new()),
            reports,
            jobs_settled,
            stopped,
        });
        tokio::spawn(delivery_worker(Arc::downgrade(&hub), queue));
        hub
    }

    /// Notified when nodes have finished jobs.
    pub fn jobs_settled(&self) -> Arc<tokio::sync::Notify> {
        self.jobs_settled.clone()
    }

    /// A receiver that turns true when this replica stops.
    pub fn stopped(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopped.subscribe()
    }

    /// Hands what a node reported to the background writer (never waits for the database).
    pub fn report(&self, report: Report) {
        let _ = self.reports.send(report);
    }

    /// Waits (at most `within`) until everything reported so far is stored.
    pub async fn flush_reports(&self, within: Duration) {
        let (done, stored) = oneshot::channel();
        self.report(Report::Flush(done));
        let _ = tokio::time::timeout(within, stored).await;
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    pub fn connected_count(&self) -> usize {
        self.sessions.read().map_or(0, |s| s.len())
    }

    fn sender(&self, node_id: Uuid) -> Option<(Uuid, mpsc::Sender<Outbound>)> {
        let sessions = self.sessions.read().ok()?;
        sessions.get(&node_id).map(|entry| (entry.session_id, entry.tx.clone()))
    }

    pub fn holds(&self, node_id: Uuid) -> bool {
        self.sessions.read().is_ok_and(|s| s.contains_key(&node_id))
    }

    /// Registers a session; answers its outbound queue. An older session of the node on this
    /// replica is told to close (4000).
    pub fn attach(&self, node_id: Uuid, session_id: Uuid) -> mpsc::Receiver<Outbound> {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let previous = match self.sessions.write() {
            Ok(mut sessions) => sessions.insert(node_id, SessionEntry { session_id, tx }),
            Err(_) => None,
        };
        if let Some(previous) = previous {
            let _ = previous.tx.try_send(Outbound::Close {
                code: close_code::REPLACED,
                reason: "replaced by a newer connection".into(),
            });
        }
        self.touch(node_id);
        rx
    }

    /// Removes the session if it is still the node's current one; answers whether it was.
    pub fn detach(&self, node_id: Uuid, session_id: Uuid) -> bool {
        let Ok(mut sessions) = self.sessions.write() else { return false };
        if sessions.get(&node_id).is_some_and(|entry| entry.session_id == session_id) {
            sessions.remove(&node_id);
            true
        } else {
            false
        }
    }

    /// Notes that the node was heard from now.
    pub fn touch(&self, node_id: Uuid) {
        lock(&self.last_seen).insert(node_id, Utc::now());
    }

    /// Writes the last-seen times gathered since the previous flush, in one statement.
    pub async fn flush_last_seen(&self) -> Result<(), sqlx::Error> {
        let batch: Vec<(Uuid, DateTime<Utc>)> = lock(&self.last_seen).drain().collect();
        if batch.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = batch.into_iter().unzip();
        sqlx::query(
            "UPDATE edge_nodes n SET last_seen_at = greatest(n.last_seen_at, v.seen) \
             FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, seen) WHERE n.id = v.id",
        )
        .bind(ids)
        .bind(times)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Asks the session of a node on this replica to close.
    pub fn close_local(&self, node_id: Uuid, code: u16, reason: &str, keep_session: Option<Uuid>) {
        if let Some((session_id, tx)) = self.sender(node_id)
            && Some(session_id) != keep_session
        {
            let _ = tx.try_send(Outbound::Close { code, reason: reason.to_owned() });
        }
    }

    /// Pokes the delivery worker for these nodes (those held elsewhere are skipped there).
    pub fn deliver_jobs(&self, nodes: Vec<Uuid>) {
        let _ = self.deliveries.send(Delivery::Jobs(nodes));
    }

    pub fn resume(&self, node_id: Uuid, session_id: Uuid) {
        let _ = self.deliveries.send(Delivery::Resume { node_id, session_id });
    }

    /// Pokes the delivery worker for every held node (the periodic safety net for a missed
    /// notification).
    pub fn resync(&self) {
        let nodes: Vec<Uuid> = self.sessions.read().map(|s| s.keys().copied().collect()).unwrap_or_default();
        if !nodes.is_empty() {
            self.deliver_jobs(nodes);
        }
    }

    /// After the bus was away (its listener lost its connection, so any message may have been
    /// missed), redoes from the tables what the messages would have done for the held nodes:
    /// queued jobs and the desired shadow are sent, and the sockets of nodes deleted, re-keyed
    /// or connected elsewhere meanwhile are closed (4001, 4002, 4000).
    pub async fn catch_up(&self) {
        let held: Vec<(Uuid, Uuid)> = self
            .sessions
            .read()
            .map(|s| s.iter().map(|(node, entry)| (*node, entry.session_id)).collect())
            .unwrap_or_default();
        if held.is_empty() {
            return;
        }
        let nodes: Vec<Uuid> = held.iter().map(|(node, _)| *node).collect();
        self.deliver_jobs(nodes.clone());
        for node in &nodes {
            let _ = self.deliveries.send(Delivery::Shadow(*node));
        }
        // A cancel told again is harmless (the node drops a job it does not hold); one never told
        // lets the node run a canceled job. A listener is away for seconds, so a window of
        // minutes covers it.
        match job_store::recently_canceled_after_sending(&self.db, &nodes, CANCELS_TOLD_AGAIN_WITHIN).await {
            Ok(canceled) => {
                for (node_id, job_id) in canceled {
                    self.tell_canceled(node_id, job_id);
                }
            }
            Err(err) => tracing::warn!(error = %err, "resending cancels after a bus outage failed"),
        }
        match super::presence::stale_sessions(&self.db, &held).await {
            Ok(stale) => {
                for (node_id, session_id, code) in stale {
                    if let Some((current, tx)) = self.sender(node_id)
                        && current == session_id
                    {
                        let reason = close_code::reason(code).to_owned();
                        let _ = tx.try_send(Outbound::Close { code, reason });
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "checking held nodes after a bus outage failed"),
        }
    }

    /// Tells the node, if held here, that a job it may hold is canceled.
    fn tell_canceled(&self, node_id: Uuid, job_id: Uuid) {
        if let Some((_, tx)) = self.sender(node_id)
            && let Ok(text) = serde_json::to_string(&ServerMessage::JobCanceled(JobCanceled { job_id }))
        {
            let _ = tx.try_send(Outbound::Text(text));
        }
    }

    /// Acts on a message from the bus.
    pub async fn on_bus(&self, message: BusMessage) {
        match message {
            BusMessage::Jobs { nodes } => {
                tracing::debug!(nodes = nodes.len(), "jobs announced");
                let held: Vec<Uuid> = nodes.into_iter().filter(|n| self.holds(*n)).collect();
                if !held.is_empty() {
                    self.deliver_jobs(held);
                }
            }
            BusMessage::JobCanceled { node_id, job_id } => self.tell_canceled(node_id, job_id),
            BusMessage::Disconnect { node_id, code, reason, keep_session } => {
                self.close_local(node_id, code, &reason, keep_session);
            }
            BusMessage::Shadow { node_id } => {
                if self.holds(node_id) {
                    let _ = self.deliveries.send(Delivery::Shadow(node_id));
                }
            }
            BusMessage::Call { call_id, node_id, method, params, reply_to } => {
                tracing::debug!(replica = %self.replica_id, call = %call_id, holds = self.holds(node_id), "bus call");
                if let Some((_, tx)) = self.sender(node_id) {
                    lock(&self.calls).insert(call_id, (Instant::now(), PendingCall::Remote { reply_to }));
                    send_call(&tx, call_id, method, params);
                }
            }
            BusMessage::CallReply { call_id, reply_to, body } if reply_to == self.replica_id => {
                let body = match body {
                    Some(body) => Some(body),
                    None => take_stored_reply(&self.db, call_id).await,
                };
                let response = body.and_then(|b| serde_json::from_value::<CallResponse>(b).ok());
                let pending = lock(&self.calls).remove(&call_id);
                if let (Some(response), Some((_, PendingCall::Local(waiter)))) = (response, pending) {
                    let _ = waiter.send(response);
                }
            }
            BusMessage::CallReply { .. } => {}
        }
    }

    /// Forgets calls whose caller has given up (it waits `call_timeout` at most).
    pub fn prune_calls(&self) {
        let horizon = self.settings.call_timeout + Duration::from_secs(5);
        lock(&self.calls).retain(|_, (since, _)| since.elapsed() < horizon);
    }

    /// A node answered a call: hand the answer to whoever waits, here or on another replica.
    pub async fn finish_call(&self, response: CallResponse) {
        tracing::debug!(replica = %self.replica_id, call = %response.id, "node answered a call");
        let pending = lock(&self.calls).remove(&response.id).map(|(_, pending)| pending);
        match pending {
            Some(PendingCall::Local(waiter)) => {
                let _ = waiter.send(response);
            }
            Some(PendingCall::Remote { reply_to }) => {
                if let Err(err) = self.reply_remote(reply_to, response).await {
                    tracing::warn!(error = %err, "could not pass a node's answer to the calling replica");
                }
            }
            None => tracing::debug!(call = %response.id, "answer to a call nobody waits for"),
        }
    }

    async fn reply_remote(&self, reply_to: Uuid, response: CallResponse) -> Result<(), sqlx::Error> {
        let call_id = response.id;
        let body = serde_json::to_value(&response).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
        let mut conn = self.db.acquire().await?;
        let inline = body.to_string().len() <= INLINE_REPLY_BYTES;
        if !inline {
            sqlx::query("INSERT INTO node_call_replies (id, body) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(call_id)
                .bind(&body)
                .execute(&mut *conn)
                .await?;
        }
        let message = BusMessage::CallReply { call_id, reply_to, body: inline.then_some(body) };
        bus::publish(&mut conn, &message).await
    }

    /// Calls `method` on a node of `organization_id` and waits for its answer: 409 NODE_OFFLINE
    /// when no replica holds it, 504 NODE_TIMEOUT when it does not answer in time, 502 NODE_ERROR
    /// when it answers with an error.
    pub async fn call(
        &self,
        organization_id: Uuid,
        node_id: Uuid,
        method: &str,
        params: Value,
    ) -> Result<Value, ApiError> {
        let online: Option<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM edge_nodes n WHERE n.id = $1 AND n.organization_id = $2",
            super::presence::ONLINE_SQL
        )))
        .bind(node_id)
        .bind(organization_id)
        .fetch_optional(&self.db)
        .await?;
        match online {
            None => return Err(ApiError::NotFound("edge node")),
            Some(false) if !self.holds(node_id) => {
                return Err(ApiError::conflict("NODE_OFFLINE", "the edge node is not connected"));
            }
            Some(_) => {}
        }
        let call_id = Uuid::now_v7();
        let (waiter, answer) = oneshot::channel();
        lock(&self.calls).insert(call_id, (Instant::now(), PendingCall::Local(waiter)));
        if let Some((_, tx)) = self.sender(node_id) {
            send_call(&tx, call_id, method.to_owned(), params);
        } else {
            let message =
                BusMessage::Call { call_id, node_id, method: method.to_owned(), params, reply_to: self.replica_id };
            let published = async {
                let mut conn = self.db.acquire().await?;
                bus::publish(&mut conn, &message).await
            }
            .await;
            if let Err(err) = published {
                lock(&self.calls).remove(&call_id);
                return Err(err.into());
            }
        }
        let outcome = tokio::time::timeout(self.settings.call_timeout, answer).await;
        lock(&self.calls).remove(&call_id);
        let response = match outcome {
            Ok(Ok(response)) => response,
            _ => {
                return Err(ApiError::GatewayTimeout {
                    code: "NODE_TIMEOUT",
                    message: format!("the edge node did not answer within {} s", self.settings.call_timeout.as_secs()),
                });
            }
        };
        if response.ok {
            Ok(response.result.unwrap_or(Value::Null))
        } else {
            Err(ApiError::BadGateway {
                code: "NODE_ERROR",
                message: format!(
                    "the edge node answered with an error: {}",
                    response.error.unwrap_or_else(|| "unknown error".into())
                ),
            })
        }
    }

    /// Simulates a crash: every socket dropped without a close frame, background loops stopped,
    /// nothing recorded. The replica's nodes stay "online" until its heartbeat lapses.
    pub fn abort(&self) {
        self.stopped.send_replace(true);
        if let Ok(sessions) = self.sessions.read() {
            for entry in sessions.values() {
                let _ = entry.tx.try_send(Outbound::Abort);
            }
        }
    }

    /// Stops gracefully: every session closed with 1001 (going away) so nodes reconnect to
    /// another replica, their disconnection recorded, background loops stopped.
    pub async fn shutdown(&self) {
        self.close_all();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.connected_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stopped.send_replace(true);
        if let Err(err) = super::presence::retire_replica(self).await {
            tracing::warn!(error = %err, "could not retire this replica's presence");
        }
    }

    /// Closes every session with 1001 (going away), so nodes reconnect to another replica.
    pub fn close_all(&self) {
        if let Ok(sessions) = self.sessions.read() {
            for entry in sessions.values() {
                let _ = entry
                    .tx
                    .try_send(Outbound::Close { code: close_code::GOING_AWAY, reason: "server shutting down".into() });
            }
        }
    }
}

fn send_call(tx: &mpsc::Sender<Outbound>, call_id: Uuid, method: String, params: Value) {
    let request = ServerMessage::Request(CallRequest { id: call_id, method, params });
    if let Ok(text) = serde_json::to_string(&request) {
        let _ = tx.try_send(Outbound::Text(text));
    }
}

async fn take_stored_reply(db: &PgPool, call_id: Uuid) -> Option<Value> {
    sqlx::query_scalar("DELETE FROM node_call_replies WHERE id = $1 RETURNING body")
        .bind(call_id)
        .fetch_optional(db)
        .await
        .ok()
        .flatten()
}

/// The one writer of jobs and shadows to sockets on this replica: pokes are handled in arrival
/// order, so a node's jobs are queued to its session in `seq` order.
async fn delivery_worker(weak: std::sync::Weak<Hub>, mut queue: mpsc::UnboundedReceiver<Delivery>) {
    // Reconnected nodes whose resume failed (the database was away): retried until it works, and
    // until then their new jobs wait too, so that what was sent before still arrives first.
    let mut unresumed: HashMap<Uuid, Uuid> = HashMap::new();
    while let Some(first) = queue.recv().await {
        let Some(hub) = weak.upgrade() else { return };
        // Coalesce what is waiting into one round: one query for all poked nodes.
        let mut poked: HashSet<Uuid> = HashSet::new();
        let mut resumes = Vec::new();
        let mut shadows: HashSet<Uuid> = HashSet::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(delivery) = next {
            match delivery {
                Delivery::Jobs(nodes) => poked.extend(nodes),
                Delivery::Resume { node_id, session_id } => resumes.push((node_id, session_id)),
                Delivery::Shadow(node_id) => {
                    shadows.insert(node_id);
                }
            }
            taken += 1;
            next = if taken < 10_000 { queue.try_recv().ok() } else { None };
        }
        unresumed.extend(resumes);
        if !unresumed.is_empty() {
            for node_id in unresumed.keys() {
                poked.remove(node_id);
                shadows.remove(node_id);
            }
            match resume_nodes(&hub, unresumed.iter().map(|(node, session)| (*node, *session)).collect()).await {
                Ok(()) => unresumed.clear(),
                Err(err) => {
                    tracing::warn!(error = %err, nodes = unresumed.len(), "resuming nodes' jobs failed; retrying");
                    let weak = weak.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(RESUME_RETRY).await;
                        if let Some(hub) = weak.upgrade() {
                            hub.deliver_jobs(Vec::new());
                        }
                    });
                }
            }
        }
        if !shadows.is_empty()
            && let Err(err) = send_shadows(&hub, shadows.into_iter().collect()).await
        {
            tracing::warn!(error = %err, "sending shadows failed");
        }
        let held: Vec<Uuid> = poked.into_iter().filter(|n| hub.holds(*n)).collect();
        if !held.is_empty() {
            let started = Instant::now();
            let count = held.len();
            match send_queued(&hub, held).await {
                Ok(()) => tracing::debug!(
                    nodes = count,
                    millis = started.elapsed().as_millis() as u64,
                    "delivered queued jobs"
                ),
                Err(err) => tracing::warn!(error = %err, "delivering jobs failed; they stay queued and are retried"),
            }
        }
    }
}

/// Queues `message` to the node's session; false when the session is gone or too far behind.
fn push(hub: &Hub, node_id: Uuid, message: &ServerMessage) -> bool {
    let Some((_, tx)) = hub.sender(node_id) else { return false };
    let Ok(text) = serde_json::to_string(message) else { return false };
    match tx.try_send(Outbound::Text(text)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            let _ = tx.try_send(Outbound::Close {
                code: close_code::PROTOCOL_VIOLATION,
                reason: "the node is not reading its messages".into(),
            });
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Sends (re)connected nodes their shadow and every unfinished job in order: one query for all
/// shadows and one for all jobs, however many nodes connected at once.
async fn resume_nodes(hub: &Hub, resumes: Vec<(Uuid, Uuid)>) -> Result<(), sqlx::Error> {
    let current: Vec<Uuid> = resumes
        .into_iter()
        .filter(|(node_id, session_id)| hub.sender(*node_id).map(|(s, _)| s) == Some(*session_id))
        .map(|(node_id, _)| node_id)
        .collect();
    if current.is_empty() {
        return Ok(());
    }
    send_shadows(hub, current.clone()).await?;
    let jobs = job_store::take_unfinished(&hub.db, &current).await?;
    let mut undelivered = Vec::new();
    for job in jobs {
        let (id, node_id) = (job.id, job.node_id);
        if !push(hub, node_id, &ServerMessage::Job(job.into_message())) {
            undelivered.push(id);
        }
    }
    job_store::requeue(&hub.db, &undelivered).await
}

async fn send_shadows(hub: &Hub, nodes: Vec<Uuid>) -> Result<(), sqlx::Error> {
    for (node_id, desired, version) in job_store::shadows_of(&hub.db, &nodes).await? {
        push(hub, node_id, &ServerMessage::Shadow(Shadow { desired, version }));
    }
    Ok(())
}

async fn send_queued(hub: &Hub, nodes: Vec<Uuid>) -> Result<(), sqlx::Error> {
    let jobs = job_store::take_queued(&hub.db, &nodes).await?;
    let mut undelivered = Vec::new();
    for job in jobs {
        let (id, node_id) = (job.id, job.node_id);
        if !push(hub, node_id, &ServerMessage::Job(job.into_message())) {
            undelivered.push(id);
        }
    }
    job_store::requeue(&hub.db, &undelivered).await
}

//! One live stream (`GET /api/events/stream`): the events of the caller's organization that match
//! the request's filters, as Server-Sent Events, from any replica.
//!
//! The stream subscribes to the replica's feed before it reads anything, so nothing committed
//! after it opened is missed. It starts live, or catches up from the table first: after
//! `Last-Event-ID` (the browser sends it when it reconnects) or from `since`. When the feed lags
//! or its listener reconnects, it catches up from the table again, a few seconds back from the
//! newest event it delivered, and skips the ids it has already sent; so does a stream that could
//! not read the table because the database was away (it stays open meanwhile). It ends when the
//! replica stops or the caller's credential expires or is revoked, with a last `close` event
//! saying why.

use std::{
    collections::{HashSet, VecDeque},
    convert::Infallible,
    sync::Arc,
    time::Duration,
};

use axum::response::sse::Event as SseEvent;
use futures_util::Stream;
use sqlx::PgPool;
use tokio::{
    sync::broadcast::{self, error::RecvError, error::TryRecvError},
    time::Instant,
};
use uuid::Uuid;

use super::{
    feed::Notice,
    model::{Event, EventRow},
    query::{EventQuery, Position},
    store,
};
use crate::{
    auth::{
        context::{AuthContext, Principal},
        revocation::RevocationList,
    },
    error::ApiResult,
};

/// Rows read from the table per catch-up query.
const CATCH_UP_BATCH: i64 = 200;
/// Notices handled per live query.
const LIVE_BATCH: usize = 200;
/// How far back a catch-up after a lag looks, for events committed late (their time is when
/// they were written, not when they committed); ids already sent are skipped.
const LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// Ids remembered to skip repeats.
const REMEMBERED: usize = 8192;
/// How often the credential is checked while the stream is quiet (a session against the
/// in-memory revocation list).
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often an API key is checked in the database.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(30);
/// What the browser should wait before reconnecting.
const RETRY: Duration = Duration::from_secs(3);
/// How long a stream waits before reading again while the database is unavailable.
const DATABASE_RETRY: Duration = Duration::from_secs(1);

/// Who is listening, and until when.
struct Credential {
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    session: Option<Uuid>,
    api_key: Option<Uuid>,
    revocations: Arc<RevocationList>,
    next_check: Instant,
    next_key_check: Instant,
}

impl Credential {
    /// Why the stream must end, if it must.
    async fn ended(&mut self, db: &PgPool) -> Option<&'static str> {
        if self.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
            return Some("the credential expired; reconnect with a fresh one");
        }
        if self.session.is_some_and(|sid| self.revocations.is_revoked(sid)) {
            return Some("the session was signed out");
        }
        if Instant::now() >= self.next_check {
            self.next_check = Instant::now() + CHECK_EVERY;
        }
        if let Some(key) = self.api_key
            && Instant::now() >= self.next_key_check
        {
            self.next_key_check = Instant::now() + KEY_CHECK_EVERY;
            // A database hiccup does not end the stream; the next check will tell.
            let live = match db.acquire().await {
                Ok(mut conn) => store::api_key_is_live(&mut conn, key).await.unwrap_or(true),
                Err(_) => true,
            };
            if !live {
                return Some("the API key was revoked or expired");
            }
        }
        None
    }
}

/// Ids recently sent, oldest first.
#[derive(Default)]
struct Recent {
    order: VecDeque<Uuid>,
    set: HashSet<Uuid>,
}

impl Recent {
    /// False when the id was sent already.
    fn insert(&mut self, id: Uuid) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Where a stream starts.
pub enum Start {
    /// Only what is committed from now on.
    Live,
    /// Events after this one (in time order), then live.
    After(Position),
}

pub struct Follower {
    db: PgPool,
    organization_id: Uuid,
    query: EventQuery,
    notices: broadcast::Receiver<Notice>,
    /// Set while the stream reads the table: it continues after this position.
    catch_up: Option<Position>,
    /// The newest position delivered (or where the stream started).
    high_water: Position,
    /// Where the stream started: a catch-up never goes further back.
    floor: Position,
    recent: Recent,
    pending: VecDeque<EventRow>,
    credential: Credential,
    greeted: bool,
    closing: Option<&'static str>,
    done: bool,
}

impl Follower {
    /// `notices` must be subscribed before `start` was decided, so that nothing falls between.
    pub async fn open(
        db: PgPool,
        auth: &AuthContext,
        revocations: Arc<RevocationList>,
        query: EventQuery,
        notices: broadcast::Receiver<Notice>,
        start: Start,
    ) -> ApiResult<Self> {
        let (catch_up, high_water) = match start {
            Start::After(position) => (Some(position), position),
            Start::Live => {
                let mut conn = db.acquire().await?;
                (None, Position { at: store::now(&mut conn).await?, id: Uuid::nil() })
            }
        };
        let (session, api_key) = match auth.principal {
            Principal::User { session_id, .. } => (Some(session_id), None),
            Principal::ApiKey { key_id } => (None, Some(key_id)),
        };
        Ok(Self {
            db,
            organization_id: auth.organization_id,
            query,
            notices,
            catch_up,
            high_water,
            floor: high_water,
            recent: Recent::default(),
            pending: VecDeque::new(),
            credential: Credential {
                expires_at: auth.expires_at,
                session,
                api_key,
                revocations,
                next_check: Instant::now() + CHECK_EVERY,
                next_key_check: Instant::now() + KEY_CHECK_EVERY,
            },
            greeted: false,
            closing: None,
            done: false,
        })
    }

    pub fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut follower| async move {
            follower.next().await.map(|event| (Ok(event), follower))
        })
    }

    async fn next(&mut self) -> Option<SseEvent> {
        if self.done {
            return None;
        }
        if !self.greeted {
            self.greeted = true;
            return Some(SseEvent::default().comment("connected").retry(RETRY));
        }
        loop {
            if let Some(row) = self.pending.pop_front() {
                return Some(to_sse(row));
            }
            if self.closing.is_none() {
                self.closing = self.credential.ended(&self.db).await;
            }
            if let Some(reason) = self.closing {
                self.done = true;
                let data = serde_json::json!({ "reason": reason }).to_string();
                return Some(SseEvent::default().event("close").data(data));
            }
            let result = match self.catch_up {
                Some(from) => self.read_table(from).await,
                None => self.follow_live().await,
            };
            match result {
                Ok(()) => {}
                // The database is away for a moment: stay open and catch up from the table once
                // it is back, rather than end every stream.
                Err(err) if crate::db::is_unavailable(&err) => {
                    tracing::debug!(error = %err, "an event stream waits for the database");
                    if self.catch_up.is_none() {
                        self.catch_up = Some(self.lookback());
                    }
                    self.wait_for_database().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "an event stream failed; the client will reconnect");
                    self.closing = Some("the server could not read events; reconnect with Last-Event-ID");
                }
            }
        }
    }

    async fn read_table(&mut self, from: Position) -> Result<(), sqlx::Error> {
        let mut conn = self.db.acquire().await?;
        let rows = store::following(&mut conn, self.organization_id, &self.query, from, CATCH_UP_BATCH).await?;
        drop(conn);
        self.catch_up = match rows.last() {
            Some(last) if rows.len() as i64 == CATCH_UP_BATCH => Some(Position { at: last.occurred_at, id: last.id }),
            _ => None,
        };
        self.deliver(rows);
        Ok(())
    }

    /// Waits for notices (or the next credential check), then reads the matching rows by id.
    async fn follow_live(&mut self) -> Result<(), sqlx::Error> {
        let first = tokio::select! {
            notice = self.notices.recv() => notice,
            () = tokio::time::sleep_until(self.credential.next_check) => return Ok(()),
        };
        let mut ids = Vec::new();
        self.take(first.map_err(Lost::from), &mut ids);
        while ids.len() < LIVE_BATCH && self.closing.is_none() {
            match self.notices.try_recv() {
                Ok(notice) => self.take(Ok(notice), &mut ids),
                Err(TryRecvError::Empty) => break,
                Err(err) => self.take(Err(Lost::from(err)), &mut ids),
            }
        }
        // After a lag, the table has these too (a notice follows a commit): reading them in the
        // catch-up keeps the order.
        if ids.is_empty() || self.catch_up.is_some() {
            return Ok(());
        }
        let mut conn = self.db.acquire().await?;
        let rows = store::matching(&mut conn, self.organization_id, &self.query, &ids).await?;
        drop(conn);
        self.deliver(rows);
        Ok(())
    }

    /// Where a catch-up after missed notices starts: a little before the newest event sent.
    fn lookback(&self) -> Position {
        Position { at: self.high_water.at - LOOKBACK, id: Uuid::nil() }.max(self.floor)
    }

    /// Waits a moment before the table is read again. Notices that come meanwhile are covered by
    /// that read; only the replica closing (or a credential check falling due) ends the wait.
    async fn wait_for_database(&mut self) {
        let until = Instant::now() + DATABASE_RETRY;
        loop {
            let notice = tokio::select! {
                notice = self.notices.recv() => notice,
                () = tokio::time::sleep_until(until.min(self.credential.next_check)) => return,
            };
            if let Ok(Notice::Closing) | Err(RecvError::Closed) = notice {
                self.closing = Some("the server is restarting; reconnect with Last-Event-ID");
                return;
            }
        }
    }

    fn take(&mut self, notice: Result<Notice, Lost>, ids: &mut Vec<Uuid>) {
        match notice {
            Ok(Notice::Inserted { organization_id, id }) if organization_id == self.organization_id => ids.push(id),
            Ok(Notice::Inserted { .. }) => {}
            Ok(Notice::Resync) | Err(Lost::Lagged) => {
                let from = self.lookback();
                self.catch_up = Some(self.catch_up.map_or(from, |current| current.min(from)));
            }
            Ok(Notice::Closing) | Err(Lost::Closed) => {
                self.closing = Some("the server is restarting; reconnect with Last-Event-ID");
            }
        }
    }

    fn deliver(&mut self, rows: Vec<EventRow>) {
        for row in rows {
            if self.recent.insert(row.id) {
                self.high_water = self.high_water.max(Position { at: row.occurred_at, id: row.id });
                self.pending.push_back(row);
            }
        }
    }
}

/// Why notices were missed.
enum Lost {
    Lagged,
    Closed,
}

impl From<RecvError> for Lost {
    fn from(err: RecvError) -> Self {
        match err {
            RecvError::Lagged(_) => Self::Lagged,
            RecvError::Closed => Self::Closed,
        }
    }
}

impl From<TryRecvError> for Lost {
    fn from(err: TryRecvError) -> Self {
        match err {
            TryRecvError::Closed => Self::Closed,
            TryRecvError::Lagged(_) | TryRecvError::Empty => Self::Lagged,
        }
    }
}

fn to_sse(row: EventRow) -> SseEvent {
    let id = row.id.to_string();
    let event = Event::from(row);
    SseEvent::default()
        .id(id)
        .json_data(&event)
        .unwrap_or_else(|_| SseEvent::default().comment("an event could not be encoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_are_skipped_and_old_ones_forgotten() {
        let mut recent = Recent::default();
        let first = Uuid::now_v7();
        assert!(recent.insert(first));
        assert!(!recent.insert(first));
        for _ in 0..REMEMBERED {
            recent.insert(Uuid::now_v7());
        }
        assert!(recent.insert(first), "the oldest id is forgotten past the bound");
        assert_eq!(recent.set.len(), REMEMBERED);
    }
}

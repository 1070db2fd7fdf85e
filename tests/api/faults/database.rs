//! PostgreSQL restarted under load: requests fail fast with 503 while it is down and succeed
//! again by themselves once it is back; the LISTEN-based paths (job delivery and node calls
//! across replicas, revocations, the live events feed) reconnect and miss nothing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use super::{WITHIN, command, postgres::Cluster, wait_jobs};
use crate::{
    agent::{job_state, online},
    deployments::{agent_at, crosser_deploy, publish_flow, wait_state},
    helpers::*,
    wire::{Wire, create_flow_definition, create_node},
};

/// How long any request may take while the database is down (the pool waits 3 s for a
/// connection, then the request is answered 503).
const FAIL_FAST: Duration = Duration::from_secs(4);
/// How long the database stays down: longer than the old writer kept retrying a node's job
/// update (about ten seconds), so an outcome reported during the outage must survive it.
const OUTAGE: Duration = Duration::from_millis(13_500);

/// One request of the load and how it ended.
#[derive(Debug)]
struct Outcome {
    what: &'static str,
    sent: Instant,
    took: Duration,
    status: Option<StatusCode>,
    body: Value,
}

/// Clients issuing authenticated reads and writes until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start(targets: &[(&TestApp, &Session)]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = targets
            .iter()
            .map(|(app, session)| {
                let (base, token, stop) = (app.base_url.clone(), session.token.clone(), stop.clone());
                tokio::spawn(async move {
                    // Far above FAIL_FAST: a request that hangs shows up as a slow outcome.
                    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
                    let mut outcomes = Vec::new();
                    for i in 0_u64.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let (what, request) = match i % 3 {
                            0 => ("GET /api/users/me", client.get(format!("{base}/api/users/me"))),
                            1 => ("GET /api/edgenodes", client.get(format!("{base}/api/edgenodes"))),
                            _ => (
                                "PATCH /api/users/me",
                                client
                                    .patch(format!("{base}/api/users/me"))
                                    .json(&json!({"name": format!("Load {i}")})),
                            ),
                        };
                        let sent = Instant::now();
                        let (status, body) = match request.bearer_auth(&token).send().await {
                            Ok(response) => {
                                let (status, value) = body(response).await;
                                (Some(status), value)
                            }
                            Err(err) => (None, Value::String(err.to_string())),
                        };
                        outcomes.push(Outcome { what, sent, took: sent.elapsed(), status, body });
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    outcomes
                })
            })
            .collect();
        Self { stop, clients }
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for client in self.clients {
            all.extend(client.await.unwrap());
        }
        all
    }
}

async fn ready(app: &TestApp) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let (status, value) = body(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    (status, value, started.elapsed())
}

#[tokio::test]
async fn postgres_restarted_under_load_answers_503_fast_and_everything_recovers_by_itself() {
    let cluster = Cluster::start().await;
    let app = TestApp::start(test_config(&cluster.url("edgeflow"))).await;
    let replica = app.replica().await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    // A node held by the replica, whose jobs take a while; and a raw node that drops during the
    // outage.
    let node = create_node(&app, &owner, "Line1").await;
    let agent = agent_at(&replica.base_url, &node, false, Duration::from_millis(1500));
    let leaving = create_node(&app, &owner, "Line2").await;
    let (wire, _) = Wire::connect(&app, &leaving).await;
    assert!(eventually(WITHIN, || online(&app, &owner, node.id)).await);
    let (_, deployment) = crosser_deploy(&app, &owner, definition, flows[0], json!([node.id])).await;
    wait_state(&app, &owner, deployment["id"].as_str().unwrap(), "Succeeded").await;

    let load = Load::start(&[(&app, &owner), (&app, &owner), (&replica, &owner), (&replica, &owner)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A job the node is working on when the database goes: it finishes during the outage.
    let in_flight = command(&app, &owner, &node, definition, "stop").await;
    assert!(
        eventually(WITHIN, || async { job_state(&app, &owner, &node, in_flight).await["state"] == "InProgress" }).await
    );

    // A session to sign out once the database is back, and a live events stream open across
    // the outage.
    let signed_in = app.owner().await;
    let mut feed = EventFeed::open(&replica, &owner).await;

    let stopped = Instant::now();
    // Immediate: the way a crash or a killed container goes; the restart then recovers.
    cluster.stop("immediate").await;
    // The raw node leaves while nothing can be recorded.
    drop(wire);
    for (status, value, took) in [ready(&app).await, ready(&replica).await] {
        assert_error(status, &value, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
        assert!(took <= FAIL_FAST, "/readyz took {took:?} while the database was down");
    }
    tokio::time::sleep_until((stopped + OUTAGE).into()).await;
    let restarted = Instant::now();
    cluster.start_again().await;
    let back = eventually(Duration::from_secs(10), || async {
        let mut ok = true;
        for server in [&app, &replica] {
            ok &= server.get("/api/users/me", &owner).send().await.is_ok_and(|r| r.status() == StatusCode::OK);
        }
        ok
    })
    .await;
    let recovered = Instant::now();
    assert!(
        back && recovered - restarted <= Duration::from_secs(5),
        "recovered {:?} after the restart",
        recovered - restarted
    );
    // At once, maybe before the other replica's revocation listener is back: it must catch up.
    let (status, _) = body(app.post("/api/authentication/logout", &signed_in).send().await.unwrap()).await;
    assert!(status.is_success(), "{status}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let outcomes = load.finish().await;

    // Never a 500, never a hang: every answer is a success or a 503 in the error shape.
    for outcome in &outcomes {
        assert!(outcome.took <= FAIL_FAST, "{} took {:?}: {outcome:?}", outcome.what, outcome.took);
        match outcome.status {
            Some(status) if status.is_success() => {}
            Some(status) => assert_error(status, &outcome.body, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            None => panic!("no answer: {outcome:?}"),
        }
    }
    let down = stopped + Duration::from_millis(500);
    let during: Vec<&Outcome> = outcomes.iter().filter(|o| o.sent >= down && o.sent + o.took <= restarted).collect();
    assert!(during.len() >= 4, "too few requests during the outage: {}", during.len());
    assert!(during.iter().all(|o| o.status == Some(StatusCode::SERVICE_UNAVAILABLE)), "{during:?}");
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.sent >= recovered + Duration::from_millis(200)).collect();
    assert!(after.len() >= 4, "too few requests after the recovery: {}", after.len());
    assert!(after.iter().all(|o| o.status.is_some_and(|s| s.is_success())), "{after:?}");
    for server in [&app, &replica] {
        assert_eq!(ready(server).await.0, StatusCode::OK);
    }

    // The outcome the node reported while the database was down is not lost, nor run again.
    wait_jobs(&app, &[in_flight], "Succeeded", WITHIN).await;
    assert_eq!(agent.executions(in_flight), 1);
    // Presence is honest: the agent kept its socket all along (the outage is no reason to drop
    // a node) and reads online; the raw node left during the outage and reads offline.
    assert_eq!(agent.status().connections, 1, "the node was disconnected: {:?}", agent.log_lines(20));
    assert!(online(&app, &owner, node.id).await);
    assert!(
        eventually(WITHIN, || async { !online(&app, &owner, leaving.id).await }).await,
        "a node that left while the database was down still reads online"
    );

    // Job delivery and calls across replicas (the tunnel bus) work again.
    let job = command(&app, &owner, &node, definition, "start").await;
    wait_jobs(&app, &[job], "Succeeded", WITHIN).await;
    assert_eq!(agent.executions(job), 1);
    let (status, health) =
        body(app.get(&format!("/api/edgenodes/{}/health", node.id), &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{health}");

    // The sign-out on one replica is honoured by the other (the revocation listener).
    let refused = eventually(Duration::from_secs(3), || async {
        replica.get("/api/users/me", &signed_in).send().await.is_ok_and(|r| r.status() == StatusCode::UNAUTHORIZED)
    })
    .await;
    assert!(refused, "the other replica still accepts a signed-out session");

    // The events stream opened before the outage carries an event written on the other replica.
    create_node(&app, &owner, "AfterRestart").await;
    feed.wait_for("AfterRestart").await;
    agent.stop().await;
}

/// A live events stream (`GET /api/events/stream`) being read.
struct EventFeed {
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>>>>,
    seen: String,
}

impl EventFeed {
    async fn open(app: &TestApp, session: &Session) -> Self {
        // Its own client: the test client's timeout would cut a long-lived stream.
        let request = reqwest::Client::new().get(app.url("/api/events/stream")).bearer_auth(&session.token);
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = Box::pin(response.bytes_stream());
        stream.next().await.expect("the stream greets").unwrap();
        Self { stream, seen: String::new() }
    }

    /// Reads until `text` has come (5 s at most).
    async fn wait_for(&mut self, text: &str) {
        let came = tokio::time::timeout(Duration::from_secs(5), async {
            while !self.seen.contains(text) {
                match self.stream.next().await {
                    Some(Ok(chunk)) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => return false,
                }
            }
            true
        })
        .await;
        let tail = &self.seen[self.seen.len().saturating_sub(1500)..];
        assert_eq!(came, Ok(true), "{text} never came; the stream ended with: {tail}");
    }
}

/// Ends every LISTEN connection of the test database (the replicas' listeners), as a network
/// blip or a database restart would; the pools' connections stay.
async fn end_listeners(app: &TestApp) {
    let (server, database) = app.database_url.rsplit_once('/').unwrap();
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN %'",
    )
    .bind(database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    // Per replica: the tunnel bus, revocations and the events feed.
    assert!(ended.len() >= 6 && ended.iter().all(|e| *e), "{ended:?}");
}

/// What happens while the replicas' listeners are away (they come back after a second) is not
/// missed: a sign-out, a shadow change, a job, a canceled job, a rotated key and a deleted node,
/// all made on one replica for nodes held by the other, and the events feed.
#[tokio::test]
async fn listeners_that_lose_their_connection_catch_up_on_what_they_missed() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    let owner = app.owner().await;
    let (definition, _) = publish_flow(&app, &owner, "Temperature", 1).await;
    let node = create_node(&app, &owner, "Line1").await;
    let agent = agent_at(&replica.base_url, &node, false, Duration::from_millis(20));
    let rotated = create_node(&app, &owner, "Line2").await;
    let deleted = create_node(&app, &owner, "Line3").await;
    let (mut rotated_wire, _) = Wire::connect(&replica, &rotated).await;
    let (mut deleted_wire, _) = Wire::connect(&replica, &deleted).await;
    // A node that holds a job it has not started, which is then canceled.
    let holder = create_node(&app, &owner, "Line4").await;
    let (mut holder_wire, _) = Wire::connect(&replica, &holder).await;
    let held = command(&app, &owner, &holder, definition, "start").await;
    assert_eq!(holder_wire.recv_type("job").await["id"], held.to_string());
    assert!(eventually(WITHIN, || online(&app, &owner, node.id)).await);
    let signed_in = app.owner().await;
    let mut feed = EventFeed::open(&replica, &owner).await;

    end_listeners(&app).await;
    let (status, _) = body(app.post("/api/authentication/logout", &signed_in).send().await.unwrap()).await;
    assert!(status.is_success(), "{status}");
    let shadow = format!("/api/edgenodes/{}/shadow", node.id);
    let (status, _) = body(app.patch(&shadow, &owner).json(&json!({"mode": "eco"})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let job = command(&app, &owner, &node, definition, "start").await;
    let rotate = app.post(&format!("/api/edgenodes/{}/accesskey", rotated.id), &owner).send().await.unwrap();
    assert_eq!(rotate.status(), StatusCode::OK);
    let delete = app.delete(&format!("/api/edgenodes/{}", deleted.id), &owner).send().await.unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    let cancel = app.delete(&format!("/api/edgenodes/{}/jobs/{held}", holder.id), &owner).send().await.unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);

    let refused = eventually(Duration::from_secs(5), || async {
        replica.get("/api/users/me", &signed_in).send().await.is_ok_and(|r| r.status() == StatusCode::UNAUTHORIZED)
    })
    .await;
    assert!(refused, "the other replica still accepts a signed-out session");
    // Nothing is deployed, so the node fails the job; what counts is that it got it.
    assert!(eventually(WITHIN, || async { agent.executions(job) == 1 }).await, "the job never reached the node");
    let reported = eventually(Duration::from_secs(5), || async {
        let (_, shadow) = body(app.get(&shadow, &owner).send().await.unwrap()).await;
        shadow["reported"] == json!({"mode": "eco"}) && shadow["delta"] == json!({})
    })
    .await;
    assert!(
        reported,
        "the node never got the desired shadow: {}",
        body(app.get(&shadow, &owner).send().await.unwrap()).await.1
    );
    assert_eq!(rotated_wire.closed_with().await, Some(4002), "the socket of a rotated key stays open");
    assert_eq!(deleted_wire.closed_with().await, Some(4001), "the socket of a deleted node stays open");
    assert_eq!(holder_wire.recv_type("jobCanceled").await["jobId"], held.to_string(), "the node was never told");
    feed.wait_for("node.delete").await;
    agent.stop().await;
}

/// A node that comes back while the database cannot hand it its unfinished jobs gets them as
/// soon as it can, not only at its next reconnect.
#[tokio::test]
async fn a_failed_resume_is_retried_until_the_node_has_its_jobs() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let definition = create_flow_definition(&app, &owner, "Temperature").await;
    let node = create_node(&app, &owner, "Line1").await;
    let (mut wire, _) = Wire::connect(&app, &node).await;
    let sent = command(&app, &owner, &node, definition, "start").await;
    assert_eq!(wire.recv_type("job").await["id"], sent.to_string());
    drop(wire);

    // The jobs table is out of reach when the node reconnects, so resuming it fails.
    let mut db = app.db().await;
    sqlx::query("ALTER TABLE node_jobs RENAME TO node_jobs_away").execute(&mut db).await.unwrap();
    let (mut wire, _) = Wire::connect(&app, &node).await;
    assert!(wire.recv_within(Duration::from_millis(1500)).await.is_none_or(|m| m["type"] != "job"));
    sqlx::query("ALTER TABLE node_jobs_away RENAME TO node_jobs").execute(&mut db).await.unwrap();
    assert_eq!(wire.recv_type("job").await["id"], sent.to_string(), "the unfinished job was not sent again");
}

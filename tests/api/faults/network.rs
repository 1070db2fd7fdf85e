//! A node's network cut like a pulled cable (nothing passes, no socket is closed, no close frame):
//! the node reads offline within the threshold, and the jobs made meanwhile reach it, once each,
//! when the network is back.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{WITHIN, command, job_states, proxy::Proxy, wait_jobs};
use crate::{
    agent::online,
    deployments::{agent_at, crosser_deploy, publish_flow, wait_state},
    helpers::*,
    wire::{create_node, disconnect_reasons},
};

#[tokio::test]
async fn a_node_whose_network_is_cut_reads_offline_in_time_and_gets_its_jobs_once_when_it_is_back() {
    let app = TestApp::spawn_with(|config| config.deployment_tick_millis = 100).await;
    let owner = app.owner().await;
    let (definition, flows) = publish_flow(&app, &owner, "Temperature", 1).await;
    let node = create_node(&app, &owner, "Line1").await;
    let cable = Proxy::start(vec![app.server.as_ref().unwrap().addr]).await;
    let agent = agent_at(&cable.url(), &node, false, Duration::from_millis(20));
    assert!(eventually(WITHIN, || online(&app, &owner, node.id)).await);
    let (_, deployment) = crosser_deploy(&app, &owner, definition, flows[0], json!([node.id])).await;
    wait_state(&app, &owner, deployment["id"].as_str().unwrap(), "Succeeded").await;

    cable.cut();
    let cut = Instant::now();
    // The server still holds the socket: this job is sent into the void.
    let lost_in_transit = command(&app, &owner, &node, definition, "stop").await;
    assert!(eventually(Duration::from_secs(8), || async { !online(&app, &owner, node.id).await }).await);
    let took = cut.elapsed();
    // Offline after 3 s without a word, noticed at the next heartbeat (1 s), plus slack.
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_secs(5),
        "offline {took:?} after the cut (threshold 3 s)"
    );
    // Made while the node reads offline: it waits for the node.
    let queued = command(&app, &owner, &node, definition, "start").await;
    assert_eq!(job_states(&app, &[lost_in_transit, queued]).await, ["Sent", "Queued"]);

    cable.restore();
    wait_jobs(&app, &[lost_in_transit, queued], "Succeeded", WITHIN).await;
    assert_eq!((agent.executions(lost_in_transit), agent.executions(queued)), (1, 1));
    assert!(online(&app, &owner, node.id).await);
    assert_eq!(agent.status().connections, 2, "the agent noticed the silence and reconnected once");
    let reasons = disconnect_reasons(&app, node.id).await;
    assert!(reasons.iter().any(|r| r.contains("no heartbeat")), "{reasons:?}");
    agent.stop().await;
}

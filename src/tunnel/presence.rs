//! Who is online. A node is online while the replica holding its socket is alive: each replica
//! keeps a row in `replicas` with `alive_until` pushed forward by its heartbeat, and claims its
//! nodes by `edge_nodes.replica_id`. A socket that dies silently is closed by its session after two
//! missed heartbeats; a replica that dies stops renewing `alive_until`, and its nodes read as
//! offline once it passes, with no one having to clean up first.

/// SQL: whether the node aliased `n` is online. A fixed fragment for queries of `edge_nodes n`.
pub const ONLINE_SQL: &str = "(n.replica_id IS NOT NULL AND EXISTS (SELECT 1 FROM replicas r \
     WHERE r.id = n.replica_id AND r.alive_until > now()))";

/// SQL: the node's unfinished jobs (queued, sent or in progress).
pub const PENDING_JOBS_SQL: &str = "(SELECT count(*) FROM node_jobs j \
     WHERE j.node_id = n.id AND j.state IN ('Queued', 'Sent', 'InProgress'))";

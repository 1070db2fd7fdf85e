//! Jobs: the durable, per-node, ordered queue of commands (deploy, start, stop, remove) delivered
//! through the tunnel at least once, until the node reports a final state.

pub mod model;
pub mod routes;
pub mod store;

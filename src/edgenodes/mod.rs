//! Edge nodes: registration, listing with live status, keys; jobs, remote calls and the shadow
//! reach them through the tunnel.

pub mod model;
pub mod routes;
pub mod store;

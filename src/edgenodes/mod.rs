//! Edge nodes: registration, listing with live status, keys; remote calls and the shadow go
//! through the tunnel (jobs live in `crate::jobs`).

pub mod model;
pub mod remote;
pub mod routes;
pub mod shadow;
pub mod store;

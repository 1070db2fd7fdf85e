//! The tunnel hub: edge nodes keep a WebSocket open to a replica; jobs, shadow changes and
//! synchronous calls reach them through it, from any replica.

pub mod bus;
pub mod hub;
pub mod presence;
pub mod protocol;
pub mod routes;
pub mod session;
pub mod writer;

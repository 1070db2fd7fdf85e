//! API keys: `X-API-Key: edgeflow_...`, bound to one organization with a role no higher than
//! their creator's; shown once, stored as a SHA-256 hash, listed by prefix, revocable, optionally
//! expiring.

pub mod model;
pub mod routes;
pub mod store;

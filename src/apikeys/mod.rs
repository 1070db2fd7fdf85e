//! API keys: `X-API-Key: edgeflow_...`, bound to one organization with a role.

pub mod routes;
pub mod store;

//! Organizations, their members and identity providers.

pub mod routes;
pub mod store;

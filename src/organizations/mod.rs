//! Organizations, their members and identity providers.

pub mod model;
pub mod routes;
pub mod store;
pub mod usage;

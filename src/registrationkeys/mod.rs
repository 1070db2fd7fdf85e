//! Registration keys: let many edge nodes enrol themselves (`POST /api/edgenodes/register`).
//! Reusable, optionally expiring and use-limited; the nodes they create get the key's
//! organization, type and labels. Shown once, stored as a SHA-256 hash, revocable.

pub mod model;
pub mod routes;
pub mod store;

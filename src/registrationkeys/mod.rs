//! Registration keys: let many edge nodes enrol themselves.

pub mod routes;

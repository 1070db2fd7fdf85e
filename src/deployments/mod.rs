//! Deployments: a flow version (or, for DevAndTest nodes, a draft) rolled out to edge nodes as
//! jobs, all at once or in batches, with a failure threshold, pause/resume, stop/start, cancel and
//! rollback. The driver advances them in the background; one replica at a time acts on each.

pub mod driver;
pub mod model;
pub mod routes;
pub mod store;

//! EdgeFlow Control Center: the control plane for fleets of edge nodes running data flows.

pub mod agent;
pub mod apikeys;
pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod deployments;
pub mod edgenodes;
pub mod error;
pub mod events;
pub mod flows;
pub mod health;
pub mod housekeeping;
pub mod http;
pub mod jobs;
pub mod openapi;
pub mod organizations;
pub mod registrationkeys;
pub mod resources;
pub mod state;
pub mod tunnel;
pub mod users;

//! Integration tests: one binary (one link), a module per domain. Each test starts a real server
//! on 127.0.0.1:0 against its own fresh database and talks to it over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod agent;
mod apikeys;
mod auth;
mod deployments;
mod edgenodes;
mod events;
mod faults;
mod flows;
mod http_layer;
mod matrix;
mod organizations;
mod registrationkeys;
mod resources;
mod tunnel;
mod users;
mod wire;

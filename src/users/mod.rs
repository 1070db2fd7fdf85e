//! The signed-in user: profile, password, organization switch; and the first Owner at start-up.

pub mod bootstrap;
pub mod model;
pub mod routes;
pub mod store;

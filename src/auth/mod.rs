//! Authentication and authorization: passwords, tokens, sessions, API keys' resolution, the
//! `AuthContext` extractor and role guards.

pub mod context;
pub mod model;
pub mod node;
pub mod password;
pub mod revocation;
pub mod roles;
pub mod routes;
pub mod secret_box;
pub mod session;
pub mod store;
pub mod tokens;

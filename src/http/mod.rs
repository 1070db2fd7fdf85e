//! Shared HTTP pieces: extractors, middleware, list queries, merge-patch.

pub mod client_ip;
pub mod etag;
pub mod extract;
pub mod idempotency;
pub mod list;
pub mod merge_patch;
pub mod metrics;
pub mod pretty;
pub mod rate_limit;
pub mod request_id;
pub mod schema;
pub mod time;
pub mod validate;

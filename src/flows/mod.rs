//! Flow definitions, their editable drafts and immutable versions (Crosser: "flows"); content
//! validation; and the payload a node receives for a version or draft (for deployments).

pub mod content;
pub mod definitions;
pub mod drafts;
pub mod model;
pub mod payload;
pub mod resource_refs;
pub mod store;
pub mod versions;

pub use payload::{deploy_payload, draft_payload};
pub use resource_refs::{Readiness, require_ready};

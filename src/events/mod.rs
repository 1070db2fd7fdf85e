//! Events: the audit and operations log (DESIGN.md section 9). This issue writes them; the list,
//! export and stream endpoints come with the events issue.

pub mod model;
pub mod store;

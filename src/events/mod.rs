//! Events: the audit and operations log (DESIGN.md section 9). Every capability writes them with
//! `store::NewEvent`, in its own transaction; this module also serves them: the list with the
//! shared filters, keyset paging and exports (`routes`, `query`, `export`), the live stream
//! (`stream`, fed by one listener per replica in `feed`) and retention (`retention`).

pub mod export;
pub mod feed;
pub mod model;
pub mod query;
pub mod retention;
pub mod routes;
pub mod store;
pub mod stream;

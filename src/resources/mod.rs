//! Resources: versioned files and connection settings used by flows (DESIGN.md section 8).
//!
//! - `routes`: `/api/resources` (create, list, show, merge-patch, delete);
//! - `versions`: drafts and Completed versions (`PUT` with `"state": "Completed"` freezes one);
//! - `content`: streaming multipart uploads, and downloads (ETag, Range, If-None-Match) for users
//!   and for edge nodes with their own credentials (HTTP Basic), on the same path;
//! - `uploads`: resumable uploads in numbered parts for big files;
//! - `references`: the one place that knows which flow versions use a resource (version);
//! - `blobs`: the object store; `cleanup`: orphaned and released blobs, expired sessions.

pub mod blobs;
pub mod cleanup;
pub mod content;
mod download;
pub mod model;
pub mod references;
pub mod routes;
pub mod store;
pub mod upload_store;
pub mod uploads;
pub mod versions;

use axum::http::Method;
use uuid::Uuid;

/// The path at which a resource version's content is downloaded: by users, and by edge nodes
/// with their own credentials (HTTP Basic `nodeId:accessKey`) when a deploy job of theirs names
/// the version.
pub fn download_path(resource_id: Uuid, version_id: Uuid) -> String {
    format!("/api/resources/{resource_id}/versions/{version_id}/content")
}

/// The `downloadUrl` of a resource in a deploy job: the server's public URL (see
/// `Config::public_base_url`) and `download_path`.
pub fn download_url(public_url: &str, resource_id: Uuid, version_id: Uuid) -> String {
    format!("{}{}", public_url.trim_end_matches('/'), download_path(resource_id, version_id))
}

/// Whether the request streams a file in (a content upload, an upload part, or the joining of
/// parts): these may run far longer than the API's request timeout, so the timeout layer
/// (app.rs) leaves them alone; they stop on their own idle timeout instead.
pub fn is_long_transfer(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(
        (method, segments.as_slice()),
        (&Method::POST, ["", "api", "resources", _, "versions", _, "content"])
            | (&Method::PUT, ["", "api", "resources", _, "versions", _, "uploads", _, "parts", _])
            | (&Method::POST, ["", "api", "resources", _, "versions", _, "uploads", _, "complete"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_urls_join_the_public_url() {
        let (r, v) = (Uuid::nil(), Uuid::max());
        assert_eq!(
            download_url("https://cc.example.com/", r, v),
            format!("https://cc.example.com/api/resources/{r}/versions/{v}/content")
        );
    }

    #[test]
    fn long_transfers_are_the_uploads() {
        let base = "/api/resources/1/versions/2";
        assert!(is_long_transfer(&Method::POST, &format!("{base}/content")));
        assert!(is_long_transfer(&Method::PUT, &format!("{base}/uploads/3/parts/4")));
        assert!(is_long_transfer(&Method::POST, &format!("{base}/uploads/3/complete")));
        assert!(!is_long_transfer(&Method::GET, &format!("{base}/content")));
        assert!(!is_long_transfer(&Method::POST, &format!("{base}/uploads")));
        assert!(!is_long_transfer(&Method::POST, "/api/resources"));
    }
}

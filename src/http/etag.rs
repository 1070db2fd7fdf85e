//! ETags and `If-Match`: optimistic concurrency for objects two editors can change at once
//! (drafts, resource versions, shadows). A stale `If-Match` is a 412; no `If-Match` means the
//! last write wins.

use axum::http::{HeaderMap, HeaderValue, header};

use crate::error::{ApiError, ApiResult};

/// A strong ETag for a revision number: `"<n>"`.
pub fn revision(n: i64) -> String {
    format!("\"{n}\"")
}

/// The header value of an ETag (ours are always valid header text).
pub fn header_value(etag: &str) -> HeaderValue {
    HeaderValue::from_str(etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Passes when no `If-Match` was sent, or one of its tags (weak or strong) is `current` or `*`.
pub fn check_if_match(headers: &HeaderMap, current: &str) -> ApiResult<()> {
    let mut sent = headers.get_all(header::IF_MATCH).iter().peekable();
    if sent.peek().is_none() {
        return Ok(());
    }
    let matches = sent.any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == current)
        })
    });
    if matches { Ok(()) } else { Err(ApiError::PreconditionFailed) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn if_match_compares_etags() {
        let current = revision(3);
        assert!(check_if_match(&headers(&[]), &current).is_ok());
        assert!(check_if_match(&headers(&["\"3\""]), &current).is_ok());
        assert!(check_if_match(&headers(&["W/\"3\""]), &current).is_ok());
        assert!(check_if_match(&headers(&["\"1\", \"3\""]), &current).is_ok());
        assert!(check_if_match(&headers(&["\"1\"", "\"3\""]), &current).is_ok());
        assert!(check_if_match(&headers(&["*"]), &current).is_ok());
        assert!(matches!(check_if_match(&headers(&["\"2\""]), &current), Err(ApiError::PreconditionFailed)));
        assert!(matches!(check_if_match(&headers(&["3"]), &current), Err(ApiError::PreconditionFailed)));
    }
}

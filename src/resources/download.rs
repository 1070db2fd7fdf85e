//! Serving a version's content: streamed from the object store, with `ETag` (the quoted sha256),
//! `If-None-Match` (304), single `Range`s (206, 416 when unsatisfiable), `If-Range`, and a
//! `Content-Disposition` naming the file after the resource's path.

use std::ops::Range;

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};

use super::{blobs::Blobs, model::VersionState, model::download_file_name, store::ContentRow};
use crate::error::{ApiError, ApiResult, error_response};

/// What a `Range` header asks of a representation of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range (none, malformed, several, or not in bytes): the whole content.
    Full,
    Partial(Range<u64>),
    Unsatisfiable,
}

/// Parses a single byte range: `bytes=a-b`, `bytes=a-` or `bytes=-n`. Anything this server does
/// not serve as a range (several ranges, other units, bad syntax) is answered in full, as
/// RFC 9110 allows.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = value.map(str::trim).and_then(|v| v.strip_prefix("bytes=")) else { return RangeRequest::Full };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else { return RangeRequest::Full };
    let (start, end) = (start.trim(), end.trim());
    let parse = |text: &str| text.parse::<u64>().ok();
    match (start.is_empty(), end.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match parse(end) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(size.saturating_sub(n)..size),
            None => RangeRequest::Full,
        },
        // bytes=a-: from a to the end.
        (false, true) => match parse(start) {
            Some(a) if a < size => RangeRequest::Partial(a..size),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (false, false) => match (parse(start), parse(end)) {
            (Some(a), Some(b)) if a > b => RangeRequest::Full,
            (Some(a), Some(_)) if a >= size => RangeRequest::Unsatisfiable,
            (Some(a), Some(b)) => RangeRequest::Partial(a..b.min(size - 1) + 1),
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// Whether an `If-None-Match` list matches the entity tag (weak comparison).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|list| list.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag))
}

/// Whether a `Range` may be honoured: no `If-Range`, or one naming this exact entity tag (a date
/// never matches: there is no Last-Modified).
fn if_range_holds(headers: &HeaderMap, etag: &str) -> bool {
    match headers.get(header::IF_RANGE) {
        None => true,
        Some(value) => value.to_str().is_ok_and(|v| v.trim() == etag),
    }
}

/// `attachment; filename="..."; filename*=UTF-8''...`: an ASCII fallback and the exact name.
fn content_disposition(name: &str) -> HeaderValue {
    let fallback: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' { c } else { '_' })
        .collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The response to a download of `row`'s content.
pub async fn serve(blobs: &Blobs, row: &ContentRow, headers: &HeaderMap) -> ApiResult<Response> {
    let (Some(key), Some(sha256)) = (&row.blob_key, &row.sha256) else {
        return Err(ApiError::NotFound("resource version content"));
    };
    let size = u64::try_from(row.uploaded_bytes).unwrap_or_default();
    let etag = format!("\"{sha256}\"");
    // Completed content never changes; a draft's may, so it is revalidated every time.
    let cache =
        if row.state == VersionState::Completed { "private, max-age=31536000, immutable" } else { "private, no-cache" };
    let content_type = row
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));

    let mut response = if none_match(headers, &etag) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let requested = if if_range_holds(headers, &etag) {
            parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), size)
        } else {
            RangeRequest::Full
        };
        let (status, range) = match requested {
            RangeRequest::Full => (StatusCode::OK, 0..size),
            RangeRequest::Partial(range) => (StatusCode::PARTIAL_CONTENT, range),
            RangeRequest::Unsatisfiable => {
                let mut response = error_response(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "RANGE_NOT_SATISFIABLE",
                    format!("the requested range is outside the content's {size} bytes"),
                    Vec::new(),
                );
                response.headers_mut().insert(header::CONTENT_RANGE, header_text(format!("bytes */{size}")));
                return Ok(response);
            }
        };
        let stream = blobs.read(key, range.clone()).await.map_err(|err| match err {
            // A draft's content was replaced (and the old blob deleted) since its row was read.
            object_store::Error::NotFound { .. } => {
                ApiError::conflict("CONTENT_CHANGED", "the content was replaced while it was being fetched; retry")
            }
            err => ApiError::Internal(anyhow::Error::new(err).context(format!("reading blob {key}"))),
        })?;
        let mut response = Response::new(Body::from_stream(stream));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(range.end - range.start));
        if status == StatusCode::PARTIAL_CONTENT {
            headers
                .insert(header::CONTENT_RANGE, header_text(format!("bytes {}-{}/{size}", range.start, range.end - 1)));
        }
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(
            header::CONTENT_DISPOSITION,
            content_disposition(&download_file_name(row.path.as_deref(), &row.name)),
        );
        // Uploaded content is served as data, never run as a page of this origin.
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}

/// A header value from text this module builds (visible ASCII).
fn header_text(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        use RangeRequest::*;
        let r = |v: &str| parse_range(Some(v), 100);
        assert_eq!(r("bytes=0-9"), Partial(0..10));
        assert_eq!(r("bytes=90-"), Partial(90..100));
        assert_eq!(r("bytes=-10"), Partial(90..100));
        assert_eq!(r("bytes=-1000"), Partial(0..100));
        assert_eq!(r("bytes=95-200"), Partial(95..100));
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=100-200"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(r("bytes=5-1"), Full);
        assert_eq!(r("bytes=0-1,5-6"), Full);
        assert_eq!(r("items=0-1"), Full);
        assert_eq!(r("bytes=x-1"), Full);
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Unsatisfiable);
    }

    #[test]
    fn conditional_headers() {
        let etag = "\"abc\"";
        let mut headers = HeaderMap::new();
        assert!(!none_match(&headers, etag));
        assert!(if_range_holds(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"abc\""));
        assert!(none_match(&headers, etag));
        headers.insert(header::IF_RANGE, HeaderValue::from_static("\"old\""));
        assert!(!if_range_holds(&headers, etag));
    }

    #[test]
    fn dispositions_keep_names_safe() {
        assert_eq!(content_disposition("a.csv"), "attachment; filename=\"a.csv\"; filename*=UTF-8''a.csv");
        assert_eq!(
            content_disposition("r\u{e9}sum\u{e9} \"x\".txt"),
            "attachment; filename=\"r_sum_ _x_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.txt"
        );
    }
}

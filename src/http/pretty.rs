//! `?pretty=true`: JSON answers indented for people reading them in a terminal.

use axum::{
    body::{Body, to_bytes},
    extract::Request,
    http::header,
    middleware::Next,
    response::Response,
};

/// Larger bodies are streamed as they are; nobody reads megabytes of JSON by eye.
const MAX_PRETTY_BYTES: usize = 8 * 1024 * 1024;

pub async fn pretty_json(request: Request, next: Next) -> Response {
    let wanted =
        request.uri().query().is_some_and(|q| q.split('&').any(|pair| pair.eq_ignore_ascii_case("pretty=true")));
    let response = next.run(request).await;
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !wanted || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_PRETTY_BYTES).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let pretty =
        serde_json::from_slice::<serde_json::Value>(&bytes).and_then(|value| serde_json::to_vec_pretty(&value));
    parts.headers.remove(header::CONTENT_LENGTH);
    match pretty {
        Ok(text) => Response::from_parts(parts, Body::from(text)),
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

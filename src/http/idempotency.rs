//! `Idempotency-Key` on POST: the first answer to a (caller, key) pair is stored for 24 hours and
//! given again to a retry with the same body; the same key with another body is a 422. A request
//! still running under the key answers 409, so a client retrying a deploy never deploys twice.
//!
//! One layer for every create call. It applies to authenticated JSON (or empty-bodied) POSTs;
//! uploads are not replayed (re-uploading a draft's content replaces it anyway). Stored answers
//! are encrypted: some carry secrets shown once (API keys, node access keys).

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use crate::{auth::context::authenticate, error::ApiError, state::AppState};

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a record answers retries.
const KEEP_HOURS: i64 = 24;
/// A claim older than this with no answer belongs to a crashed request; a retry may take it over.
const STALE_CLAIM_SECONDS: i64 = 300;
/// Largest answer stored for replay.
const MAX_STORED_RESPONSE: usize = 4 * 1024 * 1024;
const REPLAYED_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

#[derive(sqlx::FromRow)]
struct Record {
    request_hash: Vec<u8>,
    status: Option<i16>,
    response_headers: Option<serde_json::Value>,
    response_body: Option<Vec<u8>>,
    fresh: bool,
    stale_claim: bool,
}

pub async fn replay_or_record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !request.headers().contains_key(&IDEMPOTENCY_KEY) {
        return next.run(request).await;
    }
    let is_json_or_empty =
        request.headers().get(header::CONTENT_TYPE).is_none_or(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json_or_empty {
        return next.run(request).await;
    }
    match handle(state, request, next).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn handle(state: AppState, request: Request, next: Next) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let key = parts
        .headers
        .get(&IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible characters".into()))?
        .to_owned();
    // Unauthenticated calls pass straight through: the handler answers them 401.
    let Ok(auth) = authenticate(&mut parts, &state).await else {
        return Ok(next.run(Request::from_parts(parts, body)).await);
    };
    let bytes = to_bytes(body, state.config.body_limit_bytes).await.map_err(|_| ApiError::PayloadTooLarge {
        code: "PAYLOAD_TOO_LARGE",
        message: "the request body is too large".into(),
    })?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b" ");
    hasher.update(parts.uri.path_and_query().map_or("", |p| p.as_str()));
    hasher.update(b"\n");
    hasher.update(&bytes);
    let request_hash = hasher.finalize().to_vec();
    let principal = auth.principal_key();

    loop {
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (principal, key, request_hash) VALUES ($1, $2, $3) \
             ON CONFLICT (principal, key) DO NOTHING",
        )
        .bind(&principal)
        .bind(&key)
        .bind(&request_hash)
        .execute(&state.db)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            return store_answer(&state, &principal, &key, response).await;
        }
        let record: Option<Record> = sqlx::query_as(
            "SELECT request_hash, status, response_headers, response_body, \
                    created_at > now() - make_interval(hours => $3) AS fresh, \
                    status IS NULL AND created_at < now() - make_interval(secs => $4) AS stale_claim \
             FROM idempotency_keys WHERE principal = $1 AND key = $2",
        )
        .bind(&principal)
        .bind(&key)
        .bind(KEEP_HOURS as i32)
        .bind(STALE_CLAIM_SECONDS as f64)
        .fetch_optional(&state.db)
        .await?;
        let Some(record) = record else { continue };
        if !record.fresh || record.stale_claim {
            sqlx::query("DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2")
                .bind(&principal)
                .bind(&key)
                .execute(&state.db)
                .await?;
            continue;
        }
        if record.request_hash != request_hash {
            return Err(ApiError::Unprocessable {
                code: "IDEMPOTENCY_KEY_REUSED",
                message: "this Idempotency-Key was used for a different request; use a new key".into(),
            });
        }
        let Some(status) = record.status else {
            return Err(ApiError::conflict(
                "IDEMPOTENCY_IN_PROGRESS",
                "a request with this Idempotency-Key is still being processed; retry shortly",
            ));
        };
        let body = match record.response_body {
            Some(sealed) => Some(state.secrets.open(&sealed)?),
            None => None,
        };
        return Ok(replay(status, record.response_headers, body));
    }
}

async fn store_answer(state: &AppState, principal: &str, key: &str, response: Response) -> Result<Response, ApiError> {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = match to_bytes(body, MAX_STORED_RESPONSE).await {
        Ok(bytes) if !status.is_server_error() => bytes,
        // A failure the client should be free to retry, or an answer too large to keep:
        // forget the key.
        other => {
            sqlx::query("DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2")
                .bind(principal)
                .bind(key)
                .execute(&state.db)
                .await?;
            let body = other.map(Body::from).unwrap_or_else(|_| Body::empty());
            return Ok(Response::from_parts(parts, body));
        }
    };
    let headers: serde_json::Map<String, serde_json::Value> = REPLAYED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), value.into()))
        })
        .collect();
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, response_headers = $4, response_body = $5 \
         WHERE principal = $1 AND key = $2",
    )
    .bind(principal)
    .bind(key)
    .bind(status.as_u16() as i16)
    .bind(serde_json::Value::Object(headers))
    .bind(state.secrets.seal(&bytes)?)
    .execute(&state.db)
    .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

fn replay(status: i16, headers: Option<serde_json::Value>, body: Option<Vec<u8>>) -> Response {
    let mut response = Response::new(Body::from(body.unwrap_or_default()));
    *response.status_mut() = u16::try_from(status)
        .ok()
        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
        .unwrap_or(axum::http::StatusCode::OK);
    let mut map = HeaderMap::new();
    if let Some(serde_json::Value::Object(stored)) = headers {
        for (name, value) in stored {
            if let (Ok(name), Some(Ok(value))) = (HeaderName::try_from(name), value.as_str().map(HeaderValue::from_str))
            {
                map.insert(name, value);
            }
        }
    }
    map.insert(REPLAYED.clone(), HeaderValue::from_static("true"));
    response.headers_mut().extend(map);
    response
}

/// Deletes records past their 24 hours, in small batches (run periodically).
pub async fn prune(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys \
         WHERE created_at < now() - make_interval(hours => $1) LIMIT 1000)",
    )
    .bind(KEEP_HOURS as i32)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

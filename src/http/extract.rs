//! Our own `Json`, `Path` and `Query` extractors: axum's, with every rejection answered in the one
//! error body (400 for bad input, 413 for a body over the limit, 415 for a wrong Content-Type).

use axum::{
    extract::{
        FromRequest, FromRequestParts, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::error::{ApiError, error_response};

/// A JSON body. Types deserialized with it deny unknown fields, so a misspelt or extra property
/// is a 400 naming it rather than silently ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(json_rejection(JsonRejection::MissingJsonContentType(Default::default())));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| json_rejection(JsonRejection::BytesRejection(rejection)))?;
        from_json_bytes(&bytes).map(Self).map_err(IntoResponse::into_response)
    }
}

/// A JSON request body, as every endpoint reads one: an object (serde would also take an array
/// for a struct, field by field), with numbers such as `15.0` taken as the integers they are.
pub fn from_json_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::BadRequest("invalid request body: expected a JSON object".into()));
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(JsonRejection::JsonDataError(err)) => with_whole_numbers(bytes).ok_or_else(|| {
            // serde's message names the field and the problem ("unknown field `x`, expected ...").
            ApiError::BadRequest(format!("invalid request body: {}", err.body_text_detail()))
        }),
        Err(JsonRejection::JsonSyntaxError(err)) => {
            Err(ApiError::BadRequest(format!("malformed JSON: {}", err.body_text_detail())))
        }
        Err(other) => Err(ApiError::BadRequest(other.body_text())),
    }
}

/// `Content-Type: application/json`, or any `application/...+json` (such as merge-patch).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(media_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = media_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.strip_prefix("application/").is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
}

/// The body again, with numbers such as `15.0` read as the integers they are (JSON Schema counts
/// them as integers; serde does not). Only tried when the body did not fit the type, so a body
/// that fits costs nothing more.
fn with_whole_numbers<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    if !whole_numbers_as_integers(&mut value) {
        return None;
    }
    let rewritten = serde_json::to_vec(&value).ok()?;
    axum::Json::<T>::from_bytes(&rewritten).ok().map(|axum::Json(value)| value)
}

/// Rewrites every float with no fraction (within the integers' range) as an integer; answers
/// whether there was any.
fn whole_numbers_as_integers(value: &mut Value) -> bool {
    match value {
        Value::Number(number) => {
            let Some(float) = number.as_f64().filter(|_| number.is_f64()) else { return false };
            // 2^63 and 2^64: the ranges of i64 and u64; a float below them converts exactly.
            let whole = if float.fract() != 0.0 {
                None
            } else if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&float) {
                Some(serde_json::Number::from(float as i64))
            } else if (0.0..18_446_744_073_709_551_616.0).contains(&float) {
                Some(serde_json::Number::from(float as u64))
            } else {
                None
            };
            whole.map(|whole| *number = whole).is_some()
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, item| whole_numbers_as_integers(item) | any),
        Value::Object(fields) => fields.values_mut().fold(false, |any, item| whole_numbers_as_integers(item) | any),
        _ => false,
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> Response {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "expected a JSON body with Content-Type: application/json".into(),
            Vec::new(),
        ),
        JsonRejection::BytesRejection(bytes) if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "the request body is too large".into(),
            Vec::new(),
        ),
        other => ApiError::BadRequest(other.body_text()).into_response(),
    }
}

trait DetailText {
    fn body_text_detail(&self) -> String;
}

impl<E: std::error::Error> DetailText for E {
    fn body_text_detail(&self) -> String {
        // The innermost source is serde's own message; the outer layers only repeat "failed to
        // deserialize".
        let mut current: &dyn std::error::Error = self;
        while let Some(next) = current.source() {
            current = next;
        }
        current.to_string()
    }
}

/// Path parameters; a malformed id is a 400 saying which.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(err)) => {
                Err(ApiError::BadRequest(format!("invalid path parameter: {}", err.body_text())))
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// Query parameters; a bad one is a 400 naming it.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => {
                Err(ApiError::BadRequest(format!("invalid query string: {}", err.body_text_detail())))
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        count: i32,
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn whole_floats_are_integers_and_arrays_are_not_objects() {
        assert_eq!(from_json_bytes::<Body>(br#"{"count": 15.0}"#).ok(), Some(Body { count: 15, name: None }));
        assert!(from_json_bytes::<Body>(br#"{"count": 1.5}"#).is_err());
        assert!(from_json_bytes::<Body>(br#"{"count": 1e300}"#).is_err());
        // serde would read this as the fields in order.
        assert!(from_json_bytes::<Body>(br#" [1, "x"]"#).is_err());
        let mut nested = serde_json::json!({"a": [2.0, {"b": -3.0, "c": 0.5}], "d": "4.0"});
        assert!(whole_numbers_as_integers(&mut nested));
        assert_eq!(nested, serde_json::json!({"a": [2, {"b": -3, "c": 0.5}], "d": "4.0"}));
    }
}

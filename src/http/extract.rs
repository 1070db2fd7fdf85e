//! Our own `Json`, `Path` and `Query` extractors: axum's, with every rejection answered in the one
//! error body (400 for bad input, 413 for a body over the limit, 415 for a wrong Content-Type).

use axum::{
    extract::{
        FromRequest, FromRequestParts, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

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
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
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
        JsonRejection::JsonDataError(err) => {
            // serde's message names the field and the problem ("unknown field `x`, expected ...").
            ApiError::BadRequest(format!("invalid request body: {}", err.body_text_detail())).into_response()
        }
        JsonRejection::JsonSyntaxError(err) => {
            ApiError::BadRequest(format!("malformed JSON: {}", err.body_text_detail())).into_response()
        }
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

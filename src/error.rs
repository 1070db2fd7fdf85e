//! `ApiError`: every failure a handler can answer, and the one JSON body they all share
//! (DESIGN.md section 4). Internals (SQL, paths, causes) are logged, never sent.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::request_id;

/// The error body of every response with a status of 400 or more.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong, for a person.
    #[schema(example = "edge node not found")]
    pub error: String,
    /// Stable machine-readable code.
    #[schema(example = "NOT_FOUND")]
    pub code: String,
    /// The HTTP status, repeated.
    #[schema(example = 404)]
    pub status: u16,
    /// The request's id (also in the `X-Request-Id` header); quote it when reporting a problem.
    pub request_id: Option<String>,
    /// Field problems, for `VALIDATION_FAILED`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub details: Vec<FieldError>,
}

/// One problem with one field of the request.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FieldError {
    /// The field, as a JSON path into the request (`modules[2].id`) or a query parameter name.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, bad query parameter).
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but some fields are invalid.
    #[error("{message}")]
    Validation { message: String, details: Vec<FieldError> },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Forbidden for a reason of its own, told apart from a missing role by its code.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// The object does not exist, or belongs to another organization (never told apart).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the object was changed by someone else; fetch it again and retry")]
    PreconditionFailed,
    #[error("{message}")]
    PayloadTooLarge { code: &'static str, message: String },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("too many requests; retry in {retry_after_seconds} s")]
    TooManyRequests { retry_after_seconds: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// A node (or another upstream) answered with an error.
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    /// A node did not answer in time.
    #[error("{message}")]
    GatewayTimeout { code: &'static str, message: String },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }

    pub fn validation(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => "the request has invalid fields".to_owned(),
        };
        Self::Validation { message, details }
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Refused { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::Validation { .. } => "VALIDATION_FAILED",
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Conflict { code, .. }
            | Self::Refused { code, .. }
            | Self::PayloadTooLarge { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::BadGateway { code, .. }
            | Self::GatewayTimeout { code, .. } => code,
            Self::PreconditionFailed => "PRECONDITION_FAILED",
            Self::TooManyRequests { .. } => "RATE_LIMITED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // The database is down, restarting or saturated: answer fast with 503 so clients back
        // off and retry, instead of a 500.
        if crate::db::is_unavailable(&err) {
            tracing::warn!(error = %err, "database unavailable");
            return Self::Unavailable("the database is unavailable; retry shortly".into());
        }
        // Text PostgreSQL cannot store: a NUL character (`\u0000` in JSON) in the request.
        if let sqlx::Error::Database(db) = &err
            && matches!(db.code().as_deref(), Some("22021" | "22P05"))
        {
            return Self::BadRequest("text must not contain NUL characters (\\u0000)".into());
        }
        Self::Internal(anyhow::Error::new(err))
    }
}

/// Maps a violation of the named constraint to the given error, keeping every other error.
/// Used where the query runs, so each store function says which conflicts it can cause.
pub fn on_constraint(
    constraint: &'static str,
    make: impl FnOnce() -> ApiError,
) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |err| match &err {
        sqlx::Error::Database(db) if db.constraint() == Some(constraint) => make(),
        _ => err.into(),
    }
}

/// Builds the error response for a status and message, with the current request id.
pub fn error_response(status: StatusCode, code: &str, message: String, details: Vec<FieldError>) -> Response {
    let body = ErrorBody {
        error: message,
        code: code.to_owned(),
        status: status.as_u16(),
        request_id: request_id::current(),
        details,
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            // A database outage reached us wrapped in another error: still a 503, not a 500.
            if cause.chain().any(|e| e.downcast_ref::<sqlx::Error>().is_some_and(crate::db::is_unavailable)) {
                tracing::warn!(error = ?cause, "database unavailable");
                return Self::Unavailable("the database is unavailable; retry shortly".into()).into_response();
            }
            tracing::error!(error = ?cause, "request failed");
        }
        let status = self.status();
        let retry_after = match &self {
            Self::TooManyRequests { retry_after_seconds } => Some(*retry_after_seconds),
            Self::Unavailable(_) => Some(1),
            _ => None,
        };
        let code = self.code();
        let message = self.to_string();
        let details = match self {
            Self::Validation { details, .. } => details,
            _ => Vec::new(),
        };
        let mut response = error_response(status, code, message, details);
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

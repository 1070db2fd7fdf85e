//! Request and answer bodies of `/api/authentication`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::time::Timestamp;
use uuid::Uuid;

use super::{password::Password, roles::Role};
use crate::{http::schema::Email, organizations::model::OrganizationName, users::model::UserName};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "demo@example.com")]
    pub email: String,
    #[schema(example = "MySecret-123")]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(value_type = Email)]
    pub email: String,
    #[schema(value_type = Password)]
    pub password: String,
    #[schema(value_type = UserName)]
    pub name: String,
    /// Name of the organization created with the user (the user becomes its Owner).
    #[schema(value_type = OrganizationName)]
    pub organization_name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A signed-in session's tokens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// The access token: send it as `Authorization: Bearer <token>`.
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    pub expires_at: Timestamp,
    /// Trade it at `/api/authentication/refresh` for new tokens; each works once.
    pub refresh_token: String,
    pub refresh_expires_at: Timestamp,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
}

/// What the server knows of the credential used for this request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub active: bool,
    /// `user` (an access token) or `apiKey`.
    pub kind: String,
    pub session_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub organization_id: Uuid,
    pub role: Role,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub session_expires_at: Option<Timestamp>,
}

//! Request and answer bodies of `/api/apikeys`. The key itself appears only in `CreatedApiKey`,
//! the answer to its creation; nothing else ever carries it or its hash.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::ApiKeyRow;
use crate::{
    auth::roles::Role,
    http::{schema::text_schema, time::Timestamp},
};

pub const NAME_MAX: usize = 100;

text_schema!(
    /// An API key's name.
    pub ApiKeyName,
    NAME_MAX
);

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiKey {
    /// Unique within the organization, 1 to 100 characters.
    #[schema(value_type = ApiKeyName, example = "CI deploys")]
    pub name: String,
    /// What the key may do; no higher than the caller's own role.
    pub role: Role,
    /// When the key stops working (must be in the future); without it the key never expires.
    pub expires_at: Option<Timestamp>,
}

/// An API key as listed: never the key itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The first 16 characters of the key, to recognise it by.
    #[schema(example = "edgeflow_Xk3v9Qa")]
    pub prefix: String,
    pub role: Role,
    pub created_at: Timestamp,
    /// The user who created the key; null when it was created with an API key (the audit event
    /// names that key) or the user has since been deleted.
    pub created_by: Option<Uuid>,
    pub expires_at: Option<Timestamp>,
    /// When the key was last used (updated at most once a minute).
    pub last_used_at: Option<Timestamp>,
    pub revoked: bool,
    pub revoked_at: Option<Timestamp>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            role: row.role,
            created_at: row.created_at.into(),
            created_by: row.created_by,
            expires_at: row.expires_at.map(Into::into),
            last_used_at: row.last_used_at.map(Into::into),
            revoked: row.revoked_at.is_some(),
            revoked_at: row.revoked_at.map(Into::into),
        }
    }
}

/// A key just created, with the key itself: this is the only answer that shows it. Send it as
/// `X-API-Key: edgeflow_...`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    pub id: Uuid,
    pub name: String,
    #[schema(example = "edgeflow_Xk3v9Qa")]
    pub prefix: String,
    pub role: Role,
    /// The key. Store it now: it cannot be shown again.
    #[schema(example = "edgeflow_Xk3v9Qa2m1c8PzR0bLw5yT7uJ4dH6sN9eK1fV3gA0qI")]
    pub key: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// The user who created the key; null when it was created with an API key.
    pub created_by: Option<Uuid>,
}

impl CreatedApiKey {
    pub fn new(row: ApiKeyRow, key: String) -> Self {
        Self {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            role: row.role,
            key,
            created_at: row.created_at.into(),
            expires_at: row.expires_at.map(Into::into),
            created_by: row.created_by,
        }
    }
}

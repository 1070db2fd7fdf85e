//! Request and answer bodies of `/api/registrationkeys`. The key itself appears only in
//! `CreatedRegistrationKey`, the answer to its creation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::RegistrationKeyRow;
use crate::{
    edgenodes::model::{LabelMap, Labels, NodeType, check_labels},
    error::ApiError,
    http::{schema::text_schema, time::Timestamp, validate::Checks},
};

pub const NAME_MAX: usize = 100;

text_schema!(
    /// A registration key's name.
    pub RegistrationKeyName,
    NAME_MAX
);

/// A new registration key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRegistrationKey {
    /// Unique within the organization, 1 to 100 characters.
    #[schema(value_type = RegistrationKeyName, example = "Plant 1 gateways")]
    pub name: String,
    /// The type of the nodes it enrols.
    pub node_type: NodeType,
    /// Labels given to the nodes it enrols.
    #[serde(default)]
    #[schema(value_type = Option<LabelMap>)]
    pub labels: Option<Labels>,
    /// How many nodes it may enrol (at least 1); without it, any number.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_uses: Option<i32>,
    /// When it stops working (must be in the future); without it, never.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

impl NewRegistrationKey {
    pub fn check(&self) -> Result<(), ApiError> {
        let mut checks = Checks::new();
        checks.text("name", &self.name, NAME_MAX);
        if let Some(labels) = &self.labels {
            check_labels(&mut checks, "labels", labels);
        }
        if self.max_uses.is_some_and(|n| n < 1) {
            checks.fail("maxUses", "must be at least 1");
        }
        if self.expires_at.is_some_and(|t| t.0 <= chrono::Utc::now()) {
            checks.fail("expiresAt", "must be in the future");
        }
        checks.finish()
    }
}

/// A registration key as listed: never the key itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationKey {
    pub id: Uuid,
    pub name: String,
    /// The first 12 characters of the key, to recognise it by.
    #[schema(example = "efreg_Xk3v9Q")]
    pub prefix: String,
    pub node_type: NodeType,
    pub labels: Labels,
    /// How many nodes it may enrol; null for any number.
    pub max_uses: Option<i32>,
    /// How many nodes it has enrolled.
    pub uses: i32,
    pub expires_at: Option<Timestamp>,
    /// Whether it can enrol a node now: not revoked, not expired, not used up.
    pub active: bool,
    pub created_at: Timestamp,
    /// The user who created it; null when it was created with an API key.
    pub created_by: Option<Uuid>,
    pub revoked: bool,
    pub revoked_at: Option<Timestamp>,
}

impl From<RegistrationKeyRow> for RegistrationKey {
    fn from(row: RegistrationKeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            node_type: row.node_type,
            labels: row.labels.0,
            max_uses: row.max_uses,
            uses: row.uses,
            expires_at: row.expires_at.map(Into::into),
            active: row.active,
            created_at: row.created_at.into(),
            created_by: row.created_by,
            revoked: row.revoked_at.is_some(),
            revoked_at: row.revoked_at.map(Into::into),
        }
    }
}

/// A registration key just created, with the key itself: the only answer that shows it. Nodes
/// enrol with `POST /api/edgenodes/register {"registrationKey", "name"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedRegistrationKey {
    #[serde(flatten)]
    pub registration_key: RegistrationKey,
    /// The key. Store it now: it cannot be shown again.
    #[schema(example = "efreg_Xk3v9Qa2m1c8PzR0bLw5yT7uJ4dH6sN9eK1fV3gA0qI")]
    pub key: String,
}

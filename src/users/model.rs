use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::time::Timestamp;
use uuid::Uuid;

use crate::{
    auth::{password::Password, roles::Role},
    http::{
        merge_patch::Patch,
        schema::{Email, text_schema},
    },
};

pub const NAME_MAX: usize = 200;

text_schema!(
    /// A user's name.
    pub UserName,
    NAME_MAX
);

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationMembership {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
}

/// The signed-in user, their active organization and every organization they belong to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// The role in the active organization.
    pub role: Role,
    /// The active organization (the one this token acts in).
    pub organization: OrganizationRef,
    pub organizations: Vec<OrganizationMembership>,
    pub created_at: Timestamp,
}

/// Merge patch of the profile: absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MePatch {
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = UserName)]
    pub name: Patch<String>,
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = Email)]
    pub email: Patch<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    #[schema(value_type = Password)]
    pub new_password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationSwitch {
    pub organization_id: Uuid,
}

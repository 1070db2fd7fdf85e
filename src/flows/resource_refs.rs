//! The resource versions a flow references, looked up in the resources tables (migration 0020),
//! always within one organization, and the readiness check publishing and deploying share.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{error::ApiError, tunnel::protocol::DeployResource};

/// One entry of a flow's `content.resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    pub resource_id: Uuid,
    pub version_id: Uuid,
}

/// A referenced resource version as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResourceVersionInfo {
    pub resource_id: Uuid,
    pub version_id: Uuid,
    pub resource_name: String,
    pub version: i32,
    pub state: String,
    pub path: Option<String>,
    pub size_in_bytes: i64,
    /// Hex sha256 of the uploaded content; `None` before an upload.
    pub sha256: Option<String>,
}

impl ResourceVersionInfo {
    pub fn is_completed(&self) -> bool {
        self.state == "Completed" && self.sha256.is_some()
    }

    /// What a node needs to fetch and check it; `downloadUrl` is `crate::resources::download_url`
    /// under `public_url`.
    pub fn deploy_resource(&self, public_url: &str) -> DeployResource {
        DeployResource {
            resource_id: self.resource_id,
            version_id: self.version_id,
            path: self.path.clone(),
            size_in_bytes: self.size_in_bytes,
            sha256: self.sha256.clone().unwrap_or_default(),
            download_url: crate::resources::download_url(public_url, self.resource_id, self.version_id),
        }
    }
}

/// The referenced resource versions that exist in the organization and belong to the named
/// resource, in the order of `refs` (missing ones are left out). Locks the version rows
/// `FOR SHARE` when run inside a transaction, so they cannot be deleted or change state until
/// it ends.
pub async fn lookup(
    conn: &mut PgConnection,
    organization_id: Uuid,
    refs: &[ResourceRef],
) -> Result<Vec<ResourceVersionInfo>, sqlx::Error> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let version_ids: Vec<Uuid> = refs.iter().map(|r| r.version_id).collect();
    let rows: Vec<ResourceVersionInfo> = sqlx::query_as(
        "SELECT rv.resource_id, rv.id AS version_id, r.name AS resource_name, rv.version, rv.state, r.path, \
                rv.size_in_bytes, rv.sha256 \
         FROM resource_versions rv JOIN resources r ON r.id = rv.resource_id \
         WHERE rv.id = ANY($1) AND rv.organization_id = $2 AND r.organization_id = $2 \
         FOR SHARE OF rv",
    )
    .bind(&version_ids)
    .bind(organization_id)
    .fetch_all(conn)
    .await?;
    Ok(refs
        .iter()
        .filter_map(|wanted| {
            rows.iter()
                .find(|row| row.version_id == wanted.version_id && row.resource_id == wanted.resource_id)
                .cloned()
        })
        .collect())
}

/// How ready a referenced resource version must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Completed (frozen): what publishing and deploying a version require.
    Completed,
    /// Content uploaded, Draft or Completed: enough to try a draft on a DevAndTest node.
    Uploaded,
}

/// THE check that a flow's resources may be used: every referenced version exists in the
/// organization (as a version of the named resource) and is Completed (or, with
/// `Readiness::Uploaded`, has its content). Answers them in the order of `refs`, locked
/// `FOR SHARE` until the caller's transaction ends; otherwise 409 `RESOURCE_NOT_COMPLETED`
/// (`RESOURCE_NOT_READY` for `Uploaded`) naming every offender.
pub async fn require_ready(
    conn: &mut PgConnection,
    organization_id: Uuid,
    refs: &[ResourceRef],
    readiness: Readiness,
) -> Result<Vec<ResourceVersionInfo>, ApiError> {
    let found = lookup(conn, organization_id, refs).await?;
    let mut problems = Vec::new();
    for wanted in refs {
        match found.iter().find(|f| f.version_id == wanted.version_id) {
            None => problems.push(format!(
                "resource {} version {} does not exist (any more) in this organization",
                wanted.resource_id, wanted.version_id
            )),
            Some(info) => {
                let ready = match readiness {
                    Readiness::Completed => info.is_completed(),
                    Readiness::Uploaded => info.sha256.is_some(),
                };
                if !ready {
                    let what = match readiness {
                        Readiness::Completed => format!("is {}, not Completed", info.state),
                        Readiness::Uploaded => "has no content uploaded".to_owned(),
                    };
                    problems.push(format!(
                        "resource '{}' ({}) version {} ({}) {what}",
                        info.resource_name, info.resource_id, info.version, info.version_id
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(found);
    }
    let (code, ask) = match readiness {
        Readiness::Completed => ("RESOURCE_NOT_COMPLETED", "every resource version a flow uses must be Completed"),
        Readiness::Uploaded => {
            ("RESOURCE_NOT_READY", "every resource version a flow uses must have its content uploaded")
        }
    };
    Err(ApiError::conflict(code, format!("{ask}: {}", problems.join("; "))))
}

//! Request and answer bodies of `/api/edgenodes`. Row types live in `store`; these are what
//! clients see and send. The access key appears only in `CreatedEdgeNode`, `RotatedAccessKey` and
//! `RegisteredEdgeNode`, the answers that make it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::{EdgeNodeRow, RotatedKeyRow};
use utoipa::openapi::{
    RefOr,
    schema::{ObjectBuilder, Schema, Type},
};

use crate::{
    error::ApiError,
    http::{
        merge_patch::Patch,
        schema::{Description, text_schema},
        time::Timestamp,
        validate::Checks,
    },
};

pub const NAME_MAX: usize = 100;
pub use crate::http::validate::DESCRIPTION_MAX;
pub const LABELS_MAX: usize = 64;
pub const LABEL_KEY_MAX: usize = 63;
pub const LABEL_VALUE_MAX: usize = 255;

/// What a node is for: production work, or development and testing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum NodeType {
    Production,
    DevAndTest,
}

crate::db::text_enum!(NodeType { Production, DevAndTest });

/// A flat map of label names to values, e.g. `{"site": "plant-1", "line": "3"}`. Names: 1 to 63
/// letters, digits, `.`, `-`, `_` or `/`; values: 1 to 255 characters without commas, control
/// characters or surrounding spaces; at most 64 labels.
pub type Labels = BTreeMap<String, String>;

text_schema!(
    /// An edge node's name.
    pub NodeName,
    NAME_MAX
);

/// What `check_labels` accepts (documentation only).
pub struct LabelMap;

impl utoipa::PartialSchema for LabelMap {
    fn schema() -> RefOr<Schema> {
        // Values: no commas or control characters, no spaces at either end.
        let value_pattern = r"^[^,\x00-\x1f\x7f-\x9f\s]([^,\x00-\x1f\x7f-\x9f]*[^,\x00-\x1f\x7f-\x9f\s])?$";
        let value = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(LABEL_VALUE_MAX))
            .pattern(Some(value_pattern));
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^[A-Za-z0-9._/-]{{1,{LABEL_KEY_MAX}}}$")));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(value))
            .property_names(Some(name))
            .max_properties(Some(LABELS_MAX))
            .description(Some(
                "Labels: names of 1 to 63 letters, digits, `.`, `-`, `_` or `/`; values of 1 to 255 \
                 characters without commas, control characters or surrounding spaces; at most 64.",
            ))
            .examples([serde_json::json!({"site": "plant-1", "line": "3"})])
            .into()
    }
}

impl utoipa::ToSchema for LabelMap {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("LabelMap")
    }
}

fn is_label_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')
}

/// Checks a label map (the rules above, which keep every label expressible in the `labels` list
/// filter `key=value,key2=value2`).
pub fn check_labels(checks: &mut Checks, field: &str, labels: &Labels) {
    if labels.len() > LABELS_MAX {
        checks.fail(field, format!("at most {LABELS_MAX} labels"));
        return;
    }
    for (key, value) in labels {
        let at = format!("{field}.{key}");
        if key.is_empty() {
            checks.fail(field, "label names must not be empty");
        } else if key.chars().count() > LABEL_KEY_MAX {
            checks.fail(&at, format!("label names must be at most {LABEL_KEY_MAX} characters"));
        } else if !key.chars().all(is_label_key_char) {
            checks.fail(&at, "label names may contain only letters, digits, '.', '-', '_' and '/'");
        }
        if value.trim().is_empty() {
            checks.fail(&at, "must not be empty");
        } else if value.chars().count() > LABEL_VALUE_MAX {
            checks.fail(&at, format!("must be at most {LABEL_VALUE_MAX} characters"));
        } else if value.trim() != value {
            checks.fail(&at, "must not start or end with spaces");
        } else if value.chars().any(|c| c == ',' || c.is_control()) {
            checks.fail(&at, "must not contain commas or control characters");
        }
    }
}

/// Parses the `labels` list filter, `key=value,key2=value2`: the nodes whose labels contain every
/// pair (a key given twice with two values matches no node). Blank means no filter.
pub fn parse_label_filter(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    if text.contains('\0') {
        return Err(ApiError::invalid_field("labels", "must not contain NUL characters"));
    }
    let mut pairs = Vec::new();
    for piece in text.split(',') {
        let Some((key, value)) = piece.split_once('=') else {
            return Err(ApiError::invalid_field("labels", format!("expected key=value pairs, got '{piece}'")));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(ApiError::invalid_field("labels", format!("expected key=value pairs, got '{piece}'")));
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

pub use crate::http::validate::clean_description;

/// A new edge node (Crosser's call: `name`, `organizationId`, `type`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewEdgeNode {
    /// 1 to 100 characters, unique within the organization.
    #[schema(value_type = NodeName, example = "CrosserDemo")]
    pub name: String,
    /// The caller's active organization (see `GET /api/users/me`).
    pub organization_id: Uuid,
    #[serde(rename = "type")]
    pub node_type: NodeType,
    #[serde(default)]
    #[schema(value_type = Option<LabelMap>)]
    pub labels: Option<Labels>,
    /// At most 2000 characters.
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
}

impl NewEdgeNode {
    pub fn check(&self) -> Result<(), ApiError> {
        let mut checks = Checks::new();
        checks.text("name", &self.name, NAME_MAX);
        if let Some(labels) = &self.labels {
            check_labels(&mut checks, "labels", labels);
        }
        if let Some(description) = &self.description {
            checks.description("description", description);
        }
        checks.finish()
    }
}

/// Merge patch of a node: absent fields stay; `labels` replaces the whole map (`null` clears it);
/// `description: null` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeNodePatch {
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = NodeName)]
    pub name: Patch<String>,
    /// Cannot be cleared.
    #[serde(default, rename = "type")]
    #[schema(value_type = NodeType)]
    pub node_type: Patch<NodeType>,
    #[serde(default)]
    #[schema(value_type = Option<LabelMap>)]
    pub labels: Patch<Labels>,
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Patch<String>,
}

impl EdgeNodePatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_absent() && self.node_type.is_absent() && self.labels.is_absent() && self.description.is_absent()
    }

    /// The names of the fields this patch sets, for the audit event.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_absent()),
            ("type", self.node_type.is_absent()),
            ("labels", self.labels.is_absent()),
            ("description", self.description.is_absent()),
        ]
        .into_iter()
        .filter(|(_, absent)| !absent)
        .map(|(name, _)| name)
        .collect()
    }
}

/// An edge node, with its live status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeNode {
    pub id: Uuid,
    pub organization_id: Uuid,
    #[schema(example = "CrosserDemo")]
    pub name: String,
    #[serde(rename = "type")]
    pub node_type: NodeType,
    pub labels: Labels,
    pub description: Option<String>,
    /// Whether the node's tunnel is open now.
    pub online: bool,
    /// When the node last connected.
    pub connected_at: Option<Timestamp>,
    /// When its last connection ended.
    pub disconnected_at: Option<Timestamp>,
    /// When the node was last heard from.
    pub last_seen_at: Option<Timestamp>,
    pub agent_version: Option<String>,
    pub protocol_version: Option<i32>,
    /// The flows the node last reported: `[{flowDefinitionId, flowId, state, error?}]`.
    #[schema(value_type = Vec<Object>)]
    pub flows: serde_json::Value,
    /// Jobs queued, sent or in progress.
    pub pending_jobs: i64,
    /// The first 12 characters of the access key, to recognise it by.
    #[schema(example = "efn_Xk3v9Qa2")]
    pub access_key_prefix: String,
    /// When the access key was last rotated.
    pub key_rotated_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<EdgeNodeRow> for EdgeNode {
    fn from(row: EdgeNodeRow) -> Self {
        Self {
            id: row.id,
            organization_id: row.organization_id,
            name: row.name,
            node_type: row.node_type,
            labels: row.labels.0,
            description: row.description,
            online: row.online,
            connected_at: row.connected_at.map(Into::into),
            disconnected_at: row.disconnected_at.map(Into::into),
            last_seen_at: row.last_seen_at.map(Into::into),
            agent_version: row.agent_version,
            protocol_version: row.protocol_version,
            flows: row.reported_flows.0,
            pending_jobs: row.pending_jobs,
            access_key_prefix: row.access_key_prefix,
            key_rotated_at: row.key_rotated_at.map(Into::into),
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// A node just created, with its access key: the only answer that shows it. Configure the node
/// with `id` (its node id) and `accessKey`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEdgeNode {
    #[serde(flatten)]
    pub node: EdgeNode,
    /// The node's access key. Store it now: it cannot be shown again.
    #[schema(example = "efn_Xk3v9Qa2m1c8PzR0bLw5yT7uJ4dH6sN9eK1fV3gA0qI")]
    pub access_key: String,
}

/// A node's new access key; the old one no longer works and its connection was closed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedAccessKey {
    pub id: Uuid,
    /// The new access key. Store it now: it cannot be shown again.
    #[schema(example = "efn_Xk3v9Qa2m1c8PzR0bLw5yT7uJ4dH6sN9eK1fV3gA0qI")]
    pub access_key: String,
    #[schema(example = "efn_Xk3v9Qa2")]
    pub access_key_prefix: String,
    pub key_rotated_at: Timestamp,
}

impl RotatedAccessKey {
    pub fn new(row: RotatedKeyRow, access_key: String) -> Self {
        Self {
            id: row.id,
            access_key,
            access_key_prefix: row.access_key_prefix,
            key_rotated_at: row.key_rotated_at.into(),
        }
    }
}

/// A node enrolling itself with a registration key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterEdgeNode {
    /// A registration key of the organization (`efreg_...`).
    pub registration_key: String,
    /// The node's name: 1 to 100 characters, unique within the organization.
    #[schema(value_type = NodeName, example = "plant-1-gateway-07")]
    pub name: String,
}

/// The enrolled node: configure it with `id` and `accessKey`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredEdgeNode {
    pub id: Uuid,
    pub name: String,
    pub organization_id: Uuid,
    /// The node's access key. Store it now: it cannot be shown again.
    pub access_key: String,
    /// From the registration key.
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// From the registration key.
    pub labels: Labels,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_filter_parses_pairs() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(parse_label_filter("site=plant-1, line = 3").unwrap(), [pair("site", "plant-1"), pair("line", "3")]);
        assert_eq!(parse_label_filter(" ").unwrap(), []);
        for bad in ["site", "=x", "site=", "a=1,,b=2", "a=\0"] {
            assert!(parse_label_filter(bad).is_err(), "{bad}");
        }
        // A value may hold '=' (only the first one splits); a key twice asks for both values.
        assert_eq!(parse_label_filter("expr=a=b").unwrap(), [pair("expr", "a=b")]);
        assert_eq!(parse_label_filter("a=1,a=2").unwrap(), [pair("a", "1"), pair("a", "2")]);
    }

    #[test]
    fn labels_are_checked() {
        let check = |pairs: &[(&str, &str)]| {
            let labels: Labels = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let mut checks = Checks::new();
            check_labels(&mut checks, "labels", &labels);
            checks.finish().is_ok()
        };
        assert!(check(&[("site", "plant 1"), ("k8s.io/zone", "a")]));
        assert!(!check(&[("", "x")]));
        assert!(!check(&[("site", "")]));
        assert!(!check(&[("si te", "x")]));
        assert!(!check(&[("site", "a,b")]));
        assert!(!check(&[("site", " a")]));
        assert!(!check(&[(&"k".repeat(64), "x")]));
        assert!(!check(&[("site", &"v".repeat(256))]));
        assert!(check(&[(&"k".repeat(63), &"v".repeat(255))]));
    }
}

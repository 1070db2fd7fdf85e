//! Request and answer bodies of `/api/flowdefinitions`. Row types live in `store`; these are what
//! clients see and send.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::{DefinitionRow, DraftRow, DraftSummaryRow, VersionRow, VersionSummaryRow};
use crate::http::{
    merge_patch::Patch,
    schema::{Description, JsonDocument, exact_text, text_schema},
    time::Timestamp,
    validate::Checks,
};

pub const NAME_MAX: usize = 200;
pub use crate::http::validate::DESCRIPTION_MAX;

pub use crate::http::validate::clean_description;

text_schema!(
    /// The name of a flow definition or draft.
    pub FlowName,
    NAME_MAX
);

/// A module id or type, as `content::check_shape` takes it (documentation only).
pub struct ModuleText;

impl utoipa::PartialSchema for ModuleText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        exact_text(super::content::MODULE_ID_MAX).into()
    }
}

impl ToSchema for ModuleText {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("ModuleText")
    }
}

/// A flow's content: modules, the connections between them, the resource versions it uses and
/// free-form settings. Module ids are unique; connections join existing modules (no self-loops,
/// no duplicates); resources name resource versions of the same organization.
///
/// Each part may be left out or `null` when writing (an empty one is stored); answers always
/// carry all four.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct FlowContent {
    #[schema(max_items = 5000)]
    pub modules: Option<Vec<FlowModule>>,
    #[schema(max_items = 20000)]
    pub connections: Option<Vec<FlowConnection>>,
    #[schema(max_items = 500)]
    pub resources: Option<Vec<FlowResource>>,
    #[schema(value_type = Option<JsonDocument>)]
    pub settings: Option<Value>,
}

/// A merge patch of a draft's content: each part replaced whole, or reset by `null` (documentation
/// only).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct FlowContentPatch {
    #[schema(max_items = 5000)]
    pub modules: Option<Vec<FlowModule>>,
    #[schema(max_items = 20000)]
    pub connections: Option<Vec<FlowConnection>>,
    #[schema(max_items = 500)]
    pub resources: Option<Vec<FlowResource>>,
    /// Merged into the current settings.
    #[schema(value_type = Option<JsonDocument>)]
    pub settings: Option<Value>,
}

/// One entry of a flow's `resources`: a resource version of the organization; one per resource.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct FlowResource {
    pub resource_id: Uuid,
    pub version_id: Uuid,
}

/// One module of a flow.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FlowModule {
    /// Unique within the flow; connections refer to it.
    #[schema(value_type = ModuleText, example = "m1")]
    pub id: String,
    /// The module type.
    #[serde(rename = "type")]
    #[schema(value_type = ModuleText, example = "MqttSubscriber")]
    pub module_type: String,
    /// At most 200 characters, no control characters.
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub name: Option<String>,
    #[schema(value_type = Option<JsonDocument>)]
    pub config: Option<Value>,
}

/// A connection from one module's output to another module's input.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FlowConnection {
    #[schema(value_type = ModuleText, example = "m1")]
    pub from: String,
    #[schema(value_type = ModuleText, example = "m2")]
    pub to: String,
}

/// A draft as listed in its flow definition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowDraftSummary {
    pub id: Uuid,
    pub name: String,
    /// Bumped by every change; the draft's ETag.
    pub revision: i64,
    /// Hex sha256 of the canonical JSON of its content.
    pub content_hash: String,
    pub based_on_flow_id: Option<Uuid>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<DraftSummaryRow> for FlowDraftSummary {
    fn from(row: DraftSummaryRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            revision: row.revision,
            content_hash: row.content_hash,
            based_on_flow_id: row.based_on_flow_id,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// A version (Crosser: a "flow") as listed: immutable once published.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowVersionSummary {
    pub id: Uuid,
    /// The name of the draft it was published from.
    pub name: String,
    /// 1, 2, 3 ... within the flow definition.
    pub version: i32,
    pub description: Option<String>,
    /// Hex sha256 of the canonical JSON of its content.
    pub content_hash: String,
    pub created_at: Timestamp,
}

impl From<VersionSummaryRow> for FlowVersionSummary {
    fn from(row: VersionSummaryRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            version: row.version,
            description: row.description,
            content_hash: row.content_hash,
            created_at: row.created_at.into(),
        }
    }
}

/// A flow definition: the container of a flow's drafts (editable) and versions (immutable).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowDefinition {
    pub id: Uuid,
    pub organization_id: Uuid,
    #[schema(example = "Temperature")]
    pub name: String,
    pub description: Option<String>,
    /// The newest version's number, `null` before the first publish.
    pub latest_version: Option<i32>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Its drafts, oldest first.
    pub flow_drafts: Vec<FlowDraftSummary>,
    /// Its versions, newest first.
    pub flows: Vec<FlowVersionSummary>,
}

impl FlowDefinition {
    pub fn new(row: DefinitionRow, drafts: Vec<DraftSummaryRow>, versions: Vec<VersionSummaryRow>) -> Self {
        Self {
            id: row.id,
            organization_id: row.organization_id,
            name: row.name,
            description: row.description,
            latest_version: (row.latest_version > 0).then_some(row.latest_version),
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
            flow_drafts: drafts.into_iter().map(Into::into).collect(),
            flows: versions.into_iter().map(Into::into).collect(),
        }
    }
}

/// A new flow definition.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewFlowDefinition {
    /// 1 to 200 characters, unique within the organization.
    #[schema(value_type = FlowName, example = "Temperature")]
    pub name: String,
    /// At most 2000 characters.
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
    /// The caller's active organization, if given (see `GET /api/users/me`).
    #[serde(default)]
    pub organization_id: Option<Uuid>,
}

impl NewFlowDefinition {
    pub fn check(&self) -> Result<(), crate::error::ApiError> {
        let mut checks = Checks::new();
        checks.text("name", &self.name, NAME_MAX);
        if let Some(description) = &self.description {
            checks.description("description", description);
        }
        checks.finish()
    }
}

/// Changes to a flow definition (JSON Merge Patch): `name`, `description` (`null` clears it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowDefinitionPatch {
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = FlowName)]
    pub name: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Patch<String>,
}

/// A draft with its content.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowDraft {
    pub id: Uuid,
    pub flow_definition_id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    #[schema(value_type = FlowContent)]
    pub content: Value,
    /// Hex sha256 of the canonical JSON of its content.
    pub content_hash: String,
    /// Bumped by every change; also the `ETag`.
    pub revision: i64,
    /// The version it was copied from, if any.
    pub based_on_flow_id: Option<Uuid>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<DraftRow> for FlowDraft {
    fn from(row: DraftRow) -> Self {
        Self {
            id: row.id,
            flow_definition_id: row.flow_definition_id,
            organization_id: row.organization_id,
            name: row.name,
            content: row.content,
            content_hash: row.content_hash,
            revision: row.revision,
            based_on_flow_id: row.based_on_flow_id,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// A new draft: empty, with the given content, or a copy of a version's content (`fromFlowId`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewFlowDraft {
    /// 1 to 200 characters; default `Draft` (or `From version N`).
    #[serde(default)]
    #[schema(value_type = Option<FlowName>)]
    pub name: Option<String>,
    /// A version of this flow definition whose content the draft starts from.
    #[serde(default)]
    pub from_flow_id: Option<Uuid>,
    /// The draft's content (not with `fromFlowId`); default empty.
    #[serde(default)]
    #[schema(value_type = Option<FlowContent>)]
    pub content: Option<Value>,
}

/// A draft's new name and content (`PUT` replaces both).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowDraftUpdate {
    #[schema(value_type = FlowName)]
    pub name: String,
    #[schema(value_type = FlowContent)]
    pub content: Value,
}

/// Changes to a draft (JSON Merge Patch): `name`, and `content` merged into the current content
/// as RFC 7396 says (arrays replace whole; `null` removes a key).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowDraftPatch {
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = FlowName)]
    pub name: Patch<String>,
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = FlowContentPatch)]
    pub content: Patch<Value>,
}

/// Publishing a draft as the next version.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishDraft {
    /// What changed in this version; at most 2000 characters.
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
}

/// A version (Crosser: a "flow") with its content. Immutable.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowVersion {
    pub id: Uuid,
    pub flow_definition_id: Uuid,
    pub organization_id: Uuid,
    /// The name of the draft it was published from.
    pub name: String,
    /// 1, 2, 3 ... within the flow definition.
    pub version: i32,
    pub description: Option<String>,
    #[schema(value_type = FlowContent)]
    pub content: Value,
    /// Hex sha256 of the canonical JSON of `content` (keys sorted, no whitespace); also the `ETag`.
    pub content_hash: String,
    /// The draft it was published from (it may since have been deleted).
    pub published_from_draft_id: Option<Uuid>,
    pub created_at: Timestamp,
}

impl From<VersionRow> for FlowVersion {
    fn from(row: VersionRow) -> Self {
        Self {
            id: row.id,
            flow_definition_id: row.flow_definition_id,
            organization_id: row.organization_id,
            name: row.name,
            version: row.version,
            description: row.description,
            content: row.content,
            content_hash: row.content_hash,
            published_from_draft_id: row.published_from_draft_id,
            created_at: row.created_at.into(),
        }
    }
}

//! Request and answer bodies of `/api/resources`, and the checks of their fields. Row types live
//! in `store`; these are what clients see and send.

use serde::{Deserialize, Deserializer, Serialize, de::IgnoredAny};
use utoipa::ToSchema;
use uuid::Uuid;

use utoipa::openapi::{
    RefOr,
    schema::{AllOfBuilder, ObjectBuilder, Schema, Type},
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

pub const NAME_MAX: usize = 200;
pub const CATEGORY_MAX: usize = 500;
pub const PATH_MAX: usize = 1024;
pub use crate::http::validate::DESCRIPTION_MAX;
/// What every category starts with.
pub const CATEGORY_ROOT: &str = "/organization/";

text_schema!(
    /// A resource's name.
    pub ResourceName,
    NAME_MAX
);

/// A path segment that is not `.` or `..` (nor empty), without the separators and control
/// characters `separators` excludes, as a regular expression.
fn clean_segment(excluded: &str) -> String {
    format!("([^{excluded}.][^{excluded}]*|\\.[^{excluded}.][^{excluded}]*|\\.\\.[^{excluded}]+)")
}

/// What `check_category` accepts (documentation only).
pub struct Category;

impl utoipa::PartialSchema for Category {
    fn schema() -> RefOr<Schema> {
        let segment = clean_segment(r"/\x00-\x1f\x7f-\x9f");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(CATEGORY_MAX))
            .pattern(Some(format!("^/organization/({segment}(/{segment})*/*)?$")))
            .examples([CATEGORY_ROOT, "/organization/plant-1/"])
            .into()
    }
}

impl ToSchema for Category {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Category")
    }
}

/// What `check_path` accepts (documentation only).
pub struct FilePath;

impl utoipa::PartialSchema for FilePath {
    fn schema() -> RefOr<Schema> {
        let segment = clean_segment(r"/\\\x00-\x1f\x7f-\x9f");
        let no_space = r"[^\s\x00-\x1f\x7f-\x9f]";
        AllOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(PATH_MAX))
                    .pattern(Some(format!(r"^[/\\]?{segment}([/\\]{segment})*$"))),
            )
            // Not starting or ending with a space.
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!("^{no_space}(.*{no_space})?$"))))
            .examples(["data/calibration.csv"])
            .into()
    }
}

impl ToSchema for FilePath {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("FilePath")
    }
}

/// What a resource holds: a file or script deployed beside a flow, or connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum ResourceType {
    File,
    PythonScript,
    CSharpScript,
    Modbus,
    #[serde(rename = "OPC")]
    Opc,
    SiemensS7,
    Rockwell,
    PiWebApi,
    DataTriggerDefinitions,
}

impl ResourceType {
    pub const ALL: &'static [Self] = &[
        Self::File,
        Self::PythonScript,
        Self::CSharpScript,
        Self::Modbus,
        Self::Opc,
        Self::SiemensS7,
        Self::Rockwell,
        Self::PiWebApi,
        Self::DataTriggerDefinitions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "File",
            Self::PythonScript => "PythonScript",
            Self::CSharpScript => "CSharpScript",
            Self::Modbus => "Modbus",
            Self::Opc => "OPC",
            Self::SiemensS7 => "SiemensS7",
            Self::Rockwell => "Rockwell",
            Self::PiWebApi => "PiWebApi",
            Self::DataTriggerDefinitions => "DataTriggerDefinitions",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == text)
    }

    /// File-like resources land on the node as a file, so they need a `path`.
    pub fn needs_path(self) -> bool {
        matches!(self, Self::File | Self::PythonScript | Self::CSharpScript)
    }
}

impl sqlx::Type<sqlx::Postgres> for ResourceType {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Postgres> for ResourceType {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for ResourceType {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
        Self::parse(text).ok_or_else(|| format!("unexpected resource type '{text}'").into())
    }
}

/// A version is a Draft (content and description may change) until it is Completed (frozen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum VersionState {
    Draft,
    Completed,
}

crate::db::text_enum!(VersionState { Draft, Completed });

/// A resource: what all its versions share.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// Starts with `/organization/`.
    #[schema(example = "/organization/")]
    pub category: String,
    /// Where the file lands on the node (file-like types).
    pub path: Option<String>,
    pub description: Option<String>,
    /// How many versions (drafts included) the resource has.
    pub version_count: i64,
    /// The highest Completed version number, if any.
    pub latest_completed_version: Option<i32>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Its versions, oldest first (only when one resource is shown).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub versions: Option<Vec<ResourceVersion>>,
}

/// A new resource (Crosser's call: `organizationId`, `name`, `type`, `category`, `path`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewResource {
    /// The caller's active organization (see `GET /api/users/me`).
    pub organization_id: Uuid,
    /// 1 to 200 characters, unique within its category.
    #[schema(value_type = ResourceName, example = "Calibration table")]
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// The category's path: `/organization/` followed by sub-categories, e.g. `/organization/plant-1/`.
    #[schema(value_type = Category)]
    pub category: String,
    /// Local file name with path on the node; required for File, PythonScript and CSharpScript.
    /// Relative or absolute, with no `.`/`..` segments or empty segments.
    #[serde(default)]
    #[schema(value_type = Option<FilePath>)]
    pub path: Option<String>,
    /// At most 2000 characters.
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
}

impl NewResource {
    pub fn check(&self) -> Result<(), ApiError> {
        let mut checks = Checks::new();
        checks.text("name", &self.name, NAME_MAX);
        check_category(&mut checks, "category", &self.category);
        check_path_for(&mut checks, self.resource_type, self.path.as_deref());
        if let Some(description) = &self.description {
            checks.description("description", description);
        }
        checks.finish()
    }
}

/// Merge patch of a resource: absent fields stay; `path` and `description` may be `null`
/// (`path` only for types that do not need one).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcePatch {
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = ResourceName)]
    pub name: Patch<String>,
    /// Cannot be cleared.
    #[serde(default, rename = "type")]
    #[schema(value_type = ResourceType)]
    pub resource_type: Patch<ResourceType>,
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = Category)]
    pub category: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<FilePath>)]
    pub path: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Patch<String>,
}

/// A resource version: a Draft or a Completed (immutable) version, and its content's metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceVersion {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub organization_id: Uuid,
    /// 1, 2, 3 ... within the resource, in creation order.
    pub version: i32,
    pub description: Option<String>,
    pub state: VersionState,
    /// The declared size: an upload must have exactly this many bytes.
    pub size_in_bytes: i64,
    /// Bytes of the stored content (0 before an upload).
    pub uploaded_bytes: i64,
    /// Hex sha256 of the stored content (also the download's ETag).
    pub sha256: Option<String>,
    /// Hex md5 of the stored content.
    pub md5: Option<String>,
    /// The content's media type, as uploaded.
    pub content_type: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub uploaded_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

/// Reads `sizeInBytes` given as a number or, as Crosser's example writes it, a string of digits.
fn size_in_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(i64),
        Text(String),
    }
    let size = match Size::deserialize(deserializer)? {
        Size::Number(n) => n,
        Size::Text(text) => {
            text.trim().parse().map_err(|_| serde::de::Error::custom("sizeInBytes must be a whole number of bytes"))?
        }
    };
    if size < 0 {
        return Err(serde::de::Error::custom("sizeInBytes must not be negative"));
    }
    Ok(size)
}

/// `sizeInBytes` that may be `null` (as absent: unchanged).
fn optional_size_in_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(value) => size_in_bytes(value).map(Some).map_err(serde::de::Error::custom),
    }
}

/// A size in bytes as requests give it (documentation only): a whole number, or a string of
/// digits as Crosser's example writes it.
pub struct SizeInBytes;

impl utoipa::PartialSchema for SizeInBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(0)),
            )
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]{1,18}$")))
            .description(Some("Bytes: a whole number, or a string of digits."))
            .examples([1024])
            .into()
    }
}

impl ToSchema for SizeInBytes {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("SizeInBytes")
    }
}

/// A new draft (Crosser's call: `description`, `sizeInBytes`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewVersion {
    /// At most 2000 characters.
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
    /// The size of the content to be uploaded, in bytes (a number, or a string of digits).
    #[serde(deserialize_with = "size_in_bytes")]
    #[schema(value_type = SizeInBytes)]
    pub size_in_bytes: i64,
}

/// The new state of a version (`PUT` replaces): `description` and `state`, and for a draft without
/// content yet, `sizeInBytes`. The version's other properties, as `GET` answers them, are
/// accepted and ignored, so a client may send back the draft it read with only `state` changed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionUpdate {
    /// At most 2000 characters; absent or `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
    /// `Completed` freezes a draft whose content has been uploaded.
    pub state: VersionState,
    /// May change while the version is a draft (the content must then be uploaded again to
    /// match it).
    #[serde(default, deserialize_with = "optional_size_in_bytes")]
    #[schema(value_type = Option<SizeInBytes>)]
    pub size_in_bytes: Option<i64>,
    #[serde(default)]
    #[schema(value_type = Option<Uuid>, read_only)]
    pub id: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<Uuid>, read_only)]
    pub resource_id: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<Uuid>, read_only)]
    pub organization_id: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<i32>, read_only)]
    pub version: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<i64>, read_only)]
    pub uploaded_bytes: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<String>, read_only)]
    pub sha256: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<String>, read_only)]
    pub md5: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<String>, read_only)]
    pub content_type: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<String>, read_only)]
    pub created_at: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<String>, read_only)]
    pub updated_at: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<String>, read_only)]
    pub uploaded_at: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<String>, read_only)]
    pub completed_at: Option<IgnoredAny>,
}

/// Raw bytes (a file's content).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Binary(pub Vec<u8>);

/// The multipart form of an upload: one file field (its name is free; `file` is usual).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The content.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// Starting a resumable upload; the body may be empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadStart {
    /// Bytes per part (every part but the last), 1 MiB to 256 MiB; default from the server's
    /// configuration (8 MiB).
    #[serde(default)]
    #[schema(minimum = 1048576, maximum = 268435456)]
    pub part_size: Option<i64>,
}

/// A resumable upload session of a draft's content.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadSession {
    pub upload_id: Uuid,
    pub resource_id: Uuid,
    pub version_id: Uuid,
    /// The version's declared size: the parts must add up to it.
    pub size_in_bytes: i64,
    /// The largest part accepted; send every part but the last at this size.
    pub part_size: i64,
    /// How many parts of `partSize` make up `sizeInBytes`.
    pub part_count: i64,
    /// Part numbers run from 1 to this.
    pub max_parts: i32,
    pub created_at: Timestamp,
    /// The session and its parts are deleted if untouched until then (each part renews it).
    pub expires_at: Timestamp,
    /// The parts received so far, by number.
    pub parts: Vec<UploadedPart>,
}

/// A part received.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadedPart {
    pub part_number: i32,
    /// Quote it back in `complete`: the hex md5 of the part, in double quotes.
    #[schema(example = "\"9e107d9d372bb6826bd81d3542a419d6\"")]
    pub etag: String,
    pub size_in_bytes: i64,
}

/// Completing a resumable upload: the parts, in ascending order, with the ETags their uploads
/// answered; optionally the whole content's sha256 and/or md5 (hex) to verify.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteUpload {
    #[schema(max_items = 10000)]
    pub parts: Vec<CompletePart>,
    #[serde(default)]
    #[schema(pattern = "^[0-9A-Fa-f]{64}$")]
    pub sha256: Option<String>,
    #[serde(default, alias = "md5sum")]
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    pub md5: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompletePart {
    #[serde(alias = "PartNumber")]
    #[schema(minimum = 1, maximum = 10000)]
    pub part_number: i32,
    #[serde(alias = "ETag", alias = "eTag")]
    pub etag: String,
}

/// Checks a category: `/organization/` and then clean path segments.
pub fn check_category(checks: &mut Checks, field: &str, category: &str) {
    if !category.starts_with(CATEGORY_ROOT) {
        checks.fail(field, format!("must start with '{CATEGORY_ROOT}'"));
    } else if category.chars().count() > CATEGORY_MAX {
        checks.fail(field, format!("must be at most {CATEGORY_MAX} characters"));
    } else if category.chars().any(char::is_control) {
        checks.fail(field, "must not contain control characters");
    } else if category[CATEGORY_ROOT.len()..].trim_end_matches('/').split('/').any(|segment| {
        segment == ".." || segment == "." || (segment.is_empty() && category.len() > CATEGORY_ROOT.len())
    }) {
        checks.fail(field, "must not contain empty, '.' or '..' segments");
    }
}

/// Checks a file path on the node: relative or absolute (`/x`, `C:\x`), separators `/` or `\`,
/// no `.`/`..` or empty segments, naming a file (no trailing separator).
pub fn check_path(checks: &mut Checks, field: &str, path: &str) {
    if path.trim().is_empty() {
        checks.fail(field, "must not be empty");
        return;
    }
    if path.chars().count() > PATH_MAX {
        checks.fail(field, format!("must be at most {PATH_MAX} characters"));
        return;
    }
    if path.chars().any(char::is_control) {
        checks.fail(field, "must not contain control characters");
        return;
    }
    if path.trim() != path {
        checks.fail(field, "must not start or end with spaces");
        return;
    }
    let relative = path.strip_prefix(['/', '\\']).unwrap_or(path);
    let segments: Vec<&str> = relative.split(['/', '\\']).collect();
    if segments.contains(&"..") {
        checks.fail(field, "must not contain '..'");
    } else if segments.contains(&".") {
        checks.fail(field, "must not contain '.' segments");
    } else if segments.iter().any(|s| s.is_empty()) {
        checks.fail(field, "must name a file, with no empty segments ('//') or trailing separator");
    }
}

/// Checks `path` against the type: required for file-like types, clean when given.
pub fn check_path_for(checks: &mut Checks, resource_type: ResourceType, path: Option<&str>) {
    match path {
        Some(path) => check_path(checks, "path", path),
        None if resource_type.needs_path() => {
            checks.fail("path", format!("is required for resources of type {}", resource_type.as_str()));
        }
        None => {}
    }
}

pub use crate::http::validate::clean_description;

/// The file name a download is offered as: the last segment of the resource's path, else its
/// name.
pub fn download_file_name(path: Option<&str>, name: &str) -> String {
    path.and_then(|p| p.rsplit(['/', '\\']).next()).filter(|segment| !segment.is_empty()).unwrap_or(name).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_ok(path: &str) -> bool {
        let mut checks = Checks::new();
        check_path(&mut checks, "path", path);
        checks.finish().is_ok()
    }

    fn category_ok(category: &str) -> bool {
        let mut checks = Checks::new();
        check_category(&mut checks, "category", category);
        checks.finish().is_ok()
    }

    #[test]
    fn paths_are_clean_and_name_a_file() {
        for good in ["a.csv", "data/a.csv", "/opt/data/a.csv", "C:\\data\\a.csv", "scripts/run.py", "a..b.txt"] {
            assert!(path_ok(good), "{good}");
        }
        for bad in ["", "../a", "data/../a", "..\\a", "./a", "data//a", "data/", "/", " a", "a\u{0}b"] {
            assert!(!path_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn categories_start_at_the_organization() {
        for good in ["/organization/", "/organization/plant-1", "/organization/plant-1/line-3/"] {
            assert!(category_ok(good), "{good}");
        }
        for bad in ["", "/org/", "organization/", "/organization", "/organization/../x", "/organization//x"] {
            assert!(!category_ok(bad), "{bad}");
        }
    }

    #[test]
    fn size_in_bytes_takes_numbers_and_digit_strings() {
        let number: NewVersion = serde_json::from_str(r#"{"sizeInBytes": 12}"#).unwrap();
        let text: NewVersion = serde_json::from_str(r#"{"description": "x", "sizeInBytes": "12"}"#).unwrap();
        assert_eq!((number.size_in_bytes, text.size_in_bytes), (12, 12));
        assert!(serde_json::from_str::<NewVersion>(r#"{"sizeInBytes": "twelve"}"#).is_err());
        assert!(serde_json::from_str::<NewVersion>(r#"{"sizeInBytes": -1}"#).is_err());
    }

    #[test]
    fn a_version_read_back_with_its_state_changed_is_a_valid_update() {
        let read = serde_json::json!({
            "id": Uuid::now_v7(), "resourceId": Uuid::now_v7(), "organizationId": Uuid::now_v7(), "version": 1,
            "description": "d", "state": "Completed", "sizeInBytes": 5, "uploadedBytes": 5, "sha256": null,
            "md5": null, "contentType": null, "createdAt": "2020-09-29T12:57:10.481896Z",
            "updatedAt": "2020-09-29T12:57:10.481896Z", "uploadedAt": null, "completedAt": null
        });
        let update: VersionUpdate = serde_json::from_value(read).expect("accepted");
        assert_eq!(update.state, VersionState::Completed);
        assert!(serde_json::from_value::<VersionUpdate>(serde_json::json!({"state": "Draft", "owner": 1})).is_err());
    }

    #[test]
    fn download_names_come_from_the_path() {
        assert_eq!(download_file_name(Some("data/a.csv"), "x"), "a.csv");
        assert_eq!(download_file_name(Some("C:\\d\\b.py"), "x"), "b.py");
        assert_eq!(download_file_name(None, "Settings"), "Settings");
    }
}

//! A flow's content, the JSON document drafts hold and versions freeze:
//! `{"modules":[{"id","type","name","config"}], "connections":[{"from","to"}],
//!   "resources":[{"resourceId","versionId"}], "settings":{}}`.
//!
//! `check_shape` validates it without the database (unique module ids, connections between
//! existing modules, well-formed resource references, size) and answers the normalized document;
//! `validate` adds the database check that every referenced resource version exists in the
//! organization. Every problem is a `FieldError` whose field points at the element, e.g.
//! `content.modules[2].id`.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::resource_refs::{self, ResourceRef};
use crate::{
    error::{ApiError, ApiResult, FieldError},
    http::validate::Checks,
};

/// Largest content document, as compact JSON.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// Longest module id, type and name.
pub const MODULE_ID_MAX: usize = 200;
pub const MODULE_TYPE_MAX: usize = 200;
pub const MODULE_NAME_MAX: usize = 200;
/// Most modules, connections and resource references one flow may hold.
pub const MAX_MODULES: usize = 5000;
pub const MAX_CONNECTIONS: usize = 20000;
pub const MAX_RESOURCES: usize = 500;

const TOP_LEVEL: [&str; 4] = ["modules", "connections", "resources", "settings"];
const MODULE_FIELDS: [&str; 4] = ["id", "type", "name", "config"];
const CONNECTION_FIELDS: [&str; 2] = ["from", "to"];
const RESOURCE_FIELDS: [&str; 2] = ["resourceId", "versionId"];

/// The content of a new, empty draft.
pub fn empty() -> Value {
    serde_json::json!({"modules": [], "connections": [], "resources": [], "settings": {}})
}

/// The content with its resource references and hash, once its shape is known to be valid.
#[derive(Debug, Clone)]
pub struct CheckedContent {
    /// Normalized: the four top-level properties are always present.
    pub content: Value,
    pub resources: Vec<ResourceRef>,
    pub hash: String,
}

/// Validates `content` (at `field`, usually `content`), including that every referenced resource
/// version exists in the organization (in any state). 400 `VALIDATION_FAILED` naming each problem.
pub async fn validate(
    conn: &mut PgConnection,
    organization_id: Uuid,
    field: &str,
    content: Value,
) -> ApiResult<CheckedContent> {
    let (checked, mut problems) = check_shape(field, content);
    let Some(checked) = checked else { return Err(ApiError::validation(problems)) };
    if !checked.resources.is_empty() {
        let found = resource_refs::lookup(conn, organization_id, &checked.resources).await?;
        for (index, wanted) in checked.resources.iter().enumerate() {
            let exists = found.iter().any(|f| f.version_id == wanted.version_id && f.resource_id == wanted.resource_id);
            if !exists {
                problems.push(FieldError::new(
                    format!("{field}.resources[{index}].versionId"),
                    "no such resource version in this organization",
                ));
            }
        }
    }
    if problems.is_empty() { Ok(checked) } else { Err(ApiError::validation(problems)) }
}

/// Checks the document's shape. Answers the normalized content when it is well-formed enough to
/// hash (problems may remain only when `None` is answered, or none at all).
pub fn check_shape(field: &str, content: Value) -> (Option<CheckedContent>, Vec<FieldError>) {
    let mut checks = Checks::new();
    let Value::Object(mut top) = content else {
        checks.fail(field, "must be a JSON object with modules, connections, resources and settings");
        return (None, into_problems(checks));
    };
    for key in top.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            checks.fail(
                &format!("{field}.{key}"),
                "unknown property; expected modules, connections, resources, settings",
            );
        }
    }
    for (key, default) in [
        ("modules", Value::Array(Vec::new())),
        ("connections", Value::Array(Vec::new())),
        ("resources", Value::Array(Vec::new())),
        ("settings", Value::Object(Map::new())),
    ] {
        match top.get(key) {
            None | Some(Value::Null) => {
                top.insert(key.to_owned(), default);
            }
            Some(_) => {}
        }
    }
    let module_ids = check_modules(&mut checks, field, &top["modules"]);
    check_connections(&mut checks, field, &top["connections"], &module_ids);
    let resources = check_resources(&mut checks, field, &top["resources"]);
    if !top["settings"].is_object() {
        checks.fail(&format!("{field}.settings"), "must be an object");
    }
    let content = Value::Object(top);
    let canonical = canonical_json(&content);
    if canonical.len() > MAX_CONTENT_BYTES {
        checks.fail(field, format!("must be at most {MAX_CONTENT_BYTES} bytes as JSON"));
    }
    // PostgreSQL cannot store it (and no flow needs it).
    if crate::http::validate::json_has_nul(&content) {
        checks.fail(field, "must not contain NUL characters (\\u0000)");
    }
    let problems = into_problems(checks);
    if !problems.is_empty() {
        return (None, problems);
    }
    let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
    (Some(CheckedContent { content, resources, hash }), problems)
}

fn into_problems(checks: Checks) -> Vec<FieldError> {
    match checks.finish() {
        Ok(()) => Vec::new(),
        Err(ApiError::Validation { details, .. }) => details,
        Err(other) => vec![FieldError::new("content", other.to_string())],
    }
}

fn unknown_fields(checks: &mut Checks, at: &str, item: &Map<String, Value>, allowed: &[&str]) {
    for key in item.keys() {
        if !allowed.contains(&key.as_str()) {
            checks.fail(&format!("{at}.{key}"), format!("unknown property; expected {}", allowed.join(", ")));
        }
    }
}

/// A required one-line string property; answers it when valid.
fn text<'a>(checks: &mut Checks, at: &str, value: Option<&'a Value>, max: usize) -> Option<&'a str> {
    match value {
        None | Some(Value::Null) => {
            checks.fail(at, "required");
            None
        }
        Some(Value::String(text)) if text.trim().is_empty() => {
            checks.fail(at, "must not be empty");
            None
        }
        Some(Value::String(text)) if text.chars().count() > max => {
            checks.fail(at, format!("must be at most {max} characters"));
            None
        }
        Some(Value::String(text)) if text.chars().any(char::is_control) => {
            checks.fail(at, "must not contain control characters");
            None
        }
        Some(Value::String(text)) if text.trim() != text => {
            checks.fail(at, "must not start or end with spaces");
            None
        }
        Some(Value::String(text)) => Some(text),
        Some(_) => {
            checks.fail(at, "must be a string");
            None
        }
    }
}

/// Checks the modules; answers the set of their ids.
fn check_modules<'a>(checks: &mut Checks, field: &str, modules: &'a Value) -> HashSet<&'a str> {
    let mut ids = HashSet::new();
    let Value::Array(modules) = modules else {
        checks.fail(&format!("{field}.modules"), "must be an array");
        return ids;
    };
    if modules.len() > MAX_MODULES {
        checks.fail(&format!("{field}.modules"), format!("at most {MAX_MODULES} modules"));
        return ids;
    }
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (index, module) in modules.iter().enumerate() {
        let at = format!("{field}.modules[{index}]");
        let Value::Object(module) = module else {
            checks.fail(&at, "must be an object with id, type, name and config");
            continue;
        };
        unknown_fields(checks, &at, module, &MODULE_FIELDS);
        if let Some(id) = text(checks, &format!("{at}.id"), module.get("id"), MODULE_ID_MAX) {
            if let Some(first) = first_seen.get(id) {
                checks.fail(&format!("{at}.id"), format!("duplicate id '{id}' (also {field}.modules[{first}])"));
            } else {
                first_seen.insert(id, index);
                ids.insert(id);
            }
        }
        text(checks, &format!("{at}.type"), module.get("type"), MODULE_TYPE_MAX);
        match module.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(name)) if name.chars().count() > MODULE_NAME_MAX => {
                checks.fail(&format!("{at}.name"), format!("must be at most {MODULE_NAME_MAX} characters"));
            }
            Some(Value::String(name)) if name.chars().any(char::is_control) => {
                checks.fail(&format!("{at}.name"), "must not contain control characters");
            }
            Some(Value::String(_)) => {}
            Some(_) => checks.fail(&format!("{at}.name"), "must be a string"),
        }
        match module.get("config") {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(_) => checks.fail(&format!("{at}.config"), "must be an object"),
        }
    }
    ids
}

fn check_connections(checks: &mut Checks, field: &str, connections: &Value, module_ids: &HashSet<&str>) {
    let Value::Array(connections) = connections else {
        checks.fail(&format!("{field}.connections"), "must be an array");
        return;
    };
    if connections.len() > MAX_CONNECTIONS {
        checks.fail(&format!("{field}.connections"), format!("at most {MAX_CONNECTIONS} connections"));
        return;
    }
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, connection) in connections.iter().enumerate() {
        let at = format!("{field}.connections[{index}]");
        let Value::Object(connection) = connection else {
            checks.fail(&at, "must be an object with from and to");
            continue;
        };
        unknown_fields(checks, &at, connection, &CONNECTION_FIELDS);
        let mut end = |name: &str| {
            let at = format!("{at}.{name}");
            let id = text(checks, &at, connection.get(name), MODULE_ID_MAX)?;
            if module_ids.contains(id) {
                Some(id)
            } else {
                checks.fail(&at, format!("no module '{id}'"));
                None
            }
        };
        let from = end("from");
        let to = end("to");
        let (Some(from), Some(to)) = (from, to) else { continue };
        if from == to {
            checks.fail(&format!("{at}.to"), format!("a module cannot connect to itself ('{to}')"));
        } else if let Some(first) = seen.get(&(from, to)) {
            checks.fail(&at, format!("duplicate connection '{from}' -> '{to}' (also {field}.connections[{first}])"));
        } else {
            seen.insert((from, to), index);
        }
    }
}

fn uuid_field(checks: &mut Checks, at: &str, value: Option<&Value>) -> Option<Uuid> {
    match value {
        None | Some(Value::Null) => {
            checks.fail(at, "required");
            None
        }
        Some(Value::String(text)) => match Uuid::parse_str(text) {
            Ok(id) => Some(id),
            Err(_) => {
                checks.fail(at, "must be a UUID");
                None
            }
        },
        Some(_) => {
            checks.fail(at, "must be a UUID string");
            None
        }
    }
}

fn check_resources(checks: &mut Checks, field: &str, resources: &Value) -> Vec<ResourceRef> {
    let mut refs = Vec::new();
    let Value::Array(resources) = resources else {
        checks.fail(&format!("{field}.resources"), "must be an array");
        return refs;
    };
    if resources.len() > MAX_RESOURCES {
        checks.fail(&format!("{field}.resources"), format!("at most {MAX_RESOURCES} resources"));
        return refs;
    }
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    for (index, resource) in resources.iter().enumerate() {
        let at = format!("{field}.resources[{index}]");
        let Value::Object(resource) = resource else {
            checks.fail(&at, "must be an object with resourceId and versionId");
            continue;
        };
        unknown_fields(checks, &at, resource, &RESOURCE_FIELDS);
        let resource_id = uuid_field(checks, &format!("{at}.resourceId"), resource.get("resourceId"));
        let version_id = uuid_field(checks, &format!("{at}.versionId"), resource.get("versionId"));
        let (Some(resource_id), Some(version_id)) = (resource_id, version_id) else { continue };
        if let Some(first) = seen.get(&resource_id) {
            checks.fail(
                &format!("{at}.resourceId"),
                format!("resource {resource_id} is already referenced at {field}.resources[{first}]; a flow uses one version of a resource"),
            );
            continue;
        }
        seen.insert(resource_id, index);
        refs.push(ResourceRef { resource_id, version_id });
    }
    refs
}

/// The canonical JSON of a value: object keys sorted (by their UTF-8 bytes), no whitespace.
/// Its sha256 is a version's content hash, the same whatever order the client wrote.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The hex sha256 of the canonical JSON of `content`.
pub fn content_hash(content: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(content).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(content: Value) -> Vec<(String, String)> {
        let (_, problems) = check_shape("content", content);
        problems.into_iter().map(|p| (p.field, p.message)).collect()
    }

    #[test]
    fn a_good_flow_is_normalized_and_hashed() {
        let (checked, problems) = check_shape(
            "content",
            json!({"modules": [{"id": "m1", "type": "mqtt", "name": "In", "config": {}}, {"id": "m2", "type": "log"}],
                   "connections": [{"from": "m1", "to": "m2"}]}),
        );
        assert!(problems.is_empty(), "{problems:?}");
        let checked = checked.unwrap();
        assert_eq!(checked.content["resources"], json!([]));
        assert_eq!(checked.content["settings"], json!({}));
        assert_eq!(checked.hash.len(), 64);
        assert_eq!(check_shape("content", empty()).0.unwrap().content, empty());
    }

    #[test]
    fn problems_point_at_the_element() {
        let problems = fields(json!({
            "modules": [{"id": "m1", "type": "a"}, {"id": "m2", "type": "b"}, {"id": "m1", "type": "c"}, {"type": "d"}, {"id": "m5"}],
            "connections": [{"from": "m1", "to": "m9"}, {"from": "m2", "to": "m2"}, {"from": "m1", "to": "m2"}, {"from": "m1", "to": "m2"}],
            "resources": [{"resourceId": "nope", "versionId": Uuid::nil()}],
            "extra": 1
        }));
        let has = |field: &str, part: &str| problems.iter().any(|(f, m)| f == field && m.contains(part));
        assert!(has("content.modules[2].id", "duplicate id 'm1'"), "{problems:?}");
        assert!(has("content.modules[3].id", "required"), "{problems:?}");
        assert!(has("content.modules[4].type", "required"), "{problems:?}");
        assert!(has("content.connections[0].to", "no module 'm9'"), "{problems:?}");
        assert!(has("content.connections[1].to", "itself"), "{problems:?}");
        assert!(has("content.connections[3]", "duplicate connection"), "{problems:?}");
        assert!(has("content.resources[0].resourceId", "UUID"), "{problems:?}");
        assert!(has("content.extra", "unknown property"), "{problems:?}");
        assert_eq!(fields(json!([1]))[0].0, "content");
    }

    #[test]
    fn the_hash_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "é"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
        assert_eq!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn size_is_limited() {
        let big = "x".repeat(MAX_CONTENT_BYTES);
        let problems = fields(json!({"settings": {"blob": big}}));
        assert!(problems.iter().any(|(f, m)| f == "content" && m.contains("bytes")), "{problems:?}");
    }
}

//! The matrix's reading of the OpenAPI document: which operations members can call, with which
//! credentials and least role, and a minimal valid body for each from its schema.

use reqwest::{
    Method, RequestBuilder,
    header::CONTENT_TYPE,
    multipart::{Form, Part},
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::Caller;

/// The roles, least first.
pub const ROLES: [&str; 5] = ["Viewer", "Operator", "Editor", "Admin", "Owner"];

/// What binary bodies (uploads, parts) carry.
pub const PAYLOAD: &[u8] = b"matrix";

/// One operation of the document that members can call.
pub struct Operation {
    pub method: Method,
    pub path: String,
    /// Index into `ROLES` of `x-required-role`.
    pub role: usize,
    pub bearer: bool,
    pub api_key: bool,
    /// Also takes an edge node's own credentials (HTTP Basic).
    pub basic: bool,
    /// The request body's media type and its media object (`schema`, maybe `example`).
    pub body: Option<(String, Value)>,
}

impl Operation {
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    pub fn has_path_parameters(&self) -> bool {
        self.path.split('/').any(|segment| parameter(segment).is_some())
    }

    pub fn mutating(&self) -> bool {
        [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(&self.method)
    }
}

pub fn parameter(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

/// Every operation a member (bearer token or API key) can call, in document order.
pub fn operations(document: &Value) -> Vec<Operation> {
    let methods = ["get", "put", "post", "delete", "patch"];
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if !methods.contains(&method.as_str()) {
                continue;
            }
            let security = operation.get("security").unwrap_or(&document["security"]);
            let schemes: Vec<&str> = security
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .flat_map(|requirement| requirement.keys().map(String::as_str))
                .collect();
            let [bearer, api_key, basic] = ["bearer", "apiKey", "basic"].map(|scheme| schemes.contains(&scheme));
            if !bearer && !api_key {
                continue;
            }
            let role = operation["x-required-role"].as_str().and_then(|r| ROLES.iter().position(|x| *x == r));
            let name = format!("{} {path}", method.to_uppercase());
            let content = operation["requestBody"]["content"].as_object();
            let body = content
                .and_then(|c| c.iter().find(|(media_type, _)| media_type.contains("json")).or_else(|| c.iter().next()))
                .map(|(media_type, media)| (media_type.clone(), media.clone()));
            found.push(Operation {
                method: method.to_uppercase().parse().expect("method"),
                path: path.clone(),
                role: role.unwrap_or_else(|| panic!("{name} names no x-required-role")),
                bearer,
                api_key,
                basic,
                body,
            });
        }
    }
    found
}

/// Follows `$ref`s into the document's components.
fn resolve<'a>(schema: &'a Value, document: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => resolve(&document["components"]["schemas"][name], document),
        None => schema,
    }
}

/// A schema's type: `type`, or its first non-null type, or `object` when it has properties.
fn type_of(schema: &Value) -> Option<&str> {
    match &schema["type"] {
        Value::String(t) => Some(t),
        Value::Array(types) => types.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => schema.get("properties").map(|_| "object"),
    }
}

/// A minimal valid instance of `schema`: its example when it has one; else an object's required
/// properties, the first enum value, the first alternative that is not null, the least number,
/// length or item count allowed, a new uuid, a time tomorrow. Properties about the caller are the
/// caller's: `organizationId` its organization, a password its own (so a change keeps it).
fn instance(schema: &Value, document: &Value, caller: &Caller) -> Value {
    let schema = resolve(schema, document);
    if let Some(example) = schema.get("example") {
        return example.clone();
    }
    if let Some(first) = schema["enum"].as_array().and_then(|values| values.first()) {
        return first.clone();
    }
    if let Some(alternatives) = schema["oneOf"].as_array().or_else(|| schema["anyOf"].as_array()) {
        let chosen = alternatives.iter().find(|a| a["type"] != "null");
        return chosen.map_or(Value::Null, |a| instance(a, document, caller));
    }
    let least = |key: &str, default: u64| schema[key].as_u64().unwrap_or(default);
    match type_of(schema) {
        Some("object") => {
            let required = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str);
            let properties: Map<String, Value> = required
                .map(|name| {
                    let value = match &caller.password {
                        _ if name == "organizationId" => json!(caller.organization_id),
                        Some(password) if name.to_lowercase().ends_with("password") => json!(password),
                        _ => instance(&schema["properties"][name], document, caller),
                    };
                    (name.to_owned(), value)
                })
                .collect();
            Value::Object(properties)
        }
        Some("array") => {
            let items = instance(&schema["items"], document, caller);
            Value::Array(vec![items; usize::try_from(least("minItems", 0)).expect("size")])
        }
        Some("integer" | "number") => json!(least("minimum", 1)),
        Some("boolean") => json!(true),
        Some("string") => match schema["format"].as_str() {
            Some("uuid") => json!(Uuid::now_v7()),
            Some("date-time") => json!(chrono::Utc::now() + chrono::Duration::days(1)),
            _ => {
                let text = String::from_utf8_lossy(PAYLOAD);
                json!(text.repeat(usize::try_from(least("minLength", 1)).expect("length").div_ceil(text.len())))
            }
        },
        _ => Value::Null,
    }
}

/// Adds a body of this media type made from the media object (its example, else an instance
/// of its schema): JSON as is, a multipart form with a field per property, else raw bytes.
pub fn with_body(
    request: RequestBuilder,
    media_type: &str,
    media: &Value,
    document: &Value,
    caller: &Caller,
) -> RequestBuilder {
    let value = media.get("example").cloned().unwrap_or_else(|| instance(&media["schema"], document, caller));
    if media_type.contains("json") {
        request.header(CONTENT_TYPE, media_type).body(value.to_string())
    } else if media_type == "multipart/form-data" {
        let fields = value.as_object().cloned().unwrap_or_default();
        let form = fields.into_iter().fold(Form::new(), |form, (name, value)| {
            let bytes = value.as_str().map_or_else(|| value.to_string().into_bytes(), |s| s.as_bytes().to_vec());
            form.part(name.clone(), Part::bytes(bytes).file_name(name))
        });
        request.multipart(form)
    } else {
        request.header(CONTENT_TYPE, media_type).body(PAYLOAD)
    }
}

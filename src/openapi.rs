//! The OpenAPI document, generated from the handlers' annotations. `openapi/openapi.json` is this
//! document, checked in; `cargo run -- openapi > openapi/openapi.json` refreshes it.

use serde_json::json;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder, Schema,
        path::{Operation, ParameterIn},
        schema::{SchemaType, Type},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use crate::resources::model::ResourceType;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "EdgeFlow Control Center API",
        description = "The control plane for fleets of edge nodes running data flows. \
            Errors share one body: `{error, code, status, requestId, details}`. \
            Lists take `offset`, `limit`, `includeCount`, `orderBy`, `orderDirection` and \
            `filters[i].propertyName/propertyValue/filterType`. \
            Each operation's `x-required-role` names the least organization role that may call it \
            (Viewer < Operator < Editor < Admin < Owner).",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("apiKey" = [])),
    tags(
        (name = "authentication", description = "Signing in, tokens and sessions"),
        (name = "users", description = "The signed-in user"),
        (name = "organizations", description = "Organizations, members and identity providers"),
        (name = "apikeys", description = "API keys for scripts and integrations"),
        (name = "edgenodes", description = "Edge nodes: registration, live status, keys, remote calls, shadow"),
        (name = "registrationkeys", description = "Keys that let edge nodes enrol themselves"),
        (name = "jobs", description = "The durable per-node job queue: start, stop, history, cancel"),
        (name = "deployments", description = "Rolling out flow versions to nodes: strategies, thresholds, rollback"),
        (name = "tunnel", description = "The WebSocket edge nodes connect to (protocol: openapi/asyncapi.yaml)"),
        (name = "flows", description = "Flow definitions, their editable drafts and immutable versions (Crosser: flows)"),
        (name = "resources", description = "Versioned files and connection settings used by flows: drafts, uploads (streaming and resumable), downloads"),
        (name = "events", description = "The audit and operations log: list, export, live stream"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme("apiKey", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

/// The whole document, as served at `/api/openapi.json` and checked in.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut api) = crate::app::api_routes().split_for_parts();
    complete(&mut api);
    api
}

/// What the handlers' annotations leave out: the answers shared code gives, and the rules
/// between fields of request bodies.
pub fn complete(api: &mut utoipa::openapi::OpenApi) {
    add_common_responses(api);
    parameters_are_never_null(api);
    add_body_rules(api);
}

/// A parameter is sent or not; it is never `null` (an `Option` parameter only means "not
/// required"), so `null` is dropped from the types of every parameter's schema.
fn parameters_are_never_null(api: &mut utoipa::openapi::OpenApi) {
    for item in api.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter
                    && let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema
                    && let SchemaType::Array(types) = &schema.schema_type
                {
                    let types: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
                    schema.schema_type = match types.as_slice() {
                        [one] => SchemaType::Type(one.clone()),
                        _ => SchemaType::Array(types),
                    };
                }
            }
        }
    }
}

/// Rules between fields of a request body, which the derive cannot state: each is added to its
/// component's schema (as `allOf`) and is enforced where its comment says.
fn body_rules() -> Vec<(&'static str, serde_json::Value)> {
    let given = |field: &str, kind: &str| json!({"required": [field], "properties": {field: {"type": kind}}});
    let either_targets = json!({"anyOf": [given("nodeIds", "array"), given("labels", "object")]});
    let file_like: Vec<&str> = ResourceType::ALL.iter().filter(|t| t.needs_path()).map(|t| t.as_str()).collect();
    vec![
        // deployments::routes::create_and_answer: exactly one of a version and a draft ...
        (
            "NewDeployment",
            json!({"oneOf": [
                {"required": ["flowId"], "properties": {"flowId": {"type": "string"}, "draftId": {"type": "null"}}},
                {"required": ["draftId"], "properties": {"draftId": {"type": "string"}, "flowId": {"type": "null"}}},
            ]}),
        ),
        // ... to nodes by id and/or labels, in batches only when rolling.
        ("NewDeployment", either_targets.clone()),
        (
            "NewDeployment",
            json!({"anyOf": [
                {"required": ["strategy"], "properties": {"strategy": {"const": "rolling"}}},
                {"properties": {"batchSize": {"type": "null"}}},
            ]}),
        ),
        // jobs::routes::bulk_command
        ("BulkCommand", either_targets),
        // flows::drafts::create_draft: a copy of a version, or content, not both.
        (
            "NewFlowDraft",
            json!({"not": {"required": ["content", "fromFlowId"],
                "properties": {"content": {"type": "object"}, "fromFlowId": {"type": "string"}}}}),
        ),
        // resources::model::check_path_for: file-like resources need a path.
        (
            "NewResource",
            json!({"anyOf": [{"properties": {"type": {"not": {"enum": file_like}}}}, given("path", "string")]}),
        ),
        (
            "ResourcePatch",
            json!({"not": {"required": ["type", "path"],
                "properties": {"type": {"enum": file_like}, "path": {"type": "null"}}}}),
        ),
    ]
}

fn add_body_rules(api: &mut utoipa::openapi::OpenApi) {
    let Some(components) = api.components.as_mut() else { return };
    for (name, rule) in body_rules() {
        // utoipa's model has no `allOf` beside `properties`; extensions serialize as named.
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
            let extensions = object.extensions.get_or_insert_with(Default::default);
            match extensions.entry("allOf".to_owned()).or_insert_with(|| json!([])) {
                serde_json::Value::Array(rules) => rules.push(rule),
                other => *other = json!([rule]),
            }
        }
    }
}

/// Documents the answers every operation of a kind can give, whoever wrote its handler: they
/// come from shared extractors and middleware, not from the handler, so new endpoints get them
/// too. An operation's own description of a status, where it has one, is kept.
///
/// - 400: a malformed path parameter (`http::extract::Path`), query or JSON body;
/// - 413, 415: a JSON body over the size limit, or sent without `Content-Type: application/json`;
/// - 401: missing or wrong credentials, wherever credentials are needed;
/// - 429: the per-user / per-API-key rate limit (`AuthContext`), wherever those are accepted;
/// - 503: the database is unavailable, or the request ran past the request timeout.
fn add_common_responses(api: &mut utoipa::openapi::OpenApi) {
    let global_security = api.security.clone().unwrap_or_default();
    for item in api.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let security = operation.security.clone().unwrap_or_else(|| global_security.clone());
            let schemes = security_schemes(&security);
            let parameters = parameter_locations(operation);
            let json_body = has_json_body(operation);
            if json_body || parameters.iter().any(|at| matches!(at, ParameterIn::Path | ParameterIn::Query)) {
                add_error(operation, 400, "Malformed request: a path parameter, the query or the body");
            }
            if json_body {
                add_error(operation, 413, "The body is over the size limit");
                add_error(operation, 415, "The body is not sent as `Content-Type: application/json`");
            }
            if schemes.iter().any(|scheme| !scheme.is_empty()) {
                add_error(operation, 401, "Missing or wrong credentials");
            }
            if schemes.iter().flatten().any(|scheme| scheme == "bearer" || scheme == "apiKey") {
                add_error(operation, 429, "Rate limited; see `Retry-After`");
            }
            add_error(operation, 503, "The database is unavailable or the request took too long; retry");
        }
    }
}

/// The schemes of each alternative of a security requirement list (an empty one: no credentials).
fn security_schemes(security: &[SecurityRequirement]) -> Vec<Vec<String>> {
    security
        .iter()
        .map(|requirement| match serde_json::to_value(requirement) {
            Ok(serde_json::Value::Object(schemes)) => schemes.keys().cloned().collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn parameter_locations(operation: &Operation) -> Vec<ParameterIn> {
    operation
        .parameters
        .iter()
        .flatten()
        .filter_map(|parameter| match parameter {
            RefOr::T(parameter) => Some(parameter.parameter_in.clone()),
            RefOr::Ref(_) => None,
        })
        .collect()
}

fn has_json_body(operation: &Operation) -> bool {
    match &operation.request_body {
        Some(RefOr::T(body)) => {
            body.content.keys().any(|media| media == "application/json" || media.ends_with("+json"))
        }
        _ => false,
    }
}

fn add_error(operation: &mut Operation, status: u16, description: &str) {
    operation.responses.responses.entry(status.to_string()).or_insert_with(|| {
        let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        RefOr::T(ResponseBuilder::new().description(description).content("application/json", body).build())
    });
}

pub fn to_pretty_json() -> anyhow::Result<String> {
    Ok(document().to_pretty_json()? + "\n")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn document_json() -> serde_json::Value {
        serde_json::to_value(document()).expect("json")
    }

    #[test]
    fn operation_ids_are_unique() {
        // Links and clients name operations by id: two with one id point at the wrong one.
        let document = document_json();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                let id = operation["operationId"].as_str().expect("operationId").to_owned();
                let name = format!("{} {path}", method.to_uppercase());
                if let Some(other) = seen.insert(id.clone(), name.clone()) {
                    panic!("{name} and {other} share the operationId {id}");
                }
            }
        }
    }

    #[test]
    fn body_rules_name_existing_components() {
        let document = document_json();
        for (name, _) in body_rules() {
            assert!(document["components"]["schemas"][name]["allOf"].is_array(), "{name} has no rules");
        }
    }

    #[test]
    fn shared_answers_are_documented_and_parameters_never_null() {
        let document = document_json();
        let operation = &document["paths"]["/api/edgenodes/{id}"]["patch"];
        for status in ["400", "401", "413", "415", "429", "503"] {
            assert_eq!(
                operation["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{status}"
            );
        }
        // Public: no 401 or 429 (no credentials); a JSON body: 413, 415.
        let register = &document["paths"]["/api/authentication/register"]["post"]["responses"];
        assert!(register.get("401").is_none() && register.get("415").is_some(), "{register}");
        let header = &document["paths"]["/api/flowdefinitions/{id}/drafts/{draftId}"]["put"]["parameters"]
            .as_array()
            .and_then(|parameters| parameters.iter().find(|p| p["name"] == "If-Match").cloned())
            .expect("If-Match");
        assert_eq!(header["schema"]["type"], "string", "{header}");
    }
}

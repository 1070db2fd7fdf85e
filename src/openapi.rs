//! The OpenAPI document, generated from the handlers' annotations. `openapi/openapi.json` is this
//! document, checked in; `cargo run -- openapi > openapi/openapi.json` refreshes it.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

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
    let (_, api) = crate::app::api_routes().split_for_parts();
    api
}

pub fn to_pretty_json() -> anyhow::Result<String> {
    Ok(document().to_pretty_json()? + "\n")
}

//! The tenant-isolation and role matrix, generated from the OpenAPI document. Every operation
//! members can call is tried on real objects of organization A:
//! - when its path names objects: by organization B's Owner, B's Owner API key and (where nodes
//!   may call) B's edge node: 404 with the error shape, never 403; A's Owner reads every such GET
//!   before and after, and finds it, unchanged (so the fixtures are real and B changed nothing);
//! - by each role of A below its `x-required-role`, as a member and as an API key: 403; and by
//!   that role itself: not refused.
//!
//! Paths are filled from `PATH_FIXTURES` and bodies made from the operation's schema, so a new
//! endpoint is covered as soon as it is in the document; one whose path names a parameter the
//! table does not know fails the test, naming the operation and the parameter.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use futures_util::{StreamExt, stream};
use reqwest::{Method, RequestBuilder, StatusCode, header::CONTENT_TYPE};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    helpers::*,
    wire::{Node, create_node},
};

mod document;

use document::{Operation, PAYLOAD, ROLES, operations, parameter, with_body};

/// Requests in flight at once (the test server has a small database pool).
const CONCURRENCY: usize = 4;

/// Which object of organization A fills a path parameter: (path pattern, parameter, object).
/// The longest pattern that begins the operation's path and names the parameter wins.
const PATH_FIXTURES: &[(&str, &str, &str)] = &[
    ("/api/apikeys/{id}", "id", "apiKey"),
    ("/api/deployments/{id}", "id", "deployment"),
    ("/api/edgenodes/{id}", "id", "node"),
    ("/api/edgenodes/{id}/flows/{flowDefinitionId}", "flowDefinitionId", "flowDefinition"),
    ("/api/edgenodes/{id}/jobs/{jobId}", "jobId", "job"),
    ("/api/events/{id}", "id", "event"),
    ("/api/flowdefinitions/{flowDefinitionId}", "flowDefinitionId", "flowDefinition"),
    ("/api/flowdefinitions/{flowDefinitionId}/flow/{flowId}", "flowId", "flow"),
    ("/api/flowdefinitions/{id}", "id", "flowDefinition"),
    ("/api/flowdefinitions/{id}/drafts/{draftId}", "draftId", "draft"),
    ("/api/flowdefinitions/{id}/flows/{flowId}", "flowId", "flow"),
    ("/api/organizations/{organizationId}", "organizationId", "organization"),
    (
        "/api/organizations/{organizationId}/identityproviders/{identityProviderId}",
        "identityProviderId",
        "identityProvider",
    ),
    // Another user than every caller: removing yourself is allowed to any role, so the member
    // fixture must not be the caller for the role rule to be what is tested.
    ("/api/organizations/{organizationId}/members/{userId}", "userId", "member"),
    ("/api/registrationkeys/{id}", "id", "registrationKey"),
    ("/api/resources/{resourceId}", "resourceId", "resource"),
    // The draft takes uploads; downloads need content, so they name the Completed version.
    ("/api/resources/{resourceId}/versions/{id}", "id", "draftVersion"),
    ("/api/resources/{resourceId}/versions/{id}/content", "id", "completedVersion"),
    ("/api/resources/{resourceId}/versions/{id}/uploads/{uploadId}", "uploadId", "upload"),
    ("/api/resources/{resourceId}/versions/{id}/uploads/{uploadId}/parts/{partNumber}", "partNumber", "part"),
];

/// Organization A's objects by the names `PATH_FIXTURES` uses.
struct Fixtures(HashMap<&'static str, String>);

impl Fixtures {
    /// The fixture for a path parameter of `path`.
    fn for_parameter(&self, path: &str, name: &str) -> Option<&str> {
        let named = format!("{{{name}}}");
        PATH_FIXTURES
            .iter()
            .filter(|(pattern, parameter, _)| {
                *parameter == name
                    && pattern.split('/').any(|s| s == named)
                    && (path == *pattern || path.starts_with(&format!("{pattern}/")))
            })
            .max_by_key(|(pattern, ..)| pattern.len())
            .map(|(_, _, object)| {
                self.0.get(object).unwrap_or_else(|| panic!("fixture {object} was not set up")).as_str()
            })
    }

    /// The operation's path with every parameter filled, or which parameter has no fixture.
    fn fill(&self, operation: &Operation) -> Result<String, String> {
        let segments: Result<Vec<&str>, String> = operation
            .path
            .split('/')
            .map(|segment| match parameter(segment) {
                None => Ok(segment),
                Some(name) => self.for_parameter(&operation.path, name).ok_or_else(|| {
                    format!("{}: no fixture for path parameter `{name}`; add it to PATH_FIXTURES", operation.name())
                }),
            })
            .collect();
        segments.map(|s| s.join("/"))
    }
}

#[derive(Clone)]
enum Credential {
    Bearer(String),
    ApiKey(String),
    /// An edge node's id and access key.
    Basic(Uuid, String),
}

impl Credential {
    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Self::Bearer(token) => request.bearer_auth(token),
            Self::ApiKey(key) => request.header("X-API-Key", key),
            Self::Basic(node_id, key) => request.basic_auth(node_id, Some(key)),
        }
    }
}

/// Who calls: a credential acting in an organization, and how the report names it.
#[derive(Clone)]
struct Caller {
    label: String,
    credential: Credential,
    organization_id: Uuid,
    /// A member's password.
    password: Option<String>,
}

impl Caller {
    fn member(session: &Session, label: &str) -> Self {
        Self {
            label: format!("{label} (bearer)"),
            credential: Credential::Bearer(session.token.clone()),
            organization_id: session.organization_id,
            password: Some(session.password.clone()),
        }
    }

    fn key(key: &str, organization_id: Uuid, label: &str) -> Self {
        let credential = Credential::ApiKey(key.to_owned());
        Self { label: format!("{label} (API key)"), credential, organization_id, password: None }
    }

    fn node(node: &Node, organization_id: Uuid, label: &str) -> Self {
        let credential = Credential::Basic(node.id, node.key.clone());
        Self { label: format!("{label} (node credentials)"), credential, organization_id, password: None }
    }

    fn accepted_by(&self, operation: &Operation) -> bool {
        match self.credential {
            Credential::Bearer(_) => operation.bearer,
            Credential::ApiKey(_) => operation.api_key,
            Credential::Basic(..) => operation.basic,
        }
    }
}

#[derive(Clone, Copy)]
enum Expect {
    /// Another organization's object: 404 with the error shape.
    NotFound,
    /// A role too low: 403 with the error shape.
    Forbidden,
    /// The owner's own object: there (not 404), and no server error.
    Found,
    /// The required role: not refused (not 401 or 403), and no server error.
    Allowed,
}

impl Expect {
    fn check(self, status: StatusCode, body: &Value) -> Result<(), String> {
        let fine = match self {
            Self::NotFound => return check_error(status, body, StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::Forbidden => return check_error(status, body, StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::Found => status != StatusCode::NOT_FOUND && !status.is_server_error(),
            Self::Allowed => {
                ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status) && !status.is_server_error()
            }
        };
        if fine { Ok(()) } else { Err(format!("got {status} {body}")) }
    }
}

/// One request of the matrix: an operation, by a caller, with what it must answer.
struct Probe<'a> {
    operation: &'a Operation,
    caller: Caller,
    expect: Expect,
}

struct Matrix<'a> {
    app: &'a TestApp,
    document: &'a Value,
    fixtures: &'a Fixtures,
    requests: AtomicUsize,
}

impl Matrix<'_> {
    /// Sends the probe; answers the body, or what went wrong naming the operation and the caller.
    async fn run(&self, probe: &Probe<'_>) -> Result<Value, String> {
        let Probe { operation, caller, expect } = probe;
        let path = self.fixtures.fill(operation)?;
        let request =
            caller.credential.authorize(self.app.client.request(operation.method.clone(), self.app.url(&path)));
        let request = match &operation.body {
            Some((media_type, media)) => with_body(request, media_type, media, self.document, caller),
            None => request,
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await.expect("request");
        // A live stream (Server-Sent Events) never ends: its status is the answer.
        let streams =
            response.headers().get(CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        let (status, value) = if streams { (response.status(), Value::Null) } else { body(response).await };
        expect
            .check(status, &value)
            .map(|()| value)
            .map_err(|e| format!("{} as {}: {e}", operation.name(), caller.label))
    }

    /// Runs independent probes a few at a time; answers the failures.
    async fn run_all(&self, probes: Vec<Probe<'_>>) -> Vec<String> {
        self.answers(probes).await.into_iter().filter_map(Result::err).collect()
    }

    /// Runs independent probes a few at a time; answers each body by operation, or the failure.
    async fn answers(&self, probes: Vec<Probe<'_>>) -> Vec<Result<(String, Value), String>> {
        stream::iter(probes)
            .map(|probe| async move { self.run(&probe).await.map(|body| (probe.operation.name(), body)) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    }

    /// What `caller` reads at each of these GETs (not 404), by operation, without the request
    /// ids (every answer has its own); failures go to `failures`.
    async fn read(&self, gets: &[&Operation], caller: &Caller, failures: &mut Vec<String>) -> BTreeMap<String, Value> {
        let probes = gets.iter().map(|operation| Probe { operation, caller: caller.clone(), expect: Expect::Found });
        let mut read = BTreeMap::new();
        for answer in self.answers(probes.collect()).await {
            match answer {
                Ok((name, mut body)) => {
                    if let Some(fields) = body.as_object_mut() {
                        fields.remove("requestId");
                    }
                    read.insert(name, body);
                }
                Err(failure) => failures.push(failure),
            }
        }
        read
    }

    /// A member's session, signed in again if a call ended it (logout, switching, revoking all).
    async fn live(&self, session: &mut Session) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let status = self.app.get("/api/authentication/token", session).send().await.expect("introspect").status();
        if status == StatusCode::UNAUTHORIZED {
            *session = self.app.signed_in(&session.email, &session.password, session.organization_id).await;
        }
    }
}

/// Organization A: its Owner, a member and an API key of every role, one real object of every
/// kind a path can name.
struct OrganizationA {
    /// By role, as `ROLES`: members of A (the last is A's Owner).
    members: Vec<Session>,
    /// By role, as `ROLES`: API keys of A.
    keys: Vec<String>,
    fixtures: Fixtures,
}

/// Sends a setting-up request; answers the body, asserting success.
async fn expect_ok(request: RequestBuilder) -> Value {
    let (status, value) = send(request).await;
    assert!(status.is_success(), "setting up: {status} {value}");
    value
}

fn id(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}")).to_owned()
}

impl OrganizationA {
    async fn set_up(app: &TestApp) -> Self {
        let owner = app.owner().await;
        let org = owner.organization_id;
        let mut objects: HashMap<&'static str, String> = HashMap::new();
        objects.insert("organization", org.to_string());
        objects.insert("part", "1".into());

        let node = create_node(app, &owner, "matrix node").await.id.to_string();
        let definition =
            id(&expect_ok(app.post("/api/flowdefinitions", &owner).json(&json!({"name": "matrix flow"}))).await, "id");
        let drafts = format!("/api/flowdefinitions/{definition}/drafts");
        let published = id(&expect_ok(app.post(&drafts, &owner).json(&json!({"name": "published"}))).await, "id");
        let flow = expect_ok(app.post(&format!("{drafts}/{published}/publish"), &owner).json(&json!({}))).await;
        let flow = id(&flow, "id");
        let draft = id(&expect_ok(app.post(&drafts, &owner).json(&json!({"name": "draft"}))).await, "id");
        let job = expect_ok(app.post(&format!("/api/edgenodes/{node}/flows/{definition}/start"), &owner)).await;
        let deployment = expect_ok(
            app.post("/api/deployments", &owner)
                .json(&json!({"flowDefinitionId": definition, "flowId": flow, "nodeIds": [node]})),
        )
        .await;
        let registration_key = expect_ok(
            app.post("/api/registrationkeys", &owner).json(&json!({"name": "matrix", "nodeType": "Production"})),
        )
        .await;
        let identity_provider = expect_ok(
            app.post(&format!("/api/organizations/{org}/identityproviders"), &owner)
                .json(&json!({"name": "matrix", "issuerUrl": "https://idp.example.com"})),
        )
        .await;
        let member = app.member(&owner, "member@a.example.com", "Viewer").await;

        let resource = expect_ok(app.post("/api/resources", &owner).json(&json!({
            "organizationId": org, "name": "matrix", "type": "File", "category": "/organization/", "path": "data/matrix.bin"
        })))
        .await;
        let resource = id(&resource, "id");
        let versions = format!("/api/resources/{resource}/versions");
        let new_version = json!({"sizeInBytes": PAYLOAD.len()});
        let completed = id(&expect_ok(app.post(&versions, &owner).json(&new_version)).await, "id");
        expect_ok(
            app.post(&format!("{versions}/{completed}/content"), &owner).header(CONTENT_TYPE, "text/csv").body(PAYLOAD),
        )
        .await;
        expect_ok(app.put(&format!("{versions}/{completed}"), &owner).json(&json!({"state": "Completed"}))).await;
        let draft_version = id(&expect_ok(app.post(&versions, &owner).json(&new_version)).await, "id");
        let upload = expect_ok(app.post(&format!("{versions}/{draft_version}/uploads"), &owner).json(&json!({}))).await;

        let event = expect_ok(app.get("/api/events?limit=1", &owner)).await;
        objects.extend([
            ("node", node),
            ("flowDefinition", definition),
            ("flow", flow),
            ("draft", draft),
            ("job", id(&job, "id")),
            ("deployment", id(&deployment, "id")),
            ("registrationKey", id(&registration_key, "id")),
            ("identityProvider", id(&identity_provider, "id")),
            ("member", member.user_id.to_string()),
            ("apiKey", id(&app.api_key(&owner, "matrix fixture", "Viewer").await, "id")),
            ("resource", resource),
            ("completedVersion", completed),
            ("draftVersion", draft_version),
            ("upload", id(&upload, "uploadId")),
            ("event", id(&event["items"][0], "id")),
        ]);

        let mut members = Vec::new();
        for role in &ROLES[..ROLES.len() - 1] {
            members.push(app.member(&owner, &format!("{}@a.example.com", role.to_lowercase()), role).await);
        }
        let mut keys = Vec::new();
        for role in ROLES {
            keys.push(id(&app.api_key(&owner, &format!("matrix {role}"), role).await, "key"));
        }
        members.push(owner);
        Self { members, keys, fixtures: Fixtures(objects) }
    }

    fn owner(&self) -> &Session {
        self.members.last().expect("the Owner")
    }
}

/// Deletes last, children before their parents (deeper paths first), the caller's organization
/// at the very end: so each call still finds the objects it names.
fn destructiveness(operation: &Operation) -> (bool, bool, Reverse<usize>) {
    let delete = operation.method == Method::DELETE;
    let deletes_organization = delete && operation.path.ends_with("/{organizationId}");
    (delete, deletes_organization, Reverse(operation.path.matches('/').count()))
}

impl Matrix<'_> {
    /// Requests sent so far.
    fn sent(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Parts 1 and 2: each operation naming objects, called on A's by each of `strangers` that it
    /// takes: 404. Before and after, A's Owner reads every GET among them: found (the fixtures
    /// are real, so the 404s were isolation) and unchanged (the strangers' calls did nothing).
    async fn isolation(&self, with_ids: &[&Operation], strangers: &[Caller], owner: &Caller) -> Vec<String> {
        let gets: Vec<&Operation> = with_ids.iter().copied().filter(|o| o.method == Method::GET).collect();
        let mut failures = Vec::new();
        let before = self.read(&gets, owner, &mut failures).await;
        let probes = with_ids
            .iter()
            .flat_map(|o| strangers.iter().filter(|c| c.accepted_by(o)).map(|c| (*o, c.clone())))
            .map(|(operation, caller)| Probe { operation, caller, expect: Expect::NotFound })
            .collect();
        failures.extend(self.run_all(probes).await);
        let after = self.read(&gets, owner, &mut failures).await;
        for (name, was) in &before {
            if after.get(name).is_some_and(|now| now != was) {
                failures.push(format!("{name}: another organization's calls changed it from {was} to {}", after[name]));
            }
        }
        failures
    }

    /// Part 3: each operation, by every caller whose role is below the one it names (`callers` by
    /// role, as `ROLES`) and whose credential it takes: 403.
    async fn below_role(&self, operations: &[Operation], callers: &[Vec<Caller>]) -> Vec<String> {
        let probes = operations
            .iter()
            .flat_map(|o| {
                callers[..o.role].iter().flatten().filter(move |c| c.accepted_by(o)).map(move |c| (o, c.clone()))
            })
            .map(|(operation, caller)| Probe { operation, caller, expect: Expect::Forbidden })
            .collect();
        self.run_all(probes).await
    }

    /// Part 4: each operation by the role it names, as a member and as an API key: not refused. One
    /// call at a time, destructive ones last; a delete is tried once, as a member when it takes
    /// one (a second try would find nothing). A member whose session a call ended (logout,
    /// switching organization, revoking all) signs in again first.
    async fn at_role(&self, operations: &[Operation], members: &mut [Session], keys: &[String]) -> Vec<String> {
        let mut ordered: Vec<&Operation> = operations.iter().collect();
        ordered.sort_by_key(|o| destructiveness(o));
        let mut failures = Vec::new();
        for operation in ordered {
            let role = operation.role;
            let label = format!("A's {}", ROLES[role]);
            let mut callers = Vec::new();
            if operation.bearer {
                self.live(&mut members[role]).await;
                callers.push(Caller::member(&members[role], &label));
            }
            if operation.api_key && !(operation.method == Method::DELETE && operation.bearer) {
                callers.push(Caller::key(&keys[role], members[role].organization_id, &label));
            }
            for caller in callers {
                failures.extend(self.run(&Probe { operation, caller, expect: Expect::Allowed }).await.err());
            }
        }
        failures
    }
}

#[tokio::test]
async fn every_operation_keeps_organizations_apart_and_checks_roles() {
    let started = Instant::now();
    let app = TestApp::spawn().await;
    let document = serde_json::to_value(edgeflow::openapi::document()).expect("document");
    let operations = operations(&document);
    let mut a = OrganizationA::set_up(&app).await;
    let b_owner = app.register("owner@b.example.com", "Organization B").await;
    let b_key = id(&app.api_key(&b_owner, "matrix B", "Owner").await, "key");
    let b_node = create_node(&app, &b_owner, "B's node").await;
    let unresolved: Vec<String> = operations.iter().filter_map(|o| a.fixtures.fill(o).err()).collect();
    assert!(unresolved.is_empty(), "{}", unresolved.join("\n"));
    let matrix = Matrix { app: &app, document: &document, fixtures: &a.fixtures, requests: AtomicUsize::new(0) };

    let b = b_owner.organization_id;
    let strangers = [
        Caller::member(&b_owner, "B's Owner"),
        Caller::key(&b_key, b, "B's Owner key"),
        Caller::node(&b_node, b, "B's node"),
    ];
    let with_ids: Vec<&Operation> = operations.iter().filter(|o| o.has_path_parameters()).collect();
    let mut failures = matrix.isolation(&with_ids, &strangers, &Caller::member(a.owner(), "A's Owner")).await;
    let isolation = matrix.sent();

    let callers: Vec<Vec<Caller>> = ROLES
        .iter()
        .zip(&a.members)
        .zip(&a.keys)
        .map(|((role, member), key)| {
            let label = format!("A's {role}");
            vec![Caller::member(member, &label), Caller::key(key, member.organization_id, &label)]
        })
        .collect();
    failures.extend(matrix.below_role(&operations, &callers).await);
    let below = matrix.sent() - isolation;
    failures.extend(matrix.at_role(&operations, &mut a.members, &a.keys).await);
    let at = matrix.sent() - isolation - below;

    let reads = 2 * with_ids.iter().filter(|o| o.method == Method::GET).count();
    let session_checks = operations.iter().filter(|o| o.bearer).count();
    println!(
        "isolation matrix: {} operations name objects: {} requests by organization B (all 404), {reads} control \
         reads by A's Owner; {} operations name a role ({} mutating, {} above Viewer): {below} requests by lower \
         roles (all 403), {} by the named role (and {session_checks} session checks); {} requests in {:.1?}",
        with_ids.len(),
        isolation - reads,
        operations.len(),
        operations.iter().filter(|o| o.mutating()).count(),
        operations.iter().filter(|o| o.role > 0).count(),
        at - session_checks,
        matrix.sent(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{} checks failed:\n{}", failures.len(), failures.join("\n"));
}

#!/usr/bin/env python3
"""Seeds an organization with one real object of every kind, over the HTTP API, for
`scripts/contract-fuzz`. Prints `NAME=value` lines (the ids schemathesis pins its path parameters
to, see `scripts/contract-fuzz.toml`), nothing else on stdout.

Usage: contract-fuzz-seed.py BASE_URL OWNER_EMAIL OWNER_PASSWORD

Objects named `*_VICTIM` exist only to be deleted by the fuzzed DELETE operations, so deleting
them never takes away the objects every other operation reads.

Standard library only: it runs with whichever Python runs schemathesis.
"""

import json
import sys
import urllib.error
import urllib.request

BASE, OWNER_EMAIL, OWNER_PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3]
TOKEN = None
MEMBER_PASSWORD = "fuzz-member-password-1"
CONTENT = b"sensor,offset\nt1,0.5\nt2,-0.25\n"

# A flow of two modules; the published version refers to the Completed resource version.
FLOW = {
    "modules": [{"id": "in", "type": "opcua-in"}, {"id": "out", "type": "mqtt-out"}],
    "connections": [{"from": "in", "to": "out"}],
    "resources": [],
    "settings": {},
}


def call(method, path, body=None, *, raw=None, content_type=None, token=True, expect=(200, 201, 202, 204)):
    """One request; the decoded JSON answer (None for an empty one). Any other status stops the seed."""
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = content_type or "application/json"
    elif raw is not None:
        data = raw
        headers["Content-Type"] = content_type or "application/octet-stream"
    if token and TOKEN:
        headers["Authorization"] = f"Bearer {TOKEN}"
    request = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()
    if status not in expect:
        sys.exit(f"seed: {method} {path} answered {status}: {text[:500]!r}")
    return json.loads(text) if text else None


def login(email, password):
    return call("POST", "/api/authentication/login", {"email": email, "password": password}, token=False)


def main():
    global TOKEN
    owner = login(OWNER_EMAIL, OWNER_PASSWORD)
    TOKEN = owner["token"]
    org = owner["organizationId"]
    ids = {"EF_TOKEN": TOKEN, "EF_ORG_ID": org, "EF_OWNER_ID": owner["userId"]}

    # Another organization of the Owner's: not the active one, so operations on it are 404.
    ids["EF_OTHER_ORG_ID"] = call("POST", "/api/organizations", {"name": "Fuzz other organization"})["id"]

    # Members: users sign up on their own (with their own organization), then join this one.
    # A user who is not a member yet: `POST .../members` adds them (once; then 409).
    call(
        "POST",
        "/api/authentication/register",
        {"email": "joiner@fuzz.example", "password": MEMBER_PASSWORD, "name": "Joiner", "organizationName": "Joiner's"},
        token=False,
    )
    ids["EF_JOINER_EMAIL"] = "joiner@fuzz.example"

    for key, email in (("EF_MEMBER_ID", "member@fuzz.example"), ("EF_MEMBER_VICTIM_ID", "victim@fuzz.example")):
        user = call(
            "POST",
            "/api/authentication/register",
            {"email": email, "password": MEMBER_PASSWORD, "name": key, "organizationName": f"{key} organization"},
            token=False,
        )
        call("POST", f"/api/organizations/{org}/members", {"email": email, "role": "Operator"})
        ids[key] = user["userId"]

    for key, name in (("EF_IDP_ID", "Entra ID"), ("EF_IDP_VICTIM_ID", "Okta")):
        ids[key] = call(
            "POST",
            f"/api/organizations/{org}/identityproviders",
            {
                "name": name,
                "issuerUrl": "https://login.example.com/tenant/v2.0",
                "clientId": "edgeflow-fuzz",
                "clientSecret": "s3cret",
            },
        )["id"]

    for key, name in (("EF_APIKEY_ID", "fuzz reports"), ("EF_APIKEY_VICTIM_ID", "fuzz victim")):
        ids[key] = call("POST", "/api/apikeys", {"name": name, "role": "Viewer"})["id"]

    registration = call(
        "POST", "/api/registrationkeys", {"name": "fuzz rollout", "nodeType": "DevAndTest", "labels": {"line": "3"}}
    )
    ids["EF_REGKEY_ID"] = registration["id"]
    ids["EF_REGKEY"] = registration["key"]
    ids["EF_REGKEY_VICTIM_ID"] = call(
        "POST", "/api/registrationkeys", {"name": "fuzz victim", "nodeType": "Production"}
    )["id"]

    node = call(
        "POST",
        "/api/edgenodes",
        {"name": "fuzz-node-1", "organizationId": org, "type": "DevAndTest", "labels": {"line": "3"}},
    )
    ids["EF_NODE_ID"] = node["id"]
    # The script connects the reference agent as this node: jobs finish, live calls answer.
    ids["EF_NODE_ACCESS_KEY"] = node["accessKey"]
    enrolled = call(
        "POST",
        "/api/edgenodes/register",
        {"registrationKey": registration["key"], "name": "fuzz-node-2"},
        token=False,
    )
    ids["EF_NODE2_ID"] = enrolled["id"]
    ids["EF_NODE2_ACCESS_KEY"] = enrolled["accessKey"]
    # Its key is rotated by the fuzzed rotation (which would disconnect the agent's node).
    ids["EF_NODE_ROTATE_ID"] = call(
        "POST", "/api/edgenodes", {"name": "fuzz-rotate", "organizationId": org, "type": "Production"}
    )["id"]
    ids["EF_NODE_VICTIM_ID"] = call(
        "POST", "/api/edgenodes", {"name": "fuzz-victim", "organizationId": org, "type": "Production"}
    )["id"]

    # A resource with a Completed version (with content), a Draft version with a resumable upload,
    # and victims of each.
    resource = call(
        "POST",
        "/api/resources",
        {
            "organizationId": org,
            "name": "Calibration table",
            "type": "File",
            "category": "/organization/",
            "path": "data/calibration.csv",
        },
    )["id"]
    ids["EF_RESOURCE_ID"] = resource
    completed = call("POST", f"/api/resources/{resource}/versions", {"sizeInBytes": len(CONTENT)})["id"]
    call("POST", f"/api/resources/{resource}/versions/{completed}/content", raw=CONTENT, content_type="text/csv")
    call("PUT", f"/api/resources/{resource}/versions/{completed}", {"state": "Completed"})
    ids["EF_VERSION_ID"] = completed
    draft_version = call(
        "POST", f"/api/resources/{resource}/versions", {"sizeInBytes": 4, "description": "next"}
    )["id"]
    ids["EF_DRAFT_VERSION_ID"] = draft_version
    ids["EF_VERSION_VICTIM_ID"] = call("POST", f"/api/resources/{resource}/versions", {"sizeInBytes": 1})["id"]
    uploads = f"/api/resources/{resource}/versions/{draft_version}/uploads"
    ids["EF_UPLOAD_ID"] = call("POST", uploads, {})["uploadId"]
    ids["EF_UPLOAD_VICTIM_ID"] = call("POST", uploads, {})["uploadId"]
    victim_resource = call(
        "POST",
        "/api/resources",
        {"organizationId": org, "name": "Victim settings", "type": "Modbus", "category": "/organization/"},
    )["id"]
    ids["EF_RESOURCE_VICTIM_ID"] = victim_resource

    # A flow definition with a published version (using the resource) and a draft; a victim
    # definition and a victim draft.
    flow = dict(FLOW, resources=[{"resourceId": resource, "versionId": completed}])
    definition = call("POST", "/api/flowdefinitions", {"name": "Temperature", "description": "fuzzing"})["id"]
    ids["EF_FLOWDEF_ID"] = definition
    published_from = call("POST", f"/api/flowdefinitions/{definition}/drafts", {"content": flow})["id"]
    ids["EF_FLOW_ID"] = call(
        "POST", f"/api/flowdefinitions/{definition}/drafts/{published_from}/publish", {"description": "first"}
    )["id"]
    ids["EF_DRAFT_ID"] = published_from
    ids["EF_DRAFT_VICTIM_ID"] = call(
        "POST", f"/api/flowdefinitions/{definition}/drafts", {"name": "victim", "content": FLOW}
    )["id"]
    ids["EF_FLOWDEF_VICTIM_ID"] = call("POST", "/api/flowdefinitions", {"name": "Victim flow"})["id"]

    # A deployment of the version to both nodes (they are offline: its jobs wait for them), and a
    # job of its own on the first node.
    ids["EF_DEPLOYMENT_ID"] = call(
        "POST",
        "/api/deployments",
        {"flowDefinitionId": definition, "flowId": ids["EF_FLOW_ID"], "nodeIds": [node["id"], enrolled["id"]]},
    )["id"]
    ids["EF_JOB_ID"] = call("POST", f"/api/edgenodes/{node['id']}/flows/{definition}/stop")["id"]
    call("PATCH", f"/api/edgenodes/{node['id']}/shadow", {"desired": {"sampleRate": 10}}, content_type="application/merge-patch+json")

    # Every call above wrote an audit event; the newest is as good as any.
    events = call("GET", "/api/events?limit=1")
    ids["EF_EVENT_ID"] = events["items"][0]["id"]

    for key, value in ids.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()

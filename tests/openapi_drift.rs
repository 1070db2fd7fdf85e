//! `openapi/openapi.json` is generated from the code; this test fails when they differ.
//! Refresh with: `cargo run -- openapi > openapi/openapi.json`

#[test]
fn checked_in_openapi_matches_the_code() {
    let generated = edgeflow::openapi::to_pretty_json().expect("document");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json` and commit it"
    );
}

#[test]
fn every_operation_has_a_summary_and_its_errors() {
    let document = serde_json::to_value(edgeflow::openapi::document()).expect("json");
    let mut missing = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let name = format!("{} {path}", method.to_uppercase());
            if operation["summary"].as_str().is_none_or(str::is_empty) {
                missing.push(format!("{name}: no summary"));
            }
            let responses = operation["responses"].as_object().expect("responses");
            if !responses.keys().any(|code| code.starts_with('2') || code == "101") {
                missing.push(format!("{name}: no success response"));
            }
            if !responses.keys().any(|code| code.starts_with('4')) {
                missing.push(format!("{name}: no error responses"));
            }
            // Operations without their own `security` inherit the document's (bearer or API key).
            let public_only = operation.get("security").is_some_and(|s| {
                s.as_array().is_some_and(|a| a.iter().all(|r| r.as_object().is_some_and(|o| o.is_empty())))
            });
            if !public_only && !responses.contains_key("401") {
                missing.push(format!("{name}: needs credentials but documents no 401"));
            }
            // The isolation matrix (tests/api/matrix.rs) reads the least role from here.
            let for_members = operation.get("security").is_none_or(|s| {
                s.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|r| r.as_object().is_some_and(|o| o.contains_key("bearer") || o.contains_key("apiKey")))
                })
            });
            let role = operation["x-required-role"].as_str();
            if for_members && !role.is_some_and(|r| ["Viewer", "Operator", "Editor", "Admin", "Owner"].contains(&r)) {
                missing.push(format!("{name}: members call it but it names no x-required-role"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

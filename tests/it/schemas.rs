//! The checked-in JSON Schemas match the types, and the example envelopes under `jobs/` both
//! parse and validate against them.
//!
//! `schema/asyncapi.json` matches the code, is valid AsyncAPI 3.0.0, and lists every header.
//!
//! After changing a payload type, regenerate with `MBPROV_UPDATE_SCHEMAS=1 cargo test --test it
//! schemas::` and commit `schema/`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(file: &str) -> jsonschema::Validator {
    let schema = read_json(&root().join("schema").join(file));
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn checked_in_schemas_match_the_types() {
    let update = std::env::var_os("MBPROV_UPDATE_SCHEMAS").is_some_and(|v| v == "1");
    let dir = root().join("schema");
    let mut stale = Vec::new();
    for file in mbprov::schema::all() {
        let path = dir.join(&file.name);
        let want = file.text();
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have == want {
            continue;
        }
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &want).unwrap();
        } else {
            stale.push(file.name);
        }
    }
    assert!(
        stale.is_empty(),
        "schema/ is out of date with the types: {}. Regenerate with \
         `MBPROV_UPDATE_SCHEMAS=1 cargo test --test it schemas::` and commit schema/.",
        stale.join(", ")
    );
    let mut extra: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !mbprov::schema::all().iter().any(|f| &f.name == n))
        .filter(|n| n != mbprov::asyncapi::FILE)
        .collect();
    extra.sort();
    assert!(
        extra.is_empty(),
        "schema/ has files no type generates: {extra:?}"
    );
}

#[test]
fn the_schemas_are_valid_json_schema() {
    for file in mbprov::schema::all() {
        jsonschema::meta::validate(&file.schema)
            .unwrap_or_else(|e| panic!("{} is not a valid schema: {e}", file.name));
    }
}

/// Each `jobs/<kind>.json` parses with the worker's parser and validates against the envelope
/// schema and its kind's payload schema. A kind without an example is reported, not failed, so
/// the test works while examples are being written; every example present is checked.
#[test]
fn example_envelopes_parse_and_validate() {
    let envelope = validator("envelope.schema.json");
    let jobs = root().join("jobs");
    let mut missing = Vec::new();
    for kind in mbprov::schema::kinds() {
        let path = jobs.join(format!("{kind}.json"));
        if !path.exists() {
            missing.push(kind);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let parsed = mbprov::jobs::envelope::parse(&bytes, None)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(parsed.job.kind(), kind, "{}", path.display());
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            errors(&envelope, &value),
            Vec::<String>::new(),
            "{} against envelope.schema.json",
            path.display()
        );
        let payload = validator(&format!("{kind}.schema.json"));
        assert_eq!(
            errors(&payload, &value["payload"]),
            Vec::<String>::new(),
            "{} payload against {kind}.schema.json",
            path.display()
        );
    }
    if !missing.is_empty() {
        eprintln!(
            "note: no example envelope yet for {} (expected jobs/<kind>.json)",
            missing.join(", ")
        );
    }
}

/// `examples/permissions.tenants.yaml` loads like `mbprov apply -f` loads it and validates
/// against the document schema.
#[test]
fn the_tenant_permissions_example_loads_and_validates() {
    let path = root().join("examples/permissions.tenants.yaml");
    let doc = mbprov::pac::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!doc.groups["Premium"].shared_collections.is_empty());
    let value = serde_json::to_value(&doc).unwrap();
    assert_eq!(
        errors(&validator("permissions-document.schema.json"), &value),
        Vec::<String>::new()
    );
}

/// The contract's own examples (CONTRACT.md §3-§5), with the parser and the schema agreeing.
fn contract_examples() -> Vec<Value> {
    vec![
        json!({"id": "tenant-42-created", "kind": "tenant.created", "payload": {
            "tenant_id": "42", "tenant_name": "Acme", "database_id": 3, "shared_collection_id": 7,
            "admin_user": {"email": "ada@acme.test", "first_name": "Ada", "last_name": "Lovelace"},
            "data_access": "sandboxed", "collection_access": "read",
            "sandbox": {"attribute": "organization_id", "tables": [{"table_id": 12, "field_id": 34}]}}}),
        json!({"kind": "tenant.created", "payload": {"tenant_id": 42, "tenant_name": "Acme",
            "database_id": 3, "admin_user": {"email": "ada@acme.test"}}}),
        json!({"kind": "tenant.deleted", "metadata": {"source": "billing"},
            "payload": {"tenant_id": "42", "tenant_name": "Acme", "shared_collection_id": 7}}),
        json!({"kind": "user.upserted", "payload": {"email": "bob@acme.test", "first_name": "Bob",
            "last_name": "Ng", "groups": ["Tenant: 42"],
            "login_attributes": {"organization_id": "42", "old": null}, "exclusive": false}}),
        json!({"kind": "user.deactivated", "payload": {"email": "bob@acme.test"}}),
        json!({"kind": "users.synced", "payload": {
            "managed_groups": ["Tenant: 42", "Tenant: 42 Editors"], "deactivate_missing": false,
            "users": [{"email": "ada@acme.test", "first_name": "Ada", "last_name": "Lovelace",
                       "groups": ["Tenant: 42"], "login_attributes": {"organization_id": "42"}}]}}),
        json!({"kind": "permissions.applied", "payload": {"document": {"version": 1, "groups": {
            "Analysts": {
                "data": {
                    "2": {"view-data": "unrestricted", "create-queries": "query-builder", "download": "full"},
                    "1": {"tables": {
                        "1": {"view-data": "sandboxed", "create-queries": "query-builder",
                              "sandbox": {"attribute": "organization_id", "field_id": 11}},
                        "2": {"view-data": "blocked", "create-queries": "no"}}}},
                "collections": {"1": "read", "root": "none"}}}}}}),
    ]
}

#[test]
fn the_contract_examples_pass_both_the_parser_and_the_schema() {
    let envelope = validator("envelope.schema.json");
    for example in contract_examples() {
        let bytes = serde_json::to_vec(&example).unwrap();
        if let Err(e) = mbprov::jobs::envelope::parse(&bytes, None) {
            panic!("parser refused {example}: {e}");
        }
        assert_eq!(
            errors(&envelope, &example),
            Vec::<String>::new(),
            "{example}"
        );
    }
}

/// Shape mistakes a publisher makes are refused by the schema, as the worker refuses them.
#[test]
fn shape_mistakes_fail_both_the_parser_and_the_schema() {
    let envelope = validator("envelope.schema.json");
    let cases = [
        (
            "unknown kind",
            json!({"kind": "tenant.renamed", "payload": {}}),
        ),
        (
            "payload of another kind",
            json!({"kind": "user.deactivated", "payload": {"tenant_id": "42"}}),
        ),
        (
            "unknown payload field",
            json!({"kind": "user.deactivated", "payload": {"email": "a@b.test", "mail": "x"}}),
        ),
        (
            "missing payload field",
            json!({"kind": "tenant.deleted", "payload": {"tenant_name": "Acme"}}),
        ),
        (
            "mistyped field",
            json!({"kind": "tenant.created", "payload": {"tenant_id": "1", "tenant_name": "A",
                "database_id": "3", "admin_user": {"email": "a@b.test"}}}),
        ),
        (
            "unknown enumeration value",
            json!({"kind": "tenant.created", "payload": {"tenant_id": "1", "tenant_name": "A",
                "database_id": 3, "admin_user": {"email": "a@b.test"}, "data_access": "all"}}),
        ),
        (
            "unknown envelope field",
            json!({"kind": "user.deactivated", "payload": {"email": "a@b.test"}, "priority": 1}),
        ),
        (
            "empty id",
            json!({"id": "", "kind": "user.deactivated", "payload": {"email": "a@b.test"}}),
        ),
        ("no payload", json!({"kind": "user.deactivated"})),
        (
            "empty tenant id",
            json!({"kind": "tenant.deleted", "payload": {"tenant_id": ""}}),
        ),
        (
            "document version 2",
            json!({"kind": "permissions.applied", "payload": {"document": {"version": 2,
                "groups": {}}}}),
        ),
        (
            "database key that is not an id",
            json!({"kind": "permissions.applied", "payload": {"document": {"version": 1,
                "groups": {"A": {"data": {"sample": {"view-data": "blocked"}}}}}}}),
        ),
        (
            "unknown permission value in a document",
            json!({"kind": "permissions.applied", "payload": {"document": {"version": 1,
                "groups": {"A": {"collections": {"1": "admin"}}}}}}),
        ),
    ];
    for (what, example) in cases {
        let bytes = serde_json::to_vec(&example).unwrap();
        assert!(
            mbprov::jobs::envelope::parse(&bytes, None).is_err(),
            "{what}: the parser accepted {example}"
        );
        assert!(
            !envelope.is_valid(&example),
            "{what}: the schema accepted {example}"
        );
    }
}

/// `schema/asyncapi.json` is what the code generates (`MBPROV_UPDATE_SCHEMAS=1` rewrites it).
#[test]
fn checked_in_asyncapi_matches_the_code() {
    let path = root().join("schema").join(mbprov::asyncapi::FILE);
    let want = mbprov::asyncapi::text();
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want && std::env::var_os("MBPROV_UPDATE_SCHEMAS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    assert!(
        have == want,
        "schema/{} is out of date with the code. Regenerate with \
         `MBPROV_UPDATE_SCHEMAS=1 cargo test --test it schemas::` and commit schema/.",
        mbprov::asyncapi::FILE
    );
}

/// The document is valid AsyncAPI 3.0.0 (the specification's own JSON Schema, vendored from
/// `@asyncapi/specs`), and every `$ref` in it resolves: to a component, or to a schema file.
#[test]
fn the_asyncapi_document_is_valid_asyncapi_3() {
    let spec = read_json(&root().join("tests/it/fixtures/asyncapi-3.0.0.schema.json"));
    let validator = jsonschema::draft7::new(&spec).expect("the AsyncAPI schema compiles");
    let document = mbprov::asyncapi::document();
    assert_eq!(errors(&validator, &document), Vec::<String>::new());

    // A document the schema refuses, so this test can fail.
    let mut broken = document.clone();
    broken["channels"]["jobs"]["address"] = json!(42);
    assert!(!validator.is_valid(&broken));
    let mut v2_word = document.clone();
    v2_word["operations"]["publishJob"]["action"] = json!("publish");
    assert!(
        !validator.is_valid(&v2_word),
        "AsyncAPI 3 knows only send/receive"
    );

    let mut refs = Vec::new();
    collect_refs(&document, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        if let Some(pointer) = r.strip_prefix('#') {
            assert!(document.pointer(pointer).is_some(), "dangling {r}");
        } else {
            assert!(root().join("schema").join(&r).is_file(), "no schema/{r}");
        }
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Every `x-mbprov-*` header the code spells is in the document: a header added to the code
/// without documenting it fails here.
#[test]
fn every_header_the_code_writes_is_documented() {
    let documented = mbprov::asyncapi::header_names();
    let mut found = Vec::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("\"x-mbprov-").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                        .collect();
                    if !name.is_empty()
                        && !name.ends_with('-')
                        && piece[name.len()..].starts_with('"')
                    {
                        found.push(format!("x-mbprov-{name}"));
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    assert!(found.len() >= 6, "the scan found too little: {found:?}");
    let missing: Vec<&String> = found
        .iter()
        .filter(|h| !documented.contains(&h.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "headers written by the code but missing from mbprov::asyncapi::headers(): {missing:?}"
    );
}

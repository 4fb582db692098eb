//! The checked-in JSON Schemas match the types, and the example envelopes under `jobs/` both
//! parse and validate against them.
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

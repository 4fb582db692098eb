//! JSON Schemas of the messages, generated from the very types the worker parses with, so
//! product teams in any language can check an envelope before publishing it.
//!
//! The checked-in copies live in `schema/` (`tests/schemas.rs` fails when they drift from the
//! types; `MBPROV_UPDATE_SCHEMAS=1` rewrites them). A schema checks shapes: field names, types,
//! enumerations, and in the envelope which payload goes with which `kind`. The worker checks more
//! (email syntax, lengths, the sandbox rules, known ids), so passing the schema is necessary,
//! not sufficient.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Value, json};

use crate::jobs::envelope::{Envelope, MAX_ID};
use crate::jobs::payloads::{
    PermissionsApplied, TenantCreated, TenantDeleted, TenantUpdated, UserDeactivated, UserUpserted,
    UsersSynced,
};
use crate::pac::Document;

/// One schema file of `schema/`.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaFile {
    /// The file name inside `schema/`, e.g. `tenant.created.schema.json`.
    pub name: String,
    pub schema: Value,
}

impl SchemaFile {
    /// The file's exact text: pretty JSON and a final newline, so diffs stay readable.
    pub fn text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.schema).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Puts a type's definition in the generator and answers a `$ref` to it.
type MakeRef = fn(&mut SchemaGenerator) -> Schema;

/// How each kind's payload schema is made; one entry per kind of [`crate::jobs::envelope::KINDS`].
const PAYLOADS: &[(&str, MakeRef)] = &[
    ("tenant.created", reference::<TenantCreated>),
    ("tenant.deleted", reference::<TenantDeleted>),
    ("tenant.updated", reference::<TenantUpdated>),
    ("user.upserted", reference::<UserUpserted>),
    ("user.deactivated", reference::<UserDeactivated>),
    ("users.synced", reference::<UsersSynced>),
    ("permissions.applied", reference::<PermissionsApplied>),
];

/// A `$ref` to `T`, whose definition the generator keeps.
fn reference<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12().into_generator()
}

/// The kinds the schemas cover, in file order.
pub fn kinds() -> Vec<&'static str> {
    PAYLOADS.iter().map(|(kind, _)| *kind).collect()
}

/// Every file of `schema/`: the envelope, one payload schema per kind, the permissions document.
pub fn all() -> Vec<SchemaFile> {
    let mut files = vec![SchemaFile {
        name: "envelope.schema.json".into(),
        schema: envelope(),
    }];
    for (kind, _) in PAYLOADS {
        if let Some(schema) = payload(kind) {
            files.push(SchemaFile {
                name: format!("{kind}.schema.json"),
                schema,
            });
        }
    }
    files.push(SchemaFile {
        name: "permissions-document.schema.json".into(),
        schema: permissions_document(),
    });
    files
}

/// One kind's payload, standalone (`None` for an unknown kind).
pub fn payload(kind: &str) -> Option<Value> {
    let (_, make) = PAYLOADS.iter().find(|(k, _)| *k == kind)?;
    let mut generator = generator();
    let reference = make(&mut generator);
    // The payload is the root: inline its definition and keep the ones it refers to.
    let name = reference
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
        .map(str::to_string);
    let mut defs = generator.take_definitions(true);
    let mut root = match name.and_then(|n| defs.remove(&n)) {
        Some(Value::Object(o)) => o,
        _ => reference.as_object().cloned().unwrap_or_default(),
    };
    let mut out = serde_json::Map::new();
    out.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    out.insert(
        "title".into(),
        json!(format!("mbprov {kind} payload (contract version 1)")),
    );
    out.append(&mut root);
    if !defs.is_empty() {
        out.insert("$defs".into(), Value::Object(defs));
    }
    Some(tidy(Value::Object(out)))
}

/// The envelope, with `payload` tied to `kind`: one `oneOf` branch per kind, each pairing a
/// `kind` constant with that kind's payload schema.
pub fn envelope() -> Value {
    let mut generator = generator();
    let branches: Vec<Value> = PAYLOADS
        .iter()
        .map(|(kind, make)| {
            json!({
                "properties": {"kind": {"const": kind}, "payload": make(&mut generator)},
                "required": ["kind", "payload"],
            })
        })
        .collect();
    let mut root = generator.root_schema_for::<Envelope>().to_value();
    if let Some(o) = root.as_object_mut() {
        o.insert(
            "title".into(),
            json!("mbprov job envelope (contract version 1)"),
        );
        o.insert("oneOf".into(), Value::Array(branches));
    }
    if let Some(props) = root.get_mut("properties") {
        props["kind"]["enum"] = json!(kinds());
        props["id"]["minLength"] = json!(1);
        props["id"]["maxLength"] = json!(MAX_ID);
    }
    tidy(root)
}

/// The keys a person reads first (`$schema`, `title`, `description`, `type`) at the top,
/// `$defs` last.
fn tidy(schema: Value) -> Value {
    let Value::Object(mut o) = schema else {
        return schema;
    };
    let mut out = serde_json::Map::new();
    for key in [
        "$schema",
        "title",
        "description",
        "type",
        "additionalProperties",
    ] {
        if let Some(v) = o.remove(key) {
            out.insert(key.into(), v);
        }
    }
    let defs = o.remove("$defs");
    out.append(&mut o);
    if let Some(defs) = defs {
        out.insert("$defs".into(), defs);
    }
    Value::Object(out)
}

/// The desired-state document of `mbprov plan`/`apply` and `permissions.applied`.
pub fn permissions_document() -> Value {
    let mut root = generator().into_root_schema_for::<Document>().to_value();
    if let Some(o) = root.as_object_mut() {
        o.insert(
            "title".into(),
            json!("mbprov permissions document (version 1)"),
        );
    }
    tidy(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_schema() {
        assert_eq!(kinds(), crate::jobs::envelope::KINDS);
        let names: Vec<String> = all().into_iter().map(|f| f.name).collect();
        assert_eq!(names.len(), kinds().len() + 2);
        assert!(payload("tenant.renamed").is_none());
    }

    #[test]
    fn the_envelope_ties_each_kind_to_its_payload() {
        let e = envelope();
        let branches = e["oneOf"].as_array().unwrap();
        assert_eq!(branches.len(), kinds().len());
        assert_eq!(
            branches[0],
            json!({"properties": {"kind": {"const": "tenant.created"},
                                  "payload": {"$ref": "#/$defs/TenantCreated"}},
                   "required": ["kind", "payload"]})
        );
        assert!(e["$defs"]["TenantCreated"].is_object());
        assert_eq!(e["additionalProperties"], json!(false));
        assert_eq!(e["properties"]["id"]["maxLength"], json!(200));
    }

    #[test]
    fn a_payload_schema_is_its_own_root() {
        let p = payload("user.deactivated").unwrap();
        assert_eq!(p["type"], "object");
        assert_eq!(p["required"], json!(["email"]));
        assert_eq!(p["additionalProperties"], json!(false));
        // Inlined at the root; only the types it refers to (its `tenant_id`) stay definitions.
        assert!(p["$defs"].get("UserDeactivated").is_none(), "{p}");
        assert!(p["$defs"]["TenantId"].is_object(), "{p}");
        let t = payload("tenant.created").unwrap();
        assert!(t["$defs"]["Person"].is_object(), "{t}");
    }
}

//! The desired-state document, version 1, and its validation.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metabase::models::{
    CollectionAccess, CollectionKey, CreateQueries, DataModel, Download, ViewData, YesNo,
};

/// A desired-state document: the groups it names, their data and collection access.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Must be 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Group name -> wanted access. Groups not named are never changed.
    pub groups: BTreeMap<String, GroupSpec>,
}

/// One group's wanted access. Databases and collections not named are not changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Database id -> access.
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": "^[1-9][0-9]*$"}))]
    pub data: BTreeMap<String, DbSpec>,
    /// Collection id or `root` -> read | write | none.
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": "^([1-9][0-9]*|root)$"}))]
    pub collections: BTreeMap<String, CollectionAccess>,
    /// Shared tenant collection id or `root` (the root shared collection) -> read | write |
    /// none: Metabase Tenants' own collection namespace (`shared-tenant-collection`, "External
    /// collections" in the UI). Tenant groups and All tenant users may view shared collections,
    /// never curate them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": "^([1-9][0-9]*|root)$"}))]
    pub shared_collections: BTreeMap<String, CollectionAccess>,
    /// Create the group as a tenant group (Metabase Tenants, `is_tenant_group`) when it is
    /// missing. An existing group is used as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tenant_group: bool,
}

/// Access to a whole database, or per table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DbSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_data: Option<ViewData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_queries: Option<CreateQueries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<Download>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_model: Option<DataModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<YesNo>,
    /// Table id -> access (schemas are resolved by the tool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": "^[1-9][0-9]*$"}))]
    pub tables: BTreeMap<String, TableSpec>,
}

/// Access to one table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TableSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_data: Option<ViewData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_queries: Option<CreateQueries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<Download>,
    /// Required exactly when `view-data` is `sandboxed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxRef>,
}

/// Rows of the table are filtered by `field_id` = the user's login attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxRef {
    #[serde(default = "default_attribute")]
    pub attribute: String,
    pub field_id: i64,
}

fn default_attribute() -> String {
    "organization_id".into()
}

/// A problem in a document: where (a dotted path) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DocumentError {
    pub path: String,
    pub reason: String,
}

fn err(path: impl Into<String>, reason: impl Into<String>) -> DocumentError {
    DocumentError {
        path: path.into(),
        reason: reason.into(),
    }
}

fn known<T: std::fmt::Display>(
    path: &str,
    v: &Option<T>,
    ok: impl Fn(&T) -> bool,
) -> Result<(), DocumentError> {
    match v {
        Some(v) if !ok(v) => Err(err(path, format!("unknown value {v:?}", v = v.to_string()))),
        _ => Ok(()),
    }
}

impl Document {
    /// Checks beyond the shape: version, ids, known values, sandbox rules, Administrators.
    pub fn validate(&self) -> Result<(), DocumentError> {
        if self.version != 1 {
            return Err(err(
                "version",
                format!("only version 1 is known, got {}", self.version),
            ));
        }
        for (name, group) in &self.groups {
            let at = format!("groups.{name}");
            if name.trim().is_empty() {
                return Err(err(at, "group names must not be blank"));
            }
            if name.eq_ignore_ascii_case("administrators") {
                return Err(err(at, "the Administrators group may never be named"));
            }
            crate::jobs::group_names::check(name).map_err(|reason| err(&at, reason))?;
            for (db, spec) in &group.data {
                let at = format!("{at}.data.{db}");
                positive_id(&at, db)?;
                spec.validate(&at)?;
            }
            let cells = [
                ("collections", &group.collections),
                ("shared_collections", &group.shared_collections),
            ];
            for (field, cells) in cells {
                for (key, access) in cells {
                    let at = format!("{at}.{field}.{key}");
                    key.parse::<CollectionKey>().map_err(|e| err(&at, e))?;
                    known(&at, &Some(access.clone()), |v| {
                        !matches!(v, CollectionAccess::Other(_))
                    })?;
                }
            }
        }
        Ok(())
    }
}

impl DbSpec {
    fn validate(&self, at: &str) -> Result<(), DocumentError> {
        known(&format!("{at}.view-data"), &self.view_data, |v| {
            matches!(
                v,
                ViewData::Unrestricted
                    | ViewData::Blocked
                    | ViewData::LegacyNoSelfService
                    | ViewData::Impersonated
            )
        })?;
        known(&format!("{at}.create-queries"), &self.create_queries, |v| {
            !matches!(v, CreateQueries::Other(_))
        })?;
        known(&format!("{at}.download"), &self.download, |v| {
            !matches!(v, Download::Other(_))
        })?;
        known(&format!("{at}.data-model"), &self.data_model, |v| {
            !matches!(v, DataModel::Other(_))
        })?;
        known(&format!("{at}.details"), &self.details, |v| {
            !matches!(v, YesNo::Other(_))
        })?;
        blocked_with_native(at, &self.view_data, &self.create_queries)?;
        for (table, spec) in &self.tables {
            let at = format!("{at}.tables.{table}");
            positive_id(&at, table)?;
            known(&format!("{at}.view-data"), &spec.view_data, |v| {
                matches!(
                    v,
                    ViewData::Unrestricted
                        | ViewData::Blocked
                        | ViewData::Sandboxed
                        | ViewData::LegacyNoSelfService
                )
            })?;
            known(&format!("{at}.create-queries"), &spec.create_queries, |v| {
                !matches!(v, CreateQueries::Other(_))
            })?;
            known(&format!("{at}.download"), &spec.download, |v| {
                !matches!(v, Download::Other(_))
            })?;
            blocked_with_native(&at, &spec.view_data, &spec.create_queries)?;
            match (&spec.view_data, &spec.sandbox) {
                (Some(ViewData::Sandboxed), None) => {
                    return Err(err(
                        format!("{at}.sandbox"),
                        "required when view-data is sandboxed",
                    ));
                }
                (Some(ViewData::Sandboxed), Some(s)) => {
                    if s.field_id <= 0 {
                        return Err(err(
                            format!("{at}.sandbox.field_id"),
                            "must be a positive id",
                        ));
                    }
                    if s.attribute.trim().is_empty() || s.attribute.starts_with('@') {
                        return Err(err(
                            format!("{at}.sandbox.attribute"),
                            "must be non-blank and not start with @",
                        ));
                    }
                }
                (_, Some(_)) => {
                    return Err(err(
                        format!("{at}.sandbox"),
                        "only allowed when view-data is sandboxed",
                    ));
                }
                (_, None) => {}
            }
        }
        Ok(())
    }
}

fn blocked_with_native(
    at: &str,
    view: &Option<ViewData>,
    create: &Option<CreateQueries>,
) -> Result<(), DocumentError> {
    if matches!(view, Some(ViewData::Blocked))
        && matches!(create, Some(CreateQueries::QueryBuilderAndNative))
    {
        return Err(err(
            at,
            "view-data blocked cannot go with create-queries query-builder-and-native",
        ));
    }
    Ok(())
}

fn positive_id(at: &str, key: &str) -> Result<i64, DocumentError> {
    key.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| err(at, format!("{key:?} is not a positive id")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Result<(), String> {
        let d: Document = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        d.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn the_contract_example_is_valid() {
        let yaml = r#"
version: 1
groups:
  "Analysts":
    data:
      "2": {view-data: unrestricted, create-queries: query-builder, download: full}
      "1":
        tables:
          "1": {view-data: sandboxed, create-queries: query-builder,
                sandbox: {attribute: organization_id, field_id: 11}}
          "2": {view-data: blocked, create-queries: "no"}
    collections:
      "1": read
      root: none
"#;
        assert_eq!(doc(yaml), Ok(()));
    }

    #[test]
    fn problems_name_their_place() {
        let cases = [
            (
                "version: 2\ngroups: {}",
                "version: only version 1 is known, got 2",
            ),
            (
                "version: 1\ngroups: {Administrators: {}}",
                "groups.Administrators: the Administrators group may never be named",
            ),
            (
                "version: 1\ngroups: {A: {data: {x: {}}}}",
                "groups.A.data.x: \"x\" is not a positive id",
            ),
            (
                "version: 1\ngroups: {A: {data: {\"1\": {view-data: maybe}}}}",
                "groups.A.data.1.view-data: unknown value \"maybe\"",
            ),
            (
                "version: 1\ngroups: {A: {data: {\"1\": {tables: {\"3\": {view-data: sandboxed}}}}}}",
                "groups.A.data.1.tables.3.sandbox: required when view-data is sandboxed",
            ),
            (
                "version: 1\ngroups: {A: {collections: {x: read}}}",
                "groups.A.collections.x: collection key must be a positive integer or \"root\", got \"x\"",
            ),
            (
                "version: 1\ngroups: {A: {shared_collections: {\"0\": read}}}",
                "groups.A.shared_collections.0: collection key must be a positive integer or \"root\", got \"0\"",
            ),
            (
                "version: 1\ngroups: {A: {shared_collections: {root: curate}}}",
                "groups.A.shared_collections.root: unknown value \"curate\"",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(doc(yaml), Err(want.to_string()), "{yaml}");
        }
        assert!(
            doc("version: 1\ngroups: {A: {dta: {}}}")
                .unwrap_err()
                .contains("unknown field `dta`")
        );
    }
}

//! From a job's access level to the explicit graph values that express it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metabase::models::{
    CreateQueries, DataModel, DbPerms, Download, Granular, Id, LegacyAccess, LegacyData,
    LegacyNative, LegacySplit, LegacyTableAccess, SchemaLevel, SchemasValue, ViewData, YesNo,
};

/// A tenant group's access to a database (`data_access` in the contract).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum DataAccess {
    #[default]
    QueryBuilder,
    QueryBuilderAndNative,
    ViewOnly,
    Sandboxed,
    None,
}

/// What the Metabase instance can do, read once from `/api/session/properties`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// EE `advanced_permissions`: `blocked`, download, data-model and details levels.
    pub advanced_permissions: bool,
    /// EE `sandboxes`: row-level security.
    pub sandboxes: bool,
    /// The instance speaks the <= v0.49 graph format.
    pub legacy_graph: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            advanced_permissions: true,
            sandboxes: true,
            legacy_graph: false,
        }
    }
}

/// Explicit values for `access` on a whole database. Every value the level implies is spelled
/// out, including the lowest ones, because a new group starts with a copy of All Users'
/// permissions and omitting a key would leave that copy in place.
///
/// Without advanced permissions (OSS), Metabase has no `blocked`, download, data-model or
/// details levels to set, so only `view-data` and `create-queries` are sent and `none` means
/// "cannot query" (`create-queries: no`).
pub fn db_perms(access: DataAccess, features: Features) -> DbPerms {
    let (view, create) = match access {
        DataAccess::QueryBuilderAndNative => (
            Some(ViewData::Unrestricted),
            CreateQueries::QueryBuilderAndNative,
        ),
        DataAccess::QueryBuilder => (Some(ViewData::Unrestricted), CreateQueries::QueryBuilder),
        DataAccess::ViewOnly => (Some(ViewData::Unrestricted), CreateQueries::No),
        // Sandboxed tables are set per table (see `sandboxed_tables`); the rest of the
        // database cannot be queried.
        DataAccess::Sandboxed => (None, CreateQueries::No),
        DataAccess::None if features.advanced_permissions => {
            (Some(ViewData::Blocked), CreateQueries::No)
        }
        DataAccess::None => (None, CreateQueries::No),
    };
    let mut perms = DbPerms {
        view_data: view.map(Granular::All),
        create_queries: Some(Granular::All(create)),
        ..DbPerms::default()
    };
    if features.advanced_permissions {
        let download = match access {
            DataAccess::None | DataAccess::Sandboxed => Download::None,
            _ => Download::Full,
        };
        perms.download = Some(SchemasValue::new(Granular::All(download)));
        perms.data_model = Some(SchemasValue::new(Granular::All(DataModel::None)));
        perms.details = Some(YesNo::No);
    }
    perms
}

/// Table-level values for sandboxed tables: `view-data: sandboxed` and `create-queries:
/// query-builder` (Metabase downgrades native access on sandboxed tables anyway).
pub fn sandboxed_tables(tables: &[(String, i64)], features: Features) -> DbPerms {
    fn per_table<T: Clone>(tables: &[(String, i64)], v: T) -> Granular<T> {
        let mut schemas: BTreeMap<String, BTreeMap<Id, T>> = BTreeMap::new();
        for (schema, table) in tables {
            schemas
                .entry(schema.clone())
                .or_default()
                .insert(Id(*table), v.clone());
        }
        Granular::Schemas(
            schemas
                .into_iter()
                .map(|(s, t)| (s, SchemaLevel::Tables(t)))
                .collect(),
        )
    }
    let mut perms = DbPerms {
        view_data: Some(per_table(tables, ViewData::Sandboxed)),
        create_queries: Some(per_table(tables, CreateQueries::QueryBuilder)),
        ..DbPerms::default()
    };
    if features.advanced_permissions {
        perms.download = Some(SchemasValue::new(per_table(tables, Download::Full)));
    }
    perms
}

/// Everything revoked, explicitly (`tenant.deleted`).
pub fn revoked(features: Features) -> DbPerms {
    db_perms(DataAccess::None, features)
}

/// The same wish in the <= v0.49 format (`data: {native, schemas}`), for old instances.
pub fn to_legacy(perms: &DbPerms) -> DbPerms {
    fn legacy_of(view: Option<&ViewData>, create: &CreateQueries) -> LegacyTableAccess {
        match (view, create) {
            (Some(ViewData::Blocked), _) => LegacyTableAccess::Value(LegacyAccess::Block),
            (Some(ViewData::Sandboxed), _) => LegacyTableAccess::Split(LegacySplit {
                read: "all".into(),
                query: Some("segmented".into()),
            }),
            (_, CreateQueries::No) => LegacyTableAccess::Value(LegacyAccess::None),
            _ => LegacyTableAccess::Value(LegacyAccess::All),
        }
    }
    let native = match &perms.create_queries {
        Some(Granular::All(CreateQueries::QueryBuilderAndNative)) => LegacyNative::Write,
        _ => LegacyNative::None,
    };
    let schemas = match (&perms.view_data, &perms.create_queries) {
        (Some(Granular::All(v)), Some(Granular::All(c))) => Granular::All(legacy_of(Some(v), c)),
        (None, Some(Granular::All(c))) => Granular::All(legacy_of(None, c)),
        (view, create) => {
            // Granular: one cell per table named by either value.
            let mut out: BTreeMap<String, BTreeMap<Id, LegacyTableAccess>> = BTreeMap::new();
            for (schema, table) in named_tables(view.as_ref()).chain(named_tables(create.as_ref()))
            {
                let v = view
                    .as_ref()
                    .map(|g| super::granular::resolve(Some(g), &schema, table.0));
                let c = create
                    .as_ref()
                    .map(|g| super::granular::resolve(Some(g), &schema, table.0))
                    .unwrap_or(CreateQueries::No);
                out.entry(schema)
                    .or_default()
                    .insert(table, legacy_of(v.as_ref(), &c));
            }
            Granular::Schemas(
                out.into_iter()
                    .map(|(s, t)| (s, SchemaLevel::Tables(t)))
                    .collect(),
            )
        }
    };
    DbPerms {
        data: Some(LegacyData {
            native: Some(native),
            schemas: Some(schemas),
            extra: Default::default(),
        }),
        ..DbPerms::default()
    }
}

fn named_tables<T>(g: Option<&Granular<T>>) -> impl Iterator<Item = (String, Id)> + '_ {
    let schemas = match g {
        Some(Granular::Schemas(s)) => Some(s),
        _ => None,
    };
    schemas.into_iter().flat_map(|s| {
        s.iter().flat_map(|(schema, level)| match level {
            SchemaLevel::Tables(t) => t.keys().map(|id| (schema.clone(), *id)).collect::<Vec<_>>(),
            SchemaLevel::All(_) => Vec::new(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn j(p: &DbPerms) -> serde_json::Value {
        serde_json::to_value(p).unwrap()
    }

    const EE: Features = Features {
        advanced_permissions: true,
        sandboxes: true,
        legacy_graph: false,
    };
    const OSS: Features = Features {
        advanced_permissions: false,
        sandboxes: false,
        legacy_graph: false,
    };

    #[test]
    fn each_level_spells_out_every_value() {
        let cases = [
            (
                DataAccess::QueryBuilder,
                EE,
                json!({"view-data": "unrestricted", "create-queries": "query-builder",
                "download": {"schemas": "full"}, "data-model": {"schemas": "none"}, "details": "no"}),
            ),
            (
                DataAccess::QueryBuilderAndNative,
                OSS,
                json!({"view-data": "unrestricted",
                "create-queries": "query-builder-and-native"}),
            ),
            (
                DataAccess::ViewOnly,
                OSS,
                json!({"view-data": "unrestricted", "create-queries": "no"}),
            ),
            (
                DataAccess::None,
                EE,
                json!({"view-data": "blocked", "create-queries": "no",
                "download": {"schemas": "none"}, "data-model": {"schemas": "none"}, "details": "no"}),
            ),
            (DataAccess::None, OSS, json!({"create-queries": "no"})),
            (DataAccess::Sandboxed, OSS, json!({"create-queries": "no"})),
        ];
        for (access, features, want) in cases {
            assert_eq!(j(&db_perms(access, features)), want, "{access:?}");
        }
    }

    #[test]
    fn sandboxed_tables_are_table_level() {
        let p = sandboxed_tables(
            &[("PUBLIC".into(), 10), ("PUBLIC".into(), 11), ("".into(), 5)],
            OSS,
        );
        assert_eq!(
            j(&p),
            json!({"view-data": {"PUBLIC": {"10": "sandboxed", "11": "sandboxed"}, "": {"5": "sandboxed"}},
                   "create-queries": {"PUBLIC": {"10": "query-builder", "11": "query-builder"}, "": {"5": "query-builder"}}})
        );
    }

    #[test]
    fn legacy_translation() {
        let cases = [
            (
                DataAccess::QueryBuilderAndNative,
                json!({"data": {"native": "write", "schemas": "all"}}),
            ),
            (
                DataAccess::QueryBuilder,
                json!({"data": {"native": "none", "schemas": "all"}}),
            ),
            (
                DataAccess::ViewOnly,
                json!({"data": {"native": "none", "schemas": "none"}}),
            ),
            (
                DataAccess::None,
                json!({"data": {"native": "none", "schemas": "block"}}),
            ),
        ];
        for (access, want) in cases {
            assert_eq!(j(&to_legacy(&db_perms(access, EE))), want, "{access:?}");
        }
        let sandboxed = to_legacy(&sandboxed_tables(&[("PUBLIC".into(), 10)], OSS));
        assert_eq!(
            j(&sandboxed),
            json!({"data": {"native": "none", "schemas": {"PUBLIC": {"10": {"read": "all", "query": "segmented"}}}}})
        );
    }
}

//! The data permissions graph (metabase-api.md §5): stored per group per table, rendered the
//! way Metabase's `api-graph` does. PUTs are in `data_put`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::catalog::DatabaseRec;
use super::{ADMIN_GROUP, State};
use crate::metabase::models::{
    CreateQueries, DataGraph, DataGroups, DataModel, DbPerms, Download, Granular, Id, SchemaLevel,
    SchemasValue, ViewData, YesNo,
};

/// What one group may do with one table, as stored (no `sandboxed`/`impersonated`: those are
/// `unrestricted` plus a row elsewhere).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TablePerms {
    #[serde(rename = "view-data")]
    pub view_data: ViewData,
    #[serde(rename = "create-queries")]
    pub create_queries: CreateQueries,
    pub download: Download,
    #[serde(rename = "data-model")]
    pub data_model: DataModel,
}

impl Default for TablePerms {
    /// The least permissive values: what a missing row means.
    fn default() -> Self {
        TablePerms {
            view_data: ViewData::Blocked,
            create_queries: CreateQueries::No,
            download: Download::None,
            data_model: DataModel::None,
        }
    }
}

/// Database-level-only permissions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DbFlags {
    pub details: YesNo,
    pub transforms: YesNo,
}

impl Default for DbFlags {
    fn default() -> Self {
        DbFlags {
            details: YesNo::No,
            transforms: YesNo::No,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DataPerms {
    /// Group -> table -> permissions. A missing entry means [`TablePerms::default`].
    pub tables: BTreeMap<i64, BTreeMap<i64, TablePerms>>,
    /// Group -> database -> flags.
    pub dbs: BTreeMap<i64, BTreeMap<i64, DbFlags>>,
}

impl DataPerms {
    pub fn table(&self, group: i64, table: i64) -> TablePerms {
        self.tables
            .get(&group)
            .and_then(|t| t.get(&table))
            .cloned()
            .unwrap_or_default()
    }

    pub fn flags(&self, group: i64, db: i64) -> DbFlags {
        self.dbs
            .get(&group)
            .and_then(|d| d.get(&db))
            .cloned()
            .unwrap_or_default()
    }

    /// Metabase's default for a newly added database.
    pub fn grant_default(&mut self, group: i64, db: &DatabaseRec) {
        let tables = self.tables.entry(group).or_default();
        for t in &db.tables {
            tables.insert(
                t.id,
                TablePerms {
                    view_data: ViewData::Unrestricted,
                    create_queries: CreateQueries::QueryBuilderAndNative,
                    download: Download::Full,
                    data_model: DataModel::None,
                },
            );
        }
    }

    /// A new group's permissions on one database (`new-group-permissions`, correction 3,
    /// test `set-default-permission-values!-test`): view-data `unrestricted` (`blocked` when
    /// `blocked` says so: Pro/EE where All Users is blocked or sandboxed there);
    /// create-queries and download = All Users' most restrictive value in the database;
    /// data-model, details and transforms `no`.
    pub fn grant_new_group(&mut self, group: i64, template: i64, db: &DatabaseRec, blocked: bool) {
        let cells: Vec<TablePerms> = db
            .tables
            .iter()
            .map(|t| self.table(template, t.id))
            .collect();
        let create_queries = cells
            .iter()
            .map(|c| c.create_queries.clone())
            .max_by_key(|v| rank(CreateQueries::KNOWN, v))
            .unwrap_or(CreateQueries::No);
        let download = cells
            .iter()
            .map(|c| c.download.clone())
            .max_by_key(|v| rank(Download::KNOWN, v))
            .unwrap_or(Download::None);
        let tables = self.tables.entry(group).or_default();
        for t in &db.tables {
            tables.insert(
                t.id,
                TablePerms {
                    view_data: if blocked {
                        ViewData::Blocked
                    } else {
                        ViewData::Unrestricted
                    },
                    create_queries: if blocked {
                        CreateQueries::No
                    } else {
                        create_queries.clone()
                    },
                    download: download.clone(),
                    data_model: DataModel::None,
                },
            );
        }
    }

    pub fn copy_group(&mut self, from: i64, to: i64) {
        if let Some(t) = self.tables.get(&from).cloned() {
            self.tables.insert(to, t);
        }
        if let Some(d) = self.dbs.get(&from).cloned() {
            self.dbs.insert(to, d);
        }
    }

    pub fn remove_group(&mut self, group: i64) {
        self.tables.remove(&group);
        self.dbs.remove(&group);
    }
}

/// The position of `v` in `known` (most permissive first): higher is more restrictive.
fn rank<T: PartialEq>(known: &[T], v: &T) -> usize {
    known.iter().position(|k| k == v).unwrap_or(known.len())
}

/// What Metabase shows for Administrators on every database.
pub fn admin_db_perms() -> DbPerms {
    DbPerms {
        view_data: Some(Granular::All(ViewData::Unrestricted)),
        create_queries: Some(Granular::All(CreateQueries::QueryBuilderAndNative)),
        download: Some(SchemasValue::new(Granular::All(Download::Full))),
        data_model: Some(SchemasValue::new(Granular::All(DataModel::All))),
        details: Some(YesNo::Yes),
        transforms: Some(YesNo::Yes),
        ..DbPerms::default()
    }
}

/// One table's value of one permission type, with the schema it sits in.
type Cell<'a, T> = (&'a str, i64, T);

/// Collapses per-table values the way `api-graph` does: one db value when all tables agree,
/// else per schema (one value when the schema agrees, else per table); least values left out.
fn collapse<T: Clone + PartialEq>(cells: &[Cell<'_, T>], least: &T) -> Option<Granular<T>> {
    let first = &cells.first()?.2;
    if cells.iter().all(|c| &c.2 == first) {
        return (first != least).then(|| Granular::All(first.clone()));
    }
    let mut by_schema: BTreeMap<&str, Vec<(i64, &T)>> = BTreeMap::new();
    for (schema, table, value) in cells {
        by_schema.entry(schema).or_default().push((*table, value));
    }
    let mut schemas = BTreeMap::new();
    for (schema, values) in by_schema {
        let head = values[0].1;
        if values.iter().all(|v| v.1 == head) {
            if head != least {
                schemas.insert(schema.to_string(), SchemaLevel::All(head.clone()));
            }
        } else {
            let tables: BTreeMap<Id, T> = values
                .into_iter()
                .filter(|(_, v)| *v != least)
                .map(|(id, v)| (Id(id), v.clone()))
                .collect();
            schemas.insert(schema.to_string(), SchemaLevel::Tables(tables));
        }
    }
    (!schemas.is_empty()).then_some(Granular::Schemas(schemas))
}

/// Per-table values without collapsing: how EE renders `view-data` once a group has sandboxes
/// ("db/schema values are split into per-table values"); least values left out.
fn per_table<T: Clone + PartialEq>(cells: &[Cell<'_, T>], least: &T) -> Option<Granular<T>> {
    let mut schemas: BTreeMap<String, BTreeMap<Id, T>> = BTreeMap::new();
    for (schema, table, value) in cells {
        if value != least {
            schemas
                .entry(schema.to_string())
                .or_default()
                .insert(Id(*table), value.clone());
        }
    }
    (!schemas.is_empty()).then(|| {
        Granular::Schemas(
            schemas
                .into_iter()
                .map(|(s, t)| (s, SchemaLevel::Tables(t)))
                .collect(),
        )
    })
}

impl State {
    fn sandboxed_tables(&self, group: i64) -> BTreeSet<i64> {
        self.sandboxes
            .values()
            .filter(|s| s.group_id == group)
            .map(|s| s.table_id)
            .collect()
    }

    /// One group's entry for one database as GET shows it; `None` when everything is least.
    pub fn render_group_db(&self, group: i64, db: &DatabaseRec) -> Option<DbPerms> {
        if group == ADMIN_GROUP {
            return Some(admin_db_perms());
        }
        let sandboxed = self.sandboxed_tables(group);
        let rows: Vec<(&str, i64, TablePerms)> = db
            .tables
            .iter()
            .map(|t| (t.schema, t.id, self.data.table(group, t.id)))
            .collect();
        let cells = |f: &dyn Fn(i64, &TablePerms) -> ViewData| -> Vec<Cell<'_, ViewData>> {
            rows.iter().map(|(s, t, p)| (*s, *t, f(*t, p))).collect()
        };
        let view = cells(&|t, p| {
            if sandboxed.contains(&t) {
                ViewData::Sandboxed
            } else {
                p.view_data.clone()
            }
        });
        let cq: Vec<Cell<'_, CreateQueries>> = rows
            .iter()
            .map(|(s, t, p)| (*s, *t, p.create_queries.clone()))
            .collect();
        let dl: Vec<Cell<'_, Download>> = rows
            .iter()
            .map(|(s, t, p)| (*s, *t, p.download.clone()))
            .collect();
        let dm: Vec<Cell<'_, DataModel>> = rows
            .iter()
            .map(|(s, t, p)| (*s, *t, p.data_model.clone()))
            .collect();
        let flags = self.data.flags(group, db.id);
        let perms = DbPerms {
            view_data: if !rows.iter().any(|(_, t, _)| sandboxed.contains(t)) {
                collapse(&view, &ViewData::Blocked)
            } else {
                per_table(&view, &ViewData::Blocked)
            },
            create_queries: collapse(&cq, &CreateQueries::No),
            download: collapse(&dl, &Download::None).map(SchemasValue::new),
            data_model: collapse(&dm, &DataModel::None).map(SchemasValue::new),
            details: (flags.details == YesNo::Yes).then_some(YesNo::Yes),
            transforms: (flags.transforms == YesNo::Yes).then_some(YesNo::Yes),
            ..DbPerms::default()
        };
        (perms != DbPerms::default()).then_some(perms)
    }

    /// The GET graph, optionally restricted to some groups and/or one database. Groups whose
    /// every value is least are left out.
    pub fn render_data_graph(&self, groups: Option<&[i64]>, db: Option<i64>) -> DataGraph {
        let mut out = DataGroups::new();
        let ids: Vec<i64> = match groups {
            Some(g) => g.to_vec(),
            None => self.groups.keys().copied().collect(),
        };
        // Tenant groups are left out while `use-tenants` is off (metabase-test-facts.md 30,
        // `hide-tenant-groups-from-graph-test`).
        for g in ids
            .into_iter()
            .filter(|g| self.groups.contains_key(g) && self.group_visible(*g))
        {
            let entry: BTreeMap<Id, DbPerms> = self
                .catalog
                .databases
                .iter()
                .filter(|d| db.is_none_or(|id| id == d.id))
                .filter_map(|d| self.render_group_db(g, d).map(|p| (Id(d.id), p)))
                .collect();
            if !entry.is_empty() {
                out.insert(Id(g), entry);
            }
        }
        DataGraph {
            revision: self.data_revision,
            groups: out,
            ..DataGraph::default()
        }
    }
}

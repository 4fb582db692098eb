//! The data permissions graph (metabase-api.md §5/§6): stored per group per table, rendered the
//! way Metabase's `api-graph` does, changed by partial PUTs.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::catalog::DatabaseRec;
use super::{ADMIN_GROUP, State};
use crate::emulator::error::{ApiError, ApiResult, text};
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

/// The level a value was given at in a PUT body (some values are legal at one level only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Db,
    Schema,
    Table,
}

/// The values a PUT sets on one table; `None` = not mentioned, left unchanged.
#[derive(Clone, Debug, Default, PartialEq)]
struct Patch {
    view_data: Option<ViewData>,
    create_queries: Option<CreateQueries>,
    download: Option<Download>,
    data_model: Option<DataModel>,
}

/// Everything a valid PUT will change, computed before anything is written.
#[derive(Debug, Default)]
struct Plan {
    tables: BTreeMap<(i64, i64), Patch>,
    flags: BTreeMap<(i64, i64), (Option<YesNo>, Option<YesNo>)>,
}

/// Calls `set` for every table a granular value covers.
fn expand<T: Clone>(
    value: &Granular<T>,
    db: &DatabaseRec,
    mut set: impl FnMut(i64, T, Level) -> Result<(), String>,
) -> Result<(), String> {
    match value {
        Granular::All(v) => {
            for t in &db.tables {
                set(t.id, v.clone(), Level::Db)?;
            }
        }
        Granular::Schemas(schemas) => {
            for (schema, level) in schemas {
                let tables: Vec<i64> = db
                    .tables
                    .iter()
                    .filter(|t| t.schema == schema)
                    .map(|t| t.id)
                    .collect();
                if tables.is_empty() {
                    return Err(format!("database {} has no schema {schema:?}", db.id));
                }
                match level {
                    SchemaLevel::All(v) => {
                        for t in tables {
                            set(t, v.clone(), Level::Schema)?;
                        }
                    }
                    SchemaLevel::Tables(per_table) => {
                        for (Id(t), v) in per_table {
                            if !tables.contains(t) {
                                return Err(format!("schema {schema:?} has no table {t}"));
                            }
                            set(*t, v.clone(), Level::Table)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn known<T: PartialEq + std::fmt::Display>(v: &T, known: &[T], what: &str) -> Result<(), String> {
    if known.contains(v) {
        Ok(())
    } else {
        Err(format!("\"{v}\" is not a valid {what} value"))
    }
}

fn check_view_data(v: &ViewData, level: Level) -> Result<(), String> {
    known(v, ViewData::KNOWN, "view-data")?;
    match (v, level) {
        (ViewData::Sandboxed, Level::Db | Level::Schema) => {
            Err("view-data \"sandboxed\" is only valid for a table".into())
        }
        (ViewData::Impersonated, Level::Schema | Level::Table) => {
            Err("view-data \"impersonated\" is only valid for a whole database".into())
        }
        _ => Ok(()),
    }
}

/// Turns one group's entry for one database into per-table patches, validating every value.
fn plan_db(plan: &mut Plan, group: i64, db: &DatabaseRec, perms: &DbPerms) -> Result<(), String> {
    if perms.data.is_some() {
        return Err(format!(
            "group {group} database {}: the legacy \"data\" key is not accepted since v0.50",
            db.id
        ));
    }
    if let Some(key) = perms.extra.keys().next() {
        return Err(format!(
            "group {group} database {}: unknown key {key:?}",
            db.id
        ));
    }
    let mut touched: BTreeMap<i64, Patch> = BTreeMap::new();
    if let Some(v) = &perms.view_data {
        expand(v, db, |t, v, level| {
            check_view_data(&v, level)?;
            touched.entry(t).or_default().view_data = Some(v);
            Ok(())
        })?;
    }
    if let Some(v) = &perms.create_queries {
        expand(v, db, |t, v, _| {
            known(&v, CreateQueries::KNOWN, "create-queries")?;
            touched.entry(t).or_default().create_queries = Some(v);
            Ok(())
        })?;
    }
    if let Some(v) = &perms.download {
        expand(&v.schemas, db, |t, v, _| {
            known(&v, Download::KNOWN, "download")?;
            touched.entry(t).or_default().download = Some(v);
            Ok(())
        })?;
    }
    if let Some(v) = &perms.data_model {
        expand(&v.schemas, db, |t, v, _| {
            known(&v, DataModel::KNOWN, "data-model")?;
            touched.entry(t).or_default().data_model = Some(v);
            Ok(())
        })?;
    }
    for (t, p) in touched {
        if p.view_data == Some(ViewData::Blocked)
            && p.create_queries == Some(CreateQueries::QueryBuilderAndNative)
        {
            return Err(format!(
                "group {group} table {t}: view-data \"blocked\" cannot go with create-queries \"query-builder-and-native\""
            ));
        }
        plan.tables.insert((group, t), p);
    }
    for flag in [&perms.details, &perms.transforms].into_iter().flatten() {
        known(flag, YesNo::KNOWN, "details/transforms")?;
    }
    if perms.details.is_some() || perms.transforms.is_some() {
        plan.flags.insert(
            (group, db.id),
            (perms.details.clone(), perms.transforms.clone()),
        );
    }
    Ok(())
}

/// Whether a patch or flag change for Administrators differs from what is synthesised.
fn changes_admin(plan: &Plan) -> bool {
    let tables = plan
        .tables
        .iter()
        .filter(|((g, _), _)| *g == ADMIN_GROUP)
        .any(|(_, p)| {
            p.view_data
                .as_ref()
                .is_some_and(|v| *v != ViewData::Unrestricted)
                || p.create_queries
                    .as_ref()
                    .is_some_and(|v| *v != CreateQueries::QueryBuilderAndNative)
                || p.download.as_ref().is_some_and(|v| *v != Download::Full)
                || p.data_model.as_ref().is_some_and(|v| *v != DataModel::All)
        });
    let flags = plan
        .flags
        .iter()
        .filter(|((g, _), _)| *g == ADMIN_GROUP)
        .any(|(_, (d, t))| {
            d.as_ref().is_some_and(|v| *v != YesNo::Yes)
                || t.as_ref().is_some_and(|v| *v != YesNo::Yes)
        });
    tables || flags
}

/// What a successful `PUT /api/permissions/graph` did.
#[derive(Debug)]
pub struct DataPutOutcome {
    pub revision: i64,
    pub groups: Vec<i64>,
    pub sandboxes: Option<Vec<super::SandboxRec>>,
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
            view_data: collapse(&view, &ViewData::Blocked),
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
        for g in ids.into_iter().filter(|g| self.groups.contains_key(g)) {
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

    /// `PUT /api/permissions/graph`: validate, check the revision, then change only what the
    /// body names. Every success bumps the revision, even when nothing changed.
    pub fn put_data_graph(&mut self, body: &Value, force: bool) -> ApiResult<DataPutOutcome> {
        let groups: DataGroups = match body.get("groups") {
            None | Some(Value::Null) => DataGroups::new(),
            Some(g) => serde_json::from_value(g.clone()).map_err(ApiError::invalid_graph)?,
        };
        let mut plan = Plan::default();
        for (Id(group), dbs) in &groups {
            if !self.groups.contains_key(group) {
                return Err(ApiError::invalid_graph(format!(
                    "group {group} does not exist"
                )));
            }
            for (Id(db), perms) in dbs {
                let db = self.catalog.database(*db).ok_or_else(|| {
                    ApiError::invalid_graph(format!("database {db} does not exist"))
                })?;
                plan_db(&mut plan, *group, db, perms).map_err(ApiError::invalid_graph)?;
            }
        }
        let sandbox_items: Vec<Value> = match body.get("sandboxes") {
            Some(Value::Array(items)) => items.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(ApiError::invalid_graph("\"sandboxes\" must be an array")),
        };
        let revision = body.get("revision").and_then(Value::as_i64);
        if !force && revision != Some(self.data_revision) {
            return Err(ApiError::stale_revision());
        }
        if self.edition.oss {
            if plan
                .tables
                .values()
                .any(|p| p.view_data == Some(ViewData::Blocked))
            {
                return Err(ApiError::plain(
                    StatusCode::PAYMENT_REQUIRED,
                    text::BLOCKED_NEEDS_TOKEN,
                ));
            }
            if !sandbox_items.is_empty() {
                return Err(ApiError::plain(
                    StatusCode::PAYMENT_REQUIRED,
                    text::SANDBOXES_PAID,
                ));
            }
        }
        if changes_admin(&plan) {
            return Err(ApiError::bad_request(text::ADMIN_PERMISSIONS));
        }
        let sandbox_plan = self.plan_sandbox_upserts(&sandbox_items)?;
        for ((group, table), p) in plan.tables {
            if group == ADMIN_GROUP {
                continue;
            }
            let cell = self
                .data
                .tables
                .entry(group)
                .or_default()
                .entry(table)
                .or_default();
            if let Some(v) = p.view_data {
                // Sandboxes and impersonations live in their own rows; the stored value is
                // unrestricted either way.
                cell.view_data = match v {
                    ViewData::Sandboxed | ViewData::Impersonated => ViewData::Unrestricted,
                    other => other,
                };
            }
            if let Some(v) = p.create_queries {
                cell.create_queries = v;
            }
            if let Some(v) = p.download {
                cell.download = v;
            }
            if let Some(v) = p.data_model {
                cell.data_model = v;
            }
        }
        for ((group, db), (details, transforms)) in plan.flags {
            if group == ADMIN_GROUP {
                continue;
            }
            let flags = self
                .data
                .dbs
                .entry(group)
                .or_default()
                .entry(db)
                .or_default();
            if let Some(v) = details {
                flags.details = v;
            }
            if let Some(v) = transforms {
                flags.transforms = v;
            }
        }
        let sandboxes =
            (!sandbox_items.is_empty()).then(|| self.apply_sandbox_upserts(sandbox_plan));
        self.data_revision += 1;
        Ok(DataPutOutcome {
            revision: self.data_revision,
            groups: groups.keys().map(|g| g.0).collect(),
            sandboxes,
        })
    }
}

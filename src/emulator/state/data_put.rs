//! `PUT /api/permissions/graph`: validates a partial graph into per-table patches, then applies
//! only what the body names (metabase-api.md §5, §6).

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::catalog::DatabaseRec;
use super::{ADMIN_GROUP, State};
use crate::emulator::error::{ApiError, ApiResult, text};
use crate::metabase::models::{
    CreateQueries, DataGroups, DataModel, DbPerms, Download, Granular, Id, SchemaLevel, ViewData,
    YesNo,
};

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
    /// (group, table) whose sandbox the new view-data deletes: every table a database- or
    /// schema-level value covers, and a table given a value other than `sandboxed`
    /// (correction 7; test `revoke-perms-delete-gtaps-test`).
    sandbox_drops: BTreeSet<(i64, i64)>,
    /// A database-level `blocked`, the only `blocked` that needs advanced permissions.
    db_blocked: bool,
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
    // Undeclared per-database keys are dropped, not echoed (tests
    // `update-perms-graph-drops-undeclared-keys-test`, `update-perms-graph-drops-unknown-db-perms-test`).
    let mut touched: BTreeMap<i64, Patch> = BTreeMap::new();
    if let Some(v) = &perms.view_data {
        plan.db_blocked |= matches!(v, Granular::All(ViewData::Blocked));
        expand(v, db, |t, v, level| {
            check_view_data(&v, level)?;
            if level != Level::Table || v != ViewData::Sandboxed {
                plan.sandbox_drops.insert((group, t));
            }
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
    /// `PUT /api/permissions/graph`: validate, check the revision, then change only what the
    /// body names. Every success bumps the revision, even when nothing changed.
    pub fn put_data_graph(&mut self, body: &Value, force: bool) -> ApiResult<DataPutOutcome> {
        if !body.is_object() {
            return Err(ApiError::invalid_graph("the body must be a map"));
        }
        let groups: DataGroups = match body.get("groups") {
            None | Some(Value::Null) => DataGroups::new(),
            Some(g) => serde_json::from_value(g.clone()).map_err(ApiError::invalid_graph)?,
        };
        // While `use-tenants` is off a PUT naming a tenant group is refused whole, naming them
        // (metabase-test-facts.md 30, `update-perms-graph-rejects-tenant-groups-test`). The
        // check's place before the revision check is an assumption (the fact gives no order).
        let hidden: Vec<i64> = groups
            .keys()
            .map(|Id(g)| *g)
            .filter(|g| self.groups.contains_key(g) && !self.group_visible(*g))
            .collect();
        if !hidden.is_empty() {
            return Err(ApiError::Json(
                StatusCode::BAD_REQUEST,
                json!({"errors": {"tenant-group-ids": hidden}}),
            ));
        }
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
        let json_402 = self.edition.json_premium_errors();
        if !self.edition.advanced_permissions() {
            // Only a database-level `blocked` needs the token; schema and table level are
            // accepted by the free edition (correction 8).
            if plan.db_blocked {
                return Err(ApiError::plain(
                    StatusCode::PAYMENT_REQUIRED,
                    text::BLOCKED_NEEDS_TOKEN,
                ));
            }
            let impersonations = body
                .get("impersonations")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            let impersonated = plan
                .tables
                .values()
                .any(|p| p.view_data == Some(ViewData::Impersonated));
            if impersonations || impersonated {
                return Err(ApiError::premium(json_402, text::IMPERSONATION_PAID));
            }
        }
        if !self.edition.sandboxes() && !sandbox_items.is_empty() {
            return Err(ApiError::premium(json_402, text::SANDBOXES_PAID));
        }
        if changes_admin(&plan) {
            return Err(ApiError::bad_request(text::ADMIN_PERMISSIONS));
        }
        let sandbox_plan = self.plan_sandbox_upserts(&sandbox_items, &plan.sandbox_drops)?;
        if self.edition.sandboxes() {
            let drops = &plan.sandbox_drops;
            self.sandboxes
                .retain(|_, s| !drops.contains(&(s.group_id, s.table_id)));
        }
        // Newest OSS: granting queries on a blocked row lifts view-data to unrestricted (test
        // `oss-edit-create-queries-on-blocked-row-test`).
        let lift_blocked = !self.edition.advanced_permissions() && self.edition.v057_fields();
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
                if lift_blocked && v != CreateQueries::No && cell.view_data == ViewData::Blocked {
                    cell.view_data = ViewData::Unrestricted;
                }
                cell.create_queries = v;
            }
            if let Some(v) = p.download {
                cell.download = v;
            }
            // Blocked tables cannot download (test `update-perms-graph-blocked-view-data-test`).
            if cell.view_data == ViewData::Blocked {
                cell.download = Download::None;
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

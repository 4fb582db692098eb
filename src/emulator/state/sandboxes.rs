//! Sandboxes (EE row-level filters), written through the graph PUT or `/api/mt/gtap`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Sequences, State};
use crate::emulator::error::{ApiError, ApiResult};
use crate::metabase::models::{CreateQueries, Extra, Sandbox};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SandboxRec {
    pub id: i64,
    pub group_id: i64,
    pub table_id: i64,
    pub card_id: Option<i64>,
    pub attribute_remappings: BTreeMap<String, Value>,
}

impl SandboxRec {
    pub fn to_model(&self) -> Sandbox {
        Sandbox {
            id: Some(self.id),
            group_id: Some(self.group_id),
            table_id: Some(self.table_id),
            card_id: self.card_id,
            attribute_remappings: self.attribute_remappings.clone(),
            extra: Extra::new(),
        }
    }
}

/// One validated entry of a `sandboxes` array.
#[derive(Clone, Debug)]
pub enum Upsert {
    Insert {
        group_id: i64,
        table_id: i64,
        card_id: Option<i64>,
        remappings: BTreeMap<String, Value>,
    },
    /// Outer `None` = key absent (unchanged); `null` clears.
    Update {
        id: i64,
        card_id: Option<Option<i64>>,
        remappings: Option<BTreeMap<String, Value>>,
    },
}

fn duplicate() -> ApiError {
    // The unique (table_id, group_id) constraint surfaces as a 500 (metabase#64460).
    ApiError::Json(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"message": "ERROR: duplicate key value violates unique constraint \"unique_gtap_table_id_group_id\""}),
    )
}

fn remappings(v: Option<&Value>) -> ApiResult<Option<BTreeMap<String, Value>>> {
    match v {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(BTreeMap::new())),
        Some(Value::Object(m)) => Ok(Some(m.clone().into_iter().collect())),
        Some(_) => Err(ApiError::schema(
            "attribute_remappings",
            "value must be a map of attribute names to targets.",
        )),
    }
}

impl State {
    fn parse_upsert(&self, item: &Value) -> ApiResult<Upsert> {
        let int = |k: &str| item.get(k).and_then(Value::as_i64);
        let card_id = item.get("card_id").map(Value::as_i64);
        let remap = remappings(item.get("attribute_remappings"))?;
        if let Some(id) = int("id") {
            let existing = self.sandboxes.get(&id).ok_or_else(ApiError::not_found)?;
            if int("table_id").is_some_and(|t| t != existing.table_id) {
                return Err(ApiError::bad_request(
                    "You cannot change the table ID of a sandbox once it has been created.",
                ));
            }
            return Ok(Upsert::Update {
                id,
                card_id,
                remappings: remap,
            });
        }
        let (Some(group_id), Some(table_id)) = (int("group_id"), int("table_id")) else {
            return Err(ApiError::schema(
                "table_id",
                "value must be an integer greater than zero.",
            ));
        };
        if !self.groups.contains_key(&group_id) || self.catalog.table(table_id).is_none() {
            return Err(ApiError::not_found());
        }
        Ok(Upsert::Insert {
            group_id,
            table_id,
            card_id: card_id.flatten(),
            remappings: remap.unwrap_or_default(),
        })
    }

    /// Validates a `sandboxes` array without changing anything.
    /// `dropping`: (group, table) pairs whose sandbox the same PUT deletes first.
    pub(super) fn plan_sandbox_upserts(
        &self,
        items: &[Value],
        dropping: &std::collections::BTreeSet<(i64, i64)>,
    ) -> ApiResult<Vec<Upsert>> {
        let mut inserted: Vec<(i64, i64)> = Vec::new();
        let mut plan = Vec::new();
        for item in items {
            let upsert = self.parse_upsert(item)?;
            if let Upsert::Insert {
                group_id, table_id, ..
            } = &upsert
            {
                let key = (*group_id, *table_id);
                let exists = !dropping.contains(&key)
                    && self
                        .sandboxes
                        .values()
                        .any(|s| (s.group_id, s.table_id) == key);
                if exists || inserted.contains(&key) {
                    return Err(duplicate());
                }
                inserted.push(key);
            }
            plan.push(upsert);
        }
        Ok(plan)
    }

    pub(super) fn apply_sandbox_upserts(&mut self, plan: Vec<Upsert>) -> Vec<SandboxRec> {
        let mut out = Vec::new();
        for upsert in plan {
            let id = match upsert {
                Upsert::Insert {
                    group_id,
                    table_id,
                    card_id,
                    remappings,
                } => self.insert_sandbox(group_id, table_id, card_id, remappings),
                Upsert::Update {
                    id,
                    card_id,
                    remappings,
                } => {
                    if let Some(s) = self.sandboxes.get_mut(&id) {
                        if let Some(c) = card_id {
                            s.card_id = c;
                        }
                        if let Some(r) = remappings {
                            s.attribute_remappings = r;
                        }
                    }
                    id
                }
            };
            if let Some(s) = self.sandboxes.get(&id) {
                out.push(s.clone());
            }
        }
        out
    }

    /// A sandboxed group loses native queries on the table's database.
    fn insert_sandbox(
        &mut self,
        group_id: i64,
        table_id: i64,
        card_id: Option<i64>,
        attribute_remappings: BTreeMap<String, Value>,
    ) -> i64 {
        let id = Sequences::take(&mut self.seq.sandbox);
        self.sandboxes.insert(
            id,
            SandboxRec {
                id,
                group_id,
                table_id,
                card_id,
                attribute_remappings,
            },
        );
        let db_tables: Vec<i64> = self
            .catalog
            .table(table_id)
            .and_then(|t| self.catalog.database(t.db_id))
            .map(|d| d.tables.iter().map(|t| t.id).collect())
            .unwrap_or_default();
        if let Some(tables) = self.data.tables.get_mut(&group_id) {
            for t in db_tables {
                if let Some(cell) = tables.get_mut(&t)
                    && cell.create_queries == CreateQueries::QueryBuilderAndNative
                {
                    cell.create_queries = CreateQueries::QueryBuilder;
                }
            }
        }
        id
    }

    /// `POST /api/mt/gtap`.
    pub fn create_sandbox(&mut self, body: &Value) -> ApiResult<SandboxRec> {
        let mut item = body.clone();
        if let Some(o) = item.as_object_mut() {
            o.remove("id");
        }
        let plan = self.plan_sandbox_upserts(&[item], &Default::default())?;
        self.apply_sandbox_upserts(plan)
            .pop()
            .ok_or_else(ApiError::not_found)
    }

    /// `POST /api/mt/gtap/validate`: the checks of a create, without writing (test
    /// `validate-sandbox-test`).
    pub fn validate_sandbox(&self, body: &Value) -> ApiResult<()> {
        let mut item = body.clone();
        if let Some(o) = item.as_object_mut() {
            o.remove("id");
        }
        self.parse_upsert(&item).map(|_| ())
    }

    /// `GET /api/mt/gtap` with optional filters.
    pub fn list_sandboxes(&self, group_id: Option<i64>, table_id: Option<i64>) -> Vec<&SandboxRec> {
        self.sandboxes
            .values()
            .filter(|s| group_id.is_none_or(|g| g == s.group_id))
            .filter(|s| table_id.is_none_or(|t| t == s.table_id))
            .collect()
    }
}

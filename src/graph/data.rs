//! Partial bodies for the data permissions graph.

use std::collections::{BTreeMap, BTreeSet};

use crate::metabase::models::{DataGraph, DataGroups, DbPerms, Id, Sandbox};

use super::access::{Features, to_legacy};
use super::granular::{merge, satisfies};

/// One job's wish for the data graph: explicit values per group and database, and the sandboxes
/// that go with them. Only what is named here is sent; nothing else changes.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataChange {
    pub groups: DataGroups,
    pub sandboxes: Vec<Sandbox>,
}

impl DataChange {
    pub fn set(group: i64, db: i64, perms: DbPerms) -> Self {
        let mut c = DataChange::default();
        c.put(group, db, perms);
        c
    }

    /// Adds (merging over) the values for one group and database.
    pub fn put(&mut self, group: i64, db: i64, perms: DbPerms) {
        let cells = self.groups.entry(Id(group)).or_default();
        let merged = match cells.get(&Id(db)) {
            Some(earlier) => merge_perms(earlier, &perms),
            None => perms,
        };
        cells.insert(Id(db), merged);
    }

    pub fn is_empty(&self) -> bool {
        self.groups.values().all(|dbs| dbs.is_empty()) && self.sandboxes.is_empty()
    }

    /// The groups this change writes to (sandboxes included).
    pub fn groups_touched(&self) -> BTreeSet<i64> {
        self.groups
            .keys()
            .map(|g| g.0)
            .chain(self.sandboxes.iter().filter_map(|s| s.group_id))
            .collect()
    }
}

/// `later` over `earlier`, value by value: what a later job asks for wins where both ask.
pub fn merge_perms(earlier: &DbPerms, later: &DbPerms) -> DbPerms {
    let mut out = earlier.clone();
    if let Some(v) = &later.view_data {
        out.view_data = Some(merge(earlier.view_data.as_ref(), v));
    }
    if let Some(v) = &later.create_queries {
        out.create_queries = Some(merge(earlier.create_queries.as_ref(), v));
    }
    if let Some(v) = &later.download {
        let mut d = v.clone();
        d.schemas = merge(earlier.download.as_ref().map(|e| &e.schemas), &v.schemas);
        out.download = Some(d);
    }
    if let Some(v) = &later.data_model {
        let mut d = v.clone();
        d.schemas = merge(earlier.data_model.as_ref().map(|e| &e.schemas), &v.schemas);
        out.data_model = Some(d);
    }
    if later.details.is_some() {
        out.details.clone_from(&later.details);
    }
    if later.transforms.is_some() {
        out.transforms.clone_from(&later.transforms);
    }
    if later.data.is_some() {
        out.data.clone_from(&later.data);
    }
    out.extra.extend(later.extra.clone());
    out
}

/// Merges the changes of concurrent jobs, in order: later jobs win where they overlap, so the
/// outcome does not depend on timing within a batch. A sandbox for the same group and table
/// replaces an earlier one.
pub fn merge_changes<'a>(changes: impl IntoIterator<Item = &'a DataChange>) -> DataChange {
    let mut out = DataChange::default();
    for change in changes {
        for (group, dbs) in &change.groups {
            for (db, perms) in dbs {
                out.put(group.0, db.0, perms.clone());
            }
        }
        for sandbox in &change.sandboxes {
            out.sandboxes
                .retain(|s| (s.group_id, s.table_id) != (sandbox.group_id, sandbox.table_id));
            out.sandboxes.push(sandbox.clone());
        }
    }
    out
}

/// The PUT body for `change` at `revision`, in the instance's format.
pub fn data_body(change: &DataChange, revision: i64, features: Features) -> DataGraph {
    let groups = if features.legacy_graph {
        change
            .groups
            .iter()
            .map(|(g, dbs)| (*g, dbs.iter().map(|(db, p)| (*db, to_legacy(p))).collect()))
            .collect()
    } else {
        change.groups.clone()
    };
    DataGraph {
        revision,
        groups,
        sandboxes: (!change.sandboxes.is_empty()).then(|| change.sandboxes.clone()),
        ..DataGraph::default()
    }
}

/// The places where `actual` (as Metabase answers) does not grant what `wanted` asks, one line
/// each; empty when the write took effect. Legacy-format answers are not compared.
pub fn unsatisfied(actual: &DataGroups, wanted: &DataChange) -> Vec<String> {
    let mut out = Vec::new();
    let empty = DbPerms::default();
    for (group, dbs) in &wanted.groups {
        for (db, want) in dbs {
            let have = actual.get(group).and_then(|d| d.get(db)).unwrap_or(&empty);
            if have.data.is_some() {
                continue;
            }
            let mut check = |name: &str, ok: bool| {
                if !ok {
                    out.push(format!(
                        "group {group} database {db}: {name} not as written"
                    ));
                }
            };
            if let Some(w) = &want.view_data {
                check("view-data", satisfies(have.view_data.as_ref(), w));
            }
            if let Some(w) = &want.create_queries {
                check("create-queries", satisfies(have.create_queries.as_ref(), w));
            }
            if let Some(w) = &want.download {
                check(
                    "download",
                    satisfies(have.download.as_ref().map(|d| &d.schemas), &w.schemas),
                );
            }
            if let Some(w) = &want.data_model {
                check(
                    "data-model",
                    satisfies(have.data_model.as_ref().map(|d| &d.schemas), &w.schemas),
                );
            }
            if let Some(w) = &want.details {
                let have_details = have
                    .details
                    .clone()
                    .unwrap_or(crate::metabase::models::YesNo::No);
                check("details", have_details == *w);
            }
        }
    }
    out
}

/// The entries of `change` that `current` does not already grant: what still needs writing.
pub fn still_needed(current: &DataGroups, change: &DataChange) -> DataChange {
    let mut out = DataChange {
        groups: BTreeMap::new(),
        sandboxes: change.sandboxes.clone(),
    };
    for (group, dbs) in &change.groups {
        for (db, perms) in dbs {
            let single = DataChange::set(group.0, db.0, perms.clone());
            if !unsatisfied(current, &single).is_empty() {
                out.put(group.0, db.0, perms.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::access::{DataAccess, db_perms};
    use serde_json::json;

    const OSS: Features = Features {
        advanced_permissions: false,
        sandboxes: false,
        legacy_graph: false,
    };

    fn groups(v: serde_json::Value) -> DataGroups {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn later_job_wins_within_a_batch() {
        let a = DataChange::set(5, 1, db_perms(DataAccess::QueryBuilder, OSS));
        let b = DataChange::set(5, 1, db_perms(DataAccess::ViewOnly, OSS));
        let c = DataChange::set(6, 1, db_perms(DataAccess::QueryBuilder, OSS));
        let merged = merge_changes([&a, &b, &c]);
        let body = serde_json::to_value(data_body(&merged, 9, OSS)).unwrap();
        assert_eq!(
            body,
            json!({"revision": 9, "groups": {
                "5": {"1": {"view-data": "unrestricted", "create-queries": "no"}},
                "6": {"1": {"view-data": "unrestricted", "create-queries": "query-builder"}}}})
        );
        let reversed = merge_changes([&b, &a]);
        assert_eq!(
            reversed.groups[&Id(5)][&Id(1)],
            db_perms(DataAccess::QueryBuilder, OSS)
        );
    }

    #[test]
    fn legacy_instances_get_legacy_bodies() {
        let change = DataChange::set(5, 1, db_perms(DataAccess::QueryBuilderAndNative, OSS));
        let features = Features {
            legacy_graph: true,
            ..OSS
        };
        assert_eq!(
            serde_json::to_value(data_body(&change, 3, features)).unwrap(),
            json!({"revision": 3, "groups": {"5": {"1": {"data": {"native": "write", "schemas": "all"}}}}})
        );
    }

    #[test]
    fn verification_reads_metabase_reshaping() {
        let wanted = DataChange::set(5, 1, db_perms(DataAccess::ViewOnly, OSS));
        // Metabase leaves `create-queries: no` out of its answer.
        let ok = groups(json!({"5": {"1": {"view-data": "unrestricted"}}}));
        assert!(unsatisfied(&ok, &wanted).is_empty());
        let bad = groups(
            json!({"5": {"1": {"view-data": "unrestricted", "create-queries": "query-builder"}}}),
        );
        assert_eq!(
            unsatisfied(&bad, &wanted),
            vec!["group 5 database 1: create-queries not as written".to_string()]
        );
        assert_eq!(unsatisfied(&groups(json!({})), &wanted).len(), 1);
    }

    #[test]
    fn only_unmet_entries_are_still_needed() {
        let mut change = DataChange::set(5, 1, db_perms(DataAccess::QueryBuilder, OSS));
        change.put(5, 2, db_perms(DataAccess::QueryBuilder, OSS));
        let current = groups(
            json!({"5": {"1": {"view-data": "unrestricted", "create-queries": "query-builder"},
                                          "2": {"view-data": "unrestricted"}}}),
        );
        let needed = still_needed(&current, &change);
        assert_eq!(
            needed.groups[&Id(5)].keys().copied().collect::<Vec<_>>(),
            vec![Id(2)]
        );
        assert_eq!(change.groups_touched(), BTreeSet::from([5]));
    }
}

//! A sandbox that an "everyone" group makes pointless: Metabase permissions are additive, so a
//! user who is in a sandboxed group and in a group that sees the table unrestricted sees every
//! row (Metabase docs `embedding/tenants.md`, "Data permission overview": "if All tenant users
//! has Can view access to an entire table, but another tenant group has restricted access …
//! the users of the tenant group will still see all the data"). The group checked is All
//! tenant users, which every tenant user is in. (All Users on a tenant database is already the
//! `all-users-can-view-tenant-database` finding; in native tenancy tenant users are not in it.)

use crate::metabase::models::{
    DbPerms, Granular, Id, MAGIC_ALL_EXTERNAL_USERS, SchemaLevel, ViewData,
};

use super::{Finding, Snapshot};

/// `view-data` of `perms` on one table, resolved from table, schema or database level.
fn table_view<'a>(perms: &'a DbPerms, schema: &str, table: Id) -> Option<&'a ViewData> {
    match perms.view_data.as_ref()? {
        Granular::All(v) => Some(v),
        Granular::Schemas(schemas) => match schemas.get(schema)? {
            SchemaLevel::All(v) => Some(v),
            SchemaLevel::Tables(tables) => tables.get(&table),
        },
    }
}

/// Every (database, table) some group sandboxes while an everyone group views it unfiltered.
pub fn findings(s: &Snapshot) -> Vec<Finding> {
    let everyone: Vec<(i64, String)> = s
        .groups
        .iter()
        .filter(|g| g.magic_group_type.as_deref() == Some(MAGIC_ALL_EXTERNAL_USERS))
        .map(|g| (g.id, g.name.clone()))
        .collect();
    let name = |id: i64| {
        s.groups
            .iter()
            .find(|g| g.id == id)
            .map_or(id.to_string(), |g| g.name.clone())
    };
    // (database, schema, table) -> groups that sandbox it
    let mut sandboxed: std::collections::BTreeMap<(i64, String, Id), Vec<String>> =
        Default::default();
    for (group, dbs) in &s.data.groups {
        for (db, perms) in dbs {
            if let Some(Granular::Schemas(schemas)) = &perms.view_data {
                for (schema, level) in schemas {
                    if let SchemaLevel::Tables(tables) = level {
                        for (table, v) in tables {
                            if *v == ViewData::Sandboxed {
                                sandboxed
                                    .entry((db.0, schema.clone(), *table))
                                    .or_default()
                                    .push(name(group.0));
                            }
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for ((db, schema, table), groups) in sandboxed {
        for (id, group) in &everyone {
            let unfiltered = s
                .data
                .groups
                .get(&Id(*id))
                .and_then(|dbs| dbs.get(&Id(db)))
                .and_then(|p| table_view(p, &schema, table))
                .is_some_and(|v| *v == ViewData::Unrestricted);
            if unfiltered {
                out.push(Finding::EveryoneBypassesSandbox {
                    database_id: db,
                    table_id: table.0,
                    group: group.clone(),
                    sandboxed_groups: groups.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn snapshot(data: Value) -> Snapshot {
        Snapshot {
            all_users: 1,
            admin: 2,
            groups: serde_json::from_value(json!([
                {"id": 1, "name": "All internal users", "magic_group_type": "all-internal-users"},
                {"id": 2, "name": "Administrators", "magic_group_type": "admin"},
                {"id": 3, "name": "All tenant users", "magic_group_type": "all-external-users"},
                {"id": 4, "name": "Recruiters"}
            ]))
            .unwrap(),
            data: serde_json::from_value(json!({"revision": 1, "groups": data})).unwrap(),
            ..Snapshot::default()
        }
    }

    fn sandboxed() -> Value {
        json!({"view-data": {"PUBLIC": {"10": "sandboxed", "11": "unrestricted"}}, "create-queries": "no"})
    }

    #[test]
    fn everyone_groups_viewing_a_sandboxed_table_are_reported() {
        let cases = [
            // All tenant users sees the whole database: the sandbox filters nothing.
            (
                json!({"3": {"1": {"view-data": "unrestricted"}}, "4": {"1": sandboxed()}}),
                vec![(1, 10, "All tenant users")],
            ),
            // Schema-level and table-level values count the same.
            (
                json!({"3": {"1": {"view-data": {"PUBLIC": "unrestricted"}}}, "4": {"1": sandboxed()}}),
                vec![(1, 10, "All tenant users")],
            ),
            // All Users is another check's business.
            (
                json!({"1": {"1": {"view-data": "unrestricted"}}, "4": {"1": sandboxed()}}),
                vec![],
            ),
            (
                json!({"3": {"1": {"view-data": {"PUBLIC": {"10": "unrestricted"}}}}, "4": {"1": sandboxed()}}),
                vec![(1, 10, "All tenant users")],
            ),
            // Blocked, or unrestricted only on another table or database: nothing.
            (
                json!({"3": {"1": {"view-data": "blocked"}, "2": {"view-data": "unrestricted"}},
                    "1": {"1": {"view-data": {"PUBLIC": {"11": "unrestricted"}}}}, "4": {"1": sandboxed()}}),
                vec![],
            ),
            // No sandbox anywhere: nothing to bypass.
            (json!({"3": {"1": {"view-data": "unrestricted"}}}), vec![]),
        ];
        for (data, want) in cases {
            let got: Vec<(i64, i64, String)> = findings(&snapshot(data.clone()))
                .into_iter()
                .map(|f| match f {
                    Finding::EveryoneBypassesSandbox {
                        database_id,
                        table_id,
                        group,
                        sandboxed_groups,
                    } => {
                        assert_eq!(sandboxed_groups, vec!["Recruiters".to_string()]);
                        (database_id, table_id, group)
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            let want: Vec<(i64, i64, String)> = want
                .into_iter()
                .map(|(d, t, g)| (d, t, g.to_string()))
                .collect();
            assert_eq!(got, want, "{data}");
        }
    }
}

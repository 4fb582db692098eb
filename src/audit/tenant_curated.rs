//! A shared collection curated by tenant users: a group of tenant users holds `write` on a
//! collection that users of other tenants can read (issue 15). Whatever one tenant's users save
//! or change there, every other tenant reading it sees: a leak of one customer's work to
//! another, and a way for one customer to edit, move or delete what all of them see (curate
//! access, docs `permissions/collections.md`, "Collection permission levels"; a user gets the
//! most permissive access of all their groups, docs `permissions/introduction.md`).
//!
//! Groups of tenant users: All tenant users (`magic_group_type` `all-external-users`), native
//! tenant groups (`is_tenant_group: true`) and group tenancy's `Tenant: <id>` groups. All Users
//! is not one of them (with Tenants on it holds only internal users; in group tenancy its write
//! on ordinary collections is Metabase's default, and All Users on a tenant collection is
//! already its own finding).
//!
//! Which tenants a group's users belong to: one for a `Tenant: <id>` group; any number for All
//! tenant users and for a native tenant group (tenant groups are shared across tenants). A
//! collection is readable by other tenants than a writer's when a group of another tenant, or a
//! group spanning tenants, can read it, or the operator named it shared (`--shared-collection`).
//! A writer spanning tenants is always a finding: its own members are of several tenants.

use std::collections::{BTreeMap, BTreeSet};

use crate::metabase::models::{CollectionAccess, CollectionKey, Id, MAGIC_ALL_EXTERNAL_USERS};
use crate::metabase::tenants::is_tenant_group;

use super::{AuditOptions, Finding, Snapshot, TenantGroup};

/// Whose users a group holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Audience {
    /// One tenant's (group tenancy).
    Tenant(String),
    /// Users of any number of tenants (All tenant users, a native tenant group).
    Several,
}

/// The groups of tenant users, by id: their name and audience.
fn tenant_user_groups(
    s: &Snapshot,
    tenants: &BTreeMap<i64, TenantGroup>,
) -> BTreeMap<i64, (String, Audience)> {
    let mut out = BTreeMap::new();
    for g in &s.groups {
        if g.id == s.admin || g.id == s.all_users {
            continue;
        }
        let audience = if g.magic_group_type.as_deref() == Some(MAGIC_ALL_EXTERNAL_USERS)
            || (!g.is_magic() && is_tenant_group(g))
        {
            Audience::Several
        } else if let Some(t) = tenants.get(&g.id) {
            Audience::Tenant(t.tenant_id.clone())
        } else {
            continue;
        };
        out.insert(g.id, (g.name.clone(), audience));
    }
    out
}

/// Every collection some group of tenant users writes while other tenants can read it.
pub fn findings(
    s: &Snapshot,
    tenants: &BTreeMap<i64, TenantGroup>,
    options: &AuditOptions,
) -> Vec<Finding> {
    let groups = tenant_user_groups(s, tenants);
    // collection -> (group, access) of groups of tenant users holding anything there
    let mut on: BTreeMap<CollectionKey, Vec<(i64, CollectionAccess)>> = BTreeMap::new();
    for id in groups.keys() {
        for (coll, access) in s.collections.groups.get(&Id(*id)).into_iter().flatten() {
            if *access != CollectionAccess::None {
                on.entry(*coll).or_default().push((*id, access.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for (collection, holders) in on {
        let named_shared = options.shared_collections.contains(&collection);
        let audience = |id: &i64| groups.get(id).map(|(_, a)| a);
        let readers: BTreeSet<&Audience> =
            holders.iter().filter_map(|(g, _)| audience(g)).collect();
        let curators: Vec<i64> = holders
            .iter()
            .filter(|(_, a)| *a == CollectionAccess::Write)
            .map(|(g, _)| *g)
            .filter(|g| match audience(g) {
                Some(Audience::Several) => true,
                Some(mine @ Audience::Tenant(_)) => {
                    named_shared || readers.iter().any(|r| *r != mine)
                }
                None => false,
            })
            .collect();
        if curators.is_empty() {
            continue;
        }
        let name = |g: &i64| groups.get(g).map_or(g.to_string(), |(n, _)| n.clone());
        out.push(Finding::SharedCollectionCuratedByTenantUsers {
            collection,
            curators: curators.iter().map(name).collect(),
            readers: holders
                .iter()
                .filter(|(g, _)| !curators.contains(g))
                .map(|(g, _)| name(g))
                .collect(),
            named_shared,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::audit::tenant_groups;

    fn snapshot(collections: Value) -> Snapshot {
        Snapshot {
            all_users: 1,
            admin: 2,
            groups: serde_json::from_value(json!([
                {"id": 1, "name": "All internal users", "magic_group_type": "all-internal-users"},
                {"id": 2, "name": "Administrators", "magic_group_type": "admin"},
                {"id": 3, "name": "All tenant users", "magic_group_type": "all-external-users"},
                {"id": 4, "name": "Editors", "is_tenant_group": true},
                {"id": 5, "name": "Tenant: 42"},
                {"id": 6, "name": "Tenant: 43"},
                {"id": 7, "name": "Recruiters"}
            ]))
            .unwrap(),
            collections: serde_json::from_value(json!({"revision": 1, "groups": collections}))
                .unwrap(),
            ..Snapshot::default()
        }
    }

    /// (collection, curators, readers) of one finding.
    type Want<'a> = (i64, Vec<&'a str>, Vec<&'a str>);

    #[test]
    fn writers_among_tenant_users_on_what_other_tenants_read_are_reported() {
        let shared9 = AuditOptions {
            shared_collections: BTreeSet::from([CollectionKey::Id(9)]),
        };
        let none = AuditOptions::default();
        // (what, graph, options, want: (collection, curators, readers))
        let cases: Vec<(&str, Value, &AuditOptions, Vec<Want>)> = vec![
            (
                "All tenant users curating: every tenant's users write what all read",
                json!({"3": {"9": "write"}}),
                &none,
                vec![(9, vec!["All tenant users"], vec![])],
            ),
            (
                "a native tenant group spans tenants",
                json!({"4": {"9": "write"}, "3": {"9": "read"}}),
                &none,
                vec![(9, vec!["Editors"], vec!["All tenant users"])],
            ),
            (
                "one tenant writes what another tenant's group reads",
                json!({"5": {"9": "write"}, "6": {"9": "read"}}),
                &none,
                vec![(9, vec!["Tenant: 42"], vec!["Tenant: 43"])],
            ),
            (
                "one tenant writes what All tenant users reads",
                json!({"5": {"9": "write"}, "3": {"9": "read"}}),
                &none,
                vec![(9, vec!["Tenant: 42"], vec!["All tenant users"])],
            ),
            (
                "one tenant writes a collection the operator named shared",
                json!({"5": {"9": "write"}}),
                &shared9,
                vec![(9, vec!["Tenant: 42"], vec![])],
            ),
            (
                "a tenant writing its own collection is the design",
                json!({"5": {"8": "write"}, "6": {"7": "write"}}),
                &none,
                vec![],
            ),
            (
                "each collection judged alone",
                json!({"5": {"9": "write", "8": "write", "7": "write"}, "6": {"8": "read"}}),
                &shared9,
                vec![
                    (8, vec!["Tenant: 42"], vec!["Tenant: 43"]),
                    (9, vec!["Tenant: 42"], vec![]),
                ],
            ),
            (
                "only its own tenant reads it: nothing",
                json!({"5": {"9": "write"}, "1": {"9": "read"}, "7": {"9": "read"}}),
                &none,
                vec![],
            ),
            (
                "tenant users only reading a shared collection: nothing",
                json!({"3": {"9": "read"}, "4": {"9": "read"}, "5": {"9": "read"}, "7": {"9": "write"}}),
                &shared9,
                vec![],
            ),
            (
                "internal groups and Administrators writing: nothing",
                json!({"1": {"9": "write"}, "2": {"9": "write"}, "7": {"9": "write"}, "3": {"9": "read"}}),
                &none,
                vec![],
            ),
        ];
        for (what, graph, options, want) in cases {
            let s = snapshot(graph);
            let got: Vec<(i64, Vec<String>, Vec<String>)> =
                findings(&s, &tenant_groups(&s.groups), options)
                    .into_iter()
                    .map(|f| match f {
                        Finding::SharedCollectionCuratedByTenantUsers {
                            collection: CollectionKey::Id(c),
                            curators,
                            readers,
                            ..
                        } => (c, curators, readers),
                        other => panic!("{other:?}"),
                    })
                    .collect();
            let want: Vec<(i64, Vec<String>, Vec<String>)> = want
                .into_iter()
                .map(|(c, w, r)| {
                    (
                        c,
                        w.into_iter().map(str::to_string).collect(),
                        r.into_iter().map(str::to_string).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }
}

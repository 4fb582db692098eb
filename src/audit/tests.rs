use serde_json::{Value, json};

use super::*;

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn groups(names: &[(i64, &str)]) -> Vec<Group> {
    let mut out: Vec<Group> = vec![
        from(json!({"id": 1, "name": "All Users", "magic_group_type": "all-internal-users"})),
        from(json!({"id": 2, "name": "Administrators", "magic_group_type": "admin"})),
    ];
    out.extend(
        names
            .iter()
            .map(|(id, name)| from::<Group>(json!({"id": id, "name": name}))),
    );
    out
}

fn member(user_id: i64, superuser: bool) -> GroupMember {
    from(json!({"user_id": user_id, "membership_id": user_id * 100,
                "email": format!("u{user_id}@x.test"), "is_superuser": superuser}))
}

/// Tenants 42 (group 10) and 43 (group 11), each on database 1 and its own collection (7, 8),
/// All Users blocked on database 1 and absent from 7 and 8: no finding.
fn clean() -> Snapshot {
    Snapshot {
        features: Features::default(),
        all_users: 1,
        admin: 2,
        groups: groups(&[(10, "Tenant: 42"), (11, "Tenant: 43"), (12, "Analysts")]),
        data: from(json!({"revision": 3, "groups": {
            "1": {"1": {"view-data": "blocked", "create-queries": "no"},
                  "2": {"view-data": "unrestricted", "create-queries": "query-builder-and-native"}},
            "10": {"1": {"view-data": "unrestricted", "create-queries": "query-builder"}},
            "11": {"1": {"view-data": {"PUBLIC": {"10": "sandboxed"}}, "create-queries": "no"}},
        }})),
        collections: from(json!({"revision": 5, "groups": {
            "1": {"root": "write", "2": "write"},
            "10": {"7": "read"},
            "11": {"8": "write"},
            "12": {"7": "read", "8": "read"},
        }})),
        members: BTreeMap::from([(10, vec![member(5, false)]), (11, vec![member(6, false)])]),
        users: vec![],
    }
}

fn checks(s: &Snapshot) -> Vec<String> {
    audit(s, &AuditOptions::default())
        .iter()
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn a_clean_instance_has_no_finding() {
    assert_eq!(checks(&clean()), Vec::<String>::new());
}

#[test]
fn data_levels_read_every_granularity_and_format() {
    let cases = [
        (json!({}), DataLevel::Blocked),
        (
            json!({"view-data": "blocked", "create-queries": "no"}),
            DataLevel::Blocked,
        ),
        (json!({"view-data": "unrestricted"}), DataLevel::ViewOnly),
        (
            json!({"view-data": "legacy-no-self-service"}),
            DataLevel::ViewOnly,
        ),
        (
            json!({"view-data": {"PUBLIC": {"10": "blocked", "11": "sandboxed"}}}),
            DataLevel::ViewOnly,
        ),
        (
            json!({"view-data": "unrestricted", "create-queries": "query-builder"}),
            DataLevel::Query,
        ),
        (
            json!({"create-queries": {"PUBLIC": {"10": "no", "11": "query-builder"}}}),
            DataLevel::Query,
        ),
        (
            json!({"view-data": "some-future-level"}),
            DataLevel::ViewOnly,
        ),
        (
            json!({"data": {"native": "none", "schemas": "block"}}),
            DataLevel::Blocked,
        ),
        (
            json!({"data": {"native": "none", "schemas": "none"}}),
            DataLevel::ViewOnly,
        ),
        (
            json!({"data": {"schemas": {"PUBLIC": "all"}}}),
            DataLevel::Query,
        ),
        (
            json!({"data": {"schemas": {"PUBLIC": {"10": {"read": "all", "query": "segmented"}}}}}),
            DataLevel::Query,
        ),
        (json!({"data": {"native": "write"}}), DataLevel::Query),
    ];
    for (perms, want) in cases {
        assert_eq!(data_level(&from(perms.clone())), want, "{perms}");
    }
}

#[test]
fn tenant_groups_follow_the_contract_naming() {
    let gs = groups(&[
        (10, "Tenant: 42"),
        (11, "Tenant: 42 Editors"),
        (12, "Tenant: 43 Editors"),
        (13, "Tenant:44"),
        (14, "Tenant: "),
        (15, "Analysts"),
    ]);
    let got: Vec<(i64, String)> = tenant_groups(&gs)
        .into_values()
        .map(|t| (t.group_id, t.tenant_id))
        .collect();
    assert_eq!(
        got,
        vec![
            (10, "42".to_string()),
            // A sub-group of an existing tenant belongs to it.
            (11, "42".to_string()),
            // Without `Tenant: 43`, the whole rest is the tenant id.
            (12, "43 Editors".to_string()),
        ]
    );
}

#[test]
fn each_problem_is_one_finding_line() {
    type Setup = fn(&mut Snapshot);
    let cases: Vec<(&str, Setup, &str)> = vec![
        (
            "All Users can query a tenant database",
            |s| {
                s.data.groups.get_mut(&Id(1)).unwrap().insert(
                    Id(1),
                    from(json!({"view-data": "unrestricted", "create-queries": "query-builder"})),
                );
            },
            "database 1: All Users has query access to a database tenant groups use (Tenant: 42, Tenant: 43); block All Users there",
        ),
        (
            "All Users can view a tenant database through saved questions",
            |s| {
                s.data.groups.get_mut(&Id(1)).unwrap().insert(
                    Id(1),
                    from(json!({"view-data": "unrestricted", "create-queries": "no"})),
                );
            },
            "database 1: All Users has view-only access to a database tenant groups use (Tenant: 42, Tenant: 43); block All Users there",
        ),
        (
            "a tenant group reads another tenant's collection",
            |s| {
                s.collections
                    .groups
                    .get_mut(&Id(11))
                    .unwrap()
                    .insert(CollectionKey::Id(7), CollectionAccess::Read);
            },
            "collection 7: open to groups of several tenants: Tenant: 42 (read), Tenant: 43 (read); keep one tenant, or pass --shared-collection 7 if every tenant may see it",
        ),
        (
            "All Users reads a tenant collection",
            |s| {
                s.collections
                    .groups
                    .get_mut(&Id(1))
                    .unwrap()
                    .insert(CollectionKey::Id(8), CollectionAccess::Read);
            },
            "collection 8: All Users has read on a tenant collection (Tenant: 43); revoke All Users there",
        ),
        (
            "a user in two tenants' groups",
            |s| s.members.get_mut(&11).unwrap().push(member(5, false)),
            "user 5 (u5@x.test): in groups of several tenants: Tenant: 42, Tenant: 43",
        ),
        (
            "a tenant user who is a superuser (per the group's member list)",
            |s| s.members.get_mut(&10).unwrap()[0].is_superuser = true,
            "user 5 (u5@x.test): an administrator who is also a tenant user (Tenant: 42)",
        ),
        (
            "a tenant user who is in Administrators (per the user list)",
            |s| {
                s.users.push(from(
                    json!({"id": 6, "email": "six@x.test", "group_ids": [1, 2, 11]}),
                ))
            },
            "user 6 (six@x.test): an administrator who is also a tenant user (Tenant: 43)",
        ),
    ];
    for (what, setup, want) in cases {
        let mut s = clean();
        setup(&mut s);
        assert_eq!(checks(&s), vec![want.to_string()], "{what}");
    }
}

#[test]
fn what_is_not_a_problem() {
    type Setup = fn(&mut Snapshot);
    let cases: Vec<(&str, Setup)> = vec![
        ("All Users on a database no tenant uses", |s| {
            s.data.groups.get_mut(&Id(1)).unwrap().insert(
                Id(3),
                from(json!({"view-data": "unrestricted", "create-queries": "query-builder"})),
            );
        }),
        (
            "a tenant group blocked on a database All Users queries",
            |s| {
                s.data.groups.get_mut(&Id(10)).unwrap().insert(
                    Id(2),
                    from(json!({"view-data": "blocked", "create-queries": "no"})),
                );
            },
        ),
        (
            "a tenant's editors group on its own collection, with a member in both",
            |s| {
                s.groups
                    .push(from(json!({"id": 20, "name": "Tenant: 42 Editors"})));
                s.collections.groups.insert(
                    Id(20),
                    BTreeMap::from([(CollectionKey::Id(7), CollectionAccess::Write)]),
                );
                s.members.insert(20, vec![member(5, false)]);
            },
        ),
        ("an administrator in no tenant group", |s| {
            s.users.push(from(
                json!({"id": 1, "email": "a@x.test", "is_superuser": true, "group_ids": [1, 2]}),
            ))
        }),
        ("a deactivated user listed with two tenants' groups", |s| {
            s.users.push(from(
                json!({"id": 9, "email": "g@x.test", "is_active": false, "group_ids": [10, 11]}),
            ))
        }),
        ("an explicit none cell", |s| {
            s.collections
                .groups
                .get_mut(&Id(11))
                .unwrap()
                .insert(CollectionKey::Id(7), CollectionAccess::None);
        }),
    ];
    for (what, setup) in cases {
        let mut s = clean();
        setup(&mut s);
        assert_eq!(checks(&s), Vec::<String>::new(), "{what}");
    }
}

#[test]
fn oss_cannot_block_so_view_only_is_the_floor() {
    let mut s = clean();
    s.features.advanced_permissions = false;
    // Without advanced permissions All Users' lowest is view-only, and a tenant database is one
    // a tenant group can query (tenant 43 only views, so only tenant 42 uses database 1).
    s.data.groups.get_mut(&Id(1)).unwrap().insert(
        Id(1),
        from(json!({"view-data": "unrestricted", "create-queries": "no"})),
    );
    assert_eq!(checks(&s), Vec::<String>::new());
    s.data.groups.get_mut(&Id(1)).unwrap().insert(
        Id(1),
        from(json!({"view-data": "unrestricted", "create-queries": "query-builder"})),
    );
    assert_eq!(
        checks(&s),
        vec![
            "database 1: All Users has query access to a database tenant groups use (Tenant: 42); block All Users there"
        ]
    );
}

#[test]
fn shared_collections_are_exempt_and_root_is_named() {
    let mut s = clean();
    for g in [10, 11] {
        s.collections
            .groups
            .get_mut(&Id(g))
            .unwrap()
            .insert(CollectionKey::Root, CollectionAccess::Read);
    }
    assert_eq!(
        checks(&s),
        vec![
            "the root collection: open to groups of several tenants: Tenant: 42 (read), Tenant: 43 (read); keep one tenant, or pass --shared-collection root if every tenant may see it",
            "the root collection: All Users has write on a tenant collection (Tenant: 42, Tenant: 43); revoke All Users there",
        ]
    );
    let options = AuditOptions {
        shared_collections: BTreeSet::from([CollectionKey::Root]),
    };
    assert_eq!(audit(&s, &options), vec![]);
}

#[test]
fn findings_serialise_with_their_check_name() {
    let mut s = clean();
    s.members.get_mut(&11).unwrap().push(member(5, true));
    let json = serde_json::to_value(audit(&s, &AuditOptions::default())).unwrap();
    assert_eq!(
        json,
        json!([
            {"check": "user-in-several-tenants", "user_id": 5, "email": "u5@x.test",
             "groups": ["Tenant: 42", "Tenant: 43"]},
            {"check": "tenant-user-is-admin", "user_id": 5, "email": "u5@x.test",
             "groups": ["Tenant: 42", "Tenant: 43"]},
        ])
    );
}

//! Table tests of the state rules: what Metabase would answer, as data.

use serde_json::{Value, json};

use super::*;
use crate::emulator::error::text;

fn ee() -> State {
    State::new(Edition::default(), false)
}

fn rendered(s: &State, group: i64) -> Value {
    serde_json::to_value(s.render_data_graph(Some(&[group]), None)).unwrap()["groups"]
        [group.to_string()]
    .clone()
}

fn new_group(s: &mut State, name: &str) -> i64 {
    s.create_group(name).unwrap()
}

fn new_collection(s: &mut State, name: &str, parent_id: Option<i64>) -> i64 {
    s.create_collection(NewCollectionInput {
        name: name.into(),
        description: None,
        parent_id,
        namespace: None,
    })
    .unwrap()
}

fn put(s: &mut State, groups: Value) -> Result<i64, crate::emulator::error::ApiError> {
    let body = json!({"revision": s.data_revision, "groups": groups});
    s.put_data_graph(&body, false).map(|o| o.revision)
}

const DEFAULT: &str = r#"{"view-data":"unrestricted","create-queries":"query-builder-and-native","download":{"schemas":"full"}}"#;

#[test]
fn initial_state_matches_the_documentation() {
    let s = ee();
    assert_eq!(s.users[&1].email, "admin@example.com");
    assert!(s.users[&1].is_superuser);
    assert_eq!(s.group_ids_of(1), vec![1, 2]);
    assert_eq!(s.collections[&1].personal_owner_id, Some(1));
    assert_eq!(s.collections[&2].name, "Shared");
    let default: Value = serde_json::from_str(DEFAULT).unwrap();
    assert_eq!(rendered(&s, 1), json!({"1": default, "2": default}));
    assert_eq!(rendered(&s, 2)["1"]["details"], "yes");
    let fresh = State::new(Edition::default(), true);
    assert!(fresh.users.is_empty());
    assert!(fresh.setup_token.is_some());
    assert_eq!(fresh.collections[&2].name, "Shared");
}

#[test]
fn rendering_collapses_equal_tables_and_leaves_out_least_values() {
    // (table 10 create-queries, table 11 create-queries) -> rendered create-queries of db 1
    let cases = [
        ("query-builder", "query-builder", json!("query-builder")),
        ("no", "no", Value::Null),
        (
            "query-builder",
            "no",
            json!({"PUBLIC": {"10": "query-builder"}}),
        ),
        (
            "query-builder",
            "query-builder-and-native",
            json!({"PUBLIC": {"10": "query-builder", "11": "query-builder-and-native"}}),
        ),
    ];
    for (t10, t11, want) in cases {
        let mut s = ee();
        let g = new_group(&mut s, "G");
        put(
            &mut s,
            json!({g.to_string(): {"1": {"create-queries": {"PUBLIC": {"10": t10, "11": t11}}}}}),
        )
        .unwrap();
        assert_eq!(rendered(&s, g)["1"]["create-queries"], want, "{t10}/{t11}");
    }
}

#[test]
fn a_group_with_nothing_is_left_out_of_the_graph() {
    let mut s = ee();
    let g = new_group(&mut s, "G");
    put(
        &mut s,
        json!({g.to_string(): {"1": {"view-data": "blocked", "create-queries": "no", "download": {"schemas": "none"}},
                               "2": {"view-data": "blocked", "create-queries": "no", "download": {"schemas": "none"}}}}),
    )
    .unwrap();
    assert_eq!(rendered(&s, g), Value::Null);
}

#[test]
fn partial_put_changes_only_what_it_names() {
    let mut s = ee();
    let g = new_group(&mut s, "G");
    let before_all_users = rendered(&s, 1);
    put(
        &mut s,
        json!({g.to_string(): {"1": {"create-queries": "query-builder"}}}),
    )
    .unwrap();
    let after = rendered(&s, g);
    assert_eq!(after["1"]["create-queries"], "query-builder");
    // Omitted keys and databases keep their values: omission never revokes.
    assert_eq!(after["1"]["view-data"], "unrestricted");
    assert_eq!(after["1"]["download"], json!({"schemas": "full"}));
    assert_eq!(after["2"]["create-queries"], "query-builder-and-native");
    assert_eq!(rendered(&s, 1), before_all_users);
    // Schema-level values apply to every table of the schema.
    put(
        &mut s,
        json!({g.to_string(): {"2": {"download": {"schemas": {"analytics": "limited"}}}}}),
    )
    .unwrap();
    assert_eq!(
        rendered(&s, g)["2"]["download"],
        json!({"schemas": "limited"})
    );
}

#[test]
fn every_successful_put_bumps_the_revision_and_stale_ones_conflict() {
    let mut s = ee();
    assert_eq!(put(&mut s, json!({})), Ok(2));
    assert_eq!(put(&mut s, json!({})), Ok(3));
    let stale = json!({"revision": 2, "groups": {}});
    assert_eq!(
        s.put_data_graph(&stale, false).unwrap_err(),
        crate::emulator::error::ApiError::stale_revision()
    );
    let missing = json!({"groups": {}});
    assert_eq!(
        s.put_data_graph(&missing, false)
            .unwrap_err()
            .status()
            .as_u16(),
        409
    );
    assert_eq!(
        s.put_data_graph(&stale, true).map(|o| o.revision).unwrap(),
        4
    );
}

#[test]
fn invalid_graphs_are_refused_before_the_revision_is_checked() {
    let cases = [
        json!({"1": {"1": {"view-data": "everything"}}}),
        json!({"1": {"1": {"view-data": "sandboxed"}}}),
        json!({"1": {"1": {"view-data": "blocked", "create-queries": "query-builder-and-native"}}}),
        json!({"1": {"1": {"create-queries": {"NOPE": "no"}}}}),
        json!({"1": {"1": {"create-queries": {"PUBLIC": {"99": "no"}}}}}),
        json!({"1": {"9": {"create-queries": "no"}}}),
        json!({"99": {"1": {"create-queries": "no"}}}),
        json!({"1": {"1": {"view-data": 5}}}),
    ];
    for groups in cases {
        let mut s = ee();
        let body = json!({"revision": 0, "groups": groups});
        let err = s.put_data_graph(&body, false).unwrap_err();
        let crate::emulator::error::ApiError::Plain(status, msg) = err else {
            panic!("expected plain text for {groups}");
        };
        assert_eq!(status.as_u16(), 400, "{groups}");
        assert!(msg.starts_with(text::INVALID_GRAPH), "{msg}");
        assert_eq!(s.data_revision, 1);
    }
}

#[test]
fn admin_cells_are_ignored_when_equal_and_refused_when_different() {
    let mut s = ee();
    let same = json!({"2": {"1": {"view-data": "unrestricted", "details": "yes"}}});
    assert!(put(&mut s, same).is_ok());
    let lower = json!({"2": {"1": {"create-queries": "query-builder"}}});
    assert_eq!(
        put(&mut s, lower).unwrap_err(),
        crate::emulator::error::ApiError::bad_request(text::ADMIN_PERMISSIONS)
    );
}

#[test]
fn oss_refuses_blocked_and_sandboxes_with_402() {
    let mut s = State::new(
        Edition {
            oss: true,
            ..Edition::default()
        },
        false,
    );
    let err = put(
        &mut s,
        json!({"1": {"1": {"view-data": "blocked", "create-queries": "no"}}}),
    )
    .unwrap_err();
    assert_eq!(err.status().as_u16(), 402);
    let err = put(&mut s, json!({"1": {"1": {"view-data": "impersonated"}}})).unwrap_err();
    assert_eq!(err.status().as_u16(), 402);
    let body = json!({"revision": 1, "groups": {}, "sandboxes": [{"group_id": 1, "table_id": 10}]});
    assert_eq!(
        s.put_data_graph(&body, false)
            .unwrap_err()
            .status()
            .as_u16(),
        402
    );
}

#[test]
fn sandboxes_render_as_table_level_sandboxed_and_drop_native() {
    let mut s = ee();
    let g = new_group(&mut s, "Tenant");
    let body = json!({
        "revision": 1,
        "groups": {g.to_string(): {"1": {"view-data": {"PUBLIC": {"10": "sandboxed"}}}}},
        "sandboxes": [{"group_id": g, "table_id": 10, "attribute_remappings": {"org": ["dimension", ["field", 101, null]]}}],
    });
    let out = s.put_data_graph(&body, false).unwrap();
    assert_eq!(out.sandboxes.as_ref().map(Vec::len), Some(1));
    let db1 = &rendered(&s, g)["1"];
    assert_eq!(
        db1["view-data"],
        json!({"PUBLIC": {"10": "sandboxed", "11": "unrestricted"}})
    );
    assert_eq!(db1["create-queries"], "query-builder");
    // The same (group, table) again without an id is a unique-key violation: 500.
    let again = json!({"revision": 2, "sandboxes": [{"group_id": g, "table_id": 10}]});
    assert_eq!(
        s.put_data_graph(&again, false)
            .unwrap_err()
            .status()
            .as_u16(),
        500
    );
}

#[test]
fn new_groups_derive_all_users_data_permissions_without_a_revision() {
    // Correction 3: uniform All Users values come out the same as a copy would; view-data is
    // unrestricted and the most restrictive create-queries/download win where tables differ.
    let mut s = ee();
    put(&mut s, json!({"1": {"2": {"create-queries": "no"}}})).unwrap();
    let rev = s.data_revision;
    let g = new_group(&mut s, "Copy");
    assert_eq!(rendered(&s, g), rendered(&s, 1));
    assert_eq!(s.data_revision, rev);
    put(
        &mut s,
        json!({"1": {"1": {"create-queries": {"PUBLIC": {"10": "query-builder"}}}}}),
    )
    .unwrap();
    let h = new_group(&mut s, "Derived");
    assert_eq!(rendered(&s, h)["1"]["create-queries"], "query-builder");
}

fn coll_cell(s: &State, group: i64, key: &str) -> Value {
    serde_json::to_value(s.render_collection_graph()).unwrap()["groups"][group.to_string()][key]
        .clone()
}

#[test]
fn new_collections_copy_their_parents_cells_and_bump_the_revision() {
    let mut s = ee();
    let g = new_group(&mut s, "Readers");
    let body = json!({"revision": 1, "groups": {g.to_string(): {"2": "read"}}});
    assert_eq!(s.put_collection_graph(&body, false), Ok(2));
    let child = new_collection(&mut s, "Child", Some(2));
    assert_eq!(s.collection_revision, 3);
    assert_eq!(s.collections[&child].location, "/2/");
    assert_eq!(coll_cell(&s, g, &child.to_string()), "read");
    assert_eq!(coll_cell(&s, 1, &child.to_string()), "write");
    let top = new_collection(&mut s, "Top", None);
    // Root: All Users has write there, the new group nothing.
    assert_eq!(coll_cell(&s, 1, &top.to_string()), "write");
    assert_eq!(coll_cell(&s, g, &top.to_string()), Value::Null);
}

#[test]
fn before_v0_56_a_new_collection_copies_cells_without_a_revision() {
    let mut s = State::new(Edition::for_version("v0.55.9", false), false);
    let child = new_collection(&mut s, "Child", Some(2));
    assert_eq!(coll_cell(&s, 1, &child.to_string()), "write");
    assert_eq!(s.collection_revision, 1);
    assert!(Edition::for_version("v1.56.0", false).creation_bumps_collection_revision);
    assert!(Edition::for_version("vLOCAL_DEV", false).creation_bumps_collection_revision);
}

#[test]
fn collection_graph_is_sparse_and_partial() {
    let mut s = ee();
    let g = new_group(&mut s, "G");
    // Personal collection 1 is silently dropped: nothing changes.
    let noop = json!({"revision": 1, "groups": {g.to_string(): {"1": "write"}}});
    assert_eq!(s.put_collection_graph(&noop, false), Ok(1));
    // Metabase diffs the body against the *sparse* old graph, where a missing pair is absent
    // rather than "none": an explicit "none" there counts as a change and bumps the revision.
    let none_on_missing = json!({"revision": 1, "groups": {g.to_string(): {"root": "none"}}});
    assert_eq!(s.put_collection_graph(&none_on_missing, false), Ok(2));
    let graph = serde_json::to_value(s.render_collection_graph()).unwrap();
    assert_eq!(graph["groups"].get(g.to_string()), None);
    assert_eq!(graph["groups"]["2"], json!({"root": "write", "2": "write"}));
    let revoke = json!({"revision": 2, "groups": {"1": {"2": "none"}}});
    assert_eq!(s.put_collection_graph(&revoke, false), Ok(3));
    assert_eq!(coll_cell(&s, 1, "2"), Value::Null);
    assert_eq!(coll_cell(&s, 1, "root"), "write");
    let stale = json!({"revision": 2, "groups": {}});
    assert_eq!(
        s.put_collection_graph(&stale, false)
            .unwrap_err()
            .status()
            .as_u16(),
        409
    );
    // An empty body at the current revision is a cheap check of the revision.
    let check = json!({"revision": 3, "groups": {}});
    assert_eq!(s.put_collection_graph(&check, false), Ok(3));
    let admin_same = json!({"revision": 3, "groups": {"2": {"2": "write"}}});
    assert_eq!(s.put_collection_graph(&admin_same, false), Ok(3));
    let admin_lower = json!({"revision": 3, "groups": {"2": {"2": "read"}}});
    assert_eq!(
        s.put_collection_graph(&admin_lower, false).unwrap_err(),
        crate::emulator::error::ApiError::bad_request(text::ADMIN_PERMISSIONS)
    );
}

#[test]
fn archived_collections_leave_the_graph() {
    let mut s = ee();
    s.update_collection(
        2,
        CollectionPatch {
            archived: Some(true),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(coll_cell(&s, 1, "2"), Value::Null);
    assert_eq!(coll_cell(&s, 2, "2"), Value::Null);
}

#[test]
fn user_membership_rules() {
    let mut s = ee();
    let g = new_group(&mut s, "G");
    let input = |groups: Option<Vec<i64>>| NewUserInput {
        email: "New@Example.com".into(),
        memberships: groups.map(|g| g.into_iter().map(MembershipItem::plain).collect()),
        ..Default::default()
    };
    assert_eq!(
        s.create_user(input(Some(vec![g]))).unwrap_err(),
        crate::emulator::error::ApiError::bad_request(text::ALL_USERS_MEMBERSHIP)
    );
    assert_eq!(
        s.users.len(),
        1,
        "no user is created when memberships are refused"
    );
    let id = s.create_user(input(Some(vec![1, g]))).unwrap();
    assert_eq!(s.users[&id].email, "new@example.com");
    assert_eq!(s.group_ids_of(id), vec![1, g]);
    assert_eq!(
        s.create_user(input(None)).unwrap_err().status().as_u16(),
        400
    );
    // Making them admin, then removing the original admin leaves one admin: allowed.
    s.update_user(
        id,
        UserPatch {
            is_superuser: Some(true),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.users[&id].is_superuser);
    s.deactivate_user(1).unwrap();
    assert_eq!(
        s.deactivate_user(id).unwrap_err(),
        crate::emulator::error::ApiError::bad_request(text::LAST_ADMIN)
    );
    assert_eq!(
        s.update_user(1, UserPatch::default()).unwrap_err(),
        crate::emulator::error::ApiError::not_found()
    );
    s.reactivate_user(1).unwrap();
    assert!(!s.users[&1].is_superuser);
    assert_eq!(s.reactivate_user(1).unwrap_err().status().as_u16(), 400);
}

#[test]
fn users_list_filters_orders_and_pages() {
    let mut s = ee();
    for (email, first) in [("b@x.io", "bob"), ("c@x.io", "Carol"), ("a@x.io", "alice")] {
        s.create_user(NewUserInput {
            email: email.into(),
            first_name: Some(first.into()),
            ..Default::default()
        })
        .unwrap();
    }
    let names = |q: &UserListQuery| -> Vec<String> {
        s.list_users(q).0.iter().map(|u| u.email.clone()).collect()
    };
    assert_eq!(
        names(&UserListQuery::default()),
        vec!["admin@example.com", "a@x.io", "b@x.io", "c@x.io"]
    );
    let q = UserListQuery {
        query: Some("CAR".into()),
        ..Default::default()
    };
    assert_eq!(names(&q), vec!["c@x.io"]);
    let q = UserListQuery {
        limit: Some(2),
        offset: Some(1),
        ..Default::default()
    };
    assert_eq!(names(&q), vec!["a@x.io", "b@x.io"]);
    assert_eq!(s.list_users(&q).1, 4);
}

#[test]
fn group_rules() {
    let mut s = ee();
    let g = new_group(&mut s, "Sales");
    assert_eq!(
        s.create_group("SALES").unwrap_err(),
        crate::emulator::error::ApiError::bad_request(text::GROUP_NAME_TAKEN)
    );
    assert_eq!(
        s.rename_group(2, "Admins").unwrap_err(),
        crate::emulator::error::ApiError::bad_request(
            "You cannot edit or delete the 'Administrators' permissions group!"
        )
    );
    let m = s.add_member(g, 1, None).unwrap();
    assert_eq!(s.add_member(g, 1, None).unwrap_err().status().as_u16(), 500);
    assert_eq!(s.add_member(1, 1, None).unwrap_err().status().as_u16(), 400);
    s.delete_group(g).unwrap();
    assert!(!s.memberships.contains_key(&m));
    assert!(s.delete_group(999).is_ok());
}

#[test]
fn seeding_builds_tenants_directly() {
    let mut s = ee();
    let seeded = s.seed_tenants(3);
    assert_eq!(seeded.len(), 3);
    let t = &seeded[2];
    assert_eq!(s.groups[&t.group_id].name, "Seed Tenant 3");
    assert_eq!(s.users[&t.user_id].email, "seed-3@example.test");
    assert_eq!(s.collections[&t.collection_id].location, "/2/");
    assert_eq!(
        coll_cell(&s, t.group_id, &t.collection_id.to_string()),
        "read"
    );
    assert_eq!(
        rendered(&s, t.group_id)["1"]["create-queries"],
        "query-builder"
    );
    assert_eq!(s.seed_tenants(1)[0].index, 4);
}

#[test]
fn membership_semantics_by_edition() {
    // (current rows, wanted items, replace plan, diff plan); items as (group, is_group_manager).
    let item = |g: i64, m: Option<Option<bool>>| MembershipItem {
        group_id: g,
        is_group_manager: m,
    };
    let all = vec![(1, Some(false))];
    type Case = (
        Vec<(i64, Option<bool>)>,
        Vec<MembershipItem>,
        GroupPlan,
        GroupPlan,
    );
    let cases: Vec<Case> = vec![
        // mbprov's request: no change to All Users on either edition.
        (
            all.clone(),
            vec![item(1, Some(Some(false))), item(7, Some(Some(false)))],
            GroupPlan {
                remove: vec![],
                add: vec![(7, Some(false))],
            },
            GroupPlan {
                remove: vec![],
                add: vec![(7, Some(false))],
            },
        ),
        // The item without the key: free replaces nothing; EE removes and re-adds All Users.
        (
            all.clone(),
            vec![item(1, None), item(7, None)],
            GroupPlan {
                remove: vec![],
                add: vec![(7, Some(false))],
            },
            GroupPlan {
                remove: vec![1],
                add: vec![(1, None), (7, None)],
            },
        ),
        // Making a member a manager: EE deletes and re-inserts the row.
        (
            vec![(1, Some(false)), (7, Some(false))],
            vec![item(1, Some(Some(false))), item(7, Some(Some(true)))],
            GroupPlan::default(),
            GroupPlan {
                remove: vec![7],
                add: vec![(7, Some(true))],
            },
        ),
    ];
    for (current, wanted, replace, diff) in cases {
        assert_eq!(replace_plan(&current, &wanted), replace, "{wanted:?}");
        assert_eq!(diff_plan(&current, &wanted), diff, "{wanted:?}");
    }
}

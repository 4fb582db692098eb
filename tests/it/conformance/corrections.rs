//! The verified corrections of `../shared/metabase-api.md` ("Verified corrections (December
//! 2026)"), one test each where the emulator reproduces them.

use serde_json::{Value, json};

use super::{BOTH, OLD, SANDBOXES_PAID, each};
use mbprov::emulator::EditionName;

/// Correction 1, EE `group-manager/set-user-group-memberships!` vs. the free edition's
/// `set-permissions-groups!`: an item without `is_group_manager` makes Pro remove All Users.
#[tokio::test]
async fn c01_set_user_group_memberships_diff() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let bare = e
            .post(
                "/api/user",
                json!({"email": "bare@example.com", "user_group_memberships": [{"id": 1}, {"id": g}]}),
            )
            .await;
        if e.pro() {
            bare.plain(
                400,
                "You cannot add or remove users to/from the 'All Users' group.",
            );
            assert_eq!(
                e.get("/api/user?query=bare").await.ok()["total"],
                0,
                "no user"
            );
        } else {
            bare.status(200);
        }
        let id = e.user("sent@example.com", &[g]).await;
        let u = e.get(&format!("/api/user/{id}")).await.ok();
        let groups: Vec<i64> = u["user_group_memberships"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|i| i["id"].as_i64())
            .collect();
        assert_eq!(groups, vec![1, g]);
        // PUT goes through the same function.
        let h = e.group("H").await;
        let put = e
            .put(
                &format!("/api/user/{id}"),
                json!({"user_group_memberships": [{"id": 1, "is_group_manager": false},
                                                   {"id": h, "is_group_manager": false}]}),
            )
            .await
            .ok();
        assert_eq!(put["user_group_memberships"][1]["id"], h);
    }
}

/// Correction 2, PR #49856 / #36724: `skip_graph` is undeclared and the graph comes back.
#[tokio::test]
async fn c02_skip_graph_is_undeclared() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let data = e
            .put_data(
                g,
                1,
                json!({"view-data": "unrestricted"}),
                "?skip_graph=true",
            )
            .await
            .ok();
        assert!(data.get("groups").is_some(), "{data}");
        let coll = e.put_collections(json!({}), "?skip_graph=true").await.ok();
        assert!(coll["groups"].get("2").is_some(), "the whole graph: {coll}");
    }
    // v0.51: the collection graph took `skip_graph` as a body key (PR #45438).
    for e in each(&BOTH, Some("v0.51.3")).await {
        let rev = e.collection_revision().await;
        let a = e
            .put(
                "/api/collection/graph",
                json!({"revision": rev, "groups": {}, "skip_graph": true}),
            )
            .await
            .ok();
        assert_eq!(a, json!({"revision": rev}));
        let q = e.put_collections(json!({}), "?skip-graph=true").await.ok();
        assert!(
            q.get("groups").is_some(),
            "no query parameter before v0.52: {q}"
        );
    }
}

/// Correction 3, `new-group-permissions`: derived from All Users, not copied.
#[tokio::test]
async fn c03_new_group_permissions() {
    for e in each(&BOTH, None).await {
        let all_users_db2 = if e.pro() {
            json!({"view-data": "blocked", "create-queries": "no"})
        } else {
            json!({"view-data": "unrestricted", "create-queries": "query-builder"})
        };
        e.put_data(1, 2, all_users_db2, "").await.ok();
        e.put_data(
            1,
            1,
            json!({"view-data": "unrestricted",
                   "create-queries": {"PUBLIC": {"10": "query-builder-and-native", "11": "query-builder"}},
                   "download": {"schemas": {"PUBLIC": {"10": "full", "11": "limited"}}}}),
            "",
        )
        .await
        .ok();
        let g = e.group("New").await;
        let graph = e.group_slice(g).await.ok();
        let mine = &graph["groups"][g.to_string()];
        assert_eq!(
            mine["1"],
            json!({"view-data": "unrestricted", "create-queries": "query-builder",
                   "download": {"schemas": "limited"}}),
            "most restrictive of All Users' values"
        );
        if e.pro() {
            assert_eq!(
                mine.get("2"),
                None,
                "blocked where All Users is blocked: {mine}"
            );
        } else {
            assert_eq!(mine["2"]["create-queries"], "query-builder");
        }
    }
}

/// Correction 4, PR #59727 `copy-collection-permissions!`: +1 per creation from v0.56.0,
/// none under a personal parent, none before v0.56.
#[tokio::test]
async fn c04_collection_creation_bumps_revision() {
    for e in each(&BOTH, None).await {
        let rev = e.collection_revision().await;
        e.collection("Top", None).await;
        assert_eq!(e.collection_revision().await, rev + 1);
        e.collection("Private", Some(1)).await;
        assert_eq!(e.collection_revision().await, rev + 1, "personal parent");
    }
    for e in each(&BOTH, Some(OLD)).await {
        let rev = e.collection_revision().await;
        e.collection("Top", None).await;
        assert_eq!(e.collection_revision().await, rev);
    }
}

/// Correction 5: a no-op data PUT bumps, a no-op collection PUT does not, a new group does
/// not move the data revision.
#[tokio::test]
async fn c05_no_op_revisions() {
    for e in each(&BOTH, None).await {
        let rev = e.data_revision().await;
        e.group("G").await;
        assert_eq!(e.data_revision().await, rev, "group creation");
        let a = e
            .put(
                "/api/permissions/graph",
                json!({"revision": rev, "groups": {}}),
            )
            .await
            .ok();
        assert_eq!(a["revision"], rev + 1);
        let crev = e.collection_revision().await;
        e.put_collections(json!({}), "").await.ok();
        assert_eq!(e.collection_revision().await, crev);
    }
}

/// Correction 6: duplicate and unknown memberships are 500s.
#[tokio::test]
async fn c06_duplicate_membership_is_500() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let u = e.user("u@example.com", &[g]).await;
        e.post(
            "/api/permissions/membership",
            json!({"group_id": g, "user_id": u}),
        )
        .await
        .status(500);
        e.post(
            "/api/permissions/membership",
            json!({"group_id": g, "user_id": 9999}),
        )
        .await
        .status(500);
        e.post(
            "/api/permissions/membership",
            json!({"group_id": 9999, "user_id": u}),
        )
        .await
        .status(500);
    }
}

/// Correction 7: what a view-data change deletes, and the sandboxed expansion on read.
#[tokio::test]
async fn c07_sandbox_deletion_scope() {
    for e in each(&[EditionName::Pro], None).await {
        let g = e.group("G").await;
        let count = || async {
            e.get("/api/mt/gtap")
                .await
                .ok()
                .as_array()
                .map_or(0, Vec::len)
        };
        let make = |t: i64| {
            e.post(
                "/api/mt/gtap",
                json!({"table_id": t, "group_id": g, "attribute_remappings": {}}),
            )
        };
        make(10).await.ok();
        make(20).await.ok();
        let graph = e.group_slice(g).await.ok();
        assert_eq!(
            graph["groups"][g.to_string()]["1"]["view-data"]["PUBLIC"]["10"],
            "sandboxed",
            "{graph}"
        );
        // A table value of `sandboxed` keeps the sandbox; another table's value leaves it.
        e.put_data(
            g,
            1,
            json!({"view-data": {"PUBLIC": {"10": "sandboxed", "11": "blocked"}}}),
            "",
        )
        .await
        .ok();
        assert_eq!(count().await, 2);
        // A schema value deletes that schema's sandboxes only.
        e.put_data(g, 1, json!({"view-data": {"PUBLIC": "unrestricted"}}), "")
            .await
            .ok();
        assert_eq!(count().await, 1);
        // A database value deletes the database's.
        e.put_data(g, 2, json!({"view-data": "unrestricted"}), "")
            .await
            .ok();
        assert_eq!(count().await, 0);
    }
}

/// Correction 8: 402 texts and shapes; the free edition's accepted values.
#[tokio::test]
async fn c08_premium_errors_and_free_edition_values() {
    for e in each(&[EditionName::Oss], None).await {
        let g = e.group("G").await;
        e.put_data(g, 1, json!({"view-data": {"PUBLIC": "blocked"}}), "")
            .await
            .ok();
        e.put_data(
            g,
            1,
            json!({"view-data": {"PUBLIC": {"10": "blocked"}}}),
            "",
        )
        .await
        .ok();
        e.put_data(
            g,
            1,
            json!({"view-data": {"PUBLIC": {"10": "sandboxed", "11": "unrestricted"}}}),
            "",
        )
        .await
        .ok();
        let graph = e.group_slice(g).await.ok();
        assert_eq!(
            graph["groups"][g.to_string()]["1"]["view-data"],
            "unrestricted"
        );
        let rev = e.data_revision().await;
        let sandboxes = json!({"revision": rev, "groups": {},
                               "sandboxes": [{"group_id": g, "table_id": 10}]});
        let a = e.put("/api/permissions/graph", sandboxes).await;
        assert_eq!(
            (a.status, a.json()["message"].clone()),
            (402, json!(SANDBOXES_PAID))
        );
        assert_eq!(a.json()["status"], "error-premium-feature-not-available");
    }
    for e in each(&[EditionName::Oss], Some(OLD)).await {
        let rev = e.data_revision().await;
        e.put(
            "/api/permissions/graph",
            json!({"revision": rev, "groups": {}, "sandboxes": [{"group_id": 1, "table_id": 10}]}),
        )
        .await
        .plain(402, SANDBOXES_PAID);
    }
}

/// Correction 10: unknown ids in `PUT /api/collection/graph` are not validated.
#[tokio::test]
async fn c10_unknown_ids_in_collection_graph() {
    for e in each(&BOTH, None).await {
        let rev = e.collection_revision().await;
        let a = e
            .put_collections(json!({"1": {"99999": "none"}}), "")
            .await
            .ok();
        assert_eq!(a["revision"], rev + 1);
        e.put_collections(json!({"1": {"99999": "read"}}), "")
            .await
            .status(500);
    }
}

/// Correction 11: v0.57 fields, `archived` defaulting to false on rename, internal-only lists.
#[tokio::test]
async fn c11_changes_from_v0_57() {
    for e in each(&BOTH, None).await {
        let id = e.user("u@example.com", &[]).await;
        let u = e.get(&format!("/api/user/{id}")).await.ok();
        for k in ["is_data_analyst", "tenant_id", "structured_attributes"] {
            assert!(u.get(k).is_some(), "{k} in {u}");
        }
        assert_eq!(e.get("/api/user?tenancy=external").await.ok()["total"], 0);
        let c = e.collection("C", None).await;
        e.put(&format!("/api/collection/{c}"), json!({"archived": true}))
            .await
            .ok();
        let renamed = e
            .put(&format!("/api/collection/{c}"), json!({"name": "D"}))
            .await
            .ok();
        assert_eq!(renamed["archived"], false, "a rename un-archives");
        for k in [
            "is_remote_synced",
            "archived_directly",
            "effective_location",
        ] {
            assert!(renamed.get(k).is_some(), "{k} in {renamed}");
        }
    }
    for e in each(&BOTH, Some(OLD)).await {
        let id = e.user("u@example.com", &[]).await;
        let u = e.get(&format!("/api/user/{id}")).await.ok();
        assert_eq!(u.get("is_data_analyst"), None::<&Value>);
        let c = e.collection("C", None).await;
        e.put(&format!("/api/collection/{c}"), json!({"archived": true}))
            .await
            .ok();
        let renamed = e
            .put(&format!("/api/collection/{c}"), json!({"name": "D"}))
            .await
            .ok();
        assert_eq!(renamed["archived"], true, "left alone before v0.57");
    }
}

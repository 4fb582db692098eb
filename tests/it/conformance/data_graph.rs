//! The data permission graph: `/api/permissions/graph` (facts 19-33; P =
//! `test/metabase/permissions_rest/api_test.clj`, P-h its newer "REQUEST SCHEMA" section).

use serde_json::{Value, json};

use super::{BOTH, FORBIDDEN, OLD, STALE, each};
use mbprov::emulator::EditionName;

/// Fact 19, P `fetch-perms-graph-test`.
#[tokio::test]
async fn f19_fetch_perms_graph_test() {
    for e in each(&BOTH, None).await {
        let g = e.get("/api/permissions/graph").await.ok();
        let admin = &g["groups"]["2"]["1"];
        assert_eq!(admin["view-data"], "unrestricted");
        assert_eq!(admin["create-queries"], "query-builder-and-native");
        e.rasta()
            .await
            .get("/api/permissions/graph")
            .await
            .plain(403, FORBIDDEN);
    }
}

/// Fact 20, P `fetch-perms-graph-by-group-id-test`, `fetch-perms-graph-by-db-id-test`.
#[tokio::test]
async fn f20_fetch_perms_graph_by_group_and_db_id_test() {
    for e in each(&BOTH, None).await {
        let g = e.get("/api/permissions/graph/group/1").await.ok();
        assert!(g["revision"].as_i64().is_some_and(|r| r >= 0));
        assert_eq!(g["groups"].as_object().map(|o| o.len()), Some(1));
        assert!(g["groups"].get("1").is_some());
        let d = e.get("/api/permissions/graph/db/2").await.ok();
        for (_, dbs) in d["groups"].as_object().expect("groups") {
            let keys: Vec<&String> = dbs.as_object().expect("dbs").keys().collect();
            assert_eq!(keys, vec!["2"]);
        }
    }
}

/// Fact 21, P `update-perms-graph-test`.
#[tokio::test]
async fn f21_update_perms_graph_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        e.put_data(
            g,
            1,
            json!({"view-data": "unrestricted", "create-queries": "no"}),
            "",
        )
        .await
        .ok();
        let after = e.group_slice(g).await.ok();
        assert_eq!(
            after["groups"][g.to_string()]["1"]["view-data"],
            "unrestricted"
        );
    }
}

/// Fact 22, P `update-perms-graph-table-specific-perms-test`.
#[tokio::test]
async fn f22_update_perms_graph_table_specific_perms_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let tables = json!({"PUBLIC": {"10": "query-builder", "11": "query-builder"}});
        e.put_data(
            g,
            1,
            json!({"view-data": "unrestricted", "create-queries": tables}),
            "",
        )
        .await
        .ok();
        let after = e.group_slice(g).await.ok();
        // Both tables of the schema agree, so Metabase collapses them on read.
        let cq = &after["groups"][g.to_string()]["1"]["create-queries"];
        assert!(*cq == tables || *cq == json!("query-builder"), "{cq}");
    }
}

/// Fact 23, P `update-perms-graph-with-skip-graph-test`.
#[tokio::test]
async fn f23_update_perms_graph_with_skip_graph_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let perms = json!({"view-data": "unrestricted"});
        for q in ["", "?skip-graph=false"] {
            let a = e.put_data(g, 1, perms.clone(), q).await.ok();
            assert!(
                a["revision"].as_i64() > Some(0) && a.get("groups").is_some(),
                "{a}"
            );
        }
        let a = e.put_data(g, 1, perms, "?skip-graph=true").await.ok();
        assert_eq!(a.as_object().map(|o| o.len()), Some(1), "{a}");
        assert!(a["revision"].as_i64() > Some(0));
    }
}

/// Fact 24, P `update-perms-graph-force-test`.
#[tokio::test]
async fn f24_update_perms_graph_force_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let rev = e.data_revision().await;
        let body = json!({"revision": rev - 1,
                          "groups": {g.to_string(): {"1": {"view-data": "unrestricted"}}}});
        e.put("/api/permissions/graph?force=false", body.clone())
            .await
            .plain(409, STALE);
        e.put("/api/permissions/graph?force=true", body).await.ok();
    }
}

/// Fact 25, P `can-revoke-permsissions-via-graph-test`.
#[tokio::test]
async fn f25_can_revoke_permissions_via_graph_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let tables = json!({"PUBLIC": {"10": "query-builder"}});
        e.put_data(
            g,
            1,
            json!({"view-data": "unrestricted", "create-queries": tables}),
            "",
        )
        .await
        .ok();
        e.put_data(
            g,
            1,
            json!({"view-data": "unrestricted", "create-queries": "no"}),
            "",
        )
        .await
        .ok();
        let after = e.group_slice(g).await.ok();
        let db = &after["groups"][g.to_string()]["1"];
        assert_eq!(db["view-data"], "unrestricted");
        assert!(
            db.get("create-queries").is_none(),
            "revoked everywhere: {db}"
        );
    }
}

/// Fact 26, P / P-new `update-perms-graph-blocked-view-data-test`: table-level `blocked`
/// (accepted by the free edition too) forces download to none.
#[tokio::test]
async fn f26_update_perms_graph_blocked_view_data_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        e.put_data(
            g,
            1,
            json!({"view-data": {"PUBLIC": {"10": "blocked", "11": "unrestricted"}},
                   "download": {"schemas": {"PUBLIC": {"10": "full", "11": "full"}}}}),
            "",
        )
        .await
        .ok();
        let after = e.group_slice(g).await.ok();
        let db = &after["groups"][g.to_string()]["1"];
        assert_eq!(
            db["view-data"],
            json!({"PUBLIC": {"11": "unrestricted"}}),
            "{db}"
        );
        assert_eq!(
            db["download"],
            json!({"schemas": {"PUBLIC": {"11": "full"}}}),
            "{db}"
        );
    }
}

/// Fact 27, P `update-perms-graph-error-test`: `sandboxes` without premium features.
#[tokio::test]
async fn f27_update_perms_graph_error_test() {
    for e in each(&[EditionName::Oss], None).await {
        let rev = e.data_revision().await;
        let a = e
            .put(
                "/api/permissions/graph",
                json!({"revision": rev, "groups": {},
                       "sandboxes": [{"group_id": 1, "table_id": 10, "card_id": 1}]}),
            )
            .await;
        assert_eq!(a.status, 402, "{a:?}");
        assert!(a.text.contains("Sandboxes"), "{a:?}");
    }
}

/// Fact 28, P-new `update-graph-response-echoes-only-modified-groups-test`.
#[tokio::test]
async fn f28_update_graph_response_echoes_only_modified_groups_test() {
    for e in each(&BOTH, None).await {
        let g1 = e.group("G1").await;
        e.group("G2").await;
        let a = e
            .put_data(g1, 1, json!({"view-data": "unrestricted"}), "")
            .await
            .ok();
        let keys: Vec<&String> = a["groups"].as_object().expect("groups").keys().collect();
        assert_eq!(keys, vec![&g1.to_string()]);
    }
}

/// Fact 29, P-new `oss-edit-create-queries-on-blocked-row-test` (newest, free edition).
#[tokio::test]
async fn f29_oss_edit_create_queries_on_blocked_row_test() {
    for e in each(&[EditionName::Oss], None).await {
        let g = e.group("G").await;
        // The free edition accepts schema-level `blocked` (correction 8).
        e.put_data(g, 1, json!({"view-data": {"PUBLIC": "blocked"}}), "")
            .await
            .ok();
        e.put_data(
            g,
            1,
            json!({"create-queries": "query-builder-and-native"}),
            "",
        )
        .await
        .ok();
        let after = e.group_slice(g).await.ok();
        assert_eq!(
            after["groups"][g.to_string()]["1"]["view-data"],
            "unrestricted"
        );
    }
}

/// Fact 31, P-h `update-perms-graph-drops-unknown-db-perms-test`,
/// `update-perms-graph-drops-undeclared-keys-test` (newest): an undeclared per-database key
/// is dropped, not echoed.
#[tokio::test]
async fn f31_update_perms_graph_drops_undeclared_keys_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let a = e
            .put_data(
                g,
                1,
                json!({"view-data": "unrestricted", "is_superuser": true}),
                "",
            )
            .await
            .ok();
        let db = &a["groups"][g.to_string()]["1"];
        assert!(db.get("is_superuser").is_none(), "{db}");
        assert_eq!(db["view-data"], "unrestricted");
    }
}

/// Fact 32, P-h `update-perms-graph-rejects-non-graph-bodies-test`,
/// `update-perms-graph-rejects-out-of-range-ids-test` (newest): junk is a 400, nothing written.
#[tokio::test]
async fn f32_update_perms_graph_rejects_junk_test() {
    for e in each(&BOTH, None).await {
        let before = e.get("/api/permissions/graph").await.ok();
        let rev = before["revision"].clone();
        let junk: Vec<Value> = vec![
            json!({"revision": rev, "groups": "x"}),
            json!({"revision": rev, "groups": 3}),
            json!({"revision": rev, "groups": [1]}),
            json!({"revision": rev, "groups": {"1": 3}}),
            json!({"revision": rev, "groups": {"1": {"1": 3}}}),
            json!({"revision": rev, "groups": {"1": {"1": {"view-data": "bogus"}}}}),
            json!({"revision": rev, "groups": {"-1": {"1": {"view-data": "unrestricted"}}}}),
            json!({"revision": rev, "groups": {"0": {"1": {"view-data": "unrestricted"}}}}),
            json!({"revision": rev, "groups": {"x": {"1": {"view-data": "unrestricted"}}}}),
            json!({"revision": rev, "groups": {"1": {"-1": {"view-data": "unrestricted"}}}}),
            json!({"revision": rev, "groups": {"1": {"1": {"create-queries": {"PUBLIC": {"-1": "no"}}}}}}),
            json!([1, 2]),
        ];
        for body in junk {
            let a = e.put("/api/permissions/graph", body.clone()).await;
            assert_eq!(a.status, 400, "{body} -> {a:?}");
        }
        assert_eq!(e.get("/api/permissions/graph").await.ok(), before);
    }
}

/// Fact 33, P-h `update-perms-graph-rejects-non-record-sandboxes-and-impersonations-test`,
/// `update-perms-graph-sandbox-and-impersonation-shapes-test` (newest, EE).
#[tokio::test]
async fn f33_update_perms_graph_sandbox_shapes_test() {
    for e in each(&[EditionName::Pro], None).await {
        let rev = e.data_revision().await;
        for bad in [json!(["x"]), json!([null]), json!([{}])] {
            let a = e
                .put(
                    "/api/permissions/graph",
                    json!({"revision": rev, "groups": {}, "sandboxes": bad}),
                )
                .await;
            assert_eq!(a.status, 400, "{bad} -> {a:?}");
        }
    }
}

/// Fact 23 on an older release: `?skip-graph=true` has worked on the data graph since
/// PR #36724 (Dec 2023), and before v0.51 the answer without it is the whole graph.
#[tokio::test]
async fn f23_skip_graph_on_v0_50() {
    for e in each(&BOTH, Some("v0.50.9")).await {
        let g = e.group("G").await;
        e.group("Other").await;
        let a = e
            .put_data(
                g,
                1,
                json!({"view-data": "unrestricted"}),
                "?skip-graph=true",
            )
            .await;
        assert_eq!(a.ok().as_object().map(|o| o.len()), Some(1));
        let whole = e
            .put_data(g, 1, json!({"view-data": "unrestricted"}), "")
            .await
            .ok();
        assert!(
            whole["groups"].get("1").is_some(),
            "whole graph before v0.51: {whole}"
        );
    }
    let _ = OLD;
}

/// Fact 30, P-new `update-perms-graph-rejects-tenant-groups-test`,
/// `hide-tenant-groups-from-graph-test` (newest, pro): while `use-tenants` is off the graph
/// leaves tenant groups out, `GET /graph/group/:id` is "Not found.", and a PUT naming one is a
/// 400 with `errors.tenant-group-ids` that writes nothing; once on, all of it is visible.
#[tokio::test]
async fn f30_tenant_groups_hidden_from_the_graph_while_tenants_off() {
    for e in each(&[EditionName::Pro], None).await {
        let tg = e
            .post(
                "/api/permissions/group",
                json!({"name": "Tenant Group", "is_tenant_group": true}),
            )
            .await
            .ok()["id"]
            .as_i64()
            .expect("an id");
        let other = e.group("Internal").await;
        let graph = e.get("/api/permissions/graph").await.ok();
        assert!(graph["groups"].get(tg.to_string()).is_none(), "{graph}");
        assert!(graph["groups"].get(other.to_string()).is_some(), "{graph}");
        e.get(&format!("/api/permissions/graph/group/{tg}"))
            .await
            .plain(404, "Not found.");

        let rev = e.data_revision().await;
        let a = e
            .put(
                "/api/permissions/graph",
                json!({"revision": rev, "groups": {
                    tg.to_string(): {"1": {"view-data": "unrestricted"}},
                    other.to_string(): {"1": {"create-queries": "query-builder"}}}}),
            )
            .await;
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(a.json()["errors"]["tenant-group-ids"], json!([tg]), "{a:?}");
        assert_eq!(e.data_revision().await, rev, "nothing written");

        super::groups::use_tenants(&e, true).await;
        let graph = e.get("/api/permissions/graph").await.ok();
        assert!(graph["groups"].get(tg.to_string()).is_some(), "{graph}");
        e.get(&format!("/api/permissions/graph/group/{tg}"))
            .await
            .ok();
        e.put_data(tg, 1, json!({"view-data": "unrestricted"}), "")
            .await
            .ok();
    }
}

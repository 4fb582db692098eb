//! The collection permission graph: `/api/collection/graph` (facts 34-37; CG =
//! `test/metabase/permissions/models/collection/graph_test.clj`, C =
//! `test/metabase/collections_rest/api_test.clj`).

use serde_json::json;

use super::{BOTH, FORBIDDEN, OLD, STALE, each};

/// Fact 34, CG `basic-test`, `no-op-test`, `grant-perms-test`: admins hold `root: write`; a
/// no-op PUT keeps the revision; a grant shows and bumps it by one.
#[tokio::test]
async fn f34_basic_no_op_and_grant_perms_test() {
    for e in each(&BOTH, None).await {
        let graph = e.get("/api/collection/graph").await.ok();
        assert_eq!(graph["groups"]["2"]["root"], "write");
        let g = e.group("G").await;
        let c = e.collection("C", None).await;
        let rev = e.collection_revision().await;
        let same = e
            .put_collections(json!({"1": {"root": "write"}}), "")
            .await
            .ok();
        assert_eq!(same["revision"], rev, "no-op");
        let granted = e
            .put_collections(json!({g.to_string(): {c.to_string(): "read"}}), "")
            .await
            .ok();
        assert_eq!(granted["revision"], rev + 1);
        assert_eq!(granted["groups"][g.to_string()][c.to_string()], "read");
    }
}

/// Fact 35, C `graph-test`: 403 for rasta, 409 for a stale revision, `force` without one.
#[tokio::test]
async fn f35_graph_test() {
    for e in each(&BOTH, None).await {
        e.rasta()
            .await
            .get("/api/collection/graph")
            .await
            .plain(403, FORBIDDEN);
        let g = e.group("G").await;
        let rev = e.collection_revision().await;
        let body = |r: serde_json::Value| json!({"revision": r, "groups": {g.to_string(): {"root": "read"}}});
        e.put("/api/collection/graph", body(json!(rev - 1)))
            .await
            .plain(409, STALE);
        e.put(
            "/api/collection/graph?force=true",
            json!({"groups": {g.to_string(): {"root": "read"}}}),
        )
        .await
        .ok();
    }
}

/// Fact 36, C `graph-excludes-archived-collections-test`.
#[tokio::test]
async fn f36_graph_excludes_archived_collections_test() {
    for e in each(&BOTH, None).await {
        let c = e.collection("Old", None).await;
        e.put(&format!("/api/collection/{c}"), json!({"archived": true}))
            .await
            .ok();
        let graph = e.get("/api/collection/graph").await.ok();
        assert!(graph["groups"]["2"].get(c.to_string()).is_none(), "{graph}");
    }
}

/// Fact 37, C `skip-graph-skips-graph-on-graph-PUT`.
#[tokio::test]
async fn f37_skip_graph_skips_graph_on_graph_put() {
    for e in each(&BOTH, None).await {
        let a = e.put_collections(json!({}), "").await.ok();
        assert!(a.get("groups").is_some());
        let a = e.put_collections(json!({}), "?skip-graph=true").await.ok();
        assert_eq!(a.as_object().map(|o| o.len()), Some(1), "{a}");
    }
}

/// Fact 34 before 0.56.13 (PR metabase#65098): the graph is the full cross product, with
/// explicit `"none"` cells, and `skip-graph` already works (v0.52+).
#[tokio::test]
async fn f34_full_graph_before_0_56_13() {
    for e in each(&BOTH, Some(OLD)).await {
        let g = e.group("G").await;
        let graph = e.get("/api/collection/graph").await.ok();
        assert_eq!(graph["groups"][g.to_string()]["root"], "none", "{graph}");
        let a = e.put_collections(json!({}), "?skip-graph=true").await.ok();
        assert_eq!(a.as_object().map(|o| o.len()), Some(1), "{a}");
    }
}

/// Fact 35 (`?namespace=` selects the namespace; entries outside it are ignored), CG
/// `collection-namespace-test`: each namespace is its own slice with its own root, a PUT drops
/// the cells of another namespace's collections (`remove-collections-from-other-namespaces`),
/// and the revision is one for all of them (`graph` reads `c-perm-revision/latest-id`).
#[tokio::test]
async fn f35_collection_namespace_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let gk = g.to_string();
        let a = e.collection("Default A", None).await;
        let ca = e
            .post(
                "/api/collection",
                json!({"name": "Currency A", "namespace": "currency"}),
            )
            .await
            .ok()["id"]
            .as_i64()
            .expect("id");
        let cab = e.collection("Currency A -> B", Some(ca)).await;
        let currency = || async { e.get("/api/collection/graph?namespace=currency").await.ok() };
        let default = || async { e.get("/api/collection/graph").await.ok() };

        // Each slice lists only its own collections (the admins' row shows which).
        let admins = currency().await["groups"]["2"].clone();
        assert_eq!(admins["root"], "write");
        assert_eq!(admins[ca.to_string()], "write");
        assert_eq!(admins[cab.to_string()], "write");
        assert!(admins.get(a.to_string()).is_none(), "{admins}");
        assert!(default().await["groups"]["2"].get(ca.to_string()).is_none());

        // A default PUT naming a currency collection leaves it alone.
        let before = default().await["revision"].clone();
        e.put(
            "/api/collection/graph",
            json!({"revision": before, "groups": {&gk: {a.to_string(): "write", cab.to_string(): "write"}}}),
        )
        .await
        .ok();
        assert_eq!(default().await["groups"][&gk][a.to_string()], "write");
        assert!(
            currency().await["groups"][&gk]
                .get(cab.to_string())
                .is_none()
        );

        // A currency PUT: the default collection's cell is dropped, the revision is shared.
        let rev = currency().await["revision"].as_i64().expect("revision");
        assert_eq!(json!(rev), default().await["revision"]);
        let put = e
            .put(
                "/api/collection/graph",
                json!({"revision": rev, "namespace": "currency",
                       "groups": {&gk: {a.to_string(): "read", ca.to_string(): "write"}}}),
            )
            .await
            .ok();
        assert_eq!(put["groups"][&gk][ca.to_string()], "write", "{put}");
        assert!(put["groups"][&gk].get(a.to_string()).is_none(), "{put}");
        assert_eq!(default().await["groups"][&gk][a.to_string()], "write");
        assert_eq!(default().await["revision"], json!(rev + 1));
        // ...so a default-namespace writer holding the older revision is stale now.
        e.put(
            "/api/collection/graph",
            json!({"revision": rev, "groups": {&gk: {a.to_string(): "none"}}}),
        )
        .await
        .plain(409, STALE);

        // Roots are per namespace.
        e.put_collections(json!({&gk: {"root": "read"}}), "")
            .await
            .ok();
        assert!(currency().await["groups"][&gk].get("root").is_none());
        let rev = currency().await["revision"].clone();
        e.put(
            "/api/collection/graph",
            json!({"revision": rev, "namespace": "currency", "groups": {&gk: {"root": "write"}}}),
        )
        .await
        .ok();
        assert_eq!(currency().await["groups"][&gk]["root"], "write");
        assert_eq!(default().await["groups"][&gk]["root"], "read");
        // A top-level collection of a namespace copies that namespace's root
        // (`copy-parent-permissions!`).
        let cc = e
            .post(
                "/api/collection",
                json!({"name": "Currency C", "namespace": "currency"}),
            )
            .await
            .ok()["id"]
            .as_i64()
            .expect("id");
        assert_eq!(currency().await["groups"][&gk][cc.to_string()], "write");
    }
}

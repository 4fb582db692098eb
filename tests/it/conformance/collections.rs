//! Collections: `/api/collection` (facts 38-46; C = `test/metabase/collections_rest/api_test.clj`).

use serde_json::{Value, json};

use super::{BOTH, FORBIDDEN, each};

/// Fact 38, C `list-collections-test`: Root first.
#[tokio::test]
async fn f38_list_collections_test() {
    for e in each(&BOTH, None).await {
        let list = e.get("/api/collection").await.ok();
        let root = &list[0];
        assert_eq!(root["id"], "root");
        assert_eq!(root["name"], "Our analytics");
        assert_eq!(root["can_write"], true);
        assert_eq!(root["is_personal"], false);
    }
}

/// Fact 39, C `create-collection-test`.
#[tokio::test]
async fn f39_create_collection_test() {
    for e in each(&BOTH, None).await {
        let c = e
            .post("/api/collection", json!({"name": "Stamp Collection"}))
            .await
            .ok();
        assert_eq!(c["name"], "Stamp Collection");
        assert_eq!(c["archived"], false);
        assert_eq!(c["location"], "/");
        assert_eq!(c["personal_owner_id"], Value::Null);
        assert_eq!(c["namespace"], Value::Null);
    }
}

/// Fact 40, C `non-admin-create-collection-in-root-perms-test`.
#[tokio::test]
async fn f40_non_admin_create_collection_in_root_perms_test() {
    for e in each(&BOTH, None).await {
        // Take root write away from All Users first, as the Metabase test does.
        e.put_collections(json!({"1": {"root": "none"}}), "")
            .await
            .ok();
        e.rasta()
            .await
            .post("/api/collection", json!({"name": "Nope"}))
            .await
            .plain(403, FORBIDDEN);
    }
}

/// Fact 41, C `create-child-collection-test`.
#[tokio::test]
async fn f41_create_child_collection_test() {
    for e in each(&BOTH, None).await {
        let a = e.collection("A", None).await;
        let c = e.collection("C", Some(a)).await;
        let d = e
            .post("/api/collection", json!({"name": "D", "parent_id": c}))
            .await
            .ok();
        assert_eq!(d["location"], format!("/{a}/{c}/"));
    }
}

/// Fact 42, C `create-child-collection-explicit-namespace-fails-test` and
/// `create-child-collection-namespace-inheritance-test`: a child named into another namespace
/// than its parent's is refused (`assert-valid-namespace` in `collections/models/collection.clj`);
/// without `namespace` it takes the parent's.
#[tokio::test]
async fn f42_create_child_collection_explicit_namespace_fails_test() {
    for e in each(&BOTH, None).await {
        let a = e.collection("A", None).await;
        e.post(
            "/api/collection",
            json!({"name": "B", "parent_id": a, "namespace": "currency"}),
        )
        .await
        .assert_json(
            400,
            json!({"errors": {"location": "Collection must be in the same namespace as its parent"}}),
        );
        let currency = e
            .post(
                "/api/collection",
                json!({"name": "C", "namespace": "currency"}),
            )
            .await
            .ok();
        assert_eq!(currency["namespace"], "currency");
        let child = e
            .post(
                "/api/collection",
                json!({"name": "D", "parent_id": currency["id"]}),
            )
            .await
            .ok();
        assert_eq!(child["namespace"], "currency", "inherited");
        // Naming the parent's namespace is fine; the default one under it is not.
        e.post(
            "/api/collection",
            json!({"name": "E", "parent_id": currency["id"], "namespace": "currency"}),
        )
        .await
        .ok();
        e.post(
            "/api/collection",
            json!({"name": "F", "parent_id": a, "namespace": "currency"}),
        )
        .await
        .status(400);
    }
}

/// Fact 43, C `update-collection-test`, `archive-collection-perms-test` (admin half).
#[tokio::test]
async fn f43_update_collection_test() {
    for e in each(&BOTH, None).await {
        let c = e.collection("C", None).await;
        let a = e
            .put(
                &format!("/api/collection/{c}"),
                json!({"name": "Renamed", "archived": false}),
            )
            .await
            .ok();
        assert_eq!(a["name"], "Renamed");
        e.rasta()
            .await
            .put(&format!("/api/collection/{c}"), json!({"name": "X"}))
            .await
            .plain(403, FORBIDDEN);
        let archived = e
            .put(&format!("/api/collection/{c}"), json!({"archived": true}))
            .await
            .ok();
        assert_eq!(archived["archived"], true);
    }
}

/// Fact 44, C `collection-deletion-prohibitions` (not the namespace half: no namespaces here).
#[tokio::test]
async fn f44_collection_deletion_prohibitions() {
    for e in each(&BOTH, None).await {
        let c = e.collection("Live", None).await;
        e.delete(&format!("/api/collection/{c}"))
            .await
            .plain(400, "Collection must be trashed before deletion.");
        e.rasta()
            .await
            .delete(&format!("/api/collection/{c}"))
            .await
            .plain(403, FORBIDDEN);
    }
}

/// Fact 45, C `collections-can-be-deleted`: a descendant trashed on its own is moved up.
#[tokio::test]
async fn f45_collections_can_be_deleted() {
    for e in each(&BOTH, None).await {
        let a = e.collection("A", None).await;
        let b = e.collection("B", Some(a)).await;
        let gone = e.collection("Gone", Some(a)).await;
        e.put(&format!("/api/collection/{b}"), json!({"archived": true}))
            .await
            .ok();
        e.put(&format!("/api/collection/{a}"), json!({"archived": true}))
            .await
            .ok();
        e.delete(&format!("/api/collection/{a}")).await.status(200);
        e.get(&format!("/api/collection/{a}")).await.status(404);
        e.get(&format!("/api/collection/{gone}")).await.status(404);
        let kept = e.get(&format!("/api/collection/{b}")).await.ok();
        assert_eq!(kept["location"], "/");
    }
}

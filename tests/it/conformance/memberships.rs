//! Memberships: `/api/permissions/membership` (facts 14-18; P =
//! `test/metabase/permissions_rest/api_test.clj`).

use serde_json::json;

use super::{BOTH, FORBIDDEN, each};

/// Fact 14, P `get-group-membership-test`.
#[tokio::test]
async fn f14_get_group_membership_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let u = e.user("u@example.com", &[g]).await;
        let map = e.get("/api/permissions/membership").await.ok();
        let rows = map[u.to_string()]
            .as_array()
            .expect("the user's rows")
            .clone();
        assert_eq!(rows.len(), 2);
        for r in rows {
            for k in ["membership_id", "group_id", "user_id", "is_group_manager"] {
                assert!(r.get(k).is_some(), "{k} in {r}");
            }
        }
        assert!(map.get("1").is_some(), "the admin is listed");
    }
}

/// Fact 15, P `add-group-membership-test`: 200 with the group's members; 403 for rasta.
#[tokio::test]
async fn f15_add_group_membership_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let u = e.user("u@example.com", &[]).await;
        let members = e
            .post(
                "/api/permissions/membership",
                json!({"group_id": g, "user_id": u}),
            )
            .await
            .ok();
        assert_eq!(members[0]["user_id"], u);
        let h = e.group("H").await;
        e.rasta()
            .await
            .post(
                "/api/permissions/membership",
                json!({"group_id": h, "user_id": u}),
            )
            .await
            .plain(403, FORBIDDEN);
    }
}

/// Fact 16, P `update-group-membership-test`: group managers need advanced permissions.
#[tokio::test]
async fn f16_update_group_membership_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let u = e.user("u@example.com", &[]).await;
        let members = e
            .post(
                "/api/permissions/membership",
                json!({"group_id": g, "user_id": u}),
            )
            .await
            .ok();
        let m = members[0]["membership_id"].as_i64().expect("membership id");
        let a = e
            .put(
                &format!("/api/permissions/membership/{m}"),
                json!({"is_group_manager": false}),
            )
            .await;
        if e.pro() {
            assert_eq!(a.ok()["is_group_manager"], false);
        } else {
            a.plain(
                402,
                "The group manager permissions functionality is only enabled if you have a premium token with the advanced-permissions feature.",
            );
        }
    }
}

/// Fact 17, P `clear-group-membership-test`, `delete-group-membership-test`.
#[tokio::test]
async fn f17_clear_and_delete_group_membership_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        e.user("a@example.com", &[g]).await;
        let b = e.user("b@example.com", &[]).await;
        let rasta = e.rasta().await;
        rasta
            .put(&format!("/api/permissions/membership/{g}/clear"), json!({}))
            .await
            .plain(403, FORBIDDEN);
        e.put(&format!("/api/permissions/membership/{g}/clear"), json!({}))
            .await
            .status(204);
        let group = e.get(&format!("/api/permissions/group/{g}")).await.ok();
        assert_eq!(group["members"], json!([]));
        e.put("/api/permissions/membership/2/clear", json!({}))
            .await
            .status(400);
        let members = e
            .post(
                "/api/permissions/membership",
                json!({"group_id": g, "user_id": b}),
            )
            .await
            .ok();
        let m = members[0]["membership_id"].as_i64().expect("membership id");
        rasta
            .delete(&format!("/api/permissions/membership/{m}"))
            .await
            .plain(403, FORBIDDEN);
        e.delete(&format!("/api/permissions/membership/{m}"))
            .await
            .status(204);
    }
}

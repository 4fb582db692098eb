//! Users: `/api/user` (facts 47-52; U = `test/metabase/users_rest/api_test.clj`, U-old =
//! `test/metabase/api/user_test.clj`).

use serde_json::json;

use super::{BOTH, each};

/// Fact 47, U `create-user-test`: the new user is in All Users.
#[tokio::test]
async fn f47_create_user_test() {
    for e in each(&BOTH, None).await {
        let u = e
            .post(
                "/api/user",
                json!({"first_name": "Cam", "last_name": "Era", "email": "cam@example.com"}),
            )
            .await
            .ok();
        let items = u["user_group_memberships"]
            .as_array()
            .expect("memberships")
            .clone();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["id"], 1);
        // `is_group_manager` is in the items only with advanced permissions.
        assert_eq!(items[0].get("is_group_manager").is_some(), e.pro());
    }
}

/// Fact 48, U `create-user-existing-email-test`.
#[tokio::test]
async fn f48_create_user_existing_email_test() {
    for e in each(&BOTH, None).await {
        e.user("dup@example.com", &[]).await;
        let a = e
            .post("/api/user", json!({"email": "DUP@example.com"}))
            .await;
        assert_eq!(a.status, 400);
        assert_eq!(
            a.json(),
            json!({"errors": {"email": "Email address already in use."}})
        );
    }
}

/// Fact 49, U `create-user-validate-input-test`.
#[tokio::test]
async fn f49_create_user_validate_input_test() {
    for e in each(&BOTH, None).await {
        let a = e.post("/api/user", json!({"email": "not an email"})).await;
        assert_eq!(a.status, 400);
        assert_eq!(
            a.json()["errors"],
            json!({"email": "value must be a valid email address."})
        );
    }
}

/// Fact 50, U `create-user-set-groups-test-2`: memberships without All Users -> 400, no user.
#[tokio::test]
async fn f50_create_user_set_groups_test_2() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let a = e
            .post(
                "/api/user",
                json!({"email": "x@example.com",
                       "user_group_memberships": [{"id": g, "is_group_manager": false}]}),
            )
            .await;
        a.plain(
            400,
            "You cannot add or remove users to/from the 'All Users' group.",
        );
        let found = e.get("/api/user?query=x%40example.com").await.ok();
        assert_eq!(found["total"], 0);
    }
}

/// Fact 52, U-old reactivate tests.
#[tokio::test]
async fn f52_reactivate_tests() {
    for e in each(&BOTH, None).await {
        e.put("/api/user/9999/reactivate", json!({}))
            .await
            .plain(404, "Not found.");
        let u = e.user("active@example.com", &[]).await;
        let a = e.put(&format!("/api/user/{u}/reactivate"), json!({})).await;
        assert_eq!(a.status, 400);
        assert_eq!(a.json()["message"], "Not able to reactivate an active user");
    }
}

/// Fact 51, U `create-user-setup-source-test` (newest).
#[tokio::test]
async fn f51_create_user_setup_source_test() {
    for e in each(&BOTH, None).await {
        let u = e
            .post(
                "/api/user",
                json!({"email": "first@example.com", "source": "setup"}),
            )
            .await
            .ok();
        assert_eq!(u["is_superuser"], true);
        let ids: Vec<i64> = u["user_group_memberships"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|m| m["id"].as_i64())
            .collect();
        assert_eq!(ids, vec![1, 2]);
    }
}

//! Groups: `/api/permissions/group` (facts 1-13; test file P =
//! `test/metabase/permissions_rest/api_test.clj`, G = `permissions_group_test.clj`).

use serde_json::{Value, json};

use super::{BOTH, FORBIDDEN, each};
use mbprov::emulator::EditionName;

fn named<'a>(groups: &'a Value, name: &str) -> &'a Value {
    groups
        .as_array()
        .and_then(|a| a.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("no group {name} in {groups}"))
}

/// Fact 1, P `fetch-groups-test`: member counts, empty groups at 0, inactive users not counted.
#[tokio::test]
async fn f01_fetch_groups_test() {
    for e in each(&BOTH, None).await {
        let empty = e.group("Empty").await;
        let g = e.group("Counted").await;
        let gone = e.user("gone@example.com", &[g]).await;
        e.user("kept@example.com", &[g]).await;
        e.delete(&format!("/api/user/{gone}")).await.status(200);
        let groups = e.get("/api/permissions/group").await.ok();
        assert!(named(&groups, "All Users")["member_count"].as_i64() > Some(0));
        assert!(named(&groups, "Administrators")["member_count"].as_i64() > Some(0));
        assert_eq!(named(&groups, "Empty")["member_count"], 0, "{empty}");
        assert_eq!(named(&groups, "Counted")["member_count"], 1);
    }
}

/// Fact 2, P `fetch-groups-test`: a non-admin gets the plain 403.
#[tokio::test]
async fn f02_fetch_groups_test_non_admin() {
    for e in each(&BOTH, None).await {
        e.rasta()
            .await
            .get("/api/permissions/group")
            .await
            .plain(403, FORBIDDEN);
    }
}

/// Fact 3, P `groups-list-limit-test`: name order, `limit`/`offset` defaults.
#[tokio::test]
async fn f03_groups_list_limit_test() {
    for e in each(&BOTH, None).await {
        let page = e.get("/api/permissions/group?limit=1&offset=1").await.ok();
        assert_eq!(page.as_array().map(Vec::len), Some(1));
        assert_eq!(page[0]["name"], "All Users");
        assert_eq!(
            e.get("/api/permissions/group?limit=1").await.ok(),
            e.get("/api/permissions/group?limit=1&offset=0").await.ok()
        );
        assert_eq!(
            e.get("/api/permissions/group?offset=1").await.ok(),
            e.get("/api/permissions/group?offset=1&limit=50").await.ok()
        );
    }
}

/// Fact 4, P `fetch-groups-tenancy-filter-test` (newest): the use-tenants-off half —
/// `external` lists nothing, `internal` lists All Users, an invalid value is a 400. The
/// use-tenants-on half is the Tenants work's.
#[tokio::test]
async fn f04_fetch_groups_tenancy_filter_test() {
    for e in each(&BOTH, None).await {
        assert_eq!(
            e.get("/api/permissions/group?tenancy=external").await.ok(),
            json!([])
        );
        let internal = e.get("/api/permissions/group?tenancy=internal").await.ok();
        named(&internal, "All Users");
        e.get("/api/permissions/group?tenancy=invalid")
            .await
            .status(400);
    }
}

/// Fact 5, P `fetch-group-test`: members of All Users (inactive excluded); 404 for no group.
#[tokio::test]
async fn f05_fetch_group_test() {
    for e in each(&BOTH, None).await {
        let gone = e.user("gone@example.com", &[]).await;
        e.delete(&format!("/api/user/{gone}")).await.status(200);
        let all = e.get("/api/permissions/group/1").await.ok();
        let members = all["members"].as_array().expect("members");
        assert!(!members.is_empty());
        for m in members {
            for k in [
                "first_name",
                "last_name",
                "email",
                "user_id",
                "membership_id",
            ] {
                assert!(m.get(k).is_some(), "{k} in {m}");
            }
            assert_ne!(m["user_id"], gone);
        }
        e.get("/api/permissions/group/10000")
            .await
            .plain(404, "Not found.");
    }
}

/// Fact 6, P `create-group-test`.
#[tokio::test]
async fn f06_create_group_test() {
    for e in each(&BOTH, None).await {
        let g = e
            .post("/api/permissions/group", json!({"name": "Test Group"}))
            .await
            .ok();
        assert_eq!(g["name"], "Test Group");
        assert_eq!(g["magic_group_type"], Value::Null);
    }
}

/// Fact 7, P `create-group-test`: the exact malli answer for a null name.
#[tokio::test]
async fn f07_create_group_test_null_name() {
    for e in each(&BOTH, None).await {
        let a = e
            .post("/api/permissions/group", json!({"name": null}))
            .await;
        assert_eq!(a.status, 400);
        assert_eq!(
            a.json(),
            json!({"errors": {"name": "value must be a non-blank string."},
                   "specific-errors": {"name": ["should be a string, received: nil",
                                                "non-blank string, received: nil"]}})
        );
    }
}

/// Fact 8, P `create-group-test`, `create-group-test-enterprise-features` (newest):
/// `is_tenant_group` false/null make a regular group; true without the tenants feature is a
/// 402. (Tenant groups with the feature are the Tenants work's.)
#[tokio::test]
async fn f08_create_group_test_enterprise_features() {
    for e in each(&BOTH, None).await {
        for (name, flag) in [("X", json!(false)), ("Y", json!(null))] {
            let g = e
                .post(
                    "/api/permissions/group",
                    json!({"name": name, "is_tenant_group": flag}),
                )
                .await
                .ok();
            assert_eq!(g["is_tenant_group"], false);
        }
        if !e.pro() {
            let a = e
                .post(
                    "/api/permissions/group",
                    json!({"name": "Tenant Group", "is_tenant_group": true}),
                )
                .await;
            assert_eq!(a.status, 402, "{a:?}");
            assert_eq!(
                a.json()["message"],
                "Tenants is a paid feature not currently available to your instance. Please upgrade to use it. Learn more at metabase.com/upgrade/"
            );
        }
    }
}

/// Fact 9, P `update-group-audit-test` (the audit entry is not emulated).
#[tokio::test]
async fn f09_update_group_audit_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("Old").await;
        let a = e
            .put(
                &format!("/api/permissions/group/{g}"),
                json!({"name": "Updated Group"}),
            )
            .await
            .ok();
        assert_eq!(a["name"], "Updated Group");
    }
}

/// Fact 10, P `delete-group-test`, G `magic-groups-test`.
#[tokio::test]
async fn f10_delete_group_test_and_magic_groups_test() {
    for e in each(&BOTH, None).await {
        let g = e.group("Doomed").await;
        e.rasta()
            .await
            .delete(&format!("/api/permissions/group/{g}"))
            .await
            .plain(403, FORBIDDEN);
        e.delete(&format!("/api/permissions/group/{g}"))
            .await
            .status(204);
        e.get(&format!("/api/permissions/group/{g}"))
            .await
            .status(404);
        for (id, name) in [(1, "All Users"), (2, "Administrators")] {
            let msg = format!("You cannot edit or delete the '{name}' permissions group!");
            e.delete(&format!("/api/permissions/group/{id}"))
                .await
                .plain(400, &msg);
            e.put(
                &format!("/api/permissions/group/{id}"),
                json!({"name": "Z"}),
            )
            .await
            .plain(400, &msg);
        }
    }
}

/// Fact 11, G `set-default-permission-values!-test` (correction 3): All Users with nothing to
/// query gives a new group view-data unrestricted and every other value at its least.
#[tokio::test]
async fn f11_set_default_permission_values_test() {
    for e in each(&BOTH, None).await {
        for db in [1, 2] {
            e.put_data(
                1,
                db,
                json!({"view-data": "unrestricted", "create-queries": "no",
                       "download": {"schemas": "none"}}),
                "",
            )
            .await
            .ok();
        }
        let g = e.group("Fresh").await;
        let graph = e.group_slice(g).await.ok();
        for db in ["1", "2"] {
            assert_eq!(
                graph["groups"][g.to_string()][db],
                json!({"view-data": "unrestricted"})
            );
        }
    }
}

/// Fact 12, P `enabling-tenants-changes-groups` (newest): the use-tenants-off half — All
/// Users keeps its name and no `all-external-users` group is listed.
#[tokio::test]
async fn f12_enabling_tenants_changes_groups() {
    for e in each(&BOTH, None).await {
        let groups = e.get("/api/permissions/group").await.ok();
        let all = named(&groups, "All Users");
        assert_eq!(all["magic_group_type"], "all-internal-users");
        assert!(groups.as_array().is_some_and(|a| {
            a.iter()
                .all(|g| g["magic_group_type"] != "all-external-users")
        }));
    }
}

/// Turns `use-tenants` on or off as an administrator would.
pub async fn use_tenants(e: &super::Emu, on: bool) {
    let a = e
        .put("/api/setting/use-tenants", json!({"value": on}))
        .await;
    assert!(matches!(a.status, 200 | 204), "{a:?}");
}

/// Fact 13, P-new `fetch-group-by-id-hides-tenant-group-test`,
/// `update-and-delete-hide-tenant-group-test` (newest, pro): while `use-tenants` is off a tenant
/// group is "Not found." on GET/PUT/DELETE and stays as it was; once on, PUT renames it and
/// DELETE removes it.
#[tokio::test]
async fn f13_tenant_group_hidden_while_tenants_off() {
    for e in each(&[EditionName::Pro], None).await {
        let g = e
            .post(
                "/api/permissions/group",
                json!({"name": "Tenant Group", "is_tenant_group": true}),
            )
            .await
            .ok()["id"]
            .as_i64()
            .expect("an id");
        let path = format!("/api/permissions/group/{g}");
        e.get(&path).await.plain(404, "Not found.");
        e.put(&path, json!({"name": "Renamed Tenant"}))
            .await
            .plain(404, "Not found.");
        e.delete(&path).await.plain(404, "Not found.");

        use_tenants(&e, true).await;
        let shown = e.get(&path).await.ok();
        assert_eq!(shown["name"], "Tenant Group", "neither renamed nor deleted");
        let renamed = e.put(&path, json!({"name": "Renamed Tenant"})).await.ok();
        assert_eq!(renamed["name"], "Renamed Tenant");
        e.delete(&path).await.status(204);
        e.get(&path).await.status(404);
    }
}

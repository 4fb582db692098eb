//! Sandboxes (EE): `/api/mt/gtap` and the graph (facts 53-59; SG =
//! `enterprise/backend/test/metabase_enterprise/sandbox/api/gtap_test.clj`, SP =
//! `…/sandbox/api/permissions_test.clj`, BP = `…/block_permissions_test.clj`).

use serde_json::json;

use super::{BOTH, FORBIDDEN, OLD, SANDBOXES_PAID, each};
use mbprov::emulator::EditionName;

const PRO: [EditionName; 1] = [EditionName::Pro];

/// Fact 53, SG `require-auth-test`, `validate-token-test`: 401, 403 for rasta, and 402 (plain
/// text on older releases, JSON on newer ones) without the feature.
#[tokio::test]
async fn f53_require_auth_and_validate_token_test() {
    for e in each(&PRO, None).await {
        let anon = reqwest::get(format!("{}/api/mt/gtap", e.base_url()))
            .await
            .expect("get");
        assert_eq!(anon.status().as_u16(), 401);
        assert_eq!(anon.text().await.expect("body"), "Unauthenticated");
        e.rasta()
            .await
            .get("/api/mt/gtap")
            .await
            .plain(403, FORBIDDEN);
    }
    for e in each(&[EditionName::Oss], None).await {
        let a = e.get("/api/mt/gtap").await;
        assert_eq!(a.status, 402);
        assert_eq!(a.json()["message"], SANDBOXES_PAID);
    }
    for e in each(&[EditionName::Oss], Some(OLD)).await {
        e.get("/api/mt/gtap").await.plain(402, SANDBOXES_PAID);
    }
}

async fn sandbox(e: &super::Emu, group: i64, table: i64) -> serde_json::Value {
    e.post(
        "/api/mt/gtap",
        json!({"table_id": table, "group_id": group, "card_id": null,
               "attribute_remappings": {"org": ["dimension", ["field", 101, null]]}}),
    )
    .await
    .ok()
}

/// Fact 54, SG `create-gtap-test` (the card type check is not emulated: no cards).
#[tokio::test]
async fn f54_create_gtap_test() {
    for e in each(&PRO, None).await {
        let g = e.group("G").await;
        let s = sandbox(&e, g, 10).await;
        for k in [
            "id",
            "card_id",
            "table_id",
            "group_id",
            "attribute_remappings",
        ] {
            assert!(s.get(k).is_some(), "{k} in {s}");
        }
    }
}

/// Fact 56, SG `delete-gtap-test`.
#[tokio::test]
async fn f56_delete_gtap_test() {
    for e in each(&PRO, None).await {
        let g = e.group("G").await;
        let id = sandbox(&e, g, 10).await["id"].as_i64().expect("id");
        e.delete(&format!("/api/mt/gtap/{id}")).await.status(204);
        e.get(&format!("/api/mt/gtap/{id}"))
            .await
            .plain(404, "Not found.");
    }
}

/// Fact 57, SG `bulk-upsert-sandboxes-test`.
#[tokio::test]
async fn f57_bulk_upsert_sandboxes_test() {
    for e in each(&PRO, None).await {
        let g = e.group("G").await;
        let rev = e.data_revision().await;
        let a = e
            .put(
                "/api/permissions/graph",
                json!({"revision": rev,
                       "groups": {g.to_string(): {"1": {"view-data": {"PUBLIC": {"10": "sandboxed"}}}}},
                       "sandboxes": [{"group_id": g, "table_id": 10, "card_id": null,
                                      "attribute_remappings": {"org": ["dimension", ["field", 101, null]]}}]}),
            )
            .await
            .ok();
        assert_eq!(a["sandboxes"][0]["table_id"], 10, "{a}");
    }
}

/// Fact 58, SP `revoke-perms-delete-gtaps-test`, `grant-sandbox-perms-dont-delete-gtaps-test`.
#[tokio::test]
async fn f58_revoke_perms_delete_gtaps_test() {
    for e in each(&PRO, None).await {
        let g = e.group("G").await;
        sandbox(&e, g, 10).await;
        let sandboxed = json!({"view-data": {"PUBLIC": {"10": "sandboxed", "11": "unrestricted"}}});
        e.put_data(g, 1, sandboxed, "").await.ok();
        assert_eq!(
            e.get("/api/mt/gtap").await.ok().as_array().map(Vec::len),
            Some(1)
        );
        let away = json!({"view-data": {"PUBLIC": {"10": "unrestricted", "11": "unrestricted"}}});
        e.put_data(g, 1, away, "").await.ok();
        assert_eq!(e.get("/api/mt/gtap").await.ok(), json!([]));
    }
}

/// Fact 59, BP `api-throws-error-if-premium-feature-not-enabled`.
#[tokio::test]
async fn f59_api_throws_error_if_premium_feature_not_enabled() {
    for e in each(&BOTH, None).await {
        let g = e.group("G").await;
        let a = e
            .put_data(
                g,
                1,
                json!({"view-data": "blocked", "create-queries": "no"}),
                "",
            )
            .await;
        if e.pro() {
            a.ok();
        } else {
            a.plain(
                402,
                "The blocked permissions functionality is only enabled if you have a premium token with the advanced-permissions feature.",
            );
        }
    }
}

/// Fact 55, SG `validate-sandbox-test` (newest).
#[tokio::test]
async fn f55_validate_sandbox_test() {
    for e in each(&PRO, None).await {
        let g = e.group("G").await;
        e.post(
            "/api/mt/gtap/validate",
            json!({"table_id": 10, "group_id": g}),
        )
        .await
        .status(204);
        e.post("/api/mt/gtap/validate", json!({"group_id": g}))
            .await
            .status(400);
        assert_eq!(
            e.get("/api/mt/gtap").await.ok(),
            json!([]),
            "nothing written"
        );
    }
}

//! `tenant.updated` with a new `tenant_name` in group tenancy renames the tenant's collection:
//! the one marked for its `tenant_id`, never a namesake, never a new one (issue 15).

use crate::support::{Stack, StackOptions, eventually, find, tenant_created_named};
use reqwest::Method;
use serde_json::{Value, json};

fn updated(job: &str, tenant_id: &str, tenant_name: &str) -> Value {
    json!({
        "id": job,
        "kind": "tenant.updated",
        "payload": {"tenant_id": tenant_id, "tenant_name": tenant_name}
    })
}

/// Every collection (live or archived) marked for `tenant_id`.
fn marked(state: &Value, tenant_id: &str) -> Vec<Value> {
    let marker = format!("mbprov:tenant=\"{tenant_id}\"");
    state["collections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["description"]
                .as_str()
                .is_some_and(|d| d.lines().any(|l| l.trim() == marker))
        })
        .cloned()
        .collect()
}

fn collection(state: &Value, id: i64) -> Value {
    state["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .expect("the collection")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_tenant_renames_its_own_collection_only() {
    let mut stack = Stack::start_with(StackOptions {
        max_attempts: 50,
        ..StackOptions::default()
    })
    .await;
    // An administrator's collection already called what the tenant will be renamed to.
    let namesake = stack
        .emu_create(
            "/api/collection",
            json!({"name": "Globex Dashboards", "description": "ours", "parent_id": 2}),
        )
        .await;
    stack.spawn_worker().await;
    stack
        .publish(&[tenant_created_named("c51", "51", "Acme")])
        .await;
    stack.wait_done("c51").await;
    let before = marked(&stack.state().await, "51");
    assert_eq!(before.len(), 1);
    let id = before[0]["id"].as_i64().unwrap();
    assert_eq!(before[0]["name"], "Acme Dashboards");

    stack.publish(&[updated("u51", "51", "Globex")]).await;
    stack.wait_done("u51").await;
    let state = stack.state().await;
    let after = marked(&state, "51");
    assert_eq!(after.len(), 1, "renamed, not made again");
    assert_eq!(after[0]["id"], id, "the same collection");
    assert_eq!(after[0]["name"], "Globex Dashboards");
    assert_eq!(after[0]["archived"], false);
    let other = collection(&state, namesake);
    assert_eq!(
        (other["name"].as_str(), other["description"].as_str()),
        (Some("Globex Dashboards"), Some("ours")),
        "the unmarked namesake is untouched"
    );
    assert!(find(&state["collections"], "name", "Acme Dashboards").is_empty());

    // Archived by hand: renamed, and kept archived.
    let r = stack
        .emu_send(
            Method::PUT,
            &format!("/api/collection/{id}"),
            json!({"archived": true}),
        )
        .await;
    assert!(r.status().is_success());
    stack.publish(&[updated("u51b", "51", "Initech")]).await;
    stack.wait_done("u51b").await;
    let c = collection(&stack.state().await, id);
    assert_eq!(c["name"], "Initech Dashboards");
    assert_eq!(c["archived"], true, "an archived collection stays archived");

    // The tenant's group exists but its collection does not yet (its tenant.created is
    // behind): the rename is retried, never a creation, and lands once the collection exists.
    let group = stack
        .emu_create("/api/permissions/group", json!({"name": "Tenant: 52"}))
        .await;
    assert!(group > 0);
    stack.publish(&[updated("u52", "52", "Hooli")]).await;
    eventually("the rename of tenant 52 retried", || {
        let seen = stack
            .worker_log(0)
            .contains("no collection is marked for tenant");
        async move { seen.then_some(()) }
    })
    .await;
    assert!(
        marked(&stack.state().await, "52").is_empty(),
        "nothing created"
    );
    stack
        .publish(&[tenant_created_named("c52", "52", "Pied")])
        .await;
    stack.wait_done("c52").await;
    stack.wait_done("u52").await;
    let made = marked(&stack.state().await, "52");
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["name"], "Hooli Dashboards");

    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

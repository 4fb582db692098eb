//! A tenant's collection is its own whatever the names: bound to its `tenant_id` by a marker
//! stored in Metabase, never found by display name (issue 12).

use crate::support::{Stack, find, tenant_created_named};
use serde_json::{Value, json};

fn group_of(state: &Value, tenant_id: &str) -> i64 {
    find(&state["groups"], "name", &format!("Tenant: {tenant_id}"))[0]["id"]
        .as_i64()
        .expect("the tenant's group")
}

/// The live collections under 2 marked for `tenant_id`.
fn marked(state: &Value, tenant_id: &str) -> Vec<Value> {
    let marker = format!("mbprov:tenant=\"{tenant_id}\"");
    state["collections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["archived"] == false
                && c["description"]
                    .as_str()
                    .is_some_and(|d| d.lines().any(|l| l.trim() == marker))
        })
        .cloned()
        .collect()
}

fn cell(state: &Value, group: i64, collection: i64) -> Option<String> {
    state["collection_graph"]["groups"][group.to_string()][collection.to_string()]
        .as_str()
        .map(str::to_string)
}

/// Every group's cell on `collection`.
fn row(state: &Value, collection: i64) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = state["collection_graph"]["groups"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(g, cells)| {
            cells[collection.to_string()]
                .as_str()
                .map(|a| (g.clone(), a.to_string()))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tenants_of_one_name_and_an_administrators_collection_each_keep_their_own() {
    let mut stack = Stack::start().await;
    // An administrator's own collection that happens to carry the tenant collection's name.
    let admins = stack
        .emu_create(
            "/api/collection",
            json!({"name": "Acme Dashboards", "description": "ours", "parent_id": 2}),
        )
        .await;
    let before = row(&stack.state().await, admins);
    assert!(!before.is_empty());
    stack.spawn_worker().await;
    stack
        .publish(&[
            tenant_created_named("t42", "42", "Acme"),
            tenant_created_named("t43", "43", "Acme"),
        ])
        .await;
    stack.wait_done("t42").await;
    stack.wait_done("t43").await;

    let state = stack.state().await;
    let (g42, g43) = (group_of(&state, "42"), group_of(&state, "43"));
    let (c42, c43) = (marked(&state, "42"), marked(&state, "43"));
    assert_eq!((c42.len(), c43.len()), (1, 1), "one collection each");
    let (c42, c43) = (
        c42[0]["id"].as_i64().unwrap(),
        c43[0]["id"].as_i64().unwrap(),
    );
    assert!(c42 != c43 && c42 != admins && c43 != admins);
    assert_eq!(
        find(&state["collections"], "name", "Acme Dashboards").len(),
        3,
        "two tenants' and the administrator's"
    );
    // Each tenant reads its own and not the other's; the administrator's is untouched.
    assert_eq!(cell(&state, g42, c42).as_deref(), Some("read"));
    assert_eq!(cell(&state, g43, c43).as_deref(), Some("read"));
    assert_eq!(cell(&state, g42, c43), None);
    assert_eq!(cell(&state, g43, c42), None);
    assert_eq!(
        row(&state, admins),
        before,
        "the administrator's collection is untouched"
    );
    assert_eq!(
        state["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == admins)
            .unwrap()["description"],
        "ours"
    );

    // tenant.deleted names no collection: the marker finds tenant 42's, and only that one.
    stack
        .publish(&[json!({"id": "d42", "kind": "tenant.deleted",
            "payload": {"tenant_id": "42", "shared_collection_id": 2}})])
        .await;
    stack.wait_done("d42").await;
    let state = stack.state().await;
    let archived: Vec<i64> = state["collections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["archived"] == true)
        .filter_map(|c| c["id"].as_i64())
        .collect();
    assert_eq!(
        archived,
        vec![c42],
        "only tenant 42's own collection is archived"
    );
    assert_eq!(cell(&state, g43, c43).as_deref(), Some("read"));
    assert_eq!(row(&state, admins), before);
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renaming_a_tenant_renames_its_collection_instead_of_making_another() {
    let mut stack = Stack::start().await;
    stack.spawn_worker().await;
    stack
        .publish(&[tenant_created_named("first", "44", "Initech")])
        .await;
    stack.wait_done("first").await;
    let id = marked(&stack.state().await, "44")[0]["id"]
        .as_i64()
        .unwrap();
    // An administrator adds a note to the description: the marker line survives it.
    let answer = stack
        .emu_send(
            reqwest::Method::PUT,
            &format!("/api/collection/{id}"),
            json!({"description": format!("Shared with sales.\nmbprov:tenant=\"44\"\nAsk Bob.")}),
        )
        .await;
    assert!(answer.status().is_success());
    // The same tenant, renamed, with Redis's cached id lost too.
    let key = format!("{}:map:tenant-collection:44", stack.prefix);
    let client = redis::Client::open(crate::support::redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    stack
        .publish(&[tenant_created_named("renamed", "44", "Initrode")])
        .await;
    stack.wait_done("renamed").await;

    let state = stack.state().await;
    let mine = marked(&state, "44");
    assert_eq!(mine.len(), 1, "still one collection: {mine:?}");
    assert_eq!(mine[0]["id"], id);
    assert_eq!(mine[0]["name"], "Initrode Dashboards");
    assert_eq!(mine[0]["archived"], false);
    assert!(find(&state["collections"], "name", "Initech Dashboards").is_empty());
    assert_eq!(
        cell(&state, group_of(&state, "44"), id).as_deref(),
        Some("read")
    );
    stack.teardown().await;
}

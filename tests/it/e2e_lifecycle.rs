//! The rest of the tenant lifecycle: users, reconciliation, deletion, permissions as code,
//! and what the worker shows operators (metrics, logs).

use crate::support;
use crate::support::{Stack, find, tenant_created};
use reqwest::Method;
use serde_json::{Value, json};

fn id_of(items: &Value, key: &str, value: &str) -> i64 {
    find(items, key, value)
        .first()
        .unwrap_or_else(|| panic!("no {key}={value}"))["id"]
        .as_i64()
        .unwrap()
}

fn groups_of(state: &Value, email: &str) -> Vec<i64> {
    serde_json::from_value(find(&state["users"], "email", email)[0]["group_ids"].clone()).unwrap()
}

async fn job(stack: &Stack, id: &str, kind: &str, payload: Value) {
    stack
        .publish(&[json!({"id": id, "kind": kind, "payload": payload})])
        .await;
    stack.wait_done(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_upserted_creates_updates_reactivates_and_leaves_other_groups_when_exclusive() {
    let mut stack = Stack::start().await;
    stack.spawn_worker().await;
    job(
        &stack,
        "u1",
        "user.upserted",
        json!({"email": "Bob@Acme.test", "first_name": "Bob", "groups": ["Team A", "Team B"],
        "login_attributes": {"organization_id": 42, "region": "eu"}}),
    )
    .await;
    let state = stack.state().await;
    let (a, b) = (
        id_of(&state["groups"], "name", "Team A"),
        id_of(&state["groups"], "name", "Team B"),
    );
    let bob = &find(&state["users"], "email", "bob@acme.test")[0];
    assert_eq!(
        bob["login_attributes"],
        json!({"organization_id": "42", "region": "eu"}),
        "stored as strings"
    );
    let mut g = groups_of(&state, "bob@acme.test");
    g.sort();
    assert_eq!(g, vec![1, a, b]);

    job(
        &stack,
        "u2",
        "user.deactivated",
        json!({"email": "BOB@acme.test"}),
    )
    .await;
    assert_eq!(
        find(&stack.state().await["users"], "email", "bob@acme.test")[0]["is_active"],
        false
    );

    // Same person, other case: reactivated, renamed, attribute removed by null, only Team B.
    job(
        &stack,
        "u3",
        "user.upserted",
        json!({"email": "bob@ACME.test", "last_name": "Ng", "groups": ["Team B"],
        "login_attributes": {"region": null}, "exclusive": true}),
    )
    .await;
    let state = stack.state().await;
    let bobs = find(&state["users"], "email", "bob@acme.test");
    assert_eq!(bobs.len(), 1, "emails match case-insensitively");
    assert_eq!(bobs[0]["is_active"], true);
    assert_eq!(bobs[0]["last_name"], "Ng");
    assert_eq!(
        bobs[0]["login_attributes"],
        json!({"organization_id": "42"})
    );
    let mut g = groups_of(&state, "bob@acme.test");
    g.sort();
    assert_eq!(g, vec![1, b], "exclusive leaves Team A but never All Users");

    job(
        &stack,
        "u4",
        "user.deactivated",
        json!({"email": "nobody@acme.test"}),
    )
    .await;
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_synced_touches_only_managed_groups() {
    let mut stack = Stack::start().await;
    stack.spawn_worker().await;
    for (id, email, groups) in [
        ("s1", "ada@acme.test", json!(["Managed", "Unmanaged"])),
        ("s2", "bob@acme.test", json!(["Managed"])),
        ("s3", "cy@acme.test", json!(["Managed"])),
    ] {
        job(
            &stack,
            id,
            "user.upserted",
            json!({"email": email, "groups": groups}),
        )
        .await;
    }
    let state = stack.state().await;
    let managed = id_of(&state["groups"], "name", "Managed");
    let unmanaged = id_of(&state["groups"], "name", "Unmanaged");
    // The admin is in Managed too; the snapshot leaves it out, but administrators are never
    // deactivated by a message.
    let admin_in = stack
        .emu_send(
            Method::POST,
            "/api/permissions/membership",
            json!({"group_id": managed, "user_id": 1}),
        )
        .await;
    assert!(admin_in.status().is_success());
    let requests_before = stack.stats().await["requests_total"].as_u64().unwrap();

    job(&stack, "sync", "users.synced", json!({
        "managed_groups": ["Managed", "New Managed"], "deactivate_missing": true,
        "users": [
            {"email": "ada@acme.test", "groups": ["New Managed"], "login_attributes": {"organization_id": "1"}},
            {"email": "dee@acme.test", "first_name": "Dee", "groups": ["Managed"]}
        ]})).await;
    let state = stack.state().await;
    let new_managed = id_of(&state["groups"], "name", "New Managed");
    let ada = groups_of(&state, "ada@acme.test");
    assert!(
        ada.contains(&new_managed) && !ada.contains(&managed),
        "{ada:?}"
    );
    assert!(
        ada.contains(&unmanaged),
        "groups outside managed_groups are never touched"
    );
    assert!(
        groups_of(&state, "dee@acme.test").contains(&managed),
        "missing users are created"
    );
    for gone in ["bob@acme.test", "cy@acme.test"] {
        let u = &find(&state["users"], "email", gone)[0];
        assert_eq!(u["is_active"], false, "{gone} deactivated");
        assert!(
            !groups_of(&state, gone).contains(&managed),
            "{gone} removed from Managed"
        );
    }
    assert_eq!(
        find(&state["users"], "email", "admin@example.com")[0]["is_active"],
        true
    );
    let requests = stack.stats().await["requests_total"].as_u64().unwrap() - requests_before;
    assert!(
        requests < 40,
        "O(snapshot + members) requests, made {requests}"
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_deleted_is_idempotent_and_unknown_tenants_succeed() {
    let mut stack = Stack::start().await;
    stack.spawn_worker().await;
    stack.publish(&[tenant_created(8)]).await;
    stack.wait_done("tenant-8-created").await;
    // A user who is also in another group keeps their account.
    job(
        &stack,
        "keep",
        "user.upserted",
        json!({"email": "multi@acme.test", "groups": ["Tenant: 8", "Staff"]}),
    )
    .await;
    let deleted = json!({"tenant_id": 8, "tenant_name": "Acme 8", "shared_collection_id": 2});
    job(&stack, "d1", "tenant.deleted", deleted.clone()).await;
    job(&stack, "d2", "tenant.deleted", deleted).await;
    job(
        &stack,
        "d3",
        "tenant.deleted",
        json!({"tenant_id": "never-existed"}),
    )
    .await;
    let state = stack.state().await;
    assert!(find(&state["groups"], "name", "Tenant: 8").is_empty());
    assert_eq!(
        find(&state["users"], "email", "admin8@acme8.test")[0]["is_active"],
        false
    );
    assert_eq!(
        find(&state["users"], "email", "multi@acme.test")[0]["is_active"],
        true
    );
    let coll = find(&state["collections"], "name", "Acme 8 Dashboards");
    assert_eq!(coll.len(), 1);
    assert_eq!(coll[0]["archived"], true);
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_drift_apply_removes_it_and_unnamed_groups_stay_untouched() {
    let stack = Stack::start().await;
    let doc = format!("{}/examples/permissions.yaml", env!("CARGO_MANIFEST_DIR"));
    // A group the document does not name, with access of its own.
    let other = stack
        .emu_create("/api/permissions/group", json!({"name": "Bystanders"}))
        .await;
    let before = stack.state().await;

    let plan = stack.run(&["plan", "-f", &doc]).await;
    assert_eq!(
        plan.status.code(),
        Some(2),
        "drift: {}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let lines = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(lines.contains(r#"+ group "Analysts": create"#), "{lines}");

    let apply = stack.run(&["apply", "-f", &doc]).await;
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let again = stack.run(&["plan", "-f", &doc]).await;
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let second = stack.run(&["apply", "-f", &doc]).await;
    assert!(String::from_utf8_lossy(&second.stdout).contains("no changes"));

    let after = stack.state().await;
    let key = other.to_string();
    assert_eq!(
        before["data_graph"]["rendered"]["groups"][&key],
        after["data_graph"]["rendered"]["groups"][&key]
    );
    assert_eq!(
        before["collection_graph"]["groups"][&key],
        after["collection_graph"]["groups"][&key]
    );
    let analysts = id_of(&after["groups"], "name", "Analysts").to_string();
    assert_eq!(after["collection_graph"]["groups"][&analysts]["2"], "write");
    assert_eq!(
        after["data_graph"]["rendered"]["groups"]["1"]["1"]["create-queries"],
        Value::Null,
        "All Users blocked from querying db 1"
    );

    let bad = std::env::temp_dir().join(format!("{}-bad.yaml", stack.prefix));
    std::fs::write(&bad, "version: 1\ngroups:\n  Administrators: {}\n").unwrap();
    let refused = stack.run(&["plan", "-f", bad.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("groups.Administrators"),
        "{err}"
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_and_json_logs_carry_the_job() {
    let mut stack = Stack::start().await;
    let w = stack
        .spawn_worker_with(&[("MBPROV_LOG_FORMAT", "json")])
        .await;
    let url = format!("http://127.0.0.1:{}/metrics", stack.worker_http_port(w));
    let scrape = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    let first = scrape().await;
    for name in [
        "mbprov_jobs_total",
        "mbprov_job_duration_seconds_bucket",
        "mbprov_retries_total",
        "mbprov_dead_lettered_total",
        "mbprov_metabase_requests_total",
        "mbprov_graph_writes_total",
        "mbprov_graph_write_conflicts_total",
        "mbprov_lock_wait_seconds_bucket",
    ] {
        assert!(first.contains(name), "{name} missing before any job");
    }
    stack.publish(&[tenant_created(4)]).await;
    stack.wait_done("tenant-4-created").await;
    stack.publish_raw("user.deactivated", b"{}").await;
    let after = support::eventually("the metrics to move", || async {
        let m = scrape().await;
        (m.contains(r#"mbprov_jobs_total{kind="tenant.created",outcome="done"} 1"#)
            && m.contains(r#"mbprov_dead_lettered_total 1"#))
        .then_some(m)
    })
    .await;
    assert!(after.contains(r#"mbprov_graph_writes_total{graph="data"}"#));
    let ready = reqwest::get(format!(
        "http://127.0.0.1:{}/readyz",
        stack.worker_http_port(w)
    ))
    .await
    .unwrap();
    assert_eq!(ready.status(), 200);

    let log = stack.worker_log(w);
    let done: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "job done")
        .collect();
    assert_eq!(done.len(), 1, "{log}");
    let span = &done[0]["span"];
    assert_eq!(span["job_id"], "tenant-4-created");
    assert_eq!(span["kind"], "tenant.created");
    assert_eq!(span["tenant_id"], "4");
    stack.teardown().await;
}

//! `tenant.created` end to end: real worker processes, real RabbitMQ and Redis, the emulator.

use crate::support::{Stack, eventually, find, tenant_created};
use serde_json::{Value, json};

fn group_id(state: &Value, name: &str) -> i64 {
    let groups = find(&state["groups"], "name", name);
    assert_eq!(
        groups.len(),
        1,
        "exactly one group {name}: {:?}",
        state["groups"]
    );
    groups[0]["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_created_has_every_effect_of_the_contract() {
    let mut stack = Stack::start().await;
    stack.spawn_worker().await;
    let lines = stack.publish(&[tenant_created(42)]).await;
    assert_eq!(lines, vec!["tenant-42-created tenant.created"]);
    stack.wait_done("tenant-42-created").await;

    let state = stack.state().await;
    let group = group_id(&state, "Tenant: 42");

    let users = find(&state["users"], "email", "admin42@acme42.test");
    assert_eq!(users.len(), 1);
    let user = users[0];
    assert_eq!(user["is_active"], true);
    assert_eq!(user["login_attributes"], json!({"organization_id": "42"}));
    let user_groups: Vec<i64> = serde_json::from_value(user["group_ids"].clone()).unwrap();
    assert!(
        user_groups.contains(&group) && user_groups.contains(&1),
        "{user_groups:?}"
    );
    assert!(!user_groups.contains(&2), "never an administrator");

    let colls = find(&state["collections"], "name", "Acme 42 Dashboards");
    assert_eq!(colls.len(), 1);
    let coll = colls[0]["id"].as_i64().unwrap();
    assert_eq!(colls[0]["location"], "/2/", "under the shared collection");

    // The tenant group reads its collection; nobody else but the admins does (isolation).
    let cgraph = &state["collection_graph"]["groups"];
    assert_eq!(cgraph[group.to_string()][coll.to_string()], "read");
    for (g, cells) in cgraph.as_object().unwrap() {
        if g != &group.to_string() && g != "2" {
            assert!(
                cells.get(coll.to_string()).is_none(),
                "group {g} still has {cells}"
            );
        }
    }
    // All Users keeps its access to the shared parent: only the tenant collection changed.
    assert_eq!(cgraph["1"]["2"], "write");

    let dgraph = &state["data_graph"]["rendered"]["groups"][group.to_string()]["1"];
    assert_eq!(dgraph["view-data"], "unrestricted");
    assert_eq!(dgraph["create-queries"], "query-builder");
    // All Users' data access is untouched.
    assert_eq!(
        state["data_graph"]["rendered"]["groups"]["1"]["1"]["create-queries"],
        "query-builder-and-native"
    );

    let stats = stack.stats().await;
    assert_eq!(stats["forced_puts"], 0);
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_job_twice_and_two_racing_workers_make_one_of_everything() {
    let mut stack = Stack::start().await;
    let mut twin = tenant_created(7);
    twin["id"] = json!("tenant-7-created-again");
    // Published before any worker runs, so both workers find the three copies waiting.
    stack
        .publish(&[tenant_created(7), tenant_created(7), twin])
        .await;
    stack.spawn_worker().await;
    stack.spawn_worker().await;
    stack.wait_done("tenant-7-created").await;
    stack.wait_done("tenant-7-created-again").await;
    let empty = eventually("the work queue to drain", || async {
        let out = stack.run(&["status", "--json"]).await;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let total: u64 = v["queues"]
            .as_array()?
            .iter()
            .filter(|q| q["name"].as_str().is_some_and(|n| !n.ends_with(".dead")))
            .map(|q| q["messages"].as_u64().unwrap_or(0))
            .sum();
        (total == 0).then_some(())
    });
    empty.await;

    let state = stack.state().await;
    group_id(&state, "Tenant: 7");
    assert_eq!(find(&state["users"], "email", "admin7@acme7.test").len(), 1);
    assert_eq!(
        find(&state["collections"], "name", "Acme 7 Dashboards").len(),
        1,
        "one collection"
    );
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_jobs_in_flight_loses_nothing_and_half_applies_nothing() {
    let mut stack = Stack::start().await;
    // Slow enough that SIGTERM lands mid-job; the short grace cuts some jobs off.
    stack.faults(json!({"latency_ms": 150})).await;
    let first = stack
        .spawn_worker_with(&[("MBPROV_SHUTDOWN_GRACE", "300ms")])
        .await;
    const N: u32 = 16;
    stack
        .publish(&(1..=N).map(tenant_created).collect::<Vec<_>>())
        .await;
    eventually("the first worker to be mid-way", || async {
        let log = stack.worker_log(first);
        (log.matches("job done").count() >= 2).then_some(())
    })
    .await;
    let status = stack.stop_worker(first).await;
    assert!(status.success(), "worker exits 0 after SIGTERM: {status:?}");
    let log = stack.worker_log(first);
    assert!(log.contains("worker stopped"), "{log}");

    stack.faults(json!({"latency_ms": 0})).await;
    stack.spawn_worker().await;
    for n in 1..=N {
        stack.wait_done(&format!("tenant-{n}-created")).await;
    }
    let state = stack.state().await;
    for n in 1..=N {
        let g = group_id(&state, &format!("Tenant: {n}"));
        assert_eq!(
            find(&state["users"], "email", &format!("admin{n}@acme{n}.test")).len(),
            1
        );
        let c = find(
            &state["collections"],
            "name",
            &format!("Acme {n} Dashboards"),
        );
        assert_eq!(c.len(), 1, "tenant {n}: one collection");
        let cid = c[0]["id"].as_i64().unwrap();
        assert_eq!(
            state["collection_graph"]["groups"][g.to_string()][cid.to_string()],
            "read",
            "tenant {n}"
        );
        assert_eq!(
            state["data_graph"]["rendered"]["groups"][g.to_string()]["1"]["create-queries"],
            "query-builder",
            "tenant {n}"
        );
    }
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

//! Permission-graph writes never lose an update: many workers, another writer hammering the
//! same graphs, a worker killed while it holds the lock, Redis going away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::{Relay, Stack, eventually, find, redis_exists, tenant_created};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// What the other writer last wrote successfully: (data value, collection value).
type LastWrite = Arc<Mutex<(Option<String>, Option<String>)>>;

/// An administrator clicking in the UI every few milliseconds: toggles one group's access to
/// database 2 and to the root collection, each write fenced by the revision it read.
async fn other_writer(stack: &Stack, group: i64, stop: Arc<AtomicBool>, last: LastWrite) -> u32 {
    let mut wrote = 0;
    let mut i = 0u32;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let data = if i.is_multiple_of(2) {
            "query-builder"
        } else {
            "no"
        };
        let slice = stack
            .emu_get(&format!("/api/permissions/graph/group/{group}"))
            .await;
        let body = json!({"revision": slice["revision"], "groups": {group.to_string(): {"2": {"view-data": "unrestricted", "create-queries": data}}}});
        if stack
            .emu_send(Method::PUT, "/api/permissions/graph?skip-graph=true", body)
            .await
            .status()
            .is_success()
        {
            last.lock().await.0 = Some(data.to_string());
            wrote += 1;
        }
        let coll = if i.is_multiple_of(2) { "read" } else { "none" };
        let graph = stack.emu_get("/api/collection/graph").await;
        let body =
            json!({"revision": graph["revision"], "groups": {group.to_string(): {"root": coll}}});
        if stack
            .emu_send(Method::PUT, "/api/collection/graph?skip-graph=true", body)
            .await
            .status()
            .is_success()
        {
            last.lock().await.1 = Some(coll.to_string());
            wrote += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    wrote
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_workers_and_another_writer_lose_nothing() {
    let mut stack = Stack::start().await;
    for _ in 0..3 {
        stack.spawn_worker().await;
    }
    let human = stack
        .emu_create("/api/permissions/group", json!({"name": "Human Editors"}))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let last: LastWrite = Arc::default();
    let stack = Arc::new(stack);
    let writer = {
        let (stack, stop, last) = (stack.clone(), stop.clone(), last.clone());
        tokio::spawn(async move { other_writer(&stack, human, stop, last).await })
    };

    const TENANTS: u32 = 40;
    let envelopes: Vec<Value> = (1..=TENANTS).map(tenant_created).collect();
    stack.publish(&envelopes).await;
    for n in 1..=TENANTS {
        stack.wait_done(&format!("tenant-{n}-created")).await;
    }
    stop.store(true, Ordering::SeqCst);
    let writes = writer.await.unwrap();
    assert!(
        writes > 10,
        "the other writer should have written often, wrote {writes}"
    );

    let state = stack.state().await;
    let data = &state["data_graph"]["rendered"]["groups"];
    let colls = &state["collection_graph"]["groups"];
    for n in 1..=TENANTS {
        let g = find(&state["groups"], "name", &format!("Tenant: {n}"))[0]["id"]
            .as_i64()
            .unwrap();
        assert_eq!(
            data[g.to_string()]["1"]["create-queries"],
            "query-builder",
            "tenant {n} data access"
        );
        let c = find(
            &state["collections"],
            "name",
            &format!("Acme {n} Dashboards"),
        );
        assert_eq!(c.len(), 1, "one collection for tenant {n}");
        let cid = c[0]["id"].as_i64().unwrap();
        assert_eq!(
            colls[g.to_string()][cid.to_string()],
            "read",
            "tenant {n} collection access"
        );
        assert!(
            colls["1"].get(cid.to_string()).is_none(),
            "tenant {n} collection isolated from All Users"
        );
    }
    let (last_data, last_coll) = last.lock().await.clone();
    let human_data = data[human.to_string()]["2"]["create-queries"]
        .as_str()
        .unwrap_or("no");
    assert_eq!(
        Some(human_data.to_string()),
        last_data,
        "the other writer's last data value is intact"
    );
    let human_root = colls[human.to_string()]["root"].as_str().unwrap_or("none");
    assert_eq!(
        Some(human_root.to_string()),
        last_coll,
        "the other writer's last collection value is intact"
    );

    let requests = stack.emu_get("/_emulator/requests").await;
    assert!(
        requests
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r["query"].as_str().unwrap_or("").contains("force")),
        "force never sent"
    );
    let stats = stack.stats().await;
    assert_eq!(stats["forced_puts"], 0);
    eprintln!("conflicts seen: {}", stats["conflicts"]);
    Arc::into_inner(stack).expect("sole owner").teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_while_holding_the_graph_lock_does_not_block_the_others() {
    let mut stack = Stack::start().await;
    let victim = stack.spawn_worker().await;
    // Slow Metabase: the write of the first job takes long enough to kill its worker mid-way.
    stack.faults(json!({"latency_ms": 1500})).await;
    stack.publish(&[tenant_created(1)]).await;
    let lock = format!("{}:lock:graph:data", stack.prefix);
    eventually("the worker to hold the data-graph lock", || async {
        redis_exists(&lock).await.then_some(())
    })
    .await;
    stack.kill_worker(victim).await;
    stack.faults(json!({"latency_ms": 0})).await;
    assert!(
        redis_exists(&lock).await,
        "the dead worker's lock outlives it until its ttl"
    );
    stack.spawn_worker().await;
    stack.wait_done("tenant-1-created").await;
    assert!(!redis_exists(&lock).await, "released after the write");
    let state = stack.state().await;
    let g = find(&state["groups"], "name", "Tenant: 1")[0]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        state["data_graph"]["rendered"]["groups"][g.to_string()]["1"]["create-queries"],
        "query-builder"
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_no_graph_write_happens_and_the_job_is_retried() {
    let mut stack = Stack::start().await;
    let relay = Relay::start("127.0.0.1:6379").await;
    let url = format!("redis://127.0.0.1:{}/", relay.port);
    stack.spawn_worker_with(&[("REDIS_URL", &url)]).await;
    relay.cut();
    let _ = stack
        .emu_send(Method::POST, "/_emulator/reset-stats", json!({}))
        .await;
    stack.publish(&[tenant_created(3)]).await;
    eventually("the job to fail for want of Redis", || async {
        stack
            .worker_log(0)
            .contains("tenant-3-created")
            .then_some(())
    })
    .await;
    let stats = stack.stats().await;
    assert_eq!(
        stats["graph_puts"]["data"], 0,
        "no data-graph write without the lock"
    );
    assert_eq!(
        stats["graph_puts"]["collection"], 0,
        "no collection-graph write without the lock"
    );
    relay.restore();
    stack.wait_done("tenant-3-created").await;
    let state = stack.state().await;
    assert_eq!(find(&state["groups"], "name", "Tenant: 3").len(), 1);
    stack.teardown().await;
}

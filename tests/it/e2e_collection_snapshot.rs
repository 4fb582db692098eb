//! The collection writer's Redis snapshot: tenants after the first need no whole-graph read, yet
//! a change made by anyone else (here an administrator granting a group access to the shared
//! parent collection, which every new tenant collection copies) is never missed, and a Metabase
//! that breaks the snapshot's assumption is caught.

use crate::support;
use crate::support::{Stack, StackOptions, find, tenant_created};
use reqwest::Method;
use serde_json::{Value, json};

const WHOLE_GRAPH_READ: &str = "GET /api/collection/graph";

/// Redis `GET key`.
async fn redis_get(key: &str) -> Option<String> {
    let client = redis::Client::open(support::redis_url()).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("GET").arg(key).query_async(&mut c).await.ok()?
}

async fn whole_graph_reads(stack: &Stack) -> u64 {
    stack.stats().await["requests"][WHOLE_GRAPH_READ]
        .as_u64()
        .unwrap_or(0)
}

/// Runs tenants one at a time, so each is its own batch (and its own chance to read the graph).
async fn provision(stack: &Stack, tenants: std::ops::RangeInclusive<u32>) {
    for n in tenants {
        stack.publish(&[tenant_created(n)]).await;
        stack.wait_done(&format!("tenant-{n}-created")).await;
    }
}

/// An administrator in the UI: a new group, granted `read` on the shared collection 2.
async fn grant_contractors_the_shared_collection(stack: &Stack) -> i64 {
    let group = stack
        .emu_create("/api/permissions/group", json!({"name": "Contractors"}))
        .await;
    // The administrator's read counts among the emulator's whole-graph reads too.
    let revision = stack.emu_get("/api/collection/graph").await["revision"].clone();
    let answer = stack
        .emu_send(
            Method::PUT,
            "/api/collection/graph?skip-graph=true",
            json!({"revision": revision, "groups": {group.to_string(): {"2": "read"}}}),
        )
        .await;
    assert!(answer.status().is_success(), "the administrator's grant");
    group
}

/// Every tenant in `tenants` has its collection, readable by its group and by no one else but
/// the administrators; `contractors` keeps its grant on the shared collection.
async fn assert_isolated(stack: &Stack, tenants: std::ops::RangeInclusive<u32>, contractors: i64) {
    let state = stack.state().await;
    let colls = &state["collection_graph"]["groups"];
    for n in tenants {
        let g = find(&state["groups"], "name", &format!("Tenant: {n}"))[0]["id"]
            .as_i64()
            .unwrap();
        let c = find(
            &state["collections"],
            "name",
            &format!("Acme {n} Dashboards"),
        );
        assert_eq!(c.len(), 1, "one collection for tenant {n}");
        let cid = c[0]["id"].as_i64().unwrap().to_string();
        for (group, cells) in colls.as_object().unwrap() {
            let expected = match group.as_str() {
                "2" => Some("write"),
                _ if *group == g.to_string() => Some("read"),
                _ => None,
            };
            // Before 0.56.13 the graph spells a missing permission "none" (PR metabase#65098).
            assert_eq!(
                cells
                    .get(&cid)
                    .and_then(Value::as_str)
                    .filter(|v| *v != "none"),
                expected,
                "group {group} on tenant {n}'s collection"
            );
        }
    }
    assert_eq!(
        colls[contractors.to_string()]["2"],
        "read",
        "the administrator's grant is intact"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_change_by_someone_else_costs_a_whole_graph_read() {
    let mut stack = Stack::start().await;
    // Two replicas take turns (whoever gets the delivery): they share the snapshot in Redis.
    stack.spawn_worker().await;
    stack.spawn_worker().await;

    provision(&stack, 1..=4).await;
    assert_eq!(
        whole_graph_reads(&stack).await,
        2,
        "the first tenant's read, then one after the second tenant's creation that confirms \
         creations bump the revision here; from then on the snapshot in Redis stands in for \
         the graph, for both replicas"
    );
    assert_eq!(
        redis_get(&format!("{}:graph:collection:creation_bumps", stack.prefix))
            .await
            .as_deref(),
        Some("confirmed")
    );
    let snapshot = format!("{}:graph:collection:rows", stack.prefix);
    assert!(support::redis_exists(&snapshot).await);

    // Tenant 5's collection copies the Contractors' read from its parent: the worker's rows do
    // not know it, so its write must be refused and the graph read again.
    let contractors = grant_contractors_the_shared_collection(&stack).await;
    provision(&stack, 5..=5).await;
    assert_eq!(
        whole_graph_reads(&stack).await,
        2 + 1 + 1,
        "the administrator's read, then one by the worker after the 409"
    );
    assert_eq!(stack.stats().await["conflicts"]["collection"], 1);

    provision(&stack, 6..=7).await;
    assert_eq!(
        whole_graph_reads(&stack).await,
        4,
        "the read refreshed the snapshot"
    );
    assert_isolated(&stack, 1..=7, contractors).await;
    for w in 0..2 {
        assert!(
            stack.worker_log(w).contains("collection graph written"),
            "replica {w} wrote too (the broker hands deliveries out in turn)"
        );
    }
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn before_v0_56_every_write_reads_the_whole_graph() {
    let mut stack = Stack::start_with(StackOptions {
        emulator_args: vec!["--metabase-version".into(), "v0.55.4".into()],
        ..StackOptions::default()
    })
    .await;
    stack.spawn_worker().await;
    provision(&stack, 1..=2).await;
    let contractors = grant_contractors_the_shared_collection(&stack).await;
    provision(&stack, 3..=4).await;
    assert_eq!(
        whole_graph_reads(&stack).await,
        4 + 1,
        "one read per tenant (plus the administrator's)"
    );
    assert_isolated(&stack, 1..=4, contractors).await;
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metabase_whose_new_collections_keep_the_revision_is_caught() {
    let mut stack = Stack::start_with(StackOptions {
        emulator_args: vec!["--silent-collection-copies".into()],
        ..StackOptions::default()
    })
    .await;
    stack.spawn_worker().await;
    provision(&stack, 1..=2).await;
    let contractors = grant_contractors_the_shared_collection(&stack).await;
    provision(&stack, 3..=5).await;
    assert_isolated(&stack, 1..=5, contractors).await;
    assert!(
        stack
            .worker_log(0)
            .contains("did not bump the collection-graph revision"),
        "the worker says why it stopped trusting its snapshot"
    );
    let before = whole_graph_reads(&stack).await;
    provision(&stack, 6..=6).await;
    assert_eq!(
        whole_graph_reads(&stack).await,
        before + 1,
        "from then on each write reads the graph"
    );
    stack.teardown().await;
}

/// While three replicas provision tenants under collection 2, an administrator keeps granting
/// and revoking a group's access to collection 2 itself, which each new tenant collection copies
/// at the moment it is created. However the two interleave, no tenant collection may end up
/// readable by that group, and the administrator's last value must stand.
#[tokio::test(flavor = "multi_thread")]
async fn a_parent_changing_under_concurrent_provisioning_never_leaks_into_tenant_collections() {
    let mut stack = Stack::start().await;
    for _ in 0..3 {
        stack.spawn_worker().await;
    }
    let flapping = stack
        .emu_create("/api/permissions/group", json!({"name": "Flapping"}))
        .await;
    let stack = std::sync::Arc::new(stack);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = {
        let (stack, stop) = (stack.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut last, mut writes) = (None, 0u32);
            for i in 0u32.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let access = if i.is_multiple_of(2) { "read" } else { "none" };
                let revision = stack.emu_get("/api/collection/graph").await["revision"].clone();
                let body = json!({"revision": revision,
                                  "groups": {flapping.to_string(): {"2": access}}});
                let answer = stack
                    .emu_send(Method::PUT, "/api/collection/graph?skip-graph=true", body)
                    .await;
                if answer.status().is_success() {
                    last = Some(access);
                    writes += 1;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            (last, writes)
        })
    };
    const TENANTS: u32 = 30;
    stack
        .publish(&(1..=TENANTS).map(tenant_created).collect::<Vec<_>>())
        .await;
    for n in 1..=TENANTS {
        stack.wait_done(&format!("tenant-{n}-created")).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (last, writes) = admin.await.unwrap();
    assert!(writes > 5, "the administrator wrote often ({writes})");

    let state = stack.state().await;
    let colls = &state["collection_graph"]["groups"];
    assert_eq!(
        colls[flapping.to_string()]["2"].as_str().unwrap_or("none"),
        last.unwrap(),
        "the administrator's last value stands"
    );
    let stack = std::sync::Arc::into_inner(stack).expect("sole owner");
    // Only tenant groups and administrators on tenant collections (assert_isolated also wants
    // a Contractors grant, which this test does not make).
    for n in 1..=TENANTS {
        let c = find(
            &state["collections"],
            "name",
            &format!("Acme {n} Dashboards"),
        );
        assert_eq!(c.len(), 1, "one collection for tenant {n}");
        let cid = c[0]["id"].as_i64().unwrap().to_string();
        assert!(
            colls[flapping.to_string()].get(&cid).is_none(),
            "tenant {n}'s collection is not readable by the flapping group"
        );
        assert!(
            colls["1"].get(&cid).is_none(),
            "tenant {n}'s collection is not readable by All Users"
        );
    }
    eprintln!(
        "collection conflicts: {}",
        stack.stats().await["conflicts"]["collection"]
    );
    stack.teardown().await;
}

/// The masked-snapshot ordering: on a Metabase whose new collections keep the revision, an
/// administrator's grant lands between one tenant and the next and supplies exactly the bump
/// the second creation does not make. A writer that predicted the revision would be accepted
/// with rows that miss the grant, and the new collection would keep the copied read. The
/// writer never predicts a creation it has not confirmed, and a confirmation needs the rows to
/// match too, so the grant is seen and revoked.
#[tokio::test(flavor = "multi_thread")]
async fn an_administrators_edit_supplying_the_missing_bump_is_caught() {
    let mut stack = Stack::start_with(StackOptions {
        emulator_args: vec!["--silent-collection-copies".into()],
        ..StackOptions::default()
    })
    .await;
    stack.spawn_worker().await;
    provision(&stack, 1..=1).await;
    let contractors = grant_contractors_the_shared_collection(&stack).await;
    provision(&stack, 2..=2).await;
    assert_isolated(&stack, 1..=2, contractors).await;
    let log = stack.worker_log(0);
    assert!(
        !log.contains("confirmed on this instance"),
        "the masked bump must not pass for a confirmation"
    );
    assert!(log.contains("not yet confirmed that creating a collection bumps"));
    // The next creation, with nobody else writing, shows the missing bump.
    provision(&stack, 3..=3).await;
    assert_isolated(&stack, 1..=3, contractors).await;
    assert!(
        stack
            .worker_log(0)
            .contains("did not bump the collection-graph revision"),
    );
    assert_eq!(
        redis_get(&format!("{}:graph:collection:creation_bumps", stack.prefix))
            .await
            .as_deref(),
        Some("refuted")
    );
    stack.teardown().await;
}

//! Requests whose outcome is unknown, and jobs past their deadline: real worker processes, real
//! RabbitMQ and Redis, the emulator's `drop_reply` fault (Metabase applies the request, the
//! answer is lost) and its latency fault.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::{Value, json};

use crate::support::{Stack, StackOptions, eventually, find, tenant_created};

/// Runs `body`, then tears the stack down whether it passed or not.
async fn with_stack<F>(options: StackOptions, body: F)
where
    F: for<'a> FnOnce(&'a mut Stack) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
{
    let mut stack = Stack::start_with(options).await;
    let outcome = AssertUnwindSafe(body(&mut stack)).catch_unwind().await;
    stack.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Drops the answer to the next `method path`, and checks the fault is armed.
async fn drop_next_reply(stack: &Stack, method: &str, path: &str) {
    let set = stack
        .emu_send(
            reqwest::Method::POST,
            "/_emulator/faults",
            json!({"drop_reply": {"method": method, "path": path, "times": 1}}),
        )
        .await;
    assert!(set.status().is_success());
    let settings: Value = set.json().await.unwrap();
    assert_eq!(settings["drop_reply"]["path"], path);
}

/// The fault was used: the request reached Metabase (and was applied) and its answer was lost.
async fn assert_reply_was_dropped(stack: &Stack) {
    let settings: Value = stack
        .emu_send(reqwest::Method::POST, "/_emulator/faults", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        settings["drop_reply"],
        Value::Null,
        "the fault was never hit"
    );
}

async fn requests(stack: &Stack, method: &str, path: &str) -> usize {
    let all = stack.emu_get("/_emulator/requests").await;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == method && r["path"] == path)
        .count()
}

async fn assert_nothing_dead(stack: &Stack) {
    let dead = stack.dead_letters().await;
    assert!(dead.is_empty(), "dead letters: {dead:?}");
}

/// Starts a worker, makes Metabase apply the next `method path` and drop its answer, runs
/// `job` to completion, checks the answer was really dropped, and returns the emulator state.
async fn provision_with_lost_reply(
    stack: &mut Stack,
    method: &str,
    path: &str,
    job: Value,
    id: &str,
) -> Value {
    stack.spawn_worker().await;
    drop_next_reply(stack, method, path).await;
    stack.publish(&[job]).await;
    stack.wait_done(id).await;
    assert_reply_was_dropped(stack).await;
    stack.state().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_a_group_creation_leaves_one_group() {
    with_stack(StackOptions::default(), |stack| {
        Box::pin(async move {
            let state = provision_with_lost_reply(
                stack,
                "POST",
                "/api/permissions/group",
                tenant_created(71),
                "tenant-71-created",
            )
            .await;
            assert_eq!(find(&state["groups"], "name", "Tenant: 71").len(), 1);
            // Looked up, not created again.
            assert_eq!(requests(stack, "POST", "/api/permissions/group").await, 1);
            let users = find(&state["users"], "email", "admin71@acme71.test");
            assert_eq!(users.len(), 1);
            let group = find(&state["groups"], "name", "Tenant: 71")[0]["id"].clone();
            assert!(
                users[0]["group_ids"].as_array().unwrap().contains(&group),
                "the user joined the group the lost answer created"
            );
            assert_nothing_dead(stack).await;
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_a_user_creation_leaves_one_user_reconciled() {
    with_stack(StackOptions::default(), |stack| {
        Box::pin(async move {
            let state = provision_with_lost_reply(
                stack,
                "POST",
                "/api/user",
                tenant_created(72),
                "tenant-72-created",
            )
            .await;
            let users = find(&state["users"], "email", "admin72@acme72.test");
            assert_eq!(users.len(), 1, "{:?}", state["users"]);
            assert_eq!(requests(stack, "POST", "/api/user").await, 1);
            assert_eq!(
                users[0]["login_attributes"],
                json!({"organization_id": "72"})
            );
            let group = find(&state["groups"], "name", "Tenant: 72")[0]["id"].clone();
            assert!(users[0]["group_ids"].as_array().unwrap().contains(&group));
            assert_eq!(
                find(&state["collections"], "name", "Acme 72 Dashboards").len(),
                1
            );
            assert_nothing_dead(stack).await;
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_a_sandbox_write_leaves_one_sandbox_per_table() {
    with_stack(StackOptions::default(), |stack| {
        Box::pin(async move {
            // Sandboxes are created by the data-graph PUT that carries them (no id: insert).
            let mut t = tenant_created(73);
            t["payload"]["data_access"] = json!("sandboxed");
            t["payload"]["sandbox"] = json!({"attribute": "organization_id", "tables": [
                {"table_id": 10, "field_id": 101}, {"table_id": 11, "field_id": 111}]});
            let state = provision_with_lost_reply(
                stack,
                "PUT",
                "/api/permissions/graph",
                t,
                "tenant-73-created",
            )
            .await;
            let group = find(&state["groups"], "name", "Tenant: 73")[0]["id"].clone();
            let mut tables: Vec<i64> = state["sandboxes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["group_id"] == group)
                .map(|s| s["table_id"].as_i64().unwrap())
                .collect();
            tables.sort();
            assert_eq!(tables, vec![10, 11], "exactly one sandbox per table");
            // The re-sent write updated the sandboxes the lost one inserted, by id: no insert of
            // a duplicate (a 500 in Metabase, metabase#64460) that would hold the graph lock.
            let all = stack.emu_get("/_emulator/requests").await;
            let duplicates = all
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["path"] == "/api/permissions/graph" && r["status"] == 500)
                .count();
            assert_eq!(duplicates, 0, "a duplicate sandbox insert was sent");
            let cells = &state["data_graph"]["rendered"]["groups"][group.to_string()]["1"];
            assert_eq!(cells["view-data"]["PUBLIC"]["10"], "sandboxed", "{cells}");
            assert_nothing_dead(stack).await;
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_a_collection_creation_leaves_one_collection() {
    with_stack(StackOptions::default(), |stack| {
        Box::pin(async move {
            let state = provision_with_lost_reply(
                stack,
                "POST",
                "/api/collection",
                tenant_created(74),
                "tenant-74-created",
            )
            .await;
            let colls = find(&state["collections"], "name", "Acme 74 Dashboards");
            assert_eq!(colls.len(), 1, "{:?}", state["collections"]);
            assert_eq!(requests(stack, "POST", "/api/collection").await, 1);
            // The one collection is the tenant's, and isolated.
            let coll = colls[0]["id"].as_i64().unwrap().to_string();
            let group = find(&state["groups"], "name", "Tenant: 74")[0]["id"].to_string();
            let cgraph = &state["collection_graph"]["groups"];
            assert_eq!(cgraph[&group][&coll], "read");
            for (g, cells) in cgraph.as_object().unwrap() {
                if g != &group && g != "2" {
                    assert!(cells.get(&coll).is_none(), "group {g} still has {cells}");
                }
            }
            assert_nothing_dead(stack).await;
        })
    })
    .await;
}

/// `mbprov_job_deadline_exceeded_total{kind="tenant.created"}` of worker `w`.
async fn deadline_exceeded(stack: &Stack, w: usize) -> Option<u64> {
    let url = format!("http://127.0.0.1:{}/metrics", stack.worker_http_port(w));
    let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with("mbprov_job_deadline_exceeded_total{kind=\"tenant.created\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_deadline_is_retried_not_lost() {
    with_stack(StackOptions::default(), |stack| {
        Box::pin(async move {
            let w = stack
                .spawn_worker_with(&[("MBPROV_JOB_DEADLINE", "1s")])
                .await;
            assert_eq!(deadline_exceeded(stack, w).await, Some(0));
            // Every request takes 400 ms: a tenant (ten requests or so) cannot finish in 1 s.
            stack.faults(json!({"latency_ms": 400})).await;
            stack.publish(&[tenant_created(75)]).await;
            eventually("a run abandoned at its deadline", || async {
                deadline_exceeded(stack, w).await.filter(|n| *n >= 1)
            })
            .await;
            stack.faults(json!({"latency_ms": 0})).await;
            stack.wait_done("tenant-75-created").await;

            let log = stack.worker_log(w);
            assert!(log.contains("job past its deadline"), "{log}");
            // The abandoned run left nothing twice and nothing half-isolated.
            let state = stack.state().await;
            assert_eq!(find(&state["groups"], "name", "Tenant: 75").len(), 1);
            assert_eq!(
                find(&state["users"], "email", "admin75@acme75.test").len(),
                1
            );
            let colls = find(&state["collections"], "name", "Acme 75 Dashboards");
            assert_eq!(colls.len(), 1);
            let coll = colls[0]["id"].as_i64().unwrap().to_string();
            let group = find(&state["groups"], "name", "Tenant: 75")[0]["id"].to_string();
            let cgraph = &state["collection_graph"]["groups"];
            assert_eq!(cgraph[&group][&coll], "read");
            for (g, cells) in cgraph.as_object().unwrap() {
                if g != &group && g != "2" {
                    assert!(cells.get(&coll).is_none(), "group {g} still has {cells}");
                }
            }
            assert_nothing_dead(stack).await;
        })
    })
    .await;
}

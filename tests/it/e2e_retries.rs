//! Retries, dead letters and replay against a failing Metabase (the emulator's faults).

use crate::support;
use crate::support::{API_KEY, Stack, StackOptions, eventually, tenant_created};
use serde_json::{Value, json};

fn attempts_seen(log: &str, job: &str) -> u32 {
    log.lines()
        .filter(|l| l.contains(job) && l.contains("job failed"))
        .filter_map(|l| {
            l.split("attempt=")
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_survives_an_outage_with_growing_attempts() {
    let mut stack = Stack::start().await;
    // The retry tiers are under test: without the breaker, which would hold these jobs.
    stack.spawn_worker_with(&[("MBPROV_BREAKER", "off")]).await;
    stack.faults(json!({"outage": true})).await;
    stack.publish(&[tenant_created(1)]).await;
    eventually("three failed attempts", || async {
        (attempts_seen(&stack.worker_log(0), "tenant-1-created") >= 3).then_some(())
    })
    .await;
    stack.faults(json!({"outage": false})).await;
    stack.wait_done("tenant-1-created").await;
    let state = stack.state().await;
    assert_eq!(
        support::find(&state["groups"], "name", "Tenant: 1").len(),
        1
    );
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_jobs_are_dead_lettered_then_replayed_purged_and_never_leak_the_key() {
    let mut stack = Stack::start_with(StackOptions {
        max_attempts: 2,
        ..StackOptions::default()
    })
    .await;
    // The retry tiers are under test: without the breaker, which would hold these jobs.
    stack.spawn_worker_with(&[("MBPROV_BREAKER", "off")]).await;
    stack.faults(json!({"outage": true})).await;
    let user = json!({"id": "bob-upserted", "kind": "user.upserted",
                      "payload": {"email": "bob@acme.test", "groups": ["Tenant: 1"]}});
    stack
        .publish(&[
            tenant_created(1),
            tenant_created(2),
            tenant_created(3),
            user,
        ])
        .await;
    let dead = eventually("four exhausted dead letters", || async {
        let d = stack.dead_letters().await;
        (d.len() == 4).then_some(d)
    })
    .await;
    for d in &dead {
        assert_eq!(d["error_class"], "exhausted", "{d}");
        assert_eq!(d["attempts"], 2, "{d}");
        assert!(d["error"].as_str().unwrap().contains("503"), "{d}");
    }
    let shown = stack.run(&["dlq", "show", "tenant-2-created"]).await;
    assert!(shown.status.success());
    let shown_text = String::from_utf8_lossy(&shown.stdout).to_string();
    let shown: Value = serde_json::from_str(&shown_text).unwrap();
    for h in [
        "x-mbprov-error",
        "x-mbprov-error-class",
        "x-mbprov-attempts",
        "x-mbprov-first-failed-at",
        "x-mbprov-last-failed-at",
    ] {
        assert!(
            !shown["headers"][h].is_null(),
            "missing header {h}: {shown}"
        );
    }
    stack.faults(json!({"outage": false})).await;

    // purge touches only the id asked for.
    let purged = stack.run(&["dlq", "purge", "tenant-3-created"]).await;
    assert!(
        purged.status.success(),
        "{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    assert_eq!(stack.dead_letters().await.len(), 3);

    // replay --kind moves only that kind; tenant 1's group does not exist yet, so bob's job
    // creates it.
    let replayed = stack
        .run(&["dlq", "replay", "--kind", "user.upserted", "--all"])
        .await;
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    stack.wait_done("bob-upserted").await;
    let left: Vec<String> = stack
        .dead_letters()
        .await
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|id| id.starts_with("tenant-")), "{left:?}");

    let all = stack.run(&["dlq", "replay", "--all"]).await;
    assert!(all.status.success());
    stack.wait_done("tenant-1-created").await;
    stack.wait_done("tenant-2-created").await;
    assert!(stack.dead_letters().await.is_empty());
    let state = stack.state().await;
    for t in ["Tenant: 1", "Tenant: 2"] {
        assert_eq!(support::find(&state["groups"], "name", t).len(), 1, "{t}");
    }
    assert!(
        support::find(&state["groups"], "name", "Tenant: 3").is_empty(),
        "purged, never run"
    );

    // The key appears in no log line, header or CLI output.
    let outputs = [
        stack.all_worker_logs(),
        shown_text,
        String::from_utf8_lossy(&purged.stdout).to_string(),
        String::from_utf8_lossy(&replayed.stdout).to_string(),
        String::from_utf8_lossy(&all.stdout).to_string(),
        String::from_utf8_lossy(&all.stderr).to_string(),
    ];
    for o in &outputs {
        assert!(!o.contains(API_KEY), "the API key leaked: {o}");
    }
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_kills_the_process_ends_in_the_dead_letter_queue() {
    let mut stack = Stack::start().await;
    stack
        .publish_raw("test.abort", br#"{"kind":"test.abort","payload":{}}"#)
        .await;
    // Each worker dies on the poisoned delivery; the broker's delivery limit stops the loop.
    let mut restarts = 0;
    let dead = loop {
        let d = stack.dead_letters().await;
        if !d.is_empty() {
            break d;
        }
        assert!(
            restarts < 12,
            "still crash-looping after {restarts} restarts"
        );
        let w = stack
            .spawn_worker_detached(&[("MBPROV_TEST_ABORT_ON_KIND", "test.abort")])
            .await;
        stack.wait_exit(w).await;
        restarts += 1;
    };
    assert_eq!(dead[0]["kind"], "test.abort");
    assert_eq!(dead[0]["error_class"], "delivery-limit");
    // A healthy worker then runs the next job normally.
    stack.spawn_worker().await;
    stack.publish(&[tenant_created(9)]).await;
    stack.wait_done("tenant-9-created").await;
    stack.teardown().await;
}

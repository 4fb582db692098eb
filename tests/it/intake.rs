//! Intake control end to end: a key revoked and rotated in its file while jobs flow, pause and
//! resume across workers and a restart, the fleet-wide request budget, and the breaker during
//! a Metabase outage. Real RabbitMQ, Redis, worker processes and the emulator.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Stack, StackOptions, eventually, redis_exists, tenant_created};

async fn readyz(port: u16) -> Option<(u16, Value)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

/// The value of one series (`name{labels}` exactly as rendered) on a worker's /metrics.
async fn metric(port: u16, series: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn status_json(stack: &Stack) -> Value {
    let out = stack.run(&["status", "--json"]).await;
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

async fn done_count(stack: &Stack, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        if redis_exists(&format!("{}:done:{id}", stack.prefix)).await {
            n += 1;
        }
    }
    n
}

fn ids(n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("tenant-{i}-created")).collect()
}

async fn wait_all_done(stack: &Stack, ids: &[String]) {
    for id in ids {
        stack.wait_done(id).await;
    }
}

/// Writes the key file the way a mounted secret changes: a new file renamed over the old.
fn write_key(path: &std::path::Path, key: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{key}\n")).expect("write key");
    std::fs::rename(&tmp, path).expect("rename key");
}

async fn new_api_key(stack: &Stack, name: &str) -> (i64, String) {
    new_api_key_in(stack, name, 2).await
}

/// A key in group `group_id` (2: Administrators; 1: All Users, no admin rights).
async fn new_api_key_in(stack: &Stack, name: &str, group_id: i64) -> (i64, String) {
    let r = stack
        .emu_send(
            Method::POST,
            "/api/api-key",
            json!({"name": name, "group_id": group_id}),
        )
        .await;
    assert!(r.status().is_success(), "create key: {}", r.status());
    let v: Value = r.json().await.expect("key json");
    (
        v["id"].as_i64().expect("id"),
        v["unmasked_key"].as_str().expect("key").to_owned(),
    )
}

#[tokio::test]
async fn a_key_rotated_in_its_file_heals_the_worker_and_nothing_is_dead_lettered() {
    let mut stack = Stack::start_with(StackOptions {
        emulator_args: vec!["--latency-ms".into(), "20".into()],
        max_attempts: 2,
        ..StackOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("api-key");
    let (old_id, old_key) = new_api_key(&stack, "mbprov worker").await;
    write_key(&key_file, &old_key);
    let key_path = key_file.to_string_lossy().into_owned();
    let w = stack
        .spawn_worker_with(&[
            ("METABASE_API_KEY", ""),
            ("METABASE_API_KEY_FILE", &key_path),
            ("MBPROV_PROBE_MAX_DELAY", "1s"),
        ])
        .await;
    let port = stack.worker_http_port(w);
    assert_eq!(readyz(port).await.map(|r| r.0), Some(200));

    let jobs = ids(40);
    stack
        .publish(&(1..=40).map(tenant_created).collect::<Vec<_>>())
        .await;
    eventually("a few jobs done with the first key", || async {
        (done_count(&stack, &jobs[..10]).await >= 3).then_some(())
    })
    .await;

    // The administrator rotates: a new key, the old one revoked, the secret not yet updated.
    let (_, new_key) = new_api_key(&stack, "mbprov worker (rotated)").await;
    let revoked = stack
        .emu_send(
            Method::POST,
            "/_emulator/revoke-api-key",
            json!({"id": old_id}),
        )
        .await;
    assert!(revoked.status().is_success());

    let reason = eventually("readiness 503 naming the key", || async {
        let (status, body) = readyz(port).await?;
        (status == 503).then(|| body["reason"].as_str().unwrap_or("").to_owned())
    })
    .await;
    assert!(reason.contains("authentication"), "{reason}");
    assert!(reason.contains("401"), "{reason}");
    assert_eq!(
        metric(port, r#"mbprov_intake_closed{reason="authentication"}"#).await,
        1.0
    );
    let done_while_refused = done_count(&stack, &jobs).await;
    assert!(
        done_while_refused < jobs.len(),
        "work remained when the key was revoked"
    );
    // The worker keeps probing with the old key and stays held: no job runs, none dies.
    eventually("two failed key probes", || async {
        (metric(
            port,
            r#"mbprov_intake_probes_total{probe="authentication",result="failed"}"#,
        )
        .await
            >= 2.0)
            .then_some(())
    })
    .await;
    let status = status_json(&stack).await;
    assert_eq!(status["consumers"], 0, "{status}");
    assert_eq!(
        status["intake"]["workers"][0]["intake"],
        json!(["authentication"]),
        "{status}"
    );
    assert!(stack.worker_log(w).contains("Metabase refuses the API key"));

    write_key(&key_file, &new_key);
    eventually("readiness 200 again", || async {
        (readyz(port).await?.0 == 200).then_some(())
    })
    .await;
    wait_all_done(&stack, &jobs).await;
    assert!(
        stack.dead_letters().await.is_empty(),
        "nothing dead-lettered"
    );
    let returned = metric(
        port,
        r#"mbprov_jobs_returned_total{reason="authentication"}"#,
    )
    .await;
    eprintln!(
        "jobs put back because of the refused key: {returned}; done before: {done_while_refused}"
    );
    assert!(
        returned >= 1.0,
        "in-flight jobs refused went back to the queue"
    );
    stack.teardown().await;
}

#[tokio::test]
async fn a_worker_started_with_a_key_that_is_no_longer_admin_waits_then_heals() {
    let mut stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("api-key");
    // A working key outside the Administrators group: 403 on the admin-only routes.
    let (_, demoted) = new_api_key_in(&stack, "demoted", 1).await;
    write_key(&key_file, &demoted);
    let key_path = key_file.to_string_lossy().into_owned();
    let w = stack
        .spawn_worker_serving(&[
            ("METABASE_API_KEY", ""),
            ("METABASE_API_KEY_FILE", &key_path),
            ("MBPROV_PROBE_MAX_DELAY", "1s"),
        ])
        .await;
    let port = stack.worker_http_port(w);
    let reason = eventually("readiness 503 naming the key", || async {
        let (status, body) = readyz(port).await?;
        let reason = body["reason"].as_str().unwrap_or("").to_owned();
        (status == 503 && reason.starts_with("authentication")).then_some(reason)
    })
    .await;
    assert!(reason.contains("not an Administrators key"), "{reason}");
    eventually("the start-up refusal logged", || async {
        stack
            .worker_log(w)
            .contains("Metabase refuses the API key")
            .then_some(())
    })
    .await;
    assert_eq!(status_json(&stack).await["consumers"], 0);

    let (_, admin) = new_api_key(&stack, "admin again").await;
    write_key(&key_file, &admin);
    eventually("the worker consuming with the new key", || async {
        (status_json(&stack).await["consumers"] == 1).then_some(())
    })
    .await;
    eventually("readiness 200", || async {
        (readyz(port).await?.0 == 200).then_some(())
    })
    .await;
    stack.publish(&[tenant_created(1)]).await;
    stack.wait_done("tenant-1-created").await;
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

#[tokio::test]
async fn pause_holds_every_worker_across_a_restart_and_resume_releases_them() {
    let mut stack = Stack::start().await;
    let a = stack.spawn_worker().await;
    let _b = stack.spawn_worker().await;

    let out = stack.run(&["pause", "--reason", "Metabase upgrade"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Metabase upgrade"));
    let started = Instant::now();
    eventually("both workers paused, no consumer left", || async {
        let s = status_json(&stack).await;
        let workers = s["intake"]["workers"].as_array()?.clone();
        (s["consumers"] == 0
            && workers.len() == 2
            && workers.iter().all(|w| w["intake"] == json!(["paused"])))
        .then_some(())
    })
    .await;
    eprintln!("pause reached both workers in {:?}", started.elapsed());
    let (status, body) = readyz(stack.worker_http_port(a)).await.expect("readyz");
    assert_eq!(status, 200, "a pause is not a fault: {body}");
    assert_eq!(body["status"], "paused");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("Metabase upgrade")
    );

    let jobs = ids(10);
    stack
        .publish(&(1..=10).map(tenant_created).collect::<Vec<_>>())
        .await;
    // A restarted worker starts paused: it serves /readyz but never consumes.
    stack.stop_worker(a).await;
    let c = stack.spawn_worker_serving(&[]).await;
    let c_port = stack.worker_http_port(c);
    eventually("the new worker reports the pause", || async {
        let (status, body) = readyz(c_port).await?;
        (status == 200 && body["status"] == "paused").then_some(())
    })
    .await;
    let s = status_json(&stack).await;
    assert_eq!(s["consumers"], 0, "{s}");
    assert_eq!(s["queues"][0]["messages"], 10, "{s}");
    assert_eq!(s["intake"]["paused"]["reason"], "Metabase upgrade", "{s}");
    let text = stack.run(&["status"]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("paused since") && text.contains("Metabase upgrade"),
        "{text}"
    );
    assert_eq!(done_count(&stack, &jobs).await, 0);

    let out = stack.run(&["resume"]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed"));
    let started = Instant::now();
    eventually("both workers consuming again", || async {
        (status_json(&stack).await["consumers"] == 2).then_some(())
    })
    .await;
    eprintln!("resume reached both workers in {:?}", started.elapsed());
    wait_all_done(&stack, &jobs).await;
    assert_eq!(readyz(c_port).await.expect("readyz").1["status"], "ready");
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

#[tokio::test]
async fn three_workers_keep_to_the_fleet_budget() {
    const CAP: f64 = 20.0;
    let mut stack = Stack::start().await;
    for _ in 0..3 {
        stack
            .spawn_worker_with(&[("MBPROV_METABASE_RPS", "20")])
            .await;
    }
    stack
        .publish(&(1..=150).map(tenant_created).collect::<Vec<_>>())
        .await;
    let total = |v: Value| v["requests_total"].as_u64().unwrap_or(0);
    eventually("requests flowing", || async {
        (total(stack.stats().await) >= 20).then_some(())
    })
    .await;
    // A window long enough for one slot's rounding to be noise: 6 s at 20/s is 120 requests.
    let (t0, n0) = (Instant::now(), total(stack.stats().await));
    let window = Duration::from_secs(6);
    eventually("the measuring window", || async {
        (t0.elapsed() >= window).then_some(())
    })
    .await;
    let (t1, n1) = (Instant::now(), total(stack.stats().await));
    let rate = (n1 - n0) as f64 / (t1 - t0).as_secs_f64();
    eprintln!(
        "three workers, cap {CAP}/s: {} requests in {:?} = {rate:.2}/s",
        n1 - n0,
        t1 - t0
    );
    let waiting = status_json(&stack).await["queues"][0]["messages"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        waiting > 0,
        "demand stayed above the cap for the whole window"
    );
    assert!(
        (rate - CAP).abs() <= CAP * 0.10,
        "measured {rate:.2} requests/s against a cap of {CAP}"
    );
    stack.teardown().await;
}

#[tokio::test]
async fn the_breaker_holds_jobs_through_an_outage_and_closes_after_it() {
    let mut stack = Stack::start_with(StackOptions {
        emulator_args: vec!["--latency-ms".into(), "20".into()],
        max_attempts: 3,
        retry_delays: "100ms,200ms".into(),
        ..StackOptions::default()
    })
    .await;
    let w = stack
        .spawn_worker_with(&[("MBPROV_PROBE_MAX_DELAY", "1s")])
        .await;
    let port = stack.worker_http_port(w);
    let jobs = ids(40);
    stack
        .publish(&(1..=40).map(tenant_created).collect::<Vec<_>>())
        .await;
    eventually("a few jobs done before the outage", || async {
        (done_count(&stack, &jobs).await >= 3).then_some(())
    })
    .await;
    stack.faults(json!({"outage": true})).await;
    let done_before = done_count(&stack, &jobs).await;
    assert!(
        done_before < jobs.len(),
        "work remained when the outage began"
    );
    // Before the breaker opens, readiness may already fail on its own probe of Metabase.
    eventually("readiness 503 naming the breaker", || async {
        let (status, body) = readyz(port).await?;
        let reason = body["reason"].as_str().unwrap_or("");
        (status == 503 && reason.starts_with("breaker: Metabase keeps failing")).then_some(())
    })
    .await;
    assert_eq!(
        metric(port, r#"mbprov_intake_closed{reason="breaker"}"#).await,
        1.0
    );
    // Long enough that three attempts 100-200 ms apart would all have failed without it.
    eventually("three failed breaker probes", || async {
        (metric(
            port,
            r#"mbprov_intake_probes_total{probe="breaker",result="failed"}"#,
        )
        .await
            >= 3.0)
            .then_some(())
    })
    .await;
    let s = status_json(&stack).await;
    assert_eq!(s["consumers"], 0, "{s}");
    assert_eq!(
        s["intake"]["workers"][0]["intake"],
        json!(["breaker"]),
        "{s}"
    );
    let during = stack.stats().await["requests_total"].as_u64().unwrap_or(0);

    stack.faults(json!({"outage": false})).await;
    eventually("readiness 200 after the outage", || async {
        (readyz(port).await?.0 == 200).then_some(())
    })
    .await;
    wait_all_done(&stack, &jobs).await;
    let dead = stack.dead_letters().await;
    assert!(dead.is_empty(), "no job dead-lettered: {dead:?}");
    let returned = metric(port, r#"mbprov_jobs_returned_total{reason="breaker"}"#).await;
    eprintln!(
        "done before the outage: {done_before}/40; requests until it ended: {during}; jobs put back by the breaker: {returned}"
    );
    assert!(
        returned >= 1.0,
        "jobs failing while the breaker was open went back"
    );
    assert!(stack.worker_log(w).contains("circuit breaker open"));
    stack.teardown().await;
}

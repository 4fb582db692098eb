//! `mbprov publish`, `dlq` and `status` as a user runs them, against a real RabbitMQ.

use std::process::Stdio;

use crate::queue_support::*;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use mbprov::queue::{Broker, headers};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

pub(crate) struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary as a user would, with the test's prefix and tiny retry delays.
pub(crate) async fn mbprov(prefix: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mbprov"))
        .args(args)
        .env("AMQP_URL", amqp_url())
        .env("MBPROV_PREFIX", prefix)
        .env("MBPROV_RETRY_DELAYS", DELAYS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mbprov");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// A dead letter as the worker leaves one.
async fn seed_dead(b: &Broker, body: &Value, kind: &str, class: &str, attempts: i64) {
    let mut h = FieldTable::default();
    h.insert(headers::ERROR_CLASS.into(), text(class));
    h.insert(headers::ERROR.into(), text(&format!("{kind} failed")));
    h.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(attempts));
    h.insert(
        headers::FIRST_FAILED_AT.into(),
        text("2025-01-01T00:00:00.000Z"),
    );
    h.insert(
        headers::LAST_FAILED_AT.into(),
        text("2025-01-01T00:01:00.000Z"),
    );
    h.insert(headers::ROUTING_KEY.into(), text(kind));
    h.insert("traceparent".into(), text("00-keep-me"));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(h);
    let dead = b.topology().dead();
    b.publish(&dead, kind, &serde_json::to_vec(body).unwrap(), props)
        .await
        .unwrap();
}

async fn seed_four(b: &Broker) {
    seed_dead(
        b,
        &json!({"id": "a", "kind": "user.upserted", "payload": {}}),
        "user.upserted",
        "permanent",
        1,
    )
    .await;
    seed_dead(
        b,
        &json!({"id": "b", "kind": "user.upserted", "payload": {}}),
        "user.upserted",
        "exhausted",
        10,
    )
    .await;
    seed_dead(
        b,
        &json!({"id": "c", "kind": "tenant.created", "payload": {}}),
        "tenant.created",
        "permanent",
        1,
    )
    .await;
    seed_dead(
        b,
        &json!({"kind": "user.deactivated", "payload": {"email": "x"}}),
        "user.deactivated",
        "permanent",
        2,
    )
    .await;
}

pub(crate) fn list(out: &Output) -> Vec<Value> {
    assert!(out.ok, "{}", out.stderr);
    serde_json::from_str::<Vec<Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

pub(crate) fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn publish_reads_one_envelope_an_array_and_ndjson() {
    let prefix = fresh_prefix();
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.json");
    let array = dir.path().join("array.json");
    std::fs::write(
        &one,
        "{\n \"id\": \"j1\",\n \"kind\": \"user.upserted\",\n \"payload\": {\"email\": \"j1@acme.test\"}\n}\n",
    )
    .unwrap();
    std::fs::write(
        &array,
        r#"[{"id":"j2","kind":"tenant.created","payload":{"tenant_id":"2","tenant_name":"Two","database_id":1,"admin_user":{"email":"a@two.test"}}},{"kind":"tenant.deleted","payload":{"tenant_id":"3"}}]"#,
    )
    .unwrap();
    let ndjson = "{\"id\":\"j4\",\"kind\":\"user.deactivated\",\"payload\":{\"email\":\"j4@acme.test\"}}\n{\"id\":\"j5\",\"kind\":\"user.deactivated\",\"payload\":{\"email\":\"j5@acme.test\"}}\n";
    let out = mbprov(
        &prefix,
        &[
            "publish",
            one.to_str().unwrap(),
            array.to_str().unwrap(),
            "-",
        ],
        Some(ndjson),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec![
            "j1 user.upserted",
            "j2 tenant.created",
            "- tenant.deleted",
            "j4 user.deactivated",
            "j5 user.deactivated"
        ]
    );

    let b = broker(&prefix).await;
    let jobs = drain(b.channel(), &b.topology().jobs_queue()).await;
    let got: Vec<(String, Option<String>, Option<u8>)> = jobs
        .iter()
        .map(|d| {
            (
                d.routing_key.to_string(),
                d.properties.message_id().as_ref().map(|m| m.to_string()),
                *d.properties.delivery_mode(),
            )
        })
        .collect();
    assert_eq!(got[0], ("user.upserted".into(), Some("j1".into()), Some(2)));
    assert_eq!(got[2], ("tenant.deleted".into(), None, Some(2)));
    assert_eq!(got.len(), 5);
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn publish_refuses_an_invalid_file_and_publishes_nothing() {
    let prefix = fresh_prefix();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(
        &good,
        r#"{"kind":"user.upserted","payload":{"email":"g@acme.test"}}"#,
    )
    .unwrap();
    std::fs::write(
        &bad,
        "{\"kind\":\"user.deactivated\",\"payload\":{\"email\":\"a@acme.test\"}}\n{\"kind\":\"user.deactivated\",\"payload\":[]}\n",
    )
    .unwrap();
    let out = mbprov(
        &prefix,
        &["publish", good.to_str().unwrap(), bad.to_str().unwrap()],
        None,
    )
    .await;
    assert!(!out.ok);
    assert!(out.stderr.contains("bad.ndjson"), "{}", out.stderr);
    assert!(out.stderr.contains("index 1"), "{}", out.stderr);
    assert!(out.stderr.contains("payload"), "{}", out.stderr);
    assert_eq!(out.stdout, "");

    // The refusal happens before connecting; declaring the topology here only lets us look.
    let b = broker(&prefix).await;
    assert_eq!(depth(b.channel(), &b.topology().jobs_queue()).await, 0);
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn dlq_list_and_show_leave_the_queue_as_it_was() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    seed_four(&b).await;

    let all = list(&mbprov(&prefix, &["dlq", "list", "--json"], None).await);
    assert_eq!(all.len(), 4);
    assert_eq!(&ids(&all)[..3], ["a", "b", "c"]);
    assert_eq!(
        ids(&all)[3].len(),
        64,
        "the id of an envelope without one is a hash"
    );
    assert_eq!(all[1]["error_class"], "exhausted");
    assert_eq!(all[1]["attempts"], 10);
    assert_eq!(all[1]["kind"], "user.upserted");
    assert_eq!(all[1]["error"], "user.upserted failed");
    assert_eq!(all[1]["failed_at"], "2025-01-01T00:01:00.000Z");

    let tenants = list(
        &mbprov(
            &prefix,
            &["dlq", "list", "--json", "--kind", "tenant.created"],
            None,
        )
        .await,
    );
    assert_eq!(ids(&tenants), ["c"]);
    let two = list(&mbprov(&prefix, &["dlq", "list", "--json", "--limit", "2"], None).await);
    assert_eq!(ids(&two), ["a", "b"]);
    let table = mbprov(&prefix, &["dlq", "list"], None).await;
    assert!(
        table.ok && table.stdout.lines().count() == 5,
        "{}",
        table.stdout
    );

    let show = mbprov(&prefix, &["dlq", "show", "b"], None).await;
    assert!(show.ok, "{}", show.stderr);
    let shown: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(
        shown["envelope"],
        json!({"id": "b", "kind": "user.upserted", "payload": {}})
    );
    assert_eq!(shown["headers"][headers::ERROR_CLASS], "exhausted");
    assert_eq!(shown["headers"][headers::ATTEMPTS], 10);
    assert_eq!(shown["headers"]["traceparent"], "00-keep-me");

    let missing = mbprov(&prefix, &["dlq", "show", "nope"], None).await;
    assert!(!missing.ok);
    assert!(missing.stderr.contains("nope"), "{}", missing.stderr);

    assert_eq!(depth(b.channel(), &b.topology().dead()).await, 4);
    let again = list(&mbprov(&prefix, &["dlq", "list", "--json"], None).await);
    assert_eq!(ids(&again), ids(&all), "order is kept");
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn dlq_replay_moves_only_what_was_asked_with_fresh_attempts() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let topo = b.topology().clone();
    seed_four(&b).await;

    let dry = mbprov(&prefix, &["dlq", "replay", "--all", "--dry-run"], None).await;
    assert_eq!(dry.stdout.trim(), "would replay 4", "{}", dry.stderr);
    assert_eq!(depth(b.channel(), &topo.dead()).await, 4);
    assert_eq!(depth(b.channel(), &topo.jobs_queue()).await, 0);

    let one = mbprov(&prefix, &["dlq", "replay", "b"], None).await;
    assert_eq!(one.stdout.trim(), "replayed 1", "{}", one.stderr);
    let jobs = drain(b.channel(), &topo.jobs_queue()).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.routing_key.as_str(), "user.upserted");
    let body: Value = serde_json::from_slice(&job.data).unwrap();
    assert_eq!(body["id"], "b");
    let header_keys: Vec<String> = job
        .properties
        .headers()
        .as_ref()
        .map(|h| h.inner().keys().map(|k| k.to_string()).collect())
        .unwrap_or_default();
    // The quorum queue adds its own delivery count when it hands the message to us.
    let header_keys: Vec<String> = header_keys
        .into_iter()
        .filter(|k| k != "x-delivery-count")
        .collect();
    assert_eq!(
        header_keys,
        vec!["traceparent"],
        "failure history is dropped, other headers kept"
    );

    let by_kind = mbprov(
        &prefix,
        &["dlq", "replay", "--all", "--kind", "tenant.created"],
        None,
    )
    .await;
    assert_eq!(by_kind.stdout.trim(), "replayed 1", "{}", by_kind.stderr);
    let rest = list(&mbprov(&prefix, &["dlq", "list", "--json"], None).await);
    assert_eq!(ids(&rest)[0], "a");
    assert_eq!(rest.len(), 2);

    let all = mbprov(&prefix, &["dlq", "replay", "--all"], None).await;
    assert_eq!(all.stdout.trim(), "replayed 2", "{}", all.stderr);
    assert_eq!(depth(b.channel(), &topo.dead()).await, 0);
    assert_eq!(depth(b.channel(), &topo.jobs_queue()).await, 3);

    let neither = mbprov(&prefix, &["dlq", "replay"], None).await;
    assert!(!neither.ok, "replay needs ids or --all");
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn dlq_purge_deletes_only_what_was_asked() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let topo = b.topology().clone();
    seed_four(&b).await;

    let one = mbprov(&prefix, &["dlq", "purge", "a", "c"], None).await;
    assert_eq!(one.stdout.trim(), "purged 2", "{}", one.stderr);
    let rest = list(&mbprov(&prefix, &["dlq", "list", "--json"], None).await);
    assert_eq!(ids(&rest)[0], "b");
    assert_eq!(rest.len(), 2);

    let all = mbprov(&prefix, &["dlq", "purge", "--all"], None).await;
    assert_eq!(all.stdout.trim(), "purged 2", "{}", all.stderr);
    assert_eq!(depth(b.channel(), &topo.dead()).await, 0);
    assert_eq!(depth(b.channel(), &topo.jobs_queue()).await, 0);
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn status_shows_every_queue_and_the_consumers() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    publish_job(&b, "k", &json!({"kind": "k", "payload": {}})).await;
    seed_dead(
        &b,
        &json!({"kind": "k", "payload": {}}),
        "k",
        "permanent",
        1,
    )
    .await;

    let out = mbprov(&prefix, &["status", "--json"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let rows: Vec<(String, u64)> = doc["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_owned(),
                q["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (format!("{prefix}.jobs"), 1),
            (format!("{prefix}.retry.v2.50ms"), 0),
            (format!("{prefix}.retry.v2.100ms"), 0),
            (format!("{prefix}.dead"), 1),
        ]
    );
    assert_eq!(doc["consumers"], 0);
    b.close().await;
    teardown(&prefix).await;
}

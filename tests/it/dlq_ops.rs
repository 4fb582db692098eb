//! `mbprov dlq` as an operator uses it on a real RabbitMQ: filters on every subcommand, the
//! summary, edit-and-replay (and a refused edit), and a dead-letter queue deeper than the
//! window, which is turned once and must come out in the same order.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use mbprov::queue::{Broker, headers};
use serde_json::{Value, json};

use crate::queue_cli::{ids, list, mbprov};
use crate::queue_support::*;

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// One dead letter as the worker leaves it.
pub(crate) struct Letter<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub class: &'a str,
    pub error: &'a str,
    pub failed_at: &'a str,
    pub payload: Value,
}

pub(crate) fn dead_message(l: &Letter) -> (Vec<u8>, BasicProperties) {
    let mut h = FieldTable::default();
    h.insert(headers::ERROR_CLASS.into(), text(l.class));
    h.insert(headers::ERROR.into(), text(l.error));
    h.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(1));
    h.insert(headers::FIRST_FAILED_AT.into(), text(l.failed_at));
    h.insert(headers::LAST_FAILED_AT.into(), text(l.failed_at));
    h.insert(headers::ROUTING_KEY.into(), text(l.kind));
    let mut body = json!({"kind": l.kind, "payload": l.payload});
    if !l.id.is_empty() {
        body["id"] = json!(l.id);
    }
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(h);
    (serde_json::to_vec(&body).unwrap(), props)
}

async fn seed(b: &Broker, letters: &[Letter<'_>]) {
    for l in letters {
        let (body, props) = dead_message(l);
        b.publish(&b.topology().dead(), l.kind, &body, props)
            .await
            .unwrap();
    }
}

fn five() -> Vec<Letter<'static>> {
    vec![
        Letter {
            id: "t42",
            kind: "tenant.created",
            class: "exhausted",
            error: "HTTP 503 from Metabase",
            failed_at: "2026-11-30T10:00:00.000Z",
            payload: json!({"tenant_id": "42"}),
        },
        Letter {
            id: "t43",
            kind: "tenant.created",
            class: "exhausted",
            error: "HTTP 503 from Metabase",
            failed_at: "2026-11-30T11:00:00.000Z",
            payload: json!({"tenant_id": 43}),
        },
        Letter {
            id: "u1",
            kind: "user.deactivated",
            class: "permanent",
            error: "payload.email: not an email address",
            failed_at: "2026-11-30T12:00:00.000Z",
            payload: json!({"email": "nope"}),
        },
        Letter {
            id: "s1",
            kind: "users.synced",
            class: "permanent",
            error: "group Tenant: 42 Editors is managed elsewhere",
            failed_at: "2026-11-30T13:00:00.000Z",
            payload: json!({"managed_groups": [], "users": [{"email": "a@b.test", "tenant_id": "42"}]}),
        },
        Letter {
            id: "t44",
            kind: "tenant.deleted",
            class: "exhausted",
            error: "timed out after 30s",
            failed_at: "2026-11-30T14:00:00.000Z",
            payload: json!({"tenant_id": "44"}),
        },
    ]
}

async fn listed(prefix: &str, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["dlq", "list", "--json"];
    args.extend_from_slice(filters);
    let rows = list(&mbprov(prefix, &args, None).await);
    ids(&rows).into_iter().map(str::to_owned).collect()
}

#[tokio::test]
async fn every_filter_narrows_list_show_replay_and_purge() {
    let prefix = fresh_prefix();
    let _cleanup = cleanup_on_panic(&prefix, &[]);
    let b = broker(&prefix).await;
    let topo = b.topology().clone();
    seed(&b, &five()).await;

    let table: [(&[&str], &[&str]); 10] = [
        (&[], &["t42", "t43", "u1", "s1", "t44"]),
        (&["--kind", "tenant.created"], &["t42", "t43"]),
        (&["--class", "permanent"], &["u1", "s1"]),
        (&["--error", "http 503"], &["t42", "t43"]),
        (&["--tenant", "42"], &["t42", "s1"]),
        (&["--tenant", "43"], &["t43"]),
        (&["--since", "2026-11-30T12:00:00Z"], &["u1", "s1", "t44"]),
        (
            &[
                "--since",
                "2026-11-30T11:00:00Z",
                "--until",
                "2026-11-30T13:00:00Z",
            ],
            &["t43", "u1"],
        ),
        (&["--id", "t44", "--id", "u1"], &["u1", "t44"]),
        (&["--class", "exhausted", "--error", "timed out"], &["t44"]),
    ];
    for (filters, want) in table {
        assert_eq!(listed(&prefix, filters).await, want, "{filters:?}");
    }

    let show = mbprov(
        &prefix,
        &["dlq", "show", "t42", "--class", "permanent"],
        None,
    )
    .await;
    assert!(!show.ok, "a filter that excludes the id finds nothing");
    let show = mbprov(&prefix, &["dlq", "show", "t42", "--tenant", "42"], None).await;
    assert!(show.ok, "{}", show.stderr);

    let dry = mbprov(
        &prefix,
        &["dlq", "purge", "--all", "--tenant", "42", "--dry-run"],
        None,
    )
    .await;
    assert_eq!(dry.stdout.trim(), "would purge 2", "{}", dry.stderr);
    let purge = mbprov(&prefix, &["dlq", "purge", "--all", "--tenant", "42"], None).await;
    assert_eq!(purge.stdout.trim(), "purged 2", "{}", purge.stderr);
    let replay = mbprov(
        &prefix,
        &[
            "dlq",
            "replay",
            "--all",
            "--class",
            "exhausted",
            "--until",
            "2026-11-30T12:00:00Z",
        ],
        None,
    )
    .await;
    assert_eq!(replay.stdout.trim(), "replayed 1", "{}", replay.stderr);
    let replayed = drain(b.channel(), &topo.jobs_queue()).await;
    let body: Value = serde_json::from_slice(&replayed[0].data).unwrap();
    assert_eq!(body["id"], "t43");
    assert_eq!(
        listed(&prefix, &[]).await,
        ["u1", "t44"],
        "the rest, in order"
    );

    let bad = mbprov(&prefix, &["dlq", "list", "--since", "last tuesday"], None).await;
    assert!(!bad.ok && bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn the_summary_says_what_broke() {
    let prefix = fresh_prefix();
    let _cleanup = cleanup_on_panic(&prefix, &[]);
    let b = broker(&prefix).await;
    seed(&b, &five()).await;

    let out = mbprov(&prefix, &["dlq", "list", "--summary", "--json"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[0],
        json!({"kind": "tenant.created", "error_class": "exhausted", "error": "HTTP 503 from Metabase",
               "count": 2, "oldest": "2026-11-30T10:00:00.000Z", "newest": "2026-11-30T11:00:00.000Z"})
    );
    let filtered = mbprov(
        &prefix,
        &["dlq", "list", "--summary", "--class", "permanent"],
        None,
    )
    .await;
    assert!(filtered.ok, "{}", filtered.stderr);
    let lines: Vec<&str> = filtered.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", filtered.stdout);
    assert!(lines[0].starts_with("COUNT\tKIND"), "{}", lines[0]);
    assert_eq!(
        depth(b.channel(), &b.topology().dead()).await,
        5,
        "a summary moves nothing"
    );
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn an_edited_payload_is_validated_replayed_under_the_same_id_and_recorded() {
    let prefix = fresh_prefix();
    let _cleanup = cleanup_on_panic(&prefix, &[]);
    let b = broker(&prefix).await;
    let topo = b.topology().clone();
    // No id in the envelope: the job is named by the hash of its kind and payload, which the
    // new payload must not change.
    seed(
        &b,
        &[
            Letter {
                id: "",
                kind: "user.deactivated",
                class: "permanent",
                error: "payload.email: not an email address",
                failed_at: "2026-11-30T12:00:00.000Z",
                payload: json!({"email": "nope"}),
            },
            Letter {
                id: "other",
                kind: "user.deactivated",
                class: "permanent",
                error: "payload.email: not an email address",
                failed_at: "2026-11-30T12:00:00.000Z",
                payload: json!({"email": "also-nope"}),
            },
        ],
    )
    .await;
    let before = list(&mbprov(&prefix, &["dlq", "list", "--json"], None).await);
    let hash_id = before[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(hash_id.len(), 64);

    let refused = mbprov(
        &prefix,
        &["dlq", "replay", &hash_id, "--payload", "-"],
        Some(r#"{"email": "still wrong"}"#),
    )
    .await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("refused") && refused.stderr.contains("email"),
        "{}",
        refused.stderr
    );
    let unknown_field = mbprov(
        &prefix,
        &["dlq", "replay", &hash_id, "--payload", "-"],
        Some(r#"{"email": "ok@acme.test", "colour": "red"}"#),
    )
    .await;
    assert!(!unknown_field.ok, "{}", unknown_field.stdout);
    let not_object = mbprov(
        &prefix,
        &["dlq", "replay", &hash_id, "--payload", "-"],
        Some("[1]"),
    )
    .await;
    assert!(
        !not_object.ok && not_object.stderr.contains("JSON object"),
        "{}",
        not_object.stderr
    );
    let two_ids = mbprov(
        &prefix,
        &["dlq", "replay", &hash_id, "other", "--payload", "-"],
        Some("{}"),
    )
    .await;
    assert!(
        !two_ids.ok && two_ids.stderr.contains("exactly one ID"),
        "{}",
        two_ids.stderr
    );
    assert_eq!(
        depth(b.channel(), &topo.jobs_queue()).await,
        0,
        "a refused edit moves nothing"
    );
    let after = list(&mbprov(&prefix, &["dlq", "list", "--json"], None).await);
    assert_eq!(after, before, "the refused letters are where they were");

    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed.json");
    std::fs::write(&fixed, r#"{"email": "bob@acme.test"}"#).unwrap();
    let dry = mbprov(
        &prefix,
        &[
            "dlq",
            "replay",
            &hash_id,
            "--payload",
            fixed.to_str().unwrap(),
            "--dry-run",
        ],
        None,
    )
    .await;
    assert_eq!(
        dry.stdout.trim(),
        "would replay 1 (edited)",
        "{}",
        dry.stderr
    );
    let ok = mbprov(
        &prefix,
        &[
            "dlq",
            "replay",
            &hash_id,
            "--payload",
            fixed.to_str().unwrap(),
            "--by",
            "ada@ops",
        ],
        None,
    )
    .await;
    assert_eq!(ok.stdout.trim(), "replayed 1 (edited)", "{}", ok.stderr);

    let jobs = drain(b.channel(), &topo.jobs_queue()).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.routing_key.as_str(), "user.deactivated");
    let body: Value = serde_json::from_slice(&job.data).unwrap();
    assert_eq!(
        body,
        json!({"kind": "user.deactivated", "payload": {"email": "bob@acme.test"}, "id": hash_id})
    );
    assert_eq!(mbprov::queue::envelope_id(&job.data, None), hash_id);
    assert_eq!(
        header_str(job, headers::EDITED_BY).as_deref(),
        Some("ada@ops")
    );
    let edited_at = header_str(job, headers::EDITED_AT).unwrap();
    assert!(
        mbprov::queue::dead_letters::parse_time(&edited_at).is_some(),
        "{edited_at}"
    );
    assert_eq!(
        header_str(job, headers::ERROR_CLASS),
        None,
        "fresh attempt count"
    );
    assert_eq!(
        ids(&list(
            &mbprov(&prefix, &["dlq", "list", "--json"], None).await
        )),
        ["other"]
    );
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn a_queue_deeper_than_the_window_is_turned_once_in_order() {
    let prefix = fresh_prefix();
    let _cleanup = cleanup_on_panic(&prefix, &[]);
    let b = broker(&prefix).await;
    let topo = b.topology().clone();
    let names: Vec<String> = (0..23).map(|n| format!("job-{n:02}")).collect();
    let letters: Vec<Letter> = names
        .iter()
        .enumerate()
        .map(|(n, id)| Letter {
            id,
            kind: if n % 3 == 0 {
                "tenant.deleted"
            } else {
                "user.deactivated"
            },
            class: "permanent",
            error: "e",
            failed_at: "2026-11-30T12:00:00.000Z",
            payload: json!({"n": n}),
        })
        .collect();
    seed(&b, &letters).await;

    let window = ["--window", "4"];
    let all = listed(&prefix, &window).await;
    assert_eq!(all, names, "a full turn keeps the order");
    let out = mbprov(
        &prefix,
        &["dlq", "list", "--window", "4", "--limit", "3"],
        None,
    )
    .await;
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
    assert_eq!(
        listed(&prefix, &window).await,
        names,
        "a limited list turns the whole queue too"
    );

    let replay = mbprov(
        &prefix,
        &[
            "dlq",
            "replay",
            "--all",
            "--kind",
            "tenant.deleted",
            "--window",
            "4",
        ],
        None,
    )
    .await;
    assert_eq!(replay.stdout.trim(), "replayed 8", "{}", replay.stderr);
    let purge = mbprov(
        &prefix,
        &["dlq", "purge", "job-01", "job-22", "--window", "4"],
        None,
    )
    .await;
    assert_eq!(purge.stdout.trim(), "purged 2", "{}", purge.stderr);
    let left: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(n, id)| n % 3 != 0 && *id != "job-01" && *id != "job-22")
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(listed(&prefix, &window).await, left);
    assert_eq!(depth(b.channel(), &topo.jobs_queue()).await, 8);

    // A second reader while the first holds P.dead is refused rather than served half a queue.
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let _holder = ch
        .basic_consume(
            topo.dead().into(),
            "holder".into(),
            lapin::options::BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let busy = mbprov(&prefix, &["dlq", "list"], None).await;
    assert!(
        !busy.ok && busy.stderr.contains("one at a time"),
        "{}",
        busy.stderr
    );
    let _ = conn.close(200, "done".into()).await;
    b.close().await;
    teardown(&prefix).await;
}

//! `mbprov migrate-topology` against a real RabbitMQ 3.10: a prefix declared as mbprov's
//! topology version 1 declared it (classic retry tiers, `P.jobs` without at-least-once
//! dead-lettering), filled with work, waiting retries and dead letters, comes out as version 2
//! with every message where it belongs.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use lapin::options::{
    BasicConsumeOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use mbprov::config::RetryDelays;
use mbprov::queue::broker::publish_confirmed;
use mbprov::queue::retry::RetryPolicy;
use mbprov::queue::topology::Topology;
use mbprov::queue::{Broker, QueueError, headers};

use crate::queue_cli::mbprov;
use crate::queue_support::*;

const DELAYS_V1: &str = "30m,1h";

/// Every queue a migration test may leave under its prefix, besides the standard ones.
const MIGRATION_QUEUES: [&str; 6] = [
    "jobs.migrating",
    "retry.migrating",
    "retry.30m",
    "retry.1h",
    "retry.v2.30m",
    "retry.v2.1h",
];

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn topology_30m_1h(prefix: &str) -> Topology {
    Topology::new(
        prefix,
        RetryPolicy::new(&RetryDelays(vec![
            Duration::from_secs(1800),
            Duration::from_secs(3600),
        ])),
    )
}

/// Declares what mbprov's topology version 1 declared for `prefix` with tiers 30m and 1h.
async fn declare_v1(ch: &Channel, prefix: &str) {
    let durable_x = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let durable_q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dead = format!("{prefix}.dead");
    let jobs = format!("{prefix}.jobs");
    ch.exchange_declare(
        prefix.into(),
        ExchangeKind::Topic,
        durable_x,
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        dead.clone().into(),
        ExchangeKind::Fanout,
        durable_x,
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(dead.clone().into(), durable_q, FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        dead.clone().into(),
        dead.clone().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(5));
    args.insert("x-dead-letter-exchange".into(), text(&dead));
    ch.queue_declare(jobs.clone().into(), durable_q, args)
        .await
        .unwrap();
    ch.queue_bind(
        jobs.clone().into(),
        prefix.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for (name, ttl) in [("30m", 1_980_000), ("1h", 3_960_000)] {
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert("x-dead-letter-routing-key".into(), text(&jobs));
        ch.queue_declare(format!("{prefix}.retry.{name}").into(), durable_q, args)
            .await
            .unwrap();
    }
}

/// A job waiting in an old tier, as the version 1 worker put it there `ago` ago.
async fn waiting_retry(ch: &Channel, queue: &str, id: &str, expiration_ms: u64, ago: Duration) {
    let mut h = FieldTable::default();
    h.insert(headers::ROUTING_KEY.into(), text("user.upserted"));
    h.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(1));
    h.insert(
        headers::LAST_FAILED_AT.into(),
        text(&headers::rfc3339(SystemTime::now() - ago)),
    );
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(h)
        .with_expiration(expiration_ms.to_string().into());
    let body =
        format!(r#"{{"id":"{id}","kind":"user.upserted","payload":{{"email":"{id}@acme.test"}}}}"#);
    publish_confirmed(ch, "", queue, body.as_bytes(), props)
        .await
        .unwrap();
}

async fn exists(conn: &Connection, queue: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok();
    let _ = ch.close(200, "bye".into()).await;
    found
}

fn body_id(d: &lapin::message::Delivery) -> String {
    let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

async fn cleanup(conn: &Connection, prefix: &str) {
    let ch = conn.create_channel().await.unwrap();
    for q in [
        "jobs",
        "jobs.migrating",
        "retry.migrating",
        "dead",
        "retry.30m",
        "retry.1h",
        "retry.v2.30m",
        "retry.v2.1h",
    ] {
        let _ = ch
            .queue_delete(
                format!("{prefix}.{q}").into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    for x in [prefix.to_owned(), format!("{prefix}.dead")] {
        let _ = ch
            .exchange_delete(x.into(), ExchangeDeleteOptions::default())
            .await;
    }
}

#[tokio::test]
async fn a_version_1_prefix_migrates_to_version_2_without_losing_a_message() {
    let prefix = fresh_prefix();
    let _cleanup = cleanup_on_panic(&prefix, &MIGRATION_QUEUES);
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare_v1(&ch, &prefix).await;

    // Work waiting, retries waiting (one half-way through its wait), and dead letters.
    let props = || BasicProperties::default().with_delivery_mode(2);
    for n in 0..50 {
        let body = format!(
            r#"{{"id":"j-{n:02}","kind":"user.deactivated","payload":{{"email":"j{n}@acme.test"}}}}"#
        );
        publish_confirmed(&ch, &prefix, "user.deactivated", body.as_bytes(), props())
            .await
            .unwrap();
    }
    let tier_30m = format!("{prefix}.retry.30m");
    let tier_1h = format!("{prefix}.retry.1h");
    for n in 0..20 {
        waiting_retry(
            &ch,
            &tier_30m,
            &format!("r30-{n:02}"),
            1_800_000,
            Duration::from_secs(60),
        )
        .await;
    }
    for n in 0..10 {
        waiting_retry(
            &ch,
            &tier_1h,
            &format!("r1h-{n:02}"),
            3_600_000,
            Duration::from_secs(3000),
        )
        .await;
    }
    for n in 0..3 {
        let body = format!(r#"{{"id":"d-{n}","kind":"user.deactivated","payload":{{}}}}"#);
        publish_confirmed(
            &ch,
            &format!("{prefix}.dead"),
            "user.deactivated",
            body.as_bytes(),
            props(),
        )
        .await
        .unwrap();
    }

    // Today's commands refuse the old topology and say what to do.
    let status = mbprov(&prefix, &["status", "--retry-delays", DELAYS_V1], None).await;
    assert!(!status.ok);
    assert!(
        status.stderr.contains("mbprov migrate-topology"),
        "{}",
        status.stderr
    );
    let direct = Broker::connect(&amqp_url(), topology_30m_1h(&prefix)).await;
    assert!(
        matches!(direct, Err(QueueError::OutdatedTopology { .. })),
        "{:?}",
        direct.err()
    );

    // Not while a worker of the old version still consumes.
    let worker_ch = conn.create_channel().await.unwrap();
    worker_ch
        .basic_consume(
            format!("{prefix}.jobs").into(),
            "old-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let refused = mbprov(
        &prefix,
        &["migrate-topology", "--retry-delays", DELAYS_V1],
        None,
    )
    .await;
    assert!(
        !refused.ok && refused.stderr.contains("stop every worker"),
        "{}",
        refused.stderr
    );
    worker_ch.close(200, "stopped".into()).await.unwrap();
    eventually("the old worker's messages back in P.jobs", || async {
        (depth(&ch, &format!("{prefix}.jobs")).await == 50).then_some(())
    })
    .await;

    let migrated = mbprov(
        &prefix,
        &["migrate-topology", "--retry-delays", DELAYS_V1],
        None,
    )
    .await;
    assert!(migrated.ok, "{}", migrated.stderr);
    assert_eq!(
        migrated.stdout.trim(),
        format!(
            "migrated to topology version 2: moved 80 message(s) (20 from {tier_30m}, 10 from {tier_1h}, 50 from {prefix}.jobs)"
        )
    );

    // Version 2 declares cleanly now: P.jobs has the at-least-once arguments.
    let b = Broker::connect(&amqp_url(), topology_30m_1h(&prefix))
        .await
        .unwrap();
    let topo = b.topology().clone();
    for old in [
        &tier_30m,
        &tier_1h,
        &topo.staging_queue(),
        &topo.retry_holding_queue(),
    ] {
        assert!(!exists(&conn, old).await, "{old} should be gone");
    }
    assert_eq!(depth(b.channel(), &topo.dead()).await, 3);

    let jobs = drain(b.channel(), &topo.jobs_queue()).await;
    let ids: BTreeSet<String> = jobs.iter().map(body_id).collect();
    let want: BTreeSet<String> = (0..50).map(|n| format!("j-{n:02}")).collect();
    assert_eq!(ids, want, "every waiting job, once");
    for job in &jobs {
        assert_eq!(
            header_str(job, headers::ROUTING_KEY).as_deref(),
            Some("user.deactivated")
        );
    }

    let tiers = topo.policy().tiers().collect::<Vec<_>>();
    let in_30m = drain(b.channel(), &topo.retry_queue(tiers[0])).await;
    let in_1h = drain(b.channel(), &topo.retry_queue(tiers[1])).await;
    let ids_30m: BTreeSet<String> = in_30m.iter().map(body_id).collect();
    // The 1h tier's retries had 10 minutes left: they wait those in the 30m tier.
    let want_30m: BTreeSet<String> = (0..20)
        .map(|n| format!("r30-{n:02}"))
        .chain((0..10).map(|n| format!("r1h-{n:02}")))
        .collect();
    assert_eq!(ids_30m, want_30m);
    assert!(in_1h.is_empty());
    for d in &in_30m {
        let left: u64 = d
            .properties
            .expiration()
            .as_ref()
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        let want = if body_id(d).starts_with("r30") {
            1_740_000
        } else {
            600_000
        };
        assert!(
            left <= want && left > want - 60_000,
            "{} waits {left} ms",
            body_id(d)
        );
    }

    // Publishing reaches the new P.jobs; running it again changes nothing.
    publish_job(
        &b,
        "user.deactivated",
        &serde_json::json!({"kind": "user.deactivated", "payload": {}}),
    )
    .await;
    assert_eq!(depth(b.channel(), &topo.jobs_queue()).await, 1);
    let again = mbprov(
        &prefix,
        &["migrate-topology", "--retry-delays", DELAYS_V1],
        None,
    )
    .await;
    assert!(again.ok, "{}", again.stderr);
    assert_eq!(
        again.stdout.trim(),
        "topology is current (version 2); nothing to do"
    );
    assert_eq!(depth(b.channel(), &topo.jobs_queue()).await, 1);

    b.close().await;
    cleanup(&conn, &prefix).await;
    let _ = conn.close(200, "done".into()).await;
}

/// What version 2 relies on from RabbitMQ 3.10: a quorum tier honours a per-message
/// `expiration` shorter than its queue TTL (the jitter) and dead-letters the message into
/// `P.jobs` with the at-least-once arguments accepted.
#[tokio::test]
async fn a_quorum_tier_expires_each_message_on_its_own_expiration() {
    let prefix = fresh_prefix();
    let _cleanup = cleanup_on_panic(&prefix, &MIGRATION_QUEUES);
    let b = Broker::connect(&amqp_url(), topology_30m_1h(&prefix))
        .await
        .unwrap();
    let topo = b.topology().clone();
    let tier = topo.policy().tier_for(1);
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_expiration("50".into());
    b.publish(
        "",
        &topo.retry_queue(tier),
        br#"{"kind":"k","payload":{}}"#,
        props,
    )
    .await
    .unwrap();
    // The tier's own TTL is 33 minutes: only the message's 50 ms can bring it back this soon.
    eventually("the retry back in P.jobs", || async {
        (depth(b.channel(), &topo.jobs_queue()).await == 1).then_some(())
    })
    .await;
    let back = drain(b.channel(), &topo.jobs_queue()).await;
    assert_eq!(back[0].routing_key.as_str(), topo.jobs_queue());
    b.close().await;
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    cleanup(&conn, &prefix).await;
    let _ = conn.close(200, "done".into()).await;
}

/// A migration stopped after the old `P.jobs` was deleted (jobs staged, retries held, no work
/// queue) is finished by running it again.
#[tokio::test]
async fn an_interrupted_migration_is_finished_by_running_it_again() {
    let prefix = fresh_prefix();
    let _cleanup = cleanup_on_panic(&prefix, &MIGRATION_QUEUES);
    let topo = topology_30m_1h(&prefix);
    let b = Broker::connect_undeclared(&amqp_url(), topo.clone())
        .await
        .unwrap();
    topo.declare_exchanges_and_dead(b.channel()).await.unwrap();
    let staging = topo.staging_queue();
    topo.declare_work_queue(b.channel(), &staging)
        .await
        .unwrap();
    b.channel()
        .queue_bind(
            staging.clone().into(),
            prefix.clone().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for n in 0..5 {
        let body = format!(
            r#"{{"id":"s-{n}","kind":"user.deactivated","payload":{{"email":"s{n}@acme.test"}}}}"#
        );
        publish_confirmed(
            b.channel(),
            &prefix,
            "user.deactivated",
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let holding = topo.retry_holding_queue();
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), text("quorum"));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    b.channel()
        .queue_declare(holding.clone().into(), durable, quorum)
        .await
        .unwrap();
    for n in 0..3 {
        let mut h = FieldTable::default();
        h.insert(headers::ROUTING_KEY.into(), text("user.upserted"));
        h.insert("x-mbprov-migrating-expiration".into(), text("1800000"));
        h.insert(
            headers::LAST_FAILED_AT.into(),
            text(&headers::rfc3339(
                SystemTime::now() - Duration::from_secs(60),
            )),
        );
        let body = format!(
            r#"{{"id":"h-{n}","kind":"user.upserted","payload":{{"email":"h{n}@acme.test"}}}}"#
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(h);
        publish_confirmed(b.channel(), "", &holding, body.as_bytes(), props)
            .await
            .unwrap();
    }

    let out = mbprov(
        &prefix,
        &["migrate-topology", "--retry-delays", DELAYS_V1],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    assert!(!exists(&conn, &staging).await && !exists(&conn, &holding).await);
    let b = Broker::connect(&amqp_url(), topo.clone()).await.unwrap();
    let jobs = drain(b.channel(), &topo.jobs_queue()).await;
    let ids: BTreeSet<String> = jobs.iter().map(body_id).collect();
    assert_eq!(
        ids,
        (0..5).map(|n| format!("s-{n}")).collect::<BTreeSet<_>>()
    );
    assert_eq!(
        header_str(&jobs[0], headers::ROUTING_KEY).as_deref(),
        Some("user.deactivated")
    );
    let tier = topo.retry_queue(topo.policy().tier_for(1));
    let retries = drain(b.channel(), &tier).await;
    assert_eq!(retries.len(), 3);
    for d in &retries {
        let left: u64 = d
            .properties
            .expiration()
            .as_ref()
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        assert!((1_680_000..=1_740_000).contains(&left), "{left}");
        assert_eq!(header_str(d, "x-mbprov-migrating-expiration"), None);
    }
    publish_job(
        &b,
        "user.deactivated",
        &serde_json::json!({"kind": "user.deactivated", "payload": {}}),
    )
    .await;
    assert_eq!(
        depth(b.channel(), &topo.jobs_queue()).await,
        1,
        "P.jobs is bound again"
    );
    b.close().await;
    cleanup(&conn, &prefix).await;
    let _ = conn.close(200, "done".into()).await;
}

//! The worker loop against a real RabbitMQ: retries, dead letters, panics, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::queue_support::*;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use mbprov::error::ErrorClass;
use mbprov::queue::{Handler, IncomingJob, JobResult, headers};
use serde_json::json;

fn transient(msg: &str) -> JobResult {
    JobResult::Failed {
        class: ErrorClass::Transient,
        error: msg.into(),
    }
}

#[tokio::test]
async fn transient_failures_retry_with_growing_attempts_then_complete() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let (handler, calls) = TestHandler::new(|job: &IncomingJob| {
        if job.attempt <= 3 {
            transient("not yet")
        } else {
            JobResult::Done
        }
    });
    let worker = start_worker(worker_config(&prefix, 10), handler);
    publish_job(
        &b,
        "user.upserted",
        &json!({"id": "t1", "kind": "user.upserted", "payload": {}}),
    )
    .await;

    eventually("the fourth attempt", || {
        let n = calls.lock().unwrap().len();
        async move { (n >= 4).then_some(()) }
    })
    .await;
    let topo = b.topology().clone();
    eventually("the job acknowledged", || async {
        (depth(b.channel(), &topo.jobs_queue()).await == 0).then_some(())
    })
    .await;
    worker.stop().await;

    let seen = calls.lock().unwrap().clone();
    let attempts: Vec<u32> = seen.iter().map(|j| j.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3, 4]);
    // Retries come back through the default exchange; the original routing key survives.
    assert!(
        seen.iter().all(|j| j.routing_key == "user.upserted"),
        "{seen:?}"
    );
    assert_eq!(depth(b.channel(), &topo.dead()).await, 0);
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn permanent_failure_goes_to_dead_with_every_header() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let (handler, _calls) = TestHandler::new(|_: &IncomingJob| JobResult::Failed {
        class: ErrorClass::Permanent,
        error: "payload.email: missing".into(),
    });
    let worker = start_worker(worker_config(&prefix, 10), handler);
    let body = json!({"id": "p1", "kind": "user.upserted", "payload": {"x": 1}});
    publish_job(&b, "user.upserted", &body).await;
    let topo = b.topology().clone();
    eventually("a dead letter", || async {
        (depth(b.channel(), &topo.dead()).await == 1).then_some(())
    })
    .await;
    worker.stop().await;

    let dead = drain(b.channel(), &topo.dead()).await;
    let d = &dead[0];
    assert_eq!(d.routing_key.as_str(), "user.upserted");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&d.data).unwrap(),
        body
    );
    assert_eq!(
        header_str(d, headers::ERROR_CLASS).as_deref(),
        Some("permanent")
    );
    assert_eq!(
        header_str(d, headers::ERROR).as_deref(),
        Some("payload.email: missing")
    );
    assert_eq!(header_int(d, headers::ATTEMPTS), Some(1));
    for key in [headers::FIRST_FAILED_AT, headers::LAST_FAILED_AT] {
        let at = header_str(d, key).unwrap_or_default();
        assert!(humantime::parse_rfc3339(&at).is_ok(), "{key} = {at:?}");
    }
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn running_out_of_attempts_dead_letters_as_exhausted() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let (handler, calls) =
        TestHandler::new(|job: &IncomingJob| transient(&format!("down at {}", job.attempt)));
    let worker = start_worker(worker_config(&prefix, 3), handler);
    publish_job(
        &b,
        "tenant.created",
        &json!({"kind": "tenant.created", "payload": {}}),
    )
    .await;
    let topo = b.topology().clone();
    eventually("a dead letter", || async {
        (depth(b.channel(), &topo.dead()).await == 1).then_some(())
    })
    .await;
    worker.stop().await;

    assert_eq!(calls.lock().unwrap().len(), 3);
    let dead = drain(b.channel(), &topo.dead()).await;
    let d = &dead[0];
    assert_eq!(
        header_str(d, headers::ERROR_CLASS).as_deref(),
        Some("exhausted")
    );
    assert_eq!(header_str(d, headers::ERROR).as_deref(), Some("down at 3"));
    assert_eq!(header_int(d, headers::ATTEMPTS), Some(3));
    assert_eq!(d.routing_key.as_str(), "tenant.created");
    let first = header_str(d, headers::FIRST_FAILED_AT).unwrap();
    let last = header_str(d, headers::LAST_FAILED_AT).unwrap();
    assert!(first < last, "first {first} should precede last {last}");
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn a_panicking_handler_dead_letters_the_job_and_the_worker_goes_on() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let (handler, calls) = TestHandler::new(|job: &IncomingJob| {
        if job.body.windows(5).any(|w| w == b"boom!") {
            panic!("handler exploded");
        }
        JobResult::Done
    });
    let worker = start_worker(worker_config(&prefix, 10), handler);
    publish_job(&b, "k", &json!({"kind": "k", "payload": {"say": "boom!"}})).await;
    let topo = b.topology().clone();
    eventually("a dead letter", || async {
        (depth(b.channel(), &topo.dead()).await == 1).then_some(())
    })
    .await;

    publish_job(&b, "k", &json!({"kind": "k", "payload": {"say": "fine"}})).await;
    eventually("the next job", || {
        let n = calls.lock().unwrap().len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    eventually("the queue empty", || async {
        (depth(b.channel(), &topo.jobs_queue()).await == 0).then_some(())
    })
    .await;
    worker.stop().await;

    let dead = drain(b.channel(), &topo.dead()).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header_str(&dead[0], headers::ERROR_CLASS).as_deref(),
        Some("permanent")
    );
    let error = header_str(&dead[0], headers::ERROR).unwrap_or_default();
    assert!(error.starts_with("panicked: handler exploded"), "{error}");
    b.close().await;
    teardown(&prefix).await;
}

/// Blocks every job until released; records that it started.
struct Stuck {
    started: Arc<AtomicBool>,
}

impl Handler for Stuck {
    fn handle(
        &self,
        _job: IncomingJob,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = JobResult> + Send>> {
        self.started.store(true, Ordering::SeqCst);
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn shutdown_leaves_in_flight_jobs_for_redelivery() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let started = Arc::new(AtomicBool::new(false));
    let mut cfg = worker_config(&prefix, 10);
    cfg.shutdown_grace = Duration::from_millis(100);
    let worker = start_worker(
        cfg,
        Arc::new(Stuck {
            started: started.clone(),
        }),
    );
    publish_job(&b, "k", &json!({"id": "s1", "kind": "k", "payload": {}})).await;
    eventually("the handler to start", || {
        let s = started.load(Ordering::SeqCst);
        async move { s.then_some(()) }
    })
    .await;
    worker.stop().await;

    let topo = b.topology().clone();
    eventually("the job back in the queue", || async {
        (depth(b.channel(), &topo.jobs_queue()).await == 1).then_some(())
    })
    .await;
    let back = drain(b.channel(), &topo.jobs_queue()).await;
    assert!(back[0].redelivered);
    assert_eq!(depth(b.channel(), &topo.dead()).await, 0);
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn a_crash_looping_job_ends_in_dead_by_the_delivery_limit() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let topo = b.topology().clone();
    publish_job(&b, "k", &json!({"id": "crash", "kind": "k", "payload": {}})).await;

    // A consumer that returns the message on every delivery, as a crashing worker would.
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            topo.jobs_queue().into(),
            "crasher".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let returner = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(d)) = consumer.next().await {
            let _ = d
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    });
    eventually("the delivery limit", || async {
        (depth(b.channel(), &topo.dead()).await == 1).then_some(())
    })
    .await;
    let _ = conn.close(200, "done".into()).await;
    let _ = returner.await;

    let held = dead_letters(&b).await;
    assert_eq!(held.len(), 1);
    let letter = &held[0];
    assert_eq!(letter.id, "crash");
    assert_eq!(letter.kind, "k");
    assert_eq!(letter.note.class, headers::CLASS_DELIVERY_LIMIT);
    assert!(
        letter.note.error.contains(&topo.jobs_queue()),
        "{}",
        letter.note.error
    );
    b.close().await;
    teardown(&prefix).await;
}

#[tokio::test]
async fn the_worker_recovers_when_its_queue_vanishes() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let topo = b.topology().clone();
    let (handler, calls) = TestHandler::new(|_: &IncomingJob| JobResult::Done);
    let worker = start_worker(worker_config(&prefix, 10), handler);
    eventually("the worker consuming", || async {
        b.consumer_count().await.ok().filter(|&n| n == 1)
    })
    .await;

    // Deleting the queue cancels the consumer: the worker must reconnect and consume again.
    b.channel()
        .queue_delete(
            topo.jobs_queue().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    b.close().await;
    let b = broker(&prefix).await;
    eventually("the worker back", || async {
        b.consumer_count().await.ok().filter(|&n| n == 1)
    })
    .await;
    publish_job(&b, "k", &json!({"kind": "k", "payload": {}})).await;
    // At least once: a session lost again after the delivery (the broker still settling the
    // deleted queue) redelivers it, which is the contract, not a failure of recovery.
    eventually_within("the job handled", Duration::from_secs(60), || {
        let n = calls.lock().unwrap().len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    worker.stop().await;
    b.close().await;
    teardown(&prefix).await;
}

/// The pid of the connection whose client properties mention `needle`, via rabbitmqctl.
fn connection_pid(needle: &str) -> Option<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
}

#[tokio::test]
async fn the_worker_reconnects_after_the_broker_drops_its_connection() {
    if std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .arg("status")
        .output()
        .is_err()
    {
        eprintln!("skipped: rabbitmqctl is not available to drop a connection");
        return;
    }
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let (handler, calls) = TestHandler::new(|_: &IncomingJob| JobResult::Done);
    let worker = start_worker(worker_config(&prefix, 10), handler);
    let needle = format!("mbprov worker {prefix}");
    let pid = eventually("the worker's connection", || {
        let pid = connection_pid(&needle);
        async move { pid }
    })
    .await;
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", &pid, "test drop", "-q"])
        .status()
        .unwrap();
    assert!(closed.success());
    eventually("a new connection", || {
        let again = connection_pid(&needle).filter(|p| *p != pid);
        async move { again }
    })
    .await;
    publish_job(&b, "k", &json!({"kind": "k", "payload": {}})).await;
    // At least once: a session lost again after the delivery (the broker still settling the
    // deleted queue) redelivers it, which is the contract, not a failure of recovery.
    eventually_within("the job handled", Duration::from_secs(60), || {
        let n = calls.lock().unwrap().len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    worker.stop().await;
    b.close().await;
    teardown(&prefix).await;
}

/// Counts handlers running at once; each holds its slot for a moment so they overlap.
struct Overlap {
    now: Arc<std::sync::atomic::AtomicUsize>,
    max: Arc<std::sync::atomic::AtomicUsize>,
    done: Arc<std::sync::atomic::AtomicUsize>,
}

impl Handler for Overlap {
    fn handle(
        &self,
        _job: IncomingJob,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = JobResult> + Send>> {
        let (now, max, done) = (self.now.clone(), self.max.clone(), self.done.clone());
        Box::pin(async move {
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
            JobResult::Done
        })
    }
}

#[tokio::test]
async fn no_more_handlers_run_at_once_than_the_concurrency() {
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let overlap = Overlap {
        now: Default::default(),
        max: Default::default(),
        done: Default::default(),
    };
    let (max, done) = (overlap.max.clone(), overlap.done.clone());
    for i in 0..12 {
        publish_job(
            &b,
            "k",
            &json!({"id": format!("c{i}"), "kind": "k", "payload": {}}),
        )
        .await;
    }
    let mut cfg = worker_config(&prefix, 10);
    cfg.concurrency = 3;
    let worker = start_worker(cfg, Arc::new(overlap));
    eventually("every job", || {
        let n = done.load(Ordering::SeqCst);
        async move { (n == 12).then_some(()) }
    })
    .await;
    worker.stop().await;
    let max = max.load(Ordering::SeqCst);
    assert!((1..=3).contains(&max), "{max} handlers ran at once");
    b.close().await;
    teardown(&prefix).await;
}

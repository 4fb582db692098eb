//! The consumer under a closed intake gate, on the real broker: a job refused for its key goes
//! back to `P.jobs` untouched, as often as it takes, and is never dead-lettered, not even past
//! the quorum queue's delivery limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mbprov::error::ErrorClass;
use mbprov::intake::{Event, Intake};
use mbprov::queue::topology::DELIVERY_LIMIT;
use mbprov::queue::{IncomingJob, JobResult, run_gated_worker};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::queue_support::{
    TestHandler, broker, depth, eventually, fresh_prefix, publish_job, teardown, worker_config,
};

#[tokio::test]
async fn a_refused_key_sends_the_job_back_untouched_past_the_delivery_limit() {
    let refusals = (DELIVERY_LIMIT + 2) as usize;
    let prefix = fresh_prefix();
    let b = broker(&prefix).await;
    let topo = b.topology().clone();
    // The first `refusals` calls fail as a revoked key would.
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let (handler, calls) = TestHandler::new(move |job: &IncomingJob| {
        if counter.fetch_add(1, Ordering::SeqCst) < refusals {
            JobResult::Failed {
                class: ErrorClass::Authentication,
                error: format!("GET /api/user/{}: HTTP 401: Unauthenticated", job.attempt),
            }
        } else {
            JobResult::Done
        }
    });
    let intake = Intake::new();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_gated_worker(
        worker_config(&prefix, 2),
        handler,
        intake.clone(),
        shutdown.clone(),
    ));
    publish_job(
        &b,
        "user.upserted",
        &json!({"id": "k1", "kind": "user.upserted", "payload": {}}),
    )
    .await;

    for round in 1..=refusals {
        eventually(&format!("refusal {round} sent back"), || {
            let n = calls.lock().unwrap().len();
            let held = intake.state().authentication.is_some();
            let (b, q) = (&b, topo.jobs_queue());
            async move { (n >= round && held && depth(b.channel(), &q).await == 1).then_some(()) }
        })
        .await;
        // What the key probe does once Metabase accepts a key.
        intake.apply(Event::AuthHealed);
    }
    eventually("the job done with a working key", || {
        let n = calls.lock().unwrap().len();
        let (b, q) = (&b, topo.jobs_queue());
        async move { (n > refusals && depth(b.channel(), &q).await == 0).then_some(()) }
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("worker stops")
        .expect("worker task")
        .expect("worker result");

    let seen = calls.lock().unwrap().clone();
    assert_eq!(seen.len(), refusals + 1);
    assert!(
        seen.iter().all(|j| j.attempt == 1),
        "no attempt spent: {seen:?}"
    );
    assert!(
        seen.iter().all(|j| j.routing_key == "user.upserted"),
        "{seen:?}"
    );
    assert_eq!(
        depth(b.channel(), &topo.dead()).await,
        0,
        "nothing dead-lettered"
    );
    b.close().await;
    teardown(&prefix).await;
}

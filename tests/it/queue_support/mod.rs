//! Shared by the queue tests: a fresh prefix per test on the real broker, a worker with tiny
//! retry delays, raw reads of a queue, polling with a deadline, and teardown.
#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use mbprov::config::RetryDelays;
use mbprov::queue::retry::RetryPolicy;
use mbprov::queue::topology::Topology;
use mbprov::queue::{Broker, Handler, IncomingJob, JobResult, WorkerQueueConfig, run_worker};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const DELAYS: &str = "50ms,100ms";

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn fresh_prefix() -> String {
    format!("qtest-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn delays() -> RetryDelays {
    RetryDelays(vec![Duration::from_millis(50), Duration::from_millis(100)])
}

pub fn topology(prefix: &str) -> Topology {
    Topology::new(prefix, RetryPolicy::new(&delays()))
}

pub fn worker_config(prefix: &str, max_attempts: u32) -> WorkerQueueConfig {
    WorkerQueueConfig {
        amqp_url: amqp_url(),
        prefix: prefix.to_owned(),
        concurrency: 4,
        max_attempts,
        retry_delays: delays(),
        shutdown_grace: Duration::from_secs(5),
    }
}

pub async fn broker(prefix: &str) -> Broker {
    Broker::connect(&amqp_url(), topology(prefix))
        .await
        .expect("broker")
}

/// Deletes every queue and exchange of the prefix.
pub async fn teardown(prefix: &str) {
    let b = broker(prefix).await;
    let topo = b.topology().clone();
    for q in topo.queues() {
        let _ = b
            .channel()
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [topo.work_exchange(), topo.dead()] {
        let _ = b
            .channel()
            .exchange_delete(x.into(), ExchangeDeleteOptions::default())
            .await;
    }
    b.close().await;
}

/// Polls `check` until it returns `Some`, failing the test after 20 seconds.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(20), check).await
}

/// [`eventually`] with its own bound, for waits that include the worker's reconnect backoff
/// (exponential from 200 ms, so a few failed attempts under load can pass 20 seconds).
pub async fn eventually_within<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Messages waiting in `queue` (passive declare).
pub async fn depth(channel: &Channel, queue: &str) -> u32 {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .expect("passive declare")
        .message_count()
}

/// Takes (and acknowledges) everything in `queue`.
pub async fn drain(channel: &Channel, queue: &str) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(m) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .expect("basic.get")
    {
        m.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        out.push(m.delivery);
    }
    out
}

/// Every letter in `P.dead`, read with `dlq`'s own walk (which leaves them there).
pub async fn dead_letters(b: &Broker) -> Vec<mbprov::queue::dead_letters::DeadLetter> {
    use mbprov::queue::dead_letters::{Verdict, scan};
    let mut seen = Vec::new();
    scan(
        b,
        100,
        &mut |l| {
            seen.push(l.clone());
            Verdict::Keep
        },
        &mut |_| {},
    )
    .await
    .expect("read P.dead");
    seen
}

pub async fn publish_job(b: &Broker, kind: &str, body: &serde_json::Value) {
    let props = BasicProperties::default().with_delivery_mode(2);
    let bytes = serde_json::to_vec(body).expect("json");
    b.publish(&b.topology().work_exchange(), kind, &bytes, props)
        .await
        .expect("publish");
}

pub fn header_str(d: &Delivery, key: &str) -> Option<String> {
    let h = d.properties.headers().as_ref()?;
    match h.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

pub fn header_int(d: &Delivery, key: &str) -> Option<i64> {
    match d.properties.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some((*n).into()),
        _ => None,
    }
}

/// A handler written for the tests: a function of the job, recording every call.
pub struct TestHandler<F> {
    pub decide: F,
    pub calls: Arc<Mutex<Vec<IncomingJob>>>,
}

impl<F> TestHandler<F>
where
    F: Fn(&IncomingJob) -> JobResult + Send + Sync + 'static,
{
    pub fn new(decide: F) -> (Arc<Self>, Arc<Mutex<Vec<IncomingJob>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        (
            Arc::new(Self {
                decide,
                calls: calls.clone(),
            }),
            calls,
        )
    }
}

impl<F> Handler for TestHandler<F>
where
    F: Fn(&IncomingJob) -> JobResult + Send + Sync + 'static,
{
    fn handle(
        &self,
        job: IncomingJob,
    ) -> std::pin::Pin<Box<dyn Future<Output = JobResult> + Send + 'static>> {
        self.calls.lock().unwrap().push(job.clone());
        let result = (self.decide)(&job);
        Box::pin(async move { result })
    }
}

pub struct RunningWorker {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), mbprov::queue::QueueError>>,
}

pub fn start_worker(cfg: WorkerQueueConfig, handler: Arc<dyn Handler>) -> RunningWorker {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_worker(cfg, handler, shutdown.clone()));
    RunningWorker { shutdown, task }
}

impl RunningWorker {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("worker task")
            .expect("worker result");
    }
}

/// Deletes a test's queues and exchanges if the test panics before its own teardown, so a
/// failed run leaves nothing on the shared broker. Hold it for the whole test.
pub struct CleanupOnPanic {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

/// The guard for the standard topology of `prefix` plus `extra` queue suffixes
/// (`"retry.30m"`, `"jobs.migrating"`).
pub fn cleanup_on_panic(prefix: &str, extra: &[&str]) -> CleanupOnPanic {
    let mut guard = CleanupOnPanic::for_topology(&topology(prefix));
    guard
        .queues
        .extend(extra.iter().map(|s| format!("{prefix}.{s}")));
    guard
}

impl CleanupOnPanic {
    /// The guard for `topo`'s queues and exchanges.
    pub fn for_topology(topo: &Topology) -> CleanupOnPanic {
        CleanupOnPanic {
            queues: topo.queues(),
            exchanges: vec![topo.work_exchange(), topo.dead()],
        }
    }
}

impl Drop for CleanupOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        // A panicking test's runtime cannot be blocked on: clean up from a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let props = lapin::ConnectionProperties::default();
                let Ok(conn) = lapin::Connection::connect(&amqp_url(), props).await else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    for q in queues {
                        let _ = ch
                            .queue_delete(q.into(), QueueDeleteOptions::default())
                            .await;
                    }
                    for x in exchanges {
                        let _ = ch
                            .exchange_delete(x.into(), ExchangeDeleteOptions::default())
                            .await;
                    }
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        })
        .join();
    }
}

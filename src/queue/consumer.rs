//! The worker loop: consume `P.jobs`, run the handler on each delivery with bounded
//! concurrency, settle every delivery, survive broker outages, and stop gracefully.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::broker::{QueueError, amqp, confirm_channel, connect, redacted};
use super::headers;
use super::hold::{held_back, send_back};
use super::retry::RetryPolicy;
use super::settle::Settler;
use super::topology::Topology;
use super::{Handler, IncomingJob, JobResult};
use crate::config::{BrokerArgs, RetryDelays, WorkerArgs};
use crate::error::ErrorClass;
use crate::intake::{Event, GateState, Hold, Intake};

/// What the worker loop needs to know about the broker and its own limits.
#[derive(Clone, Debug)]
pub struct WorkerQueueConfig {
    pub amqp_url: String,
    pub prefix: String,
    /// Handler calls at once, and the AMQP prefetch.
    pub concurrency: u16,
    /// Attempts before a transiently failing job is dead-lettered as `exhausted`.
    pub max_attempts: u32,
    pub retry_delays: RetryDelays,
    /// How long in-flight handlers may run after shutdown is asked for.
    pub shutdown_grace: Duration,
}

impl WorkerQueueConfig {
    pub fn from_args(broker: &BrokerArgs, worker: &WorkerArgs) -> Self {
        Self {
            amqp_url: broker.amqp_url.clone(),
            prefix: broker.prefix.clone(),
            concurrency: worker.concurrency,
            max_attempts: worker.max_attempts,
            retry_delays: worker.retry_delays.clone(),
            shutdown_grace: worker.shutdown_grace,
        }
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, RetryPolicy::new(&self.retry_delays))
    }
}

/// [`run_gated_worker`] with an intake gate that nothing closes.
pub async fn run_worker(
    cfg: WorkerQueueConfig,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) -> Result<(), QueueError> {
    run_gated_worker(cfg, handler, Intake::new(), shutdown).await
}

/// Consumes jobs until `shutdown` is cancelled, then stops taking new ones, gives in-flight
/// handlers up to the grace period, leaves the rest unacknowledged (RabbitMQ redelivers them
/// when the channel closes) and returns `Ok`. A lost connection is re-established with
/// exponential backoff for as long as it takes; the loop returns an error only for a
/// configuration it can never satisfy (none today: every broker error is worth retrying).
///
/// While `intake` is closed the worker has no consumer on `P.jobs`: it cancels its
/// `basic.consume`, lets in-flight jobs finish, and puts the deliveries the broker had already
/// sent it back on the queue ([`super::hold`]); it consumes again when the gate opens.
pub async fn run_gated_worker(
    cfg: WorkerQueueConfig,
    handler: Arc<dyn Handler>,
    intake: Intake,
    shutdown: CancellationToken,
) -> Result<(), QueueError> {
    let topology = cfg.topology();
    // Slots and in-flight tasks outlive a connection: handlers started before an outage keep
    // their slot until they finish, so the concurrency bound holds across reconnects.
    let slots = Arc::new(Semaphore::new(usize::from(cfg.concurrency.max(1))));
    let mut inflight = JoinSet::new();
    loop {
        let open = || Session::open(&cfg, &topology);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times();
        let opened = open
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .notify(|e: &QueueError, wait| tracing::warn!(error = %e, ?wait, "broker unavailable, retrying"));
        let session = tokio::select! {
            _ = shutdown.cancelled() => break,
            session = opened => session?,
        };
        tracing::info!(url = %redacted(&cfg.amqp_url), queue = %topology.jobs_queue(), "connected to the broker");
        let mut session = session;
        let lost = session
            .consume(
                &cfg,
                &topology,
                &slots,
                &mut inflight,
                &handler,
                &intake,
                &shutdown,
            )
            .await;
        match lost {
            None => {
                session.stop(cfg.shutdown_grace, &mut inflight).await;
                return Ok(());
            }
            Some(reason) => {
                tracing::warn!(%reason, "lost the broker, reconnecting");
                session.close().await;
                // A session that fails at once (a channel error on every publish) must not spin.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    drain(cfg.shutdown_grace, &mut inflight).await;
    Ok(())
}

/// One connection's worth of consuming.
struct Session {
    connection: Connection,
    consume: Channel,
    publish: Channel,
    taking: Taking,
}

/// Whether the session has a consumer on `P.jobs`.
enum Taking {
    /// No consumer: intake is closed (or not opened yet).
    Idle,
    Consuming(Consumer),
    /// Cancelled: what the broker had already sent still comes, then the stream ends.
    Draining(Consumer),
}

impl Session {
    async fn open(cfg: &WorkerQueueConfig, topology: &Topology) -> Result<Self, QueueError> {
        let name = format!("mbprov worker {}", topology.work_exchange());
        let connection = connect(&cfg.amqp_url, &name).await?;
        let publish = confirm_channel(&connection).await?;
        topology.declare(&publish).await?;
        let consume = connection
            .create_channel()
            .await
            .map_err(|source| amqp("open a channel", source))?;
        consume
            .basic_qos(cfg.concurrency.max(1), BasicQosOptions::default())
            .await
            .map_err(|source| amqp("set the prefetch", source))?;
        Ok(Self {
            connection,
            consume,
            publish,
            taking: Taking::Idle,
        })
    }

    async fn start_consuming(&self, topology: &Topology) -> Result<Consumer, QueueError> {
        let tag = format!("mbprov-worker-{}", uuid::Uuid::new_v4());
        self.consume
            .basic_consume(
                topology.jobs_queue().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| amqp(&format!("consume {}", topology.jobs_queue()), source))
    }

    /// Asks the broker to stop sending; the consumer then drains.
    async fn stop_consuming(&mut self) -> Result<(), QueueError> {
        if let Taking::Consuming(consumer) = std::mem::replace(&mut self.taking, Taking::Idle) {
            let cancelled = self
                .consume
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await;
            self.taking = Taking::Draining(consumer);
            cancelled.map_err(|source| amqp("cancel the consumer", source))?;
        }
        Ok(())
    }

    /// Runs until shutdown (`None`) or until the session is lost (`Some(reason)`).
    #[allow(clippy::too_many_arguments)]
    async fn consume(
        &mut self,
        cfg: &WorkerQueueConfig,
        topology: &Topology,
        slots: &Arc<Semaphore>,
        inflight: &mut JoinSet<()>,
        handler: &Arc<dyn Handler>,
        intake: &Intake,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let settler = Arc::new(Settler {
            publish: self.publish.clone(),
            topology: topology.clone(),
            max_attempts: cfg.max_attempts,
        });
        let broken = CancellationToken::new();
        let mut gate = intake.subscribe();
        loop {
            let open = gate.borrow_and_update().is_open();
            match (&self.taking, open) {
                (Taking::Idle, true) => match self.start_consuming(topology).await {
                    Ok(consumer) => {
                        tracing::info!(queue = %topology.jobs_queue(), "intake open: consuming");
                        self.taking = Taking::Consuming(consumer);
                    }
                    Err(e) => return Some(e.to_string()),
                },
                (Taking::Consuming(_), false) => {
                    tracing::info!(holds = %gate.borrow().summary(), "intake closed: no new jobs; in-flight ones finish");
                    if let Err(e) = self.stop_consuming().await {
                        return Some(e.to_string());
                    }
                }
                _ => {}
            }
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                _ = broken.cancelled() => return Some("publishing a settled job failed".into()),
                Some(_) = inflight.join_next(), if !inflight.is_empty() => continue,
                changed = gate.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return None,
                },
                next = next_delivery(&mut self.taking) => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Some(e.to_string()),
                None if matches!(self.taking, Taking::Draining(_)) => {
                    self.taking = Taking::Idle;
                    continue;
                }
                None => return Some("the broker cancelled the consumer".into()),
            };
            let job = incoming_job(&delivery);
            // Sent before the broker saw the cancel, or while waiting: not started, so back.
            let mut hold = first_hold(&gate.borrow());
            let mut slot = None;
            if hold.is_none() {
                // While every slot is busy the gate may close (breaker, pause): waiting for a
                // slot must not keep the consumer alive, so a closing gate sends this delivery
                // back and the loop's top cancels the consumer.
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    acquired = slots.clone().acquire_owned() => match acquired {
                        Ok(acquired) => slot = Some(acquired),
                        Err(_) => return None,
                    },
                    closed = gate.wait_for(|g| !g.is_open()) => match closed {
                        Ok(state) => hold = first_hold(&state),
                        Err(_) => return None,
                    },
                }
                hold = hold.or_else(|| first_hold(&gate.borrow()));
            }
            match (hold, slot) {
                (Some(hold), _) => inflight.spawn(send_back_task(
                    delivery,
                    job,
                    hold,
                    settler.clone(),
                    broken.clone(),
                )),
                (None, Some(slot)) => inflight.spawn(process(
                    delivery,
                    job,
                    handler.clone(),
                    settler.clone(),
                    intake.clone(),
                    broken.clone(),
                    slot,
                )),
                // `wait_for` resolves only on a closed gate, which has a hold.
                (None, None) => return Some("the intake gate closed without a hold".into()),
            };
        }
    }

    /// Cancels the consumer, waits up to `grace` for in-flight handlers, then closes: whatever
    /// is still unacknowledged goes back to the queue.
    async fn stop(mut self, grace: Duration, inflight: &mut JoinSet<()>) {
        if let Err(e) = self.stop_consuming().await {
            tracing::warn!(error = %e, "cannot cancel the consumer");
        }
        drain(grace, inflight).await;
        self.close().await;
    }

    async fn close(self) {
        let _ = self.consume.close(200, "shutting down".into()).await;
        let _ = self.publish.close(200, "shutting down".into()).await;
        let _ = self.connection.close(200, "shutting down".into()).await;
    }
}

/// The next delivery of the current consumer; never resolves without one.
async fn next_delivery(taking: &mut Taking) -> Option<Result<Delivery, lapin::Error>> {
    match taking {
        Taking::Consuming(c) | Taking::Draining(c) => c.next().await,
        Taking::Idle => std::future::pending().await,
    }
}

/// The hold that closes the gate, if it is closed (the first, for the metric's label).
fn first_hold(gate: &GateState) -> Option<Hold> {
    gate.holds().first().copied()
}

/// Waits up to `grace` for in-flight jobs, then abandons the rest unacknowledged.
async fn drain(grace: Duration, inflight: &mut JoinSet<()>) {
    let all_done = async { while inflight.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all_done).await.is_err() {
        tracing::warn!(
            left = inflight.len(),
            "shutdown grace over, leaving jobs for redelivery"
        );
        inflight.abort_all();
        while inflight.join_next().await.is_some() {}
    }
}

fn incoming_job(delivery: &Delivery) -> IncomingJob {
    let headers = delivery.properties.headers().as_ref();
    let done = headers
        .and_then(|h| headers::get_u32(h, headers::ATTEMPTS))
        .unwrap_or(0);
    IncomingJob {
        body: delivery.data.clone(),
        routing_key: headers::original_routing_key(headers, delivery.routing_key.as_str()),
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string()),
        attempt: done.saturating_add(1),
        trace: crate::trace::Carrier::from_headers(headers),
    }
}

/// Aborts the handler task when the job is abandoned (shutdown grace over).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send_back_task(
    delivery: Delivery,
    job: IncomingJob,
    hold: Hold,
    settler: Arc<Settler>,
    broken: CancellationToken,
) {
    if let Err(e) = send_back(&settler.publish, &settler.topology, &delivery, &job, hold).await {
        tracing::warn!(error = %e, routing_key = %job.routing_key, "cannot put a job back; it stays in the queue");
        broken.cancel();
    }
}

async fn process(
    delivery: Delivery,
    job: IncomingJob,
    handler: Arc<dyn Handler>,
    settler: Arc<Settler>,
    intake: Intake,
    broken: CancellationToken,
    slot: OwnedSemaphorePermit,
) {
    // The handler runs in its own task so that a panic ends that task, not the worker.
    let for_handler = job.clone();
    let task = tokio::spawn(async move { handler.handle(for_handler).await });
    let _abort = AbortOnDrop(task.abort_handle());
    let result = match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => JobResult::Failed {
            class: ErrorClass::Permanent,
            error: format!("panicked: {}", panic_text(e.into_panic())),
        },
        Err(_) => return,
    };
    if let JobResult::Failed {
        class: ErrorClass::Authentication,
        error,
    } = &result
    {
        intake.apply(Event::AuthFailed(error.clone()));
    }
    if let Some(hold) = held_back(&result, &intake.state()) {
        drop(slot);
        send_back_task(delivery, job, hold, settler, broken).await;
        return;
    }
    if let Err(e) = settler.settle(&delivery, &job, &result).await {
        tracing::warn!(error = %e, routing_key = %job.routing_key, "cannot settle a job; it stays in the queue");
        broken.cancel();
    }
    drop(slot);
}

fn panic_text(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "a panic without a message".into(),
        },
    }
}

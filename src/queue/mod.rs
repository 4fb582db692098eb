//! AMQP: the topology, the consumer loop, retry tiers, dead letters and publishing.
//!
//! This module knows RabbitMQ and nothing of Metabase. The worker hands it a [`Handler`]; the
//! queue decides, from the handler's [`JobResult`] and the attempt count, whether a delivery is
//! acknowledged, delayed in a retry tier, or moved to the dead-letter queue.

use std::future::Future;
use std::pin::Pin;

use crate::error::ErrorClass;

/// One delivery, as the handler sees it.
#[derive(Clone, Debug)]
pub struct IncomingJob {
    pub body: Vec<u8>,
    /// The routing key it was published with (the envelope's kind, by convention).
    pub routing_key: String,
    /// The AMQP `message_id` property, the envelope id's fallback.
    pub message_id: Option<String>,
    /// 1 for the first attempt; retries and redeliveries count up.
    pub attempt: u32,
}

/// What running a job came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobResult {
    /// The effect is complete (or was already complete): acknowledge.
    Done,
    /// Retry later (transient) or dead-letter now (permanent). `error` must hold no secret.
    Failed { class: ErrorClass, error: String },
}

/// Runs one job. Implemented by the job layer; knows nothing of AMQP.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, job: IncomingJob)
    -> Pin<Box<dyn Future<Output = JobResult> + Send + 'static>>;
}

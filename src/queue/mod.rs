//! AMQP: the topology, the consumer loop, retry tiers, dead letters and publishing.
//!
//! This module knows RabbitMQ and nothing of Metabase. The worker hands it a [`Handler`]; the
//! queue decides, from the handler's [`JobResult`] and the attempt count, whether a delivery is
//! acknowledged, delayed in a retry tier, or moved to the dead-letter queue.

use std::future::Future;
use std::pin::Pin;

use crate::error::ErrorClass;

pub mod broker;
pub mod consumer;
pub mod dead_letters;
pub mod envelope_id;
pub mod headers;
pub mod hold;
pub mod migration;
pub mod retry;
pub mod settle;
pub mod topology;

pub use broker::{Broker, QueueError, QueueStats};
pub use consumer::{WorkerQueueConfig, run_gated_worker, run_worker};
pub use envelope_id::envelope_id;

/// One delivery, as the handler sees it.
#[derive(Clone, Debug)]
pub struct IncomingJob {
    pub body: Vec<u8>,
    /// The routing key it was published with (the envelope's kind, by convention).
    pub routing_key: String,
    /// The AMQP `message_id` property, the envelope id's fallback.
    pub message_id: Option<String>,
    /// 1 for the first attempt, then one more per retry (`x-mbprov-attempts` + 1). A delivery
    /// returned unacknowledged (a stopping or crashing worker) runs again with the same number;
    /// RabbitMQ's delivery limit on `P.jobs` bounds those.
    pub attempt: u32,
    /// The W3C trace context of the message (`traceparent`/`tracestate` headers), if any.
    pub trace: crate::trace::Carrier,
}

/// What running a job came to. A handler that panics counts as `Failed { Permanent }`.
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

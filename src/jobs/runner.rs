use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::error::{Classify, ErrorClass};
use crate::ops::metrics::{self, JobOutcome};
use crate::queue::{Handler, IncomingJob, JobResult};

use super::deadline::JobDeadlines;
use super::{Context, JobError, envelope};

/// The queue's [`Handler`]: parse, de-duplicate, run under a per-job lock, record.
#[derive(Clone)]
pub struct JobRunner {
    ctx: Arc<Context>,
    max_attempts: u32,
    abort_on_kind: Option<Arc<str>>,
    deadlines: Arc<JobDeadlines>,
}

impl JobRunner {
    pub fn new(ctx: Context, max_attempts: u32) -> Self {
        JobRunner {
            ctx: Arc::new(ctx),
            max_attempts,
            abort_on_kind: None,
            deadlines: Arc::new(JobDeadlines::default()),
        }
    }

    /// How long one run of each kind may take (see [`super::deadline`]).
    pub fn deadlines(mut self, deadlines: JobDeadlines) -> Self {
        self.deadlines = Arc::new(deadlines);
        self
    }

    /// Test hook: abort the whole process on a delivery with this routing key, to prove that
    /// the broker's delivery limit ends a crash loop (`MBPROV_TEST_ABORT_ON_KIND`).
    pub fn abort_on_kind(mut self, kind: Option<String>) -> Self {
        self.abort_on_kind = kind.filter(|k| !k.is_empty()).map(Arc::from);
        self
    }
}

impl Handler for JobRunner {
    fn handle(
        &self,
        job: IncomingJob,
    ) -> Pin<Box<dyn Future<Output = JobResult> + Send + 'static>> {
        let runner = self.clone();
        Box::pin(async move { runner.handle_one(job).await })
    }
}

impl JobRunner {
    async fn handle_one(&self, incoming: IncomingJob) -> JobResult {
        let started = Instant::now();
        if self.abort_on_kind.as_deref() == Some(incoming.routing_key.as_str()) {
            tracing::error!(routing_key = %incoming.routing_key, "MBPROV_TEST_ABORT_ON_KIND: aborting the process");
            std::process::abort();
        }
        let parsed = match envelope::parse(&incoming.body, incoming.message_id.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                let kind = kind_label(&incoming.routing_key);
                tracing::warn!(kind, routing_key = %incoming.routing_key, error = %e, "invalid message");
                metrics::job_finished(kind, JobOutcome::Dead, started.elapsed());
                return JobResult::Failed {
                    class: ErrorClass::Permanent,
                    error: format!("invalid message: {e}"),
                };
            }
        };
        let kind = parsed.job.kind();
        let span = tracing::info_span!(
            "job",
            job_id = %parsed.id,
            kind,
            tenant_id = parsed.job.tenant_id().unwrap_or("-"),
            attempt = incoming.attempt,
            trace_id = tracing::field::Empty,
            otel.kind = "consumer",
        );
        let metadata_trace_id = parsed
            .metadata
            .as_ref()
            .and_then(|m| m.get("trace_id"))
            .and_then(serde_json::Value::as_str);
        crate::trace::continue_trace(&span, &incoming.trace, metadata_trace_id);
        async {
            if let Some(meta) = &parsed.metadata {
                tracing::debug!(metadata = %serde_json::Value::Object(meta.clone()), "job metadata");
            }
            let (outcome, result) = match self.run_once(&parsed).await {
                Ok(Outcome::Done) => (JobOutcome::Done, JobResult::Done),
                Ok(Outcome::Duplicate) => (JobOutcome::Duplicate, JobResult::Done),
                Err(e) => {
                    let class = e.class();
                    let last = class == ErrorClass::Permanent || incoming.attempt >= self.max_attempts;
                    tracing::warn!(class = %class, error = %e, "job failed");
                    // A refused key is not the job's failure: it goes back untouched.
                    let outcome = if class == ErrorClass::Authentication {
                        JobOutcome::Returned
                    } else if last {
                        JobOutcome::Dead
                    } else {
                        JobOutcome::Retried
                    };
                    (outcome, JobResult::Failed { class, error: e.to_string() })
                }
            };
            if outcome == JobOutcome::Done {
                tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "job done");
            }
            metrics::job_finished(kind, outcome, started.elapsed());
            result
        }
        .instrument(span)
        .await
    }

    async fn run_once(&self, parsed: &envelope::ParsedJob) -> Result<Outcome, JobError> {
        let ctx = &self.ctx;
        if ctx.store.is_done(&parsed.id).await? {
            tracing::info!("job already completed; acknowledging without calling Metabase");
            return Ok(Outcome::Duplicate);
        }
        // Two replicas may hold the same job (a redelivery, a duplicate publish): one runs it,
        // the other retries later and then finds it done.
        let lock = ctx
            .store
            .lock(&format!("job:{}", parsed.id), ctx.entity_lock_ttl);
        let guard = lock
            .acquire(ctx.entity_lock_wait)
            .await
            .map_err(|e| JobError::NotYet(format!("job is running on another worker ({e})")))?;
        let result = async {
            if ctx.store.is_done(&parsed.id).await? {
                return Ok(Outcome::Duplicate);
            }
            // Inside the job lock, so an abandoned run still releases it below.
            let kind = parsed.job.kind();
            let deadline = self.deadlines.for_kind(kind);
            match tokio::time::timeout(deadline, super::run(ctx, &parsed.job)).await {
                Ok(result) => result?,
                Err(_) => {
                    metrics::job_deadline_exceeded(kind);
                    tracing::warn!(
                        deadline = %humantime::format_duration(deadline),
                        "job past its deadline: abandoned, it will be retried"
                    );
                    return Err(JobError::DeadlineExceeded(deadline));
                }
            }
            ctx.store.mark_done(&parsed.id).await?;
            Ok(Outcome::Done)
        }
        .await;
        if let Err(e) = guard.release().await {
            tracing::debug!(error = %e, "job lock release failed; it expires by itself");
        }
        result
    }
}

enum Outcome {
    Done,
    Duplicate,
}

/// A bounded label for metrics: a known kind, else `unknown`.
fn kind_label(routing_key: &str) -> &'static str {
    envelope::KINDS
        .iter()
        .find(|k| **k == routing_key)
        .copied()
        .unwrap_or("unknown")
}

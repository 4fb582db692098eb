//! The worker's Prometheus metrics (CONTRACT.md section 7), named in this file only.
//!
//! Callers record events through the functions below and never spell a metric name. Every
//! series whose labels are known in advance is registered at zero by [`install`], so dashboards
//! and alerts see it from the first scrape rather than after the first event.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

const JOBS_TOTAL: &str = "mbprov_jobs_total";
const JOB_DURATION: &str = "mbprov_job_duration_seconds";
const RETRIES_TOTAL: &str = "mbprov_retries_total";
const DEAD_LETTERED_TOTAL: &str = "mbprov_dead_lettered_total";
const METABASE_REQUESTS_TOTAL: &str = "mbprov_metabase_requests_total";
const GRAPH_WRITES_TOTAL: &str = "mbprov_graph_writes_total";
const GRAPH_CONFLICTS_TOTAL: &str = "mbprov_graph_write_conflicts_total";
const LOCK_WAIT: &str = "mbprov_lock_wait_seconds";
const JOB_DEADLINE_EXCEEDED_TOTAL: &str = "mbprov_job_deadline_exceeded_total";
const INTAKE_OPEN: &str = "mbprov_intake_open";
const INTAKE_CLOSED: &str = "mbprov_intake_closed";
const JOBS_RETURNED: &str = "mbprov_jobs_returned_total";
const INTAKE_PROBES: &str = "mbprov_intake_probes_total";
const BUDGET_WAIT: &str = "mbprov_metabase_budget_wait_seconds";

/// Why intake can be closed: the `reason` label of the intake series (a fixed set).
const HOLDS: &[&str] = &["paused", "authentication", "breaker"];

/// The probes that re-open intake by themselves.
const PROBES: &[&str] = &["authentication", "breaker"];

/// The job kinds of CONTRACT.md section 4. Any other kind is recorded as `unknown`, so a flood
/// of malformed envelopes cannot create unbounded label values.
pub const JOB_KINDS: &[&str] = crate::jobs::envelope::KINDS;

/// The permission graphs whose writes are counted.
pub const GRAPHS: &[&str] = &["data", "collection"];

/// The HTTP methods the Metabase client uses; their `status="200"` series start at zero.
const METABASE_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];

/// Jobs take from milliseconds (a duplicate) to minutes (a large `users.synced`).
const JOB_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Uncontended locks take a round trip; contended ones up to the configured lock wait.
const LOCK_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// How a job's processing ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobOutcome {
    /// Its effect is complete.
    Done,
    /// It failed transiently and was moved to a retry queue.
    Retried,
    /// It failed permanently or ran out of attempts and was moved to the dead-letter queue.
    Dead,
    /// Its id had already completed; it was acknowledged without running.
    Duplicate,
    /// Metabase refused the key: the job goes back to the queue without spending an attempt.
    Returned,
}

impl JobOutcome {
    pub const ALL: [JobOutcome; 5] = [
        JobOutcome::Done,
        JobOutcome::Retried,
        JobOutcome::Dead,
        JobOutcome::Duplicate,
        JobOutcome::Returned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Done => "done",
            JobOutcome::Retried => "retried",
            JobOutcome::Dead => "dead",
            JobOutcome::Duplicate => "duplicate",
            JobOutcome::Returned => "returned",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot configure the Prometheus recorder: {0}")]
    Build(#[from] BuildError),
    #[error("another metrics recorder is already installed in this process")]
    OtherRecorderInstalled,
}

/// The handle of the recorder this module installed, so a second call returns it.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the process-wide Prometheus recorder, registers every metric at zero and starts a
/// background thread that keeps histogram memory bounded. Later calls return the same handle.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets(JOB_DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(LOCK_WAIT.to_owned()), LOCK_WAIT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(BUDGET_WAIT.to_owned()), LOCK_WAIT_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::OtherRecorderInstalled)?;
    describe_and_zero();
    spawn_upkeep(handle.clone());
    *installed = Some(handle.clone());
    Ok(handle)
}

fn describe_and_zero() {
    describe_counter!(JOBS_TOTAL, "Jobs processed, by kind and outcome.");
    describe_histogram!(
        JOB_DURATION,
        "Time from receiving a job to its outcome, by kind."
    );
    describe_counter!(
        RETRIES_TOTAL,
        "Jobs moved to a retry queue after a transient failure."
    );
    describe_counter!(DEAD_LETTERED_TOTAL, "Jobs moved to the dead-letter queue.");
    describe_counter!(
        METABASE_REQUESTS_TOTAL,
        "Requests sent to Metabase, by method and response status (`error` when none came back)."
    );
    describe_counter!(
        GRAPH_WRITES_TOTAL,
        "Permission graph writes that Metabase accepted."
    );
    describe_counter!(
        GRAPH_CONFLICTS_TOTAL,
        "Permission graph writes refused with 409 because another writer changed the revision."
    );
    describe_histogram!(LOCK_WAIT, "Time spent waiting to take a Redis lock.");
    describe_counter!(
        JOB_DEADLINE_EXCEEDED_TOTAL,
        "Job runs abandoned past their kind's deadline (then retried), by kind."
    );

    for kind in JOB_KINDS {
        for outcome in JobOutcome::ALL {
            counter!(JOBS_TOTAL, "kind" => *kind, "outcome" => outcome.as_str()).absolute(0);
        }
        // Registering a histogram is enough for it to render with empty buckets.
        let _ = histogram!(JOB_DURATION, "kind" => *kind);
        counter!(JOB_DEADLINE_EXCEEDED_TOTAL, "kind" => *kind).absolute(0);
    }
    counter!(RETRIES_TOTAL).absolute(0);
    counter!(DEAD_LETTERED_TOTAL).absolute(0);
    for method in METABASE_METHODS {
        counter!(METABASE_REQUESTS_TOTAL, "method" => *method, "status" => "200").absolute(0);
    }
    for graph in GRAPHS {
        counter!(GRAPH_WRITES_TOTAL, "graph" => *graph).absolute(0);
        counter!(GRAPH_CONFLICTS_TOTAL, "graph" => *graph).absolute(0);
    }
    let _ = histogram!(LOCK_WAIT);
    describe_intake();
}

fn describe_intake() {
    describe_gauge!(
        INTAKE_OPEN,
        "1 while this worker takes jobs, 0 while its intake is closed (see mbprov_intake_closed)."
    );
    describe_gauge!(
        INTAKE_CLOSED,
        "1 while intake is held for this reason: paused, authentication or breaker."
    );
    describe_counter!(
        JOBS_RETURNED,
        "Jobs put back on the work queue without spending an attempt, by the hold that caused it."
    );
    describe_counter!(
        INTAKE_PROBES,
        "Probes of Metabase while intake is held, by probe and result (ok, failed)."
    );
    describe_histogram!(
        BUDGET_WAIT,
        "Time a request to Metabase waited for the fleet's budget (MBPROV_METABASE_RPS)."
    );
    gauge!(INTAKE_OPEN).set(1.0);
    for hold in HOLDS {
        gauge!(INTAKE_CLOSED, "reason" => *hold).set(0.0);
        counter!(JOBS_RETURNED, "reason" => *hold).absolute(0);
    }
    for probe in PROBES {
        for result in ["ok", "failed"] {
            counter!(INTAKE_PROBES, "probe" => *probe, "result" => result).absolute(0);
        }
    }
    let _ = histogram!(BUDGET_WAIT);
}

/// Without scrapes, histogram samples would pile up until the next render; fold them regularly.
/// A plain thread, because the recorder outlives any one async runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_PERIOD);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // Scrapes still fold samples, so metrics stay correct; only idle memory grows.
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
}

/// Bounded label value for a job kind.
fn kind_label(kind: &str) -> &'static str {
    JOB_KINDS
        .iter()
        .copied()
        .find(|k| *k == kind)
        .unwrap_or("unknown")
}

/// A job reached its outcome after `elapsed`. Does not count retries or dead letters: the queue
/// layer records those with [`retried`] and [`dead_lettered`] when it moves the message.
pub fn job_finished(kind: &str, outcome: JobOutcome, elapsed: Duration) {
    let kind = kind_label(kind);
    counter!(JOBS_TOTAL, "kind" => kind, "outcome" => outcome.as_str()).increment(1);
    histogram!(JOB_DURATION, "kind" => kind).record(elapsed.as_secs_f64());
}

/// A job was moved to a retry queue.
pub fn retried() {
    counter!(RETRIES_TOTAL).increment(1);
}

/// A job was moved to the dead-letter queue.
pub fn dead_lettered() {
    counter!(DEAD_LETTERED_TOTAL).increment(1);
}

/// A request to Metabase finished with `status`, or with no response at all (`None`: connection
/// error or timeout).
pub fn metabase_request(method: &str, status: Option<u16>) {
    let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
    counter!(METABASE_REQUESTS_TOTAL, "method" => method.to_ascii_uppercase(), "status" => status)
        .increment(1);
}

/// Metabase accepted a write of `graph` (`data` or `collection`).
pub fn graph_write(graph: &str) {
    counter!(GRAPH_WRITES_TOTAL, "graph" => graph.to_owned()).increment(1);
}

/// Metabase refused a write of `graph` with a revision conflict (409).
pub fn graph_conflict(graph: &str) {
    counter!(GRAPH_CONFLICTS_TOTAL, "graph" => graph.to_owned()).increment(1);
}

/// A run of a job of `kind` was abandoned past its deadline.
pub fn job_deadline_exceeded(kind: &str) {
    counter!(JOB_DEADLINE_EXCEEDED_TOTAL, "kind" => kind_label(kind)).increment(1);
}

/// Time spent taking a lock, whether it was taken or the wait ran out.
pub fn lock_waited(elapsed: Duration) {
    histogram!(LOCK_WAIT).record(elapsed.as_secs_f64());
}

/// The holds now closing intake (empty: open). Labels outside the fixed set are ignored.
pub fn intake_state(holds: &[crate::intake::Hold]) {
    gauge!(INTAKE_OPEN).set(if holds.is_empty() { 1.0 } else { 0.0 });
    for hold in crate::intake::Hold::ALL {
        let closed = if holds.contains(&hold) { 1.0 } else { 0.0 };
        gauge!(INTAKE_CLOSED, "reason" => hold.as_str()).set(closed);
    }
}

/// A job went back to the work queue because of `hold`, without spending an attempt.
pub fn job_returned(hold: crate::intake::Hold) {
    counter!(JOBS_RETURNED, "reason" => hold.as_str()).increment(1);
}

/// A probe of Metabase (`authentication` or `breaker`) ended.
pub fn intake_probe(probe: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!(INTAKE_PROBES, "probe" => probe, "result" => result).increment(1);
}

/// A request waited this long for the fleet's budget.
pub fn budget_waited(elapsed: Duration) {
    histogram!(BUDGET_WAIT).record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_labels_are_bounded() {
        let cases = [
            ("tenant.created", "tenant.created"),
            ("permissions.applied", "permissions.applied"),
            ("tenant.exploded", "unknown"),
            ("", "unknown"),
        ];
        for (kind, expected) in cases {
            assert_eq!(kind_label(kind), expected, "{kind:?}");
        }
    }

    #[test]
    fn outcome_labels() {
        let labels: Vec<_> = JobOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels, ["done", "retried", "dead", "duplicate", "returned"]);
    }
}

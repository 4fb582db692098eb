//! What each worker tells `mbprov status` about its intake: one Redis key per worker,
//! `P:intake:worker:<id>`, rewritten on every change and every [`PERIOD`], expiring after
//! [`TTL`], so a worker that is gone drops out of `status` by itself.

use std::time::{Duration, SystemTime};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{GateState, Intake};

pub const PERIOD: Duration = Duration::from_secs(5);
pub const TTL: Duration = Duration::from_secs(15);

/// One worker's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: String,
    /// `open`, or the holds: `paused`, `authentication`, `breaker`.
    pub intake: Vec<String>,
    /// The holds with their causes (`open` when none).
    pub detail: String,
    /// `MBPROV_METABASE_RPS` as this worker applies it.
    pub metabase_rps: Option<f64>,
    /// RFC 3339.
    pub updated_at: String,
}

impl WorkerReport {
    pub fn new(worker: &str, state: &GateState, rps: Option<f64>, now: SystemTime) -> Self {
        let holds = state.holds();
        WorkerReport {
            worker: worker.to_owned(),
            intake: if holds.is_empty() {
                vec!["open".into()]
            } else {
                holds.iter().map(|h| h.as_str().to_owned()).collect()
            },
            detail: state.summary(),
            metabase_rps: rps,
            updated_at: crate::queue::headers::rfc3339(now),
        }
    }
}

fn pattern(prefix: &str) -> String {
    format!("{prefix}:intake:worker:*")
}

/// This process's name in the reports: host, pid and a random part (pids repeat in containers).
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..6])
}

/// Writes this worker's report until `shutdown`, then removes it.
pub async fn publish(
    mut conn: ConnectionManager,
    prefix: String,
    worker: String,
    intake: Intake,
    rps: Option<f64>,
    shutdown: CancellationToken,
) {
    let key = format!("{prefix}:intake:worker:{worker}");
    let mut gate = intake.subscribe();
    loop {
        let report = WorkerReport::new(&worker, &intake.state(), rps, SystemTime::now());
        if let Ok(text) = serde_json::to_string(&report) {
            let written: Result<(), _> = conn.set_ex(&key, text, TTL.as_secs()).await;
            if let Err(e) = written {
                tracing::debug!(error = %e, "cannot write the intake report");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = gate.changed() => {}
            _ = tokio::time::sleep(PERIOD) => {}
        }
    }
    let _: Result<i64, _> = conn.del(&key).await;
}

/// Every live worker's report, by worker name.
pub async fn read_all(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> Result<Vec<WorkerReport>, redis::RedisError> {
    let mut keys: Vec<String> = Vec::new();
    {
        let mut iter = conn.scan_match::<_, String>(pattern(prefix)).await?;
        while let Some(k) = iter.next_item().await {
            keys.push(k?);
        }
    }
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let raw: Option<String> = conn.get(&key).await?;
        if let Some(report) = raw.and_then(|r| serde_json::from_str(&r).ok()) {
            out.push(report);
        }
    }
    Ok(out)
}

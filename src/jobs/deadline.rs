//! How long one run of a job may take before it is abandoned and retried later.
//!
//! Nothing else bounds a job: a slow, erroring Metabase answers every request just inside the
//! HTTP timeout and the client retries, so one job could hold its locks and a worker slot for
//! tens of minutes. Past its deadline a run is dropped (the graph writer finishes or abandons
//! the write it was given on its own, under its own lock) and the job fails transiently.
//! Abandoning is safe because every step of every job is idempotent or looks up before it
//! creates (see `Directory`), so the retry finishes what the abandoned run started.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::parse_duration;

/// Deadline per job kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobDeadlines {
    default: Duration,
    per_kind: BTreeMap<String, Duration>,
}

impl Default for JobDeadlines {
    fn default() -> Self {
        JobDeadlines::new(Duration::from_secs(120))
    }
}

impl JobDeadlines {
    pub fn new(default: Duration) -> Self {
        JobDeadlines {
            default,
            per_kind: BTreeMap::new(),
        }
    }

    /// Overrides for some kinds, from `kind=duration,kind=duration`.
    pub fn with_overrides(mut self, overrides: &KindDeadlines) -> Self {
        self.per_kind.extend(overrides.0.clone());
        self
    }

    pub fn for_kind(&self, kind: &str) -> Duration {
        self.per_kind.get(kind).copied().unwrap_or(self.default)
    }
}

/// `MBPROV_JOB_DEADLINES`: `users.synced=10m,permissions.applied=5m`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindDeadlines(pub BTreeMap<String, Duration>);

/// A deadline: a positive duration (`90s`, `2m`).
pub fn parse_deadline(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("a job deadline must be positive".into());
    }
    Ok(d)
}

/// `kind=duration` pairs, comma-separated; every kind must be one the worker runs.
pub fn parse_kind_deadlines(s: &str) -> Result<KindDeadlines, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((kind, duration)) = part.split_once('=') else {
            return Err(format!("{part:?} is not kind=duration"));
        };
        let kind = kind.trim();
        if !super::envelope::KINDS.contains(&kind) {
            return Err(format!(
                "unknown kind {kind:?} (known: {})",
                super::envelope::KINDS.join(", ")
            ));
        }
        out.insert(kind.to_string(), parse_deadline(duration)?);
    }
    Ok(KindDeadlines(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_per_kind_with_a_default() {
        let d = JobDeadlines::new(parse_deadline("2m").unwrap()).with_overrides(
            &parse_kind_deadlines("users.synced=10m, permissions.applied = 5m").unwrap(),
        );
        let cases = [
            ("tenant.created", 120),
            ("user.upserted", 120),
            ("users.synced", 600),
            ("permissions.applied", 300),
        ];
        for (kind, secs) in cases {
            assert_eq!(d.for_kind(kind), Duration::from_secs(secs), "{kind}");
        }
        assert_eq!(parse_kind_deadlines("").unwrap(), KindDeadlines::default());
        for bad in [
            "users.synced",
            "tenant.exploded=1m",
            "users.synced=soon",
            "users.synced=0s",
        ] {
            assert!(parse_kind_deadlines(bad).is_err(), "{bad}");
        }
        assert!(parse_deadline("0s").is_err());
    }
}

//! The fleet-wide budget for Metabase (`MBPROV_METABASE_RPS`) and the client hook that applies
//! it and feeds the breaker.
//!
//! The budget is a token bucket of depth one shared by every worker of a prefix, kept in Redis
//! as a "theoretical arrival time" (GCRA): each request atomically reserves the next free slot
//! (slots are `1/RPS` apart, on Redis's clock) and waits until its slot. Requests never fail
//! because of the budget, they wait; and as nothing is saved up while idle, the fleet never
//! bursts above the cap either. One Redis round trip per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;

use super::breaker::Breaker;
use super::{Event, Intake};
use crate::metabase::{RequestGate, RequestOutcome};

/// Reserves the next slot; answers how many microseconds to wait for it. Redis's own clock,
/// so the workers' clocks need not agree. The key expires once its slot is past.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local slot = math.max(tat, now)
local next_tat = slot + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.floor((next_tat - now) / 1000) + 1000)
return slot - now
";

/// A request budget of `rps` requests per second for every worker of a prefix together.
pub struct FleetBudget {
    conn: ConnectionManager,
    key: String,
    interval_us: u64,
    script: redis::Script,
    /// While Redis does not answer: this process alone keeps to the cap.
    local_tat: Mutex<Option<Instant>>,
    degraded: AtomicBool,
}

/// `MBPROV_METABASE_RPS`: a positive number of requests per second, fractions allowed.
pub fn parse_rps(s: &str) -> Result<f64, String> {
    let rps: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of requests per second"))?;
    if !(rps.is_finite() && rps > 0.0 && rps <= 1_000_000.0) {
        return Err(format!(
            "{s:?}: requests per second must be above 0 and at most 1000000"
        ));
    }
    Ok(rps)
}

impl FleetBudget {
    pub fn new(conn: ConnectionManager, prefix: &str, rps: f64) -> Self {
        FleetBudget {
            conn,
            key: format!("{prefix}:intake:budget"),
            interval_us: (1_000_000.0 / rps).round().max(1.0) as u64,
            script: redis::Script::new(RESERVE),
            local_tat: Mutex::new(None),
            degraded: AtomicBool::new(false),
        }
    }

    /// How long the next request must wait.
    async fn reserve(&self) -> Duration {
        let mut conn = self.conn.clone();
        let reserved: Result<i64, _> = self
            .script
            .key(&self.key)
            .arg(self.interval_us)
            .invoke_async(&mut conn)
            .await;
        match reserved {
            Ok(us) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "Metabase budget: Redis answers again, back to the fleet-wide bucket"
                    );
                }
                Duration::from_micros(us.max(0) as u64)
            }
            Err(e) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Metabase budget: Redis does not answer; this worker keeps to the cap on its own until it does");
                }
                self.reserve_locally()
            }
        }
    }

    fn reserve_locally(&self) -> Duration {
        let now = Instant::now();
        let mut tat = self
            .local_tat
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = tat.map_or(now, |t| t.max(now));
        *tat = Some(slot + Duration::from_micros(self.interval_us));
        slot - now
    }
}

/// The worker's [`RequestGate`]: waits for the budget, then feeds each outcome to the breaker.
pub struct MetabaseGate {
    budget: Option<FleetBudget>,
    /// `None`: the breaker is switched off (`MBPROV_BREAKER=off`).
    breaker: Option<Arc<Mutex<Breaker>>>,
    intake: Intake,
}

impl MetabaseGate {
    pub fn new(budget: Option<FleetBudget>, breaker: bool, intake: Intake) -> Self {
        MetabaseGate {
            budget,
            breaker: breaker.then(|| Arc::new(Mutex::new(Breaker::default()))),
            intake,
        }
    }

    /// The breaker, for the probe that closes it.
    pub fn breaker(&self) -> Option<Arc<Mutex<Breaker>>> {
        self.breaker.clone()
    }
}

impl RequestGate for MetabaseGate {
    fn admit(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(budget) = &self.budget else { return };
            let started = Instant::now();
            let wait = budget.reserve().await;
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            crate::ops::metrics::budget_waited(started.elapsed());
        })
    }

    fn record(&self, outcome: RequestOutcome) {
        let Some(breaker) = &self.breaker else { return };
        let opened = breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(Instant::now(), outcome);
        if let Some(detail) = opened {
            self.intake.apply(Event::BreakerOpened(detail));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rps_must_be_positive_and_finite() {
        let table: &[(&str, Option<f64>)] = &[
            ("20", Some(20.0)),
            (" 0.5 ", Some(0.5)),
            ("1e3", Some(1000.0)),
            ("0", None),
            ("-1", None),
            ("NaN", None),
            ("inf", None),
            ("fast", None),
            ("", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_rps(input).ok(), *want, "{input:?}");
        }
    }
}

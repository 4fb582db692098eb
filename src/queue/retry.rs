//! When a transiently failed job runs again: the pure retry policy behind the retry tiers.
//!
//! With the default delays (`5s,30s,2m,10m,1h`, see [`crate::config::RetryDelays`]) a job that
//! keeps failing waits, after its 1st, 2nd, 3rd, 4th failed attempt, 5 seconds, 30 seconds,
//! 2 minutes, 10 minutes, and 1 hour after every later one. With the default 10 attempts the job
//! is dead-lettered as `exhausted` after about 5 hours 13 minutes of waiting
//! (5s + 30s + 2m + 10m + 5 × 1h = 5h 12m 35s, each wait ±10 %).
//!
//! The schedule counts failed attempts, not deliveries: a delivery that is left unacknowledged by
//! a stopping worker does not move the job further along its schedule.
//!
//! Jitter (±10 %) is kept apart from the base curve. A tier is a queue whose TTL is fixed at
//! declaration, so the jitter cannot come from the queue; it comes from the per-message
//! `expiration` the publisher sets, drawn in `[0.9, 1.1] × base`. The tier's queue TTL is the
//! ceiling `1.1 × base`. RabbitMQ only expires the message at the head of a queue, so a short
//! expiration can wait behind a longer one published earlier; since every message of a tier
//! expires within `1.1 × base` of its publication, that wait never takes a message past the
//! ceiling either: each wait stays within `[0.9, 1.1] × base`.
//!
//! The jitter is an input (a fraction in `[-1, 1]` that the caller draws), as River takes its
//! clock as an input, so tests are exact.

use std::time::Duration;

use crate::config::RetryDelays;

/// How far a wait may stray from its tier's base delay, either way.
pub const JITTER: f64 = 0.10;

/// One retry tier: a delay queue that holds a failed job for about `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryTier {
    /// Position in the schedule, 0 for the wait after the first failed attempt.
    pub index: usize,
    /// The delay the tier is named after.
    pub base: Duration,
}

impl RetryTier {
    /// The queue-level `x-message-ttl`: the longest a message may wait in this tier.
    pub fn queue_ttl(&self) -> Duration {
        self.base.mul_f64(1.0 + JITTER)
    }

    /// The per-message `expiration` for a jitter fraction in `[-1, 1]` (clamped): the base
    /// delay moved by up to ±10 %, never beyond [`RetryTier::queue_ttl`], never below 1 ms.
    pub fn expiration(&self, jitter_fraction: f64) -> Duration {
        let fraction = jitter_fraction.clamp(-1.0, 1.0);
        let wait = self.base.mul_f64(1.0 + JITTER * fraction);
        wait.min(self.queue_ttl()).max(Duration::from_millis(1))
    }
}

/// The schedule of retry tiers, from the configured delays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    delays: Vec<Duration>,
}

impl RetryPolicy {
    /// Empty delay lists are refused by the configuration parser; this falls back to one
    /// 5-second tier rather than failing, so a policy always has a tier.
    pub fn new(delays: &RetryDelays) -> Self {
        let delays = if delays.0.is_empty() {
            vec![Duration::from_secs(5)]
        } else {
            delays.0.clone()
        };
        Self { delays }
    }

    /// Every tier, in schedule order (the topology declares one queue per tier).
    pub fn tiers(&self) -> impl Iterator<Item = RetryTier> + '_ {
        self.delays
            .iter()
            .enumerate()
            .map(|(index, &base)| RetryTier { index, base })
    }

    /// The tier a job waits in after its `attempt`-th attempt failed (1-based). Attempts past
    /// the last tier reuse the last one, which caps the wait.
    pub fn tier_for(&self, attempt: u32) -> RetryTier {
        let last = self.delays.len() - 1;
        let index = (attempt.max(1) as usize - 1).min(last);
        RetryTier {
            index,
            base: self.delays[index],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn default_policy() -> RetryPolicy {
        RetryPolicy::new(&RetryDelays(vec![
            secs(5),
            secs(30),
            secs(120),
            secs(600),
            secs(3600),
        ]))
    }

    #[test]
    fn schedule_follows_the_configured_delays_then_caps_at_the_last() {
        let policy = default_policy();
        let table = [
            (0, 5),
            (1, 5),
            (2, 30),
            (3, 120),
            (4, 600),
            (5, 3600),
            (6, 3600),
            (9, 3600),
            (u32::MAX, 3600),
        ];
        for (attempt, want) in table {
            assert_eq!(
                policy.tier_for(attempt).base,
                secs(want),
                "attempt {attempt}"
            );
        }
        assert_eq!(policy.tier_for(7).index, 4);
    }

    #[test]
    fn default_schedule_waits_about_five_hours_over_ten_attempts() {
        let policy = default_policy();
        let total: Duration = (1..10).map(|a| policy.tier_for(a).base).sum();
        assert_eq!(total, secs(5 * 3600 + 12 * 60 + 35));
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_under_the_queue_ttl() {
        let tier = RetryTier {
            index: 0,
            base: secs(10),
        };
        assert_eq!(tier.queue_ttl(), Duration::from_millis(11_000));
        let table = [
            (-1.0, 9_000),
            (-0.5, 9_500),
            (0.0, 10_000),
            (0.5, 10_500),
            (1.0, 11_000),
            (-7.0, 9_000),
            (3.0, 11_000),
        ];
        for (fraction, want_ms) in table {
            let got = tier.expiration(fraction);
            assert_eq!(got.as_millis(), want_ms, "fraction {fraction}");
            assert!(got <= tier.queue_ttl());
        }
    }

    #[test]
    fn tiny_delays_never_expire_at_zero() {
        let tier = RetryTier {
            index: 0,
            base: Duration::from_millis(1),
        };
        assert_eq!(tier.expiration(-1.0), Duration::from_millis(1));
    }

    #[test]
    fn tiers_are_listed_in_order() {
        let bases: Vec<u64> = default_policy().tiers().map(|t| t.base.as_secs()).collect();
        assert_eq!(bases, vec![5, 30, 120, 600, 3600]);
    }
}

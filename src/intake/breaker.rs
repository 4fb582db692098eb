//! The circuit breaker: when most recent requests to Metabase fail, stop taking jobs instead
//! of letting every job spend its retries on a Metabase that is down.
//!
//! Precisely: a request *fails* when it timed out, got no answer, or was answered 5xx or 429
//! (any other answer, 4xx included, shows a Metabase that works). The breaker keeps the
//! outcomes of the last [`WINDOW`] requests of this process that are younger than
//! [`MAX_AGE`], and opens when at least [`MIN_REQUESTS`] of them are known and more than half
//! failed. While open it records nothing; a probe (see [`super::probe`]) closes it, and the
//! window starts empty again. Each worker has its own breaker: they all see the same Metabase.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::metabase::RequestOutcome;

/// Outcomes remembered.
pub const WINDOW: usize = 20;
/// Outcomes needed before the breaker may open: two or three failed calls (each call tries up to
/// four times), never one unlucky request.
pub const MIN_REQUESTS: usize = 10;
/// Outcomes older than this are forgotten: yesterday's failures say nothing about now.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// Whether an outcome counts as a failure of Metabase.
pub fn is_failure(outcome: RequestOutcome) -> bool {
    match outcome {
        RequestOutcome::TimedOut | RequestOutcome::Unreachable => true,
        RequestOutcome::Answered(status) => status >= 500 || status == 429,
    }
}

#[derive(Debug, Default)]
pub struct Breaker {
    outcomes: VecDeque<(Instant, bool)>,
    open: bool,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Records one outcome; `Some(detail)` when this one opens the breaker.
    pub fn record(&mut self, now: Instant, outcome: RequestOutcome) -> Option<String> {
        if self.open {
            return None;
        }
        self.outcomes.push_back((now, is_failure(outcome)));
        while self.outcomes.len() > WINDOW {
            self.outcomes.pop_front();
        }
        while self
            .outcomes
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > MAX_AGE)
        {
            self.outcomes.pop_front();
        }
        let known = self.outcomes.len();
        let failed = self.outcomes.iter().filter(|(_, f)| *f).count();
        if known >= MIN_REQUESTS && failed * 2 > known {
            self.open = true;
            return Some(format!(
                "{failed} of the last {known} requests failed (5xx, 429, timeout or no answer)"
            ));
        }
        None
    }

    /// A probe succeeded: close, and forget what happened before.
    pub fn close(&mut self) {
        self.open = false;
        self.outcomes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestOutcome::{Answered, TimedOut, Unreachable};

    #[test]
    fn failures_are_5xx_429_timeouts_and_silence() {
        let table = [
            (Answered(200), false),
            (Answered(204), false),
            (Answered(400), false),
            (Answered(401), false),
            (Answered(404), false),
            (Answered(409), false),
            (Answered(429), true),
            (Answered(500), true),
            (Answered(503), true),
            (TimedOut, true),
            (Unreachable, true),
        ];
        for (outcome, failure) in table {
            assert_eq!(is_failure(outcome), failure, "{outcome:?}");
        }
    }

    /// `pattern`: `F` failure, `o` success, one request per millisecond.
    fn run(pattern: &str) -> (Option<usize>, Breaker) {
        let start = Instant::now();
        let mut b = Breaker::default();
        let mut opened_at = None;
        for (i, c) in pattern.chars().enumerate() {
            let outcome = if c == 'F' {
                Answered(503)
            } else {
                Answered(200)
            };
            let now = start + Duration::from_millis(i as u64);
            if b.record(now, outcome).is_some() {
                opened_at.get_or_insert(i);
            }
        }
        (opened_at, b)
    }

    #[test]
    fn opens_when_most_of_enough_recent_requests_failed() {
        let table: &[(&str, Option<usize>)] = &[
            ("", None),
            // Fewer than ten known: never.
            ("FFFFFFFFF", None),
            ("FFFFFFFFFF", Some(9)),
            // Exactly half is not most.
            ("oooooFFFFF", None),
            ("oooooFFFFFF", Some(10)),
            // A healthy history of twenty dilutes failures until they are the majority.
            ("oooooooooooooooooooo FFFFFFFFFF", None),
            ("ooooooooooooooooooooFFFFFFFFFFF", Some(30)),
            ("oFoFoFoFoFoFoFoFoFoF", None),
        ];
        for (pattern, want) in table {
            let pattern = pattern.replace(' ', "");
            assert_eq!(run(&pattern).0, *want, "{pattern}");
        }
    }

    #[test]
    fn old_failures_are_forgotten_and_closing_starts_afresh() {
        let start = Instant::now();
        let mut b = Breaker::default();
        for i in 0..9 {
            assert!(
                b.record(start + Duration::from_millis(i), TimedOut)
                    .is_none()
            );
        }
        // Ten failures, but nine are older than a minute.
        let later = start + MAX_AGE + Duration::from_secs(1);
        assert!(b.record(later, Unreachable).is_none());
        let (opened, mut b) = run("FFFFFFFFFF");
        assert_eq!(opened, Some(9));
        assert!(b.is_open());
        assert!(
            b.record(Instant::now(), Answered(500)).is_none(),
            "open records nothing"
        );
        b.close();
        assert!(!b.is_open());
        assert!(
            b.record(Instant::now(), Answered(500)).is_none(),
            "one failure after closing"
        );
    }
}

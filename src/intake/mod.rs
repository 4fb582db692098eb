//! Intake control: whether this worker takes new jobs now, and if not, why.
//!
//! Three holds close one gate: an operator's pause (stored in Redis, [`pause`]), a key that
//! Metabase refuses ([`probe`] waits for a working one), and the circuit breaker ([`breaker`],
//! fed by every request through [`budget::MetabaseGate`]). The consumer watches the gate: while
//! it is closed it takes no delivery, and jobs that fail because of a hold go back to the queue
//! without spending an attempt. [`GateState`] is the pure part; [`Intake`] shares it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub mod breaker;
pub mod budget;
pub mod pause;
pub mod probe;
pub mod report;

/// An operator's pause, as stored in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseInfo {
    pub reason: Option<String>,
    /// RFC 3339.
    pub since: String,
}

/// Why the gate is closed; the `reason` label of the intake metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hold {
    Paused,
    Authentication,
    Breaker,
}

impl Hold {
    pub const ALL: [Hold; 3] = [Hold::Paused, Hold::Authentication, Hold::Breaker];

    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Paused => "paused",
            Hold::Authentication => "authentication",
            Hold::Breaker => "breaker",
        }
    }
}

/// The gate: open unless at least one hold is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GateState {
    pub paused: Option<PauseInfo>,
    /// Metabase's refusal, e.g. `GET /api/user/3: HTTP 401: Unauthenticated`.
    pub authentication: Option<String>,
    /// What the breaker saw, e.g. `12 of the last 14 requests failed`.
    pub breaker: Option<String>,
}

/// A change to the gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Paused(PauseInfo),
    Resumed,
    AuthFailed(String),
    AuthHealed,
    BreakerOpened(String),
    BreakerClosed,
}

/// What `/readyz` answers for a gate state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Ready (200), but taking no jobs by an operator's choice.
    Paused(String),
    /// Not ready (503), with the cause.
    NotReady(String),
}

impl GateState {
    pub fn is_open(&self) -> bool {
        self.holds().is_empty()
    }

    pub fn holds(&self) -> Vec<Hold> {
        let mut out = Vec::new();
        if self.paused.is_some() {
            out.push(Hold::Paused);
        }
        if self.authentication.is_some() {
            out.push(Hold::Authentication);
        }
        if self.breaker.is_some() {
            out.push(Hold::Breaker);
        }
        out
    }

    /// Applies `event`; whether anything changed.
    pub fn apply(&mut self, event: Event) -> bool {
        let before = self.clone();
        match event {
            Event::Paused(info) => self.paused = Some(info),
            Event::Resumed => self.paused = None,
            // The first refusal names the cause; later ones say the same.
            Event::AuthFailed(detail) => {
                self.authentication.get_or_insert(detail);
            }
            Event::AuthHealed => self.authentication = None,
            Event::BreakerOpened(detail) => {
                self.breaker.get_or_insert(detail);
            }
            Event::BreakerClosed => self.breaker = None,
        }
        *self != before
    }

    /// A refused key or a failing Metabase is not ready: the worker cannot do its work. A
    /// pause is ready: it is the operator's choice, and a 503 would make Kubernetes hold
    /// rollouts and node drains (unready pods count against PodDisruptionBudgets) for a fleet
    /// that is fine.
    pub fn readiness(&self) -> Readiness {
        let mut faults = Vec::new();
        if let Some(detail) = &self.authentication {
            faults.push(format!(
                "authentication: Metabase refuses the API key ({detail}); intake stopped until a probe succeeds"
            ));
        }
        if let Some(detail) = &self.breaker {
            faults.push(format!(
                "breaker: Metabase keeps failing ({detail}); intake stopped until a probe succeeds"
            ));
        }
        if !faults.is_empty() {
            return Readiness::NotReady(faults.join("; "));
        }
        match &self.paused {
            Some(p) => Readiness::Paused(pause_text(p)),
            None => Readiness::Ready,
        }
    }

    /// One line for logs and `status`: `open`, or the holds with their causes.
    pub fn summary(&self) -> String {
        if self.is_open() {
            return "open".into();
        }
        let mut parts = Vec::new();
        if let Some(p) = &self.paused {
            parts.push(pause_text(p));
        }
        if let Some(d) = &self.authentication {
            parts.push(format!("authentication: {d}"));
        }
        if let Some(d) = &self.breaker {
            parts.push(format!("breaker: {d}"));
        }
        parts.join("; ")
    }
}

fn pause_text(p: &PauseInfo) -> String {
    match &p.reason {
        Some(r) => format!("paused since {}: {r}", p.since),
        None => format!("paused since {}", p.since),
    }
}

/// The shared gate of one worker process. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    tx: Arc<watch::Sender<GateState>>,
}

impl Default for Intake {
    fn default() -> Self {
        Self::new()
    }
}

impl Intake {
    pub fn new() -> Self {
        let intake = Intake {
            tx: Arc::new(watch::Sender::new(GateState::default())),
        };
        crate::ops::metrics::intake_state(&[]);
        intake
    }

    pub fn state(&self) -> GateState {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<GateState> {
        self.tx.subscribe()
    }

    /// Applies `event`, and on a change logs it and updates the metrics.
    pub fn apply(&self, event: Event) {
        let logged = event.clone();
        let mut after = None;
        self.tx.send_if_modified(|state| {
            let changed = state.apply(event);
            if changed {
                after = Some(state.clone());
            }
            changed
        });
        let Some(state) = after else { return };
        crate::ops::metrics::intake_state(&state.holds());
        match logged {
            Event::AuthFailed(detail) => tracing::error!(
                error = %detail,
                "Metabase refuses the API key: intake stopped, jobs go back to the queue; probing, and re-reading METABASE_API_KEY_FILE on each probe"
            ),
            Event::AuthHealed => tracing::info!("Metabase accepts the API key again"),
            Event::BreakerOpened(detail) => tracing::error!(
                %detail,
                "circuit breaker open: Metabase keeps failing; intake stopped, probing"
            ),
            Event::BreakerClosed => {
                tracing::info!("circuit breaker closed: Metabase answers again")
            }
            Event::Paused(p) => {
                tracing::warn!(reason = p.reason.as_deref().unwrap_or("-"), since = %p.since, "paused by an operator: taking no new jobs")
            }
            Event::Resumed => tracing::info!("resumed by an operator"),
        }
        if state.is_open() {
            tracing::info!("intake open: taking jobs");
        } else {
            tracing::info!(holds = %state.summary(), "intake closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(reason: Option<&str>) -> PauseInfo {
        PauseInfo {
            reason: reason.map(str::to_owned),
            since: "2026-12-01T20:00:00Z".into(),
        }
    }

    #[test]
    fn the_gate_follows_its_holds() {
        use Event::*;
        // (events from an open gate, open afterwards, holds, readiness kind)
        let table: Vec<(Vec<Event>, bool, Vec<Hold>, &str)> = vec![
            (vec![], true, vec![], "ready"),
            (
                vec![Paused(pause(Some("upgrade")))],
                false,
                vec![Hold::Paused],
                "paused",
            ),
            (vec![Paused(pause(None)), Resumed], true, vec![], "ready"),
            (
                vec![AuthFailed("401".into())],
                false,
                vec![Hold::Authentication],
                "not-ready",
            ),
            (
                vec![AuthFailed("401".into()), AuthHealed],
                true,
                vec![],
                "ready",
            ),
            (
                vec![BreakerOpened("9 of 10".into())],
                false,
                vec![Hold::Breaker],
                "not-ready",
            ),
            (
                vec![BreakerOpened("x".into()), BreakerClosed],
                true,
                vec![],
                "ready",
            ),
            (
                vec![Paused(pause(None)), AuthFailed("401".into())],
                false,
                vec![Hold::Paused, Hold::Authentication],
                "not-ready",
            ),
            (
                vec![Paused(pause(None)), AuthFailed("401".into()), AuthHealed],
                false,
                vec![Hold::Paused],
                "paused",
            ),
            (
                vec![
                    AuthFailed("a".into()),
                    BreakerOpened("b".into()),
                    AuthHealed,
                ],
                false,
                vec![Hold::Breaker],
                "not-ready",
            ),
            (
                vec![Resumed, AuthHealed, BreakerClosed],
                true,
                vec![],
                "ready",
            ),
        ];
        for (events, open, holds, readiness) in table {
            let mut s = GateState::default();
            for e in events.clone() {
                s.apply(e);
            }
            assert_eq!(s.is_open(), open, "{events:?}");
            assert_eq!(s.holds(), holds, "{events:?}");
            let kind = match s.readiness() {
                Readiness::Ready => "ready",
                Readiness::Paused(_) => "paused",
                Readiness::NotReady(_) => "not-ready",
            };
            assert_eq!(kind, readiness, "{events:?}");
        }
    }

    #[test]
    fn the_first_refusal_is_kept_and_repeats_change_nothing() {
        let mut s = GateState::default();
        assert!(s.apply(Event::AuthFailed("first".into())));
        assert!(!s.apply(Event::AuthFailed("second".into())));
        assert_eq!(s.authentication.as_deref(), Some("first"));
        assert!(!s.apply(Event::BreakerClosed));
    }

    #[test]
    fn readiness_names_the_cause() {
        let mut s = GateState::default();
        s.apply(Event::Paused(pause(Some("Metabase upgrade"))));
        assert_eq!(
            s.readiness(),
            Readiness::Paused("paused since 2026-12-01T20:00:00Z: Metabase upgrade".into())
        );
        s.apply(Event::AuthFailed(
            "GET /api/user/current: HTTP 401: Unauthenticated".into(),
        ));
        match s.readiness() {
            Readiness::NotReady(text) => {
                assert!(text.starts_with("authentication: "), "{text}");
                assert!(text.contains("HTTP 401"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(s.summary().contains("Metabase upgrade"));
    }
}

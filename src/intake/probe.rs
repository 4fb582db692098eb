//! The probes that re-open the gate by themselves: one for a refused key, one for the breaker.
//! Each waits for its hold, then tries with exponential backoff until Metabase says yes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::breaker::Breaker;
use super::{Event, GateState, Intake};
use crate::error::{Classify, ErrorClass};
use crate::metabase::{ApiKey, Auth, MetabaseClient, MetabaseError};

/// Probe delays: from half a second up to `max` (`MBPROV_PROBE_MAX_DELAY`).
fn delays(max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// What an authenticated probe found.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// The key works and belongs to a superuser.
    Accepted,
    /// Refused (401/403), or it works but no longer for an administrator.
    Refused(String),
    /// No verdict: Metabase did not answer properly.
    Unknown(String),
}

/// `GET /api/user/current`: any authenticated caller may read it and nobody else
/// (../shared/metabase-api.md, users table: "`GET /api/user/current` | any | 200 | 401"), unlike
/// `/api/session/properties` and `/api/health`, which answer without credentials. An API key
/// acts as its own internal user, whose `is_superuser` says whether it is still an
/// Administrators key.
pub async fn check_key(mb: &MetabaseClient) -> KeyCheck {
    match mb.get::<serde_json::Value>("/api/user/current", &[]).await {
        Ok(user) if user["is_superuser"].as_bool() == Some(true) => KeyCheck::Accepted,
        Ok(_) => KeyCheck::Refused(
            "GET /api/user/current: the key works but is not an Administrators key".into(),
        ),
        Err(e) => classify(e),
    }
}

fn classify(e: MetabaseError) -> KeyCheck {
    match e.class() {
        ErrorClass::Authentication => KeyCheck::Refused(e.to_string()),
        _ => KeyCheck::Unknown(e.to_string()),
    }
}

/// Where the key comes from, so each probe can read it again.
#[derive(Clone, Debug)]
pub struct KeySource {
    pub file: Option<PathBuf>,
}

impl KeySource {
    /// The key the file holds now; `None` without a file (or an unreadable or empty one: the
    /// client keeps its key, and the probe says so).
    fn read(&self) -> Option<ApiKey> {
        let file = self.file.as_ref()?;
        match std::fs::read_to_string(file) {
            Ok(text) if !text.trim().is_empty() => Some(ApiKey::new(text)),
            Ok(_) => {
                tracing::warn!(file = %file.display(), "METABASE_API_KEY_FILE is empty; keeping the current key");
                None
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read METABASE_API_KEY_FILE; keeping the current key");
                None
            }
        }
    }
}

/// Waits for `hold` to be set in the gate; false on shutdown.
async fn wait_for(
    gate: &mut watch::Receiver<GateState>,
    hold: impl Fn(&GateState) -> bool,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        r = gate.wait_for(|s| hold(s)) => r.is_ok(),
    }
}

/// While Metabase refuses the key: re-read the key file, swap the key in, probe; heal the
/// gate on the first probe that Metabase accepts.
pub async fn heal_authentication(
    mb: MetabaseClient,
    source: KeySource,
    intake: Intake,
    max_delay: Duration,
    shutdown: CancellationToken,
) {
    let mut gate = intake.subscribe();
    while wait_for(&mut gate, |s| s.authentication.is_some(), &shutdown).await {
        for delay in delays(max_delay) {
            if let Some(key) = source.read() {
                mb.set_auth(Auth::ApiKey(key));
            }
            let check = check_key(&mb).await;
            crate::ops::metrics::intake_probe("authentication", check == KeyCheck::Accepted);
            match check {
                KeyCheck::Accepted => {
                    intake.apply(Event::AuthHealed);
                    break;
                }
                KeyCheck::Refused(why) => {
                    tracing::error!(error = %why, next_probe_in = ?delay, "Metabase still refuses the API key")
                }
                KeyCheck::Unknown(why) => {
                    tracing::warn!(error = %why, next_probe_in = ?delay, "key probe without a verdict")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// While the breaker is open: probe `GET /api/health` (no credentials, cheap; 200 once
/// Metabase serves again, ../shared/metabase-api.md section 9) and close it on the first 200.
pub async fn close_breaker(
    mb: MetabaseClient,
    breaker: Arc<Mutex<Breaker>>,
    intake: Intake,
    max_delay: Duration,
    shutdown: CancellationToken,
) {
    let mut gate = intake.subscribe();
    while wait_for(&mut gate, |s| s.breaker.is_some(), &shutdown).await {
        for delay in delays(max_delay) {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let healthy = mb.health().await;
            crate::ops::metrics::intake_probe("breaker", healthy.is_ok());
            match healthy {
                Ok(_) => {
                    breaker
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .close();
                    intake.apply(Event::BreakerClosed);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "breaker probe: Metabase still failing"),
            }
        }
    }
}

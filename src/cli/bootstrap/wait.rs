//! Waiting for a Metabase that is still starting: in a compose stack the container refuses
//! connections at first, then answers 503 while it migrates its application database.

use std::time::{Duration, Instant};

use crate::metabase::{ClientConfig, MetabaseClient, MetabaseError};

/// The pause before health poll number `attempt` (0-based): 0.5 s, 1 s, 2 s, 4 s, then 5 s.
/// Metabase takes one to three minutes to start, so the cap keeps the wait after it is ready
/// short without polling a starting JVM in a tight loop.
pub fn poll_delay(attempt: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(5);
    FIRST.saturating_mul(1u32 << attempt.min(10)).min(CAP)
}

/// Polls `GET /api/health` until it answers 200 or `limit` has passed. On time-out, the error
/// is the last failure seen in full, so the operator sees why (refused, 503, DNS, TLS).
pub async fn until_healthy(site_url: &str, limit: Duration) -> Result<(), HealthWaitError> {
    let mut config = ClientConfig::new(site_url, crate::metabase::Auth::None);
    // Each poll is one request: this loop is the retry.
    config.retries = 0;
    config.timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_secs(5);
    let probe = MetabaseClient::new(config).map_err(HealthWaitError::Config)?;
    let deadline = Instant::now() + limit;
    let mut last_reason = String::new();
    let mut last_error = String::new();
    for attempt in 0u32.. {
        let error = match probe.health().await {
            Ok(_) => return Ok(()),
            Err(e @ MetabaseError::Config(_)) => return Err(HealthWaitError::Config(e)),
            Err(e) => e,
        };
        let reason = short_reason(&error);
        if reason != last_reason {
            tracing::info!(%reason, "waiting for Metabase to be healthy");
            last_reason = reason;
        }
        tracing::debug!(%error, "Metabase is not healthy yet");
        last_error = error.to_string();
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(poll_delay(attempt).min(deadline - now)).await;
    }
    Err(HealthWaitError::Deadline {
        url: site_url.to_string(),
        waited: humantime::format_duration(limit).to_string(),
        last: last_error,
    })
}

/// One short line per kind of failure, so the log shows each change once (refused, then 503).
fn short_reason(e: &MetabaseError) -> String {
    match e {
        MetabaseError::Status {
            status, message, ..
        } => format!("HTTP {status}: {message}"),
        MetabaseError::NotSent { .. } => "cannot connect yet".into(),
        MetabaseError::Timeout { .. } => "no answer in time".into(),
        other => other.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HealthWaitError {
    #[error(
        "Metabase at {url} was not healthy after {waited} (last: {last}). Check that it runs and that METABASE_SITE_URL points at it, or wait longer with --wait"
    )]
    Deadline {
        url: String,
        waited: String,
        last: String,
    },
    #[error("{0}")]
    Config(MetabaseError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_to_five_seconds() {
        let cases = [
            (0, 500),
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 5_000),
            (40, 5_000),
        ];
        for (attempt, ms) in cases {
            assert_eq!(
                poll_delay(attempt),
                Duration::from_millis(ms),
                "attempt {attempt}"
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_times_out_naming_the_url_and_the_reason() {
        // Bind then drop: the port is very likely closed for the next few milliseconds.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = until_healthy(&url, Duration::from_millis(300))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&url), "{text}");
        assert!(text.contains("cannot reach Metabase"), "{text}");
    }

    #[tokio::test]
    async fn a_bad_url_fails_at_once() {
        let err = until_healthy("metabase:3000", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(err, HealthWaitError::Config(_)), "{err}");
    }
}

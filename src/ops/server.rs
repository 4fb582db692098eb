//! The worker's operations endpoint: `/healthz`, `/readyz` and `/metrics` (CONTRACT.md section 7).
//!
//! Orchestrators restart a process whose `/healthz` fails and stop routing to one whose
//! `/readyz` fails, so liveness never depends on the dependencies and readiness always does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A readiness check slower than this counts as failed: a hung dependency is not ready.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the worker can do its work now. `Err` names what is unavailable, e.g. `"redis: ..."`;
/// it is shown to whoever calls `/readyz`, so it must not contain secrets.
pub trait ReadinessCheck: Send + Sync {
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;

    /// `Some(text)` when the worker is ready but paused on purpose: `/readyz` then answers 200
    /// `{"status": "paused", "reason": text}` (a pause is not a fault; see the README).
    fn paused(&self) -> Option<String> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr} for /healthz, /readyz and /metrics: {source} (set MBPROV_HTTP_ADDR to a free address, or `off`)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the operations endpoint failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("the operations endpoint task panicked")]
    Panicked,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "MBPROV_HTTP_ADDR {input:?} is neither `off` nor an address like 127.0.0.1:9464 or [::]:9464"
)]
pub struct HttpAddrError {
    input: String,
}

/// `off` (any case) disables the endpoint; anything else must be an `ip:port` socket address.
pub fn parse_http_addr(input: &str) -> Result<Option<SocketAddr>, HttpAddrError> {
    let trimmed = input.trim();
    if trimmed.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    trimmed.parse().map(Some).map_err(|_| HttpAddrError {
        input: input.to_owned(),
    })
}

/// A running endpoint. It stops when the shutdown token given to [`serve`] is cancelled.
pub struct OpsServer {
    local_addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl OpsServer {
    /// The bound address (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the server has stopped after shutdown.
    pub async fn stopped(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(result) => result.map_err(ServeError::Serve),
            Err(_) => Err(ServeError::Panicked),
        }
    }
}

#[derive(Clone)]
struct AppState {
    readiness: Arc<dyn ReadinessCheck>,
    metrics: PrometheusHandle,
}

/// Binds `addr` and serves in a background task until `shutdown` is cancelled. Returns once the
/// socket is bound, so a bind failure is reported at start-up.
pub async fn serve(
    addr: SocketAddr,
    readiness: Arc<dyn ReadinessCheck>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<OpsServer, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let app = router(AppState { readiness, metrics });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    tracing::info!(%local_addr, "serving /healthz, /readyz and /metrics");
    Ok(OpsServer { local_addr, task })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, state.readiness.check()).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "readiness check did not answer within {CHECK_TIMEOUT:?}"
        )),
    };
    match outcome {
        Ok(()) => match state.readiness.paused() {
            Some(reason) => (
                StatusCode::OK,
                axum::Json(json!({"status": "paused", "reason": reason})),
            )
                .into_response(),
            None => (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response(),
        },
        Err(reason) => {
            tracing::debug!(%reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "unavailable", "reason": reason})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addr_parsing() {
        let cases: &[(&str, Result<Option<&str>, ()>)] = &[
            ("off", Ok(None)),
            (" OFF ", Ok(None)),
            ("127.0.0.1:9464", Ok(Some("127.0.0.1:9464"))),
            ("0.0.0.0:0", Ok(Some("0.0.0.0:0"))),
            ("[::]:9464", Ok(Some("[::]:9464"))),
            ("localhost:9464", Err(())),
            ("9464", Err(())),
            ("", Err(())),
            ("disabled", Err(())),
        ];
        for (input, expected) in cases {
            let got = parse_http_addr(input).map_err(|_| ());
            let expected = expected.map(|o| o.map(|a| a.parse::<SocketAddr>().unwrap()));
            assert_eq!(got, expected, "{input:?}");
        }
    }
}

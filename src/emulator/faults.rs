//! Injected faults, so clients can be tested against a slow, flaky, down or starting Metabase.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::App;
use super::error::{ApiError, text};

/// Fault settings; changed at run time by `POST /_emulator/faults`.
#[derive(Debug)]
pub struct Faults {
    latency_ms: AtomicU64,
    /// An `f64` stored as bits, so reads need no lock.
    error_rate: AtomicU64,
    outage: AtomicBool,
    ready_at: Instant,
    /// An outage scheduled from the command line: every /api route answers 503 in `[from, to)`.
    window: Option<(Instant, Instant)>,
    /// One route that fails with a fixed status, to reach a client's paths that only a
    /// particular failure at a particular step takes.
    failing: Mutex<Option<RouteFault>>,
    /// One route whose next requests are applied and then left without an answer.
    dropping: Mutex<Option<DropReply>>,
}

/// `{"method": "POST", "path": "/api/user", "times": 1}`: the next `times` requests to that
/// route are applied (the handler runs to completion, so Metabase's state changes) and then
/// the connection is closed without a status line, like a proxy or a network that loses the
/// answer. The client cannot tell whether the request was applied; this fault is how tests
/// reach that case on a chosen creating request.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropReply {
    pub method: String,
    pub path: String,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// `{"method": "PUT", "path": "/api/collection/graph", "status": 409}`: that route answers
/// `status` (before doing anything) until cleared.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RouteFault {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A snapshot of the fault settings, as `/_emulator/faults` reports them.
#[derive(Clone, Debug, Serialize)]
pub struct FaultSettings {
    pub latency_ms: u64,
    pub error_rate: f64,
    pub outage: bool,
    pub initializing: bool,
    pub fail: Option<RouteFault>,
    /// What is left of a `drop_reply` fault.
    pub drop_reply: Option<DropReply>,
}

impl Faults {
    pub fn new(latency_ms: u64, error_rate: f64, init_delay: Duration) -> Self {
        Faults {
            latency_ms: AtomicU64::new(latency_ms),
            error_rate: AtomicU64::new(error_rate.to_bits()),
            outage: AtomicBool::new(false),
            ready_at: Instant::now() + init_delay,
            window: None,
            failing: Mutex::new(None),
            dropping: Mutex::new(None),
        }
    }

    /// Schedules an outage `after` the start, lasting `length`.
    pub fn with_outage_window(mut self, after: Duration, length: Duration) -> Self {
        let from = Instant::now() + after;
        self.window = (!length.is_zero()).then_some((from, from + length));
        self
    }

    pub fn set_latency_ms(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_error_rate(&self, rate: f64) {
        self.error_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::Relaxed);
    }

    pub fn set_failing(&self, fault: Option<RouteFault>) {
        if let Ok(mut failing) = self.failing.lock() {
            *failing = fault;
        }
    }

    /// Reads `drop_reply` of a `POST /_emulator/faults` body: absent leaves the setting,
    /// `null` clears it, an object sets it.
    pub fn set_drop_reply_from(&self, body: &serde_json::Value) -> Result<(), String> {
        let fault = match body.get("drop_reply") {
            None => return Ok(()),
            Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<DropReply>(v.clone())
                    .map_err(|e| format!("drop_reply must be {{method, path, times?}}: {e}"))?,
            ),
        };
        if let Ok(mut dropping) = self.dropping.lock() {
            *dropping = fault.filter(|f| f.times > 0);
        }
        Ok(())
    }

    /// Whether this request's answer is to be dropped; counts it.
    fn take_drop(&self, method: &str, path: &str) -> bool {
        let Ok(mut dropping) = self.dropping.lock() else {
            return false;
        };
        let Some(f) = dropping.as_mut() else {
            return false;
        };
        if !f.method.eq_ignore_ascii_case(method) || f.path != path {
            return false;
        }
        f.times -= 1;
        if f.times == 0 {
            *dropping = None;
        }
        true
    }

    fn failing(&self) -> Option<RouteFault> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    pub fn settings(&self) -> FaultSettings {
        FaultSettings {
            latency_ms: self.latency_ms.load(Ordering::Relaxed),
            error_rate: f64::from_bits(self.error_rate.load(Ordering::Relaxed)),
            outage: self.outage.load(Ordering::Relaxed)
                || self
                    .window
                    .is_some_and(|(from, to)| (from..to).contains(&Instant::now())),
            initializing: Instant::now() < self.ready_at,
            fail: self.failing(),
            drop_reply: self.dropping.lock().ok().and_then(|d| d.clone()),
        }
    }
}

fn unavailable(reason: &str) -> Response {
    ApiError::plain(StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
}

/// Applied to every `/api` route, before authentication.
pub async fn inject(State(app): State<App>, req: Request, next: Next) -> Response {
    let f = app.faults.settings();
    if f.initializing {
        if req.uri().path() == "/api/health" {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "initializing", "progress": 0.5})),
            )
                .into_response();
        }
        return unavailable(text::INITIALIZING);
    }
    if f.outage {
        return unavailable("Service Unavailable (emulated outage)");
    }
    if f.error_rate > 0.0 && rand::random::<f64>() < f.error_rate {
        return unavailable("Service Unavailable (emulated error)");
    }
    if let Some(fail) = &f.fail
        && fail.method.eq_ignore_ascii_case(req.method().as_str())
        && fail.path == req.uri().path()
    {
        let status = StatusCode::from_u16(fail.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return ApiError::plain(status, "Emulated failure").into_response();
    }
    if f.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
    }
    let drop = app
        .faults
        .take_drop(req.method().as_str(), req.uri().path());
    let answer = next.run(req).await;
    if drop {
        tracing::info!(status = %answer.status(), "drop_reply: request applied, answer dropped");
        return connection_lost();
    }
    answer
}

/// A response whose body fails before its first byte: hyper then closes the connection
/// without writing the status line it had only buffered, so the client sees "connection closed
/// before message completed" (checked by `a_dropped_reply_is_applied_and_never_answered`).
pub fn connection_lost() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("drop_reply fault"))
    });
    Response::new(axum::body::Body::from_stream(failing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_outage_covers_its_window_only() {
        let now = Faults::new(0, 0.0, Duration::ZERO)
            .with_outage_window(Duration::ZERO, Duration::from_secs(60));
        assert!(now.settings().outage);
        let later = Faults::new(0, 0.0, Duration::ZERO)
            .with_outage_window(Duration::from_secs(60), Duration::from_secs(1));
        assert!(!later.settings().outage);
        let none =
            Faults::new(0, 0.0, Duration::ZERO).with_outage_window(Duration::ZERO, Duration::ZERO);
        assert!(!none.settings().outage);
    }

    #[tokio::test]
    async fn a_dropped_reply_is_applied_and_never_answered() {
        let emu = crate::emulator::spawn(crate::emulator::EmulatorOptions::new("k"))
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let set = http
            .post(format!("{}/_emulator/faults", emu.url()))
            .header("x-api-key", "k")
            .json(&json!({"drop_reply": {"method": "POST", "path": "/api/permissions/group"}}))
            .send()
            .await
            .unwrap();
        let settings: serde_json::Value = set.json().await.unwrap();
        assert_eq!(settings["drop_reply"]["times"], 1);
        let create = |name: &'static str| {
            http.post(format!("{}/api/permissions/group", emu.url()))
                .header("x-api-key", "k")
                .json(&json!({"name": name}))
                .send()
        };
        let lost = create("Lost").await.unwrap_err();
        assert!(!lost.is_connect() && !lost.is_timeout(), "{lost:?}");
        // The next request is answered again, and the first one was applied.
        assert!(create("Kept").await.unwrap().status().is_success());
        let state: serde_json::Value = http
            .get(format!("{}/_emulator/state", emu.url()))
            .header("x-api-key", "k")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<&str> = state["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert!(
            names.contains(&"Lost") && names.contains(&"Kept"),
            "{names:?}"
        );
    }
}

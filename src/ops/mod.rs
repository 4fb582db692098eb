//! What operators see of a running worker: liveness, readiness and Prometheus metrics.
//!
//! `metrics` owns every metric name, so the rest of the crate records events through typed
//! functions and a scrape shows every series from start-up; `server` serves them over HTTP.

pub mod metrics;
pub mod server;

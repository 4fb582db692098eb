//! Request counters and a request log, so tests and benchmarks can see what a client did.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

use super::App;

/// How many requests `/_emulator/requests` keeps.
pub const LOG_CAPACITY: usize = 10_000;

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Bytes {
    #[serde(rename = "in")]
    pub bytes_in: u64,
    #[serde(rename = "out")]
    pub bytes_out: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PerGraph {
    pub data: u64,
    pub collection: u64,
}

/// The body of `GET /_emulator/stats`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatsSnapshot {
    /// `"METHOD /route/:template"` -> count.
    pub requests: BTreeMap<String, u64>,
    pub requests_total: u64,
    /// Graph PUTs that reached the handler (including those answered 409).
    pub graph_puts: PerGraph,
    /// Graph PUTs answered 409 (stale revision).
    pub conflicts: PerGraph,
    /// Graph PUTs sent with `force=true`.
    pub forced_puts: u64,
    pub bytes: BTreeMap<String, Bytes>,
}

/// One line of `GET /_emulator/requests`.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Graph {
    Data,
    Collection,
}

#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    snapshot: StatsSnapshot,
    log: VecDeque<RequestRecord>,
}

impl Stats {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A panic while holding this lock cannot leave the counters inconsistent in a way
        // that matters, so a poisoned lock is still used.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        self.with(|i| i.snapshot.clone())
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.with(|i| i.log.iter().cloned().collect())
    }

    /// Zeroes the counters and empties the log.
    pub fn reset(&self) {
        self.with(|i| *i = Inner::default());
    }

    pub fn graph_put(&self, graph: Graph, forced: bool, conflict: bool) {
        self.with(|i| {
            let s = &mut i.snapshot;
            let bump = |p: &mut PerGraph| match graph {
                Graph::Data => p.data += 1,
                Graph::Collection => p.collection += 1,
            };
            bump(&mut s.graph_puts);
            if conflict {
                bump(&mut s.conflicts);
            }
            if forced {
                s.forced_puts += 1;
            }
        });
    }

    fn record(&self, route: String, record: RequestRecord, bytes_in: u64, bytes_out: u64) {
        self.with(|i| {
            let s = &mut i.snapshot;
            *s.requests.entry(route.clone()).or_default() += 1;
            s.requests_total += 1;
            let b = s.bytes.entry(route).or_default();
            b.bytes_in += bytes_in;
            b.bytes_out += bytes_out;
            if i.log.len() == LOG_CAPACITY {
                i.log.pop_front();
            }
            i.log.push_back(record);
        });
    }
}

/// `/api/user/{id}` -> `/api/user/:id`, the spelling Metabase's docs use.
fn template(path: &str) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!(":{name}"),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Outermost layer of every `/api` route: counts what the client sent and got.
pub async fn record(State(app): State<App>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| template(m.as_str()))
        .unwrap_or_else(|| "<unmatched>".to_string());
    let bytes_in = req.body().size_hint().exact().unwrap_or(0);
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    // A body that fails (the `drop_reply` fault) must still fail, so the connection closes.
    let (bytes, lost) = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => (b, false),
        Err(_) => (Default::default(), true),
    };
    let record = RequestRecord {
        method: method.clone(),
        path,
        query,
        status: parts.status.as_u16(),
    };
    app.stats.record(
        format!("{method} {route}"),
        record,
        bytes_in,
        bytes.len() as u64,
    );
    if lost {
        return super::faults::connection_lost();
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::template;

    #[test]
    fn templates_use_colon_parameters() {
        assert_eq!(template("/api/user/{id}"), "/api/user/:id");
        assert_eq!(
            template("/api/permissions/membership/{group_id}/clear"),
            "/api/permissions/membership/:group_id/clear"
        );
        assert_eq!(template("/api/user"), "/api/user");
    }
}

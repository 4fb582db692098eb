//! The operations endpoint over real HTTP on 127.0.0.1:0, with the process-wide recorder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use mbprov::ops::metrics::{self, JobOutcome};
use mbprov::ops::server::{OpsServer, ReadinessCheck, serve};
use tokio_util::sync::CancellationToken;

/// A readiness check the test flips: `None` is ready, `Some(reason)` is not.
#[derive(Default)]
struct Switch(Mutex<Option<String>>);

impl Switch {
    fn set(&self, failure: Option<&str>) {
        *self.0.lock().unwrap() = failure.map(str::to_owned);
    }
}

impl ReadinessCheck for Switch {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let failure = self.0.lock().unwrap().clone();
        Box::pin(async move { failure.map_or(Ok(()), Err) })
    }
}

async fn start(readiness: Arc<Switch>) -> (OpsServer, CancellationToken) {
    let handle = metrics::install().unwrap();
    let shutdown = CancellationToken::new();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = serve(addr, readiness, handle, shutdown.clone())
        .await
        .unwrap();
    (server, shutdown)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The value of one sample line, e.g. `mbprov_retries_total` or `name{labels}`.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn every_metric_is_present_from_start_up() {
    let (server, shutdown) = start(Arc::default()).await;
    let (status, scrape) = get(server.local_addr(), "/metrics").await;
    assert_eq!(status, 200);
    if std::env::var_os("MBPROV_PRINT_SCRAPE").is_some() {
        eprintln!("{scrape}");
    }
    for kind in metrics::JOB_KINDS {
        for outcome in ["done", "retried", "dead", "duplicate"] {
            let series = format!(r#"mbprov_jobs_total{{kind="{kind}",outcome="{outcome}"}}"#);
            assert!(
                sample(&scrape, &series).is_some(),
                "missing {series}\n{scrape}"
            );
        }
    }
    for series in [
        "mbprov_retries_total",
        "mbprov_dead_lettered_total",
        r#"mbprov_metabase_requests_total{method="GET",status="200"}"#,
        r#"mbprov_graph_writes_total{graph="data"}"#,
        r#"mbprov_graph_writes_total{graph="collection"}"#,
        r#"mbprov_graph_write_conflicts_total{graph="data"}"#,
        r#"mbprov_graph_write_conflicts_total{graph="collection"}"#,
        r#"mbprov_job_duration_seconds_bucket{kind="tenant.created",le="+Inf"}"#,
        r#"mbprov_job_duration_seconds_count{kind="users.synced"}"#,
        r#"mbprov_lock_wait_seconds_bucket{le="+Inf"}"#,
        "mbprov_lock_wait_seconds_sum",
    ] {
        assert!(
            sample(&scrape, series).is_some(),
            "missing {series}\n{scrape}"
        );
    }
    for histogram in ["mbprov_job_duration_seconds", "mbprov_lock_wait_seconds"] {
        assert!(
            scrape.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram} is not a histogram\n{scrape}"
        );
    }
    shutdown.cancel();
    server.stopped().await.unwrap();
}

#[tokio::test]
async fn counters_move_after_recording() {
    let (server, shutdown) = start(Arc::default()).await;
    let addr = server.local_addr();
    let jobs = r#"mbprov_jobs_total{kind="user.upserted",outcome="retried"}"#;
    let duration = r#"mbprov_job_duration_seconds_count{kind="user.upserted"}"#;
    let conflicts = r#"mbprov_graph_write_conflicts_total{graph="collection"}"#;
    let requests = r#"mbprov_metabase_requests_total{method="PUT",status="409"}"#;
    let failed = r#"mbprov_metabase_requests_total{method="GET",status="error"}"#;
    let unknown = r#"mbprov_jobs_total{kind="unknown",outcome="dead"}"#;
    let lock_waits = "mbprov_lock_wait_seconds_count";
    let counted = [
        jobs,
        duration,
        conflicts,
        requests,
        failed,
        unknown,
        lock_waits,
        "mbprov_retries_total",
        "mbprov_dead_lettered_total",
    ];
    let (_, before) = get(addr, "/metrics").await;
    let value = |scrape: &str, series: &str| sample(scrape, series).unwrap_or(0.0);

    metrics::job_finished(
        "user.upserted",
        JobOutcome::Retried,
        Duration::from_millis(30),
    );
    metrics::job_finished("no.such.kind", JobOutcome::Dead, Duration::from_millis(1));
    metrics::retried();
    metrics::dead_lettered();
    metrics::graph_conflict("collection");
    metrics::metabase_request("put", Some(409));
    metrics::metabase_request("GET", None);
    metrics::lock_waited(Duration::from_millis(3));

    let (_, after) = get(addr, "/metrics").await;
    // Other tests in this process may record too, so each series grew by at least one.
    for series in counted {
        assert!(
            value(&after, series) >= value(&before, series) + 1.0,
            "{series} did not move\nbefore:\n{before}\nafter:\n{after}"
        );
    }
    assert!(
        !after.contains("no.such.kind"),
        "unbounded kind label leaked"
    );
    shutdown.cancel();
    server.stopped().await.unwrap();
}

#[tokio::test]
async fn readyz_follows_the_check_and_healthz_does_not() {
    let switch = Arc::new(Switch::default());
    let (server, shutdown) = start(switch.clone()).await;
    let addr = server.local_addr();

    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/healthz").await.0, 200);

    switch.set(Some("redis: connection refused"));
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["reason"], "redis: connection refused");
    assert_eq!(get(addr, "/healthz").await.0, 200);

    switch.set(None);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/nope").await.0, 404);

    shutdown.cancel();
    server.stopped().await.unwrap();
}

#[tokio::test]
async fn installing_twice_returns_the_same_recorder() {
    let first = metrics::install().unwrap();
    let second = metrics::install().unwrap();
    metrics::retried();
    for handle in [first, second] {
        assert!(sample(&handle.render(), "mbprov_retries_total").unwrap() >= 1.0);
    }
}

#[tokio::test]
async fn a_taken_address_is_reported_at_start_up() {
    let (server, shutdown) = start(Arc::default()).await;
    let handle = metrics::install().unwrap();
    let err = serve(
        server.local_addr(),
        Arc::new(Switch::default()),
        handle,
        CancellationToken::new(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("MBPROV_HTTP_ADDR"), "{err}");
    shutdown.cancel();
    server.stopped().await.unwrap();
}

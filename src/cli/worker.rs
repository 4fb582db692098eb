//! `mbprov worker`: wires the queue, the job layer, Redis, Metabase and the ops endpoint, and
//! runs until SIGTERM/SIGINT.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerArgs, MetabaseArgs, RedisArgs, WorkerArgs};
use crate::error::Classify;
use crate::graph_writer::{GraphWriter, WriterConfig};
use crate::jobs::{Context, JobRunner};
use crate::metabase::{MetabaseClient, MetabaseError};
use crate::ops::server::ReadinessCheck;
use crate::queue::{WorkerQueueConfig, run_worker};
use crate::store::JobStore;

use super::instance::{Instance, metabase_client};

#[derive(clap::Args, Debug)]
pub struct WorkerCommand {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub metabase: MetabaseArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

pub async fn run(cmd: WorkerCommand) -> ExitCode {
    super::report(serve(cmd).await)
}

async fn serve(cmd: WorkerCommand) -> Result<(), String> {
    let metrics = crate::ops::metrics::install().map_err(|e| e.to_string())?;
    let http_addr =
        crate::ops::server::parse_http_addr(&cmd.worker.http_addr).map_err(|e| e.to_string())?;
    let mb = metabase_client(&cmd.metabase)?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());

    let store = (|| JobStore::connect(&cmd.redis.redis_url, &cmd.broker.prefix))
        .retry(patient())
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "Redis unavailable, retrying"))
        .await
        .map_err(|e| e.to_string())?;
    let instance = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        i = wait_for_metabase(&mb) => i?,
    };
    tracing::info!(
        version = instance.version_tag.as_deref().unwrap_or("unknown"),
        sandboxes = instance.features.sandboxes,
        advanced_permissions = instance.features.advanced_permissions,
        legacy_graph = instance.features.legacy_graph,
        "connected to Metabase"
    );

    let writer = GraphWriter::start(
        mb.clone(),
        store.clone(),
        WriterConfig {
            features: instance.features,
            version: instance.version,
            admin_group: instance.builtin.admin,
            lock_ttl: cmd.worker.lock_ttl,
            lock_wait: cmd.worker.lock_wait,
            batch_linger: cmd.worker.batch_linger,
            lock_budget: cmd.worker.graph_lock_budget,
        },
    );
    let ctx = Context {
        mb: mb.clone(),
        store: store.clone(),
        writer,
        features: instance.features,
        builtin: instance.builtin,
        entity_lock_ttl: cmd.worker.lock_ttl,
        entity_lock_wait: Duration::from_secs(2).min(cmd.worker.lock_wait),
    };
    let runner = JobRunner::new(ctx, cmd.worker.max_attempts)
        .abort_on_kind(std::env::var("MBPROV_TEST_ABORT_ON_KIND").ok());

    let ops = match http_addr {
        Some(addr) => {
            let check = Arc::new(Readiness {
                amqp_url: cmd.broker.amqp_url.clone(),
                store: store.clone(),
                mb: mb.clone(),
            });
            let server = crate::ops::server::serve(addr, check, metrics, shutdown.clone())
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(addr = %server.local_addr(), "health and metrics endpoint listening");
            Some(server)
        }
        None => None,
    };

    let cfg = WorkerQueueConfig::from_args(&cmd.broker, &cmd.worker);
    let result = run_worker(cfg, Arc::new(runner), shutdown.clone()).await;
    shutdown.cancel();
    if let Some(server) = ops {
        let _ = server.stopped().await;
    }
    result.map_err(|e| e.to_string())?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Backoff for dependencies at start-up: keep trying, at most every 10 s.
fn patient() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
}

async fn wait_for_metabase(mb: &MetabaseClient) -> Result<Instance, String> {
    (|| Instance::read(mb))
        .retry(patient())
        .when(|e: &MetabaseError| e.class().is_transient())
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "Metabase unavailable, retrying"))
        .await
        .map_err(|e| e.to_string())
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight jobs"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing in-flight jobs"),
        }
        shutdown.cancel();
    });
}

/// `/readyz`: the broker, Redis and Metabase all answer.
struct Readiness {
    amqp_url: String,
    store: JobStore,
    mb: MetabaseClient,
}

impl ReadinessCheck for Readiness {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.store
                .ping()
                .await
                .map_err(|_| "redis is not answering".to_string())?;
            self.mb
                .health()
                .await
                .map_err(|_| "metabase is not answering".to_string())?;
            let conn = crate::queue::broker::connect(&self.amqp_url, "mbprov readiness probe")
                .await
                .map_err(|_| "the broker is not answering".to_string())?;
            let _ = conn.close(200, "readiness probe".into()).await;
            Ok(())
        })
    }
}

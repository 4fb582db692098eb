//! `mbprov worker`: wires the queue, the job layer, Redis, Metabase and the ops endpoint, and
//! runs until SIGTERM/SIGINT.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerArgs, MetabaseArgs, RedisArgs, WorkerArgs};
use crate::error::{Classify, ErrorClass};
use crate::graph_writer::{GraphWriter, WriterConfig};
use crate::intake::budget::{FleetBudget, MetabaseGate};
use crate::intake::pause::PauseStore;
use crate::intake::probe::{self, KeyCheck, KeySource};
use crate::intake::{Event, Intake, Readiness as GateReadiness, report};
use crate::jobs::{Context, JobRunner};
use crate::metabase::{ApiKey, Auth, MetabaseClient, MetabaseError};
use crate::ops::server::ReadinessCheck;
use crate::queue::{WorkerQueueConfig, run_gated_worker};
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
    let key_source = KeySource {
        file: cmd.metabase.api_key_file.clone(),
    };
    let (intake, mb) = start_intake(&cmd, mb, &key_source, &shutdown).await?;
    // The graph writers start once Metabase is reached; readiness learns of them then.
    let writers: Arc<OnceLock<GraphWriter>> = Arc::new(OnceLock::new());
    // Served before Metabase is reached, so a worker waiting for a working key says why.
    let ops = match http_addr {
        Some(addr) => {
            let check = Arc::new(Readiness {
                amqp_url: cmd.broker.amqp_url.clone(),
                store: store.clone(),
                mb: mb.with_retries(0).without_gate(),
                intake: intake.clone(),
                writers: writers.clone(),
            });
            let server = crate::ops::server::serve(addr, check, metrics, shutdown.clone())
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(addr = %server.local_addr(), "health and metrics endpoint listening");
            Some(server)
        }
        None => None,
    };

    let instance = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        i = wait_for_metabase(&mb, &key_source) => i?,
    };
    tracing::info!(
        version = instance.version_tag.as_deref().unwrap_or("unknown"),
        sandboxes = instance.features.sandboxes,
        advanced_permissions = instance.features.advanced_permissions,
        legacy_graph = instance.features.legacy_graph,
        "connected to Metabase"
    );

    let native = match cmd.worker.tenancy {
        crate::config::Tenancy::Groups => None,
        // Transient failures are waited out like at start-up; a refusal ends the process.
        crate::config::Tenancy::Native => Some(
            (|| crate::jobs::native::connect(&mb))
                .retry(patient())
                .when(|e: &MetabaseError| e.class().is_transient())
                .await
                .map_err(|e| e.to_string())??,
        ),
    };

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
    // Set once, right here; a second set cannot happen.
    let _ = writers.set(writer.clone());
    let ctx = Context {
        mb: mb.clone(),
        store: store.clone(),
        writer,
        features: instance.features,
        builtin: instance.builtin,
        entity_lock_ttl: cmd.worker.lock_ttl,
        entity_lock_wait: Duration::from_secs(2).min(cmd.worker.lock_wait),
        native,
    };
    let runner = JobRunner::new(ctx, cmd.worker.max_attempts)
        .deadlines(
            crate::jobs::deadline::JobDeadlines::new(cmd.worker.job_deadline)
                .with_overrides(&cmd.worker.job_deadlines),
        )
        .abort_on_kind(std::env::var("MBPROV_TEST_ABORT_ON_KIND").ok());

    let cfg = WorkerQueueConfig::from_args(&cmd.broker, &cmd.worker);
    let result = run_gated_worker(cfg, Arc::new(runner), intake, shutdown.clone()).await;
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

/// The intake gate and what moves it: the stored pause (read once before any job is taken,
/// then followed), the Metabase client's gate (budget and breaker), the two probes, and this
/// worker's report for `mbprov status`. Returns the client to use from now on.
async fn start_intake(
    cmd: &WorkerCommand,
    mb: MetabaseClient,
    key_source: &KeySource,
    shutdown: &CancellationToken,
) -> Result<(Intake, MetabaseClient), String> {
    let prefix = cmd.broker.prefix.clone();
    let intake = Intake::new();
    let pauses = (|| PauseStore::connect(&cmd.redis.redis_url, &prefix))
        .retry(patient())
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "Redis unavailable, retrying"))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(info) = pauses.get().await.map_err(|e| e.to_string())? {
        intake.apply(Event::Paused(info));
    }
    let rps = cmd.worker.metabase_rps;
    let budget = rps.map(|rps| FleetBudget::new(pauses.connection(), &prefix, rps));
    if let Some(rps) = rps {
        tracing::info!(
            rps,
            "Metabase budget: requests of all workers of the prefix together"
        );
    }
    let gate = Arc::new(MetabaseGate::new(
        budget,
        cmd.worker.breaker,
        intake.clone(),
    ));
    if !cmd.worker.breaker {
        tracing::warn!("MBPROV_BREAKER=off: jobs spend their retries while Metabase is down");
    }
    let mb = mb.with_gate(gate.clone());
    let probe_client = mb.with_retries(0).without_gate();
    let max_delay = cmd.worker.probe_max_delay;
    tokio::spawn(report::publish(
        pauses.connection(),
        prefix,
        report::worker_id(),
        intake.clone(),
        rps,
        shutdown.clone(),
    ));
    tokio::spawn(pauses.follow(intake.clone(), shutdown.clone()));
    tokio::spawn(probe::heal_authentication(
        probe_client.clone(),
        key_source.clone(),
        intake.clone(),
        max_delay,
        shutdown.clone(),
    ));
    if let Some(breaker) = gate.breaker() {
        tokio::spawn(probe::close_breaker(
            probe_client,
            breaker,
            intake.clone(),
            max_delay,
            shutdown.clone(),
        ));
    }
    Ok((intake, mb))
}

/// Reads the instance facts, retrying while Metabase is unavailable or refuses the key (the
/// key file is read again before each try, so a fixed secret is picked up without a restart).
async fn wait_for_metabase(mb: &MetabaseClient, keys: &KeySource) -> Result<Instance, String> {
    (|| async {
        if let Some(file) = &keys.file
            && let Ok(text) = std::fs::read_to_string(file)
            && !text.trim().is_empty()
        {
            mb.set_auth(Auth::ApiKey(ApiKey::new(text)));
        }
        Instance::read(mb).await
    })
    .retry(patient())
    .when(|e: &MetabaseError| e.class().is_transient() || e.class() == ErrorClass::Authentication)
    .notify(|e, wait| match e.class() {
        ErrorClass::Authentication => tracing::error!(error = %e, ?wait, "Metabase refuses the API key; re-reading METABASE_API_KEY_FILE and retrying"),
        _ => tracing::warn!(error = %e, ?wait, "Metabase unavailable, retrying"),
    })
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

/// `/readyz`: intake is not held by a fault, and the broker, Redis and Metabase all answer,
/// Metabase with the key (an authenticated probe: a revoked key shows even with no job).
struct Readiness {
    amqp_url: String,
    store: JobStore,
    mb: MetabaseClient,
    intake: Intake,
    /// A writer task that keeps dying is left stopped: every graph job would then fail.
    writers: Arc<OnceLock<GraphWriter>>,
}

impl ReadinessCheck for Readiness {
    fn paused(&self) -> Option<String> {
        match self.intake.state().readiness() {
            GateReadiness::Paused(text) => Some(text),
            _ => None,
        }
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if let GateReadiness::NotReady(reason) = self.intake.state().readiness() {
                return Err(reason);
            }
            if self.writers.get().is_some_and(|w| !w.healthy()) {
                return Err("a graph writer task stopped after repeated panics".to_string());
            }
            self.store
                .ping()
                .await
                .map_err(|_| "redis is not answering".to_string())?;
            match probe::check_key(&self.mb).await {
                KeyCheck::Accepted => {}
                KeyCheck::Refused(why) => {
                    self.intake.apply(Event::AuthFailed(why));
                    if let GateReadiness::NotReady(reason) = self.intake.state().readiness() {
                        return Err(reason);
                    }
                }
                KeyCheck::Unknown(_) => return Err("metabase is not answering".to_string()),
            }
            let conn = crate::queue::broker::connect(&self.amqp_url, "mbprov readiness probe")
                .await
                .map_err(|_| "the broker is not answering".to_string())?;
            let _ = conn.close(200, "readiness probe".into()).await;
            Ok(())
        })
    }
}

//! `mbprov status`: how much work is waiting where (queues, and graph changes queued for the
//! lock holder in Redis), how many workers take it, and whether they take it now (each worker's
//! intake: open, paused, key refused, breaker open).

use std::process::ExitCode;

use crate::config::{BrokerArgs, RedisArgs, RetryDelays};
use crate::intake::PauseInfo;
use crate::intake::pause::PauseStore;
use crate::intake::report::{self, WorkerReport};
use crate::queue::retry::RetryPolicy;
use crate::queue::topology::Topology;
use crate::queue::{Broker, QueueError, QueueStats};

/// The retry tiers a command declares and shows. The worker reads the same variable, so every
/// command agrees on the tier queues.
#[derive(clap::Args, Clone, Debug)]
pub struct RetryTierArgs {
    /// Retry delays, one per tier, e.g. `5s,30s,2m,10m,1h` (the tier queues are named after them).
    #[arg(long, env = "MBPROV_RETRY_DELAYS", default_value = "5s,30s,2m,10m,1h", value_parser = crate::config::parse_delays, global = true)]
    pub retry_delays: RetryDelays,
}

impl RetryTierArgs {
    pub fn topology(&self, broker: &BrokerArgs) -> Topology {
        Topology::new(&broker.prefix, RetryPolicy::new(&self.retry_delays))
    }
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub tiers: RetryTierArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// The intake part of the status, from Redis.
#[derive(Debug, serde::Serialize)]
struct IntakeStatus {
    paused: Option<PauseInfo>,
    workers: Vec<WorkerReport>,
    /// Graph changes queued by every replica for the lock holder, per graph: a number that
    /// keeps growing means the graph writes cannot keep up (or nobody holds the lock).
    #[serde(skip)]
    graph_changes_queued: std::collections::BTreeMap<&'static str, usize>,
}

async fn intake_status(args: &StatusArgs) -> Result<IntakeStatus, String> {
    let store = PauseStore::connect(&args.redis.redis_url, &args.broker.prefix)
        .await
        .map_err(|e| e.to_string())?;
    let paused = store.get().await.map_err(|e| e.to_string())?;
    let mut conn = store.connection();
    let workers = report::read_all(&mut conn, &args.broker.prefix)
        .await
        .map_err(|e| format!("redis: {e}"))?;
    let mut graph_changes_queued = std::collections::BTreeMap::new();
    for graph in crate::graph_writer::GRAPHS {
        let n = crate::graph_writer::queued_changes(&mut conn, &args.broker.prefix, graph)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        graph_changes_queued.insert(graph, n);
    }
    Ok(IntakeStatus {
        paused,
        workers,
        graph_changes_queued,
    })
}

pub async fn run(args: StatusArgs) -> ExitCode {
    super::report(status(args).await)
}

async fn status(args: StatusArgs) -> Result<(), String> {
    let broker = Broker::connect(&args.broker.amqp_url, args.tiers.topology(&args.broker))
        .await
        .map_err(|e: QueueError| e.to_string())?;
    let stats = broker.queue_stats().await;
    broker.close().await;
    let stats = stats.map_err(|e| e.to_string())?;
    let intake = intake_status(&args).await;
    if args.json {
        let consumers = stats.first().map_or(0, |s| s.consumers);
        let (intake, graphs) = match &intake {
            Ok(i) => (
                serde_json::json!(i),
                serde_json::json!(i.graph_changes_queued),
            ),
            Err(e) => (serde_json::json!({ "error": e }), serde_json::Value::Null),
        };
        let doc = serde_json::json!({
            "queues": stats,
            "consumers": consumers,
            "intake": intake,
            "graph_changes_queued": graphs,
        });
        println!("{doc}");
    } else {
        print!("{}", table(&stats));
        if let Ok(i) = &intake {
            print!("\n{}", intake_table(i));
            let queued: Vec<String> = i
                .graph_changes_queued
                .iter()
                .map(|(graph, n)| format!("{graph} {n}"))
                .collect();
            println!("\nGRAPH CHANGES QUEUED  {}", queued.join("  "));
        }
    }
    intake
        .map(drop)
        .map_err(|e| format!("cannot read the intake state: {e}"))
}

fn intake_table(i: &IntakeStatus) -> String {
    let mut out = match &i.paused {
        Some(p) => format!(
            "INTAKE  paused since {}{} (mbprov resume)\n",
            p.since,
            p.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        None => "INTAKE  not paused\n".to_owned(),
    };
    if i.workers.is_empty() {
        out.push_str("no worker reported in the last 15 s\n");
        return out;
    }
    let width = i
        .workers
        .iter()
        .map(|w| w.worker.len())
        .max()
        .unwrap_or(6)
        .max(6);
    out.push_str(&format!(
        "{:<width$}  {:<22}  {:>6}  DETAIL\n",
        "WORKER", "INTAKE", "RPS"
    ));
    for w in &i.workers {
        let rps = w.metabase_rps.map_or("-".to_owned(), |r| r.to_string());
        out.push_str(&format!(
            "{:<width$}  {:<22}  {:>6}  {}\n",
            w.worker,
            w.intake.join(","),
            rps,
            w.detail
        ));
    }
    out
}

fn table(stats: &[QueueStats]) -> String {
    let width = stats.iter().map(|s| s.name.len()).max().unwrap_or(5).max(5);
    let mut out = format!(
        "{:<width$}  {:>8}  {:>9}\n",
        "QUEUE", "MESSAGES", "CONSUMERS"
    );
    for s in stats {
        out.push_str(&format!(
            "{:<width$}  {:>8}  {:>9}\n",
            s.name, s.messages, s.consumers
        ));
    }
    out
}

//! `mbprov plan -f FILE` and `mbprov apply -f FILE` (CONTRACT.md §5).
//!
//! plan exits 0 when Metabase matches the document, 2 when it does not (drift), 1 on error.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{BrokerArgs, MetabaseArgs, RedisArgs};
use crate::graph_writer::{GraphWriter, WriterConfig};
use crate::store::JobStore;

use super::instance::{Instance, metabase_client};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The desired-state document (YAML, or JSON when it ends in .json).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    #[command(flatten)]
    pub metabase: MetabaseArgs,
    /// apply only: Redis holds the graph locks shared with the workers.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// apply only: the prefix of the lock keys (the workers' MBPROV_PREFIX).
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// How long apply waits for a graph lock.
    #[arg(long, env = "MBPROV_LOCK_WAIT", default_value = "30s", value_parser = crate::config::parse_duration)]
    pub lock_wait: std::time::Duration,
}

pub async fn plan(args: PlanArgs) -> ExitCode {
    match plan_inner(&args).await {
        Ok(lines) if lines.is_empty() => {
            println!("no changes: Metabase matches {}", args.file.display());
            ExitCode::SUCCESS
        }
        Ok(lines) => {
            for line in &lines {
                println!("{line}");
            }
            println!("{} change(s) needed", lines.len());
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("mbprov plan: {e}");
            ExitCode::from(1)
        }
    }
}

async fn plan_inner(args: &PlanArgs) -> Result<Vec<String>, String> {
    let doc = crate::pac::load(&args.file).map_err(|e| e.to_string())?;
    let mb = metabase_client(&args.metabase)?;
    let instance = Instance::read(&mb).await.map_err(|e| e.to_string())?;
    let plan = crate::pac::plan_live(&mb, &doc, instance.features)
        .await
        .map_err(|e| e.to_string())?;
    Ok(plan.render())
}

pub async fn apply(args: PlanArgs) -> ExitCode {
    match apply_inner(&args).await {
        Ok(lines) if lines.is_empty() => {
            println!(
                "no changes: Metabase already matches {}",
                args.file.display()
            );
            ExitCode::SUCCESS
        }
        Ok(lines) => {
            for line in &lines {
                println!("{line}");
            }
            println!("applied {} change(s); no drift remains", lines.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mbprov apply: {e}");
            ExitCode::from(1)
        }
    }
}

async fn apply_inner(args: &PlanArgs) -> Result<Vec<String>, String> {
    let doc = crate::pac::load(&args.file).map_err(|e| e.to_string())?;
    let mb = metabase_client(&args.metabase)?;
    let instance = Instance::read(&mb).await.map_err(|e| e.to_string())?;
    let store = JobStore::connect(&args.redis.redis_url, &args.broker.prefix)
        .await
        .map_err(|e| e.to_string())?;
    let writer = GraphWriter::start(
        mb.clone(),
        store,
        WriterConfig {
            features: instance.features,
            version: instance.version,
            admin_group: instance.builtin.admin,
            lock_ttl: std::time::Duration::from_secs(15),
            lock_wait: args.lock_wait,
            batch_linger: std::time::Duration::ZERO,
            lock_budget: std::time::Duration::from_secs(20),
        },
    );
    crate::pac::apply(&mb, &writer, &doc, instance.features, &instance.builtin)
        .await
        .map_err(|e| e.to_string())
}

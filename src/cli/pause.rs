//! `mbprov pause [--reason TEXT]` and `mbprov resume`: hold and release every worker of the
//! prefix. The pause is stored in Redis (it survives worker restarts) and announced, so
//! workers stop taking jobs within seconds; in-flight jobs finish.

use std::process::ExitCode;

use crate::config::{BrokerArgs, RedisArgs};
use crate::intake::pause::{PauseError, PauseStore};

#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Why, shown by `status` and `/readyz` (e.g. "Metabase upgrade, back at 14:00").
    #[arg(long)]
    pub reason: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub async fn pause(args: PauseArgs) -> ExitCode {
    super::report(run_pause(args).await)
}

pub async fn resume(args: ResumeArgs) -> ExitCode {
    super::report(run_resume(args).await)
}

async fn run_pause(args: PauseArgs) -> Result<(), PauseError> {
    let store = PauseStore::connect(&args.redis.redis_url, &args.broker.prefix).await?;
    let reason = args.reason.filter(|r| !r.trim().is_empty());
    let info = store.pause(reason).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"prefix": args.broker.prefix, "paused": info})
        );
    } else {
        println!(
            "paused {} since {}{}",
            args.broker.prefix,
            info.since,
            info.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        println!(
            "workers stop taking jobs within seconds (in-flight jobs finish); `mbprov status` shows each worker, `mbprov resume` undoes this"
        );
    }
    Ok(())
}

async fn run_resume(args: ResumeArgs) -> Result<(), PauseError> {
    let store = PauseStore::connect(&args.redis.redis_url, &args.broker.prefix).await?;
    let was = store.resume().await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"prefix": args.broker.prefix, "resumed": was.is_some(), "was": was})
        );
    } else if let Some(was) = was {
        println!(
            "resumed {} (paused since {}{})",
            args.broker.prefix,
            was.since,
            was.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    } else {
        println!("{} was not paused", args.broker.prefix);
    }
    Ok(())
}

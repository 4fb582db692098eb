//! `mbprov worker` (placeholder until the worker lands).

use std::process::ExitCode;

use crate::config::{BrokerArgs, MetabaseArgs, RedisArgs, WorkerArgs};

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

pub async fn run(_cmd: WorkerCommand) -> ExitCode {
    ExitCode::from(1)
}

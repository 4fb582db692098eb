//! `mbprov worker` (placeholder until the worker lands).

use std::process::ExitCode;

use crate::config::{BrokerArgs, MetabaseArgs, RedisArgs, WorkerArgs};

pub async fn run(
    _broker: BrokerArgs,
    _redis: RedisArgs,
    _metabase: MetabaseArgs,
    _worker: WorkerArgs,
) -> ExitCode {
    ExitCode::from(1)
}

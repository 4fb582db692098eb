//! `mbprov dlq` (placeholder until the queue work lands).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct DlqArgs {}

pub async fn run(_args: DlqArgs) -> ExitCode {
    ExitCode::from(1)
}
